// The control loop on test doubles: the simulated runtime (runtime/sim), a fake prober, a
// ManualExecutor and ManualClock (virtual time, no sleeping) and a real SQLite store in memory.
#include <algorithm>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "control/loop.h"
#include "fake_prober.h"
#include "runtime/sim/sim_runtime.h"
#include "store/sqlite/sqlite_store.h"

using namespace berth;
using testing::HasSubstr;

namespace {

using testing_support::FakeProber;

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
    loop_ = std::move(control::ControlLoop::create(deps({&rt_})).value());
    ASSERT_TRUE(loop_->apply(kCatalog, "t.yaml").ok());
  }
  // What the daemon would give the loop, with these runtimes.
  control::Deps deps(std::vector<runtime::Runtime*> runtimes) {
    control::Deps d;
    d.clock = &clock_;
    d.executor = &exec_;
    d.runtimes = std::move(runtimes);
    d.prober = &prober_;
    d.store = store_.get();
    d.data_dir = testing::TempDir();
    return d;
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
  // Every address of the pool answers its health checks (10.9.0.1 is the gateway, never used).
  void all_healthy() {
    for (int i = 2; i <= 30; ++i) prober_.healthy.insert("10.9.0." + std::to_string(i));
  }
  const runtime::InstanceSpec& spec_of(const std::string& a, int ordinal = 0) {
    return rt_.instances().at(rt_.ref_of("dev", a, ordinal)).spec;
  }

  ManualClock clock_;
  ManualExecutor exec_{clock_};
  runtime::SimRuntime rt_{exec_};
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
  // Addresses are assigned deterministically: db gets the first usable one (after the gateway).
  prober_.healthy.insert("10.9.0.2");
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(0);
  EXPECT_EQ(app("db").state, "ready");  // no time has passed at all
}

TEST_F(LoopTest, CrashedInstanceRestartsWithSameAddressAfterBackoff) {
  all_healthy();
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(11'000);  // ready and stable for over 10 s
  ASSERT_EQ(app("cron").state, "ready");
  std::string before = ip("cron");
  rt_.exit(rt_.ref_of("dev", "cron", 0), 137, 9);
  exec_.advance(0);
  EXPECT_EQ(rt_.running("cron"), 1);  // the first crash after a stable run restarts at once
  exec_.advance(50);  // ready again, but not stable: the next crash backs off
  rt_.exit(rt_.ref_of("dev", "cron", 0), 137, 9);
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

TEST_F(LoopTest, AFirstCrashSoonAfterReadinessBacksOff) {
  // Ready for 50 ms is not a stable run: the first crash waits restart.backoff (100 ms).
  all_healthy();
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(300);
  ASSERT_EQ(app("cron").state, "ready");
  exec_.advance(50);
  rt_.exit(rt_.ref_of("dev", "cron", 0), 137, 9);
  exec_.run_ready();
  EXPECT_EQ(rt_.running("cron"), 0);
  EXPECT_THAT(app("cron").message, HasSubstr("restarting in 100ms"));
  exec_.advance(99);
  EXPECT_EQ(rt_.running("cron"), 0);
  exec_.advance(1);
  EXPECT_EQ(rt_.running("cron"), 1);
}

TEST_F(LoopTest, DependencyFailureMarksOrRestartsDependents) {
  all_healthy();
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(300);
  ASSERT_TRUE(loop_->status("dev")->ready);
  std::string web_ref = rt_.ref_of("dev", "web", 0);

  // db stops answering: after two failed probes it is unhealthy and restarted.
  prober_.healthy.erase(ip("db"));
  exec_.advance(3000);
  // api depends on db with policy mark: degraded, still running, told by an event.
  auto api_events = event_types("api");
  EXPECT_NE(std::find(api_events.begin(), api_events.end(), "dependency-failed"), api_events.end());
  // Then api (each instance probes on a schedule of its own: one after the other, not in the
  // same millisecond) stops answering too: web depends on it with policy restart, its old
  // process was stopped.
  prober_.healthy.erase(ip("api"));
  exec_.advance(3000);
  EXPECT_NE(rt_.ref_of("dev", "web", 0), web_ref);

  prober_.healthy.insert(ip("db"));
  prober_.healthy.insert(ip("api"));
  exec_.advance(3000);
  EXPECT_TRUE(loop_->status("dev")->ready);
  auto after = event_types("api");
  EXPECT_NE(std::find(after.begin(), after.end(), "dependency-recovered"), after.end());
  EXPECT_EQ(app("api").state, "ready");  // the degraded mark is gone
}

TEST_F(LoopTest, DegradedWhileDependencyDown) {
  all_healthy();
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(300);
  prober_.healthy.erase(ip("db"));
  exec_.advance(2500);  // db: two failed probes a second apart → unhealthy → being restarted
  EXPECT_EQ(app("api").state, "degraded");
}

TEST_F(LoopTest, ApplyRestartsOnlyChangedApps) {
  all_healthy();
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(300);
  std::map<std::string, std::string> refs;
  for (auto a : {"db", "api", "web", "worker", "cron"}) refs[a] = rt_.ref_of("dev", a, 0);
  std::string changed = kCatalog;
  changed.replace(changed.find("  cron: {}"), 10, "  cron: {env: {X: '1'}}");
  ASSERT_TRUE(loop_->apply(changed, "t.yaml").ok());
  exec_.advance(300);
  EXPECT_NE(rt_.ref_of("dev", "cron", 0), refs["cron"]);
  for (auto a : {"db", "api", "web", "worker"}) EXPECT_EQ(rt_.ref_of("dev", a, 0), refs[a]) << a;
  EXPECT_EQ(spec_of("cron").env.at("X"), "1");
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
  EXPECT_TRUE(rt_.instances().empty());
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
  const auto& spec = spec_of("api");
  EXPECT_EQ(spec.env.at("BERTH_ENV"), "dev");
  EXPECT_EQ(spec.env.at("BERTH_APP"), "api");
  EXPECT_EQ(spec.env.at("BERTH_INSTANCE"), "0");
  EXPECT_EQ(spec.env.at("BERTH_IP"), ip("api"));
  EXPECT_EQ(spec.env.at("BERTH_PORT_HTTP"), "80");
  EXPECT_EQ(spec.env.at("BERTH_DEP_DB_HTTP"), ip("db") + ":80");
  EXPECT_EQ(std::get<runtime::ProcessWorkload>(spec.workload).command, "svc '" + ip("api") + "'");
  EXPECT_EQ(spec.ip, ip("api"));
  EXPECT_EQ(spec.network.subnet, "10.9.0.0/24");
  EXPECT_EQ(spec.network.gateway, "10.9.0.1");
}

TEST_F(LoopTest, ChangedSettingsReplaceInstancesOneAtATimeHealthGated) {
  std::string two = kCatalog;
  two.replace(two.find("  cron: {}"), 10, "  cron: {instances: 3}");
  ASSERT_TRUE(loop_->apply(two, "t.yaml").ok());
  all_healthy();
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(300);
  ASSERT_TRUE(loop_->status("dev")->ready);
  std::vector<std::string> old_refs;
  for (int o = 0; o < 3; ++o) old_refs.push_back(rt_.ref_of("dev", "cron", o));
  std::string changed = two;
  changed.replace(changed.find("  cron: {instances: 3}"), 22, "  cron: {instances: 3, env: {V: '2'}}");
  // New instances never become ready until we say so: the roll must wait at the first one.
  for (int o = 0; o < 3; ++o) prober_.healthy.erase(app("cron").instances[static_cast<std::size_t>(o)].ip);
  ASSERT_TRUE(loop_->apply(changed, "t.yaml").ok());
  exec_.advance(1000);
  int replaced = 0, ready = 0;
  for (int o = 0; o < 3; ++o) {
    if (rt_.ref_of("dev", "cron", o) != old_refs[static_cast<std::size_t>(o)]) ++replaced;
    if (app("cron").instances[static_cast<std::size_t>(o)].state == "ready") ++ready;
  }
  EXPECT_EQ(replaced, 1);  // only one in flight
  EXPECT_EQ(ready, 2);     // the others keep serving
  // Let new instances pass their checks: the roll completes, one after another.
  for (int o = 0; o < 3; ++o) prober_.healthy.insert(app("cron").instances[static_cast<std::size_t>(o)].ip);
  exec_.advance(3000);
  for (int o = 0; o < 3; ++o) {
    EXPECT_NE(rt_.ref_of("dev", "cron", o), old_refs[static_cast<std::size_t>(o)]);
    EXPECT_EQ(spec_of("cron", o).env.at("V"), "2");
  }
  EXPECT_TRUE(loop_->status("dev")->ready);
}

TEST_F(LoopTest, RestartReplacesInstancesOneAtATimeHealthGated) {
  std::string two = kCatalog;
  two.replace(two.find("  cron: {}"), 10, "  cron: {instances: 3}");
  ASSERT_TRUE(loop_->apply(two, "t.yaml").ok());
  all_healthy();
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(300);
  ASSERT_TRUE(loop_->status("dev")->ready);
  std::vector<std::string> old_refs;
  for (int o = 0; o < 3; ++o) old_refs.push_back(rt_.ref_of("dev", "cron", o));
  const std::string db_ref = rt_.ref_of("dev", "db", 0);
  for (int o = 0; o < 3; ++o) prober_.healthy.erase(app("cron").instances[static_cast<std::size_t>(o)].ip);
  ASSERT_TRUE(loop_->restart("dev", "cron", "anna").ok());
  EXPECT_TRUE(loop_->status("dev")->updating);  // asked for, before any reconcile pass
  exec_.advance(1000);
  int replaced = 0;
  for (int o = 0; o < 3; ++o)
    if (rt_.ref_of("dev", "cron", o) != old_refs[static_cast<std::size_t>(o)]) ++replaced;
  EXPECT_EQ(replaced, 1);  // the next waits for this one's health check
  for (int o = 0; o < 3; ++o) prober_.healthy.insert(app("cron").instances[static_cast<std::size_t>(o)].ip);
  exec_.advance(3000);
  for (int o = 0; o < 3; ++o) EXPECT_NE(rt_.ref_of("dev", "cron", o), old_refs[static_cast<std::size_t>(o)]);
  EXPECT_EQ(rt_.ref_of("dev", "db", 0), db_ref);  // only the app asked for
  auto s = loop_->status("dev");
  EXPECT_TRUE(s->ready);
  EXPECT_FALSE(s->updating);
  EXPECT_EQ(loop_->restart("dev", "crn", "anna").error().message, "no app 'crn' in environment 'dev' (did you mean 'cron'?)");
  ASSERT_TRUE(loop_->down("dev").ok());
  EXPECT_EQ(loop_->restart("dev", "", "anna").error().code, ErrorCode::kConflict);
}

TEST_F(LoopTest, AJobRunsToCompletionAndGatesItsDependents) {
  const char* jobs = R"(network: {pool: 10.9.0.0/24}
defaults:
  command: svc ${ip}
  ports: {http: 80}
  health: {type: http, start_interval: 50ms, interval: 1s, start_period: 10s, failure_threshold: 2}
  restart: {backoff: 100ms}
apps:
  db: {}
  seed:
    kind: job
    depends_on: [db]
  api:
    depends_on: [{app: seed, wait_for: completed}]
environments:
  dev: {}
)";
  ASSERT_TRUE(loop_->apply(jobs, "t.yaml").ok());
  all_healthy();
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(300);
  ASSERT_EQ(rt_.running("seed"), 1);
  EXPECT_EQ(app("seed").state, "starting");  // not health-checked, never "ready"
  EXPECT_EQ(rt_.running("api"), 0);          // waits for the job to complete
  // A failed run restarts by its policy and still gates.
  rt_.exit(rt_.ref_of("dev", "seed", 0), 3);
  exec_.advance(50);
  EXPECT_EQ(app("seed").state, "failed");
  EXPECT_EQ(rt_.running("api"), 0);
  exec_.advance(300);
  ASSERT_EQ(rt_.running("seed"), 1);
  rt_.exit(rt_.ref_of("dev", "seed", 0), 0);
  exec_.advance(300);
  EXPECT_EQ(app("seed").state, "completed");
  EXPECT_EQ(rt_.running("seed"), 0);  // not restarted: completed is not failed
  EXPECT_EQ(rt_.running("api"), 1);
  exec_.advance(1000);
  EXPECT_TRUE(loop_->status("dev")->ready);
  EXPECT_THAT(event_types("seed"), testing::Contains("completed"));
  const auto launches = [&] { return std::count(rt_.launched().begin(), rt_.launched().end(), "seed#0"); };
  // A restarted daemon remembers it completed: it is not run again.
  const auto once = launches();
  loop_.reset();
  loop_ = std::move(control::ControlLoop::create(deps({&rt_})).value());
  exec_.advance(300);
  EXPECT_EQ(app("seed").state, "completed");
  EXPECT_EQ(launches(), once);
  EXPECT_TRUE(loop_->status("dev")->ready);
  // berth restart runs it again; so does a change of its settings.
  const auto before = launches();
  ASSERT_TRUE(loop_->restart("dev", "seed", "anna").ok());
  exec_.advance(100);
  EXPECT_EQ(launches(), before + 1);
  rt_.exit(rt_.ref_of("dev", "seed", 0), 0);
  exec_.advance(100);
  std::string changed = jobs;
  changed.replace(changed.find("    kind: job"), 13, "    kind: job\n    env: {ROWS: '10'}");
  ASSERT_TRUE(loop_->apply(changed, "t.yaml").ok());
  exec_.advance(100);
  EXPECT_EQ(launches(), before + 2);
  // wait_for: completed only on a job.
  std::string bad = jobs;
  bad.replace(bad.find("{app: seed, wait_for: completed}"), 32, "{app: db, wait_for: completed}");
  auto st = loop_->apply(bad, "t.yaml");
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.error().message, HasSubstr("wait_for: completed needs db to be kind: job"));
}

TEST_F(LoopTest, UnhealthyRestartsBackOff) {
  all_healthy();
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(300);
  ASSERT_EQ(app("cron").state, "ready");
  prober_.healthy.erase(ip("cron"));  // fails from now on, also after every restart
  exec_.advance(30'000);
  auto starts = std::count(rt_.launched().begin(), rt_.launched().end(), "cron#0");
  // Without backoff a restart would follow every few probes (hundreds in 30 s); with it, the
  // delays double from 100 ms up to the 10 s cap after the 10 s start period of each attempt.
  EXPECT_GE(starts, 2);
  EXPECT_LE(starts, 5);
  auto types = event_types("cron");
  EXPECT_EQ(std::count(types.begin(), types.end(), "unhealthy"), starts - 1);
}

TEST_F(LoopTest, RestartedLoopRecoversInstancesInsteadOfStartingSecondOnes) {
  all_healthy();
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(300);
  ASSERT_TRUE(loop_->status("dev")->ready);
  std::map<std::string, std::string> refs;
  for (auto a : {"db", "api", "web", "worker", "cron"}) refs[a] = rt_.ref_of("dev", a, 0);
  const auto launches = rt_.launched().size();

  loop_.reset();  // the daemon dies; its instances do not
  rt_.exit(refs["cron"], 1);  // one of them ends while nobody watches
  exec_.run_ready();
  loop_ = std::move(control::ControlLoop::create(deps({&rt_})).value());
  EXPECT_EQ(app("db").instances[0].state, "starting");  // recovering: nothing new is started for it
  exec_.advance(300);
  EXPECT_TRUE(loop_->status("dev")->ready);
  for (auto a : {"db", "api", "web", "worker"}) EXPECT_EQ(rt_.ref_of("dev", a, 0), refs[a]) << a << " was not adopted";
  EXPECT_EQ(rt_.launched().size(), launches + 1);  // only cron, which was gone
  EXPECT_NE(rt_.ref_of("dev", "cron", 0), "");
  auto types = event_types("db");
  EXPECT_NE(std::find(types.begin(), types.end(), "adopted"), types.end());
}

TEST_F(LoopTest, ARestartAcknowledgedBeforeTheDaemonDiedIsStillCarriedOut) {
  std::string two = kCatalog;
  two.replace(two.find("  cron: {}"), 10, "  cron: {instances: 2}");
  ASSERT_TRUE(loop_->apply(two, "t.yaml").ok());
  all_healthy();
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(300);
  ASSERT_TRUE(loop_->status("dev")->ready);
  const std::string db_ref = rt_.ref_of("dev", "db", 0);
  std::vector<std::string> old_refs{rt_.ref_of("dev", "cron", 0), rt_.ref_of("dev", "cron", 1)};
  ASSERT_TRUE(loop_->restart("dev", "cron", "anna").ok());
  loop_.reset();  // killed right after acknowledging it: nothing was replaced yet
  for (int o = 0; o < 2; ++o) EXPECT_EQ(rt_.ref_of("dev", "cron", o), old_refs[static_cast<std::size_t>(o)]);
  loop_ = std::move(control::ControlLoop::create(deps({&rt_})).value());
  EXPECT_TRUE(loop_->status("dev")->updating);  // adopted, still to be restarted
  exec_.advance(3000);
  for (int o = 0; o < 2; ++o) EXPECT_NE(rt_.ref_of("dev", "cron", o), old_refs[static_cast<std::size_t>(o)]) << o;
  EXPECT_EQ(rt_.ref_of("dev", "db", 0), db_ref);  // only what was asked for
  auto s = loop_->status("dev");
  EXPECT_TRUE(s->ready);
  EXPECT_FALSE(s->updating);
  // Replaced, the mark is gone: the next daemon adopts them as they are.
  const auto refs_now = std::vector<std::string>{rt_.ref_of("dev", "cron", 0), rt_.ref_of("dev", "cron", 1)};
  loop_.reset();
  loop_ = std::move(control::ControlLoop::create(deps({&rt_})).value());
  exec_.advance(3000);
  for (int o = 0; o < 2; ++o) EXPECT_EQ(rt_.ref_of("dev", "cron", o), refs_now[static_cast<std::size_t>(o)]) << o;
  EXPECT_FALSE(loop_->status("dev")->updating);
}

TEST_F(LoopTest, AReadyInstanceIsAdoptedReadyAndKeepsItsName) {
  std::shared_ptr<const dns::Zone> zone;
  auto with_zone = [&] {
    auto d = deps({&rt_});
    d.on_zone = [&](std::shared_ptr<const dns::Zone> z) { zone = std::move(z); };
    return d;
  };
  loop_.reset();  // (the old one's destructor would detach the new one from the runtime)
  loop_ = std::move(control::ControlLoop::create(with_zone()).value());
  all_healthy();
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(300);
  ASSERT_EQ(app("db").state, "ready");
  // Whether `app` of dev answers in the last zone published.
  auto named = [&](const char* app_name) {
    const auto* env = zone ? zone->envs.find("dev") : nullptr;
    return env && env->apps.count(app_name) && env->apps.at(app_name).ready.at(0);
  };
  ASSERT_TRUE(named("db"));
  prober_.healthy.erase(ip("cron"));  // cron will fail its next probe, after the restart

  loop_.reset();  // the daemon dies; its instances do not
  zone.reset();
  loop_ = std::move(control::ControlLoop::create(with_zone()).value());
  loop_->reconcile_now();  // the runtime has not answered recover yet
  ASSERT_TRUE(zone);
  EXPECT_TRUE(named("db")) << "NODATA while being re-attached";
  exec_.run_ready();  // recovered: ready at once, no start period, no new "ready" event
  EXPECT_EQ(app("db").state, "ready");
  EXPECT_EQ(app("api").state, "ready");
  EXPECT_TRUE(named("api"));
  // Probed again at once; a ready instance's failures count at once (no start period).
  exec_.advance(1000);
  auto types = event_types("cron");
  EXPECT_NE(std::find(types.begin(), types.end(), "unhealthy"), types.end());
  EXPECT_EQ(std::count(types.begin(), types.end(), "ready"), 1);  // the first start's only
}

TEST_F(LoopTest, StopBeforeTheRuntimeCreatedItLeavesNothing) {
  ASSERT_TRUE(loop_->up("dev").ok());
  loop_->reconcile_now();  // launches; the runtime has not answered yet
  ASSERT_TRUE(loop_->down("dev").ok());
  loop_->reconcile_now();  // stops what is only launched
  exec_.run_ready();       // the runtime's on_created is refused: nothing of it ever ran
  EXPECT_TRUE(rt_.instances().empty());
  EXPECT_TRUE(store_->load_instances()->empty());
  EXPECT_EQ(app("db").state, "stopped");
}

TEST_F(LoopTest, ADaemonKilledDuringDownLeavesNoAddressAssigned) {
  // Leases are written before launch; the daemon dies after `down` but before any instance was
  // recorded (their gated children never run). The next daemon must not keep those addresses
  // assigned for good: they become reservations, which the environment gets back on its next up.
  ASSERT_TRUE(loop_->up("dev").ok());
  loop_->reconcile_now();
  // Each load is kept in a local: a range-for over *load_leases() would iterate over the vector
  // inside a Result destroyed before the loop body runs.
  auto leases = store_->load_leases();
  ASSERT_TRUE(leases.ok());
  std::map<std::string, std::string> before;
  for (const auto& l : *leases) before[l.key.app] = model::format_ipv4(l.ip);
  ASSERT_EQ(before.size(), 5u);
  ASSERT_TRUE(loop_->down("dev").ok());
  loop_.reset();     // SIGKILL
  exec_.run_ready(); // the runtime's creations find no daemon: nothing runs
  ASSERT_TRUE(rt_.instances().empty());
  ASSERT_TRUE(store_->load_instances()->empty());
  leases = store_->load_leases();
  ASSERT_TRUE(leases.ok());
  for (const auto& l : *leases) ASSERT_FALSE(l.reserved()) << l.key.app;  // the leak, before

  loop_ = std::move(control::ControlLoop::create(deps({&rt_})).value());
  exec_.run_ready();
  leases = store_->load_leases();
  ASSERT_TRUE(leases.ok());
  for (const auto& l : *leases) EXPECT_TRUE(l.reserved()) << l.key.app << " still assigned";
  all_healthy();
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(300);
  for (const auto& [a, address] : before) EXPECT_EQ(ip(a), address) << a << " did not get its address back";
}

TEST_F(LoopTest, FailedLaunchSaysWhyAndBacksOff) {
  all_healthy();
  rt_.fail_launches("cron", "image 'cron:9' is not on this host");
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(50);
  EXPECT_EQ(app("cron").state, "failed");
  EXPECT_THAT(app("cron").message, HasSubstr("could not start: image 'cron:9' is not on this host; trying again in"));
  EXPECT_EQ(app("db").state, "ready");  // the rest of the environment runs
  rt_.fail_launches("cron", "");
  exec_.advance(1000);
  EXPECT_EQ(app("cron").state, "ready");
  auto types = event_types("cron");
  EXPECT_NE(std::find(types.begin(), types.end(), "start-failed"), types.end());
}

TEST_F(LoopTest, ALaunchRefusedByTheDaemonsOwnLimitWaitsWithOneEventNotACrashLoop) {
  // What the process runtime says when fork or pipe hit EMFILE (base/subprocess.cc).
  all_healthy();
  rt_.fail_launches("cron", exhausted("berth's open files limit (1024) is reached (pipe: Too many open files): raise it "
                                      "(ulimit -n before berth serve, LimitNOFILE= in its systemd unit)"));
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(60'000);  // a minute at the limit
  EXPECT_EQ(app("cron").state, "waiting");
  EXPECT_THAT(app("cron").instances.at(0).message, HasSubstr("waiting: berth's open files limit (1024) is reached"));
  EXPECT_THAT(app("cron").instances.at(0).message, HasSubstr("ulimit -n"));
  EXPECT_EQ(app("cron").instances.at(0).restarts, 0);
  EXPECT_EQ(app("db").state, "ready");  // the rest of the environment runs
  auto types = event_types("cron");
  EXPECT_EQ(std::count(types.begin(), types.end(), "waiting"), 1);
  EXPECT_EQ(std::count(types.begin(), types.end(), "start-failed"), 0);
  // Tried again every kLimitRetryMs, not faster.
  const auto tries = std::count(rt_.launched().begin(), rt_.launched().end(), "cron#0");
  EXPECT_GE(tries, 60'000 / control::kLimitRetryMs);
  EXPECT_LE(tries, 60'000 / control::kLimitRetryMs + 1);
  rt_.fail_launches("cron", "");  // (the limit raised, or instances gone)
  exec_.advance(control::kLimitRetryMs + 100);
  EXPECT_EQ(app("cron").state, "ready");
  EXPECT_EQ(app("cron").instances.at(0).restarts, 0);
}

TEST_F(LoopTest, ExecHealthChecksRunInsideTheInstance) {
  std::string cat = kCatalog;
  cat.replace(cat.find("  cron: {}"), 10, "  cron: {health: {type: exec, command: 'test -f /ready'}}");
  ASSERT_TRUE(loop_->apply(cat, "t.yaml").ok());
  std::vector<std::string> argv;
  bool ready_file = false;
  rt_.on_exec([&](const runtime::SimRuntime::Instance&, const runtime::ExecRequest& r) {
    argv = r.argv;
    runtime::ExecResult res;
    res.exit = ready_file ? runtime::Exit{true, 0, 0, "exited with status 0"} : runtime::Exit{true, 1, 0, "exited with status 1"};
    return res;
  });
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(200);
  EXPECT_EQ(app("cron").state, "starting");
  EXPECT_EQ(app("cron").instances[0].health, "exec → exited with status 1");
  EXPECT_EQ(argv, (std::vector<std::string>{"/bin/sh", "-c", "test -f /ready"}));
  ready_file = true;
  exec_.advance(200);
  EXPECT_EQ(app("cron").state, "ready");
}

TEST_F(LoopTest, ContainersNeedAContainerRuntime) {
  std::string cat = kCatalog;
  cat.replace(cat.find("  cron: {}"), 10, "  cron: {image: 'cron:1'}");
  ASSERT_TRUE(loop_->apply(cat, "t.yaml").ok());
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(100);
  EXPECT_EQ(app("cron").state, "waiting");
  EXPECT_THAT(app("cron").message, HasSubstr("no container runtime: start berth serve with --docker-host"));
  EXPECT_EQ(rt_.running("cron"), 0);
}

TEST_F(LoopTest, ContainerWorkloadsAreWordsWithPlaceholdersPerWord) {
  runtime::SimRuntime docker(exec_, "docker");
  loop_.reset();
  loop_ = std::move(control::ControlLoop::create(deps({&rt_, &docker})).value());
  std::string cat = kCatalog;
  cat.replace(cat.find("  cron: {}"), 10,
              "  cron:\n"
              "    image: 'registry.test/cron:${tag}'\n"
              "    tag: feature/x\n"
              "    command: \"cron --listen ${ip}:${port.http} --name 'a b'\"\n"
              "    args: [--verbose]\n"
              "    volumes: ['spool-${ordinal}:/var/spool', '/srv/conf:/etc/cron:ro']\n"
              "    resources: {cpus: 0.5, memory: 64M}\n"
              "    health: {type: exec, command: 'probe --quick'}\n");
  ASSERT_TRUE(loop_->apply(cat, "t.yaml").ok()) << loop_->apply(cat, "t.yaml").error().message;
  loop_->set_resolver("10.9.0.1", "");
  std::vector<std::string> probe_argv;
  docker.on_exec([&](const runtime::SimRuntime::Instance&, const runtime::ExecRequest& r) {
    probe_argv = r.argv;
    return runtime::ExecResult{false, {true, 0, 0, "exited with status 0"}, "", false};
  });
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(100);
  ASSERT_EQ(docker.running("cron"), 1);
  EXPECT_EQ(rt_.running("cron"), 0);
  const auto& spec = docker.instances().at(docker.ref_of("dev", "cron", 0)).spec;
  const auto& w = std::get<runtime::ImageWorkload>(spec.workload);
  EXPECT_EQ(w.image, "registry.test/cron:feature-x");
  EXPECT_EQ(*w.command, (std::vector<std::string>{"cron", "--listen", ip("cron") + ":80", "--name", "a b", "--verbose"}));
  ASSERT_EQ(spec.mounts.size(), 2u);
  EXPECT_EQ(spec.mounts[0].source, "dev_spool-0");
  EXPECT_EQ(spec.mounts[0].kind, runtime::Mount::Kind::kVolume);
  EXPECT_EQ(spec.mounts[1].source, "/srv/conf");
  EXPECT_TRUE(spec.mounts[1].read_only);
  EXPECT_EQ(spec.resources.memory_bytes, 64u << 20);
  EXPECT_EQ(spec.resolver.server, "10.9.0.1");
  EXPECT_EQ(spec.resolver.search, "dev.berth.test");
  EXPECT_EQ(app("cron").state, "ready");
  EXPECT_EQ(probe_argv, (std::vector<std::string>{"probe", "--quick"}));  // no shell in a container
  EXPECT_EQ(app("cron").instances[0].runtime, "docker");
  EXPECT_EQ(app("db").instances[0].runtime, "process");
  loop_.reset();  // before `docker`, which it uses
}

// A root daemon's instances run unprivileged: each environment as its own uid, the range's first
// id as their group; `user: root` keeps the daemon's user; ids are stored and survive a restart.
TEST_F(LoopTest, EachEnvironmentRunsAsAUserOfItsOwn) {
  loop_.reset();
  auto d = deps({&rt_});
  d.instance_ids = IdRange{500000, 500002};  // room for two environments
  loop_ = std::move(control::ControlLoop::create(d).value());
  std::string cat = kCatalog;
  cat.replace(cat.find("  cron: {}\n"), 11, "  cron: {user: root}\n");
  cat += "  qa: {}\n  third: {}\n";
  ASSERT_TRUE(loop_->apply(cat, "t.yaml").ok());
  all_healthy();
  ASSERT_TRUE(loop_->up("dev").ok());
  ASSERT_TRUE(loop_->up("qa").ok());
  exec_.advance(300);
  auto who = [&](const std::string& env, const std::string& a) {
    return rt_.instances().at(rt_.ref_of(env, a, 0)).spec.identity;
  };
  ASSERT_TRUE(who("dev", "api").has_value());
  EXPECT_EQ(who("dev", "api")->gid, 500000u);
  EXPECT_EQ(who("dev", "api"), who("dev", "db"));  // one user per environment
  ASSERT_TRUE(who("qa", "api").has_value());
  EXPECT_NE(who("dev", "api")->uid, who("qa", "api")->uid);
  EXPECT_GT(who("qa", "api")->uid, 500000u);
  EXPECT_FALSE(who("dev", "cron").has_value());  // user: root
  EXPECT_TRUE(rt_.instances().at(rt_.ref_of("dev", "cron", 0)).spec.privileged);

  // The range is full: a third environment waits, saying why.
  ASSERT_TRUE(loop_->up("third").ok());
  exec_.advance(300);
  auto third = loop_->status("third");
  ASSERT_TRUE(third.ok());
  for (const auto& a : third->apps) {
    if (a.app == "db") {
      EXPECT_THAT(a.instances.front().message, HasSubstr("--instance-ids"));
    }
  }
  EXPECT_EQ(rt_.ref_of("third", "db", 0), "");

  // Stored: a restarted daemon gives the same environment the same user.
  const auto dev_uid = who("dev", "api")->uid;
  auto stored = store_->load_env_uids();
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->at("dev"), dev_uid);
  EXPECT_EQ(stored->size(), 2u);

  const auto qa_uid = who("qa", "api")->uid;

  // Restarted with a wider range: the stored ids stay, and the waiting environment gets the
  // lowest id neither has.
  loop_.reset();
  d.instance_ids = IdRange{500000, 500003};
  loop_ = std::move(control::ControlLoop::create(d).value());
  exec_.advance(300);
  ASSERT_NE(rt_.ref_of("third", "db", 0), "");
  EXPECT_EQ(who("dev", "api")->uid, dev_uid);
  EXPECT_EQ(who("third", "db")->uid, 500003u) << "dev " << dev_uid << ", qa " << qa_uid;
}

TEST_F(LoopTest, ANamedUserIsLookedUpAndAMissingOneSaysSo) {
  loop_.reset();
  auto d = deps({&rt_});
  d.instance_ids = IdRange{500000, 500100};
  loop_ = std::move(control::ControlLoop::create(d).value());
  std::string cat = kCatalog;
  cat.replace(cat.find("  cron: {}\n"), 11, "  cron: {user: 'no-such-user-here'}\n  worker2: {user: '4321:99'}\n");
  ASSERT_TRUE(loop_->apply(cat, "t.yaml").ok());
  all_healthy();
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(300);
  EXPECT_THAT(app("cron").instances.front().message, HasSubstr("no-such-user-here"));
  EXPECT_EQ(rt_.ref_of("dev", "cron", 0), "");
  auto w = rt_.instances().at(rt_.ref_of("dev", "worker2", 0)).spec.identity;
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(*w, (Identity{4321, 99}));
}

// The daemon running out of descriptors (every probe fails to even open a socket) says nothing
// about its instances: none becomes unhealthy or is restarted; one event says what happened.
TEST_F(LoopTest, TheDaemonsOwnProbeErrorsAreNeverAnInstancesFailure) {
  all_healthy();
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(300);
  ASSERT_TRUE(loop_->status("dev")->ready);
  const auto launches = rt_.launched().size();
  prober_.daemon_out_of_descriptors = true;
  exec_.advance(30'000);  // many intervals, far beyond failure_threshold
  EXPECT_EQ(app("api").state, "ready");
  EXPECT_EQ(rt_.launched().size(), launches);
  auto types = event_types("api");
  EXPECT_EQ(std::count(types.begin(), types.end(), "probe-error"), 1);
  EXPECT_EQ(std::count(types.begin(), types.end(), "unhealthy"), 0);
  prober_.daemon_out_of_descriptors = false;
  exec_.advance(2'000);
  EXPECT_TRUE(loop_->status("dev")->ready);
}

// The read model (control/read_model.h): what the API shows comes from snapshots the loop
// publishes by itself, and a change to one environment leaves the others' views as they were.
TEST_F(LoopTest, TheReadModelIsPublishedByTheLoopAndRebuildsOnlyWhatChanged) {
  std::string two = kCatalog;
  two += "  qa: {}\n";
  ASSERT_TRUE(loop_->apply(two, "t.yaml").ok());
  exec_.run_ready();
  EXPECT_FALSE(loop_->read_model().current()->find("qa")) << "published before kStatusPublishMs";
  exec_.advance(control::kStatusPublishMs);
  auto view = [&](const std::string& env) {
    auto snap = loop_->read_model().current();
    const control::EnvView* v = snap->find(env);
    if (!v) throw std::runtime_error("no view of " + env);
    return std::make_pair(snap, v);  // the snapshot keeps the view alive
  };
  auto state_of = [](const control::EnvView& v, const std::string& app) {
    for (const auto& a : v.status.apps)
      if (a.app == app) return a.state;
    return std::string("(none)");
  };
  {
    auto [snap, v] = view("dev");
    EXPECT_TRUE(snap->has_catalog);
    ASSERT_EQ(snap->envs.size(), 2u);
    EXPECT_EQ(snap->envs[0]->status.env, "dev");  // catalog order
    EXPECT_FALSE(v->status.up);
    EXPECT_EQ(v->summary.instances, 5);
  }
  const auto qa_before = view("qa").second->generation;

  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(control::kStatusPublishMs);  // no explicit publish: the loop published it
  {
    auto [snap, v] = view("dev");
    EXPECT_TRUE(v->status.up);
    EXPECT_EQ(state_of(*v, "db"), "starting");
    EXPECT_EQ(state_of(*v, "api"), "waiting");
    EXPECT_EQ(v->summary.running_instances, 3) << "db, worker (its dependency is soft) and cron are launched; api and web wait";
    EXPECT_EQ(v->summary.ready_instances, 0);
    EXPECT_EQ(view("qa").second->generation, qa_before) << "qa did not change: its view is reused";
  }
  // A probe's new answer alone (no state change) is published too.
  exec_.advance(100);
  {
    auto [snap, v] = view("dev");
    const auto& db = std::find_if(v->status.apps.begin(), v->status.apps.end(), [](const auto& a) { return a.app == "db"; });
    ASSERT_NE(db, v->status.apps.end());
    EXPECT_THAT(db->instances.at(0).health, HasSubstr("connection refused"));
  }
  const auto dev_before = view("dev").second->generation;
  make_healthy("db");
  exec_.advance(50 + control::kStatusPublishMs);
  {
    auto [snap, v] = view("dev");
    EXPECT_EQ(state_of(*v, "db"), "ready");
    EXPECT_GT(v->generation, dev_before);
    EXPECT_EQ(v->summary.ready_instances, 1) << "db only: cron and worker still fail their checks";
  }
  // An old snapshot stays as it was: readers may keep one as long as they like.
  auto old = loop_->read_model().current();
  ASSERT_TRUE(loop_->down("dev").ok());
  exec_.advance(control::kStatusPublishMs);
  EXPECT_TRUE(old->find("dev")->status.up);
  EXPECT_FALSE(view("dev").second->status.up);
  EXPECT_GT(loop_->read_model().current()->serial, old->serial);
}

// A runtime with a limit of instances starting at once (Capabilities::max_starting): the others
// wait in line, saying why, and start as slots free up, until all are ready.
TEST_F(LoopTest, AtMostMaxStartingInstancesStartAtOnceAndTheRestWaitInLine) {
  loop_.reset();
  runtime::Capabilities caps;
  caps.max_starting = 2;
  rt_.set_capabilities(caps);
  loop_ = std::move(control::ControlLoop::create(deps({&rt_})).value());
  ASSERT_TRUE(loop_->apply(kCatalog, "t.yaml").ok());
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.run_ready();
  auto starting = [&] {
    int n = 0;
    const auto status = loop_->status("dev");  // (named: a temporary would dangle in the range-for)
    for (const auto& a : status->apps)
      for (const auto& i : a.instances) n += i.state == "starting" || i.state == "launching";
    return n;
  };
  // db, cron and worker have nothing to wait for: two start, the third waits for a slot.
  EXPECT_EQ(rt_.running("db") + rt_.running("cron") + rt_.running("worker"), 2);
  EXPECT_EQ(starting(), 2);
  int waiting_for_slot = 0;
  const auto status = loop_->status("dev");
  for (const auto& a : status->apps)
    if (a.message.find("waiting for a start slot: 2 instances are starting in the process runtime, at most 2") !=
        std::string::npos)
      ++waiting_for_slot;
  EXPECT_EQ(waiting_for_slot, 1);
  all_healthy();
  for (int i = 0; i < 40 && !loop_->status("dev")->ready; ++i) {
    exec_.advance(50);
    EXPECT_LE(starting(), 2);
  }
  EXPECT_TRUE(loop_->status("dev")->ready);
}

// A loop under steady load always has a pass queued when the views fall due. They are
// published when that pass ends, not put off again (which held them back for as long as the
// load lasted: 15 s at 6,000 real instances in berth_fleet_bench).
TEST_F(LoopTest, ViewsDueWhileAPassIsQueuedArePublishedWhenItEnds) {
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(control::kStatusPublishMs);
  ASSERT_TRUE(loop_->read_model().current()->find("dev")->status.up);
  ASSERT_TRUE(loop_->down("dev").ok());
  exec_.run_ready();  // the pass that stops it; its views are due in kStatusPublishMs
  EXPECT_TRUE(loop_->read_model().current()->find("dev")->status.up) << "published before kStatusPublishMs";
  loop_->poke();  // another pass queued, not run yet
  exec_.fire_timers(control::kStatusPublishMs);
  EXPECT_TRUE(loop_->read_model().current()->find("dev")->status.up) << "published with a pass queued";
  exec_.run_ready();  // that pass, and no more time
  EXPECT_FALSE(loop_->read_model().current()->find("dev")->status.up);
}

// Paging over a snapshot: catalog order, `after` a name, `next` empty on the last page.
TEST_F(LoopTest, TheReadModelPagesInCatalogOrder) {
  std::string many = kCatalog;
  for (int i = 0; i < 5; ++i) many += "  e" + std::to_string(i) + ": {}\n";
  ASSERT_TRUE(loop_->apply(many, "t.yaml").ok());
  exec_.advance(control::kStatusPublishMs);
  auto snap = loop_->read_model().current();
  std::string next;
  auto first = snap->page("", 4, &next);
  ASSERT_EQ(first.size(), 4u);
  EXPECT_EQ(first[0]->status.env, "dev");
  EXPECT_EQ(next, "e2");
  auto rest = snap->page(next, 4, &next);
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(rest[0]->status.env, "e3");
  EXPECT_EQ(next, "");
  EXPECT_EQ(snap->page("", 0, &next).size(), 6u);
}

// An event reaches a subscriber (an event stream, the web UI) only once the read model shows
// it: a client that reads the status when the event arrives sees the change, not the state
// before it. (The browser test waited forever for "ready" when the two were apart.)
TEST_F(LoopTest, AnEventArrivesOnceTheReadModelShowsIt) {
  int checked = 0;
  loop_->subscribe([&](const store::Event& e) {
    if (e.env != "dev" || e.type != "ready") return;
    const auto snap = loop_->read_model().current();
    const control::EnvView* v = snap->find("dev");
    ASSERT_NE(v, nullptr);
    for (const auto& a : v->status.apps)
      if (a.app == e.app) {
        EXPECT_EQ(a.instances.at(static_cast<std::size_t>(e.ordinal)).state, "ready") << e.app;
        ++checked;
      }
  });
  all_healthy();
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(1000);
  EXPECT_EQ(checked, 5);  // every app's ready event, each checked
}
