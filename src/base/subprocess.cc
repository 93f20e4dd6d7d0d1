#include "base/subprocess.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <linux/close_range.h>
#include <sys/mount.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
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

namespace {

// Why `what` (pipe, open, fork, pidfd_open) failed with `err`: the daemon's own limit (a
// kExhausted error naming it and what to raise), or something else.
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

}  // namespace

Result<Spawned> spawn(const SpawnOptions& o) {
  // Everything the child needs is prepared before fork: after fork only async-signal-safe calls.
  std::string script = "exec " + o.command;
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
    for (const auto& a : o.argv) argv.push_back(a.c_str());
    program = o.argv.front();
    if (program.find('/') == std::string::npos) {
      // Search the child's PATH here: after fork only async-signal-safe calls are allowed.
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
  }
  argv.push_back(nullptr);
  static constexpr char kResolvMessage[] = "berth: could not give this instance its resolver (/etc/resolv.conf)\n";
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
  int sync[2] = {-1, -1};  // the child closes its end once it has dropped every inherited descriptor
  auto close_all = [&] {
    for (int fd : {log_fd, null_fd, out_pipe[0], gate[0], gate[1], sync[0], sync[1]})
      if (fd >= 0) close(fd);
  };
  if ((o.gate && pipe2(gate, O_CLOEXEC) != 0) || pipe2(sync, O_CLOEXEC) != 0) {
    int err = errno;
    close_all();
    return spawn_error("pipe", err);
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close_all();
    return spawn_error("fork", err);
  }
  if (pid == 0) {
    setpgid(0, 0);
    if (o.die_with_parent) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
    }
    // Inside another instance (exec): its mount namespace, so its resolver and mounts.
    if (o.join_mount_ns_of >= 0 && setns(o.join_mount_ns_of, CLONE_NEWNS) != 0) _exit(126);
    // First of all, drop every descriptor inherited from the daemon. Not all are close-on-exec
    // (Boost.Asio's are not), and while a copy lives here the kernel keeps the daemon's epoll
    // registration of it alive: a descriptor the daemon closes and reuses would then receive
    // this stale registration's events. Keep only stdio, the gate (as fd 3) and the sync pipe (fd 4).
    dup2(null_fd, 0);
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    // The gate to 3 and the sync pipe to 4 with dup2 only, which needs no free descriptor (the
    // daemon may be at its open files limit, and so this copy of its table): whatever else sits
    // at 3, 4 or 5 is not needed any more. The one order that needs a third place is a swap.
    int g = o.gate ? gate[0] : -1, y = sync[1];
    if (g == 4 && y == 3) y = dup2(y, 5);
    if (y == 3) y = dup2(y, 4);
    if (g >= 0 && g != 3) g = dup2(g, 3);
    if (y != 4) y = dup2(y, 4);
    (void)g;
    int gate_fd = o.gate ? 3 : -1;
    close_range(5, ~0U, 0);
    if (!o.gate) close(3);
    close(4);  // tells the parent: nothing of the daemon's is held here any more
    // Reset what the daemon changed for itself.
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, nullptr);
    signal(SIGPIPE, SIG_DFL);
    if (o.gate) {
      char go = 0;
      ssize_t n;
      do { n = read(gate_fd, &go, 1); } while (n < 0 && errno == EINTR);
      if (n != 1) _exit(127);  // the daemon died before recording us: run nothing
      close(gate_fd);
    }
    if (!o.resolv_conf.empty()) {
      // Its own view of /etc/resolv.conf; mounts made later by the daemon still propagate in.
      bool ok = unshare(CLONE_NEWNS) == 0 && mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) == 0 &&
                mount(o.resolv_conf.c_str(), "/etc/resolv.conf", nullptr, MS_BIND, nullptr) == 0;
      if (!ok) {
        ssize_t ignored = write(2, kResolvMessage, sizeof kResolvMessage - 1);
        (void)ignored;
      }
    }
    if (o.identity) {
      // Group first: once the uid is not root, the group can no longer be changed.
      gid_t gid = o.identity->gid;
      bool ok = setgroups(1, &gid) == 0 && setresgid(gid, gid, gid) == 0 &&
                setresuid(o.identity->uid, o.identity->uid, o.identity->uid) == 0 &&
                prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0;
      if (!ok) {
        ssize_t ignored = write(2, identity_message.data(), identity_message.size());
        (void)ignored;
        _exit(126);
      }
    }
    umask(022);
    if (!o.cwd.empty() && chdir(o.cwd.c_str()) != 0) _exit(126);
    execve(program.c_str(), const_cast<char* const*>(argv.data()), envp.data());
    _exit(127);
  }
  // Wait until the child has dropped its copies of our descriptors (EOF on the sync pipe).
  close(sync[1]);
  char ignored;
  while (read(sync[0], &ignored, 1) < 0 && errno == EINTR) {
  }
  close(sync[0]);
  setpgid(pid, pid);  // also from the parent: no race with a kill(-pgid) right after
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
  char go = 1;
  ssize_t n;
  do { n = write(s.gate_fd, &go, 1); } while (n < 0 && errno == EINTR);
  close(s.gate_fd);
  s.gate_fd = -1;
  if (n != 1) return unavailable(fmt::format("releasing child {}: {}", s.pid, std::strerror(errno)));
  return {};
}

}  // namespace berth
