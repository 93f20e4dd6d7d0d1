// berth_catalog_bench — how catalog parsing and resolution scale (issue 10).
//
// Generates catalogs and times model::Catalog::parse and model::resolve_catalog, in one run:
//   chain     N environments, each `base:` the one before, each setting one env value for every
//             app (every layer counts), 5 apps;                     N = 250, 500, 1000, 2000
//   thin      the same chain of thin environments (`deploy: changed`), each changing one app's
//             tag;                                                  N = 250, 500, 1000, 2000
//   apps      one environment with A apps, each depending on the one before and on one further
//             back;                                                 A = 1250, 2500, 5000, 10000
//   fleet     E environments × 30 apps in 5 dependency levels (bench/scale_bench.cc's catalog) and
//             E/5 environment documents joined by resolve_catalog;  E = 125, 250, 500, 1000
//   invalid   the fleet again, one document in 20 invalid (an unknown app): resolve_catalog leaves
//             them out;                                             E = 125, 250, 500, 1000
// Per series it prints the median time per size (this thread's CPU time, and wall time), the CPU
// cost per item (environment, app or environment × app) and the ratio of the per-item cost at the
// largest size to the smallest: linear ⇒ ≈ 1.0 (CPU time, as wall time on a shared machine also
// counts the waits for a core; the wall ratio is printed beside it). Then the heap the resolved catalog of 1,000 environments × 30 apps holds
// (mallinfo2, after the parse's temporaries are freed) and the process's RSS.
//
// Usage: berth_catalog_bench [--reps 5] [--budget 20] [--only SERIES] [--quick]
//   --budget S: at most about S seconds per size (fewer repetitions for slow sizes, at least one);
//   --quick: the two smallest sizes of each series only.
#include <malloc.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "bench_util.h"
#include "model/catalog.h"

using berth::model::Catalog;
using berth::model::EnvDocument;
using Clock = std::chrono::steady_clock;

namespace {

int g_reps = 5;
double g_budget_s = 20;
bool g_quick = false;
std::string g_only;

constexpr const char* kHeader =
    "network: {pool: 10.0.0.0/8}\n"
    "defaults:\n"
    "  command: svc ${ip}\n"
    "  ports: {http: 8080}\n"
    "  health: {type: http, path: /healthcheck, start_interval: 50ms, interval: 10s, start_period: 60s}\n"
    "  env: {LOG_LEVEL: info, REGION: eu}\n";

// N environments in a chain; `thin`: deploy: changed, each changing one app's tag.
std::string chain_catalog(int n, bool thin) {
  std::string y = kHeader;
  y += "apps:\n";
  for (int a = 0; a < 5; ++a) {
    y += fmt::format("  app{}:\n", a);
    y += a > 0 ? fmt::format("    depends_on: [app{}]\n", a - 1) : "    instances: 1\n";
  }
  y += "environments:\n  env-0: {tag: main}\n";
  for (int e = 1; e < n; ++e) {
    if (thin)
      y += fmt::format("  env-{}: {{base: env-{}, deploy: changed, apps: {{app{}: {{tag: t{}}}}}}}\n", e, e - 1, e % 5, e);
    else
      y += fmt::format("  env-{}: {{base: env-{}, env: {{LEVEL: '{}'}}}}\n", e, e - 1, e);
  }
  return y;
}

std::string apps_catalog(int apps) {
  std::string y = kHeader;
  y += "apps:\n";
  for (int a = 0; a < apps; ++a) {
    y += fmt::format("  app{}:\n", a);
    if (a == 0) y += "    instances: 1\n";
    else if (a < 4) y += fmt::format("    depends_on: [app{}]\n", a - 1);
    else y += fmt::format("    depends_on: [app{}, {{app: app{}, soft: true}}]\n", a - 1, a / 2);
  }
  y += "environments:\n  baseline: {tag: main}\n";
  return y;
}

constexpr int kLevels = 5;
constexpr int kPerLevel = 6;

std::string fleet_catalog(int envs) {
  std::string y = kHeader;
  y += bench::leveled_apps(kLevels, kPerLevel);
  y += bench::numbered_environments(envs);
  return y;
}

// `n` thin documents on the fleet's environments; every `bad_every`-th names an unknown app.
std::vector<EnvDocument> documents(int n, int envs, int bad_every = 0) {
  std::vector<EnvDocument> docs;
  for (int d = 0; d < n; ++d) {
    EnvDocument doc;
    doc.name = fmt::format("dev-{}", d);
    doc.owner = "anna";
    doc.version = 1;
    const bool bad = bad_every > 0 && d % bad_every == bad_every - 1;
    doc.text = fmt::format("base: env-{}\ndeploy: changed\nttl: 3d\napps:\n  l{}-app{}: {{tag: feature/{}}}\n"
                           "env: {{LOG_LEVEL: debug}}\n",
                           d % envs, d % kLevels, d % kPerLevel, d);
    if (bad) doc.text = fmt::format("base: env-{}\napps:\n  no-such-app: {{tag: x}}\n", d % envs);
    docs.push_back(std::move(doc));
  }
  return docs;
}

double cpu_now() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Wall and CPU seconds of `fn` (this thread's CPU time: on a machine shared with builds, the
// wall time also measures how long the thread waited for a core).
std::pair<double, double> seconds(const std::function<void()>& fn) {
  auto t0 = Clock::now();
  const double c0 = cpu_now();
  fn();
  return {std::chrono::duration<double>(Clock::now() - t0).count(), cpu_now() - c0};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

[[noreturn]] void fail(const std::string& what, const berth::Error& e) {
  fmt::print(stderr, "{}: {}\n", what, e.message.substr(0, 2000));
  std::exit(1);
}

struct Point {
  int size;
  double items;
  double median_s;      // CPU
  double median_wall_s;
  int reps;
};

// Times `run` at each size: repetitions until g_reps or about g_budget_s, at least one.
void series(const std::string& name, const std::string& item, const std::vector<int>& sizes,
            const std::function<double(int)>& items_of, const std::function<void(int)>& run) {
  if (!g_only.empty() && g_only != name) return;
  std::vector<Point> points;
  for (std::size_t i = 0; i < sizes.size() && (!g_quick || i < 2); ++i) {
    const int n = sizes[i];
    std::vector<double> cpu, wall;
    double spent = 0;
    while (static_cast<int>(cpu.size()) < g_reps && (cpu.empty() || spent + wall.back() <= g_budget_s)) {
      auto [w, c] = seconds([&] { run(n); });
      wall.push_back(w);
      cpu.push_back(c);
      spent += w;
    }
    points.push_back({n, items_of(n), median(cpu), median(wall), static_cast<int>(cpu.size())});
    const Point& p = points.back();
    fmt::print("  {:<8} {:>6}  median {:>9.2f} ms CPU ({:>9.2f} ms wall, {} runs)  {:>8.2f} µs/{}\n", name, n,
               p.median_s * 1e3, p.median_wall_s * 1e3, p.reps, p.median_s / p.items * 1e6, item);
    std::fflush(stdout);
  }
  if (points.size() >= 2) {
    const Point& a = points.front();
    const Point& b = points.back();
    fmt::print("  {:<8} per-{} cost at {} vs {}: {:.2f}× CPU, {:.2f}× wall (linear ≈ 1.0)\n\n", name, item, b.size, a.size,
               (b.median_s / b.items) / (a.median_s / a.items), (b.median_wall_s / b.items) / (a.median_wall_s / a.items));
  }
}

long rss_kb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

std::size_t heap_in_use() {
  malloc_trim(0);
  return mallinfo2().uordblks;
}

void memory_of(int n_docs);

// The heap a resolved catalog holds: 1,000 environments × 30 apps (bench/scale_bench.cc's fleet,
// every environment `{}`), alone and with 200 thin documents that each set an env value for all
// their apps (so each has 30 AppSpecs of its own).
void memory() {
  if (!g_only.empty() && g_only != "memory") return;
  for (int n_docs : {0, 200}) memory_of(n_docs);
}

void memory_of(int n_docs) {
  const int envs = 1000;
  const std::string text = fleet_catalog(envs);
  const auto docs = documents(n_docs, envs);
  const std::size_t before = heap_in_use();
  const long rss_before = rss_kb();
  std::size_t peak_rss = 0;
  {
    auto r = berth::model::resolve_catalog(text, "berth.yaml", "", docs);
    if (!r.ok()) fail("memory", r.error());
    const std::size_t held = heap_in_use() - before;
    std::size_t apps = 0;
    for (const auto& e : r->catalog.environments()) apps += e.apps.size();
    peak_rss = static_cast<std::size_t>(rss_kb());
    std::set<const berth::model::AppSpec*> distinct;
    for (const auto& e : r->catalog.environments())
      for (std::size_t i = 0; i < e.apps.size(); ++i) distinct.insert(e.apps.shared(i).get());
    fmt::print("  memory   resolved catalog of {} environments + {} documents ({} apps, {} AppSpecs): heap {:.1f} MB "
               "({:.0f} bytes per app); RSS {} → {} MB\n",
               envs, docs.size(), apps, distinct.size(), static_cast<double>(held) / 1e6,
               static_cast<double>(held) / static_cast<double>(apps), rss_before / 1024, peak_rss / 1024);
  }
  fmt::print("  memory   after it is destroyed: heap {:+.1f} MB against before\n",
             (static_cast<double>(heap_in_use()) - static_cast<double>(before)) / 1e6);
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) g_reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--budget" && i + 1 < argc) g_budget_s = std::atof(argv[++i]);
    else if (a == "--only" && i + 1 < argc) g_only = argv[++i];
    else if (a == "--quick") g_quick = true;
    else {
      fmt::print(stderr, "usage: {} [--reps N] [--budget SECONDS] [--only chain|thin|apps|fleet|invalid|memory] [--quick]\n",
                 argv[0]);
      return 2;
    }
  }
  fmt::print("berth_catalog_bench: medians of up to {} runs (at most ~{} s per size)\n\n", g_reps, g_budget_s);

  for (bool thin : {false, true}) {
    series(thin ? "thin" : "chain", "env", {250, 500, 1000, 2000}, [](int n) { return n; }, [thin](int n) {
      static std::string text;
      static int made = -1;
      if (made != n * 2 + thin) text = chain_catalog(n, thin), made = n * 2 + thin;
      auto c = Catalog::parse(text, "berth.yaml");
      if (!c.ok()) fail("chain", c.error());
      // The top of the chain: its settings come from its own layer, its tag from the root's.
      const auto* top = c->find(fmt::format("env-{}", n - 1));
      const auto* app = top ? top->find("app1") : nullptr;
      if (!app || app->from.at("tag").find("environments.env-") != 0 ||
          (!thin && app->from.at("env.LEVEL") != fmt::format("environments.env-{}", n - 1)))
        fail("chain", berth::internal("wrong provenance at the top of the chain"));
    });
  }

  series("apps", "app", {1250, 2500, 5000, 10000}, [](int n) { return n; }, [](int n) {
    static std::string text;
    static int made = -1;
    if (made != n) text = apps_catalog(n), made = n;
    auto c = Catalog::parse(text, "berth.yaml");
    if (!c.ok()) fail("apps", c.error());
    if (c->find("baseline")->apps.size() != static_cast<std::size_t>(n))
      fail("apps", berth::internal("wrong app count"));
  });

  series("fleet", "env×app", {125, 250, 500, 1000}, [](int n) { return (n + n / 5) * 30.0; }, [](int n) {
    static std::string text;
    static std::vector<EnvDocument> docs;
    static int made = -1;
    if (made != n) text = fleet_catalog(n), docs = documents(n / 5, n), made = n;
    auto r = berth::model::resolve_catalog(text, "berth.yaml", "", docs);
    if (!r.ok()) fail("fleet", r.error());
    if (r->catalog.environments().size() != static_cast<std::size_t>(n + n / 5) || !r->invalid.empty())
      fail("fleet", berth::internal("documents left out"));
  });

  series("invalid", "env×app", {125, 250, 500, 1000}, [](int n) { return (n + n / 5) * 30.0; }, [](int n) {
    static std::string text;
    static std::vector<EnvDocument> docs;
    static int made = -1;
    if (made != n) text = fleet_catalog(n), docs = documents(n / 5, n, 20), made = n;
    auto r = berth::model::resolve_catalog(text, "berth.yaml", "", docs);
    if (!r.ok()) fail("invalid", r.error());
    if (r->invalid.size() != static_cast<std::size_t>(n / 5 / 20))
      fail("invalid", berth::internal(fmt::format("{} documents left out", r->invalid.size())));
  });

  memory();
  return 0;
}
