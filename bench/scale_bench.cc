// berth_scale_bench — the control plane at fleet scale, on the simulated runtime.
//
// `berth serve --runtime sim` (nothing runs; each instance starts after 20 ms and answers its
// health checks 200 ms later), N environments × 30 apps in 5 dependency levels (6 apps a level,
// each depending on two of the level below), health checks every 10 s. Prints, in one run:
//   - placements per second: the same N × 30 apps without dependencies, on a daemon of their
//     own, from the first up request to every instance launched (and then ready);
//   - the time to bring all N up, instances up per second and the daemon's CPU for it;
//   - one environment's up time when it is the only one vs. when N-1 others are up (ratio);
//   - a reconcile pass with nothing to change, and one after a single instance changed;
//   - API latency, p50/p99, of GET one environment (its first reads, then again) and of the
//     paged summary list, with C concurrent clients (each its own keep-alive connection, all
//     driven by one asynchronous client thread that asks for gzip and inflates what is
//     compressed, but does not parse the JSON), against two peers in the same run: GET
//     /v1/health (reads no state) and the web UI's script (a static file about the size of one
//     environment's status);
//   - DNS queries per second with 1 environment up and with N (same run);
//   - the daemon's RSS (peak and now) and its CPU while idle; the load average.
// Targets (issue 10): all up ≤ 30 s, ≥ 10,000 placements/s, incremental pass ≤ 5 ms, full pass
// ≤ 1 s, one more environment ≤ 1.5× the lone one, p99 ≤ 20 ms for one environment, RSS ≤ 300 MB.
//
// Usage: berth_scale_bench [--envs 1000] [--clients 200] [--seconds 5] [--placements-only]. Uses 127.160.0.0/12 (no
// traffic goes there: the instances are simulated) and a scratch data directory.
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include "base/gzip.h"
#include "bench_daemon.h"
#include "bench_util.h"
#include "client/client.h"
#include "fleet_counts.h"
#include "net/dns/wire.h"

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

std::string catalog(int envs, int levels = kLevels, int per_level = kPerLevel) {
  std::string y = "network: {pool: 127.160.0.0/12}\n"
                  "defaults:\n"
                  "  command: svc ${ip}\n"
                  "  ports: {http: 8080}\n"
                  "  health: {type: http, path: /healthcheck, start_interval: 50ms, interval: 10s, start_period: 60s}\n";
  y += bench::leveled_apps(levels, per_level);
  y += bench::numbered_environments(envs);
  return y;
}

// Placements: N environments × 30 apps with no dependencies, on a daemon of their own, so that
// every instance can be placed as soon as its environment's up request is in — from the first
// up request to every instance launched (its address assigned, the launch recorded, the runtime
// asked): the control plane's placement rate, which the leveled bring-up cannot show (there,
// each level waits for the one below to be ready). Then on to every instance ready. Its data
// directory `dir` is left for the caller to remove at the end of the run: removed now, the next
// daemon's directories would be created past thousands of recently deleted inodes (ext4 scans
// them for 30 s: a quarter of a loop's time, measured in berth_fleet_bench).
void placements(int envs, int apps, const std::string& dir) {
  fs::create_directories(dir);
  const int instances = envs * apps;
  double launched_ms = -1, ready_ms = -1, cpu_s = 0;
  {
    BenchDaemon daemon(dir, {"--runtime", "sim", "--sim", "start=20ms,ready=200ms"});
    daemon.dir.clear();  // (the caller removes it)
    Client c(daemon.api, daemon.token);
    if (auto r = c.put("/v1/catalog", {{"filename", "flat.yaml"}, {"text", catalog(envs, 1, apps)}}); !r.ok()) {
      fmt::print(stderr, "apply failed: {}\n", r.error().message);
      return;
    }
    const double cpu0 = cpu_seconds(daemon.pid);
    const auto t0 = Clock::now();
    for (int e = 0; e < envs; ++e) (void)c.post(fmt::format("/v1/environments/env-{}/up", e));
    bench::FleetCounts n;
    while (ms_since(t0) < 600'000) {
      if (bench::fleet_counts(c, &n)) {
        if (launched_ms < 0 && n.running >= instances) {  // (ready ones are running too)
          launched_ms = ms_since(t0);
          cpu_s = cpu_seconds(daemon.pid) - cpu0;
        }
        if (n.ready >= instances) {
          ready_ms = ms_since(t0);
          break;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  if (launched_ms < 0) {
    fmt::print("  placements: not all {} instances were launched within 600 s\n", instances);
    return;
  }
  const double rate = instances / (launched_ms / 1000);
  fmt::print("  placements, {} instances with no dependencies: all launched in {:.0f} ms, all ready in {:.0f} ms\n",
             instances, launched_ms, ready_ms);
  fmt::print("  placements per second              {:9.0f}     (target ≥ 10,000: {}; daemon CPU {:.0f} µs per placement)\n",
             rate, rate >= 10'000 ? "met" : "NOT met", cpu_s * 1e6 / instances);
}

bool env_ready(Client& c, const std::string& env) {
  auto s = c.get("/v1/environments/" + env);
  return s.ok() && (*s)["ready"].get<bool>();
}

double up_one(Client& c, const std::string& env) {
  auto t0 = Clock::now();
  if (!c.post("/v1/environments/" + env + "/up").ok()) return -1;
  while (!env_ready(c, env)) {
    if (ms_since(t0) > 120'000) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return ms_since(t0);
}

void down_one(Client& c, const std::string& env) {
  (void)c.post("/v1/environments/" + env + "/down");
  auto t0 = Clock::now();
  while (ms_since(t0) < 60'000) {
    auto e = c.get("/v1/environments/" + env);
    bool any = false;
    if (e.ok())
      for (const auto& a : (*e)["apps"])
        for (const auto& i : a["instances"]) any |= i["state"] != "stopped";
    if (!any) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

std::vector<double> reconcile_ms(Client& c, int n) {
  std::vector<double> out;
  for (int i = 0; i < n; ++i)
    if (auto r = c.post("/v1/reconcile"); r.ok()) out.push_back((*r)["reconcile_us"].get<double>() / 1000.0);
  return out;
}

// `clients` connections, each sending GET `path_of(i)` again as soon as the last answer is in,
// for `seconds`, accepting gzip; latencies in ms of the answers that were 200, inflated when
// compressed (a client pays for that too). All on one thread of asynchronous
// Beast connections that read the body without parsing it: on two shared cores, 200 client
// threads parsing JSON would measure the clients' own scheduling, not the daemon.
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
  std::vector<double> latencies;
  std::function<std::string(int)> path_of;
  std::string host, token;
  Clock::time_point end;
  int failed = 0;

  void next(Conn& c, int id) {
    if (Clock::now() >= end) return;
    c.req = {http::verb::get, path_of(id * 7919 + c.n++), 11};
    c.req.set(http::field::host, host);
    c.req.set(http::field::authorization, "Bearer " + token);
    c.req.set(http::field::accept_encoding, "gzip");  // as browsers and the CLI do
    c.req.keep_alive(true);
    c.res.emplace();
    c.res->body_limit(64u << 20);
    c.t0 = Clock::now();
    http::async_write(c.stream, c.req, [this, &c, id](beast::error_code ec, std::size_t) {
      if (ec) return (void)++failed;
      http::async_read(c.stream, c.buffer, *c.res, [this, &c, id](beast::error_code rec, std::size_t) {
        if (rec) return (void)++failed;
        // A compressed answer is inflated, as a client must before it can read it.
        bool ok = c.res->get().result_int() == 200;
        if (ok && beast::iequals(c.res->get()[http::field::content_encoding], "gzip"))
          ok = berth::gunzip(c.res->get().body(), 64u << 20).ok();
        if (ok) latencies.push_back(ms_since(c.t0));
        else ++failed;
        next(c, id);
      });
    });
  }
};

std::vector<double> hammer(const std::string& addr, const std::string& token, int clients, int seconds,
                           const std::function<std::string(int)>& path_of) {
  Hammer h;
  h.path_of = path_of;
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
  if (h.failed) fmt::print("  ({} requests failed or were not 200)\n", h.failed);
  return std::move(h.latencies);
}

// The size of an API answer, as JSON text.
std::size_t get_text_size(berth::client::Client& c, const std::string& path) {
  auto r = c.get(path);
  return r.ok() ? r->dump().size() : 0;
}

// One GET without a token, its body ("" unless 200).
std::string get_text(const std::string& addr, const std::string& path) {
  boost::asio::io_context io;
  beast::tcp_stream stream(io);
  const auto colon = addr.rfind(':');
  beast::error_code ec;
  stream.socket().connect({boost::asio::ip::make_address(addr.substr(0, colon)),
                           static_cast<unsigned short>(std::stoi(addr.substr(colon + 1)))},
                          ec);
  if (ec) return "";
  http::request<http::empty_body> req{http::verb::get, path, 11};
  req.set(http::field::host, addr);
  http::write(stream, req, ec);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(stream, buffer, res, ec);
  return !ec && res.result_int() == 200 ? res.body() : "";
}

// The web UI's script, an answer about the size of one environment's status that reads no
// state: the transport's floor for that size. "" if the daemon has no UI built in.
std::string ui_script(const std::string& addr) {
  const std::string page = get_text(addr, "/");
  const auto at = page.find("/assets/");
  if (at == std::string::npos) return "";
  const auto end = page.find('"', at);
  return end == std::string::npos ? "" : page.substr(at, end - at);
}

// UDP queries per second for `name`, 64 in flight, for `seconds`.
double dns_qps(const std::string& dns, const std::string& name, int seconds) {
  int sock = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  inet_pton(AF_INET, dns.substr(0, dns.rfind(':')).c_str(), &sa.sin_addr);
  sa.sin_port = htons(static_cast<std::uint16_t>(std::stoi(dns.substr(dns.rfind(':') + 1))));
  connect(sock, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  timeval tv{0, 100'000};
  setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::uint16_t id = 0;
  long answered = 0;
  std::uint8_t buf[1500];
  const auto t0 = Clock::now();
  while (ms_since(t0) < seconds * 1000.0) {
    for (int i = 0; i < 64; ++i) {
      auto q = berth::dns::build_query(name, berth::dns::type::kA, ++id);
      send(sock, q.data(), q.size(), 0);
    }
    for (int i = 0; i < 64; ++i)
      if (recv(sock, buf, sizeof buf, 0) >= 12 && ((buf[6] << 8) | buf[7]) > 0) ++answered;
  }
  close(sock);
  return static_cast<double>(answered) / (ms_since(t0) / 1000.0);
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // line by line: a profiler watching the output knows the phase
  int envs = 1000, clients = 200, seconds = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string f = argv[i];
    if (f == "--envs") envs = std::atoi(argv[i + 1]);
    else if (f == "--clients") clients = std::atoi(argv[i + 1]);
    else if (f == "--seconds") seconds = std::atoi(argv[i + 1]);
  }
  const bool placements_only = std::find(argv + 1, argv + argc, std::string("--placements-only")) != argv + argc;
  const int apps = kLevels * kPerLevel, instances = envs * apps;
  fmt::print("berth_scale_bench: {} environments × {} apps = {} simulated instances; load average {}\n", envs, apps,
             instances, loadavg());
  struct RemovedAtTheEnd {
    std::string dir;
    ~RemovedAtTheEnd() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } flat{(fs::temp_directory_path() / fmt::format("berth-scale-{}-flat", getpid())).string()};
  placements(envs, apps, flat.dir);
  if (placements_only) return 0;
  std::string dir = (fs::temp_directory_path() / fmt::format("berth-scale-{}", getpid())).string();
  fs::create_directories(dir);
  BenchDaemon daemon(dir, {"--runtime", "sim", "--sim", "start=20ms,ready=200ms"});
  Client c(daemon.api, daemon.token);
  fmt::print("  {} levels of {} apps (each depending on two of the level below); load average {}\n", kLevels, kPerLevel,
             loadavg());

  auto t0 = Clock::now();
  if (auto r = c.put("/v1/catalog", {{"filename", "scale.yaml"}, {"text", catalog(envs)}}); !r.ok()) {
    fmt::print(stderr, "apply failed: {}\n", r.error().message);
    return 1;
  }
  fmt::print("  apply (parse, validate, store)     {:9.0f} ms\n", ms_since(t0));

  // One environment alone: its up time, the DNS rate with it, the API with it.
  const double lone = up_one(c, "env-0");
  const double qps_one = dns_qps(daemon.dns, "l0-app0.env-0.berth.test", 2);
  down_one(c, "env-0");

  // All of them.
  fmt::print("  bringing all {} up...\n", envs);
  const double up_cpu0 = cpu_seconds(daemon.pid);
  t0 = Clock::now();
  for (int e = 0; e < envs; ++e) (void)c.post(fmt::format("/v1/environments/env-{}/up", e));
  const double posted = ms_since(t0);
  bench::FleetCounts counts;
  while (!bench::fleet_counts(c, &counts) || counts.envs_ready < envs) {
    if (ms_since(t0) > 600'000) {
      fmt::print(stderr, "not all ready after 600 s: {} of {} instances\n", counts.ready, instances);
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const double all_up = ms_since(t0);
  fmt::print("  all up                             {:9.0f} ms  (requests {:.0f} ms; target ≤ 30 s: {})\n", all_up, posted,
             all_up <= 30'000 ? "met" : "NOT met");
  fmt::print("  instances up per second            {:9.0f}     (5 levels, each waiting for the one below to be ready)\n",
             instances / (all_up / 1000));
  // Steadier than the wall time on a shared machine: the daemon's CPU (all its threads) for it.
  const double up_cpu = cpu_seconds(daemon.pid) - up_cpu0;
  fmt::print("  daemon CPU to bring all up         {:9.0f} ms  ({:.0f} µs per instance)\n", up_cpu * 1000,
             up_cpu * 1e6 / instances);

  auto full = reconcile_ms(c, 10);
  fmt::print("  pass, nothing to change            {:9.2f} ms  median of {} (target ≤ 1 s)\n", percentile(full, 0.5), full.size());
  // One instance changes (a restart): the passes it causes visit its environment only.
  (void)c.post("/v1/environments/env-7/restart?app=l4-app0");
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // (the restart's own passes run)
  double one = -1;
  std::size_t visited = 0;
  if (auto r = c.post("/v1/reconcile"); r.ok() && !(*r)["last_pass"]["full"].get<bool>()) {
    one = (*r)["last_pass"]["us"].get<double>() / 1000.0;
    visited = (*r)["last_pass"]["environments"].get<std::size_t>();
  }
  fmt::print("  pass after one instance's change   {:9.2f} ms  visiting {} environment(s) (target ≤ 5 ms: {})\n", one,
             visited, one >= 0 && one <= 5 ? "met" : "NOT met");

  down_one(c, fmt::format("env-{}", envs - 1));
  const double crowded = up_one(c, fmt::format("env-{}", envs - 1));
  fmt::print("  one environment up, alone          {:9.0f} ms\n", lone);
  fmt::print("  one environment up, {:4} others    {:9.0f} ms  ratio {:.2f}x (target ≤ 1.5x: {})\n", envs - 1, crowded,
             crowded / lone, crowded / lone <= 1.5 ? "met" : "NOT met");

  // The peer: the transport's floor, an answer that reads no state (GET /v1/health), same clients.
  auto floor = hammer(daemon.api, daemon.token, clients, seconds, [](int) { return std::string("/v1/health"); });
  fmt::print("  GET /v1/health (peer), {} clients p50 {:7.2f} ms  p99 {:7.2f} ms  ({:.0f}/s)\n", clients,
             percentile(floor, 0.5), percentile(floor, 0.99), floor.size() / double(seconds));
  // The peer of the same size: a static answer as large as one environment's status.
  const std::string script = ui_script(daemon.api);
  const std::size_t env_size = get_text_size(c, "/v1/environments/env-0");
  std::size_t env_gz_size = 0;
  if (auto r = c.get("/v1/environments/env-0"); r.ok())
    if (auto z = berth::gzip(r->dump()); z.ok()) env_gz_size = z->size();
  std::vector<double> same_size;
  if (!script.empty()) {
    same_size = hammer(daemon.api, daemon.token, clients, seconds, [&](int) { return script; });
    const std::string file = get_text(daemon.api, script);
    const auto file_gz = berth::gzip(file);
    fmt::print("  GET {:.0f} KB static file (peer), {} clients p50 {:7.2f} ms  p99 {:7.2f} ms  ({:.0f}/s; sent gzipped, "
               "{:.0f} KB)\n",
               file.size() / 1024.0, clients, percentile(same_size, 0.5), percentile(same_size, 0.99),
               same_size.size() / double(seconds), file_gz.ok() ? file_gz->size() / 1024.0 : 0.0);
    fmt::print("    (one environment's status is {:.0f} KB, {:.0f} KB gzipped)\n", env_size / 1024.0, env_gz_size / 1024.0);
  }
  // First with the daemon's texts cold (each environment's status rendered and compressed at its
  // first read, as after a change to all of them), then as read again (rendered once per change).
  auto env_path = [envs](int i) { return fmt::format("/v1/environments/env-{}", i % envs); };
  auto cold = hammer(daemon.api, daemon.token, clients, seconds, env_path);
  fmt::print("  GET one environment, first reads    p50 {:7.2f} ms  p99 {:7.2f} ms  ({:.0f}/s; each status rendered at its "
             "first read)\n",
             percentile(cold, 0.5), percentile(cold, 0.99), cold.size() / double(seconds));
  auto one_env = hammer(daemon.api, daemon.token, clients, seconds, env_path);
  fmt::print("  GET one environment, {} clients   p50 {:7.2f} ms  p99 {:7.2f} ms  ({:.0f}/s; target p99 ≤ 20 ms: {})\n",
             clients, percentile(one_env, 0.5), percentile(one_env, 0.99), one_env.size() / double(seconds),
             percentile(one_env, 0.99) <= 20 ? "met" : "NOT met");
  fmt::print("    p99 ratio to the peer              {:7.2f}x{}\n", percentile(one_env, 0.99) / percentile(floor, 0.99),
             same_size.empty() ? ""
                               : fmt::format(", to the static file of its size {:.2f}x",
                                             percentile(one_env, 0.99) / percentile(same_size, 0.99)));
  auto paged = hammer(daemon.api, daemon.token, clients, seconds, [envs](int i) {
    int from = (i % std::max(1, envs / 100)) * 100;
    return fmt::format("/v1/environments?summary=1&limit=100{}", from ? fmt::format("&after=env-{}", from - 1) : "");
  });
  fmt::print("  GET summary page of 100, {} clients p50 {:7.2f} ms  p99 {:7.2f} ms  ({:.0f}/s)\n", clients,
             percentile(paged, 0.5), percentile(paged, 0.99), paged.size() / double(seconds));

  const double qps_all = dns_qps(daemon.dns, fmt::format("l0-app0.env-{}.berth.test", envs / 2), 2);
  fmt::print("  DNS answers/s, 1 environment up    {:9.0f}\n", qps_one);
  fmt::print("  DNS answers/s, {} up            {:9.0f}  ratio {:.2f}\n", envs, qps_all, qps_all / qps_one);

  const double cpu0 = cpu_seconds(daemon.pid);
  std::this_thread::sleep_for(std::chrono::seconds(10));
  const double idle = (cpu_seconds(daemon.pid) - cpu0) / 10;
  fmt::print("  daemon RSS peak / now              {:6.0f} / {:.0f} MB  (target ≤ 300 MB: {})\n",
             status_kb(daemon.pid, "VmHWM:") / 1024.0, status_kb(daemon.pid, "VmRSS:") / 1024.0,
             status_kb(daemon.pid, "VmHWM:") <= 300 * 1024 ? "met" : "NOT met");
  fmt::print("  daemon CPU while idle              {:9.1f} % of a core ({:.1f} µs per instance per second)\n", idle * 100,
             idle * 1e6 / instances);
  fmt::print("  load average at the end            {}\n", loadavg());
  return 0;
}
