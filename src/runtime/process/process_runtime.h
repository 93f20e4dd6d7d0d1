// runtime/process/process_runtime.h — instances as supervised local processes.
//
// Each instance is `/bin/sh -c "exec COMMAND"` in its own process group, stdout and stderr
// appended to its log file, started behind a gate (base/subprocess.h) so it runs only after
// the control loop has recorded it. Exits are seen through pidfds on the loop's io_context.
// When an instance's main process exits, the rest of its process group is killed, so nothing
// it started outlives it. Instances are not tied to the daemon's life: after a daemon restart
// they are adopted by pid + start time.
#pragma once

#include <memory>
#include <unordered_map>

#include <boost/asio/io_context.hpp>

#include "base/executor.h"
#include "runtime/runtime.h"

namespace berth::runtime {

class ProcessRuntime final : public Runtime {
 public:
  ProcessRuntime(boost::asio::io_context& io, Executor& executor);
  ~ProcessRuntime() override;

  Result<Handle> start(const InstanceSpec& spec, const std::function<Status(const Handle&)>& record,
                       ExitCallback on_exit) override;
  bool adopt(const Handle& handle, ExitCallback on_exit) override;
  void stop(const Handle& handle, Millis grace_ms) override;
  void kill_now(const Handle& handle) override;

 private:
  struct Watched;
  void watch(const Handle& handle, int pidfd, bool child, ExitCallback on_exit);
  void arm(const std::shared_ptr<Watched>& w);

  boost::asio::io_context& io_;
  Executor& executor_;
  std::unordered_map<int, std::shared_ptr<Watched>> watched_;  // by pid
};

}  // namespace berth::runtime
