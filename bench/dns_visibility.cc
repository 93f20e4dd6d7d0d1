// berth_dns_visibility — how soon a state change in the daemon shows in DNS answers.
//
// One instance is made to fail and recover its health check over and over (berth-demo-svc's
// POST /fail and /recover; health interval 20 ms, thresholds 1). For each change, the daemon's
// event (`unhealthy` / `ready`, stamped when the loop changes the instance's state) is compared
// with the first DNS answer that reflects it, seen by a client querying the daemon's name
// server every 200 µs over UDP. Reports p50/p99/max of (first answer − event) in ms.
// Target: p99 ≤ 10 ms. Mesos-DNS, for comparison, polls its master every 60 s by default.
//
// Usage: berth_dns_visibility [--flips N]
#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include "bench_daemon.h"
#include "client/client.h"
#include "net/dns/wire.h"

namespace fs = std::filesystem;

namespace {

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::int64_t parse_time(const std::string& t) {  // "2026-11-28T14:48:02.330Z" → epoch ms
  std::tm tm{};
  strptime(t.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  return static_cast<std::int64_t>(timegm(&tm)) * 1000 + std::stoi(t.substr(20, 3));
}


void post(const std::string& ip, const std::string& target) {
  namespace beast = boost::beast;
  boost::asio::io_context io;
  beast::tcp_stream s(io);
  s.connect({boost::asio::ip::make_address(ip), 8080});
  beast::http::request<beast::http::empty_body> req(beast::http::verb::post, target, 11);
  beast::http::write(s, req);
  beast::flat_buffer buf;
  beast::http::response<beast::http::string_body> res;
  beast::http::read(s, buf, res);
}

}  // namespace

int main(int argc, char** argv) {
  int flips = 100;
  if (argc == 3 && std::string(argv[1]) == "--flips") flips = std::atoi(argv[2]);
  std::string dir = (fs::temp_directory_path() / fmt::format("berth-vis-{}", getpid())).string();
  fs::create_directories(dir);
  std::ofstream(dir + "/berth.yaml") << R"(network: {pool: 127.96.0.0/24}
apps:
  flip:
    command: berth-demo-svc --listen ${ip}:${port.http}
    ports: {http: 8080}
    env: {DEMO_WARMUP_MS: "0"}
    health: {type: http, path: /healthcheck, interval: 20ms, start_interval: 10ms, timeout: 500ms,
             failure_threshold: 1, success_threshold: 1}
    restart: {on_unhealthy: false}
environments:
  dev: {}
)";
  BenchDaemon daemon(dir);
  const std::string addr = daemon.api, dns = daemon.dns;
  berth::client::Client c(addr, daemon.token);
  std::stringstream text;
  text << std::ifstream(dir + "/berth.yaml").rdbuf();
  if (!c.put("/v1/catalog", {{"filename", "vis.yaml"}, {"text", text.str()}}).ok() || !c.post("/v1/environments/dev/up").ok()) {
    fmt::print(stderr, "could not apply/up\n");
    return 1;
  }
  std::string ip;
  for (int i = 0; i < 1000 && ip.empty(); ++i) {
    auto s = c.get("/v1/environments/dev");
    if (s.ok() && (*s)["ready"].get<bool>()) ip = (*s)["apps"][0]["instances"][0]["ip"];
    else std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  // The client: one query every 200 µs; records when the answer flips between "has the
  // address" and "has nothing".
  int sock = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  inet_pton(AF_INET, dns.substr(0, dns.rfind(':')).c_str(), &sa.sin_addr);
  sa.sin_port = htons(static_cast<std::uint16_t>(std::stoi(dns.substr(dns.rfind(':') + 1))));
  connect(sock, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  timeval tv{0, 50'000};
  setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<std::pair<double, bool>> seen;  // (time, answer has the address)
  std::thread poller([&] {
    std::uint16_t id = 0;
    int last = -1;
    std::uint8_t buf[512];
    while (!stop) {
      auto q = berth::dns::build_query("flip.dev.berth.test", berth::dns::type::kA, ++id);
      send(sock, q.data(), q.size(), 0);
      ssize_t n = recv(sock, buf, sizeof buf, 0);
      double t = now_ms();
      if (n >= 12 && ((buf[0] << 8) | buf[1]) == id) {
        int has = ((buf[6] << 8) | buf[7]) > 0;
        if (has != last) {
          std::lock_guard<std::mutex> l(mu);
          seen.emplace_back(t, has);
          last = has;
        }
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });

  auto wait_seen = [&](bool has, std::size_t count) {
    for (int i = 0; i < 5000; ++i) {
      {
        std::lock_guard<std::mutex> l(mu);
        if (seen.size() >= count && seen.back().second == has) return seen.back().first;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return -1.0;
  };
  wait_seen(true, 1);
  std::vector<double> lat;
  std::int64_t after = 0;
  if (auto ev = c.get("/v1/environments/dev/events?limit=100000"); ev.ok() && !ev->empty()) after = ev->back()["id"];
  for (int f = 0; f < flips; ++f) {
    bool fail = f % 2 == 0;
    std::size_t count;
    {
      std::lock_guard<std::mutex> l(mu);
      count = seen.size() + 1;
    }
    post(ip, fail ? "/fail" : "/recover");
    double t_seen = wait_seen(!fail, count);
    // The daemon's event for this change.
    std::int64_t t_event = 0;
    for (int i = 0; i < 200 && !t_event; ++i) {
      auto ev = c.get(fmt::format("/v1/environments/dev/events?after={}", after));
      if (ev.ok())
        for (const auto& e : *ev) {
          after = e["id"];
          if (e["type"] == (fail ? "unhealthy" : "ready")) t_event = parse_time(e["time"]);
        }
      if (!t_event) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    if (t_seen > 0 && t_event > 0) lat.push_back(t_seen - static_cast<double>(t_event));
  }
  stop = true;
  poller.join();
  (void)c.post("/v1/environments/dev/down");
  for (int i = 0; i < 300; ++i) {
    auto s = c.get("/v1/environments/dev");
    if (s.ok() && (*s)["apps"][0]["instances"][0]["pid"].is_null()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (lat.empty()) {
    fmt::print(stderr, "no samples\n");
    return 1;
  }
  std::sort(lat.begin(), lat.end());
  auto pct = [&](double p) { return lat[std::min(lat.size() - 1, static_cast<std::size_t>(p * static_cast<double>(lat.size())))]; };
  fmt::print("DNS update visibility: {} state changes (unhealthy/ready), client polling every 200 µs\n", lat.size());
  fmt::print("  event → first answer reflecting it: p50 {:.1f} ms, p99 {:.1f} ms, max {:.1f} ms (target p99 ≤ 10 ms: {})\n",
             pct(0.5), pct(0.99), lat.back(), pct(0.99) <= 10 ? "met" : "NOT met");
  fmt::print("  (event times have 1 ms resolution; the client's poll adds up to ~0.3 ms)\n");
  return 0;
}
