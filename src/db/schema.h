// db/schema.h — a database's schema as berth compares it (berth db drift): each object's
// definition, normalized so that what does not make two schemas differ does not show.
//
// Input is what `mariadb-dump --no-data --skip-comments --compact --routines --triggers` prints
// for the standard's schemas (each preceded by its `USE` line). Normalized away:
//   - AUTO_INCREMENT=N table options (the counters move with the data: bytebase/bytebase#123);
//   - DEFINER=`user`@`host` clauses (who created a view or routine);
//   - version comments' wrappers (/*!50001 ... */ keeps its text), `SET` session lines;
//   - the order of a table's columns and keys in its CREATE TABLE (one per line, sorted), and
//     trailing commas.
// Objects are named SCHEMA.NAME with their kind: "table", "view", "procedure", "function",
// "trigger", "event".
//
// Threading: values and functions; any thread. Parsing is of a server's output (a copy an
// environment may have changed in any way): bounded, never trusted.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace berth::db {

struct SchemaObject {
  std::string kind;  // table | view | procedure | function | trigger | event
  std::vector<std::string> lines;  // normalized definition
};

// SCHEMA.NAME (with the kind for non-tables: "app01.v_orders (view)") → its definition.
using Schema = std::map<std::string, SchemaObject>;

inline constexpr std::size_t kMaxSchemaDumpBytes = 64u << 20;
Result<Schema> parse_schema_dump(std::string_view dump);

struct SchemaDifference {
  std::string object;   // its key in Schema
  std::string kind;     // table | view | ...
  enum class What { kMissing, kExtra, kChanged } what = What::kChanged;
  std::vector<std::string> only_expected;  // lines the expected schema has and the actual lacks
  std::vector<std::string> only_actual;    // and the other way round
};

// What `actual` (a copy) has that `expected` (the golden of the version it claims) has not, and
// the other way round, object by object, in the order of their names.
std::vector<SchemaDifference> compare_schemas(const Schema& expected, const Schema& actual);

}  // namespace berth::db
