// base/executor.h — the event loop as seen by components.
//
// Mutable state has one owner: the loop thread. Components never touch another component's
// state from their own threads; they post work to the loop and schedule timers through an
// Executor. Production uses AsioExecutor; tests use ManualExecutor, which runs timers only when
// the test advances its ManualClock — no sleeping.
//
// Threads: post() is the one entry any thread may call (worker threads hand their results to
// the loop with it). after(), cancel() and everything posted run on the loop thread only;
// on_loop_thread() lets entry points assert that (BERTH_ASSERT_LOOP).
#pragma once

#include <cassert>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "base/clock.h"

namespace berth {

class Executor {
 public:
  using TimerId = std::uint64_t;
  virtual ~Executor() = default;
  // Run `fn` on the loop soon, after the current handler returns. Thread-safe.
  virtual void post(std::function<void()> fn) = 0;
  // Run `fn` on the loop after `delay_ms`. Returns an id for cancel(). Loop thread only.
  virtual TimerId after(Millis delay_ms, std::function<void()> fn) = 0;
  // Cancel a timer that has not fired; unknown or fired ids are ignored. Loop thread only.
  virtual void cancel(TimerId id) = 0;
  // Whether the caller runs on the loop's thread.
  virtual bool on_loop_thread() const = 0;
};

// Entry points of loop-owned state assert their thread in debug builds.
#define BERTH_ASSERT_LOOP(executor) assert((executor).on_loop_thread() && "called off the loop thread")

// For tests: posted work and due timers run from run_ready() / advance(), on the thread that
// created the executor (its loop thread). post() may come from any thread.
class ManualExecutor final : public Executor {
 public:
  explicit ManualExecutor(ManualClock& clock) : clock_(clock) {}
  void post(std::function<void()> fn) override {
    std::lock_guard<std::mutex> lock(mu_);
    posted_.push_back(std::move(fn));
  }
  bool on_loop_thread() const override { return std::this_thread::get_id() == thread_; }
  TimerId after(Millis delay_ms, std::function<void()> fn) override {
    TimerId id = ++next_;
    timers_.emplace(id, Timer{clock_.monotonic_ms() + delay_ms, std::move(fn)});
    return id;
  }
  void cancel(TimerId id) override { timers_.erase(id); }

  // Run posted work until none is left.
  void run_ready() {
    while (true) {
      std::vector<std::function<void()>> batch;
      {
        std::lock_guard<std::mutex> lock(mu_);
        batch.swap(posted_);
      }
      if (batch.empty()) return;
      for (auto& fn : batch) fn();
    }
  }
  // Move time forward, firing due timers in order, each after the posted work before it.
  void advance(Millis ms) { move_time(ms, true); }
  // The same, but posted work waits (for run_ready()): the timers due fire while it is queued,
  // as on a busy loop whose queue is never empty.
  void fire_timers(Millis ms) { move_time(ms, false); }
  std::size_t pending_timers() const { return timers_.size(); }

 private:
  struct Timer {
    Millis due;
    std::function<void()> fn;
  };
  void move_time(Millis ms, bool run_posted) {
    Millis target = clock_.monotonic_ms() + ms;
    if (run_posted) run_ready();
    while (true) {
      auto next = timers_.end();
      for (auto it = timers_.begin(); it != timers_.end(); ++it)
        if (it->second.due <= target && (next == timers_.end() || it->second.due < next->second.due)) next = it;
      if (next == timers_.end()) break;
      if (next->second.due > clock_.monotonic_ms()) clock_.advance(next->second.due - clock_.monotonic_ms());
      auto fn = std::move(next->second.fn);
      timers_.erase(next);
      fn();
      if (run_posted) run_ready();
    }
    if (target > clock_.monotonic_ms()) clock_.advance(target - clock_.monotonic_ms());
  }

  ManualClock& clock_;
  std::thread::id thread_ = std::this_thread::get_id();
  TimerId next_ = 0;
  std::mutex mu_;
  std::vector<std::function<void()>> posted_;  // guarded by mu_
  std::map<TimerId, Timer> timers_;
};

}  // namespace berth
