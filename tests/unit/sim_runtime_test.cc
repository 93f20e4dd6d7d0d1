// The simulated runtime's behaviour (runtime/sim, SimBehaviour) on virtual time: start latency,
// time to answer health checks, crashes, hangs that ignore SIGTERM until the grace ends, and the
// contract's order of events (created → recorded → started; a stop before the start ends it
// without it ever starting).
#include <gtest/gtest.h>

#include "runtime/sim/sim_runtime.h"

using namespace berth;

namespace {

struct Recorder : runtime::Listener {
  std::vector<std::string> events;  // "created", "started", "exited <code> <signal>"
  void on_created(const runtime::InstanceId&, std::uint64_t, const runtime::Ref&,
                  std::function<void(Status)> recorded) override {
    events.push_back("created");
    executor->post([recorded = std::move(recorded)] { recorded({}); });
  }
  Executor* executor = nullptr;
  void on_started(const runtime::InstanceId&, std::uint64_t, const runtime::Ref&, const runtime::Observed&) override {
    events.push_back("started");
  }
  void on_failed(const runtime::InstanceId&, std::uint64_t, const runtime::Ref&, const Error& e) override {
    events.push_back("failed " + e.message);
  }
  void on_exited(const runtime::InstanceId&, const runtime::Ref&, const runtime::Exit& x) override {
    events.push_back("exited " + std::to_string(x.code) + " " + std::to_string(x.signal));
  }
};

runtime::InstanceSpec spec(int ordinal) {
  runtime::InstanceSpec s;
  s.id = {"dev", "web", ordinal};
  s.launch = static_cast<std::uint64_t>(ordinal + 1);
  s.ip = "10.29.0." + std::to_string(ordinal + 2);
  return s;
}

class SimRuntimeTest : public testing::Test {
 protected:
  void make(runtime::SimBehaviour b) {
    sim_ = std::make_unique<runtime::SimRuntime>(exec_, "process", b, &clock_);
    rec_.executor = &exec_;
    sim_->set_listener(&rec_);
  }
  ManualClock clock_;
  ManualExecutor exec_{clock_};
  Recorder rec_;
  std::unique_ptr<runtime::SimRuntime> sim_;
};

}  // namespace

TEST_F(SimRuntimeTest, StartsAfterItsLatencyAndAnswersOnceReady) {
  make({.start_latency_ms = 20, .ready_after_ms = 200});
  sim_->launch(spec(0));
  exec_.run_ready();
  EXPECT_EQ(rec_.events, std::vector<std::string>{"created"});
  exec_.advance(19);
  EXPECT_EQ(rec_.events.size(), 1u);
  exec_.advance(1);
  EXPECT_EQ(rec_.events.back(), "started");
  EXPECT_FALSE(sim_->answers("10.29.0.2"));
  exec_.advance(199);
  EXPECT_FALSE(sim_->answers("10.29.0.2"));
  exec_.advance(1);
  EXPECT_TRUE(sim_->answers("10.29.0.2"));
  EXPECT_FALSE(sim_->answers("10.29.0.3"));  // nobody there
  sim_->stop(sim_->ref_of("dev", "web", 0), 1000);
  exec_.run_ready();
  EXPECT_EQ(rec_.events.back(), "exited 143 15");
  EXPECT_FALSE(sim_->answers("10.29.0.2"));
}

TEST_F(SimRuntimeTest, AStopDuringItsStartEndsItWithoutItEverStarting) {
  make({.start_latency_ms = 50});
  sim_->launch(spec(0));
  exec_.run_ready();
  ASSERT_EQ(sim_->instances().size(), 1u);
  sim_->stop(sim_->instances().begin()->first, 1000);
  exec_.advance(100);
  EXPECT_EQ(rec_.events, (std::vector<std::string>{"created", "exited 0 0"}));
  EXPECT_TRUE(sim_->instances().empty());
}

TEST_F(SimRuntimeTest, AHungInstanceNeverAnswersAndIsKilledAfterTheGrace) {
  make({.hang_fraction = 1.0});
  sim_->launch(spec(0));
  exec_.advance(10'000);
  EXPECT_FALSE(sim_->answers("10.29.0.2"));
  sim_->stop(sim_->ref_of("dev", "web", 0), 500);
  exec_.advance(499);
  EXPECT_EQ(rec_.events.back(), "started");  // SIGTERM ignored
  exec_.advance(1);
  EXPECT_EQ(rec_.events.back(), "exited 137 9");
}

TEST_F(SimRuntimeTest, InstancesCrashOnTheirOwnAtTheGivenMeanTime) {
  make({.mean_time_to_crash_ms = 1000, .seed = 7});
  for (int i = 0; i < 20; ++i) sim_->launch(spec(i));
  exec_.advance(60'000);  // 60 mean times: every one has crashed (the chance of not is e^-60)
  int crashed = 0;
  for (const auto& e : rec_.events) crashed += e == "exited 1 0";
  EXPECT_EQ(crashed, 20);
  EXPECT_TRUE(sim_->instances().empty());
}
