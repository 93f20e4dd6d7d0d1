// cli/cluster_cmd.h — `berth cluster ls | add | rm | drain | undrain`: the hosts of a daemon's
// Swarm (berth serve --cluster-host). Declares the subcommands on the CLI's parser, then runs the
// one given against the daemon.
//
// Threads: the CLI's one thread; a call blocks until its command is done (rm: until the host has
// left, unless --no-wait).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "client/client.h"

namespace berth::cli {

struct ClusterCommands {
  CLI::App* ls = nullptr;
  CLI::App* add = nullptr;
  CLI::App* rm = nullptr;
  CLI::App* drain = nullptr;
  CLI::App* undrain = nullptr;
  std::string host;  // add: its Engine API endpoint; the others: its name (or endpoint)
  std::string output = "table";
  std::string advertise;
  std::vector<std::string> labels;  // KEY=VALUE
  bool force = false;
  bool no_wait = false;
  std::string timeout = "10m";
};

// Declares `cluster` and its subcommands on `app`, their values kept in `cmd` (which outlives the parse).
void add_cluster_commands(CLI::App& app, ClusterCommands& cmd);
// Runs the cluster subcommand that was given: its exit code; nullopt when none was.
std::optional<int> run_cluster_command(client::Client& c, const ClusterCommands& cmd);

}  // namespace berth::cli
