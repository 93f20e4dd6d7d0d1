// base/asio_executor.h — Executor on a Boost.Asio io_context (the daemon's loop).
//
// The loop thread is the one that created the executor, or the one that last called
// bind_to_this_thread() (a test running the io_context on a thread of its own). post() is
// thread-safe (asio's post is); timers belong to the loop thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <unordered_map>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "base/executor.h"

namespace berth {

class AsioExecutor final : public Executor {
 public:
  explicit AsioExecutor(boost::asio::io_context& io) : io_(io), wake_(io) {}

  void post(std::function<void()> fn) override { boost::asio::post(io_, std::move(fn)); }
  bool on_loop_thread() const override { return std::this_thread::get_id() == thread_.load(); }
  void bind_to_this_thread() { thread_ = std::this_thread::get_id(); }

  // Timers are a heap of deadlines under one asio timer armed for the earliest (tens of
  // thousands of probe timers at fleet scale: one asio timer, its wait operation and a map node
  // each cost an eighth of the loop's time). Timers due together run in the order they were set.
  TimerId after(Millis delay_ms, std::function<void()> fn) override {
    BERTH_ASSERT_LOOP(*this);
    const TimerId id = ++next_;
    const auto at = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::max<Millis>(delay_ms, 0));
    pending_.emplace(id, std::move(fn));
    heap_.push_back({at, id});
    std::push_heap(heap_.begin(), heap_.end(), Later{});
    if (!armed_ || at < armed_at_) arm(at);
    return id;
  }

  // A cancelled timer's deadline stays in the heap until it comes up (or the heap is compacted).
  void cancel(TimerId id) override {
    BERTH_ASSERT_LOOP(*this);
    if (pending_.erase(id) && heap_.size() > 2 * pending_.size() + 1024) compact();
  }

  boost::asio::io_context& io() { return io_; }

 private:
  using TimePoint = std::chrono::steady_clock::time_point;
  struct Deadline {
    TimePoint at;
    TimerId id;
  };
  struct Later {  // std::*_heap keep the greatest first: the latest compares greatest
    bool operator()(const Deadline& a, const Deadline& b) const { return a.at != b.at ? a.at > b.at : a.id > b.id; }
  };

  void arm(TimePoint at) {
    armed_ = true;
    armed_at_ = at;
    const std::uint64_t generation = ++generation_;
    wake_.expires_at(at);  // (a wait armed before ends with operation_aborted)
    wake_.async_wait([this, generation](const boost::system::error_code& ec) {
      if (ec || generation != generation_) return;  // re-armed, or the executor is gone
      fire();
    });
  }

  void fire() {
    armed_ = false;
    struct Rearm {  // whatever a timer's function does, throwing included, the rest stay armed
      AsioExecutor* self;
      ~Rearm() { self->rearm(); }
    } rearm{this};
    const TimePoint now = std::chrono::steady_clock::now();
    while (!heap_.empty() && heap_.front().at <= now) {
      std::pop_heap(heap_.begin(), heap_.end(), Later{});
      const TimerId id = heap_.back().id;
      heap_.pop_back();
      auto it = pending_.find(id);
      if (it == pending_.end()) continue;  // cancelled
      auto fn = std::move(it->second);
      pending_.erase(it);
      fn();
    }
  }

  void rearm() {
    while (!heap_.empty() && !pending_.count(heap_.front().id)) {  // cancelled ones on top
      std::pop_heap(heap_.begin(), heap_.end(), Later{});
      heap_.pop_back();
    }
    if (!heap_.empty() && (!armed_ || heap_.front().at < armed_at_)) arm(heap_.front().at);
  }

  void compact() {
    std::erase_if(heap_, [&](const Deadline& d) { return !pending_.count(d.id); });
    std::make_heap(heap_.begin(), heap_.end(), Later{});
  }

  boost::asio::io_context& io_;
  std::atomic<std::thread::id> thread_{std::this_thread::get_id()};
  TimerId next_ = 0;
  std::unordered_map<TimerId, std::function<void()>> pending_;  // set, not yet fired nor cancelled
  std::vector<Deadline> heap_;                                   // of pending_ (and cancelled ones)
  boost::asio::steady_timer wake_;
  bool armed_ = false;
  TimePoint armed_at_{};
  std::uint64_t generation_ = 0;
};

}  // namespace berth
