// runtime/docker/docker_runtime.h — instances as Docker containers, through the Engine API.
//
// Every instance is one container named berth-<data id>-<env>-<app>-<ordinal> (so dockerd
// itself refuses a second container for an ordinal), labelled with berth.data=<data id>,
// berth.env, berth.app, berth.ordinal and berth.fingerprint, on a user-defined bridge network
// whose subnet is the address pool and which hands out no address of its own (its dynamic range
// is the gateway alone): each container is created with its berth address. Docker's restart
// policy is off; berth supervises. Named volumes are berth-<data id>-<env>_<name> and outlive
// their containers; containers are removed (after being disconnected from their network, so
// the address is free: moby/moby#27754) when they end.
// A volume with a seed (Mount::seed) is filled from it, through a helper container that never
// runs, when it is new or incomplete on the host (seed.cc).
//
// Crash safety: a container is created, then recorded by the loop (Listener::on_created), and
// only then started. recover() lists the containers labelled with this data id: a recorded one
// that runs is adopted, a recorded one that does not is removed and reported gone, and one with
// no record (the daemon died between create and record) is removed unseen.
//
// Exits come from the Engine's event stream (reconnected, and replayed from where it broke, if
// dockerd goes away); output from a log stream per container, appended to the instance's log
// file on the Engine's thread, its position kept beside it so a restarted daemon resumes there;
// exec runs the Engine API's exec inside the container. The container's names in Docker's
// embedded DNS (its name and id) can never equal an app's short name.
//
// Threading: every method on the loop's thread; Engine answers are posted back to it. The log
// files are written on the Engine's thread by objects only it touches.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>

#include "base/executor.h"
#include "engine/engine.h"
#include "runtime/runtime.h"

namespace berth::runtime::docker {

// The Engine API client (engine/engine.h), shared with the cluster.
using engine::Call;
using engine::Engine;
using engine::error_message;
using engine::Response;
using engine::StreamHandle;

struct DockerOptions {
  std::string host;       // unix:///path/to/docker.sock
  std::string data_id;    // this data directory's id (names and labels)
  std::string state_dir;  // log positions: <data-dir>/run/docker
  // 0: the pool is a bridge network of this dockerd. Otherwise it is an attachable overlay
  // network of the Docker Swarm this dockerd is in (runtime/cluster), and Docker's own
  // endpoints (a load balancer's per host: moby/moby#38251) take their addresses from the
  // pool's last `overlay_fence` addresses, which berth never assigns (a power of two ≥ 4).
  int overlay_fence = 0;
  // With an overlay: whether this dockerd makes the network (a manager) or uses it by name, as
  // a manager made it (a worker sees it once a container of its own is on it).
  bool manages_network = true;
};

// The CIDR of the last `size` addresses of `subnet` ("10.77.0.0/16", 16 → "10.77.255.240/28"),
// or an error when the subnet is not "a.b.c.d/len", `size` not a power of two ≥ 4, or the
// subnet too small to spare it.
Result<std::string> fence_range(const std::string& subnet, int size);

class DockerRuntime final : public Runtime {
 public:
  static Result<std::unique_ptr<DockerRuntime>> create(Executor& loop, DockerOptions options);
  ~DockerRuntime() override;

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

  // Build an image from a tar of a build context, with the Dockerfile at `dockerfile` inside
  // it, tagged `tag`; the build's output is appended to `log_path`. `done` (on the loop) gets
  // the image id.
  void build_image(const std::string& context_tar, const std::string& dockerfile, const std::string& tag,
                   const std::string& log_path, Millis timeout_ms, std::function<void(Result<std::string>)> done);

  std::string container_name(const InstanceId& id) const;
  std::string network_name(const Network& network) const;
  std::string volume_name(const std::string& scoped) const;  // scoped: "<env>_<name>"
  const std::string& host() const { return options_.host; }

 private:
  struct Container;
  struct NetworkState;
  struct LogFollower;
  struct ExecOp;
  DockerRuntime(Executor& loop, DockerOptions options, std::unique_ptr<Engine> engine);

  // Engine answers come back on the loop, and not at all once the runtime is gone.
  void call(Call c, std::function<void(Result<Response>)> on_loop);
  void ensure_network(const Network& network, std::function<void(Status)> done);
  void create_network(const Network& network);
  void network_done(const std::string& name, Status st);
  void check_image(const std::string& name);
  void make_volumes(const std::string& name, std::size_t next);
  // Mount::seed (seed.cc): the volume of mount `index` checked, filled if it is not complete.
  void seed_volume(const std::string& name, std::size_t index);
  void fill_volume(const std::string& name, std::size_t index, const std::string& helper);
  void drop_helper(const std::string& helper);
  void drop_older_seeds(const InstanceId& id, const std::string& keep);
  void create_container(const std::string& name, bool retried);
  void created(const std::string& name, const Ref& ref);
  void start_container(const std::string& name);
  void fail_launch(const std::string& name, const Error& error);
  void follow_logs(Container& c, const std::string& since);
  void watch_events();
  void on_container_event(const std::string& action, const std::string& id, std::optional<int> exit_code);
  void begin_exit(const std::string& name, std::optional<int> exit_code, bool known);
  void finish_exit(const std::string& name);
  void remove_container(const Ref& ref, const std::string& network, std::function<void()> then);
  Container* by_ref(const Ref& ref);
  void adopt(const InstanceId& id, const Ref& ref, const std::string& name, const std::string& network,
             const std::map<std::string, std::string>& labels);
  std::string resume_point(const Ref& ref) const;
  void resync();

  Executor& loop_;
  DockerOptions options_;
  // Volumes this runtime filled whose container has not started yet: a launch that fails after
  // the fill and is tried again still reports Observed::seeded.
  std::set<std::string> fresh_volumes_;
  std::unique_ptr<Engine> engine_;
  Listener* listener_ = nullptr;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::map<std::string, std::unique_ptr<Container>> containers_;  // by container name
  std::map<Ref, std::string> names_;                              // container id → name
  std::map<std::string, std::unique_ptr<NetworkState>> networks_;  // by Docker network name
  std::set<Ref> died_unknown_;  // die events for containers not (yet) known: recover() checks them
  std::unique_ptr<StreamHandle> events_;
  std::string events_since_;     // "seconds.nanoseconds" of the last event seen, for a reconnect
  Millis events_backoff_ms_ = 500;
  std::map<std::uint64_t, std::unique_ptr<StreamHandle>> builds_;  // image builds in flight
  std::uint64_t next_build_ = 0;
};

}  // namespace berth::runtime::docker
