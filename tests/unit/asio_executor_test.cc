// AsioExecutor's timers (base/asio_executor.h): one asio timer over a heap of deadlines. These run
// a real io_context on real time, with delays of milliseconds, and assert only order: what fires,
// in which order, and that a cancelled or thrown-through timer does not stop the others.
#include <chrono>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/asio_executor.h"

namespace berth {
namespace {

using testing::ElementsAre;

// Runs `io` until `done` holds or 10 s pass; an exception out of a handler is recorded and
// the loop goes on, as the daemon's does.
bool run_until(boost::asio::io_context& io, const std::function<bool()>& done, std::vector<std::string>* thrown = nullptr) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    try {
      io.restart();
      io.run_for(std::chrono::milliseconds(5));
    } catch (const std::exception& e) {
      if (thrown) thrown->push_back(e.what());
    }
  }
  return true;
}

TEST(AsioExecutor, TimersFireByDeadlineThenInTheOrderSetAndCancelledOnesNever) {
  boost::asio::io_context io(1);
  AsioExecutor ex(io);
  std::vector<std::string> fired;
  ex.after(30, [&] { fired.push_back("30"); });
  ex.after(10, [&] { fired.push_back("10a"); });
  const auto twenty = ex.after(20, [&] { fired.push_back("20"); });
  ex.after(10, [&] { fired.push_back("10b"); });
  ex.cancel(twenty);
  ex.cancel(twenty);  // twice, or an id never given: ignored
  ex.cancel(12345);
  ASSERT_TRUE(run_until(io, [&] { return fired.size() == 3; }));
  EXPECT_THAT(fired, ElementsAre("10a", "10b", "30"));
}

TEST(AsioExecutor, AnEarlierTimerSetAfterALaterOneAndOneSetFromATimerFireFirst) {
  boost::asio::io_context io(1);
  AsioExecutor ex(io);
  std::vector<std::string> fired;
  ex.after(400, [&] { fired.push_back("late"); });
  ex.after(1, [&] {
    fired.push_back("early");
    ex.after(0, [&] { fired.push_back("from a timer"); });
  });
  ASSERT_TRUE(run_until(io, [&] { return fired.size() == 3; }));
  EXPECT_THAT(fired, ElementsAre("early", "from a timer", "late"));
}

TEST(AsioExecutor, ATimerThatThrowsLeavesTheOthersArmed) {
  boost::asio::io_context io(1);
  AsioExecutor ex(io);
  std::vector<std::string> fired, thrown;
  ex.after(1, [&] { throw std::runtime_error("boom"); });
  ex.after(1, [&] { fired.push_back("same deadline"); });
  ex.after(20, [&] { fired.push_back("later"); });
  ASSERT_TRUE(run_until(io, [&] { return fired.size() == 2; }, &thrown));
  EXPECT_THAT(thrown, ElementsAre("boom"));
  EXPECT_THAT(fired, ElementsAre("same deadline", "later"));
}

TEST(AsioExecutor, ThousandsOfCancelledTimersAreDroppedAndTheLiveOnesFire) {
  boost::asio::io_context io(1);
  AsioExecutor ex(io);
  int fired = 0;
  for (int round = 0; round < 3; ++round) {
    std::vector<Executor::TimerId> ids;
    for (int i = 0; i < 5000; ++i) ids.push_back(ex.after(60'000, [&] { fired += 1000; }));
    for (auto id : ids) ex.cancel(id);
  }
  ex.after(2, [&] { ++fired; });
  ex.after(60'000, [&] { fired += 1000; });  // live, not due
  ASSERT_TRUE(run_until(io, [&] { return fired >= 1; }));
  EXPECT_EQ(fired, 1);
}

}  // namespace
}  // namespace berth
