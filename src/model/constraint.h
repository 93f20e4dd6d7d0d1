// model/constraint.h — a placement constraint as the catalog writes it, like Marathon's:
// [field, OPERATOR, value?], the field being `hostname` (or `host`) or a host label.
// What each operator means when instances are placed is cluster/placement.h's.
//
// Pure values and parsing: any thread. The parse names what is wrong and what would be valid;
// the catalog locates it in its file.
#pragma once

#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "base/result.h"

namespace berth::model {

struct Constraint {
  enum class Op { kUnique, kCluster, kGroupBy, kMaxPer, kLike, kUnlike };
  std::string field;  // "hostname" or a label
  Op op = Op::kUnique;
  std::string value;  // CLUSTER/IS, LIKE/UNLIKE (the pattern); GROUP_BY/MAX_PER: the number as written
  int count = 0;      // GROUP_BY (0: as many values as there are), MAX_PER
  std::shared_ptr<const std::regex> pattern;  // LIKE/UNLIKE

  // As the catalog would write it: ["rack", "GROUP_BY", "3"].
  std::vector<std::string> words() const;
};

// "UNIQUE", "CLUSTER", "GROUP_BY", "MAX_PER", "LIKE", "UNLIKE".
const char* to_string(Constraint::Op op);

// ["hostname", "UNIQUE"], ["rack", "GROUP_BY", "3"], ["zone", "LIKE", "eu-.*"]...
Result<Constraint> parse_constraint(const std::vector<std::string>& words);

}  // namespace berth::model
