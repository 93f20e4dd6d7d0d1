// What to start, replace and leave waiting (control/reconciler.h), and what a dependency's failure
// asks of its dependents — on plain values, no loop.
#include <gtest/gtest.h>

#include "control/reconciler.h"

using namespace berth;
using control::Action;
using control::AppTarget;
using control::Phase;
using control::Supervisor;

namespace {

using Kind = Action::Kind;

std::vector<std::pair<Kind, int>> kinds(const std::vector<Action>& actions) {
  std::vector<std::pair<Kind, int>> out;
  for (const auto& a : actions) out.emplace_back(a.kind, a.ordinal);
  return out;
}

class ReconcilerTest : public testing::Test {
 protected:
  void SetUp() override {
    spec_.app = "api";
    spec_.instances = 3;
    spec_.fingerprint_ = "settings1";
    target_.spec = &spec_;
    target_.fingerprint = "settings1";
    for (int o = 0; o < 3; ++o) target_.addresses.emplace_back("10.0.0." + std::to_string(o + 2));
  }
  Supervisor& inst(int o) {
    return instances_.try_emplace(o, ipam::LeaseKey{"dev", "api", o}).first->second;
  }
  // The instance runs `fingerprint` at its address; ready when `ready`.
  void running(int o, const std::string& fingerprint, bool ready) {
    Supervisor& s = inst(o);
    const auto launch = ++launches_;
    s.set_ip("10.0.0." + std::to_string(o + 2));
    s.launching({launch, "process", "svc", fingerprint, "", false}, {0, 0});
    ASSERT_TRUE(s.created(launch).ok());
    s.record_written("ref");
    const model::AppSpec no_check;  // no health check: ready once started
    s.started({"", "pid", 1}, false, ready ? &no_check : nullptr, {0, 0});
    ASSERT_EQ(s.state().phase, ready ? Phase::kReady : Phase::kStarting);
  }

  model::AppSpec spec_;
  AppTarget target_;
  std::map<int, Supervisor> instances_;
  std::uint64_t launches_ = 0;
};

}  // namespace

TEST_F(ReconcilerTest, StartsEveryInstanceThatRunsNothing) {
  EXPECT_EQ(kinds(control::reconcile_app(target_, instances_)),
            (std::vector<std::pair<Kind, int>>{{Kind::kStart, 0}, {Kind::kStart, 1}, {Kind::kStart, 2}}));
}

TEST_F(ReconcilerTest, WaitsForItsDependencyAnnouncingItOnce) {
  target_.gate_wait = "waiting for db: not started";
  auto actions = control::reconcile_app(target_, instances_);
  ASSERT_EQ(actions.size(), 3u);
  for (const auto& a : actions) {
    EXPECT_EQ(a.kind, Kind::kWait);
    EXPECT_EQ(a.why, "waiting for db: not started");
    EXPECT_EQ(a.announce, a.ordinal == 0);
  }
}

TEST_F(ReconcilerTest, ABuildNotThereYetKeepsTheRunningOnesAndHoldsTheRest) {
  running(0, "settings1:old", true);
  target_.artifact_ready = false;
  target_.artifact_wait = "building main at abc1234 (release)";
  target_.fingerprint = "settings1:new";
  EXPECT_EQ(kinds(control::reconcile_app(target_, instances_)),
            (std::vector<std::pair<Kind, int>>{{Kind::kWait, 1}, {Kind::kWait, 2}}));
}

TEST_F(ReconcilerTest, ReplacesOneInstanceAtATimeEachHealthGated) {
  for (int o = 0; o < 3; ++o) running(o, "settings0", true);
  auto actions = control::reconcile_app(target_, instances_);
  ASSERT_EQ(kinds(actions), (std::vector<std::pair<Kind, int>>{{Kind::kReplace, 0}}));
  EXPECT_EQ(actions[0].why, "settings changed");
  instances_.at(0).replace(actions[0].why);
  // While #0 is being replaced, nothing else is.
  EXPECT_TRUE(control::reconcile_app(target_, instances_).empty());
  instances_.at(0).exited({true, 0, 15, "killed by SIGTERM"}, nullptr, {0, 0});
  EXPECT_EQ(kinds(control::reconcile_app(target_, instances_)), (std::vector<std::pair<Kind, int>>{{Kind::kStart, 0}}));
  running(0, "settings1", false);  // started, not ready: still replacing
  EXPECT_TRUE(control::reconcile_app(target_, instances_).empty());
  running(0, "settings1", true);  // ready: done, and the next one goes
  EXPECT_EQ(kinds(control::reconcile_app(target_, instances_)),
            (std::vector<std::pair<Kind, int>>{{Kind::kReplaced, 0}, {Kind::kReplace, 1}}));
}

TEST_F(ReconcilerTest, SaysWhyAnInstanceIsReplaced) {
  running(0, "settings1:build-a", true);
  target_.fingerprint = "settings1:build-b";
  target_.artifact_id = "build-b";
  spec_.instances = 1;
  auto actions = control::reconcile_app(target_, instances_);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].why, "a new build (build-b)");

  target_.fingerprint = "settings1:build-a";
  target_.addresses[0] = std::string("10.0.0.9");
  actions = control::reconcile_app(target_, instances_);
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].why, "address moved to 10.0.0.9");
}

TEST_F(ReconcilerTest, AnExhaustedPoolMakesThatInstanceWait) {
  target_.addresses[2] = Result<std::string>(unavailable("no free address in 10.0.0.0/30"));
  auto actions = control::reconcile_app(target_, instances_);
  ASSERT_EQ(actions.size(), 3u);
  EXPECT_EQ(actions[2].kind, Kind::kWait);
  EXPECT_EQ(actions[2].why, "no free address in 10.0.0.0/30");
}

TEST_F(ReconcilerTest, ACompletedJobRunsAgainOnlyWhenItsSettingsChanged) {
  spec_.instances = 1;
  spec_.job = true;
  Supervisor& s = inst(0);
  s.recorded({"10.0.0.2", "", control::kCompletedRef, "settings1", 0, 0});
  EXPECT_TRUE(control::reconcile_app(target_, instances_).empty());
  target_.fingerprint = "settings2";
  EXPECT_EQ(kinds(control::reconcile_app(target_, instances_)),
            (std::vector<std::pair<Kind, int>>{{Kind::kRerun, 0}, {Kind::kStart, 0}}));
}

TEST_F(ReconcilerTest, ADependencyFailingWhileItRunsAppliesItsPolicyOnceAndItsRecoveryIsSaid) {
  spec_.depends_on = {{"db", false, false, false, model::DependencyFailure::kRestart},
                      {"cache", false, false, false, model::DependencyFailure::kMark}};
  running(0, "settings1", true);
  control::DependencyWatch watch;
  auto say = [](std::size_t i) { return i == 0 ? std::string("waiting for db") : std::string("waiting for cache"); };
  auto out = watch.check(spec_, {true, true}, instances_, say);
  EXPECT_TRUE(out.events.empty());
  out = watch.check(spec_, {false, false}, instances_, say);
  ASSERT_EQ(out.events.size(), 2u);
  EXPECT_EQ(out.events[0].type, "dependency-failed");
  EXPECT_EQ(out.events[0].message, "waiting for db; policy restart");
  EXPECT_EQ(kinds(out.actions), (std::vector<std::pair<Kind, int>>{{Kind::kRestart, 0}, {Kind::kDegrade, 0}}));
  // Still failed: nothing more.
  instances_.at(0).mark_degraded(true);
  out = watch.check(spec_, {false, false}, instances_, say);
  EXPECT_TRUE(out.events.empty());
  EXPECT_TRUE(out.actions.empty());
  // Back: said, and the degraded mark goes.
  out = watch.check(spec_, {true, true}, instances_, say);
  ASSERT_EQ(out.events.size(), 2u);
  EXPECT_EQ(out.events[0].type, "dependency-recovered");
  ASSERT_EQ(out.actions.size(), 1u);
  EXPECT_EQ(out.actions[0].kind, Kind::kDegrade);
  EXPECT_FALSE(out.actions[0].on);
}

TEST_F(ReconcilerTest, ADependencyThatWasNeverSatisfiedIsNoFailure) {
  spec_.depends_on = {{"db", false, false, false, model::DependencyFailure::kRestart}};
  running(0, "settings1", true);
  control::DependencyWatch watch;
  auto out = watch.check(spec_, {false}, instances_, [](std::size_t) { return std::string("x"); });
  EXPECT_TRUE(out.events.empty());
  EXPECT_TRUE(out.actions.empty());
}
