// base/asio_executor.h — Executor on a Boost.Asio io_context (the daemon's loop).
#pragma once

#include <memory>
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

  TimerId after(Millis delay_ms, std::function<void()> fn) override {
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
    if (auto it = timers_.find(id); it != timers_.end()) {
      it->second->cancel();
      timers_.erase(it);
    }
  }

  boost::asio::io_context& io() { return io_; }

 private:
  boost::asio::io_context& io_;
  TimerId next_ = 0;
  std::unordered_map<TimerId, std::shared_ptr<boost::asio::steady_timer>> timers_;
};

}  // namespace berth
