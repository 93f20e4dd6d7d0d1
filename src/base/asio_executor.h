// base/asio_executor.h — Executor on a Boost.Asio io_context (the daemon's loop).
//
// The loop thread is the one that created the executor, or the one that last called
// bind_to_this_thread() (a test running the io_context on a thread of its own). post() is
// thread-safe (asio's post is); timers belong to the loop thread.
#pragma once

#include <atomic>
#include <memory>
#include <thread>
#include <unordered_map>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "base/executor.h"

namespace berth {

class AsioExecutor final : public Executor {
 public:
  explicit AsioExecutor(boost::asio::io_context& io) : io_(io) {}

  void post(std::function<void()> fn) override { boost::asio::post(io_, std::move(fn)); }
  bool on_loop_thread() const override { return std::this_thread::get_id() == thread_.load(); }
  void bind_to_this_thread() { thread_ = std::this_thread::get_id(); }

  TimerId after(Millis delay_ms, std::function<void()> fn) override {
    BERTH_ASSERT_LOOP(*this);
    TimerId id = ++next_;
    auto timer = std::make_shared<boost::asio::steady_timer>(io_, std::chrono::milliseconds(delay_ms));
    timers_[id] = timer;
    timer->async_wait([this, id, fn = std::move(fn)](const boost::system::error_code& ec) {
      if (ec) return;  // cancelled
      timers_.erase(id);
      fn();
    });
    return id;
  }

  void cancel(TimerId id) override {
    BERTH_ASSERT_LOOP(*this);
    if (auto it = timers_.find(id); it != timers_.end()) {
      it->second->cancel();
      timers_.erase(it);
    }
  }

  boost::asio::io_context& io() { return io_; }

 private:
  boost::asio::io_context& io_;
  std::atomic<std::thread::id> thread_{std::this_thread::get_id()};
  TimerId next_ = 0;
  std::unordered_map<TimerId, std::shared_ptr<boost::asio::steady_timer>> timers_;
};

}  // namespace berth
