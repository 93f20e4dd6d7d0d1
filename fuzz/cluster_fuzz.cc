// Fuzz what berth reads of a Swarm from dockerd (cluster/cluster.h): the node list, a host's
// info and the Swarm's spec. Each parser must answer, never throw or crash, and what it accepts
// must hold together (a node always has an id).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "cluster/cluster.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace berth::cluster;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  if (auto nodes = parse_nodes(input); nodes.ok())
    for (const auto& n : *nodes)
      if (n.id.empty()) __builtin_trap();
  if (auto info = parse_info(input); info.ok() && info->swarm_state.empty()) __builtin_trap();
  if (auto swarm = parse_swarm(input); swarm.ok() && swarm->id.empty()) __builtin_trap();
  return 0;
}
