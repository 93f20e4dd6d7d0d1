// base/clock.h — injected time.
//
// Everything that reads the time takes a Clock&, so tests drive a ManualClock instead of
// sleeping. Two readings: wall time for timestamps shown to people (events, ready_at) and
// monotonic time for intervals, deadlines and backoff. Both are milliseconds.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace berth {

using Millis = std::int64_t;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual Millis wall_ms() const = 0;       // milliseconds since the Unix epoch
  virtual Millis monotonic_ms() const = 0;  // milliseconds since an arbitrary start
};

class SystemClock final : public Clock {
 public:
  Millis wall_ms() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch()).count();
  }
  Millis monotonic_ms() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch()).count();
  }
};

// The system's wall time plus an offset that only moves forward: `berth serve --test-clock`, so
// integration tests can let days pass (lifetimes) without waiting. Any thread.
class OffsetClock final : public Clock {
 public:
  Millis wall_ms() const override { return system_.wall_ms() + offset_.load(); }
  // Intervals and timers (the executor's) keep the real pace: only dates move.
  Millis monotonic_ms() const override { return system_.monotonic_ms(); }
  void advance(Millis ms) { offset_ += ms; }

 private:
  SystemClock system_;
  std::atomic<Millis> offset_{0};
};

// A clock that moves only when told to; for tests.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(Millis wall = 1'700'000'000'000, Millis mono = 0) : wall_(wall), mono_(mono) {}
  Millis wall_ms() const override { return wall_; }
  Millis monotonic_ms() const override { return mono_; }
  void advance(Millis ms) { wall_ += ms; mono_ += ms; }

 private:
  Millis wall_;
  Millis mono_;
};

}  // namespace berth
