// The control loop on test doubles: a fake runtime and prober, a ManualExecutor and
// ManualClock (virtual time, no sleeping) and a real SQLite store in memory.
#include <algorithm>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "control/loop.h"
#include "store/sqlite/sqlite_store.h"

using namespace berth;
using testing::HasSubstr;

namespace {

class FakeRuntime : public runtime::Runtime {
 public:
  struct Proc {
    runtime::InstanceSpec spec;
    ExitCallback on_exit;
    bool stopping = false;
  };
  Result<runtime::Handle> start(const runtime::InstanceSpec& spec, const std::function<Status(const runtime::Handle&)>& record,
                                ExitCallback on_exit) override {
    runtime::Handle h{next_pid_, next_pid_, 1};
    ++next_pid_;
    BERTH_TRY(record(h));
    procs[h.pid] = {spec, std::move(on_exit)};
    started.push_back(spec.app + "#" + std::to_string(spec.ordinal));
    return h;
  }
  bool adopt(const runtime::Handle&, ExitCallback) override { return false; }
  void stop(const runtime::Handle& h, Millis) override { procs[h.pid].stopping = true; exit(h.pid, 15); }
  void kill_now(const runtime::Handle& h) override { exit(h.pid, 9); }

  void exit(int pid, int sig) {
    auto it = procs.find(pid);
    if (it == procs.end()) return;
    auto cb = std::move(it->second.on_exit);
    procs.erase(it);
    cb({true, sig, "killed by signal " + std::to_string(sig)});
  }
  int pid_of(const std::string& env, const std::string& app, int ordinal) const {
    for (const auto& [pid, p] : procs)
      if (p.spec.env == env && p.spec.app == app && p.spec.ordinal == ordinal) return pid;
    return 0;
  }
  int running(const std::string& app) const {
    return static_cast<int>(std::count_if(procs.begin(), procs.end(), [&](const auto& p) { return p.second.spec.app == app; }));
  }

  std::map<int, Proc> procs;
  std::vector<std::string> started;

 private:
  int next_pid_ = 1000;
};

// Probes pass for addresses marked healthy; the answer comes back through the executor.
class FakeProber : public health::Prober {
 public:
  explicit FakeProber(Executor& ex) : ex_(ex) {}
  std::unique_ptr<health::ProbeHandle> probe(const health::ProbeTarget& t, std::function<void(health::ProbeResult)> done) override {
    bool ok = healthy.count(t.ip) > 0;
    ++probes;
    ex_.post([done, ok] { done({ok, ok ? "GET /healthcheck → 200" : "GET /healthcheck → connection refused"}); });
    return std::make_unique<health::ProbeHandle>();
  }
  std::set<std::string> healthy;
  int probes = 0;

 private:
  Executor& ex_;
};

const char* kCatalog = R"(network: {pool: 10.9.0.0/24}
defaults:
  command: svc ${ip}
  ports: {http: 80}
  health: {type: http, start_interval: 50ms, interval: 1s, start_period: 10s, failure_threshold: 2}
  restart: {backoff: 100ms}
apps:
  db: {}
  api:
    depends_on: [db]
  web:
    depends_on: [{app: api, on_failure: restart}]
  worker:
    depends_on: [{app: db, soft: true}]
  cron: {}
environments:
  dev: {}
)";

class LoopTest : public testing::Test {
 protected:
  void SetUp() override {
    store_ = std::move(store::SqliteStore::open(":memory:").value());
    control::Deps d;
    d.clock = &clock_;
    d.executor = &exec_;
    d.runtime = &rt_;
    d.prober = &prober_;
    d.store = store_.get();
    d.data_dir = testing::TempDir();
    loop_ = std::move(control::ControlLoop::create(d).value());
    ASSERT_TRUE(loop_->apply(kCatalog, "t.yaml").ok());
  }
  std::string ip(const std::string& app, int ordinal = 0) {
    auto s = loop_->status("dev");
    for (const auto& a : s->apps)
      if (a.app == app) return a.instances.at(static_cast<std::size_t>(ordinal)).ip;
    return "";
  }
  const control::AppStatus& app(const std::string& name) {
    status_ = loop_->status("dev").value();
    for (const auto& a : status_.apps)
      if (a.app == name) return a;
    throw std::runtime_error("no app " + name);
  }
  std::vector<std::string> event_types(const std::string& app_name) {
    std::vector<std::string> out;
    auto events = loop_->events("dev", 0, 1000);  // named: *temporary would dangle in a range-for
    for (const auto& e : *events)
      if (e.app == app_name) out.push_back(e.type);
    return out;
  }
  void make_healthy(const std::string& a) { prober_.healthy.insert(ip(a)); }

  ManualClock clock_;
  ManualExecutor exec_{clock_};
  FakeRuntime rt_;
  FakeProber prober_{exec_};
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<control::ControlLoop> loop_;
  control::EnvStatus status_;
};

}  // namespace

TEST_F(LoopTest, StartsInWavesGatedOnHealth) {
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.run_ready();
  // Wave 1: everything without a hard dependency, in parallel; soft dependencies never block.
  EXPECT_EQ(rt_.running("db"), 1);
  EXPECT_EQ(rt_.running("cron"), 1);
  EXPECT_EQ(rt_.running("worker"), 1);
  EXPECT_EQ(rt_.running("api"), 0);
  EXPECT_EQ(app("api").state, "waiting");
  EXPECT_EQ(app("web").waiting_for, std::vector<std::string>{"api"});

  exec_.advance(1000);  // db keeps failing: nothing moves, however long
  EXPECT_EQ(rt_.running("api"), 0);
  EXPECT_THAT(app("api").message, HasSubstr("waiting for db: GET /healthcheck → connection refused"));

  make_healthy("db");
  exec_.advance(50);
  EXPECT_EQ(app("db").state, "ready");
  EXPECT_EQ(rt_.running("api"), 1);  // wave 2 starts as soon as db is ready
  EXPECT_EQ(rt_.running("web"), 0);
  make_healthy("api");
  exec_.advance(50);
  EXPECT_EQ(rt_.running("web"), 1);
}

TEST_F(LoopTest, FirstProbeIsImmediate) {
  make_healthy("db");
  // Addresses are assigned deterministically: db gets the first usable one.
  prober_.healthy.insert("10.9.0.1");
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(0);
  EXPECT_EQ(app("db").state, "ready");  // no time has passed at all
}

TEST_F(LoopTest, CrashedInstanceRestartsWithSameAddressAfterBackoff) {
  for (auto a : {"10.9.0.1", "10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5"}) prober_.healthy.insert(a);
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(11'000);  // ready and stable for over 10 s
  ASSERT_EQ(app("cron").state, "ready");
  std::string before = ip("cron");
  int pid = rt_.pid_of("dev", "cron", 0);
  rt_.exit(pid, 9);
  exec_.advance(0);
  EXPECT_EQ(rt_.running("cron"), 1);  // the first crash after a stable run restarts at once
  exec_.advance(50);  // ready again, but not stable: the next crash backs off
  rt_.exit(rt_.pid_of("dev", "cron", 0), 9);
  exec_.run_ready();
  EXPECT_EQ(rt_.running("cron"), 0);
  EXPECT_EQ(app("cron").state, "failed");
  EXPECT_THAT(app("cron").message, HasSubstr("restarting in 200ms"));  // 100ms doubled
  exec_.advance(200);
  EXPECT_EQ(rt_.running("cron"), 1);
  EXPECT_EQ(ip("cron"), before);
  EXPECT_EQ(app("cron").instances[0].restarts, 2);
  auto types = event_types("cron");
  EXPECT_NE(std::find(types.begin(), types.end(), "exited"), types.end());
  EXPECT_NE(std::find(types.begin(), types.end(), "restarting"), types.end());
}

TEST_F(LoopTest, DependencyFailureMarksOrRestartsDependents) {
  for (auto a : {"10.9.0.1", "10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5"}) prober_.healthy.insert(a);
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(300);
  ASSERT_TRUE(loop_->status("dev")->ready);
  int web_pid = rt_.pid_of("dev", "web", 0);

  // db stops answering: after two failed probes it is unhealthy and restarted.
  prober_.healthy.erase(ip("db"));
  prober_.healthy.erase(ip("api"));
  exec_.advance(3000);
  // api depends on db with policy mark: degraded, still running, told by an event.
  auto api_events = event_types("api");
  EXPECT_NE(std::find(api_events.begin(), api_events.end(), "dependency-failed"), api_events.end());
  // web depends on api with policy restart: its old process was stopped.
  EXPECT_NE(rt_.pid_of("dev", "web", 0), web_pid);

  prober_.healthy.insert(ip("db"));
  prober_.healthy.insert(ip("api"));
  exec_.advance(3000);
  EXPECT_TRUE(loop_->status("dev")->ready);
  auto after = event_types("api");
  EXPECT_NE(std::find(after.begin(), after.end(), "dependency-recovered"), after.end());
  EXPECT_EQ(app("api").state, "ready");  // the degraded mark is gone
}

TEST_F(LoopTest, DegradedWhileDependencyDown) {
  for (auto a : {"10.9.0.1", "10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5"}) prober_.healthy.insert(a);
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(300);
  prober_.healthy.erase(ip("db"));
  exec_.advance(2500);  // db: two failed probes a second apart → unhealthy → being restarted
  EXPECT_EQ(app("api").state, "degraded");
}

TEST_F(LoopTest, ApplyRestartsOnlyChangedApps) {
  for (auto a : {"10.9.0.1", "10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5"}) prober_.healthy.insert(a);
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(300);
  std::map<std::string, int> pids;
  for (auto a : {"db", "api", "web", "worker", "cron"}) pids[a] = rt_.pid_of("dev", a, 0);
  std::string changed = kCatalog;
  changed.replace(changed.find("  cron: {}"), 10, "  cron: {env: {X: '1'}}");
  ASSERT_TRUE(loop_->apply(changed, "t.yaml").ok());
  exec_.advance(300);
  EXPECT_NE(rt_.pid_of("dev", "cron", 0), pids["cron"]);
  for (auto a : {"db", "api", "web", "worker"}) EXPECT_EQ(rt_.pid_of("dev", a, 0), pids[a]) << a;
  EXPECT_EQ(rt_.procs[rt_.pid_of("dev", "cron", 0)].spec.env_vars.at("X"), "1");
}

TEST_F(LoopTest, InvalidApplyChangesNothing) {
  auto st = loop_->apply("defaults: {command: x}\napps: {a: {depends_on: [b]}}\nenvironments: {dev: {}}\n", "bad.yaml");
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.error().message, HasSubstr("bad.yaml:2:25: apps.a.depends_on: unknown app 'b'"));
  EXPECT_EQ(loop_->catalog()->filename(), "t.yaml");
}

TEST_F(LoopTest, DownStopsEverythingAndKeepsAddressesReserved) {
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.run_ready();
  std::string db_ip = ip("db");
  ASSERT_TRUE(loop_->down("dev").ok());
  exec_.run_ready();
  EXPECT_TRUE(rt_.procs.empty());
  EXPECT_EQ(app("db").state, "stopped");
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.run_ready();
  EXPECT_EQ(ip("db"), db_ip);
}

TEST_F(LoopTest, UnknownEnvironmentSuggests) {
  auto st = loop_->up("dve");
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.error().message, HasSubstr("no environment 'dve' in the catalog (did you mean 'dev'?)"));
}

TEST_F(LoopTest, InstancesLearnWhoAndWhereTheyAre) {
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.run_ready();
  make_healthy("db");
  exec_.advance(100);
  const auto& spec = rt_.procs[rt_.pid_of("dev", "api", 0)].spec;
  EXPECT_EQ(spec.env_vars.at("BERTH_ENV"), "dev");
  EXPECT_EQ(spec.env_vars.at("BERTH_APP"), "api");
  EXPECT_EQ(spec.env_vars.at("BERTH_INSTANCE"), "0");
  EXPECT_EQ(spec.env_vars.at("BERTH_IP"), ip("api"));
  EXPECT_EQ(spec.env_vars.at("BERTH_PORT_HTTP"), "80");
  EXPECT_EQ(spec.env_vars.at("BERTH_DEP_DB_HTTP"), ip("db") + ":80");
  EXPECT_EQ(spec.command, "svc '" + ip("api") + "'");
}

TEST_F(LoopTest, ChangedSettingsReplaceInstancesOneAtATimeHealthGated) {
  std::string two = kCatalog;
  two.replace(two.find("  cron: {}"), 10, "  cron: {instances: 3}");
  ASSERT_TRUE(loop_->apply(two, "t.yaml").ok());
  for (int i = 1; i <= 10; ++i) prober_.healthy.insert("10.9.0." + std::to_string(i));
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(300);
  ASSERT_TRUE(loop_->status("dev")->ready);
  std::vector<int> old_pids;
  for (int o = 0; o < 3; ++o) old_pids.push_back(rt_.pid_of("dev", "cron", o));
  std::string changed = two;
  changed.replace(changed.find("  cron: {instances: 3}"), 22, "  cron: {instances: 3, env: {V: '2'}}");
  // New instances never become ready until we say so: the roll must wait at the first one.
  for (int o = 0; o < 3; ++o) prober_.healthy.erase(app("cron").instances[static_cast<std::size_t>(o)].ip);
  ASSERT_TRUE(loop_->apply(changed, "t.yaml").ok());
  exec_.advance(1000);
  int replaced = 0, ready = 0;
  for (int o = 0; o < 3; ++o) {
    if (rt_.pid_of("dev", "cron", o) != old_pids[static_cast<std::size_t>(o)]) ++replaced;
    if (app("cron").instances[static_cast<std::size_t>(o)].state == "ready") ++ready;
  }
  EXPECT_EQ(replaced, 1);  // only one in flight
  EXPECT_EQ(ready, 2);     // the others keep serving
  // Let new instances pass their checks: the roll completes, one after another.
  for (int o = 0; o < 3; ++o) prober_.healthy.insert(app("cron").instances[static_cast<std::size_t>(o)].ip);
  exec_.advance(3000);
  for (int o = 0; o < 3; ++o) {
    EXPECT_NE(rt_.pid_of("dev", "cron", o), old_pids[static_cast<std::size_t>(o)]);
    EXPECT_EQ(rt_.procs[rt_.pid_of("dev", "cron", o)].spec.env_vars.at("V"), "2");
  }
  EXPECT_TRUE(loop_->status("dev")->ready);
}

TEST_F(LoopTest, UnhealthyRestartsBackOff) {
  for (int i = 1; i <= 5; ++i) prober_.healthy.insert("10.9.0." + std::to_string(i));
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(300);
  ASSERT_EQ(app("cron").state, "ready");
  prober_.healthy.erase(ip("cron"));  // fails from now on, also after every restart
  exec_.advance(30'000);
  auto starts = std::count(rt_.started.begin(), rt_.started.end(), "cron#0");
  // Without backoff a restart would follow every few probes (hundreds in 30 s); with it, the
  // delays double from 100 ms up to the 10 s cap after the 10 s start period of each attempt.
  EXPECT_GE(starts, 2);
  EXPECT_LE(starts, 5);
  auto types = event_types("cron");
  EXPECT_EQ(std::count(types.begin(), types.end(), "unhealthy"), starts - 1);
}
