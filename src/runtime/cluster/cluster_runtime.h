// runtime/cluster/cluster_runtime.h — instances as Docker containers spread over the hosts of a
// Docker Swarm, each at its berth address on an overlay network, moved with that address and
// name when its host is lost.
//
// berth drives the Swarm (cluster/swarm) and never a cluster of its own: which hosts exist and
// whether they are up is what the Swarm's manager says. What the Swarm cannot do — a chosen
// address per container, moby/moby#24170 — berth does with standalone containers:
//   - one DockerRuntime per host (runtime/docker), all on one attachable overlay network whose
//     subnet is berth's pool; Docker's own endpoints (a load balancer's per host) take their
//     addresses from the pool's last `fence` addresses, which berth never assigns;
//   - placement (cluster/placement.h): an app's instances spread over the schedulable hosts,
//     within what each host has; the image copied to a host without it (save/load, no registry);
//   - a Ref is "<hostname>/<container id>", so a restarted daemon asks each host for its own;
//   - the sandbox: a container of berth's own (image `sandbox_image`, a static pause program)
//     on the overlay on the first host, the one this daemon runs on. The daemon reaches the
//     overlay through its network namespace (base/netns.h): health probes connect from it and
//     the instances' name server listens in it, at the sandbox's address;
//   - anchors: every other host keeps a pause container of berth's own on the overlay, so the
//     network is there before an instance needs it (a host's first container on an overlay
//     waits seconds for it to be set up);
//   - host loss: the manager's node list, asked every `poll_ms`, says a host is down (after
//     the dispatcher's heartbeat berth sets, `heartbeat_ms`), or, sooner, a host's dockerd is
//     gone (its lease holder says so in its renewals, and berth's Engine API call fails too,
//     both asked every `poll_ms`); berth removes the node from the
//     Swarm (only then may its addresses be used elsewhere: Docker refuses them while the dead
//     node holds them) and reports its instances gone with Exit::host_lost, so the loop
//     re-creates them at once on other hosts, at the same addresses and names;
//   - fencing: when a host is lost and its Engine API still answers (a host cut off from the
//     Swarm, not from berth), its berth containers are removed before their addresses are given
//     again; otherwise the host is asked until it answers, and before it can take instances
//     again every berth container on it is removed (a dockerd that restarts kills its own
//     containers, but a host that was cut off by the network keeps them running); then it
//     leaves and joins the Swarm again as a new node;
//   - membership: the hosts given at start (options.hosts) and those added since (add_host,
//     `berth cluster add`). berth creates the Swarm on the first host when it is in none, and
//     joins to it every host that is in none; a host in another Swarm is refused. A host leaves
//     (remove_host, `berth cluster rm`) once its instances have moved, one at a time, like a
//     drain: then its berth containers are removed and it leaves the Swarm;
//   - what berth learnt of each host (name, node, address, whether it is leaving) is kept in
//     <state_dir>/hosts.json, so a restarted daemon knows the hosts added since its start, and
//     one that cannot reach a host still knows the instances recorded there: counted as running
//     until the Swarm calls that host down (then they move) or it answers.
//
// Threading: every method on the loop's thread, every answer posted to it; the Engines' threads
// touch nothing of this object. It outlives the ControlLoop, like every Runtime.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "base/executor.h"
#include "base/netns.h"
#include "base/worker.h"
#include "cluster/cluster.h"
#include "cluster/swarm/swarm.h"
#include "engine/engine.h"
#include "runtime/cluster/lease.h"
#include "runtime/docker/docker_runtime.h"
#include "runtime/runtime.h"

namespace berth::runtime::cluster {

struct ClusterOptions {
  // The hosts' Engine API endpoints. The first is the host this daemon runs on (its sandbox
  // runs there) and a manager of the Swarm: berth creates the Swarm there when it is in none,
  // advertising `advertise`, and joins the other hosts that are in none to it.
  std::vector<std::string> hosts;
  std::string advertise;  // the first host's address for the Swarm it creates ("": dockerd picks)
  std::string data_id;
  std::string state_dir;       // <data-dir>/run/cluster: log positions, images being copied
  Millis heartbeat_ms = 1000;  // set on the Swarm: how soon its managers call a silent host down
  Millis poll_ms = 250;        // how often berth asks the manager for its nodes
  // The pool's last addresses, left to Docker: a load balancer endpoint and an anchor (or the
  // sandbox) per host take one each, so at most (fence - 4) / 2 hosts. A power of two.
  int fence = 16;
  std::string sandbox_image = "berth-pause:latest";
  // The hosts' leases (runtime/cluster/lease.h): a host that cannot renew its lease for half of
  // this kills its berth containers; a lost host berth could not fence is settled once it has
  // not renewed for this plus a margin.
  Millis lease_ms = 10'000;
};

// One host as berth sees it (berth status, berth cluster ls).
struct HostView {
  std::string endpoint;
  std::string hostname;
  std::string state;  // "up", "lost", "fencing", "unreachable"
  bool leaving = false;  // berth cluster rm: it leaves once its instances have moved (or, lost: once fenced)
  ::berth::cluster::Node node;  // as the manager last said
  std::vector<InstanceId> instances;  // placed there now
};

class ClusterRuntime final : public Runtime {
 public:
  static Result<std::unique_ptr<ClusterRuntime>> create(Executor& loop, const Clock& clock, ClusterOptions options);
  ~ClusterRuntime() override;

  std::string name() const override { return "docker"; }
  Capabilities capabilities() const override;
  void set_listener(Listener* listener) override { listener_ = listener; }
  void prepare_network(const Network& network, std::function<void(Status)> done) override;
  void launch(const InstanceSpec& spec) override;
  void recover(const std::vector<Record>& records, std::function<void(std::vector<Recovered>)> done) override;
  void stop(const Ref& ref, Millis grace_ms) override;
  std::unique_ptr<Cancel> exec(const Ref& ref, const ExecRequest& request,
                               std::function<void(Result<ExecResult>)> done) override;
  void logs(const InstanceId& id, const std::string& log_path, std::int64_t offset, std::size_t max,
            std::function<void(Result<LogChunk>)> done) override;
  void instance_ready(const InstanceId& id, const Ref& ref) override;

  // Drains host `host` (its hostname or endpoint) through the Swarm, or makes it active again.
  // A drained host takes no new instance, and its instances move, one at a time: each is
  // stopped, re-created elsewhere at its address (Exit::host_lost, "moving"), and the next goes
  // once it is ready there. A host drained with `docker node update` is drained the same way.
  void drain(const std::string& host, bool drain, std::function<void(Status)> done);

  // Adds a host (berth cluster add): its Engine API endpoint; the address it advertises when it
  // joins the Swarm ("": dockerd picks); labels set on its node (for constraints). A host in no
  // Swarm joins the manager's as a worker; one already in it is taken as it is; one in another
  // Swarm, or not answering, is refused with why. Gives the host once it takes instances.
  struct NewHost {
    std::string endpoint;
    std::string advertise;
    std::map<std::string, std::string> labels;
  };
  void add_host(NewHost host, std::function<void(Result<HostView>)> done);
  // Starts host `host` (its hostname or endpoint) leaving (berth cluster rm): it takes no new
  // instance, its instances move one at a time as in a drain, then its berth containers are
  // removed, it leaves the Swarm and is forgotten. A lost host leaves once it answers and is
  // fenced; `force` forgets it at once (if it ever answers again, nothing removes what runs there).
  // The first host cannot leave. `done` once the leaving has started.
  void remove_host(const std::string& host, bool force, std::function<void(Status)> done);
  int max_hosts() const { return (options_.fence - 4) / 2; }

  // Called on the loop each time the sandbox is up at an address (again): the daemon connects
  // its probes from `netns` and serves the instances' names at `ip`.
  void set_on_gateway(std::function<void(const Netns& netns, const std::string& ip)> fn) { on_gateway_ = std::move(fn); }
  // The sandbox's namespace, once it is up; nullptr before.
  const Netns* gateway() const { return sandbox_netns_.get(); }
  std::vector<HostView> hosts() const;
  int fence() const { return options_.fence; }  // the pool's last addresses left to Docker

 private:
  struct Host;
  class HostListener;
  // Whether it has data in a volume of its host (Mount::seed: a database's), which it keeps to.
  static bool has_data(const InstanceSpec& spec);
  struct Where {
    std::size_t host = 0;
    std::uint64_t launch = 0;
    Ref ref;  // "<hostname>/<container id>" once created
    std::int64_t nano_cpus = 0;
    std::int64_t memory_bytes = 0;
    bool running = false;  // started (or adopted)
  };
  ClusterRuntime(Executor& loop, const Clock& clock, ClusterOptions options, std::unique_ptr<engine::Engine> manager);

  void start();
  void retry_start();
  void meet_hosts();
  // Host `i` as its dockerd says: taken as it is when in the Swarm, joined to it (advertising
  // `advertise`) when in none; then up, with its runtime. Errors say why not.
  void admit(std::size_t i, const std::string& advertise, std::function<void(Status)> done);
  void finish_leaving(std::size_t i);
  // Host leases (leases.cc).
  Status load_lease_token();
  struct LeaseAnswer {
    std::string line;  // "" when none came
    bool reached = false;  // false: no sandbox yet to ask from
  };
  void lease_call(lease::Verb verb, const std::string& host, std::function<void(const LeaseAnswer&)> done);
  void lease_until_ok(lease::Verb verb, const std::string& host, std::function<bool()> still, std::function<void()> then);
  // `method /containers/{id}{suffix}` on each container of host `i` labelled `label` (running
  // ones only unless `all`); `done(true)` once every call was answered 2xx, 404 or 409.
  void each_container(std::size_t i, const std::string& label, bool all, const std::string& method,
                      const std::string& suffix, Millis timeout_ms, std::function<void(bool)> done);
  void kill_all(std::size_t i, std::function<void(bool)> done);
  // A fenced host's volumes filled from a Mount::seed (a database's data), but those of
  // instances in `keep` (env, app): their instances were made again elsewhere on a fresh fill, so
  // what they hold must never serve again. A volume still in use (its container being removed)
  // is asked again each second, for at most `tries` seconds. Then `then`.
  void drop_stale_volumes(std::size_t i, std::set<std::pair<std::string, std::string>> keep, int tries,
                          std::function<void()> then);
  void settle(std::size_t i, Millis since, std::function<void()> then);
  void forget(std::size_t i);
  std::size_t live_hosts() const;
  std::size_t find_host(const std::string& host) const;  // hostname or endpoint; hosts_.size(): none
  Error no_host(const std::string& host) const;          // "no host 'x' in the cluster; its hosts: ..."
  HostView view(std::size_t i) const;
  void load_hosts();
  void save_hosts() const;
  void when_started(std::function<void()> fn);
  Status open_host(std::size_t i);
  static void close_host(Host& h);  // its runtime and listener gone (answers after that reach nothing)
  void poll();
  void on_nodes(std::vector<::berth::cluster::Node> nodes, Millis asked_at);
  void probe_dockerds();  // hosts whose dockerd is gone are lost without waiting for the Swarm
  void lose(std::size_t i, const std::string& why);
  void fence(std::size_t i);
  void rejoin(std::size_t i);
  void join_again(std::size_t i);
  void next_move();
  void moved(const InstanceId& id);
  void anchor(std::size_t i);  // its lease restored, then make_anchor()
  void make_anchor(std::size_t i);
  void ensure_image(std::size_t host, const std::string& image, std::function<void(Status)> done);
  void ensure_sandbox(const Network& network, std::function<void(Status)> done);
  nlohmann::json sandbox_cmd() const;  // what the sandbox runs: the lease table
  void sandbox_call(engine::Call c, std::function<void(Result<engine::Response>)> on_loop);
  Result<std::size_t> place(const InstanceSpec& spec) const;
  std::size_t host_named(const std::string& hostname) const;  // hosts_.size(): none
  Ref wrap(std::size_t host, const Ref& inner) const;
  // The host and the host runtime's ref of one of ours; false when the host is unknown or lost.
  bool unwrap(const Ref& ref, std::size_t* host, Ref* inner) const;

  Executor& loop_;
  const Clock& clock_;
  ClusterOptions options_;
  ::berth::cluster::SwarmClient swarm_;
  std::unique_ptr<engine::Engine> manager_engine_;  // the sandbox's calls
  Listener* listener_ = nullptr;
  std::vector<std::unique_ptr<Host>> hosts_;
  std::map<InstanceId, Where> placed_;
  // Instances with data on their host (has_data): the hostname they were last placed on or
  // recorded at. Placement keeps them there while it can take them; elsewhere their volume is
  // filled afresh.
  std::map<InstanceId, std::string> data_host_;
  std::optional<InstanceId> moving_;  // off a drained host, until it is ready elsewhere
  bool started_ = false;
  bool starting_ = false;
  std::vector<std::function<void()>> pending_;  // until started
  Executor::TimerId poll_timer_ = 0;
  bool polling_ = false;
  std::map<std::string, std::vector<std::function<void(Status)>>> image_waiters_;  // "<host>|<image>"
  std::optional<Network> network_;  // once prepared
  std::unique_ptr<Netns> sandbox_netns_;
  std::string sandbox_ip_;
  std::function<void(const Netns&, const std::string&)> on_gateway_;
  std::string lease_token_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  Worker lease_worker_{"cluster-lease"};  // last: joined first, before what its jobs post to
};

}  // namespace berth::runtime::cluster
