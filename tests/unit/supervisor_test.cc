// The life of one instance (control/supervisor.h) with plain numbers for time: restart policy
// and backoff, readiness and health failures, jobs, adoption after a daemon restart.
#include <gtest/gtest.h>

#include "control/supervisor.h"

using namespace berth;
using control::Phase;
using control::Step;
using control::Supervisor;

namespace {

model::AppSpec app_spec() {
  model::AppSpec s;
  s.app = "api";
  s.health.type = model::HealthType::kHttp;
  s.health.start_interval_ms = 50;
  s.health.interval_ms = 1000;
  s.health.start_period_ms = 0;
  s.health.failure_threshold = 2;
  s.restart.backoff_ms = 100;
  s.restart.max_backoff_ms = 1000;
  return s;
}

std::vector<std::string> types(const Step& st) {
  std::vector<std::string> out;
  for (const auto& e : st.events) out.push_back(e.type);
  return out;
}

class SupervisorTest : public testing::Test {
 protected:
  // Launched, created and started at `at`: probing.
  void run(Millis at) {
    sup_.set_ip("10.0.0.2");
    sup_.launching({++launch_, "process", "svc", "fp", "", false}, {at, 1'000'000 + at});
    ASSERT_TRUE(sup_.created(launch_).ok());
    sup_.record_written("ref-" + std::to_string(launch_));
    Step st = sup_.started({"", "pid 1", 1}, false, &spec_, {at, 1'000'000 + at});
    ASSERT_EQ(st.probe, !spec_.job);  // a job is not health-checked
  }
  Step probe(bool ok, Millis at) { return sup_.probed({ok, ok ? "GET / → 200" : "GET / → 500"}, spec_, {at, 1'000'000 + at}); }

  model::AppSpec spec_ = app_spec();
  Supervisor sup_{ipam::LeaseKey{"dev", "api", 0}};
  std::uint64_t launch_ = 0;
};

}  // namespace

TEST_F(SupervisorTest, ReadyOnItsFirstPassingProbeAndRecordedSo) {
  run(0);
  EXPECT_EQ(sup_.state().phase, Phase::kStarting);
  EXPECT_EQ(control::public_state(sup_.state()), "starting");
  Step st = probe(true, 0);
  EXPECT_EQ(sup_.state().phase, Phase::kReady);
  EXPECT_EQ(st.write, Step::Write::kReadiness);
  EXPECT_EQ(sup_.state().ready_at, 1'000'000);
  EXPECT_EQ(types(st), std::vector<std::string>{"ready"});
  EXPECT_TRUE(st.reconcile);  // its dependents may start
  EXPECT_TRUE(st.names);      // it answers in DNS now
  EXPECT_TRUE(st.probe);
  // Every interval, shifted by its own offset, from its name (health/tracker.h).
  EXPECT_EQ(sup_.state().tracker->next_probe_at(), 1000 + health::Tracker::offset_for(1000, health::Tracker::seed_of("dev/api/0")));
}

TEST_F(SupervisorTest, AFailingHealthCheckStopsItAndItsRestartBacksOff) {
  run(0);
  probe(true, 0);
  probe(false, 1000);
  Step st = probe(false, 2000);
  EXPECT_EQ(types(st), (std::vector<std::string>{"unhealthy", "restarting"}));
  EXPECT_TRUE(st.stop);
  EXPECT_FALSE(st.probe);  // stopping: no more probes
  EXPECT_EQ(st.write, Step::Write::kReadiness);
  EXPECT_EQ(sup_.state().ready_at, 0);
  EXPECT_EQ(sup_.state().phase, Phase::kStopping);
  st = sup_.exited({true, 143, 15, "killed by SIGTERM"}, &spec_, {2100, 0});
  EXPECT_EQ(st.backoff, 100);  // like a crash: restart.backoff first
  EXPECT_EQ(sup_.state().phase, Phase::kBackoff);
  EXPECT_EQ(st.write, Step::Write::kErase);
  st = sup_.backoff_elapsed();
  EXPECT_EQ(sup_.state().phase, Phase::kStopped);
  EXPECT_TRUE(st.reconcile);
}

TEST_F(SupervisorTest, CrashesBackOffDoublingUpToTheMaximumAndAStableRunRestartsAtOnce) {
  std::vector<Millis> delays;
  for (int i = 0; i < 6; ++i) {
    run(i * 10);
    Step st = sup_.exited({true, 1, 0, "exited with status 1"}, &spec_, {i * 10 + 5, 0});
    delays.push_back(st.backoff);
    sup_.backoff_elapsed();
  }
  EXPECT_EQ(delays, (std::vector<Millis>{100, 200, 400, 800, 1000, 1000}));
  EXPECT_EQ(sup_.state().restarts, 5);
  // Ready for kStableAfterMs: the crash count resets and the restart is immediate.
  run(100'000);
  probe(true, 100'000);
  Step st = sup_.exited({true, 1, 0, "exited with status 1"}, &spec_, {100'000 + control::kStableAfterMs, 0});
  EXPECT_EQ(st.backoff, 0);
  EXPECT_EQ(sup_.state().crashes, 1);
  // Ready only briefly: the first crash after it backs off.
  sup_.backoff_elapsed();
  run(200'000);
  probe(true, 200'000);
  st = sup_.exited({true, 1, 0, "exited with status 1"}, &spec_, {200'050, 0});
  EXPECT_EQ(st.backoff, 200);
}

TEST_F(SupervisorTest, RestartPolicyNeverOrOnFailureLeavesItFailed) {
  spec_.restart.policy = model::RestartPolicy::kOnFailure;
  run(0);
  Step st = sup_.exited({true, 0, 0, "exited with status 0"}, &spec_, {10, 0});
  EXPECT_EQ(sup_.state().phase, Phase::kFailed);
  EXPECT_EQ(st.backoff, -1);
  EXPECT_EQ(control::public_state(sup_.state()), "failed");
  EXPECT_NE(sup_.state().message.find("restart policy on-failure"), std::string::npos) << sup_.state().message;
}

TEST_F(SupervisorTest, AJobCompletesOnStatusZeroAndIsRecordedSoUntilItRunsAgain) {
  spec_.job = true;
  run(0);
  EXPECT_FALSE(sup_.state().tracker.has_value());  // a job is not health-checked
  Step st = sup_.exited({true, 0, 0, "exited with status 0"}, &spec_, {1500, 0});
  EXPECT_EQ(sup_.state().phase, Phase::kCompleted);
  EXPECT_EQ(st.write, Step::Write::kCompleted);
  EXPECT_EQ(types(st), (std::vector<std::string>{"exited", "completed"}));
  EXPECT_TRUE(sup_.state().serving());  // its dependents may start
  st = sup_.rerun();
  EXPECT_EQ(sup_.state().phase, Phase::kStopped);
  EXPECT_EQ(st.write, Step::Write::kErase);
}

TEST_F(SupervisorTest, ALaunchRefusedByTheDaemonsOwnLimitWaitsSaidOnceAndCountsNoRestart) {
  run(0);
  sup_.exited({true, 1, 0, "exited with status 1"}, &spec_, {10, 0});
  sup_.backoff_elapsed();
  ASSERT_EQ(sup_.state().restarts, 0);
  const int crashes = sup_.state().crashes;
  const Error limit = exhausted("berth's open files limit (1024) is reached (pipe: Too many open files): raise it");
  for (int attempt = 1; attempt <= 3; ++attempt) {
    sup_.launching({++launch_, "process", "svc", "fp", "", false}, {attempt * 10'000, 0});
    Step st = sup_.failed("", limit, &spec_, {attempt * 10'000, 0});
    // Said once, as a wait (not start-failed), with the limit and how to raise it.
    EXPECT_EQ(types(st), attempt == 1 ? std::vector<std::string>{"waiting"} : std::vector<std::string>{});
    EXPECT_EQ(st.backoff, control::kLimitRetryMs);  // not the crash backoff
    EXPECT_EQ(control::public_state(sup_.state()), "waiting");
    EXPECT_EQ(sup_.state().message, "waiting: " + limit.message + "; trying again in 5s");
    EXPECT_EQ(sup_.state().restarts, 0);
    EXPECT_EQ(sup_.state().crashes, crashes);
    sup_.backoff_elapsed();
  }
  // Launched at last: that is its first restart, and any other failure is one again.
  run(40'000);
  EXPECT_EQ(sup_.state().restarts, 1);
  EXPECT_FALSE(sup_.state().at_limit);
  sup_.exited({true, 1, 0, "exited with status 1"}, &spec_, {40'010, 0});
  sup_.backoff_elapsed();
  sup_.launching({++launch_, "process", "svc", "fp", "", false}, {50'000, 0});
  Step st = sup_.failed("", unavailable("image 'svc' is not on this host"), &spec_, {50'000, 0});
  EXPECT_EQ(types(st), std::vector<std::string>{"start-failed"});
  EXPECT_EQ(control::public_state(sup_.state()), "failed");
}

TEST_F(SupervisorTest, AStopBeforeItWasCreatedRefusesTheCreationAndAsksNoRuntime) {
  sup_.launching({1, "process", "svc", "fp", "", false}, {0, 0});
  Step st = sup_.stop("environment down");
  EXPECT_FALSE(st.stop);  // nothing to ask: it has no reference yet
  EXPECT_EQ(sup_.state().phase, Phase::kStopping);
  EXPECT_FALSE(sup_.created(1).ok());
  st = sup_.failed("", conflict("stopped before it started"), &spec_, {5, 0});
  EXPECT_EQ(sup_.state().phase, Phase::kStopped);
  EXPECT_FALSE(sup_.state().exists());
  EXPECT_EQ(types(st), std::vector<std::string>{"stopped"});
}

TEST_F(SupervisorTest, AStaleLaunchIsRefused) {
  sup_.launching({1, "process", "svc", "fp", "", false}, {0, 0});
  EXPECT_FALSE(sup_.created(2).ok());
  EXPECT_TRUE(sup_.created(1).ok());
}

TEST_F(SupervisorTest, TheDaemonsOwnProbeErrorIsSaidOnceAndNeverCounts) {
  run(0);
  probe(true, 0);
  for (int i = 1; i <= 5; ++i) {
    Step st = sup_.probed({false, "berth could not probe: too many open files", true}, spec_, {i * 1000, 0});
    EXPECT_EQ(st.events.size(), i == 1 ? 1u : 0u);
    EXPECT_TRUE(st.probe);
  }
  EXPECT_EQ(sup_.state().phase, Phase::kReady);
}

TEST_F(SupervisorTest, ARecordedReadyInstanceIsAdoptedReadyAndProbedAtOnce) {
  Supervisor sup(ipam::LeaseKey{"dev", "api", 0});
  sup.recorded({"10.0.0.2", "process", "ref-1", "fp", 3, 900'000});
  EXPECT_EQ(sup.state().phase, Phase::kRecovering);
  EXPECT_EQ(control::public_state(sup.state()), "starting");
  runtime::Recovered r;
  r.id = {"dev", "api", 0};
  r.ref = "ref-1";
  r.alive = true;
  r.observed = {"", "pid 7", 7};
  Step st = sup.recovered(r, &spec_, {5'000, 1'000'000});
  EXPECT_EQ(sup.state().phase, Phase::kReady);
  EXPECT_EQ(sup.state().ready_mono, 5'000 - 100'000);  // ready 100 s before, by the wall clock
  EXPECT_TRUE(st.probe);
  EXPECT_EQ(sup.state().tracker->next_probe_at(), 5'000);
  EXPECT_EQ(types(st), std::vector<std::string>{"adopted"});
}

TEST_F(SupervisorTest, ARecordedInstanceGoneMeanwhileIsErasedAndACompletedJobStaysCompleted) {
  Supervisor gone(ipam::LeaseKey{"dev", "api", 0});
  gone.recorded({"10.0.0.2", "process", "ref-1", "fp", 0, 0});
  runtime::Recovered r;
  r.ref = "ref-1";
  r.exit.description = "ended";
  Step st = gone.recovered(r, &spec_, {0, 0});
  EXPECT_EQ(st.write, Step::Write::kErase);
  EXPECT_EQ(gone.state().phase, Phase::kStopped);
  EXPECT_FALSE(gone.state().exists());

  Supervisor job(ipam::LeaseKey{"dev", "migrate", 0});
  job.recorded({"10.0.0.3", "", control::kCompletedRef, "fp", 0, 0});
  EXPECT_EQ(job.state().phase, Phase::kCompleted);
  EXPECT_FALSE(job.state().exists());
}

TEST_F(SupervisorTest, BerthRestartReplacesARunningOneAndStartsAFailedOneAgainAtOnce) {
  run(0);
  Step st = sup_.restart();
  EXPECT_TRUE(sup_.state().restart_requested);
  EXPECT_FALSE(st.stop);  // the reconciler replaces it, health-gated
  sup_.exited({true, 1, 0, "exited with status 1"}, &spec_, {10, 0});
  EXPECT_EQ(sup_.state().phase, Phase::kBackoff);
  st = sup_.restart();
  EXPECT_TRUE(st.cancel);  // its backoff timer
  EXPECT_EQ(sup_.state().phase, Phase::kStopped);
}

TEST_F(SupervisorTest, WaitingIsAnnouncedOnceAndOnlyAChangedReasonIsShown) {
  Step st = sup_.wait("waiting for db: not started", true);
  EXPECT_EQ(types(st), std::vector<std::string>{"waiting"});
  EXPECT_TRUE(st.events.front().whole_app);
  st = sup_.wait("waiting for db: not started", true);
  EXPECT_TRUE(st.events.empty());
  EXPECT_FALSE(st.shown);
  st = sup_.wait("waiting for db: starting", true);
  EXPECT_TRUE(st.events.empty());
  EXPECT_TRUE(st.shown);
}

TEST_F(SupervisorTest, AnInstanceWhoseHostIsLostComesBackAtOnceWhateverItsPolicy) {
  spec_.restart.policy = model::RestartPolicy::kNever;
  run(0);
  probe(true, 0);
  const int crashes = sup_.state().crashes;
  runtime::Exit lost;
  lost.description = "its host h-2 was lost (the Swarm calls it down)";
  lost.host_lost = true;
  Step st = sup_.exited(lost, &spec_, {50, 0});
  EXPECT_EQ(st.backoff, 0);
  EXPECT_EQ(sup_.state().phase, Phase::kBackoff);
  EXPECT_EQ(sup_.state().crashes, crashes) << "not the instance's failure";
  EXPECT_EQ(types(st), (std::vector<std::string>{"exited", "moving"}));
  EXPECT_NE(sup_.state().message.find("re-created on another host"), std::string::npos) << sup_.state().message;
  // The same exit without host_lost: policy never keeps it down.
  sup_.backoff_elapsed();
  run(100);
  probe(true, 100);
  lost.host_lost = false;
  st = sup_.exited(lost, &spec_, {150, 0});
  EXPECT_EQ(sup_.state().phase, Phase::kFailed);
}
