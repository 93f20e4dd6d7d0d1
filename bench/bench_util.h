// bench/bench_util.h — what several benchmarks measure the same way: the leveled fleet of apps
// they bring up, elapsed time and percentiles, and a process's memory, CPU time and the load
// average from /proc. Header-only; any thread.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace bench {

using Clock = std::chrono::steady_clock;

// The `apps:` section of a catalog: `levels` levels of `per_level` apps named l<L>-app<I>, each
// above the first depending on two apps of the level below (I and I+1), so the critical path
// is `levels` starts long.
inline std::string leveled_apps(int levels, int per_level) {
  std::string y = "apps:\n";
  for (int l = 0; l < levels; ++l)
    for (int i = 0; i < per_level; ++i) {
      y += fmt::format("  l{}-app{}:\n", l, i);
      if (l > 0) y += fmt::format("    depends_on: [l{}-app{}, l{}-app{}]\n", l - 1, i, l - 1, (i + 1) % per_level);
      else y += "    {}\n";
    }
  return y;
}

// The `environments:` section: env-0 … env-<n-1>, each inheriting everything.
inline std::string numbered_environments(int n) {
  std::string y = "environments:\n";
  for (int e = 0; e < n; ++e) y += fmt::format("  env-{}: {{}}\n", e);
  return y;
}

inline double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// The p-quantile (0..1) of `v`, 0 when empty.
inline double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

// A "kB" field of /proc/PID/status ("VmHWM:", "VmRSS:"); -1 if absent.
inline long status_kb(pid_t pid, const char* field) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field, 0) == 0) return std::stol(line.substr(std::string(field).size()));
  return -1;
}

// User + system CPU time of `pid` so far, in seconds.
inline double cpu_seconds(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string s((std::istreambuf_iterator<char>(in)), {});
  std::istringstream rest(s.substr(s.rfind(')') + 2));
  std::string f;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15; ++i) {
    rest >> f;
    if (i == 14) utime = std::stol(f);
    if (i == 15) stime = std::stol(f);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// The three load averages, as /proc/loadavg says them.
inline std::string loadavg() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

// A counter of this network namespace's TCP (/proc/net/snmp "Tcp:" lines: "ActiveOpens", the
// connections this host's programs opened, refused ones included; "PassiveOpens", those its
// listeners accepted); -1 if absent.
inline long tcp_counter(const std::string& name) {
  std::ifstream in("/proc/net/snmp");
  std::string names, values, line;
  while (std::getline(in, line))
    if (line.rfind("Tcp:", 0) == 0) {
      if (names.empty()) names = line;
      else values = line;
    }
  std::istringstream n(names), v(values);
  std::string key, value;
  while (n >> key && v >> value)
    if (key == name) return std::stol(value);
  return -1;
}

}  // namespace bench
