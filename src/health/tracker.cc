#include "health/tracker.h"

namespace berth::health {

Tracker::Tracker(const model::HealthSpec& spec, Millis started_at, std::uint64_t seed)
    : spec_(spec), offset_(offset_for(spec.interval_ms, seed)), started_at_(started_at), next_probe_(started_at) {}

std::uint64_t Tracker::seed_of(std::string_view who) {
  // FNV-1a, then splitmix64's finalizer: names that differ in one character land far apart.
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : who) h = (h ^ c) * 0x100000001b3ull;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h == 0 ? 1 : h;
}

Millis Tracker::offset_for(Millis interval, std::uint64_t seed) {
  const Millis spread = interval / 10;
  if (seed == 0 || spread <= 0) return 0;
  return static_cast<Millis>(seed % static_cast<std::uint64_t>(2 * spread + 1)) - spread;
}

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
  next_probe_ = now + (phase_ == Phase::kReady ? ready_interval() : spec_.start_interval_ms);
  return change;
}

}  // namespace berth::health
