// runtime/process/process_runtime.h — instances as supervised local processes.
//
// Each instance is `/bin/sh -c "exec COMMAND"` in its own process group, stdout and stderr
// appended to its log file, started behind a gate (base/subprocess.h) so it runs only after the
// loop has recorded its Ref ("pid:pgid:start_ticks"). Exits are seen through pidfds on the
// loop's io_context. When an instance's main process exits, the rest of its process group is
// killed, so nothing it started outlives it. Instances are not tied to the daemon's life: after
// a daemon restart recover() adopts them by pid + start time.
//
// As root, an instance with a Resolver gets a mount namespace of its own in which
// <run_dir>/resolv/<search domain>.conf is bind-mounted over /etc/resolv.conf, so ordinary
// programs resolve short names through berth's name server; exec() joins that namespace.
// Without root that is impossible: capabilities() says so and instances keep the host's
// resolver (BERTH_DNS and BERTH_DEP_* still name berth's server and the dependencies).
// An address that is not loopback and not yet local (a pool shared with containers) is added
// to the loopback device as a /32 first (root).
//
// Threading: the loop's thread only (see runtime/runtime.h). Instances and exec()'s commands
// are cloned on a spawner thread of the runtime's own (a clone waits for the child's exec: a
// millisecond or more on a busy host, thousands of times in a fleet's bring-up), in the order
// asked; it takes copies of what it needs and posts each result back to the loop, where
// everything else happens. A spawn posted back after the runtime is destroyed kills its child.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>
#include <string>
#include <unordered_map>

#include <boost/asio/io_context.hpp>

#include "base/executor.h"
#include "base/subprocess.h"
#include "base/worker.h"
#include "runtime/runtime.h"

namespace berth::runtime {

class ProcessRuntime final : public Runtime {
 public:
  // `max_starting`: Capabilities::max_starting (0: no limit).
  ProcessRuntime(boost::asio::io_context& io, Executor& executor, std::string run_dir, int max_starting = 0);
  ~ProcessRuntime() override;

  std::string name() const override { return "process"; }
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

 private:
  struct Watched;
  struct ExecOp;
  void watch(std::shared_ptr<Watched> w, int pidfd);
  void arm(const std::shared_ptr<Watched>& w);
  void fail(const InstanceSpec& spec, const Error& error);
  // A launch on its way through the spawner: asked on the loop, cloned on the spawner thread,
  // handed back to the loop.
  struct Launch {
    SpawnOptions options;
    InstanceId id;
    std::uint64_t launch = 0;
    std::string ip;
    Spawned spawned;             // once cloned
    std::optional<Error> error;  // or why not
  };
  // On the spawner thread: clone the queued launches, posting their results back in batches.
  void spawn_launches();
  // On the loop, once the spawner has cloned an instance: watch it once the loop recorded it.
  void started(SpawnOptions options, const InstanceId& id, std::uint64_t launch, const std::string& ip,
               const Spawned& spawned);
  // A child held at its gate that will never be released: killed and reaped.
  static void abandon(Spawned& spawned);
  Result<std::string> resolver_file(const Resolver& resolver);

  boost::asio::io_context& io_;
  Executor& executor_;
  std::string run_dir_;
  bool root_;
  int max_starting_;
  Listener* listener_ = nullptr;
  std::unordered_map<Ref, std::shared_ptr<Watched>> watched_;
  std::map<std::string, std::string> resolver_files_;  // search domain → contents written
  std::mutex launches_mu_;            // guards the two below (loop and spawner thread)
  std::vector<Launch> launches_;      // asked, not yet taken by the spawner
  bool drain_posted_ = false;         // the spawner has a spawn_launches() job queued or running
  // False once this runtime is destroyed: spawns posted back after that stop their children.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  Worker spawner_;  // last: destroyed (joined) first, before what its jobs use
};

}  // namespace berth::runtime
