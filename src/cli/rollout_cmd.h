// cli/rollout_cmd.h — `berth db rollout STANDARD[@VERSION]`: carry a standard's new version to
// the environments' copies (db/rollout.h) and show how each went, as a table. Declares the
// subcommand on `berth db`, then runs it against the daemon.
//
// Threads: the CLI's one thread; the call blocks until the rollout has ended (not with
// --detach or --show).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "client/client.h"

namespace berth::cli {

struct RolloutCommand {
  CLI::App* cmd = nullptr;
  std::string standard;  // NAME or NAME@VERSION
  int parallel = 2;
  std::vector<std::string> canary;
  bool continue_on_error = false;
  bool unsafe_no_snapshot = false;
  bool show = false;    // the latest rollout, started by anyone; nothing new
  bool detach = false;  // started; not waited for
  bool quiet = false;   // nothing printed but errors
  std::string output = "table";
  std::string timeout = "1h";
};

void add_rollout_command(CLI::App& db, RolloutCommand& cmd);
// Its exit code (1 when a copy failed or was put back); nullopt when it was not given.
std::optional<int> run_rollout_command(client::Client& c, const RolloutCommand& cmd);

}  // namespace berth::cli
