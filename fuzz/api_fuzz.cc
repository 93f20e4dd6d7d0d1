// Fuzz the REST API handler (routing, query parameters, JSON bodies, catalog apply) with a real
// control loop on an in-memory store, with real tokens. Input:
//   METHOD TARGET
//   @as: admin | member | viewer | none      (optional lines: who calls, headers)
//   @if-match: "2"   @origin: ...   @host: ...   @content-type: ...
//   BODY
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "api/handlers.h"
#include "blob/local/local_store.h"
#include "db/manager.h"
#include "runtime/sim/sim_runtime.h"
#include "store/sqlite/sqlite_store.h"

namespace {

using namespace berth;

class NullProber : public health::Prober {
 public:
  std::unique_ptr<health::ProbeHandle> probe(const health::ProbeTarget&, std::function<void(health::ProbeResult)>) override {
    return std::make_unique<health::ProbeHandle>();
  }
};

// Imports fail at once: the fuzzer exercises request parsing, never mariadb-backup.
class NullEngine : public db::Engine {
 public:
  std::string name() const override { return "null"; }
  Status copy_running(const db::ServerSource&, const std::string&, const std::string&) override { return unavailable("fuzzing"); }
  Status copy_datadir(const std::string&, const std::string&, const std::string&) override { return unavailable("fuzzing"); }
  Status load_dump(const std::string&, const std::string&, const std::string&) override { return unavailable("fuzzing"); }
  Status seal(const std::string&, const db::Account&, const std::string&) override { return unavailable("fuzzing"); }
  Status apply(const std::string&, const std::vector<db::Migration>&, const db::Account&, const std::string&) override {
    return unavailable("fuzzing");
  }
  Status apply_live(const db::ServerSource&, const std::vector<db::Migration>&, const std::string&) override {
    return unavailable("fuzzing");
  }
  Result<db::Schema> schema(const db::ServerSource&, const std::string&) override { return unavailable("fuzzing"); }
  Result<db::Schema> schema_of(const std::string&, const std::string&) override { return unavailable("fuzzing"); }
};

struct World {
  ManualClock clock;
  ManualExecutor executor{clock};
  runtime::SimRuntime runtime{executor};  // no process is ever started: a fuzzer must not fork
  NullProber prober;
  std::unique_ptr<store::SqliteStore> store = std::move(store::SqliteStore::open(":memory:").value());
  blob::LocalStore blobs{"/tmp/berth-fuzz-api/blobs"};
  db::Manager databases{executor, clock, "/tmp/berth-fuzz-api/db", blobs, std::make_unique<NullEngine>()};
  std::unique_ptr<control::ControlLoop> loop;
  std::unique_ptr<auth::Tokens> tokens;
  std::map<std::string, std::string> secrets;  // role → token
  std::unique_ptr<api::Api> api;
  World() {
    control::Deps d;
    d.clock = &clock;
    d.executor = &executor;
    d.runtimes = {&runtime};
    d.prober = &prober;
    d.store = store.get();
    d.data_dir = "/tmp/berth-fuzz-api";
    d.databases = &databases;
    loop = std::move(control::ControlLoop::create(d).value());
    tokens = std::move(auth::Tokens::load(*store, clock).value());
    secrets["admin"] = tokens->issue("admin", auth::Role::kAdmin, "fuzz")->secret;
    secrets["member"] = tokens->issue("anna", auth::Role::kMember, "fuzz")->secret;
    secrets["viewer"] = tokens->issue("vic", auth::Role::kViewer, "fuzz")->secret;
    api::Options options;
    options.member_repos = {"/tmp/berth-fuzz-api/repos/"};
    options.import_dirs = {"/tmp/berth-fuzz-api/imports"};
    api = std::make_unique<api::Api>(*loop, *tokens, options);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static World world;
  std::string input(reinterpret_cast<const char*>(data), size);
  auto nl = input.find('\n');
  std::string line = input.substr(0, nl);
  std::string rest = nl == std::string::npos ? "" : input.substr(nl + 1);
  auto sp = line.find(' ');
  api::Request req{line.substr(0, sp), sp == std::string::npos ? "/" : line.substr(sp + 1), "", "", "", "", "",
                   "application/json", "gzip"};  // (large answers take the compressed path)
  std::string as = "admin";
  while (rest.rfind("@", 0) == 0) {
    auto end = rest.find('\n');
    std::string h = rest.substr(1, end == std::string::npos ? std::string::npos : end - 1);
    rest = end == std::string::npos ? "" : rest.substr(end + 1);
    auto colon = h.find(": ");
    if (colon == std::string::npos) continue;
    std::string name = h.substr(0, colon), value = h.substr(colon + 2);
    if (name == "as") as = value;
    else if (name == "if-match") req.if_match = value;
    else if (name == "origin") req.origin = value;
    else if (name == "host") req.host = value;
    else if (name == "content-type") req.content_type = value;
    else if (name == "authorization") req.authorization = value;
  }
  req.body = rest;
  if (req.authorization.empty() && world.secrets.count(as)) req.authorization = "Bearer " + world.secrets[as];
  int status = 0;
  world.api->handle(req, [&](api::Response res) { status = res.status; });
  world.executor.advance(10);  // answers that come later (exec, logs) arrive here
  if (status < 200 || status > 599) __builtin_trap();
  return 0;
}
