// cli/drift_cmd.h — `berth db drift [--env E]`: check whether each environment's copy still has
// the schema of the standard's version it is at (db/drift.h), and show every difference, object
// by object. Declares the subcommand on `berth db`, then runs it against the daemon.
//
// Threads: the CLI's one thread; the call blocks until the check has ended (not with --show).
#pragma once

#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "client/client.h"

namespace berth::cli {

struct DriftCommand {
  CLI::App* cmd = nullptr;
  std::string env;    // "": every environment's copies (admins)
  bool show = false;  // the latest check, started by anyone; nothing new
  bool quiet = false;
  std::string output = "table";
  std::string timeout = "30m";
};

void add_drift_command(CLI::App& db, DriftCommand& cmd);
// Its exit code (0: no drift; 1: a copy drifted or could not be read); nullopt when not given.
std::optional<int> run_drift_command(client::Client& c, const DriftCommand& cmd);

}  // namespace berth::cli
