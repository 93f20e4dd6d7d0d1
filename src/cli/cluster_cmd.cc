#include "cli/cluster_cmd.h"

#include <chrono>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/text.h"
#include "cli/interact.h"
#include "cli/render.h"

namespace berth::cli {

using json = nlohmann::json;

void add_cluster_commands(CLI::App& app, ClusterCommands& cmd) {
  auto* cluster = app.add_subcommand("cluster", "the hosts of a daemon's Swarm (berth serve --cluster-host)");
  cluster->require_subcommand(1);
  cmd.ls = cluster->add_subcommand("ls", "each host: its state, capacity, instances and labels");
  cmd.ls->add_option("-o,--output", cmd.output, "table or json")->check(CLI::IsMember({"table", "json"}));
  cmd.add = cluster->add_subcommand("add", "add a host: a dockerd in no Swarm joins the daemon's, one in it is taken as "
                                           "it is (admins)");
  cmd.add->add_option("endpoint", cmd.host, "its Engine API, like unix:///run/host-2/docker.sock")->required();
  cmd.add->add_option("--advertise", cmd.advertise, "its address for the Swarm, when it joins (default: what dockerd picks)");
  cmd.add->add_option("--label", cmd.labels, "KEY=VALUE set on its node, for constraints (repeat)");
  cmd.rm = cluster->add_subcommand("rm", "a host leaves: its instances move one at a time, each ready elsewhere before the "
                                         "next, then berth's containers there are removed and it leaves the Swarm (admins)");
  cmd.rm->add_option("host", cmd.host, "the host's name")->required();
  cmd.rm->add_flag("--force", cmd.force, "forget a lost host now, without removing what may still run on it");
  cmd.rm->add_flag("--no-wait", cmd.no_wait, "return once the host has started leaving");
  cmd.rm->add_option("--timeout", cmd.timeout, "give up waiting after this long")->capture_default_str();
  cmd.drain = cluster->add_subcommand("drain", "move every instance off a host, one at a time, each ready at its address "
                                               "elsewhere before the next (admins)");
  cmd.drain->add_option("host", cmd.host, "the host's name")->required();
  cmd.undrain = cluster->add_subcommand("undrain", "let a drained host take instances again (admins)");
  cmd.undrain->add_option("host", cmd.host, "the host's name")->required();
}

namespace {

// The host named `host` in GET /v1/cluster's answer; null when it is not there.
json host_in(const json& cluster, const std::string& host) {
  if (cluster.contains("hosts") && cluster["hosts"].is_array())
    for (const auto& h : cluster["hosts"])
      if (h.value("host", "") == host || h.value("endpoint", "") == host) return h;
  return nullptr;
}

int remove(client::Client& c, const ClusterCommands& cmd) {
  auto d = parse_duration(cmd.timeout);
  if (!d) return fail(invalid(fmt::format("--timeout '{}': write a duration, like 90s or 10m", cmd.timeout)));
  auto r = c.del("/v1/cluster/hosts/" + percent_encode(cmd.host) + (cmd.force ? "?force=1" : ""));
  if (!r.ok()) return fail(r.error());
  const json before = host_in(*r, cmd.host);
  if (before.is_null()) {
    fmt::print("{} has left the cluster\n", cmd.host);
    return 0;
  }
  fmt::print("{} is leaving the cluster: {} instance(s) to move, one at a time\n", cmd.host, before["instances"].size());
  if (cmd.no_wait) return 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(*d);
  std::size_t last = before["instances"].size();
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // (a person waits: this polls the daemon)
    auto now = c.get("/v1/cluster");
    if (!now.ok()) return fail(now.error());
    const json h = host_in(*now, cmd.host);
    if (h.is_null()) {
      fmt::print("{} has left the cluster\n", cmd.host);
      return 0;
    }
    if (h["instances"].size() != last) {
      last = h["instances"].size();
      fmt::print("{}: {} instance(s) left\n", cmd.host, last);
    }
  }
  auto last_seen = c.get("/v1/cluster");
  const json h = last_seen.ok() ? host_in(*last_seen, cmd.host) : json();
  return fail(unavailable(fmt::format("{} has not left within {} (state {}, {} instance(s) there); it goes on leaving: "
                                      "see berth cluster ls and berth events",
                                      cmd.host, cmd.timeout, h.is_null() ? "gone" : h.value("state", "?"),
                                      h.is_null() ? 0 : h["instances"].size())));
}

}  // namespace

std::optional<int> run_cluster_command(client::Client& c, const ClusterCommands& cmd) {
  if (cmd.ls->parsed()) {
    auto r = c.get("/v1/cluster");
    if (!r.ok()) return fail(r.error());
    if (cmd.output == "json") fmt::print("{}\n", r->dump(2));
    else fmt::print("{}", cluster_table(*r));
    return 0;
  }
  if (cmd.add->parsed()) {
    json body = {{"endpoint", cmd.host}};
    if (!cmd.advertise.empty()) body["advertise"] = cmd.advertise;
    for (const auto& kv : cmd.labels) {
      const auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0)
        return fail(invalid(fmt::format("--label '{}': write KEY=VALUE, like rack=r2", kv)));
      body["labels"][kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    auto r = c.post("/v1/cluster/hosts", body);
    if (!r.ok()) return fail(r.error());
    fmt::print("{} ({}) added\n{}", (*r)["host"].value("host", ""), cmd.host, cluster_table(*r));
    return 0;
  }
  if (cmd.rm->parsed()) return remove(c, cmd);
  if (cmd.drain->parsed() || cmd.undrain->parsed()) {
    auto r = c.post("/v1/cluster/hosts/" + percent_encode(cmd.host) + "/" + (cmd.drain->parsed() ? "drain" : "undrain"),
                    json::object());
    if (!r.ok()) return fail(r.error());
    fmt::print("{}", cluster_table(*r));
    return 0;
  }
  return std::nullopt;
}

}  // namespace berth::cli
