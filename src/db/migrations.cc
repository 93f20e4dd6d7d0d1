#include "db/migrations.h"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <fmt/format.h>

#include "base/digest.h"

namespace berth::db {
namespace fs = std::filesystem;

namespace {

constexpr std::string_view kNaming =
    "a migration is named V<version>__<description>.sql (V7__add_refund_state.sql, V1.2__x.sql) or "
    "R__<description>.sql";

std::string short_sum(const std::string& sum) { return sum.substr(0, 12); }

std::string format_version(const std::vector<std::uint64_t>& version) {
  std::string out;
  for (std::size_t i = 0; i < version.size(); ++i) out += (i ? "." : "") + std::to_string(version[i]);
  return out;
}

}  // namespace

std::string Migration::version_text() const { return format_version(version); }

bool migration_before(const Migration& a, const Migration& b) {
  if (a.kind != b.kind) return a.kind == Migration::Kind::kVersioned;
  if (a.kind == Migration::Kind::kVersioned && a.version != b.version)
    return std::lexicographical_compare(a.version.begin(), a.version.end(), b.version.begin(), b.version.end());
  return a.description < b.description;
}

Result<std::optional<Migration>> parse_migration_name(std::string_view file) {
  if (file.size() < 4 || file.substr(file.size() - 4) != ".sql") return std::optional<Migration>();
  const std::string_view stem = file.substr(0, file.size() - 4);
  const auto sep = stem.find("__");
  auto bad = [&](std::string_view why) {
    return invalid(fmt::format("{}: {}; {}", file, why, kNaming));
  };
  if (sep == std::string_view::npos) return bad("no '__' between its version and its description");
  Migration m;
  m.file = std::string(file);
  const std::string_view head = stem.substr(0, sep);
  const std::string_view desc = stem.substr(sep + 2);
  if (head == "R") {
    m.kind = Migration::Kind::kRepeatable;
  } else if (head.size() > 1 && head[0] == 'V') {
    m.kind = Migration::Kind::kVersioned;
    std::string_view v = head.substr(1);
    while (true) {
      const auto end = v.find_first_of("._");
      const std::string_view part = v.substr(0, end);
      std::uint64_t n = 0;
      auto [p, ec] = std::from_chars(part.data(), part.data() + part.size(), n);
      if (part.empty() || ec != std::errc() || p != part.data() + part.size())
        return bad(fmt::format("its version '{}' is not numbers separated by '.' or '_'", head.substr(1)));
      m.version.push_back(n);
      if (end == std::string_view::npos) break;
      v.remove_prefix(end + 1);
    }
    while (m.version.size() > 1 && m.version.back() == 0) m.version.pop_back();  // 1.0 is 1, as in Flyway
  } else {
    return bad(fmt::format("it starts with '{}', not V<version> or R", head));
  }
  if (desc.empty()) return bad("its description is empty");
  for (char c : desc) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || c == '/') return bad("its description has a control character");
  }
  m.description = std::string(desc);
  std::replace(m.description.begin(), m.description.end(), '_', ' ');
  return std::optional<Migration>(std::move(m));
}

Result<std::optional<Migration>> migration_from_text(std::string_view file, std::string sql) {
  auto parsed = parse_migration_name(file);
  if (!parsed.ok() || !*parsed) return parsed;
  if (sql.size() > kMaxMigrationBytes)
    return invalid(fmt::format("{} has {} bytes; a migration has at most {}", file, sql.size(), kMaxMigrationBytes));
  Migration m = std::move(**parsed);
  m.checksum = sha256_hex(sql);
  m.sql = std::move(sql);
  return std::optional<Migration>(std::move(m));
}

Result<std::vector<Migration>> ordered_migrations(const std::string& where, std::vector<Migration> migrations) {
  std::map<std::vector<std::uint64_t>, std::string> versions;  // version → file
  std::set<std::string> repeatables;
  for (const auto& m : migrations) {
    if (m.kind == Migration::Kind::kVersioned) {
      auto [at, fresh] = versions.emplace(m.version, m.file);
      if (!fresh)
        return invalid(fmt::format("{}: {} and {} have the same version {}; each version is one file", where, at->second, m.file,
                                   m.version_text()));
    } else if (!repeatables.insert(m.description).second) {
      return invalid(fmt::format("{}: two repeatable migrations are named '{}'", where, m.description));
    }
  }
  std::sort(migrations.begin(), migrations.end(), migration_before);
  return migrations;
}

Result<std::vector<Migration>> read_migrations(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return not_found(fmt::format("{} is not a directory of migrations", dir));
  std::vector<Migration> out;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    auto parsed = parse_migration_name(name);
    if (!parsed.ok()) return parsed.error().wrap(dir);
    if (!*parsed) continue;
    if (it->is_symlink(ec) || !it->is_regular_file(ec))
      return invalid(fmt::format("{}/{} is not a regular file (a migration is never a symbolic link)", dir, name));
    const std::uint64_t size = it->file_size(ec);
    if (ec) return unavailable(fmt::format("{}/{}: {}", dir, name, ec.message()));
    if (size > kMaxMigrationBytes)
      return invalid(fmt::format("{}/{} has {} bytes; a migration has at most {}", dir, name, size, kMaxMigrationBytes));
    std::ifstream in(it->path(), std::ios::binary);
    std::string sql(size, '\0');
    if (!in.read(sql.data(), static_cast<std::streamsize>(size))) return unavailable(fmt::format("reading {}/{} failed", dir, name));
    auto m = migration_from_text(name, std::move(sql));
    if (!m.ok()) return m.error().wrap(dir);
    (*m)->path = it->path().string();
    out.push_back(std::move(**m));
  }
  if (ec) return unavailable(fmt::format("listing {}: {}", dir, ec.message()));
  return ordered_migrations(dir, std::move(out));
}

Result<std::vector<Migration>> plan_release(const std::string& standard, const std::vector<Migration>& released,
                                            const std::vector<Migration>& available, const ReleaseOptions& options) {
  std::map<std::vector<std::uint64_t>, const Migration*> done;  // versioned, by version
  std::map<std::string, const Migration*> last_repeat;          // repeatable: its latest record
  for (const auto& m : released) {
    if (m.kind == Migration::Kind::kVersioned) done[m.version] = &m;
    else last_repeat[m.description] = &m;
  }
  std::vector<std::string> problems;
  std::map<std::vector<std::uint64_t>, const Migration*> here;
  std::set<std::string> repeatables;
  for (const auto& m : available) {
    if (m.kind == Migration::Kind::kRepeatable) {
      if (!repeatables.insert(m.description).second)
        problems.push_back(fmt::format("two repeatable migrations are named '{}'", m.description));
    } else if (auto [at, fresh] = here.emplace(m.version, &m); !fresh) {
      problems.push_back(fmt::format("{} and {} have the same version {}; each version is one file", at->second->file, m.file,
                                     m.version_text()));
    }
  }
  if (!problems.empty()) return conflict(problems.front());
  // What was released stays as it was.
  // (A developer's own migrations, applied to a copy, have no version that released them.)
  for (const auto& [v, m] : done) {
    auto it = here.find(v);
    if (it == here.end()) {
      problems.push_back(m->released_in ? fmt::format("{} was released in version {} of '{}' and is not in the directory; a "
                                                      "released migration stays",
                                                      m->file, m->released_in, standard)
                                        : fmt::format("{} was applied to {} and is not in the directory; an applied "
                                                      "migration stays",
                                                      m->file, standard));
    } else if (it->second->checksum != m->checksum) {
      problems.push_back(fmt::format("{} changed since {}: its checksum was {}, now {}; write a new migration instead of "
                                     "editing {} one",
                                     it->second->file,
                                     m->released_in ? fmt::format("version {} of '{}' released it", m->released_in, standard)
                                                    : fmt::format("it was applied to {}", standard),
                                     short_sum(m->checksum), short_sum(it->second->checksum),
                                     m->released_in ? "a released" : "an applied"));
    }
  }
  std::vector<Migration> pending;
  // (`available` is in version order: each new one is checked against the one before it.)
  std::vector<std::uint64_t> last = done.empty() ? std::vector<std::uint64_t>{} : done.rbegin()->first;
  for (const auto& m : available) {
    if (m.kind != Migration::Kind::kVersioned || done.count(m.version)) continue;
    if (!options.out_of_order && !last.empty()) {
      const bool single = last.size() == 1 && m.version.size() == 1;
      if (!std::lexicographical_compare(last.begin(), last.end(), m.version.begin(), m.version.end()))
        problems.push_back(fmt::format("{} is out of order: '{}' is at V{} already (--out-of-order releases it anyway)",
                                       m.file, standard, format_version(last)));
      else if (single && m.version[0] != last[0] + 1)
        problems.push_back(fmt::format("{} leaves a gap: the version after V{} is V{} (--out-of-order releases it anyway)",
                                       m.file, last[0], last[0] + 1));
    }
    pending.push_back(m);
    last = std::max(last, m.version);
  }
  for (const auto& m : available) {
    if (m.kind != Migration::Kind::kRepeatable) continue;
    auto it = last_repeat.find(m.description);
    if (it == last_repeat.end() || it->second->checksum != m.checksum) pending.push_back(m);
  }
  if (!problems.empty()) {
    Error e = conflict(problems.size() == 1 ? problems.front()
                                            : fmt::format("{} problems with the migrations of '{}', first: {}", problems.size(),
                                                          standard, problems.front()));
    e.details = std::move(problems);
    return e;
  }
  if (pending.empty()) return conflict(fmt::format("nothing to release: every migration is in '{}' already", standard));
  return pending;
}

nlohmann::json to_json(const Migration& m) {
  return {{"file", m.file},
          {"kind", m.kind == Migration::Kind::kVersioned ? "versioned" : "repeatable"},
          {"version", m.version_text()},
          {"description", m.description},
          {"checksum", m.checksum},
          {"released_in", m.released_in}};
}

Result<Migration> migration_from_json(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("file") || !j["file"].is_string() || !j.contains("checksum") || !j["checksum"].is_string())
    return invalid("a recorded migration needs its file and checksum");
  auto parsed = parse_migration_name(j["file"].get<std::string>());
  if (!parsed.ok()) return parsed.error();
  if (!*parsed) return invalid(fmt::format("recorded migration '{}' is not a .sql file", j["file"].get<std::string>()));
  Migration m = std::move(**parsed);
  m.checksum = j["checksum"].get<std::string>();
  if (j.contains("released_in") && j["released_in"].is_number_integer()) m.released_in = j["released_in"].get<int>();
  return m;
}

}  // namespace berth::db
