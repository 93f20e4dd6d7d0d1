#include "cluster/placement.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <limits>
#include <optional>
#include <set>
#include <tuple>
#include <unordered_map>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace berth::cluster {

namespace {

constexpr std::size_t kMaxPattern = 256;  // a LIKE/UNLIKE pattern (std::regex recurses per character)
constexpr int kMaxCount = 10'000;

const char* name_of(Constraint::Op op) {
  switch (op) {
    case Constraint::Op::kUnique: return "UNIQUE";
    case Constraint::Op::kCluster: return "CLUSTER";
    case Constraint::Op::kGroupBy: return "GROUP_BY";
    case Constraint::Op::kMaxPer: return "MAX_PER";
    case Constraint::Op::kLike: return "LIKE";
    case Constraint::Op::kUnlike: return "UNLIKE";
  }
  return "?";
}

bool valid_field(const std::string& f) {
  return !f.empty() && f.size() <= 128 && std::all_of(f.begin(), f.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '_' || c == '-' || c == '.' || c == '/';
  });
}

std::optional<int> count_of(const std::string& text) {
  int n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size() || n < 1 || n > kMaxCount) return std::nullopt;
  return n;
}

std::string cpus(std::int64_t nano) { return fmt::format("{:g}", static_cast<double>(nano) / 1e9); }
std::string mib(std::int64_t bytes) { return fmt::format("{} MiB", bytes / (1024 * 1024)); }

}  // namespace

std::vector<std::string> Constraint::words() const {
  std::vector<std::string> w{field, name_of(op)};
  if (!value.empty()) w.push_back(value);
  return w;
}

Result<Constraint> parse_constraint(const std::vector<std::string>& words) {
  const std::string valid_ops = "UNIQUE, CLUSTER value, IS value, GROUP_BY [n], MAX_PER n, LIKE regex or UNLIKE regex";
  if (words.size() < 2 || words.size() > 3)
    return invalid(fmt::format("a constraint is [field, OPERATOR] or [field, OPERATOR, value], not {} words", words.size()));
  Constraint c;
  c.field = words[0] == "host" ? "hostname" : words[0];
  if (!valid_field(c.field))
    return invalid(fmt::format("constraint field '{}': give hostname or a host label (letters, digits, _ - . /)", words[0]));
  const std::string& op = words[1];
  const bool has_value = words.size() == 3;
  if (has_value) c.value = words[2];
  auto needs_value = [&](const char* what) -> Status {
    if (!has_value || c.value.empty()) return invalid(fmt::format("constraint {}: {} needs a value ({})", op, op, what));
    return {};
  };
  if (op == "UNIQUE") {
    c.op = Constraint::Op::kUnique;
    if (has_value) return invalid(fmt::format("constraint UNIQUE takes no value, not '{}'", c.value));
  } else if (op == "CLUSTER" || op == "IS") {
    c.op = Constraint::Op::kCluster;
    if (auto st = needs_value("the field's value every instance runs on"); !st.ok()) return st.error();
  } else if (op == "GROUP_BY") {
    c.op = Constraint::Op::kGroupBy;
    if (has_value) {
      auto n = count_of(c.value);
      if (!n) return invalid(fmt::format("constraint GROUP_BY '{}': give how many values to spread over, 1 to {}", c.value, kMaxCount));
      c.count = *n;
    }
  } else if (op == "MAX_PER") {
    c.op = Constraint::Op::kMaxPer;
    if (auto st = needs_value("the most instances per value"); !st.ok()) return st.error();
    auto n = count_of(c.value);
    if (!n) return invalid(fmt::format("constraint MAX_PER '{}': give the most instances per value, 1 to {}", c.value, kMaxCount));
    c.count = *n;
  } else if (op == "LIKE" || op == "UNLIKE") {
    c.op = op == "LIKE" ? Constraint::Op::kLike : Constraint::Op::kUnlike;
    if (auto st = needs_value("a regular expression the whole value matches"); !st.ok()) return st.error();
    if (c.value.size() > kMaxPattern)
      return invalid(fmt::format("constraint {}: the pattern is {} characters; at most {}", op, c.value.size(), kMaxPattern));
    try {
      c.pattern = std::make_shared<const std::regex>(c.value, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      return invalid(fmt::format("constraint {} '{}': not a regular expression ({})", op, c.value, e.what()));
    }
  } else {
    return invalid(fmt::format("constraint operator '{}': give {}", op, valid_ops));
  }
  return c;
}

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
    int instances = 0;
  };
  std::unordered_map<std::string, Load> load;
  for (const auto& p : placed) {
    Load& l = load[p.host];
    ++l.instances;
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
      const std::string rule = fmt::format("{} {}{}", c.field, name_of(c.op), c.value.empty() ? "" : " " + c.value);
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

  // The fewest of this app, then the least taken (the larger of its CPU and memory shares), then
  // the fewest instances in all (apps that ask for no resources spread too), then the first by
  // name.
  const HostSlot* best = nullptr;
  std::tuple<int, double, int, std::string> best_key;
  std::vector<std::string> refused;
  for (const auto& h : hosts) {
    if (std::string why = refusal(h); !why.empty()) {
      refused.push_back(fmt::format("{}: {}", h.name, why));
      continue;
    }
    const Load& l = load[h.name];
    const double cpu_share = h.nano_cpus > 0 ? static_cast<double>(l.cpus) / static_cast<double>(h.nano_cpus) : 0;
    const double mem_share = h.memory_bytes > 0 ? static_cast<double>(l.memory) / static_cast<double>(h.memory_bytes) : 0;
    auto key = std::make_tuple(l.same_app, std::max(cpu_share, mem_share), l.instances, h.name);
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
