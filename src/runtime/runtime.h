// runtime/runtime.h — how instances are run.
//
// The control loop asks a Runtime to start, stop and re-find (adopt) instance processes, and is
// told when one exits. Implementations: runtime/process (local supervised processes); later
// ones (docker, swarm) implement the same interface. All calls and callbacks happen on the
// control loop's thread.
#pragma once

#include <functional>
#include <map>
#include <string>

#include "base/clock.h"
#include "base/result.h"

namespace berth::runtime {

struct InstanceSpec {
  std::string env;
  std::string app;
  int ordinal = 0;
  std::string command;                       // fully substituted
  std::map<std::string, std::string> env_vars;  // added to the runtime's base environment
  std::string log_path;
};

// Identifies a running instance across daemon restarts; stored by the control loop.
struct Handle {
  int pid = 0;
  int pgid = 0;
  unsigned long long start_ticks = 0;
};

struct Exit {
  bool status_known = false;  // false for adopted processes (not our children)
  int wait_status = 0;
  std::string description;   // "exited with status 1", "killed by SIGKILL", "ended"
};

class Runtime {
 public:
  using ExitCallback = std::function<void(const Exit&)>;
  virtual ~Runtime() = default;

  // Start an instance. `record` runs after the process exists but before it runs anything; the
  // loop stores the handle there. If `record` fails, the process is killed and never runs.
  virtual Result<Handle> start(const InstanceSpec& spec, const std::function<Status(const Handle&)>& record,
                               ExitCallback on_exit) = 0;
  // Re-attach to an instance started before a daemon restart. Returns false if it is gone.
  virtual bool adopt(const Handle& handle, ExitCallback on_exit) = 0;
  // SIGTERM to the instance's process group, SIGKILL after `grace_ms`. The exit callback fires
  // once the process is gone.
  virtual void stop(const Handle& handle, Millis grace_ms) = 0;
  // Kill at once; for shutdown of anything unrecorded.
  virtual void kill_now(const Handle& handle) = 0;
};

}  // namespace berth::runtime
