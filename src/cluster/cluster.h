// cluster/cluster.h — berth across hosts: the hosts of a Docker Swarm as berth sees them, and the
// parsers of what a Swarm manager and a host's dockerd say about them.
//
// A host is a dockerd reachable by its Engine API (today its unix socket; the test harness,
// scripts/cluster.sh, runs several on one machine in network namespaces). berth drives an
// existing engine — Docker Swarm — for membership and node health, and never a home-made one:
// which hosts exist and whether they are up is what the Swarm's managers say (GET /nodes).
// Placement, addresses and failover are berth's own and build on these values.
//
// Plain values and pure functions: any thread. The parsers take dockerd's answers, which berth
// does not trust: they are bounded by the Engine client (32 MiB a body), never throw, and say
// which field was wrong (fuzzed: fuzz/cluster_fuzz.cc).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "base/clock.h"
#include "base/result.h"

namespace berth::cluster {

// One node of the Swarm (GET /nodes on a manager).
struct Node {
  std::string id;
  std::string hostname;
  std::string role;          // manager | worker
  bool leader = false;
  std::string state;         // ready | down | unknown | disconnected
  std::string availability;  // active | pause | drain
  std::string addr;          // the address it talks to the Swarm from
  std::string message;       // what the Swarm says of its state ("heartbeat failure", ...)
  std::int64_t nano_cpus = 0;
  std::int64_t memory_bytes = 0;
  std::string engine_version;
  std::map<std::string, std::string> labels;  // the node's labels (Spec.Labels), placement constraints use them
  std::uint64_t version = 0;                  // of its spec, for updates

  bool operator==(const Node&) const = default;
};

// What a host's dockerd says of itself (GET /info): enough to tell whether it is in a Swarm.
struct LocalInfo {
  std::string hostname;
  std::string engine_version;
  int cpus = 0;
  std::int64_t memory_bytes = 0;
  std::string swarm_state;  // inactive | pending | active | error | locked
  std::string node_id;      // "" outside a Swarm
  std::string node_addr;    // the address it advertises to the Swarm
  bool manager = false;     // a manager of its Swarm (ControlAvailable)
  std::string cluster_id;   // the Swarm's id, known to managers only
  std::vector<std::string> managers;  // the Swarm's managers' addresses ("10.231.0.11:2377")
};

// The Swarm as a manager knows it (GET /swarm).
struct SwarmInfo {
  std::string id;
  std::uint64_t version = 0;  // of its spec, for updates
  std::string worker_token;
  std::string manager_token;
  Millis heartbeat_ms = 0;    // the dispatcher's heartbeat period
};

Result<std::vector<Node>> parse_nodes(std::string_view json);
Result<LocalInfo> parse_info(std::string_view json);
Result<SwarmInfo> parse_swarm(std::string_view json);

}  // namespace berth::cluster
