#include "cli/drift_cmd.h"

#include <chrono>
#include <thread>

#include <fmt/format.h>

#include "base/text.h"
#include "cli/interact.h"
#include "cli/render.h"

namespace berth::cli {

using json = nlohmann::json;

void add_drift_command(CLI::App& db, DriftCommand& cmd) {
  cmd.cmd = db.add_subcommand("drift", "compare each environment's copy's schema with the standard's version it is at "
                                       "(counters, definers and column order ignored) and show every difference; exit 1 on drift");
  cmd.cmd->add_option("--env", cmd.env, "only this environment's copies (its owner and editors; all of them: admins)");
  cmd.cmd->add_flag("--show", cmd.show, "show the latest check; start none");
  cmd.cmd->add_flag("-q,--quiet", cmd.quiet, "print nothing but errors (the exit code says whether a copy drifted)");
  cmd.cmd->add_option("-o,--output", cmd.output, "table or json")->check(CLI::IsMember({"table", "json"}));
  cmd.cmd->add_option("--timeout", cmd.timeout, "give up waiting after this long")->capture_default_str();
}

std::optional<int> run_drift_command(client::Client& c, const DriftCommand& cmd) {
  if (!cmd.cmd || !cmd.cmd->parsed()) return std::nullopt;
  auto d = parse_duration(cmd.timeout);
  if (!d) return fail(invalid(fmt::format("--timeout '{}': write a duration, like 90s or 10m", cmd.timeout)));
  const std::string show = "/v1/drift" + (cmd.env.empty() ? "" : "?env=" + percent_encode(cmd.env));
  auto r = cmd.show ? c.get(show)
                    : c.post(cmd.env.empty() ? "/v1/drift" : "/v1/environments/" + percent_encode(cmd.env) + "/drift", json::object());
  if (!r.ok()) return fail(r.error());
  const int id = (*r)["id"].get<int>();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(*d);
  while ((*r)["state"] == "running") {
    if (std::chrono::steady_clock::now() > deadline)
      return fail(unavailable(fmt::format("the drift check still runs after {}; see berth db drift --show", cmd.timeout)));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // a display refresh, not a wait for state
    r = c.get(show);
    if (!r.ok()) return fail(r.error());
    if ((*r)["id"].get<int>() != id) return fail(conflict("another drift check started meanwhile; see berth db drift --show"));
  }
  if (cmd.output == "json") fmt::print("{}\n", r->dump(2));
  else if (!cmd.quiet) fmt::print("{}", drift_table(*r));
  for (const auto& w : (*r)["rows"])
    if (w["state"] == "failed" || (w["drift"].is_number_integer() && w["drift"].get<int>() > 0)) return 1;
  return 0;
}

}  // namespace berth::cli
