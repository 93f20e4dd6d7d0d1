// berth — the command line: `berth serve` runs the daemon; every other command talks to it.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "base/text.h"
#include "cli/render.h"
#include "client/client.h"
#include "daemon/daemon.h"

using nlohmann::json;
namespace bc = berth::client;

namespace {

int fail(const berth::Error& e) {
  fmt::print(stderr, "berth: {}\n", e.message);
  // Multi-error messages already list their details.
  if (e.details.size() > 1 && e.message.find('\n') == std::string::npos)
    for (const auto& d : e.details) fmt::print(stderr, "  {}\n", d);
  return 1;
}

std::string url_encode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') out += static_cast<char>(c);
    else out += fmt::format("%{:02X}", c);
  }
  return out;
}

berth::Millis now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Poll the daemon until `done(status)` holds, printing events as they happen. The interval is a
// display refresh, not a wait for state: the condition is checked on every poll.
int follow(bc::Client& c, const std::string& env, std::int64_t after, berth::Millis timeout_ms, bool quiet,
           const std::function<bool(const json&)>& done, const std::string& what) {
  const berth::Millis deadline = now_ms() + timeout_ms;
  std::string last_summary;
  while (true) {
    auto events = c.get(fmt::format("/v1/environments/{}/events?after={}", url_encode(env), after));
    if (!events.ok()) return fail(events.error());
    for (const auto& e : *events) {
      after = std::max<std::int64_t>(after, e["id"].get<std::int64_t>());
      if (!quiet) fmt::print("{}\n", berth::cli::event_line(e));
    }
    auto status = c.get("/v1/environments/" + url_encode(env));
    if (!status.ok()) return fail(status.error());
    if (done(*status)) {
      if (!quiet) fmt::print("{}: {}\n", env, berth::cli::progress_summary(*status));
      return 0;
    }
    std::string summary = berth::cli::progress_summary(*status);
    if (!quiet && summary != last_summary) fmt::print("  … {}\n", summary);
    last_summary = summary;
    if (now_ms() > deadline) {
      fmt::print(stderr, "berth: {} {} timed out after {}: {}\n", what, env, berth::format_duration(timeout_ms), summary);
      for (const auto& cause : berth::cli::root_causes(*status)) fmt::print(stderr, "  root cause: {}\n", cause);
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

std::optional<std::uint64_t> parse_size(const std::string& text) {
  std::size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (i == 0) return std::nullopt;
  std::uint64_t n = std::stoull(text.substr(0, i));
  std::string unit = text.substr(i);
  if (unit.empty() || unit == "B") return n;
  if (unit == "KiB") return n << 10;
  if (unit == "MiB") return n << 20;
  if (unit == "GiB") return n << 30;
  return std::nullopt;
}

berth::Millis parse_timeout(const std::string& text) {
  auto d = berth::parse_duration(text);
  if (!d) throw CLI::ValidationError("--timeout", "'" + text + "' is not a duration; write e.g. 90s, 2m");
  return *d;
}

// Poll a database job, showing its phase, bytes, rate and ETA on one line, until it ends.
int follow_job(bc::Client& c, const std::string& id, bool quiet) {
  const bool tty = ::isatty(STDOUT_FILENO);
  auto t0 = std::chrono::steady_clock::now();  // start of the current phase: rates are per phase
  std::uint64_t done0 = 0;                    // bytes done when it started
  std::string last_phase;
  while (true) {
    auto r = c.get("/v1/jobs/" + url_encode(id));
    if (!r.ok()) return fail(r.error());
    const json& j = *r;
    if (j["phase"] != last_phase) {
      t0 = std::chrono::steady_clock::now();
      done0 = j["done_bytes"].get<std::uint64_t>();
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!quiet) {
      const std::string phase = j["phase"];
      const auto done = j["done_bytes"].get<std::uint64_t>(), total = j["total_bytes"].get<std::uint64_t>();
      std::string line = phase;
      if (total > 0) {
        const double rate = secs > 0.2 ? static_cast<double>(done - std::min(done, done0)) / secs : 0;
        line += fmt::format("  {} / {}", berth::format_bytes(done), berth::format_bytes(total));
        if (rate > 0) line += fmt::format("  {}/s", berth::format_bytes(static_cast<std::uint64_t>(rate)));
        if (rate > 0 && done < total) line += fmt::format("  ETA {:.0f}s", (total - done) / rate);
      }
      if (tty) fmt::print("\r\033[K{}", line);
      else if (phase != last_phase) fmt::print("{}\n", line);
      std::fflush(stdout);
      last_phase = phase;
    }
    if (j["done"].get<bool>()) {
      if (tty && !quiet) fmt::print("\n");
      if (!j["error"].is_null()) {
        fmt::print(stderr, "berth: {} failed: {}\n", j["target"].get<std::string>(), j["error"].get<std::string>());
        return 1;
      }
      if (!quiet && j.contains("version")) {
        const json& v = j["version"];
        fmt::print("{}@{}: {} in {} files, {} chunks; {} new chunks, {} uploaded to the store; {:.1f}s\n",
                   v["standard"].get<std::string>(), v["version"].get<int>(), berth::format_bytes(v["bytes"]),
                   v["files"].get<std::uint64_t>(), v["chunks"].get<std::uint64_t>(), v["new_chunks"].get<std::uint64_t>(),
                   berth::format_bytes(v["uploaded_bytes"]), v["import_ms"].get<double>() / 1000);
      }
      return 0;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));  // a display refresh, not a wait for state
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"berth — dev and beta environments on demand"};
  app.require_subcommand(1);
  std::string addr_flag;
  app.add_option("--addr", addr_flag, "daemon address ADDR:PORT (default $BERTH_ADDR or 127.0.0.1:7700)");

  berth::daemon::Options serve_opts;
  auto* serve = app.add_subcommand("serve", "run the control plane daemon");
  serve->add_option("--listen", serve_opts.listen, "API address ADDR:PORT")->capture_default_str();
  serve->add_option("--data-dir", serve_opts.data_dir, "state directory (SQLite database, logs)")->required();
  serve->add_option("--build-parallel", serve_opts.build_parallel, "builds at once (0: one per core)")->capture_default_str();
  std::string store_max = "2GiB";
  serve->add_option("--artifact-store-max", store_max, "artifact store size before least recently used artifacts no "
                                                       "instance runs are evicted (e.g. 500MiB, 2GiB)")
      ->capture_default_str();
  serve->add_option("--dns-listen", serve_opts.dns_listen, "name server address ADDR:PORT (\"\" to disable)")
      ->capture_default_str();
  if (const char* dh = std::getenv("DOCKER_HOST"); dh && std::string(dh).rfind("unix://", 0) == 0) serve_opts.docker_host = dh;
  serve->add_option("--docker-host", serve_opts.docker_host,
                    "run apps that have an image as containers of this dockerd: unix:///path/to/docker.sock "
                    "(default $DOCKER_HOST if it is a unix socket; none: such apps wait)");

  std::string file;
  auto* exec_cmd = app.add_subcommand("exec", "run a command inside a running instance (its container or its process's namespace)");
  std::string exec_env, exec_app, exec_timeout = "30s";
  int exec_ordinal = 0;
  std::vector<std::string> exec_argv;
  exec_cmd->add_option("environment", exec_env)->required();
  exec_cmd->add_option("app", exec_app)->required();
  exec_cmd->add_option("command", exec_argv, "the command and its arguments (after --)")->required();
  exec_cmd->add_option("-i,--instance", exec_ordinal, "instance ordinal")->capture_default_str();
  exec_cmd->add_option("--timeout", exec_timeout, "give up (and report) after this long")->capture_default_str();
  auto* apply = app.add_subcommand("apply", "validate and load a catalog (berth.yaml)");
  apply->add_option("-f,--file", file, "catalog file")->required();

  std::string env, app_code, output = "table", timeout_text = "120s";
  bool no_wait = false, quiet = false, follow_events = false;
  auto* up = app.add_subcommand("up", "bring an environment up and wait until it is ready");
  up->add_option("environment", env)->required();
  up->add_option("--timeout", timeout_text, "give up after this long")->capture_default_str();
  up->add_flag("--no-wait", no_wait, "return once the request is accepted");
  up->add_flag("-q,--quiet", quiet, "print nothing but errors");

  auto* down = app.add_subcommand("down", "stop an environment");
  down->add_option("environment", env)->required();
  down->add_option("--timeout", timeout_text, "give up waiting after this long")->capture_default_str();
  down->add_flag("--no-wait", no_wait, "return once the request is accepted");
  down->add_flag("-q,--quiet", quiet, "print nothing but errors");

  auto* refresh = app.add_subcommand("refresh", "rebuild apps whose branch moved and replace their instances one at a time");
  refresh->add_option("environment", env)->required();
  refresh->add_option("--timeout", timeout_text, "give up waiting after this long")->capture_default_str();
  refresh->add_flag("-q,--quiet", quiet, "print nothing but errors");

  auto* build_cmd = app.add_subcommand("build", "builds of apps built from source");
  build_cmd->require_subcommand(1);
  auto* build_logs = build_cmd->add_subcommand("logs", "print the log of an app's current build");
  build_logs->add_option("app", app_code)->required();
  std::string build_env = "baseline";
  build_logs->add_option("-e,--env", build_env, "environment whose build of the app to show")->capture_default_str();
  bool follow_log = false;
  build_logs->add_flag("-f,--follow", follow_log, "keep printing until the build ends");

  auto* logs = app.add_subcommand("logs", "print an instance's output (stdout and stderr)");
  logs->add_option("environment", env)->required();
  logs->add_option("app", app_code)->required();
  int ordinal = 0;
  logs->add_option("-i,--instance", ordinal, "instance ordinal")->capture_default_str();
  bool follow_logs = false;
  logs->add_flag("-f,--follow", follow_logs, "keep printing new output");

  auto* status = app.add_subcommand("status", "show an environment's apps and instances (all environments without one)");
  status->add_option("environment", env);
  status->add_option("-o,--output", output, "table or json")->check(CLI::IsMember({"table", "json"}));

  auto* config = app.add_subcommand("config", "show every effective setting and the layer it came from");
  config->add_option("environment", env)->required();
  config->add_option("app", app_code);
  config->add_option("-o,--output", output, "table or json")->check(CLI::IsMember({"table", "json"}));

  auto* events = app.add_subcommand("events", "list what happened in an environment, oldest first");
  events->add_option("environment", env)->required();
  events->add_option("-o,--output", output, "table or json")->check(CLI::IsMember({"table", "json"}));
  events->add_flag("-f,--follow", follow_events, "keep printing new events");

  serve->add_option("--blob-store", serve_opts.blob_store,
                    "where database snapshots go: DIR, swift://USER:KEY@HOST:PORT/CONTAINER or "
                    "s3://ACCESS:SECRET@HOST:PORT/BUCKET (default DATA-DIR/blobs)");
  serve->add_option("--db-dir", serve_opts.db_dir,
                    "goldens and copies of standard databases; put it on XFS (reflink=1) or btrfs for instant copies "
                    "(default DATA-DIR/db)");
  bool no_overlay = false;
  serve->add_flag("--db-no-overlay", no_overlay, "never make database copies with overlayfs");

  auto* db_cmd = app.add_subcommand("db", "standard databases: import versions, list them, reset an environment's copy");
  db_cmd->require_subcommand(1);
  auto* db_import = db_cmd->add_subcommand("import", "import the next version of a standard");
  std::string standard, from_server, from_datadir, from_dump, db_user = "root", db_password;
  db_import->add_option("standard", standard)->required();
  auto* fs_opt = db_import->add_option("--from-server", from_server, "a running server: HOST:PORT or a socket path (copied "
                                                                      "with mariadb-backup, not stopped)");
  auto* fd_opt = db_import->add_option("--from-datadir", from_datadir, "a stopped server's data directory");
  auto* fdump_opt = db_import->add_option("--from-dump", from_dump, "an SQL dump (loaded into a fresh server once)");
  fs_opt->excludes(fd_opt)->excludes(fdump_opt);
  fd_opt->excludes(fdump_opt);
  db_import->add_option("--user", db_user, "account for --from-server")->capture_default_str();
  db_import->add_option("--password", db_password, "its password");
  db_import->add_flag("-q,--quiet", quiet, "print nothing but errors");
  auto* db_versions = db_cmd->add_subcommand("versions", "list the versions of a standard (all standards without one)");
  db_versions->add_option("standard", standard);
  db_versions->add_option("-o,--output", output, "table or json")->check(CLI::IsMember({"table", "json"}));
  auto* db_clone = db_cmd->add_subcommand("clone", "give an environment a fresh copy of its database DB[@VERSION]");
  std::string db_name;
  db_clone->add_option("database", db_name, "the database as named in the catalog, optionally @VERSION")->required();
  db_clone->add_option("-e,--env", env, "environment")->required();
  db_clone->add_option("--timeout", timeout_text, "give up waiting after this long")->capture_default_str();
  db_clone->add_flag("-q,--quiet", quiet, "print nothing but errors");
  auto* db_rm = db_cmd->add_subcommand("rm", "forget a version of a standard (and its golden on this host)");
  db_rm->add_option("version", standard, "STANDARD@VERSION")->required();

  CLI11_PARSE(app, argc, argv);
  serve_opts.db_overlay = !no_overlay;

  if (serve->parsed()) {
    auto bytes = parse_size(store_max);
    if (!bytes) {
      fmt::print(stderr, "berth serve: --artifact-store-max '{}': write a size like 500MiB or 2GiB\n", store_max);
      return 2;
    }
    serve_opts.artifact_max_bytes = *bytes;
    return berth::daemon::run(serve_opts);
  }

  bc::Client c(bc::default_address(addr_flag));
  try {
    if (apply->parsed()) {
      std::ifstream in(file);
      if (!in) {
        fmt::print(stderr, "berth: cannot read {}: {}\n", file, std::strerror(errno));
        return 1;
      }
      std::stringstream ss;
      ss << in.rdbuf();
      std::string base_dir = std::filesystem::absolute(file).parent_path().string();
      auto r = c.put("/v1/catalog", {{"filename", file}, {"text", ss.str()}, {"base_dir", base_dir}});
      if (!r.ok()) return fail(r.error());
      fmt::print("applied {}:", file);
      for (const auto& e : (*r)["environments"])
        fmt::print(" {} ({} apps, {} instances)", e["name"].get<std::string>(), e["apps"].get<int>(), e["instances"].get<int>());
      fmt::print("\n");
      return 0;
    }
    if (up->parsed()) {
      berth::Millis timeout = parse_timeout(timeout_text);
      auto r = c.post("/v1/environments/" + url_encode(env) + "/up");
      if (!r.ok()) return fail(r.error());
      if (no_wait) return 0;
      return follow(c, env, (*r)["events_after"].get<std::int64_t>(), timeout, quiet,
                    [](const json& s) { return s["ready"].get<bool>(); }, "up");
    }
    if (down->parsed()) {
      berth::Millis timeout = parse_timeout(timeout_text);
      auto r = c.post("/v1/environments/" + url_encode(env) + "/down");
      if (!r.ok()) return fail(r.error());
      if (no_wait) return 0;
      return follow(c, env, (*r)["events_after"].get<std::int64_t>(), timeout, quiet, [&env](const json& s) {
        for (const auto& a : s["apps"]) {
          if (a["runs_in"] != env) continue;  // served by a base environment: not ours to stop
          for (const auto& i : a["instances"])
            if (i["state"] != "stopped") return false;
        }
        return true;
      }, "down");
    }
    if (refresh->parsed()) {
      berth::Millis timeout = parse_timeout(timeout_text);
      auto r = c.post("/v1/environments/" + url_encode(env) + "/refresh");
      if (!r.ok()) return fail(r.error());
      // Refreshed when nothing is being built or replaced any more and everything is ready.
      return follow(c, env, (*r)["events_after"].get<std::int64_t>(), timeout, quiet, [](const json& s) {
        if (!s["ready"].get<bool>() || s["updating"].get<bool>()) return false;
        for (const auto& a : s["apps"])
          if (a.contains("build") && a["build"]["state"] == "resolving") return false;
        return true;
      }, "refresh");
    }
    if (exec_cmd->parsed()) {
      if (!exec_argv.empty() && exec_argv.front() == "--") exec_argv.erase(exec_argv.begin());
      auto r = c.post(fmt::format("/v1/environments/{}/apps/{}/instances/{}/exec", url_encode(exec_env), url_encode(exec_app),
                                  exec_ordinal),
                      {{"command", exec_argv}, {"timeout", exec_timeout}});
      if (!r.ok()) return fail(r.error());
      fmt::print("{}", (*r)["output"].get<std::string>());
      if ((*r)["truncated"].get<bool>()) fmt::print(stderr, "berth: output truncated at 1 MiB\n");
      if ((*r)["timed_out"].get<bool>()) {
        fmt::print(stderr, "berth: {} did not finish within {}\n", exec_argv.front(), exec_timeout);
        return 124;
      }
      if ((*r)["exit_code"].is_null()) return 1;
      return (*r)["exit_code"].get<int>();
    }
    if (logs->parsed()) {
      std::string target = fmt::format("/v1/environments/{}/apps/{}/instances/{}/log", url_encode(env), url_encode(app_code), ordinal);
      auto r = c.get(target);
      while (true) {
        if (!r.ok()) return fail(r.error());
        fmt::print("{}", (*r)["text"].get<std::string>());
        std::fflush(stdout);
        if (!follow_logs) return 0;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));  // a display refresh, not a wait for state
        r = c.get(fmt::format("{}?offset={}", target, (*r)["offset"].get<std::int64_t>()));
      }
    }
    if (build_logs->parsed()) {
      auto s = c.get("/v1/environments/" + url_encode(build_env));
      if (!s.ok()) return fail(s.error());
      std::string id;
      for (const auto& a : (*s)["apps"])
        if (a["app"] == app_code && a.contains("build")) id = a["build"]["id"].get<std::string>();
      if (id.empty()) {
        fmt::print(stderr, "berth: app '{}' in {} has no build (no source, or its tag is not resolved yet)\n", app_code, build_env);
        return 1;
      }
      std::int64_t offset = 0;
      while (true) {
        auto r = c.get(fmt::format("/v1/builds/{}/log?offset={}", id, offset));
        if (!r.ok()) return fail(r.error());
        fmt::print("{}", (*r)["text"].get<std::string>());
        std::fflush(stdout);
        offset = (*r)["offset"].get<std::int64_t>();
        if (!follow_log || (*r)["done"].get<bool>()) {
          if ((*r)["text"].get<std::string>().empty() || !follow_log) break;
          continue;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));  // a display refresh, not a wait for state
      }
      return 0;
    }
    if (db_import->parsed()) {
      json body;
      if (!from_server.empty()) body = {{"from", "server"}, {"address", from_server}, {"user", db_user}, {"password", db_password}};
      else if (!from_datadir.empty()) body = {{"from", "datadir"}, {"path", std::filesystem::absolute(from_datadir).string()}};
      else if (!from_dump.empty()) body = {{"from", "dump"}, {"path", std::filesystem::absolute(from_dump).string()}};
      else {
        fmt::print(stderr, "berth db import: say where from: --from-server, --from-datadir or --from-dump\n");
        return 2;
      }
      auto r = c.post("/v1/standards/" + url_encode(standard) + "/import", body);
      if (!r.ok()) return fail(r.error());
      return follow_job(c, (*r)["id"].get<std::string>(), quiet);
    }
    if (db_versions->parsed()) {
      auto r = standard.empty() ? c.get("/v1/standards") : c.get("/v1/standards/" + url_encode(standard));
      if (!r.ok()) return fail(r.error());
      if (output == "json") fmt::print("{}\n", r->dump(2));
      else fmt::print("{}", berth::cli::versions_table(*r));
      return 0;
    }
    if (db_clone->parsed()) {
      berth::Millis timeout = parse_timeout(timeout_text);
      std::string name = db_name, version;
      if (auto at = db_name.find('@'); at != std::string::npos) {
        name = db_name.substr(0, at);
        version = "?version=" + url_encode(db_name.substr(at + 1));
      }
      auto r = c.post(fmt::format("/v1/environments/{}/databases/{}/reset{}", url_encode(env), url_encode(name), version));
      if (!r.ok()) return fail(r.error());
      // Done when the server runs on the new copy and is ready.
      return follow(c, env, (*r)["events_after"].get<std::int64_t>(), timeout, quiet, [&name](const json& s) {
        if (s["updating"].get<bool>()) return false;
        for (const auto& a : s["apps"])
          if (a["app"] == name) return a["state"] == "ready" && a.contains("database") && !a["database"]["version"].is_null();
        return false;
      }, "clone");
    }
    if (db_rm->parsed()) {
      auto at = standard.find('@');
      if (at == std::string::npos) {
        fmt::print(stderr, "berth db rm: name the version: STANDARD@VERSION (see berth db versions)\n");
        return 2;
      }
      auto r = c.del(fmt::format("/v1/standards/{}/versions/{}", url_encode(standard.substr(0, at)), url_encode(standard.substr(at + 1))));
      if (!r.ok()) return fail(r.error());
      fmt::print("removed {}\n", standard);
      return 0;
    }
    if (status->parsed()) {
      auto r = env.empty() ? c.get("/v1/environments") : c.get("/v1/environments/" + url_encode(env));
      if (!r.ok()) return fail(r.error());
      if (output == "json") {
        fmt::print("{}\n", r->dump(2));
      } else if (env.empty()) {
        for (const auto& s : *r) fmt::print("{}\n", berth::cli::status_table(s));
      } else {
        fmt::print("{}", berth::cli::status_table(*r));
      }
      return 0;
    }
    if (config->parsed()) {
      std::string target = "/v1/environments/" + url_encode(env) + "/config";
      if (!app_code.empty()) target += "?app=" + url_encode(app_code);
      auto r = c.get(target);
      if (!r.ok()) return fail(r.error());
      if (output == "json") fmt::print("{}\n", r->dump(2));
      else fmt::print("{}", berth::cli::config_table(*r));
      return 0;
    }
    if (events->parsed()) {
      std::int64_t after = 0;
      json all = json::array();
      while (true) {
        auto r = c.get(fmt::format("/v1/environments/{}/events?after={}", url_encode(env), after));
        if (!r.ok()) return fail(r.error());
        for (const auto& e : *r) {
          after = e["id"].get<std::int64_t>();
          if (output == "json") all.push_back(e);
          else fmt::print("{}\n", berth::cli::event_line(e));
        }
        if (!follow_events) {
          if (r->empty()) break;
          continue;  // fetch the next page
        }
        std::fflush(stdout);
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
      if (output == "json") fmt::print("{}\n", all.dump(2));
      return 0;
    }
  } catch (const CLI::ValidationError& e) {
    fmt::print(stderr, "berth: {}\n", e.what());
    return 2;
  }
  return 0;
}
