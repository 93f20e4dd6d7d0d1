// db/migrations.h — a standard's migrations: the SQL files its DBAs release, read from a
// directory, and what a release of them adds to what the standard already contains.
//
// Flyway's naming, so that existing migration directories work:
//   V<version>__<description>.sql   versioned: applied once, in version order. <version> is
//                                   numbers separated by '.' or '_' (V7, V1.2, V2_1), compared
//                                   number by number (V1.10 after V1.9; V1.0 is V1);
//   R__<description>.sql            repeatable: applied again whenever its checksum changes,
//                                   after the versioned ones, in description order.
// <description> is words separated by '_' ("add_refund_state": "add refund state"). Files that
// are not .sql are left alone (a README); a .sql file named otherwise is refused, naming it. A
// checksum is the SHA-256 of the file's bytes.
//
// A release (plan_release) is refused, saying which file and why, when:
//   - a released versioned migration changed (both checksums given: Flyway's validate) or is
//     missing from the directory;
//   - two files have one version;
//   - a new version is not after the last released one (out of order), or, for versions that
//     are one number each, skips one (a gap: V5 then V7); unless `out_of_order`;
//   - there is nothing new to release.
//
// Threading: values and functions; read_migrations() reads files (a worker thread).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/result.h"

namespace berth::db {

struct Migration {
  enum class Kind { kVersioned, kRepeatable };
  Kind kind = Kind::kVersioned;
  std::string file;                    // "V7__add_refund_state.sql"
  std::vector<std::uint64_t> version;  // versioned: {7}; repeatable: empty
  std::string description;             // "add refund state"
  std::string checksum;                // SHA-256 of the file, hex
  std::string sql;                     // the file's text (read_migrations(); not recorded)
  std::string path;                    // the file it was read from (read_migrations(); not recorded)
  int released_in = 0;                 // recorded: the standard's version that first had it

  // "7", "1.2"; "" for a repeatable.
  std::string version_text() const;
};

// Orders versioned migrations by version, then repeatables by description.
bool migration_before(const Migration& a, const Migration& b);

// One file name as a migration (no checksum or text yet). Not a .sql file: nullopt. A .sql
// file that is not named V<version>__<description>.sql or R__<description>.sql: an error that
// names it and says what would be valid.
Result<std::optional<Migration>> parse_migration_name(std::string_view file);

// One file given by its name and text (a developer's, sent by the CLI), as read_migrations()
// reads one: nullopt when it is not a .sql file; errors as parse_migration_name()'s, or a text
// larger than kMaxMigrationBytes.
Result<std::optional<Migration>> migration_from_text(std::string_view file, std::string sql);
// Files as one set, in the order they apply; refused (naming `where`) when two have one version
// or two repeatables one name.
Result<std::vector<Migration>> ordered_migrations(const std::string& where, std::vector<Migration> migrations);

// Every migration of `dir` (its files, not its subdirectories), each read whole (at most
// kMaxMigrationBytes), in the order they apply. Errors name the directory or the file.
inline constexpr std::uint64_t kMaxMigrationBytes = 256u << 20;
Result<std::vector<Migration>> read_migrations(const std::string& dir);

struct ReleaseOptions {
  bool out_of_order = false;
};

// What a release of `available` (read_migrations()) adds to a standard whose versions contain
// `released` (in the order they were applied; a repeatable may appear more than once): the
// migrations to apply, in order. Refused as the header says; `standard` names it in errors.
Result<std::vector<Migration>> plan_release(const std::string& standard, const std::vector<Migration>& released,
                                            const std::vector<Migration>& available, const ReleaseOptions& options = {});

// A migration as recorded (the standard's versions, the copies): its name, checksum and the
// version that released it; never its text.
nlohmann::json to_json(const Migration& m);
Result<Migration> migration_from_json(const nlohmann::json& j);

}  // namespace berth::db
