// base/worker.h — a thread of its own for slow, self-contained work the loop must not wait for
// (validating a large catalog, say).
//
// Jobs run one at a time, in the order posted. A job takes copies of what it reads and hands
// its result back to the loop with Executor::post; it never touches loop-owned state. A library
// exception escaping a job is reported on stderr and the worker goes on with the next.
//
// Threads: post() from any thread. The destructor finishes the job that runs, drops the rest
// and joins.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace berth {

class Worker {
 public:
  explicit Worker(std::string name);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  void post(std::function<void()> job);

 private:
  void run();

  std::string name_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::thread thread_;  // last: started once the rest is there
};

}  // namespace berth
