// base/executor.h — the event loop as seen by components.
//
// Mutable state has one owner: the loop thread. Components never start threads to touch state;
// they post work and schedule timers through an Executor. Production uses AsioExecutor; tests use
// ManualExecutor, which runs timers only when the test advances its ManualClock — no sleeping.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <utility>
#include <vector>

#include "base/clock.h"

namespace berth {

class Executor {
 public:
  using TimerId = std::uint64_t;
  virtual ~Executor() = default;
  // Run `fn` on the loop soon, after the current handler returns.
  virtual void post(std::function<void()> fn) = 0;
  // Run `fn` on the loop after `delay_ms`. Returns an id for cancel().
  virtual TimerId after(Millis delay_ms, std::function<void()> fn) = 0;
  // Cancel a timer that has not fired; unknown or fired ids are ignored.
  virtual void cancel(TimerId id) = 0;
};

// For tests: posted work and due timers run from run_ready() / advance().
class ManualExecutor final : public Executor {
 public:
  explicit ManualExecutor(ManualClock& clock) : clock_(clock) {}
  void post(std::function<void()> fn) override { posted_.push_back(std::move(fn)); }
  TimerId after(Millis delay_ms, std::function<void()> fn) override {
    TimerId id = ++next_;
    timers_.emplace(id, Timer{clock_.monotonic_ms() + delay_ms, std::move(fn)});
    return id;
  }
  void cancel(TimerId id) override { timers_.erase(id); }

  // Run posted work until none is left.
  void run_ready() {
    while (!posted_.empty()) {
      auto batch = std::move(posted_);
      posted_.clear();
      for (auto& fn : batch) fn();
    }
  }
  // Move time forward, firing due timers in order.
  void advance(Millis ms) {
    Millis target = clock_.monotonic_ms() + ms;
    run_ready();
    while (true) {
      auto next = timers_.end();
      for (auto it = timers_.begin(); it != timers_.end(); ++it)
        if (it->second.due <= target && (next == timers_.end() || it->second.due < next->second.due)) next = it;
      if (next == timers_.end()) break;
      if (next->second.due > clock_.monotonic_ms()) clock_.advance(next->second.due - clock_.monotonic_ms());
      auto fn = std::move(next->second.fn);
      timers_.erase(next);
      fn();
      run_ready();
    }
    if (target > clock_.monotonic_ms()) clock_.advance(target - clock_.monotonic_ms());
  }
  std::size_t pending_timers() const { return timers_.size(); }

 private:
  struct Timer {
    Millis due;
    std::function<void()> fn;
  };
  ManualClock& clock_;
  TimerId next_ = 0;
  std::vector<std::function<void()>> posted_;
  std::map<TimerId, Timer> timers_;
};

}  // namespace berth
