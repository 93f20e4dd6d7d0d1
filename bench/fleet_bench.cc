// berth_fleet_bench — berth at fleet scale with real processes (issue 10).
//
// `berth serve` with the process runtime (as root: each instance its own uid and resolver), and
// for each N (default 50, 100, 200 — each on a fresh daemon and data directory, everything
// taken down in between): N environments × 30 apps in 5 dependency levels (6 apps a level, each
// depending on two of the level below), every instance a berth-demo-svc (examples/shop) on its
// own loopback address, health-checked with GET /healthcheck every 2 s (timeout 1 s). Prints,
// per N:
//   - bring-up: from the first `up` request to every instance ready, and its cost per instance;
//     the TCP connections opened meanwhile (health checks, mostly) per instance; the CPU the
//     daemon and the instances used;
//   - false restarts during bring-up: nothing kills an instance here, so every restart an
//     instance's status counts (GET /v1/environments/NAME) is one the daemon caused; with the
//     `unhealthy`, `restarting`, `exited` and `start-failed` events that say why (read through
//     the loop for at most 2 minutes: a loop that is far behind answers them slowly);
//   - the same during --load-seconds (30) of --clients (50) concurrent API clients (half read one
//     environment, half a page of the summary list; each its own keep-alive connection, all on
//     one asynchronous client thread that does not parse the answers), with their latency;
//   - the daemon's CPU while idle (nothing asked of it; its probes run), in µs per instance per
//     second over --idle-seconds (10), and the instances' own meanwhile (answering checks); its
//     RSS (peak and now); the load average;
//   - the peer (--no-peer leaves it out, --peer-only runs it alone): the same processes brought
//     up right after by the direct launcher (direct_launcher.h: no control plane, the same
//     levels, warm-up and probe intervals: every 50 ms until ready, every 2 s once ready), its
//     connections and its instances' CPU, and berth's time over it;
// and at the end the ratio of the per-instance bring-up cost at the largest N to the smallest
// (target ≤ 1.3: linear), and the direct launcher's (how much of the growth is this machine's).
// Ratios are measured in the same run; nothing is asserted.
//
// Usage: berth_fleet_bench [--sizes 50,100,200] [--clients 50] [--load-seconds 30]
//        [--idle-seconds 10] [--warmup-ms 100] [--berth PATH] [--keep] [--no-peer | --peer-only]
// --berth: the daemon binary (default: this build's), to measure another build with the same
// bench. --keep: leave each size's data directory (daemon.log, instance logs) in /tmp.
// Needs root and a few thousand processes' worth of memory (about 2 MB each); uses
// 127.140.0.0/16 port 8080 and the pool's gateway 127.140.0.1:53. Every instance is stopped
// before the next size and at the end; the bench checks that no berth-demo-svc of its data
// directory is left (and kills any it finds, saying so).
#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include "bench_daemon.h"
#include "bench_util.h"
#include "direct_launcher.h"
#include "client/client.h"
#include "fleet_counts.h"

namespace fs = std::filesystem;
using bench::Clock;
using bench::cpu_seconds;
using bench::loadavg;
using bench::ms_since;
using bench::percentile;
using bench::status_kb;
using berth::client::Client;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

constexpr int kLevels = 5;
constexpr int kPerLevel = 6;
constexpr int kApps = kLevels * kPerLevel;

std::string catalog(int envs, int warmup_ms) {
  std::string y = fmt::format(
      "network: {{pool: 127.140.0.0/16}}\n"
      "defaults:\n"
      "  command: berth-demo-svc --listen ${{ip}}:${{port.http}}\n"
      "  ports: {{http: 8080}}\n"
      "  health: {{type: http, path: /healthcheck, interval: 2s, timeout: 1s, start_interval: 50ms, start_period: 60s}}\n"
      "  stop_grace: 5s\n"
      "  env: {{DEMO_WARMUP_MS: \"{}\"}}\n",
      warmup_ms);
  y += bench::leveled_apps(kLevels, kPerLevel);
  y += bench::numbered_environments(envs);
  return y;
}

// The berth-demo-svc processes started by the daemon of `data_dir` (BERTH_HOME in their
// environment), by pid: others on this host (another daemon's, a test's) are not counted.
std::vector<pid_t> our_instances(const std::string& data_dir) {
  std::vector<pid_t> out;
  const std::string home = "BERTH_HOME=" + data_dir;
  DIR* d = opendir("/proc");
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    const pid_t pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    std::ifstream comm(fmt::format("/proc/{}/comm", pid));
    std::string name;
    if (!std::getline(comm, name) || name != "berth-demo-svc") continue;
    std::ifstream env(fmt::format("/proc/{}/environ", pid), std::ios::binary);
    std::string var;
    while (std::getline(env, var, '\0'))
      if (var == home) {
        out.push_back(pid);
        break;
      }
  }
  closedir(d);
  return out;
}

// What the daemon did to instances nobody touched: the restarts their statuses count, and the
// events that say why.
struct Trouble {
  long restarts = 0;                         // sum over instances of status "restarts"
  int not_ready = 0;                         // instances not ready when read
  std::map<std::string, int> events;         // unhealthy, restarting, exited, start-failed, probe-error
  std::map<std::string, int> instances_hit;  // per type: distinct instances
  int envs_read = 0;                         // environments whose events were read (within the time allowed)
  std::string example;                       // one event's text, to say what happened
};

// Every environment's status (from the read model: fast), then its events after `after[env]`
// (moved on), through the loop: at most `budget_ms` for those, a busy loop answers slowly.
Trouble read_trouble(Client& c, int envs, std::map<std::string, std::int64_t>& after, double budget_ms) {
  Trouble t;
  for (int e = 0; e < envs; ++e)
    if (auto s = c.get(fmt::format("/v1/environments/env-{}", e)); s.ok())
      for (const auto& a : (*s)["apps"])
        for (const auto& i : a["instances"]) {
          t.restarts += i["restarts"].get<long>();
          if (i["state"] != "ready") ++t.not_ready;
        }
  const auto t0 = Clock::now();
  for (int e = 0; e < envs && ms_since(t0) < budget_ms; ++e) {
    const std::string env = fmt::format("env-{}", e);
    std::map<std::string, std::set<std::string>> hit;
    for (;;) {
      auto r = c.get(fmt::format("/v1/environments/{}/events?after={}&limit=10000", env, after[env]));
      if (!r.ok() || r->empty()) break;
      for (const auto& ev : *r) {
        after[env] = std::max(after[env], ev["id"].get<std::int64_t>());
        const std::string type = ev["type"];
        if (type != "unhealthy" && type != "restarting" && type != "exited" && type != "start-failed" &&
            type != "probe-error")
          continue;
        ++t.events[type];
        const std::string who = fmt::format("{}#{}", ev["app"].is_null() ? "-" : ev["app"].get<std::string>(),
                                            ev["ordinal"].is_null() ? -1 : ev["ordinal"].get<int>());
        hit[type].insert(who);
        if (t.example.empty() || (type == "unhealthy" && t.example.find(" unhealthy ") == std::string::npos))
          t.example = fmt::format("{} {} {}: {}", env, type, who, ev["message"].get<std::string>());
      }
    }
    for (const auto& [type, set] : hit) t.instances_hit[type] += static_cast<int>(set.size());
    ++t.envs_read;
  }
  return t;
}

std::string describe(const Trouble& t, long restarts_before, int envs) {
  std::string s = fmt::format("{} restarts", t.restarts - restarts_before);
  std::string ev;
  for (const auto& [type, n] : t.events)
    ev += fmt::format("{}{} {} on {} instance(s)", ev.empty() ? "" : "; ", n, type,
                      t.instances_hit.count(type) ? t.instances_hit.at(type) : 0);
  s += fmt::format(" ({}{})", ev.empty() ? "no unhealthy, restarting, exited or start-failed event" : ev,
                   t.envs_read < envs ? fmt::format("; events of {} of {} environments read", t.envs_read, envs) : "");
  return s;
}

// `clients` connections, each sending GET `path_of(conn, n)` again as soon as the last answer is
// in, for `seconds`; latencies in ms of the answers that were 200. All on one thread of
// asynchronous Beast connections that read the body without parsing it (as berth_scale_bench).
struct Hammer {
  struct Conn {
    explicit Conn(boost::asio::io_context& io) : stream(io) {}
    beast::tcp_stream stream;
    beast::flat_buffer buffer;
    http::request<http::empty_body> req;
    std::optional<http::response_parser<http::string_body>> res;
    Clock::time_point t0;
    int n = 0;
  };
  boost::asio::io_context io;
  std::vector<std::unique_ptr<Conn>> conns;
  std::vector<double> latencies[2];  // per kind of connection: even, odd
  std::function<std::string(int, int)> path_of;
  std::string host, token;
  Clock::time_point end;
  int failed = 0;

  void next(Conn& c, int id) {
    if (Clock::now() >= end) return;
    c.req = {http::verb::get, path_of(id, c.n++), 11};
    c.req.set(http::field::host, host);
    c.req.set(http::field::authorization, "Bearer " + token);
    c.req.keep_alive(true);
    c.res.emplace();
    c.res->body_limit(64u << 20);
    c.t0 = Clock::now();
    http::async_write(c.stream, c.req, [this, &c, id](beast::error_code ec, std::size_t) {
      if (ec) return (void)++failed;
      http::async_read(c.stream, c.buffer, *c.res, [this, &c, id](beast::error_code rec, std::size_t) {
        if (rec) return (void)++failed;
        if (c.res->get().result_int() == 200) latencies[id % 2].push_back(ms_since(c.t0));
        else ++failed;
        next(c, id);
      });
    });
  }
};

// The API under load: even connections read one environment, odd ones a summary page of 100.
std::array<std::vector<double>, 2> hammer(const std::string& addr, const std::string& token, int clients, int seconds,
                                          int envs, int* failed) {
  Hammer h;
  h.path_of = [envs](int id, int n) {
    const int k = (id * 7919 + n) % envs;
    if (id % 2 == 0) return fmt::format("/v1/environments/env-{}", k);
    const int from = (k / 100) * 100;
    return fmt::format("/v1/environments?summary=1&limit=100{}", from ? fmt::format("&after=env-{}", from - 1) : "");
  };
  h.host = addr;
  h.token = token;
  const auto colon = addr.rfind(':');
  const boost::asio::ip::tcp::endpoint ep(boost::asio::ip::make_address(addr.substr(0, colon)),
                                          static_cast<unsigned short>(std::stoi(addr.substr(colon + 1))));
  for (int t = 0; t < clients; ++t) {
    h.conns.push_back(std::make_unique<Hammer::Conn>(h.io));
    beast::error_code ec;
    h.conns.back()->stream.socket().connect(ep, ec);
    if (ec) ++h.failed;
  }
  h.end = Clock::now() + std::chrono::seconds(seconds);
  for (int t = 0; t < clients; ++t)
    if (h.conns[static_cast<std::size_t>(t)]->stream.socket().is_open()) h.next(*h.conns[static_cast<std::size_t>(t)], t);
  h.io.run();
  *failed = h.failed;
  return {std::move(h.latencies[0]), std::move(h.latencies[1])};
}

struct Figures {
  int envs = 0, instances = 0;
  bool complete = false;     // every instance became ready
  double bring_up_ms = 0;
  double per_instance_ms = 0;
  int bring_up_false = 0, load_false = 0;  // restarts counted
  std::string bring_up_said, load_said;
  double idle_us = 0;        // µs of daemon CPU per instance per second
  double instances_idle = 0; // the instances' CPU meanwhile, in cores
  double rss_peak_mb = 0, rss_mb = 0;
  std::string load_end;
  double teardown_s = 0;
  int left = 0;              // instances left after the teardown (killed by the bench)
  std::string dir;           // its data directory
  double instances_cpu_s = 0;  // the instances' own CPU until all were ready (their probes' cost, mostly)
  double direct_ms = 0;      // the direct launcher's bring-up of the same processes (0: not run)
  double direct_cpu_s = 0;   // its instances' CPU until then
  long checks = 0, direct_checks = 0;  // TCP connections opened meanwhile (health checks, mostly)
  double direct_per_instance_ms = 0;
};

struct Options {
  std::vector<int> sizes{50, 100, 200};
  int clients = 50, load_seconds = 30, idle_seconds = 10, warmup_ms = 100;
  std::string berth = BERTH_BIN;
  bool keep = false;
  bool peer = true;  // also bring the same processes up with the direct launcher
  bool peer_only = false;
};

// The peer, on the same machine right after berth: the same processes, levels, warm-up and
// probe intervals (berth's start_interval and interval here) without a control plane.
void run_peer(const Options& o, int envs, Figures& f) {
  bench::DirectFleet peer;
  peer.program = std::string(DEMO_SVC_DIR) + "/berth-demo-svc";
  peer.envs = envs;
  peer.levels = kLevels;
  peer.per_level = kPerLevel;
  peer.warmup_ms = o.warmup_ms;
  peer.probe_every = std::chrono::milliseconds(50);
  peer.interval = std::chrono::milliseconds(2000);
  peer.timeout = std::chrono::seconds(900);
  peer.ip = [](int e, int l, int i) {
    const int n = e * kApps + l * kPerLevel + i;
    return fmt::format("127.142.{}.{}", 1 + n / 250, 1 + n % 250);
  };
  const long opens = bench::tcp_counter("ActiveOpens");
  long ready_checks = 0;
  f.direct_ms = bench::direct_up_ms(peer, &f.direct_cpu_s, &ready_checks);
  f.direct_checks = bench::tcp_counter("ActiveOpens") - opens;
  f.direct_per_instance_ms = f.direct_ms / f.instances;
  if (f.direct_ms < 0) fmt::print("  direct launcher (peer)    did not bring them all up\n");
  else
    fmt::print("  direct launcher (peer)    {:9.1f} s  ({:.2f} ms per instance{}); {:.1f} connections per instance "
               "({:.1f} checks of ready ones); the instances' CPU {:.1f} s{}\n",
               f.direct_ms / 1000, f.direct_per_instance_ms,
               f.bring_up_ms > 0 ? fmt::format("; berth / direct {:.2f}x", f.bring_up_ms / f.direct_ms) : "",
               double(f.direct_checks) / f.instances, double(ready_checks) / f.instances, f.direct_cpu_s,
               f.instances_cpu_s > 0 ? fmt::format(" (berth's {:.2f}x)", f.instances_cpu_s / f.direct_cpu_s) : "");
}

// Every environment down, then wait until none of this daemon's instances is left (killing any
// still there after 3 minutes). Returns how many had to be killed.
int take_down(Client& c, int envs, const std::string& dir, double* took_s) {
  const auto t0 = Clock::now();
  for (int e = 0; e < envs; ++e) (void)c.post(fmt::format("/v1/environments/env-{}/down", e));
  std::size_t left = 0;
  while ((left = our_instances(dir).size()) > 0 && ms_since(t0) < 180'000)
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  *took_s = ms_since(t0) / 1000;
  int killed = 0;
  for (pid_t pid : our_instances(dir)) {
    ::kill(pid, SIGKILL);
    ++killed;
  }
  return killed;
}

Figures run_size(const Options& o, int envs) {
  Figures f;
  f.envs = envs;
  f.instances = envs * kApps;
  const std::string dir = (fs::temp_directory_path() / fmt::format("berth-fleet-{}-{}", getpid(), envs)).string();
  fs::create_directories(dir);
  f.dir = dir;
  fmt::print("\n{} environments × {} apps = {} processes (load average {})\n", envs, kApps, f.instances, loadavg());
  auto daemon = std::make_unique<BenchDaemon>(dir, std::vector<std::string>{}, o.berth);
  Client c(daemon->api, daemon->token);
  if (auto r = c.put("/v1/catalog", {{"filename", "fleet.yaml"}, {"text", catalog(envs, o.warmup_ms)}}); !r.ok()) {
    fmt::print(stderr, "apply failed: {}\n", r.error().message);
    return f;
  }

  // Bring-up.
  const long opens = bench::tcp_counter("ActiveOpens");
  const auto t0 = Clock::now();
  for (int e = 0; e < envs; ++e) (void)c.post(fmt::format("/v1/environments/env-{}/up", e));
  const double posted = ms_since(t0);
  bench::FleetCounts counts;
  double said = 0;
  const double limit_ms = std::max(300'000.0, f.instances * 100.0);
  std::string error;
  for (;;) {
    const bool read = bench::fleet_counts(c, &counts, &error);
    if (read && counts.envs_ready == envs) break;
    if (ms_since(t0) > limit_ms) break;
    if (ms_since(t0) - said >= 5'000) {
      said = ms_since(t0);
      fmt::print("  {:6.1f} s: {} of {} instances ready{}\n", said / 1000, counts.ready, f.instances,
                 read ? "" : " (the summary did not answer: " + error + ")");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  f.bring_up_ms = ms_since(t0);
  f.complete = counts.envs_ready == envs;
  f.per_instance_ms = f.bring_up_ms / f.instances;
  f.checks = bench::tcp_counter("ActiveOpens") - opens;
  const double daemon_cpu_s = cpu_seconds(daemon->pid);
  for (pid_t pid : our_instances(dir)) f.instances_cpu_s += cpu_seconds(pid);
  fmt::print("  bring-up{}             {:9.1f} s  (up requests {:.0f} ms; {:.2f} ms per instance); {:.1f} connections "
             "per instance; CPU: the daemon {:.1f} s, the instances {:.1f} s\n",
             f.complete ? "" : " INCOMPLETE", f.bring_up_ms / 1000, posted, f.per_instance_ms,
             double(f.checks) / f.instances, daemon_cpu_s, f.instances_cpu_s);

  std::map<std::string, std::int64_t> after;
  Trouble up = read_trouble(c, envs, after, 120'000);
  f.bring_up_false = static_cast<int>(up.restarts);
  f.bring_up_said = describe(up, 0, envs);
  fmt::print("  false restarts, bring-up  {}\n", f.bring_up_said);
  if (!up.example.empty()) fmt::print("    e.g. {}\n", up.example);

  // API load.
  if (f.complete) {
    int failed = 0;
    const auto lat = hammer(daemon->api, daemon->token, o.clients, o.load_seconds, envs, &failed);
    fmt::print("  API load, {} clients, {} s: GET one environment p50 {:.2f} ms p99 {:.2f} ms ({:.0f}/s); summary page "
               "p50 {:.2f} ms p99 {:.2f} ms ({:.0f}/s){}\n",
               o.clients, o.load_seconds, percentile(lat[0], 0.5), percentile(lat[0], 0.99),
               lat[0].size() / double(o.load_seconds), percentile(lat[1], 0.5), percentile(lat[1], 0.99),
               lat[1].size() / double(o.load_seconds), failed ? fmt::format(" ({} failed)", failed) : "");
    fmt::print("  load average after load   {}\n", loadavg());
    Trouble load = read_trouble(c, envs, after, 120'000);
    f.load_false = static_cast<int>(load.restarts - up.restarts);
    f.load_said = describe(load, up.restarts, envs);
    fmt::print("  false restarts, load      {}\n", f.load_said);
    if (!load.example.empty()) fmt::print("    e.g. {}\n", load.example);

    // Idle: nothing asked of the daemon, its probes run.
    std::this_thread::sleep_for(std::chrono::seconds(2));
    const auto instances = our_instances(dir);
    auto instances_cpu = [&] {
      double s = 0;
      for (pid_t pid : instances) s += cpu_seconds(pid);
      return s;
    };
    const double cpu0 = cpu_seconds(daemon->pid), icpu0 = instances_cpu();
    const auto i0 = Clock::now();
    std::this_thread::sleep_for(std::chrono::seconds(o.idle_seconds));
    const double secs = ms_since(i0) / 1000;
    const double idle = (cpu_seconds(daemon->pid) - cpu0) / secs;
    f.idle_us = idle * 1e6 / f.instances;
    f.instances_idle = (instances_cpu() - icpu0) / secs;
    fmt::print("  daemon CPU idle           {:9.1f} % of a core, {:.1f} µs per instance per second\n", idle * 100, f.idle_us);
    fmt::print("  the instances' CPU idle   {:9.1f} % of a core (answering their health checks; {:.0f} µs each at one "
               "check per 2 s)\n",
               f.instances_idle * 100, f.instances_idle * 1e6 * 2 / f.instances);
  }
  f.rss_peak_mb = status_kb(daemon->pid, "VmHWM:") / 1024.0;
  f.rss_mb = status_kb(daemon->pid, "VmRSS:") / 1024.0;
  f.load_end = loadavg();
  fmt::print("  daemon RSS peak / now     {:9.0f} / {:.0f} MB\n", f.rss_peak_mb, f.rss_mb);
  fmt::print("  load average              {}\n", f.load_end);

  f.left = take_down(c, envs, dir, &f.teardown_s);
  fmt::print("  taken down in {:.1f} s{}\n", f.teardown_s,
             f.left ? fmt::format("; {} instance(s) still there after 3 min were killed", f.left) : "");
  daemon->dir.clear();  // (removed at the end of the run, see main)
  daemon.reset();       // stops the daemon

  if (o.peer) run_peer(o, envs, f);
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // line by line: a profiler watching the output knows the phase
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string f = argv[i];
    auto value = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (f == "--sizes") {
      o.sizes.clear();
      std::stringstream ss(value());
      std::string n;
      while (std::getline(ss, n, ','))
        if (std::atoi(n.c_str()) > 0) o.sizes.push_back(std::atoi(n.c_str()));
    } else if (f == "--clients") o.clients = std::atoi(value().c_str());
    else if (f == "--load-seconds") o.load_seconds = std::atoi(value().c_str());
    else if (f == "--idle-seconds") o.idle_seconds = std::atoi(value().c_str());
    else if (f == "--warmup-ms") o.warmup_ms = std::atoi(value().c_str());
    else if (f == "--berth") o.berth = value();
    else if (f == "--keep") o.keep = true;
    else if (f == "--no-peer") o.peer = false;
    else if (f == "--peer-only") o.peer_only = true;
    else {
      fmt::print(stderr, "usage: berth_fleet_bench [--sizes 50,100,200] [--clients 50] [--load-seconds 30] "
                         "[--idle-seconds 10] [--warmup-ms 100] [--berth PATH] [--keep] [--no-peer | --peer-only]\n");
      return 2;
    }
  }
  if (o.sizes.empty()) return 2;
  if (geteuid() != 0) fmt::print(stderr, "berth_fleet_bench: not root: instances share the daemon's uid and resolver\n");
  // The daemon raises its own open-files limit; this process needs a connection per client.
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &lim);
  }
  fmt::print("berth_fleet_bench: {} apps a environment (depth {}), real processes (berth-demo-svc, warm-up {} ms), "
             "health every 2 s; daemon {}\n",
             kApps, kLevels, o.warmup_ms, o.berth);
  const auto t0 = Clock::now();
  std::vector<Figures> all;
  for (int n : o.sizes) {
    if (!o.peer_only) {
      all.push_back(run_size(o, n));
      continue;
    }
    Figures f;
    f.envs = n;
    f.instances = n * kApps;
    fmt::print("\n{} environments × {} apps = {} processes, the direct launcher only (load average {})\n", n, kApps,
               f.instances, loadavg());
    run_peer(o, n, f);
    all.push_back(f);
  }

  fmt::print("\nsummary ({:.0f} s in all)\n", ms_since(t0) / 1000);
  fmt::print("  {:>5} {:>6} {:>10} {:>12} {:>11} {:>13} {:>11} {:>8} {:>8}  {}\n", "envs", "inst", "bring-up", "ms/instance",
             "restarts up", "restarts load", "idle µs/i/s", "RSS MB", "peak MB", "load average");
  for (const auto& f : all)
    fmt::print("  {:>5} {:>6} {:>9.1f}s {:>12.2f} {:>11} {:>13} {:>11.1f} {:>8.0f} {:>8.0f}  {}{}\n", f.envs, f.instances,
               f.bring_up_ms / 1000, f.per_instance_ms, f.bring_up_false, f.load_false, f.idle_us, f.rss_mb,
               f.rss_peak_mb, f.load_end, f.complete ? "" : "  (not all ready)");
  if (all.size() >= 2) {
    const auto& a = all.front();
    const auto& b = all.back();
    const double r = a.per_instance_ms > 0 ? b.per_instance_ms / a.per_instance_ms : 0;
    if (r > 0)
      fmt::print("  per-instance bring-up cost, {} vs {} environments: ratio {:.2f} (target ≤ 1.3: {})\n", b.envs, a.envs,
                 r, r <= 1.3 ? "met" : "NOT met");
    if (a.direct_ms > 0 && b.direct_ms > 0) {
      const double d = b.direct_per_instance_ms / a.direct_per_instance_ms;
      fmt::print("  the direct launcher's, {} vs {} environments: ratio {:.2f} (this machine's own growth){}\n", b.envs,
                 a.envs, d, r > 0 ? fmt::format("; berth's over it {:.2f}", r / d) : "");
    }
    if (a.idle_us > 0)
      fmt::print("  idle CPU per instance, {} vs {} environments: ratio {:.2f}\n", b.envs, a.envs, b.idle_us / a.idle_us);
  }
  int left = 0;
  for (const auto& f : all) left += f.left;
  fmt::print("  instances left at the end: {}\n", left);
  // The data directories (thousands of instance logs each) go only now: deleting one just
  // before the next size's instances create theirs made each creation scan past the recently
  // deleted inodes (ext4's recently_deleted(): a quarter of the loop's time at 100 environments).
  for (const auto& f : all) {
    if (f.dir.empty()) continue;
    if (o.keep) {
      fmt::print("  kept {}\n", f.dir);
    } else {
      std::error_code ec;
      fs::remove_all(f.dir, ec);
    }
  }
  return 0;
}
