// The health state machine with plain numbers for time.
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

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

TEST(Tracker, OnceReadyEachInstanceProbesEveryIntervalShiftedByAnOffsetOfItsOwn) {
  const auto seed = Tracker::seed_of("dev/api/0");
  EXPECT_EQ(seed, Tracker::seed_of("dev/api/0"));  // the same name, the same offset, in every run
  EXPECT_NE(seed, Tracker::seed_of("dev/api/1"));
  const berth::Millis offset = Tracker::offset_for(2000, seed);
  EXPECT_LE(std::abs(offset), 200);  // within a tenth of the interval
  EXPECT_EQ(Tracker::offset_for(2000, 0), 0);

  Tracker t(spec(), 0, seed);
  EXPECT_EQ(t.ready_interval(), 2000 + offset);
  t.record(true, 0);
  EXPECT_EQ(t.next_probe_at(), 50);  // while starting: start_interval, unshifted
  ASSERT_EQ(t.record(true, 50), Change::kBecameReady);
  EXPECT_EQ(t.next_probe_at(), 2050 + offset);
  t.record(true, 2050 + offset);
  EXPECT_EQ(t.next_probe_at(), 4050 + 2 * offset);
  t.skip(4050 + 2 * offset);  // an inconclusive probe: the same interval
  EXPECT_EQ(t.next_probe_at(), 6050 + 3 * offset);
}

TEST(Tracker, AThousandInstancesReadyInTheSameMillisecondDoNotKeepProbingTogether) {
  // 200 environments × 5 apps started in one pass, all ready at 50 (virtual time); each is
  // probed when due and answers at once. Without offsets all 1,000 would be probed in the same
  // millisecond every interval, forever.
  std::vector<Tracker> fleet;
  for (int e = 0; e < 200; ++e)
    for (int a = 0; a < 5; ++a)
      fleet.emplace_back(spec(), 0, Tracker::seed_of("env-" + std::to_string(e) + "/app" + std::to_string(a) + "/0"));
  for (auto& t : fleet) {
    t.record(true, 0);
    ASSERT_EQ(t.record(true, 50), Change::kBecameReady);
  }
  std::set<berth::Millis> first;
  double mean_interval = 0;
  for (const auto& t : fleet) {
    first.insert(t.next_probe_at());
    mean_interval += static_cast<double>(t.ready_interval()) / static_cast<double>(fleet.size());
  }
  EXPECT_GE(first.size(), 250u);                     // of 401 milliseconds possible
  EXPECT_GE(*first.rbegin() - *first.begin(), 300);  // spread over most of a fifth of the interval
  EXPECT_NEAR(mean_interval, 2000, 20);              // on average, every interval
  // Ten intervals on, they are further apart: at most a few in any one millisecond.
  for (int round = 0; round < 10; ++round)
    for (auto& t : fleet) t.record(true, t.next_probe_at());
  std::map<berth::Millis, int> per_ms;
  for (const auto& t : fleet) ++per_ms[t.next_probe_at()];
  int most = 0;
  for (const auto& [ms, n] : per_ms) most = std::max(most, n);
  EXPECT_LE(most, 12);
  EXPECT_GE(per_ms.rbegin()->first - per_ms.begin()->first, 2000);  // a whole interval and more
}
