// Tokens and roles, and the API's admission and authorization in front of a control loop on
// the simulated runtime (no sockets: Api::handle directly).
#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <set>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "api/handlers.h"
#include "auth/auth.h"
#include "base/digest.h"
#include "base/gzip.h"
#include "base/worker.h"
#include "fake_prober.h"
#include "runtime/sim/sim_runtime.h"
#include "store/sqlite/sqlite_store.h"
#include "ui/assets.h"

using namespace berth;
using testing::HasSubstr;

TEST(Tokens, IssuedOnceStoredHashedRevocable) {
  auto store = std::move(store::SqliteStore::open(":memory:").value());
  ManualClock clock;
  auto tokens = std::move(auth::Tokens::load(*store, clock).value());
  EXPECT_FALSE(tokens->any_valid_admin());
  auto issued = tokens->issue("anna", auth::Role::kMember, "admin");
  ASSERT_TRUE(issued.ok());
  EXPECT_EQ(issued->secret.rfind("berth_", 0), 0u);
  EXPECT_EQ(issued->secret.size(), 6u + 64u);
  auto who = tokens->authenticate("Bearer " + issued->secret);
  ASSERT_TRUE(who.ok());
  EXPECT_EQ(who->user, "anna");
  EXPECT_EQ(who->role, auth::Role::kMember);
  // Only the hash is stored, and a reloaded set knows the token.
  auto stored = store->load_tokens();
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->size(), 1u);
  EXPECT_EQ(stored->at(0).hash, sha256_hex(issued->secret));
  EXPECT_NE(stored->at(0).hash.find(issued->record.id), std::string::npos);
  auto reloaded = std::move(auth::Tokens::load(*store, clock).value());
  EXPECT_TRUE(reloaded->authenticate("Bearer " + issued->secret).ok());
  // Wrong forms never echo what was sent.
  for (const char* bad : {"", "Basic abc", "Bearer ", "Bearer berth_00"}) {
    auto r = reloaded->authenticate(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::kUnauthenticated);
  }
  ASSERT_TRUE(reloaded->revoke(issued->record.id).ok());
  auto revoked = reloaded->authenticate("Bearer " + issued->secret);
  ASSERT_FALSE(revoked.ok());
  EXPECT_THAT(revoked.error().message, HasSubstr("revoked"));
  EXPECT_EQ(reloaded->revoke(issued->record.id).error().code, ErrorCode::kConflict);
  EXPECT_FALSE(tokens->issue("Anna Smith", auth::Role::kViewer, "admin").ok());
}

TEST(Roles, OwnersAndEditorsChangeTheirEnvironments) {
  auth::Principal anna{"anna", auth::Role::kMember, "t1"}, ben{"ben", auth::Role::kMember, "t2"},
      vic{"vic", auth::Role::kViewer, "t3"}, root{"admin", auth::Role::kAdmin, "t0"};
  EXPECT_TRUE(auth::may_change(anna, "dev-anna", true, "anna", {}, "up").ok());
  EXPECT_TRUE(auth::may_change(ben, "dev-anna", true, "anna", {"ben"}, "up").ok());
  auto other = auth::may_change(ben, "dev-anna", true, "anna", {}, "up");
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().code, ErrorCode::kForbidden);
  EXPECT_THAT(other.error().message, HasSubstr("belongs to anna"));
  EXPECT_THAT(other.error().message, HasSubstr("editors=ben"));
  EXPECT_FALSE(auth::may_change(anna, "baseline", false, "", {}, "down").ok());
  EXPECT_TRUE(auth::may_change(root, "baseline", false, "", {}, "down").ok());
  auto viewer = auth::may_change(vic, "dev-vic", true, "vic", {}, "up");
  ASSERT_FALSE(viewer.ok());
  EXPECT_THAT(viewer.error().message, HasSubstr("needs the member role; vic is a viewer"));
}

namespace {

const char* kFleet = R"(network: {pool: 10.29.0.0/24}
defaults:
  command: svc ${ip}
  ports: {http: 80}
  health: {type: tcp}
apps:
  users: {}
  orders: {depends_on: [users]}
environments:
  baseline: {}
)";

class ApiAuthTest : public testing::Test {
 protected:
  void SetUp() override {
    store_ = std::move(store::SqliteStore::open(":memory:").value());
    control::Deps d;
    d.clock = &clock_;
    d.executor = &exec_;
    d.runtimes = {&rt_};
    d.prober = &prober_;
    d.store = store_.get();
    d.data_dir = testing::TempDir();
    d.worker = worker_.get();
    loop_ = std::move(control::ControlLoop::create(d).value());
    ASSERT_TRUE(loop_->apply(kFleet, "berth.yaml").ok());
    tokens_ = std::move(auth::Tokens::load(*store_, clock_).value());
    for (auto [user, role] : {std::pair{"admin", auth::Role::kAdmin}, {"anna", auth::Role::kMember},
                              {"ben", auth::Role::kMember}, {"vic", auth::Role::kViewer}})
      secret_[user] = tokens_->issue(user, role, "test")->secret;
    api::Options o;
    o.allowed_hosts = {"127.0.0.1:7700"};
    api_ = std::make_unique<api::Api>(*loop_, *tokens_, o);
  }
  api::Response call(const std::string& user, const std::string& method, const std::string& target,
                     const std::string& body = "", const std::string& if_match = "") {
    api::Request r{method, target, body, user.empty() ? "" : "Bearer " + secret_[user], if_match, "",
                   "127.0.0.1:7700", "application/json", ""};
    return call(r);
  }
  api::Response call(const api::Request& r) {
    api::Response out;
    api_->handle(r, [&](api::Response res) { out = std::move(res); });
    return out;
  }

  std::unique_ptr<Worker> worker_;  // (set before SetUp by the fixtures that validate off the loop)
  ManualClock clock_;
  ManualExecutor exec_{clock_};
  runtime::SimRuntime rt_{exec_};
  testing_support::FakeProber prober_{exec_};
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<control::ControlLoop> loop_;
  std::unique_ptr<auth::Tokens> tokens_;
  std::map<std::string, std::string> secret_;
  std::unique_ptr<api::Api> api_;
};

}  // namespace

TEST_F(ApiAuthTest, EveryRequestButHealthNeedsAToken) {
  EXPECT_EQ(call("", "GET", "/v1/health").status, 200);
  EXPECT_EQ(call("", "GET", "/v1/environments").status, 401);
  EXPECT_EQ(call("vic", "GET", "/v1/environments").status, 200);
  EXPECT_EQ(call("vic", "GET", "/v1/tokens").status, 403);
  EXPECT_EQ(call("admin", "GET", "/v1/tokens").status, 200);
}

TEST_F(ApiAuthTest, BrowsersElsewhereAreRefused) {
  api::Request r{"POST", "/v1/environments/baseline/down", "", "Bearer " + secret_["admin"], "", "", "127.0.0.1:7700",
                 "application/json", ""};
  r.origin = "http://evil.example";
  EXPECT_EQ(call(r).status, 403);
  r.origin = "http://127.0.0.1:7700";
  EXPECT_EQ(call(r).status, 202);
  r.origin.clear();
  r.host = "evil.example:7700";
  EXPECT_EQ(call(r).status, 403);
  r.host = "127.0.0.1:7700";
  r.content_type = "text/plain";
  r.body = "{}";
  auto plain = call(r);
  EXPECT_EQ(plain.status, 400);
  EXPECT_THAT(plain.body, HasSubstr("application/json"));
}

TEST_F(ApiAuthTest, MembersChangeOnlyTheirOwn) {
  auto created = call("anna", "POST", "/v1/environments", R"({"name": "dev-anna", "base": "baseline"})");
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(created.etag, "\"1\"");
  EXPECT_EQ(call("vic", "POST", "/v1/environments", R"({"name": "dev-vic"})").status, 403);
  EXPECT_EQ(call("anna", "POST", "/v1/environments/dev-anna/up").status, 202);
  EXPECT_EQ(call("ben", "POST", "/v1/environments/dev-anna/down").status, 403);
  EXPECT_EQ(call("ben", "PATCH", "/v1/environments/dev-anna/document", R"({"set": {"orders.tag": "x"}})", "\"1\"").status,
            403);
  EXPECT_EQ(call("ben", "DELETE", "/v1/environments/dev-anna/document").status, 403);
  EXPECT_EQ(call("anna", "POST", "/v1/environments/baseline/up").status, 403);
  EXPECT_EQ(call("anna", "PUT", "/v1/catalog", R"({"text": "apps: {}"})").status, 403);
  EXPECT_EQ(call("anna", "POST", "/v1/reconcile").status, 403);
  // Instances run as the daemon's user: a command inside one is an admin's.
  auto exec = call("anna", "POST", "/v1/environments/dev-anna/apps/users/instances/0/exec", R"({"command": ["id"]})");
  EXPECT_EQ(exec.status, 403);
  EXPECT_THAT(exec.body, HasSubstr("needs the admin role"));
  // What admins own, a member may not set.
  auto command = call("anna", "PATCH", "/v1/environments/dev-anna/document", R"({"set": {"orders.command": "id"}})",
                      "\"1\"");
  EXPECT_EQ(command.status, 403);
  EXPECT_THAT(command.body, HasSubstr("orders.command"));
  // Writes carry their version: none, or a stale one, is refused.
  EXPECT_EQ(call("anna", "PATCH", "/v1/environments/dev-anna/document", R"({"set": {"orders.tag": "x"}})").status, 400);
  auto v2 = call("anna", "PATCH", "/v1/environments/dev-anna/document", R"({"set": {"orders.tag": "x"}})", "\"1\"");
  ASSERT_EQ(v2.status, 200) << v2.body;
  EXPECT_EQ(v2.etag, "\"2\"");
  auto stale = call("admin", "PUT", "/v1/environments/dev-anna/document", R"({"text": "base: baseline\n"})", "\"1\"");
  EXPECT_EQ(stale.status, 409);
  EXPECT_THAT(stale.body, HasSubstr("changed by anna"));
  // An admin may change anyone's.
  EXPECT_EQ(call("admin", "PUT", "/v1/environments/dev-anna/document", R"({"text": "base: baseline\n"})", "\"2\"").status,
            200);
  // Every write is audited, refusals are not writes.
  auto audit = call("admin", "GET", "/v1/audit?env=dev-anna");
  ASSERT_EQ(audit.status, 200);
  auto log = nlohmann::json::parse(audit.body);
  std::vector<std::string> actions;
  for (const auto& e : log) actions.push_back(e["user"].get<std::string>() + " " + e["action"].get<std::string>());
  EXPECT_EQ(actions, (std::vector<std::string>{"anna env.create", "anna env.up", "anna env.update", "admin env.update"}));
}

TEST_F(ApiAuthTest, DownOfABaseThatThinEnvironmentsUseNeedsForce) {
  ASSERT_EQ(call("anna", "POST", "/v1/environments", R"({"name": "thin-anna", "base": "baseline", "thin": true,
                                                        "set": {"orders.tag": "x"}})").status, 201);
  ASSERT_EQ(call("admin", "POST", "/v1/environments/baseline/up").status, 202);
  ASSERT_EQ(call("anna", "POST", "/v1/environments/thin-anna/up").status, 202);
  exec_.run_ready();
  auto refused = call("admin", "POST", "/v1/environments/baseline/down");
  EXPECT_EQ(refused.status, 409);
  EXPECT_THAT(refused.body, HasSubstr("thin-anna"));
  EXPECT_EQ(call("admin", "POST", "/v1/environments/baseline/down?force=1").status, 202);
}

TEST_F(ApiAuthTest, SecretsAreNeverAnswered) {
  ASSERT_EQ(call("anna", "POST", "/v1/environments", R"({"name": "dev-anna", "base": "baseline"})").status, 201);
  auto put = call("anna", "PUT", "/v1/environments/dev-anna/document",
                  R"({"text": "base: baseline\napps:\n  users:\n    env: {DB_PASSWORD: {secret: true, value: hunter2}}\n"})",
                  "\"1\"");
  ASSERT_EQ(put.status, 200) << put.body;
  for (const char* target : {"/v1/environments/dev-anna/document", "/v1/environments/dev-anna/config",
                             "/v1/environments/dev-anna/diff", "/v1/environments/dev-anna", "/v1/documents",
                             "/v1/audit", "/v1/environments/dev-anna/events"}) {
    auto r = call("vic", "GET", target);
    EXPECT_EQ(r.status, 200) << target << ": " << r.body;
    EXPECT_THAT(r.body, testing::Not(HasSubstr("hunter2"))) << target;
  }
  EXPECT_THAT(put.body, testing::Not(HasSubstr("hunter2")));
  // Read masked and written back with another change: the secret keeps its value.
  auto doc = nlohmann::json::parse(call("anna", "GET", "/v1/environments/dev-anna/document").body);
  std::string text = doc["text"].get<std::string>() + "description: mine\n";
  auto again = call("anna", "PUT", "/v1/environments/dev-anna/document", nlohmann::json{{"text", text}}.dump(), "\"2\"");
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(loop_->catalog()->find("dev-anna")->find("users")->env.at("DB_PASSWORD"), "hunter2");
}

TEST_F(ApiAuthTest, TheWebUiIsPublicItsApiIsNot) {
  auto page = call("", "GET", "/");
  EXPECT_EQ(page.status, 200);
  EXPECT_EQ(page.content_type.rfind("text/html", 0), 0u);
  EXPECT_EQ(page.cache_control, "no-store");
  EXPECT_THAT(page.body, HasSubstr("<"));
  EXPECT_EQ(call("", "GET", "/nosuch.js").status, 404);
  EXPECT_EQ(call("", "GET", "/v1/whoami").status, 401);
  for (const auto& a : ui::assets())
    if (a.path.rfind("/assets/", 0) == 0) {
      auto r = call("", "GET", std::string(a.path));
      EXPECT_EQ(r.status, 200) << a.path;
      EXPECT_THAT(r.cache_control, HasSubstr("immutable"));
    }
}

TEST_F(ApiAuthTest, LargeAnswersAreGzippedForWhoeverAcceptsIt) {
  ASSERT_EQ(call("admin", "POST", "/v1/environments/baseline/up").status, 202);
  api::Request r{"GET", "/v1/environments/baseline", "", "Bearer " + secret_["anna"], "", "", "127.0.0.1:7700", "", ""};
  const auto plain = call(r);
  ASSERT_EQ(plain.status, 200);
  EXPECT_EQ(plain.content_encoding, "");
  r.accept_encoding = "gzip, deflate, br";
  const auto zipped = call(r);
  ASSERT_EQ(zipped.status, 200);
  EXPECT_EQ(zipped.content_encoding, "gzip");
  EXPECT_LT(zipped.body.size(), plain.body.size());
  auto inflated = gunzip(zipped.body, 1 << 20);
  ASSERT_TRUE(inflated.ok()) << inflated.error().message;
  EXPECT_EQ(*inflated, plain.body);
  // Asked again: the same bytes (compressed once per view of the environment).
  EXPECT_EQ(call(r).body, zipped.body);
  // Refused by the client: plain.
  r.accept_encoding = "gzip;q=0";
  EXPECT_EQ(call(r).content_encoding, "");
  // The web UI's larger files too.
  for (const auto& a : ui::assets())
    if (a.data.size() >= 4096) {
      api::Request get{"GET", std::string(a.path), "", "", "", "", "127.0.0.1:7700", "", "gzip"};
      auto res = call(get);
      ASSERT_EQ(res.status, 200) << a.path;
      EXPECT_EQ(res.content_encoding, "gzip") << a.path;
      EXPECT_EQ(gunzip(res.body, 64 << 20).value(), a.data) << a.path;
    }
}

// The API with its transport on a thread of its own (as berth serve runs it): status reads are
// answered there from the read model without the loop, everything else crosses to the loop and
// back. The test's main thread is the loop's (ManualExecutor); run under ThreadSanitizer in CI.
namespace {

// A thread that runs what is posted to it, in order: the transport's thread.
class TransportQueue {
 public:
  TransportQueue() : thread_([this] { run(); }) {}
  ~TransportQueue() {
    {
      std::lock_guard<std::mutex> held(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  void post(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> held(mu_);
      queue_.push_back(std::move(fn));
    }
    wake_.notify_all();
  }
  std::thread::id id() const { return thread_.get_id(); }

 private:
  void run() {
    std::unique_lock<std::mutex> held(mu_);
    for (;;) {
      wake_.wait(held, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      auto fn = std::move(queue_.front());
      queue_.pop_front();
      held.unlock();
      fn();
      held.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::thread thread_;
};

class ApiThreadsTest : public ApiAuthTest {
 protected:
  void SetUp() override {
    ApiAuthTest::SetUp();
    api::Options o;
    o.allowed_hosts = {"127.0.0.1:7700"};
    o.loop_executor = &exec_;
    o.to_transport = [this](std::function<void()> fn) { transport_.post(std::move(fn)); };
    api_ = std::make_unique<api::Api>(*loop_, *tokens_, o);
    loop_->publish_status();
  }
  void TearDown() override {
    // Nothing of the transport may run once the Api is gone.
    std::promise<void> drained;
    transport_.post([&] { drained.set_value(); });
    drained.get_future().wait();
  }
  // handle() on the transport's thread; the answer arrives there too (checked).
  std::future<api::Response> send(const std::string& user, const std::string& method, const std::string& target,
                                  const std::string& body = "") {
    auto answer = std::make_shared<std::promise<api::Response>>();
    api::Request r{method, target, body, "Bearer " + secret_[user], "", "", "127.0.0.1:7700", "application/json", ""};
    transport_.post([this, r, answer] {
      api_->handle(r, [this, answer](api::Response res) {
        if (std::this_thread::get_id() != transport_.id()) res.status = 599;  // answered on the wrong thread
        answer->set_value(std::move(res));
      });
    });
    return answer->get_future();
  }
  // Run the loop until `f` is ready (a deadline, no sleeping for state).
  api::Response pump(std::future<api::Response>& f) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (f.wait_for(std::chrono::milliseconds(1)) != std::future_status::ready) {
      exec_.run_ready();
      if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("no answer within 20 s");
    }
    return f.get();
  }
  TransportQueue transport_;
};

}  // namespace

TEST_F(ApiThreadsTest, StatusReadsNeedNoLoopAndClientsReadTheirWrites) {
  // Answered while the loop runs nothing at all.
  auto read = send("vic", "GET", "/v1/environments/baseline");
  ASSERT_EQ(read.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  auto first = read.get();
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_THAT(first.body, HasSubstr(R"("up":false)"));
  auto missing = send("vic", "GET", "/v1/environments/baselin").get();
  EXPECT_EQ(missing.status, 404);
  EXPECT_THAT(missing.body, HasSubstr("did you mean 'baseline'"));

  // A write waits for the loop, and the next read shows it.
  auto up = send("admin", "POST", "/v1/environments/baseline/up");
  EXPECT_EQ(up.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout) << "answered without the loop";
  EXPECT_EQ(pump(up).status, 202);
  auto after = send("vic", "GET", "/v1/environments/baseline");
  ASSERT_EQ(after.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  EXPECT_THAT(after.get().body, HasSubstr(R"("up":true)"));
  // Reads other than status go through the loop, and come back to the transport.
  auto events = send("vic", "GET", "/v1/environments/baseline/events");
  auto answered = pump(events);
  EXPECT_EQ(answered.status, 200);
  EXPECT_THAT(answered.body, HasSubstr("environment requested up"));
  // Authorization is the loop's (it reads ownership there), refusals come back the same way.
  auto refused = send("anna", "POST", "/v1/environments/baseline/down");
  EXPECT_EQ(pump(refused).status, 403);
}

TEST_F(ApiThreadsTest, ReadsRaceNothingWhileTheLoopChangesEverything) {
  // The transport reads snapshots while the loop brings the environment up and down: under
  // ThreadSanitizer any shared state touched by both is reported.
  std::atomic<bool> done{false};
  std::atomic<int> answered{0}, bad{0};
  std::thread reader([&] {
    while (!done) {
      auto one = send("vic", "GET", "/v1/environments/baseline");
      auto list = send("vic", "GET", "/v1/environments?summary=1&limit=10");
      for (auto* f : {&one, &list}) {
        if (f->wait_for(std::chrono::seconds(20)) != std::future_status::ready) return (void)++bad;
        (f->get().status == 200 ? answered : bad)++;
      }
    }
  });
  for (int round = 0; round < 20; ++round) {
    auto up = send("admin", "POST", "/v1/environments/baseline/up");
    EXPECT_EQ(pump(up).status, 202);
    exec_.advance(100);
    auto down = send("admin", "POST", "/v1/environments/baseline/down");
    EXPECT_EQ(pump(down).status, 202);
    exec_.advance(100);
  }
  done = true;
  reader.join();
  EXPECT_EQ(bad, 0);
  EXPECT_GT(answered, 0);
}

TEST_F(ApiThreadsTest, EventStreamsCrossFromTheLoopToTheTransport) {
  auto opened = send("vic", "GET", "/v1/events/stream?env=baseline");
  auto r = pump(opened);
  ASSERT_TRUE(r.stream);
  std::mutex mu;
  std::vector<std::string> frames;
  std::set<std::thread::id> threads;
  std::promise<std::function<void()>> closer;
  transport_.post([&] {
    closer.set_value(r.stream([&](const std::string& frame) {
      std::lock_guard<std::mutex> held(mu);
      frames.push_back(frame);
      threads.insert(std::this_thread::get_id());
      return true;
    }));
  });
  auto close = closer.get_future().get();
  exec_.run_ready();  // the subscription is made on the loop
  auto up = send("admin", "POST", "/v1/environments/baseline/up");
  EXPECT_EQ(pump(up).status, 202);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  auto has_up = [&] {
    std::lock_guard<std::mutex> held(mu);
    return std::any_of(frames.begin(), frames.end(), [](const auto& f) { return f.find("requested up") != std::string::npos; });
  };
  while (!has_up() && std::chrono::steady_clock::now() < deadline) exec_.run_ready();
  ASSERT_TRUE(has_up());
  {
    std::lock_guard<std::mutex> held(mu);
    EXPECT_EQ(threads, std::set<std::thread::id>{transport_.id()});
  }
  // The transport ends it: the loop unsubscribes, and nothing more arrives.
  std::promise<void> ended;
  transport_.post([&] {
    close();
    ended.set_value();
  });
  ended.get_future().wait();
  exec_.run_ready();
  std::size_t seen = 0;
  {
    std::lock_guard<std::mutex> held(mu);
    seen = frames.size();
  }
  auto down = send("admin", "POST", "/v1/environments/baseline/down");
  EXPECT_EQ(pump(down).status, 202);
  std::promise<void> flushed;
  transport_.post([&] { flushed.set_value(); });
  flushed.get_future().wait();
  std::lock_guard<std::mutex> held(mu);
  EXPECT_EQ(frames.size(), seen);
}

// A fleet document is validated on the worker: the loop answers meanwhile, and installs it after.
class ApiWorkerTest : public ApiThreadsTest {
 protected:
  void SetUp() override {
    worker_ = std::make_unique<Worker>("test");
    ApiThreadsTest::SetUp();
  }
};

TEST_F(ApiWorkerTest, TheLoopAnswersWhileAFleetDocumentIsValidated) {
  // The worker is busy with something else until the test says so: the validation waits behind it.
  std::promise<void> go;
  worker_->post([f = go.get_future().share()] { f.wait(); });
  struct Release {  // (whatever happens below: a worker that waits forever would hang the test's end)
    std::promise<void>& go;
    bool done = false;
    void operator()() {
      if (!done) go.set_value();
      done = true;
    }
    ~Release() { (*this)(); }
  } release{go};
  std::string fleet = kFleet;
  fleet += "  qa: {}\n";
  auto apply = send("admin", "PUT", "/v1/catalog", nlohmann::json{{"text", fleet}, {"filename", "berth.yaml"}}.dump());
  auto up = send("admin", "POST", "/v1/environments/baseline/up");
  EXPECT_EQ(pump(up).status, 202);  // answered while the document waits for its validation
  EXPECT_EQ(apply.wait_for(std::chrono::milliseconds(20)), std::future_status::timeout);
  EXPECT_FALSE(loop_->catalog()->find("qa"));
  release();
  auto applied = pump(apply);
  ASSERT_EQ(applied.status, 200) << applied.body;
  EXPECT_THAT(applied.body, HasSubstr(R"("added":["qa"])"));
  EXPECT_TRUE(loop_->catalog()->find("qa"));
  // An invalid one is refused the same way, nothing changed.
  auto bad = send("admin", "PUT", "/v1/catalog", nlohmann::json{{"text", "apps: [\n"}}.dump());
  EXPECT_EQ(pump(bad).status, 400);
  EXPECT_TRUE(loop_->catalog()->find("qa"));
}
