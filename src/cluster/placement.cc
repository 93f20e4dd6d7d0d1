#include "cluster/placement.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <set>
#include <tuple>
#include <unordered_map>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace berth::cluster {

namespace {

std::string cpus(std::int64_t nano) { return fmt::format("{:g}", static_cast<double>(nano) / 1e9); }
std::string mib(std::int64_t bytes) { return fmt::format("{} MiB", bytes / (1024 * 1024)); }

}  // namespace

Result<std::string> place(const Request& request, const std::vector<HostSlot>& hosts, const std::vector<Placed>& placed) {
  std::unordered_map<std::string, const HostSlot*> by_name;
  for (const auto& h : hosts) by_name.emplace(h.name, &h);
  auto field_of = [&](const std::string& host, const std::string& field) -> std::optional<std::string> {
    if (field == "hostname") return host;
    auto h = by_name.find(host);
    if (h == by_name.end()) return std::nullopt;
    auto l = h->second->labels.find(field);
    if (l == h->second->labels.end()) return std::nullopt;
    return l->second;
  };

  // What is taken on each host, and how many of this app run on it.
  struct Load {
    std::int64_t cpus = 0, memory = 0;
    int same_app = 0;
    int starting = 0;
    int instances = 0;
  };
  std::unordered_map<std::string, Load> load;
  for (const auto& p : placed) {
    Load& l = load[p.host];
    ++l.instances;
    l.starting += p.starting ? 1 : 0;
    l.cpus += p.nano_cpus;
    l.memory += p.memory_bytes;
    if (p.app == request.app) ++l.same_app;
  }
  // Per constraint: how many of this app run on each value of its field; GROUP_BY's values are
  // those of the schedulable hosts.
  std::vector<std::map<std::string, int>> per_value(request.constraints.size());
  std::vector<std::set<std::string>> group_values(request.constraints.size());
  for (std::size_t i = 0; i < request.constraints.size(); ++i) {
    const Constraint& c = request.constraints[i];
    for (const auto& p : placed)
      if (p.app == request.app)
        if (auto v = field_of(p.host, c.field)) ++per_value[i][*v];
    if (c.op == Constraint::Op::kGroupBy)
      for (const auto& h : hosts)
        if (h.schedulable)
          if (auto v = field_of(h.name, c.field)) group_values[i].insert(*v);
  }

  // Why a host cannot take the instance; empty when it can.
  auto refusal = [&](const HostSlot& h) -> std::string {
    if (!h.schedulable) return h.why_not.empty() ? "not schedulable" : h.why_not;
    const Load& l = load[h.name];
    if (request.nano_cpus > 0 && h.nano_cpus > 0 && l.cpus + request.nano_cpus > h.nano_cpus)
      return fmt::format("needs {} CPUs, {} of {} free", cpus(request.nano_cpus), cpus(std::max<std::int64_t>(h.nano_cpus - l.cpus, 0)),
                         cpus(h.nano_cpus));
    if (request.memory_bytes > 0 && h.memory_bytes > 0 && l.memory + request.memory_bytes > h.memory_bytes)
      return fmt::format("needs {}, {} of {} free", mib(request.memory_bytes),
                         mib(std::max<std::int64_t>(h.memory_bytes - l.memory, 0)), mib(h.memory_bytes));
    for (std::size_t i = 0; i < request.constraints.size(); ++i) {
      const Constraint& c = request.constraints[i];
      const auto v = field_of(h.name, c.field);
      const std::string rule = fmt::format("{} {}{}", c.field, model::to_string(c.op), c.value.empty() ? "" : " " + c.value);
      if (!v) {
        if (c.op == Constraint::Op::kUnlike) continue;
        return fmt::format("has no label '{}' ({})", c.field, rule);
      }
      const auto here = per_value[i].find(*v);
      const int n = here == per_value[i].end() ? 0 : here->second;
      switch (c.op) {
        case Constraint::Op::kUnique:
          if (n > 0) return fmt::format("{}={} already runs {} ({})", c.field, *v, request.app, rule);
          break;
        case Constraint::Op::kCluster:
          if (*v != c.value) return fmt::format("{}={} ({})", c.field, *v, rule);
          break;
        case Constraint::Op::kGroupBy: {
          const auto& values = group_values[i];
          if (c.count > 0 && static_cast<int>(values.size()) < c.count)
            return fmt::format("only {} of {} values of {} are schedulable ({})", values.size(), c.count, c.field, rule);
          int least = std::numeric_limits<int>::max();
          for (const auto& value : values) {
            auto it = per_value[i].find(value);
            least = std::min(least, it == per_value[i].end() ? 0 : it->second);
          }
          if (n > least) return fmt::format("{}={} has {} of {}, another value {} ({})", c.field, *v, n, request.app, least, rule);
          break;
        }
        case Constraint::Op::kMaxPer:
          if (n >= c.count) return fmt::format("{}={} already runs {} of {} ({})", c.field, *v, n, request.app, rule);
          break;
        case Constraint::Op::kLike:
          if (!std::regex_match(*v, *c.pattern)) return fmt::format("{}={} ({})", c.field, *v, rule);
          break;
        case Constraint::Op::kUnlike:
          if (std::regex_match(*v, *c.pattern)) return fmt::format("{}={} ({})", c.field, *v, rule);
          break;
      }
    }
    return "";
  };

  // Where its data is, when that host can take it.
  if (auto h = by_name.find(request.prefer); h != by_name.end() && refusal(*h->second).empty()) return h->second->name;
  // The fewest of this app, then the least taken (the larger of its CPU and memory shares), then
  // the fewest still starting, then the fewest instances in all (apps that ask for no resources
  // spread too), then the first by name.
  const HostSlot* best = nullptr;
  std::tuple<int, double, int, int, std::string> best_key;
  std::vector<std::string> refused;
  for (const auto& h : hosts) {
    if (std::string why = refusal(h); !why.empty()) {
      refused.push_back(fmt::format("{}: {}", h.name, why));
      continue;
    }
    const Load& l = load[h.name];
    const double cpu_share = h.nano_cpus > 0 ? static_cast<double>(l.cpus) / static_cast<double>(h.nano_cpus) : 0;
    const double mem_share = h.memory_bytes > 0 ? static_cast<double>(l.memory) / static_cast<double>(h.memory_bytes) : 0;
    auto key = std::make_tuple(l.same_app, std::max(cpu_share, mem_share), l.starting, l.instances, h.name);
    if (!best || key < best_key) {
      best = &h;
      best_key = std::move(key);
    }
  }
  if (best) return best->name;
  std::sort(refused.begin(), refused.end());
  return exhausted(fmt::format("no host can run {} #{}: {}", request.app, request.ordinal,
                               refused.empty() ? "the cluster has no hosts" : fmt::format("{}", fmt::join(refused, "; "))));
}

}  // namespace berth::cluster
