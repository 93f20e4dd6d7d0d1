// berth_up_bench — how fast `up` is against the critical path, and what 1,000 instances cost.
//
//  1. One environment of 50 apps in 5 dependency levels (10 apps a level, each depending on two
//     apps of the level below), every app ready 200 ms after it starts. The critical path is
//     5 × 200 ms; the ratio up-time / critical-path is the number to watch (target ≤ 1.05× +
//     100 ms). Measured from the `up` request to the status reporting every instance ready.
//     The same 50 apps are also brought up by a direct launcher measured in the same run: no
//     control plane, each app spawned (posix_spawn of `sh -c "exec COMMAND"` as berth runs a
//     command, but no gate, no store, no user switch) as soon as its two
//     dependencies answer their health check, polled every 10 ms as berth does. Its time is
//     what this machine takes to start these processes at all; berth's overhead over it is
//     what berth itself costs.
//  2. Twenty such environments up at once (1,000 instances): the daemon's peak RSS (VmHWM),
//     and the time of a reconcile pass that has nothing to change.
//
// Usage: berth_up_bench [--envs N] [--runs N]. Needs nothing but the built binaries; uses
// 127.90.0.0/16 and a scratch data directory.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "bench_daemon.h"
#include "bench_util.h"
#include "direct_launcher.h"
#include "client/client.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kLevels = 5;
constexpr int kPerLevel = 10;
constexpr int kWarmupMs = 200;

std::string catalog(int envs) {
  std::string y = "network: {pool: 127.90.0.0/16}\n"
                  "defaults:\n"
                  "  command: berth-demo-svc --listen ${ip}:${port.http}\n"
                  "  ports: {http: 8080}\n"
                  "  health: {type: http, path: /healthcheck, start_interval: 10ms, interval: 5s, start_period: 60s}\n"
                  "  stop_grace: 2s\n"
                  "  env: {DEMO_WARMUP_MS: \"" + std::to_string(kWarmupMs) + "\"}\n";
  y += bench::leveled_apps(kLevels, kPerLevel);
  y += bench::numbered_environments(envs);
  return y;
}

long vm_hwm_kb(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

bool ready(berth::client::Client& c, const std::string& env) {
  auto s = c.get("/v1/environments/" + env);
  return s.ok() && (*s)["ready"].get<bool>();
}

bool wait_ready(berth::client::Client& c, const std::string& env, int timeout_s) {
  auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
  while (!ready(c, env)) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

bool wait_down(berth::client::Client& c, const std::string& env) {
  auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline) {
    auto s = c.get("/v1/environments/" + env);
    bool any = false;
    if (s.ok())
      for (const auto& a : (*s)["apps"])
        if (a["runs_in"] == env)
          for (const auto& i : a["instances"]) any |= !i["pid"].is_null();
    if (!any) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// The direct launcher (direct_launcher.h): the same apps, levels and warm-up without a control
// plane, probed every 10 ms. Returns the milliseconds from the first spawn to every app
// answering its health check, or -1.
double direct_up_ms() {
  bench::DirectFleet f;
  f.program = std::string(DEMO_SVC_DIR) + "/berth-demo-svc";
  f.levels = kLevels;
  f.per_level = kPerLevel;
  f.warmup_ms = kWarmupMs;
  f.ip = [](int, int l, int i) { return fmt::format("127.91.{}.{}", l + 1, i + 2); };
  return bench::direct_up_ms(f);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int envs = 20, runs = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string f = argv[i];
    if (f == "--envs") envs = std::atoi(argv[i + 1]);
    else if (f == "--runs") runs = std::atoi(argv[i + 1]);
  }
  std::string dir = (fs::temp_directory_path() / fmt::format("berth-bench-{}", getpid())).string();
  fs::create_directories(dir);
  std::ofstream(dir + "/berth.yaml") << catalog(envs);

  BenchDaemon daemon(dir);
  const std::string addr = daemon.api;
  berth::client::Client c(addr, daemon.token);
  std::stringstream text;
  text << std::ifstream(dir + "/berth.yaml").rdbuf();
  if (auto r = c.put("/v1/catalog", {{"filename", "bench.yaml"}, {"text", text.str()}}); !r.ok()) {
    fmt::print(stderr, "apply failed: {}\n", r.error().message);
    return 1;
  }

  // 1. up time against the critical path.
  const double critical = kLevels * kWarmupMs;
  std::vector<double> ups, directs;
  for (int r = 0; r < runs; ++r) {
    const double direct = direct_up_ms();
    if (direct < 0) {
      fmt::print(stderr, "the direct launcher's apps did not become ready\n");
      return 1;
    }
    directs.push_back(direct);
    auto t0 = Clock::now();
    if (!c.post("/v1/environments/env-0/up").ok() || !wait_ready(c, "env-0", 60)) {
      fmt::print(stderr, "env-0 did not become ready\n");
      return 1;
    }
    ups.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    (void)c.post("/v1/environments/env-0/down");
    wait_down(c, "env-0");
  }
  double up = median(ups);
  fmt::print("up: 50 apps, depth {}, ready {} ms after start — median of {} runs\n", kLevels, kWarmupMs, runs);
  fmt::print("  up time            {:8.0f} ms\n", up);
  fmt::print("  critical path      {:8.0f} ms\n", critical);
  fmt::print("  ratio              {:8.3f}x   (target ≤ 1.05x + 100 ms = {:.0f} ms: {})\n", up / critical,
             critical * 1.05 + 100, up <= critical * 1.05 + 100 ? "met" : "NOT met");
  fmt::print("  overhead           {:8.0f} ms over the critical path ({:.0f} ms per level)\n", up - critical,
             (up - critical) / kLevels);
  const double direct = median(directs);
  fmt::print("  direct launcher    {:8.0f} ms   ({:.3f}x the critical path: what this machine takes to start these\n"
             "                                processes and see them healthy, with no control plane)\n",
             direct, direct / critical);
  fmt::print("  berth / direct     {:8.3f}x   ({:.0f} ms of berth's own, {:.0f} ms per level; the same target over the\n"
             "                                direct launcher's time: ≤ {:.0f} ms: {})\n",
             up / direct, up - direct, (up - direct) / kLevels, direct * 1.05 + 100,
             up <= direct * 1.05 + 100 ? "met" : "NOT met");

  // 2. many environments at once.
  auto t0 = Clock::now();
  for (int e = 0; e < envs; ++e) (void)c.post(fmt::format("/v1/environments/env-{}/up", e));
  for (int e = 0; e < envs; ++e)
    if (!wait_ready(c, fmt::format("env-{}", e), 300)) {
      fmt::print(stderr, "env-{} did not become ready\n", e);
      return 1;
    }
  double all_up = std::chrono::duration<double>(Clock::now() - t0).count();
  std::vector<double> passes;
  for (int i = 0; i < 20; ++i) {
    auto r = c.post("/v1/reconcile");
    if (r.ok()) passes.push_back((*r)["reconcile_us"].get<double>() / 1000.0);
  }
  long rss = vm_hwm_kb(daemon.pid);
  fmt::print("\n{} environments × 50 apps = {} instances up at once (took {:.1f} s on 2 cores)\n", envs, envs * 50, all_up);
  fmt::print("  daemon peak RSS    {:8.1f} MB   (target ≤ 150 MB: {})\n", rss / 1024.0, rss <= 150 * 1024 ? "met" : "NOT met");
  fmt::print("  no-change reconcile{:8.2f} ms median of {} passes over {} instances\n", median(passes), passes.size(), envs * 50);

  for (int e = 0; e < envs; ++e) (void)c.post(fmt::format("/v1/environments/env-{}/down", e));
  for (int e = 0; e < envs; ++e) wait_down(c, fmt::format("env-{}", e));
  return 0;
}
