#include "cli/migrate_cmd.h"

#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/text.h"
#include "cli/interact.h"

namespace berth::cli {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// What the API takes in one request (its body limit is 8 MiB; JSON escaping adds a little).
constexpr std::uintmax_t kMaxSend = 7u << 20;

}  // namespace

void add_migrate_command(CLI::App& db, MigrateCommand& cmd) {
  cmd.cmd = db.add_subcommand("migrate", "apply your own migrations (V1__x.sql, R__x.sql in a local directory) to an "
                                         "environment's copy; kept apart from the standard's releases");
  cmd.cmd->add_option("--env", cmd.env, "the environment (its owner and editors)")->required();
  cmd.cmd->add_option("database", cmd.db, "the database (default: the environment's only one)");
  cmd.cmd->add_option("--from", cmd.from, "a directory of migration files, read here and sent")->required();
  cmd.cmd->add_flag("--out-of-order", cmd.out_of_order, "apply versions below the last applied one, or after a gap");
  cmd.cmd->add_flag("-q,--quiet", cmd.quiet, "print nothing but errors");
}

std::optional<int> run_migrate_command(client::Client& c, const MigrateCommand& cmd) {
  if (!cmd.cmd || !cmd.cmd->parsed()) return std::nullopt;
  std::error_code ec;
  if (!fs::is_directory(cmd.from, ec)) return fail(not_found(fmt::format("--from {}: not a directory", cmd.from)));
  json files = json::array();
  std::uintmax_t total = 0;
  for (fs::directory_iterator it(cmd.from, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() != ".sql" || !it->is_regular_file(ec)) continue;
    total += it->file_size(ec);
    if (total > kMaxSend)
      return fail(invalid(fmt::format("the .sql files of {} are larger than {} in all; apply them in parts", cmd.from, format_bytes(kMaxSend))));
    std::ifstream in(it->path(), std::ios::binary);
    std::string sql((std::istreambuf_iterator<char>(in)), {});
    if (!in.good() && !in.eof()) return fail(unavailable(fmt::format("reading {} failed", it->path().string())));
    files.push_back({{"file", it->path().filename().string()}, {"sql", sql}});
  }
  if (ec) return fail(unavailable(fmt::format("listing {}: {}", cmd.from, ec.message())));
  if (files.empty()) return fail(not_found(fmt::format("{} has no .sql file", cmd.from)));
  std::string db = cmd.db;
  if (db.empty()) {  // the environment's only database
    auto s = c.get("/v1/environments/" + percent_encode(cmd.env));
    if (!s.ok()) return fail(s.error());
    std::vector<std::string> dbs;
    for (const auto& a : (*s)["apps"])
      if (a.contains("database")) dbs.push_back(a["app"].get<std::string>());
    if (dbs.size() != 1)
      return fail(invalid(fmt::format("environment '{}' has {} databases: name one (berth db migrate --env {} DB --from {})",
                                      cmd.env, dbs.size(), cmd.env, cmd.from)));
    db = dbs.front();
  }
  auto r = c.post(fmt::format("/v1/environments/{}/databases/{}/migrate", percent_encode(cmd.env), percent_encode(db)),
                  {{"files", files}, {"out_of_order", cmd.out_of_order}});
  if (!r.ok()) return fail(r.error());
  return follow_job(c, (*r)["id"].get<std::string>(), cmd.quiet);
}

}  // namespace berth::cli
