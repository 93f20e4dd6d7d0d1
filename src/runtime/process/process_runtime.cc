#include "runtime/process/process_runtime.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/posix/stream_descriptor.hpp>

#include "base/subprocess.h"

namespace berth::runtime {

struct ProcessRuntime::Watched {
  Handle handle;
  bool child = false;
  std::unique_ptr<boost::asio::posix::stream_descriptor> pidfd;
  ExitCallback on_exit;
  Executor::TimerId kill_timer = 0;
};

ProcessRuntime::ProcessRuntime(boost::asio::io_context& io, Executor& executor) : io_(io), executor_(executor) {}

ProcessRuntime::~ProcessRuntime() {
  for (auto& [pid, w] : watched_) {
    if (w->kill_timer) executor_.cancel(w->kill_timer);
    w->on_exit = nullptr;
  }
}

void ProcessRuntime::watch(const Handle& handle, int pidfd, bool child, ExitCallback on_exit) {
  auto w = std::make_shared<Watched>();
  w->handle = handle;
  w->child = child;
  w->pidfd = std::make_unique<boost::asio::posix::stream_descriptor>(io_, pidfd);
  w->on_exit = std::move(on_exit);
  watched_[handle.pid] = w;
  arm(w);
}

void ProcessRuntime::arm(const std::shared_ptr<Watched>& w) {
  w->pidfd->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                       [this, w](const boost::system::error_code& ec) {
                         if (ec == boost::asio::error::operation_aborted) return;
                         Exit exit;
                         if (w->child) {
                           if (auto status = reap(w->handle.pid)) {
                             exit.status_known = true;
                             exit.wait_status = *status;
                             exit.description = describe_wait_status(*status);
                           }
                         }
                         // A wake-up is not proof of exit (readiness can be reported for a
                         // reused descriptor): while the process still runs, keep waiting.
                         if (!exit.status_known && process_start_ticks(w->handle.pid) == w->handle.start_ticks &&
                             w->handle.start_ticks != 0)
                           return arm(w);
                         if (!exit.status_known) exit.description = "ended";
                         // Whatever the instance left behind in its group goes with it.
                         ::kill(-w->handle.pgid, SIGKILL);
                         if (w->kill_timer) executor_.cancel(w->kill_timer);
                         watched_.erase(w->handle.pid);
                         if (w->on_exit) w->on_exit(exit);
                       });
}

Result<Handle> ProcessRuntime::start(const InstanceSpec& spec, const std::function<Status(const Handle&)>& record,
                                     ExitCallback on_exit) {
  SpawnOptions o;
  o.command = spec.command;
  o.env = base_environment();
  for (const auto& [k, v] : spec.env_vars) o.env[k] = v;
  o.log_path = spec.log_path;
  o.gate = true;
  auto spawned = spawn(o);
  if (!spawned.ok()) return spawned.error();
  Handle h{spawned->pid, spawned->pid, spawned->start_ticks};
  if (auto st = record(h); !st.ok()) {
    ::kill(-h.pgid, SIGKILL);
    close(spawned->gate_fd);
    close(spawned->pidfd);
    waitpid(h.pid, nullptr, 0);
    return st.error();
  }
  if (auto st = release_gate(*spawned); !st.ok()) {
    // The child will see EOF and exit; its exit is reported as usual.
  }
  watch(h, spawned->pidfd, true, std::move(on_exit));
  return h;
}

bool ProcessRuntime::adopt(const Handle& handle, ExitCallback on_exit) {
  if (handle.pid <= 0) return false;
  int fd = open_pidfd(handle.pid);
  if (fd < 0) return false;
  // Check identity after opening the pidfd: if the pid is still the process we started, the
  // pidfd refers to it and cannot be confused by later pid reuse.
  auto ticks = process_start_ticks(handle.pid);
  if (!ticks || *ticks != handle.start_ticks) {
    close(fd);
    return false;
  }
  watch(handle, fd, false, std::move(on_exit));
  return true;
}

void ProcessRuntime::stop(const Handle& handle, Millis grace_ms) {
  auto it = watched_.find(handle.pid);
  if (it == watched_.end()) return;
  auto w = it->second;
  ::kill(-handle.pgid, SIGTERM);
  if (w->kill_timer) executor_.cancel(w->kill_timer);
  w->kill_timer = executor_.after(grace_ms, [pgid = handle.pgid, w] {
    w->kill_timer = 0;
    ::kill(-pgid, SIGKILL);
  });
}

void ProcessRuntime::kill_now(const Handle& handle) { ::kill(-handle.pgid, SIGKILL); }

}  // namespace berth::runtime
