// base/subprocess.h — starting and identifying child processes.
//
// spawn() forks and execs `/bin/sh -c "exec COMMAND"` in its own process group with stdout and
// stderr appended to a log file. With `gate`, the child waits after fork until release_gate():
// the parent records the pid durably in between, and if the parent dies first the child sees
// EOF on the gate and exits without running anything — so no process can exist that the state
// store does not know of. Each spawned process comes with a pidfd, which becomes readable when
// it exits; callers poll it on their event loop.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>

#include "base/result.h"

namespace berth {

struct SpawnOptions {
  std::string command;                        // run by /bin/sh -c "exec COMMAND"
  std::map<std::string, std::string> env;     // the whole environment of the child
  std::string log_path;                       // stdout+stderr appended here; empty: /dev/null
  std::string cwd;                            // empty: inherit
  bool gate = false;                          // wait for release_gate() before exec
  bool die_with_parent = false;               // PR_SET_PDEATHSIG(SIGKILL), for probes
};

struct Spawned {
  pid_t pid = -1;   // also the process group id
  int pidfd = -1;   // owned by the caller; readable once the process has exited
  int gate_fd = -1; // write end of the gate; closed by release_gate()
  unsigned long long start_ticks = 0;
};

Result<Spawned> spawn(const SpawnOptions& options);
// Let a gated child exec its command.
Status release_gate(Spawned& spawned);

// Start time of `pid` in clock ticks since boot (/proc/<pid>/stat field 22), or nullopt when no
// such process exists. Together with the pid it identifies a process across pid reuse.
std::optional<unsigned long long> process_start_ticks(pid_t pid);

// A pidfd for an existing process (not necessarily a child), or -1.
int open_pidfd(pid_t pid);

// Collect a child's exit status without blocking. Returns nullopt while it runs or if it is not
// our child. The value is a wait status (WIFEXITED...).
std::optional<int> reap(pid_t pid);

// "exited with status 1", "killed by SIGKILL".
std::string describe_wait_status(int status);

// The variables a child inherits from the daemon (PATH, HOME, LANG, TZ, USER, LOGNAME, TMPDIR).
std::map<std::string, std::string> base_environment();

}  // namespace berth
