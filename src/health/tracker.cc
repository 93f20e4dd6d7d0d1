#include "health/tracker.h"

namespace berth::health {

Tracker::Tracker(const model::HealthSpec& spec, Millis started_at)
    : spec_(spec), started_at_(started_at), next_probe_(started_at) {}

Tracker::Change Tracker::record(bool ok, Millis now) {
  Change change = Change::kNone;
  if (ok) {
    failures_ = 0;
    ++successes_;
    if (phase_ != Phase::kReady && successes_ >= spec_.success_threshold) {
      phase_ = Phase::kReady;
      ever_ready_ = true;
      change = Change::kBecameReady;
    }
  } else {
    successes_ = 0;
    bool in_grace = !ever_ready_ && now - started_at_ < spec_.start_period_ms;
    if (!in_grace) ++failures_;
    if (phase_ == Phase::kReady && failures_ >= spec_.failure_threshold) {
      phase_ = Phase::kUnhealthy;
      change = Change::kBecameUnhealthy;
    } else if (phase_ == Phase::kStarting && !ever_ready_ && failures_ >= spec_.failure_threshold) {
      phase_ = Phase::kUnhealthy;  // never became ready within start_period
      change = Change::kBecameUnhealthy;
    }
  }
  next_probe_ = now + (phase_ == Phase::kReady ? spec_.interval_ms : spec_.start_interval_ms);
  return change;
}

}  // namespace berth::health
