#include "base/subprocess.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <linux/close_range.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <new>
#include <sstream>
#include <vector>

#include <fmt/format.h>

namespace berth {

int open_pidfd(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

std::optional<unsigned long long> process_start_ticks(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  if (!in) return std::nullopt;
  std::string line;
  std::getline(in, line);
  // The command name (field 2) is in parentheses and may contain spaces: parse after the last ')'.
  auto close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  // Fields after ')' start at field 3 (state); start time is field 22.
  for (int i = 3; i < 22; ++i) rest >> field;
  unsigned long long ticks = 0;
  if (!(rest >> ticks)) return std::nullopt;
  if (line.size() > close + 2 && line[close + 2] == 'Z') return std::nullopt;  // zombie: gone
  return ticks;
}

std::optional<int> reap(pid_t pid) {
  int status = 0;
  pid_t r = waitpid(pid, &status, WNOHANG);
  if (r == pid) return status;
  return std::nullopt;
}

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("killed by {}", sigabbrev_np(WTERMSIG(status)) ? fmt::format("SIG{}", sigabbrev_np(WTERMSIG(status))) : std::to_string(WTERMSIG(status)));
  return fmt::format("ended (wait status {})", status);
}

std::map<std::string, std::string> process_environment(pid_t pid) {
  std::map<std::string, std::string> vars;
  std::ifstream in(fmt::format("/proc/{}/environ", pid), std::ios::binary);
  if (!in) return vars;
  std::string text(1 << 20, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  for (std::size_t i = 0; i < text.size();) {
    auto end = text.find('\0', i);
    if (end == std::string::npos) end = text.size();
    std::string_view kv(text.data() + i, end - i);
    if (auto eq = kv.find('='); eq != std::string_view::npos) vars.emplace(kv.substr(0, eq), kv.substr(eq + 1));
    i = end + 1;
  }
  return vars;
}

bool has_own_mount_namespace(pid_t pid) {
  char mine[64] = {}, theirs[64] = {};
  const std::string path = fmt::format("/proc/{}/ns/mnt", pid);
  if (readlink("/proc/self/ns/mnt", mine, sizeof mine - 1) < 0) return false;
  if (readlink(path.c_str(), theirs, sizeof theirs - 1) < 0) return false;
  return std::strcmp(mine, theirs) != 0;
}

std::map<std::string, std::string> base_environment() {
  std::map<std::string, std::string> env;
  for (const char* name : {"PATH", "HOME", "LANG", "TZ", "USER", "LOGNAME", "TMPDIR"})
    if (const char* v = std::getenv(name)) env[name] = v;
  if (!env.count("PATH")) env["PATH"] = "/usr/local/bin:/usr/bin:/bin";
  return env;
}

unsigned long long descriptor_reserve(unsigned long long limit) { return std::clamp(limit / 8, 16ull, 512ull); }

Status descriptor_headroom() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY || lim.rlim_cur > INT_MAX) return {};
  const unsigned long long limit = lim.rlim_cur, reserve = descriptor_reserve(limit);
  bool room = false;
  if (limit > reserve + 1) {
    const int mark = static_cast<int>(limit - reserve - 1);  // taken by the one more: `reserve` above it
    // Any open descriptor will do as the one to duplicate: the daemon's stderr is its log.
    int fd = -1;
    for (int from : {STDERR_FILENO, STDOUT_FILENO, STDIN_FILENO})
      if ((fd = fcntl(from, F_DUPFD_CLOEXEC, mark)) >= 0 || errno != EBADF) break;
    if (fd < 0 && errno == EBADF) return {};  // nothing to duplicate: say nothing rather than guess
    room = fd == mark;
    if (fd >= 0) close(fd);
  }
  if (room) return {};
  return exhausted(fmt::format("berth's open files limit ({}) is nearly reached: the last {} descriptors are kept for "
                               "API connections, health probes and the state store; raise it (ulimit -n before berth "
                               "serve, LimitNOFILE= in its systemd unit)",
                               limit, reserve));
}

Error spawn_error(const std::string& what, int err) {
  const std::string said = fmt::format("{}: {}", what, std::strerror(err));
  rlimit lim{};
  if (err == EMFILE) {
    const bool known = getrlimit(RLIMIT_NOFILE, &lim) == 0;
    return exhausted(fmt::format("berth's open files limit{} is reached ({}): raise it (ulimit -n before berth serve, "
                                 "LimitNOFILE= in its systemd unit)",
                                 known ? fmt::format(" ({})", static_cast<unsigned long long>(lim.rlim_cur)) : "", said));
  }
  if (err == ENFILE)
    return exhausted(fmt::format("the system's open files limit is reached ({}): raise fs.file-max (sysctl)", said));
  if (err == EAGAIN && what == "fork") {
    const bool known = getrlimit(RLIMIT_NPROC, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY;
    return exhausted(fmt::format("berth's process limit is reached ({}): raise it (ulimit -u{}, LimitNPROC= and "
                                 "TasksMax= in its systemd unit, pids.max of its cgroup) or kernel.pid_max and "
                                 "kernel.threads-max (sysctl)",
                                 said, known ? fmt::format(", now {}", static_cast<unsigned long long>(lim.rlim_cur)) : ""));
  }
  if (err == ENOMEM || err == EAGAIN) return exhausted(fmt::format("the host is out of memory ({})", said));
  return unavailable(said);
}

namespace {

// What the child does between clone and exec, prepared by the parent: the child shares the
// parent's memory (CLONE_VM) and may call nothing that allocates, locks or touches another
// thread's state — only system calls on what is here.
struct ChildPlan {
  const SpawnOptions* o = nullptr;
  pid_t parent = 0;
  const char* program = nullptr;
  const char* const* argv = nullptr;
  const char* const* envp = nullptr;
  int null_fd = -1, log_fd = -1, gate_fd = -1;
  const char* identity_message = nullptr;
  std::size_t identity_message_size = 0;
};

constexpr char kResolvMessage[] = "berth: could not give this instance its resolver (/etc/resolv.conf)\n";

// System calls without libc's wrappers: the child runs on the parent's memory and thread-local
// storage, where a sanitizer's interceptor (TSan wraps close, dup2, write, sigaction...) would do
// its bookkeeping on the parent's behalf, and glibc's set*id wrappers would change every thread
// of the daemon.
__attribute__((no_sanitize("address", "thread", "undefined"))) inline long sys(long nr, long a = 0, long b = 0, long c = 0,
                                                                             long d = 0, long e = 0) {
  return syscall(nr, a, b, c, d, e);
}

// Puts `from` at `to` without close-on-exec (dup3 refuses from == to: then only the flag).
__attribute__((no_sanitize("address", "thread", "undefined"))) void place_fd(int from, int to) {
  if (from == to) {
    sys(SYS_fcntl, to, F_SETFD, 0);
  } else {
    sys(SYS_dup3, from, to, 0);
  }
}

// The kernel's struct sigaction (no sa_restorer needed for SIG_DFL).
struct KernelSigaction {
  void (*handler)(int);
  unsigned long flags;
  void (*restorer)();
  unsigned long mask;
};

[[noreturn]] __attribute__((no_sanitize("address", "thread", "undefined"))) void child_exit(int code) {
  for (;;) sys(SYS_exit_group, code);
}

__attribute__((no_sanitize("address", "thread", "undefined"))) void child_say(const char* text, std::size_t size) {
  (void)sys(SYS_write, 2, reinterpret_cast<long>(text), static_cast<long>(size));
}

// (Not instrumented: a sanitizer's bookkeeping here would be done on the parent's behalf.)
__attribute__((no_sanitize("address", "thread", "undefined"))) int child_main(void* arg) {
  const ChildPlan& c = *static_cast<const ChildPlan*>(arg);
  const SpawnOptions& o = *c.o;
  // Inside another instance (exec): its mount namespace, so its resolver and mounts. (Before
  // the descriptors go: the namespace is named by one.)
  if (o.join_mount_ns_of >= 0 && sys(SYS_setns, o.join_mount_ns_of, CLONE_NEWNS) != 0) child_exit(126);
  // Drop every descriptor inherited from the daemon, first thing: not all are close-on-exec
  // (Boost.Asio's are not), and while a copy lives the kernel keeps the daemon's epoll
  // registration of it alive, so a descriptor the daemon closes and reuses would receive this
  // stale registration's events. The thread that cloned is suspended until this child has
  // exec'd (CLONE_VFORK), but the daemon's other threads are not. Keep only stdio and the gate
  // (as fd 3).
  place_fd(c.null_fd, 0);
  place_fd(c.log_fd, 1);
  place_fd(c.log_fd, 2);
  // The gate to 3 with dup3, which needs no free descriptor (the daemon may be at its open files
  // limit, and so this copy of its table); whatever else sits at 3 is not needed any more.
  if (c.gate_fd >= 0) {
    place_fd(c.gate_fd, 3);
    sys(SYS_close_range, 4, ~0U, 0);
  } else {
    sys(SYS_close_range, 3, ~0U, 0);
  }
  // Signals: the parent blocked them all around clone; handlers it installed (they would run on
  // its memory) go back to the default, what it ignores (SIGPIPE) too. (Its own table: no
  // CLONE_SIGHAND.) Signals the kernel refuses (SIGKILL, SIGSTOP, libc's own) are skipped.
  for (int sig = 1; sig < NSIG; ++sig) {
    KernelSigaction dfl{SIG_DFL, 0, nullptr, 0};
    (void)sys(SYS_rt_sigaction, sig, reinterpret_cast<long>(&dfl), 0, sizeof dfl.mask);
  }
  sys(SYS_setpgid, 0, 0);
  if (o.die_with_parent) {
    sys(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL);
    if (sys(SYS_getppid) != c.parent) child_exit(127);
  }
  if (!o.resolv_conf.empty()) {
    // Its own view of /etc/resolv.conf; mounts made later by the daemon still propagate in.
    const bool ok = sys(SYS_unshare, CLONE_NEWNS) == 0 &&
                    sys(SYS_mount, 0, reinterpret_cast<long>("/"), 0, MS_REC | MS_SLAVE, 0) == 0 &&
                    sys(SYS_mount, reinterpret_cast<long>(o.resolv_conf.c_str()), reinterpret_cast<long>("/etc/resolv.conf"), 0,
                        MS_BIND, 0) == 0;
    if (!ok) child_say(kResolvMessage, sizeof kResolvMessage - 1);
  }
  if (o.identity) {
    // Group first: once the uid is not root, it cannot change.
    const gid_t gid = o.identity->gid;
    const uid_t uid = o.identity->uid;
    const bool ok = sys(SYS_setgroups, 1, reinterpret_cast<long>(&gid)) == 0 && sys(SYS_setresgid, gid, gid, gid) == 0 &&
                    sys(SYS_setresuid, uid, uid, uid) == 0 && sys(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0;
    if (!ok) {
      child_say(c.identity_message, c.identity_message_size);
      child_exit(126);
    }
  }
  sys(SYS_umask, 022);
  if (!o.cwd.empty() && sys(SYS_chdir, reinterpret_cast<long>(o.cwd.c_str())) != 0) child_exit(126);
  const unsigned long none = 0;
  sys(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(&none), 0, sizeof none);
  sys(SYS_execve, reinterpret_cast<long>(c.program), reinterpret_cast<long>(c.argv), reinterpret_cast<long>(c.envp));
  child_exit(127);
}

// The shell's part of the gate (SpawnOptions::gate): it waits for release_gate()'s line on fd 3
// and runs nothing unless it gets it.
constexpr char kGate[] = "read -r berth_gate <&3 && [ \"$berth_gate\" = go ] || exit 127; exec 3<&-; ";

}  // namespace

Result<Spawned> spawn(const SpawnOptions& o) {
  // Everything the child needs is prepared here: between clone and exec it shares this
  // process's memory and may only make system calls.
  std::string script = (o.gate ? kGate : "") + std::string("exec ") + o.command;
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : o.env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<const char*> argv;
  std::string program = "/bin/sh";
  if (o.argv.empty()) {
    argv = {"/bin/sh", "-c", script.c_str()};
  } else {
    program = o.argv.front();
    if (program.find('/') == std::string::npos) {
      // Search the child's PATH here, not in the child.
      std::string path = o.env.count("PATH") ? o.env.at("PATH") : "/usr/local/bin:/usr/bin:/bin";
      for (std::size_t i = 0; i <= path.size();) {
        auto j = path.find(':', i);
        if (j == std::string::npos) j = path.size();
        std::string candidate = (j > i ? path.substr(i, j - i) : std::string(".")) + "/" + o.argv.front();
        if (access(candidate.c_str(), X_OK) == 0) {
          program = candidate;
          break;
        }
        i = j + 1;
      }
      if (program.find('/') == std::string::npos)
        return not_found(fmt::format("{}: command not found in PATH {}", program, path));
    }
    if (o.gate) {
      // sh -c 'GATE exec "$@"' PROGRAM ARGS...: the gate in the shell, then the argv as given.
      static const std::string gated = std::string(kGate) + "exec \"$@\"";
      argv = {"/bin/sh", "-c", gated.c_str(), program.c_str()};
      for (std::size_t i = 1; i < o.argv.size(); ++i) argv.push_back(o.argv[i].c_str());
      program = "/bin/sh";
    } else {
      for (const auto& a : o.argv) argv.push_back(a.c_str());
    }
  }
  argv.push_back(nullptr);
  const std::string identity_message =
      o.identity ? fmt::format("berth: could not switch to uid {} gid {}; not started\n", o.identity->uid, o.identity->gid) : "";

  int out_pipe[2] = {-1, -1};
  int log_fd = -1;
  if (o.capture_output) {
    if (pipe2(out_pipe, O_CLOEXEC) != 0) return spawn_error("pipe", errno);
    log_fd = out_pipe[1];
  } else {
    log_fd = open(o.log_path.empty() ? "/dev/null" : o.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
      const int err = errno;
      return err == EMFILE || err == ENFILE ? spawn_error("open", err)
                                            : unavailable(fmt::format("cannot open log file {}: {}", o.log_path, std::strerror(err)));
    }
  }
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) {
    const int err = errno;
    close(log_fd);
    if (out_pipe[0] >= 0) close(out_pipe[0]);
    return spawn_error("open", err);
  }
  int gate[2] = {-1, -1};
  auto close_all = [&] {
    for (int fd : {log_fd, null_fd, out_pipe[0], gate[0], gate[1]})
      if (fd >= 0) close(fd);
  };
  if (o.gate && pipe2(gate, O_CLOEXEC) != 0) {
    int err = errno;
    close_all();
    return spawn_error("pipe", err);
  }
  // The child's stack while it shares our memory: one per spawning thread, kept (the child is
  // done with it once it has exec'd, before clone returns here; unmapping it each time would
  // cost a TLB shootdown on every core running one of our threads).
  constexpr std::size_t kStack = 256 << 10;
  thread_local std::unique_ptr<char[]> stack;
  if (!stack) stack.reset(new (std::nothrow) char[kStack]);
  if (!stack) {
    close_all();
    return spawn_error("fork", ENOMEM);
  }
  ChildPlan plan;
  plan.o = &o;
  plan.parent = getpid();
  plan.program = program.c_str();
  plan.argv = argv.data();
  plan.envp = envp.data();
  plan.null_fd = null_fd;
  plan.log_fd = log_fd;
  plan.gate_fd = gate[0];
  plan.identity_message = identity_message.data();
  plan.identity_message_size = identity_message.size();
  // CLONE_VM | CLONE_VFORK, as posix_spawn: no copy of the daemon's page tables and no
  // copy-on-write faults afterwards (with fork, every child waiting at its gate made each write
  // of the daemon to a shared page a fault, a copy and a TLB shootdown: two thirds of the loop's
  // time while thousands of instances started). This thread waits until the child has exec'd
  // (or exited); signals stay blocked meanwhile so no handler of ours runs in the child.
  // A child that changes its uid resets the dumpable flag of the memory it shares, ours: saved
  // here and set back after (as Go's and systemd's spawns do), or the daemon would lose its core
  // dumps and its /proc files' ownership for good.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  // The flag is the process's: two threads spawning as other users at once would each save
  // what the other's child had just cleared.
  static std::mutex dumpable_mu;
  std::unique_lock<std::mutex> dumpable_lock(dumpable_mu, std::defer_lock);
  if (o.identity) dumpable_lock.lock();
  const int dumpable = o.identity ? prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) : -1;
  const pid_t pid = clone(child_main, stack.get() + kStack, CLONE_VM | CLONE_VFORK | SIGCHLD, &plan);
  const int clone_err = errno;
  if (dumpable >= 0) prctl(PR_SET_DUMPABLE, dumpable, 0, 0, 0);
  if (dumpable_lock.owns_lock()) dumpable_lock.unlock();
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) {
    close_all();
    return spawn_error("fork", clone_err);
  }
  setpgid(pid, pid);  // (the child did; after its exec this may fail, harmlessly)
  close(log_fd);
  close(null_fd);
  Spawned s;
  s.pid = pid;
  s.output_fd = out_pipe[0];
  if (o.gate) {
    close(gate[0]);
    s.gate_fd = gate[1];
  }
  s.pidfd = open_pidfd(pid);
  s.start_ticks = process_start_ticks(pid).value_or(0);
  if (s.pidfd < 0) {
    int err = errno;
    kill(-pid, SIGKILL);
    if (s.gate_fd >= 0) close(s.gate_fd);
    if (s.output_fd >= 0) close(s.output_fd);
    waitpid(pid, nullptr, 0);
    return spawn_error("pidfd_open", err);
  }
  return s;
}

Status release_gate(Spawned& s) {
  if (s.gate_fd < 0) return {};
  static constexpr char kGo[] = "go\n";  // the line kGate waits for
  ssize_t n;
  do { n = write(s.gate_fd, kGo, sizeof kGo - 1); } while (n < 0 && errno == EINTR);
  const int err = errno;
  close(s.gate_fd);
  s.gate_fd = -1;
  if (n != static_cast<ssize_t>(sizeof kGo - 1)) return unavailable(fmt::format("releasing child {}: {}", s.pid, std::strerror(err)));
  return {};
}

Status run_logged(const std::string& command, const std::string& log, const std::string& what) {
  {
    std::ofstream(log, std::ios::app) << "$ " << command << "\n";
  }
  SpawnOptions o;
  o.command = command;
  o.env = base_environment();
  o.log_path = log;
  auto s = spawn(o);
  if (!s.ok()) return s.error().wrap(what);
  int status = 0;
  while (::waitpid(s->pid, &status, 0) < 0 && errno == EINTR) {
  }
  ::close(s->pidfd);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {};
  // The last lines of the log say why.
  std::ifstream in(log);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    lines.push_back(line);
    if (lines.size() > 6) lines.erase(lines.begin());
  }
  std::string tail;
  for (const auto& l : lines) tail += "\n  " + l;
  return unavailable(fmt::format("{} {} (log {}):{}", what, describe_wait_status(status), log, tail));
}

}  // namespace berth
