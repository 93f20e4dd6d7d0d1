// base/subprocess.h — starting and identifying child processes.
//
// spawn() starts `/bin/sh -c "exec COMMAND"` (or an argv, without a shell) in its own process
// group with stdout and stderr appended to a log file or sent to a pipe, umask 022 (whatever the
// daemon's own), optionally as another user (SpawnOptions::identity). The child is made like
// posix_spawn makes one (clone with CLONE_VM | CLONE_VFORK), not by fork: the calling thread is
// suspended until the child has exec'd, with no copy of the caller's page tables and no
// copy-on-write faults afterwards, which fork costs a large process per child. With `gate`, the
// shell waits on a pipe before it execs the command until release_gate(): the parent records the
// pid durably in between, and if the parent dies first the shell sees EOF on the gate and exits
// without running anything — so no process can exist that the state store does not know of.
// Each spawned process comes with a pidfd, which becomes readable when it exits; callers poll it
// on their event loop.
//
// Threads: spawn() may be called from several threads at once (each has its own child stack).
// Only the calling thread is suspended; the others go on, and the child closes its copies of
// their descriptors first thing.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/identity.h"
#include "base/result.h"

namespace berth {

struct SpawnOptions {
  std::string command;                        // run by /bin/sh -c "exec COMMAND"
  std::vector<std::string> argv;              // instead of command: run this, PATH searched, no shell
  std::map<std::string, std::string> env;     // the whole environment of the child
  std::string log_path;                       // stdout+stderr appended here; empty: /dev/null
  bool capture_output = false;                // stdout+stderr to a pipe instead (Spawned::output_fd)
  std::string cwd;                            // empty: inherit
  bool gate = false;                          // wait for release_gate() before exec
  bool die_with_parent = false;               // PR_SET_PDEATHSIG(SIGKILL), for probes
  // Root only: the child gets a mount namespace of its own in which this file is bind-mounted
  // over /etc/resolv.conf (its resolver). A failure is written to its output; it still runs.
  std::string resolv_conf;
  // A pidfd of another process: the child joins that process's mount namespace first.
  int join_mount_ns_of = -1;
  // Root only: run as this user with this group as its only one, with no capabilities and
  // no way to gain privileges (PR_SET_NO_NEW_PRIVS: setuid binaries do not elevate it). Unset:
  // the daemon's user. If switching fails the child says so in its output and exits with 126.
  std::optional<Identity> identity;
};

struct Spawned {
  pid_t pid = -1;   // also the process group id
  int pidfd = -1;   // owned by the caller; readable once the process has exited
  int gate_fd = -1; // write end of the gate; closed by release_gate()
  int output_fd = -1;  // with capture_output: read end of the output pipe, owned by the caller
  unsigned long long start_ticks = 0;
};

// A failure for want of the daemon's own descriptors or processes (EMFILE, ENFILE, EAGAIN and
// ENOMEM from pipe, open, fork, pidfd_open) is ErrorCode::kExhausted, its message naming the
// limit and how to raise it; other failures are kUnavailable or kNotFound.
Result<Spawned> spawn(const SpawnOptions& options);
// Why `what` (pipe, open, fork, pidfd_open, fcntl...) failed with errno `err`, said the way
// spawn() says it: the daemon's own limit as kExhausted, naming it and how to raise it.
Error spawn_error(const std::string& what, int err);
// Let a gated child exec its command.
Status release_gate(Spawned& spawned);

// The descriptors kept for the daemon's own work (API connections, health probes, its store)
// at an open files limit of `limit`: an eighth of it, at least 16 and at most 512.
unsigned long long descriptor_reserve(unsigned long long limit);
// Whether one more long-lived descriptor (an instance's) leaves descriptor_reserve() of them
// free: descriptor number limit − reserve − 1 must be unused. Descriptors are handed out lowest
// first, so a number that high is taken only once nearly all below it were; a freed hole
// below it makes this refuse early, never late. O(1): one fcntl and one close. The limit is
// read each call (it can be changed under a running daemon with prlimit). Thread-safe.
// Error: kExhausted, naming the limit, the reserve and how to raise the limit.
Status descriptor_headroom();

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

// The environment of a running process (/proc/<pid>/environ, at most 1 MiB read); empty when it
// cannot be read.
std::map<std::string, std::string> process_environment(pid_t pid);
// Whether `pid` runs in a mount namespace other than ours.
bool has_own_mount_namespace(pid_t pid);

// The variables a child inherits from the daemon (PATH, HOME, LANG, TZ, USER, LOGNAME, TMPDIR).
std::map<std::string, std::string> base_environment();

// Run `command` with sh as spawn() does (`exec COMMAND`: one command, redirections allowed; a
// list such as `a && b` would run `a` alone) in base_environment(), its output and the command
// itself appended to `log`, and wait for it: for worker threads. A failure names `what`, how it
// ended and the last lines of the log.
Status run_logged(const std::string& command, const std::string& log, const std::string& what);

}  // namespace berth
