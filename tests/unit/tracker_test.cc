// The health state machine with plain numbers for time.
#include <gtest/gtest.h>

#include "health/tracker.h"

using berth::health::Tracker;
using Change = Tracker::Change;

namespace {
berth::model::HealthSpec spec() {
  berth::model::HealthSpec s;
  s.type = berth::model::HealthType::kHttp;
  s.interval_ms = 2000;
  s.start_interval_ms = 50;
  s.start_period_ms = 1000;
  s.failure_threshold = 3;
  s.success_threshold = 2;
  return s;
}
}  // namespace

TEST(Tracker, FirstProbeIsImmediateThenFastWhileStarting) {
  Tracker t(spec(), 10'000);
  EXPECT_EQ(t.next_probe_at(), 10'000);
  EXPECT_EQ(t.record(false, 10'000), Change::kNone);
  EXPECT_EQ(t.next_probe_at(), 10'050);
}

TEST(Tracker, ReadyAfterSuccessThresholdThenSlowInterval) {
  Tracker t(spec(), 0);
  EXPECT_EQ(t.record(true, 0), Change::kNone);
  EXPECT_FALSE(t.ready());
  EXPECT_EQ(t.record(true, 50), Change::kBecameReady);
  EXPECT_TRUE(t.ready());
  EXPECT_EQ(t.next_probe_at(), 2050);
}

TEST(Tracker, FailuresInStartPeriodDoNotCount) {
  Tracker t(spec(), 0);
  for (int i = 0; i < 19; ++i) EXPECT_EQ(t.record(false, i * 50), Change::kNone);
  EXPECT_EQ(t.consecutive_failures(), 0);
  // After the start period they count: unhealthy at the third.
  EXPECT_EQ(t.record(false, 1000), Change::kNone);
  EXPECT_EQ(t.record(false, 1050), Change::kNone);
  EXPECT_EQ(t.record(false, 1100), Change::kBecameUnhealthy);
}

TEST(Tracker, UnhealthyAfterThresholdOnceReadyAndRecovers) {
  Tracker t(spec(), 0);
  t.record(true, 0);
  ASSERT_EQ(t.record(true, 50), Change::kBecameReady);
  EXPECT_EQ(t.record(false, 2050), Change::kNone);
  EXPECT_EQ(t.record(true, 4050), Change::kNone);  // a success resets the count
  EXPECT_EQ(t.record(false, 6050), Change::kNone);
  EXPECT_EQ(t.record(false, 8050), Change::kNone);
  EXPECT_EQ(t.record(false, 10050), Change::kBecameUnhealthy);
  EXPECT_EQ(t.next_probe_at(), 10100);  // back to fast probing
  t.record(true, 10100);
  EXPECT_EQ(t.record(true, 10150), Change::kBecameReady);
}
