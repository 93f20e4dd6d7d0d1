// bench/direct_launcher.h — the peer of berth's bring-up benchmarks: the same leveled apps
// (bench_util.h's leveled_apps, in `envs` environments) started by a plain loop with no
// control plane — no gate, no store, no DNS, no status — so that a benchmark can say, in the
// same run, what this machine takes to start and health-check these processes at all.
//
// Each app is berth-demo-svc run through `sh -c "exec ..."` as berth runs a `command:`, on
// its own loopback address, started as soon as its two dependencies of the level below (in
// its environment) answered GET /healthcheck with a 200, and probed every `probe_every`
// until it does itself: blocking, one at a time, by the launching thread (a loopback
// connection is refused at once, a warming-up service answers 503 at once). Once ready, if
// `interval` is set, it is checked again every `interval` by a second thread that runs those
// checks concurrently (Boost.Beast, each with a 1 s timeout), as a platform keeps checking
// what runs, so that these checks cost the apps what berth's cost them. Header-only.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <fmt/format.h>

#include "bench_util.h"

namespace bench {

// What every check of the direct launcher sends, as berth's prober does.
inline constexpr std::string_view kHealthRequest = "GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

// One HTTP health check of IP:8080, as a probe would: true on a 200.
inline bool healthy(const std::string& ip) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  timeval tv{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(8080);
  inet_pton(AF_INET, ip.c_str(), &sa.sin_addr);
  bool ok = false;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
    char buf[64] = {};
    if (::write(fd, kHealthRequest.data(), kHealthRequest.size()) == static_cast<ssize_t>(kHealthRequest.size()) &&
        ::read(fd, buf, sizeof buf - 1) > 0)
      ok = std::string_view(buf).starts_with("HTTP/1.1 200");
  }
  ::close(fd);
  return ok;
}

// Checks every address given to add() every `interval`, concurrently, on a thread of its own
// until destroyed; counts the checks. Any thread may call add().
class ReadyChecker {
 public:
  explicit ReadyChecker(std::chrono::milliseconds interval)
      : interval_(interval), work_(io_.get_executor()), thread_([this] { io_.run(); }) {}
  ~ReadyChecker() {
    io_.stop();
    thread_.join();
  }
  void add(const std::string& ip) {
    boost::asio::post(io_, [this, ip] { std::make_shared<Check>(*this, ip)->wait(); });
  }
  long checks() const { return checks_; }

 private:
  struct Check : std::enable_shared_from_this<Check> {
    Check(ReadyChecker& c, const std::string& ip)
        : owner(c), timer(c.io_), stream(c.io_),
          to(boost::asio::ip::make_address(ip), 8080) {}
    void wait() {
      timer.expires_after(owner.interval_);
      timer.async_wait([self = shared_from_this()](boost::system::error_code ec) {
        if (!ec) self->probe();
      });
    }
    void probe() {
      ++owner.checks_;
      stream.expires_after(std::chrono::seconds(1));
      stream.async_connect(to, [self = shared_from_this()](boost::system::error_code ec) {
        if (ec) return self->done();
        boost::asio::async_write(self->stream, boost::asio::buffer(kHealthRequest),
                                 [self](boost::system::error_code wec, std::size_t) {
                                   if (wec) return self->done();
                                   self->stream.async_read_some(boost::asio::buffer(self->buf),
                                                                [self](boost::system::error_code, std::size_t) { self->done(); });
                                 });
      });
    }
    void done() {
      stream.close();
      wait();
    }
    ReadyChecker& owner;
    boost::asio::steady_timer timer;
    boost::beast::tcp_stream stream;
    boost::asio::ip::tcp::endpoint to;
    char buf[64];
  };

  std::chrono::milliseconds interval_;
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::atomic<long> checks_{0};
  std::thread thread_;
};

struct DirectFleet {
  std::string program;  // berth-demo-svc
  int envs = 1;
  int levels = 5;
  int per_level = 6;
  int warmup_ms = 0;
  std::chrono::milliseconds probe_every{10};
  // Once ready, an app is checked again every `interval` (as a platform keeps checking what
  // runs; 0: never), until every app is ready: by a ReadyChecker, on a thread of its own.
  std::chrono::milliseconds interval{0};
  std::chrono::seconds timeout{60};
  // The address of app (level, i) of environment `env`; distinct for every one.
  std::function<std::string(int env, int level, int i)> ip;
};

// Milliseconds from the first spawn to every app answering its health check, or -1 (a spawn
// failed or the timeout passed). Every process is stopped (SIGTERM) and reaped before it returns.
// `instances_cpu_s`, if given: the CPU seconds the apps themselves used until then (all together);
// `ready_checks`: how many checks of ready apps the second thread made.
inline double direct_up_ms(const DirectFleet& f, double* instances_cpu_s = nullptr, long* ready_checks = nullptr) {
  struct App {
    pid_t pid = -1;
    bool ready = false;
    Clock::time_point next_probe;
    std::string ip;
  };
  const int per_env = f.levels * f.per_level;
  std::vector<App> apps(static_cast<std::size_t>(f.envs * per_env));
  std::vector<std::string> env_strings{"DEMO_WARMUP_MS=" + std::to_string(f.warmup_ms), "PATH=/usr/bin:/bin"};
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t quiet;
  posix_spawn_file_actions_init(&quiet);
  posix_spawn_file_actions_addopen(&quiet, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&quiet, 2, "/dev/null", O_WRONLY, 0);
  auto at = [&](int e, int l, int i) -> App& { return apps[static_cast<std::size_t>(e * per_env + l * f.per_level + i)]; };
  auto deps_ready = [&](int e, int l, int i) {
    return l == 0 || (at(e, l - 1, i).ready && at(e, l - 1, (i + 1) % f.per_level).ready);
  };
  std::optional<ReadyChecker> checker;
  if (f.interval.count() > 0) checker.emplace(f.interval);
  const auto t0 = Clock::now();
  const auto deadline = t0 + f.timeout;
  int ready = 0;
  bool failed = false;
  while (ready < static_cast<int>(apps.size()) && !failed) {
    if (Clock::now() > deadline) failed = true;
    for (int e = 0; e < f.envs; ++e)
      for (int l = 0; l < f.levels; ++l)
        for (int i = 0; i < f.per_level; ++i) {
          App& a = at(e, l, i);
          if (a.pid < 0 && deps_ready(e, l, i)) {
            a.ip = f.ip(e, l, i);
            // Through the shell, as berth runs a `command:`.
            std::string script = fmt::format("exec {} --listen {}:8080", f.program, a.ip);
            std::vector<char*> argv{const_cast<char*>("/bin/sh"), const_cast<char*>("-c"), script.data(), nullptr};
            if (posix_spawn(&a.pid, "/bin/sh", &quiet, nullptr, argv.data(), envp.data()) != 0) {
              a.pid = -1;
              failed = true;
            }
            a.next_probe = Clock::now() + f.probe_every;
          } else if (a.pid > 0 && !a.ready && Clock::now() >= a.next_probe) {
            if (healthy(a.ip)) {
              a.ready = true;
              ++ready;
              if (checker) checker->add(a.ip);  // (its answers change nothing here: nothing in this peer fails)
            } else {
              a.next_probe = Clock::now() + f.probe_every;
            }
          }
        }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // (a scheduler's tick, not a wait for state)
  }
  const double took = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  if (checker && ready_checks) *ready_checks = checker->checks();
  checker.reset();
  posix_spawn_file_actions_destroy(&quiet);
  if (instances_cpu_s) {
    *instances_cpu_s = 0;
    for (auto& a : apps)
      if (a.pid > 0) *instances_cpu_s += cpu_seconds(a.pid);
  }
  for (auto& a : apps)
    if (a.pid > 0) ::kill(a.pid, SIGTERM);
  for (auto& a : apps)
    if (a.pid > 0) waitpid(a.pid, nullptr, 0);
  return failed ? -1 : took;
}

}  // namespace bench
