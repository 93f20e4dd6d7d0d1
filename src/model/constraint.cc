#include "model/constraint.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <optional>

#include <fmt/format.h>

namespace berth::model {

namespace {

constexpr std::size_t kMaxPattern = 256;  // a LIKE/UNLIKE pattern (std::regex recurses per character)
constexpr int kMaxCount = 10'000;

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

}  // namespace

const char* to_string(Constraint::Op op) {
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

std::vector<std::string> Constraint::words() const {
  std::vector<std::string> w{field, to_string(op)};
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

}  // namespace berth::model
