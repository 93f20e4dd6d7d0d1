#include "runtime/process/process_runtime.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include "base/files.h"
#include "base/subprocess.h"
#include "base/text.h"
#include "runtime/process/host_address.h"

namespace berth::runtime {
namespace asio = boost::asio;

namespace {

struct ProcessRef {
  pid_t pid = 0;
  pid_t pgid = 0;
  unsigned long long start_ticks = 0;
};

std::optional<ProcessRef> parse_ref(const Ref& ref) {
  ProcessRef r;
  char tail = 0;
  if (std::sscanf(ref.c_str(), "%d:%d:%llu%c", &r.pid, &r.pgid, &r.start_ticks, &tail) != 3 || r.pid <= 0 || r.pgid <= 0)
    return std::nullopt;
  return r;
}

bool is_loopback(const std::string& ip) { return ip.rfind("127.", 0) == 0; }

}  // namespace

struct ProcessRuntime::Watched {
  Ref ref;
  InstanceId id;
  ProcessRef proc;
  bool child = false;  // ours to reap (started by this daemon), not adopted
  bool own_mount_ns = false;
  std::map<std::string, std::string> env;  // for exec: the instance's environment
  std::optional<Identity> identity;        // for exec: who the instance runs as (unset: the daemon's user)
  std::unique_ptr<asio::posix::stream_descriptor> pidfd;
  Executor::TimerId kill_timer = 0;
};

// One command run inside an instance; finished once its process has exited.
struct ProcessRuntime::ExecOp : std::enable_shared_from_this<ExecOp> {
  ExecOp(asio::io_context& io) : timer(io) {}
  pid_t pid = -1;
  std::unique_ptr<asio::posix::stream_descriptor> pidfd, output;
  asio::steady_timer timer;
  std::array<char, 4096> buf{};
  ExecResult result;
  std::size_t max = 0;
  std::function<void(Result<ExecResult>)> done;
  bool reading = false;     // an async read is in flight
  bool has_exited = false;  // the command was reaped
  std::optional<int> status;

  void take(const char* data, std::size_t n) {
    std::size_t room = max > result.output.size() ? max - result.output.size() : 0;
    if (n > room) result.truncated = true;
    result.output.append(data, std::min(n, room));
  }
  void read_more() {
    reading = true;
    output->async_read_some(asio::buffer(buf), [self = shared_from_this()](const boost::system::error_code& ec, std::size_t n) {
      self->reading = false;
      if (n) self->take(self->buf.data(), n);
      if (self->has_exited) return self->finish();  // (cancelled by exited(), or data it had read)
      if (!ec) self->read_more();
    });
  }
  void exited() {
    status = reap(pid);
    pid = -1;
    timer.cancel();
    has_exited = true;
    // What the command wrote before it exited is in the pipe: take it without waiting. A read
    // already completed but not yet handled holds earlier output: finish() waits for it.
    if (output) {
      int fd = output->native_handle();
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
      if (!reading) {
        ssize_t n;
        while ((n = ::read(fd, buf.data(), buf.size())) > 0) take(buf.data(), static_cast<std::size_t>(n));
      }
    }
    if (reading) {
      boost::system::error_code ignored;
      output->cancel(ignored);  // its handler runs next, with what it read, and finishes
      return;
    }
    finish();
  }
  void finish() {
    if (output && output->is_open()) {
      // Anything left after a read that was in flight.
      ssize_t n;
      while ((n = ::read(output->native_handle(), buf.data(), buf.size())) > 0) take(buf.data(), static_cast<std::size_t>(n));
      boost::system::error_code ignored;
      output->close(ignored);
    }
    if (status) result.exit = exit_from_wait_status(*status);
    else result.exit.description = "ended";
    if (auto cb = std::move(done)) cb(std::move(result));
  }
  void cancel() {
    done = nullptr;
    if (pid > 0) ::kill(-pid, SIGKILL);  // the pidfd handler still reaps it
  }
};

ProcessRuntime::ProcessRuntime(asio::io_context& io, Executor& executor, std::string run_dir, int max_starting)
    : io_(io), executor_(executor), run_dir_(std::move(run_dir)), root_(geteuid() == 0), max_starting_(max_starting),
      spawner_("spawner") {}

ProcessRuntime::~ProcessRuntime() {
  *alive_ = false;  // (spawns still posted back find it so and stop their children)
  {
    std::lock_guard<std::mutex> lock(launches_mu_);
    launches_.clear();  // not cloned yet: none will be
  }
  // A pending wait on a pidfd holds its Watched and this runtime: closing the descriptor
  // completes it as aborted, so it never runs on a destroyed runtime (as it did when a process
  // exited after a restarted daemon's runtime was replaced). The instances go on running.
  for (auto& [ref, w] : watched_) {
    if (w->kill_timer) executor_.cancel(w->kill_timer);
    boost::system::error_code ignored;
    if (w->pidfd) w->pidfd->close(ignored);
  }
}

Capabilities ProcessRuntime::capabilities() const {
  Capabilities c;
  c.max_starting = max_starting_;
  c.private_resolver = root_;
  if (!root_)
    c.resolver_note = "berth is not running as root, so process instances cannot be given their own /etc/resolv.conf: "
                      "short names resolve only through BERTH_DNS (or use BERTH_DEP_<APP>_<PORT>)";
  return c;
}

void ProcessRuntime::prepare_network(const Network& network, std::function<void(Status)> done) {
  BERTH_ASSERT_LOOP(executor_);
  Status st;
  if (!network.gateway.empty() && !is_loopback(network.gateway) && !process::address_is_local(network.gateway)) {
    st = root_ ? process::add_to_loopback(network.gateway)
               : unavailable(fmt::format("the pool's gateway {} is not an address of this host", network.gateway));
  }
  executor_.post([done = std::move(done), st] { done(st); });
}

void ProcessRuntime::fail(const InstanceSpec& spec, const Error& error) {
  executor_.post([this, id = spec.id, launch = spec.launch, error] {
    if (listener_) listener_->on_failed(id, launch, "", error);
  });
}

Result<std::string> ProcessRuntime::resolver_file(const Resolver& r) {
  const std::string text = fmt::format("# written by berth for the instances of {}\nnameserver {}\nsearch {}\noptions ndots:1\n",
                                       r.search, r.server, r.search);
  const std::string path = fmt::format("{}/resolv/{}.conf", run_dir_, r.search);
  auto it = resolver_files_.find(r.search);
  if (it == resolver_files_.end() || it->second != text) {
    BERTH_TRY(write_file_atomically(path, text, 0644));  // read by instances of any user
    resolver_files_[r.search] = text;
  }
  return path;
}

void ProcessRuntime::launch(const InstanceSpec& spec) {
  BERTH_ASSERT_LOOP(executor_);
  const auto* work = std::get_if<ProcessWorkload>(&spec.workload);
  if (!work) return fail(spec, invalid("the process runtime runs commands, not images"));
  if (!spec.ip.empty() && !is_loopback(spec.ip) && !process::address_is_local(spec.ip)) {
    if (!root_)
      return fail(spec, unavailable(fmt::format("address {} is not an address of this host and berth is not root, so "
                                                "it cannot add it; use a loopback pool (127.x) for processes",
                                                spec.ip)));
    if (auto st = process::add_to_loopback(spec.ip); !st.ok()) return fail(spec, st.error());
  }
  SpawnOptions o;
  o.command = work->command;
  o.env = base_environment();
  for (const auto& [k, v] : spec.env) o.env[k] = v;
  o.log_path = spec.log_path;
  o.gate = true;
  if (root_) o.identity = spec.identity;
  if (root_ && !spec.resolver.server.empty()) {
    auto file = resolver_file(spec.resolver);
    if (!file.ok()) return fail(spec, file.error());
    o.resolv_conf = *file;
  }
  // The clone waits for the child's exec, a millisecond or more on a busy host: on the spawner
  // thread, so the loop goes on deciding meanwhile. Launches are spawned in the order made.
  bool post;
  {
    std::lock_guard<std::mutex> lock(launches_mu_);
    launches_.push_back({std::move(o), spec.id, spec.launch, spec.ip, Spawned{}, {}});
    post = !drain_posted_;
    drain_posted_ = true;
  }
  if (post) spawner_.post([this] { spawn_launches(); });
}

void ProcessRuntime::spawn_launches() {
  // Results go back to the loop a batch at a time: a pass's launches are then recorded in one
  // transaction (on_created batches what arrives together), not one each. A batch is cut short
  // after kBatch spawns so that the first children do not wait at their gates for the last.
  constexpr std::size_t kBatch = 32;
  for (;;) {
    std::vector<Launch> batch;
    {
      std::lock_guard<std::mutex> lock(launches_mu_);
      if (launches_.empty()) {
        drain_posted_ = false;
        return;
      }
      const std::size_t n = std::min(kBatch, launches_.size());
      batch.assign(std::make_move_iterator(launches_.begin()), std::make_move_iterator(launches_.begin() + static_cast<std::ptrdiff_t>(n)));
      launches_.erase(launches_.begin(), launches_.begin() + static_cast<std::ptrdiff_t>(n));
    }
    for (auto& l : batch) {
      // An instance holds its pidfd for as long as it runs: the last descriptors stay for the
      // API and the probes, or a full table would make every health check of every instance
      // fail and lock out whoever comes to look.
      if (auto room = descriptor_headroom(); !room.ok()) {
        l.error = room.error();
        continue;
      }
      auto r = spawn(l.options);
      if (r.ok()) l.spawned = *r;
      else l.error = r.error();
    }
    executor_.post([this, alive = alive_, batch = std::move(batch)]() mutable {
      for (auto& l : batch) {
        if (!*alive) {
          // This runtime is gone (the daemon stops): the child never passes its gate.
          if (!l.error) abandon(l.spawned);
        } else if (l.error) {
          if (listener_) listener_->on_failed(l.id, l.launch, "", *l.error);
        } else {
          started(std::move(l.options), l.id, l.launch, l.ip, l.spawned);
        }
      }
    });
  }
}

void ProcessRuntime::abandon(Spawned& s) {
  ::kill(-s.pid, SIGKILL);
  for (int fd : {s.gate_fd, s.output_fd, s.pidfd})
    if (fd >= 0) close(fd);
  waitpid(s.pid, nullptr, 0);
}

void ProcessRuntime::started(SpawnOptions o, const InstanceId& id, std::uint64_t launch, const std::string& ip,
                             const Spawned& spawned) {
  BERTH_ASSERT_LOOP(executor_);
  auto w = std::make_shared<Watched>();
  w->proc = {spawned.pid, spawned.pid, spawned.start_ticks};
  w->ref = fmt::format("{}:{}:{}", w->proc.pid, w->proc.pgid, w->proc.start_ticks);
  w->id = id;
  w->child = true;
  w->own_mount_ns = !o.resolv_conf.empty();
  w->env = std::move(o.env);
  w->identity = o.identity;
  // The child waits at its gate until the loop has recorded it.
  auto recorded = [this, w, s = spawned, launch, ip](Status st) mutable {
    if (!st.ok()) {
      abandon(s);
      if (listener_) listener_->on_failed(w->id, launch, w->ref, st.error());
      return;
    }
    // A failed release makes the child see EOF and exit; that exit is reported as usual.
    (void)release_gate(s);
    watch(w, s.pidfd);
    if (listener_) listener_->on_started(w->id, launch, w->ref, {ip, fmt::format("pid {}", w->proc.pid), w->proc.pid});
  };
  if (!listener_) return recorded(internal("no listener"));
  listener_->on_created(w->id, launch, w->ref, std::move(recorded));
}

void ProcessRuntime::watch(std::shared_ptr<Watched> w, int pidfd) {
  w->pidfd = std::make_unique<asio::posix::stream_descriptor>(io_, pidfd);
  watched_[w->ref] = w;
  arm(w);
}

void ProcessRuntime::arm(const std::shared_ptr<Watched>& w) {
  w->pidfd->async_wait(asio::posix::stream_descriptor::wait_read, [this, w](const boost::system::error_code& ec) {
    if (ec == asio::error::operation_aborted) return;
    Exit exit;
    if (w->child)
      if (auto status = reap(w->proc.pid)) exit = exit_from_wait_status(*status);
    // A wake-up is not proof of exit (readiness can be reported for a reused descriptor):
    // while the process still runs, keep waiting.
    if (!exit.status_known && w->proc.start_ticks != 0 && process_start_ticks(w->proc.pid) == w->proc.start_ticks)
      return arm(w);
    if (!exit.status_known) exit.description = "ended";
    // Whatever the instance left behind in its group goes with it.
    ::kill(-w->proc.pgid, SIGKILL);
    if (w->kill_timer) executor_.cancel(w->kill_timer);
    watched_.erase(w->ref);
    if (listener_) listener_->on_exited(w->id, w->ref, exit);
  });
}

void ProcessRuntime::recover(const std::vector<Record>& records, std::function<void(std::vector<Recovered>)> done) {
  BERTH_ASSERT_LOOP(executor_);
  std::vector<Recovered> out;
  for (const auto& r : records) {
    Recovered rec{r.id, r.ref, false, {}, {}};
    rec.exit.description = "gone while the daemon was down";
    auto p = parse_ref(r.ref);
    int fd = p ? open_pidfd(p->pid) : -1;
    // Check identity after opening the pidfd: if the pid is still the process we started, the
    // pidfd refers to it and cannot be confused by later pid reuse.
    if (fd >= 0 && process_start_ticks(p->pid) == p->start_ticks) {
      auto w = std::make_shared<Watched>();
      w->ref = r.ref;
      w->id = r.id;
      w->proc = *p;
      w->own_mount_ns = has_own_mount_namespace(p->pid);
      w->env = process_environment(p->pid);
      if (auto who = process_identity(p->pid); who && who->uid != 0) w->identity = who;
      watch(w, fd);
      rec.alive = true;
      rec.observed = {"", fmt::format("pid {}", p->pid), p->pid};
    } else if (fd >= 0) {
      close(fd);
    }
    out.push_back(std::move(rec));
  }
  executor_.post([done = std::move(done), out = std::move(out)]() mutable { done(std::move(out)); });
}

void ProcessRuntime::stop(const Ref& ref, Millis grace_ms) {
  BERTH_ASSERT_LOOP(executor_);
  auto it = watched_.find(ref);
  if (it == watched_.end()) return;
  auto w = it->second;
  ::kill(-w->proc.pgid, SIGTERM);
  if (w->kill_timer) executor_.cancel(w->kill_timer);
  w->kill_timer = executor_.after(grace_ms, [pgid = w->proc.pgid, w] {
    w->kill_timer = 0;
    ::kill(-pgid, SIGKILL);
  });
}

std::unique_ptr<Cancel> ProcessRuntime::exec(const Ref& ref, const ExecRequest& req,
                                             std::function<void(Result<ExecResult>)> done) {
  BERTH_ASSERT_LOOP(executor_);
  auto reply_later = [this](std::function<void(Result<ExecResult>)> cb, Error e) {
    auto alive = std::make_shared<bool>(true);
    executor_.post([cb = std::move(cb), e = std::move(e), alive] {
      if (*alive) cb(e);
    });
    return cancel_with([alive] { *alive = false; });
  };
  auto it = watched_.find(ref);
  if (it == watched_.end()) return reply_later(std::move(done), not_found("the instance is not running"));
  const Watched& w = *it->second;
  SpawnOptions o;
  o.argv = req.argv;
  o.env = w.env;
  for (const auto& [k, v] : req.env) o.env[k] = v;
  o.capture_output = true;
  o.die_with_parent = true;
  o.identity = w.identity;
  if (w.own_mount_ns) {
    // The spawner's own copy of the descriptor naming the namespace: the loop closes the
    // instance's when it exits, and the number could be reused meanwhile.
    o.join_mount_ns_of = fcntl(w.pidfd->native_handle(), F_DUPFD_CLOEXEC, 0);
    if (o.join_mount_ns_of < 0) return reply_later(std::move(done), spawn_error("fcntl", errno));
  }
  auto op = std::make_shared<ExecOp>(io_);
  op->max = req.max_output;
  op->done = std::move(done);
  spawner_.post([this, alive = alive_, op, o = std::move(o), timeout = req.timeout_ms]() mutable {
    auto s = std::make_shared<Result<Spawned>>(spawn(o));
    if (o.join_mount_ns_of >= 0) close(o.join_mount_ns_of);
    // (op moves on: its timer is the loop's, and the last reference may not drop here.)
    executor_.post([this, alive, op = std::move(op), s, timeout] {
      if (s->ok() && (!*alive || !op->done)) return abandon(**s);  // gone, or cancelled meanwhile
      if (!*alive) return;
      if (!s->ok()) {
        if (auto cb = std::move(op->done)) cb(s->error());
        return;
      }
      op->pid = (*s)->pid;
      op->pidfd = std::make_unique<asio::posix::stream_descriptor>(io_, (*s)->pidfd);
      op->output = std::make_unique<asio::posix::stream_descriptor>(io_, (*s)->output_fd);
      op->read_more();
      // Always waited for to the end, also after a timeout or cancel, so the child is reaped.
      op->pidfd->async_wait(asio::posix::stream_descriptor::wait_read, [op](const boost::system::error_code&) { op->exited(); });
      op->timer.expires_after(std::chrono::milliseconds(timeout));
      op->timer.async_wait([op](const boost::system::error_code& ec) {
        if (ec || op->pid <= 0) return;
        op->result.timed_out = true;
        ::kill(-op->pid, SIGKILL);
      });
    });
  });
  return cancel_with([op] { op->cancel(); });
}

void ProcessRuntime::logs(const InstanceId&, const std::string& log_path, std::int64_t offset, std::size_t max,
                          std::function<void(Result<LogChunk>)> done) {
  executor_.post([done = std::move(done), chunk = read_log_file(log_path, offset, max)]() mutable { done(std::move(chunk)); });
}

}  // namespace berth::runtime
