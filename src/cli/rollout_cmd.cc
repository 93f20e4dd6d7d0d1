#include "cli/rollout_cmd.h"

#include <chrono>
#include <thread>

#include <fmt/format.h>

#include "base/text.h"
#include "cli/interact.h"
#include "cli/render.h"

namespace berth::cli {

using json = nlohmann::json;

void add_rollout_command(CLI::App& db, RolloutCommand& cmd) {
  cmd.cmd = db.add_subcommand("rollout", "bring every environment's copy of a standard to its latest version (or @VERSION): "
                                         "each snapshotted, migrated through its server, put back if a file fails (admins)");
  cmd.cmd->add_option("standard", cmd.standard, "STANDARD or STANDARD@VERSION")->required();
  cmd.cmd->add_option("--parallel", cmd.parallel, "copies migrated at once")->capture_default_str()->check(CLI::Range(1, 64));
  cmd.cmd->add_option("--canary", cmd.canary, "environments migrated first, the rest only if they all succeed (E1,E2)")
      ->delimiter(',');
  cmd.cmd->add_flag("--continue-on-error", cmd.continue_on_error, "a failed copy does not stop the others from starting");
  cmd.cmd->add_flag("--unsafe-no-snapshot", cmd.unsafe_no_snapshot,
                    "take no snapshot (a copy that fails is left as the failure left it)");
  cmd.cmd->add_flag("--show", cmd.show, "show the standard's latest rollout; start none");
  cmd.cmd->add_flag("--detach", cmd.detach, "start it and return");
  cmd.cmd->add_flag("-q,--quiet", cmd.quiet, "print nothing but errors");
  cmd.cmd->add_option("-o,--output", cmd.output, "table or json")->check(CLI::IsMember({"table", "json"}));
  cmd.cmd->add_option("--timeout", cmd.timeout, "give up waiting after this long")->capture_default_str();
}

std::optional<int> run_rollout_command(client::Client& c, const RolloutCommand& cmd) {
  if (!cmd.cmd || !cmd.cmd->parsed()) return std::nullopt;
  std::string name = cmd.standard;
  json body = {{"parallel", cmd.parallel}, {"canary", cmd.canary}, {"continue_on_error", cmd.continue_on_error},
               {"unsafe_no_snapshot", cmd.unsafe_no_snapshot}};
  if (auto at = name.find('@'); at != std::string::npos) {
    const std::string v = name.substr(at + 1);
    name = name.substr(0, at);
    char* end = nullptr;
    const long n = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end || n < 1) return fail(invalid(fmt::format("'{}': write STANDARD or STANDARD@VERSION (a number)", cmd.standard)));
    body["version"] = n;
  }
  auto d = parse_duration(cmd.timeout);
  if (!d) return fail(invalid(fmt::format("--timeout '{}': write a duration, like 90s or 10m", cmd.timeout)));
  const std::string path = "/v1/standards/" + percent_encode(name) + "/rollout";
  auto r = cmd.show ? c.get(path) : c.post(path, body);
  if (!r.ok()) return fail(r.error());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(*d);
  while (!cmd.show && !cmd.detach && (*r)["state"] == "running") {
    if (std::chrono::steady_clock::now() > deadline) {
      fmt::print("{}", rollout_table(*r));
      return fail(unavailable(fmt::format("the rollout still runs after {}; see berth db rollout {} --show", cmd.timeout, name)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // a display refresh, not a wait for state
    r = c.get(path);
    if (!r.ok()) return fail(r.error());
  }
  if (cmd.output == "json") fmt::print("{}\n", r->dump(2));
  else if (!cmd.quiet) fmt::print("{}", rollout_table(*r));
  for (const auto& w : (*r)["rows"])
    if (w["state"] == "failed" || w["state"] == "restored") return 1;
  return 0;
}

}  // namespace berth::cli
