// runtime/cluster/internal.h — what the cluster runtime's source files share: a host as the
// runtime keeps it. Not an interface: only runtime/cluster/*.cc include it.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "cluster/cluster.h"
#include "runtime/cluster/cluster_runtime.h"
#include "runtime/docker/docker_runtime.h"

namespace berth::runtime::cluster {

struct ClusterRuntime::Host {
  Host();
  ~Host();  // (where HostListener is whole: cluster_runtime.cc)
  // kRemoved: left the cluster (berth cluster rm); kept as a slot, since places are indices.
  enum class State { kUnreachable, kUp, kLost, kFencing, kRemoved };
  std::string endpoint;
  std::string hostname;  // as the Swarm knows it (its dockerd's /info Name)
  std::string addr;      // what it advertises to the Swarm, to join again
  ::berth::cluster::Node node;
  State state = State::kUnreachable;
  std::unique_ptr<docker::DockerRuntime> rt;
  std::unique_ptr<HostListener> listener;
  std::unique_ptr<docker::DockerRuntime> fencer;  // removing what is left on it once it is lost
  std::map<std::string, std::string> images;  // images known to be there → id
  bool asking = false;                         // an /info of a lost host under way
  bool leaving = false;                        // berth cluster rm: leaves once empty (or fenced)
  bool adding = false;                         // berth cluster add under way (state kRemoved until up)
  bool finishing = false;                      // leaving: its containers being removed, leaving the Swarm
  bool settling = false;                       // lost, not settled yet (leases.cc): not fenced meanwhile
  bool forget_when_settled = false;            // berth cluster rm --force of a host not settled yet
  bool probing = false;                        // up: its lease asked whether its dockerd is gone (poll())
  Millis up_at = 0;                            // when it last came up (a node list asked before is stale for it)
};

}  // namespace berth::runtime::cluster
