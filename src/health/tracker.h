// health/tracker.h — the health state of one instance, as a pure state machine.
//
// Fed probe results with the (injected) monotonic time, it says when to probe next and when the
// instance became ready or unhealthy. While starting it probes every start_interval beginning at
// once (the first probe is not one interval late); once ready, every interval shifted by the
// instance's own spread (below). Failures within start_period after the start do not count. No
// I/O, no clock of its own: unit-tested with plain numbers.
//
// Spread: thousands of instances started in one pass become ready together and would probe in
// the same millisecond every interval, forever (and so would any that a stalled loop brought
// together). Once ready, an instance probes every interval + its offset, a fixed value in
// [-interval/10, +interval/10] derived from a seed (the instance's name: seed_of()), so
// instances that were probed together are a fifth of the interval apart after one interval and
// keep drifting apart; on average they probe every interval. Seed 0: no offset.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "base/clock.h"
#include "model/catalog.h"

namespace berth::health {

class Tracker {
 public:
  enum class Phase { kStarting, kReady, kUnhealthy };
  enum class Change { kNone, kBecameReady, kBecameUnhealthy };

  Tracker(const model::HealthSpec& spec, Millis started_at, std::uint64_t seed = 0);

  // A seed for `who` (e.g. "env/app/ordinal"): the same for the same name in every run.
  static std::uint64_t seed_of(std::string_view who);
  // The offset of a ready instance's interval for `seed`: within ±interval/10; 0 for seed 0.
  static Millis offset_for(Millis interval, std::uint64_t seed);

  // Record a probe result at `now`.
  Change record(bool ok, Millis now);
  // A probe at `now` that told nothing (the daemon could not probe): no result is recorded,
  // the next probe is one interval later as after any other.
  void skip(Millis now) { next_probe_ = now + (phase_ == Phase::kReady ? ready_interval() : spec_.start_interval_ms); }
  // An instance known to have been ready (adopted after a daemon restart): it counts as ready
  // from `now` (failures count against failure_threshold) and is probed at once.
  void assume_ready(Millis now) {
    phase_ = Phase::kReady;
    ever_ready_ = true;
    next_probe_ = now;
  }
  // When the next probe is due.
  Millis next_probe_at() const { return next_probe_; }

  Phase phase() const { return phase_; }
  bool ready() const { return phase_ == Phase::kReady; }
  bool ever_ready() const { return ever_ready_; }
  int consecutive_failures() const { return failures_; }
  // Between two probes once ready: interval plus this instance's offset.
  Millis ready_interval() const { return spec_.interval_ms + offset_; }

 private:
  model::HealthSpec spec_;
  Millis offset_ = 0;
  Millis started_at_;
  Millis next_probe_;
  Phase phase_ = Phase::kStarting;
  bool ever_ready_ = false;
  int successes_ = 0;
  int failures_ = 0;
};

}  // namespace berth::health
