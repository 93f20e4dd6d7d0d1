// cluster/swarm/swarm.h — a Docker Swarm driven through its hosts' Engine APIs: create it on a
// host or join a host to it, list its nodes, tune its heartbeat, label, drain and remove nodes.
//
// berth does not make a cluster of its own: membership, node health (the dispatcher's heartbeat)
// and the overlay networks are the Swarm's. This client is how berth asks for them. A host is
// named by its Engine API endpoint (unix:///run/host-1/docker.sock); the client keeps one Engine
// per host it has talked to.
//
// Threading: every method is called on the owner's loop thread (the executor given), and every
// answer is posted back to that thread; the Engines' own threads never touch the client's state.
// Destroying the client drops the answers not yet delivered.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/executor.h"
#include "base/result.h"
#include "cluster/cluster.h"
#include "engine/engine.h"

namespace berth::cluster {

class SwarmClient {
 public:
  template <typename T>
  using Done = std::function<void(Result<T>)>;

  SwarmClient(Executor& loop, const Clock& clock) : loop_(loop), clock_(clock) {}
  ~SwarmClient();
  SwarmClient(const SwarmClient&) = delete;
  SwarmClient& operator=(const SwarmClient&) = delete;

  // What the host's dockerd says of itself, and of its place in a Swarm.
  void info(const std::string& host, Done<LocalInfo> done);
  // Creates a Swarm with `host` as its first manager, advertising `advertise_addr` (an address,
  // or an interface's name; empty: dockerd picks, which fails when the host has several) and the
  // dispatcher's heartbeat (0: Docker's default, 5 s). Gives the new node's id.
  void create(const std::string& host, const std::string& advertise_addr, Millis heartbeat_ms, Done<std::string> done);
  // Joins `host` to the Swarm `manager` is a manager of, as a worker (or a manager), advertising
  // `advertise_addr`. Gives the host's info once it is in.
  void join(const std::string& host, const std::string& manager, const std::string& advertise_addr, bool as_manager,
            Done<LocalInfo> done);
  // The Swarm's nodes, as a manager sees them.
  void nodes(const std::string& manager, Done<std::vector<Node>> done);
  // The Swarm itself (its tokens and heartbeat).
  void swarm(const std::string& manager, Done<SwarmInfo> done);
  // Sets the dispatcher's heartbeat: how soon the managers notice a host is gone.
  void set_heartbeat(const std::string& manager, Millis heartbeat_ms, Done<SwarmInfo> done);
  // Changes a node's availability (active | pause | drain) and/or labels (nullopt: leave as is).
  void update_node(const std::string& manager, const std::string& node_id, std::optional<std::string> availability,
                   std::optional<std::map<std::string, std::string>> labels, Done<Node> done);
  // `host` leaves its Swarm (force: even a manager, even the last one).
  void leave(const std::string& host, bool force, Done<bool> done);
  // Removes a node from the manager's list (force: even one that is not down), so that what it
  // held — an overlay address among others — can be used elsewhere.
  void remove_node(const std::string& manager, const std::string& node_id, bool force, Done<bool> done);

  // The id of image `image` (a name or an id) on `host`; an error with ErrorCode::kNotFound when
  // the host does not have it.
  void image_id(const std::string& host, const std::string& image, Done<std::string> done);

  // An image copied to other hosts without a registry: saved once from `from` (the Engine API's
  // GET /images/get?names={image}, a tar streamed into a private file under `work_dir`, at most
  // kMaxImageBytes) and loaded on every host of `to` at once (POST /images/load); then each
  // host is asked for the image and must have the same id. The file is removed at the end.
  struct ImageCopy {
    std::string image_id;    // sha256:...
    std::int64_t bytes = 0;  // of the saved tar
    Millis save_ms = 0;      // saving it from `from`
    Millis load_ms = 0;      // loading it on every host of `to`, in parallel
  };
  static constexpr std::int64_t kMaxImageBytes = 16LL << 30;
  void distribute_image(const std::string& from, const std::vector<std::string>& to, const std::string& image,
                        const std::string& work_dir, Done<ImageCopy> done);

  // One Engine API call on `host`; the answer (any status) on the loop.
  void call(const std::string& host, engine::Call c, std::function<void(Result<engine::Response>)> on_loop);

 private:
  // The same, with anything but a 2xx status turned into an error naming the host and the call.
  void call_ok(const std::string& host, engine::Call c, std::function<void(Result<engine::Response>)> on_loop);

  Executor& loop_;
  const Clock& clock_;
  // The Engine of `host`, opened at its first use.
  Result<engine::Engine*> engine_of(const std::string& host);

  std::map<std::string, std::unique_ptr<engine::Engine>> engines_;
  std::map<std::uint64_t, std::unique_ptr<engine::StreamHandle>> streams_;  // under way (image saves)
  std::uint64_t next_stream_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace berth::cluster
