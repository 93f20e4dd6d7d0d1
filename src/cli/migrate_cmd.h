// cli/migrate_cmd.h — `berth db migrate --env ENV [DB] --from DIR`: apply a developer's own
// migrations (Flyway-named files in a local directory) to the environment's copy of a database.
// The files' texts are sent (the daemon reads nothing of the developer's on its host); the copy
// records them apart from the standard's, so a fleet rollout neither applies nor trips over them.
//
// Threads: the CLI's one thread; blocks until the migrations have run.
#pragma once

#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "client/client.h"

namespace berth::cli {

struct MigrateCommand {
  CLI::App* cmd = nullptr;
  std::string env;
  std::string db;  // "": the environment's only database
  std::string from;
  bool out_of_order = false;
  bool quiet = false;
};

void add_migrate_command(CLI::App& db, MigrateCommand& cmd);
// Its exit code (1 when a file failed); nullopt when it was not given.
std::optional<int> run_migrate_command(client::Client& c, const MigrateCommand& cmd);

}  // namespace berth::cli
