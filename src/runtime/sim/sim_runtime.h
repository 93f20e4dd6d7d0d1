// runtime/sim/sim_runtime.h — a simulated runtime: instances that exist only in memory.
//
// It keeps the whole contract of runtime/runtime.h (create → record → start, exits, recover,
// stop with grace, exec, logs; tests/integration/runtime_contract_test.cc runs the contract
// suite on it as on the process and Docker runtimes) without running anything, so the control
// loop can be tested on virtual time and at a scale no machine runs for real (a fuzzer must not
// fork either). Its
// instances outlive a ControlLoop, like processes outlive a daemon: a new loop on the same
// SimRuntime recovers them. Tests steer it: make an instance exit, make launches of an app
// fail, answer exec requests.
//
// With SimBehaviour it also behaves like a fleet, on the executor's timers: each start takes
// `start_latency`, an instance answers its health checks `ready_after` its start (answers()),
// crashes after an exponentially distributed time of mean `mean_time_to_crash`, and a fraction
// `hang_fraction` of the instances hang: they never answer and ignore SIGTERM (killed after the
// stop grace). `berth serve --runtime sim` runs the daemon on it, for benchmarks and tests.
//
// Threading: the loop's thread only; every Listener call is posted through the Executor.
#pragma once

#include <functional>
#include <map>
#include <random>
#include <unordered_map>
#include <set>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/executor.h"
#include "runtime/runtime.h"

namespace berth::runtime {

struct SimBehaviour {
  Millis start_latency_ms = 0;      // launch → started
  Millis ready_after_ms = 0;        // started → answers health checks
  Millis mean_time_to_crash_ms = 0; // 0: never crashes by itself
  double hang_fraction = 0;         // of the instances started
  std::uint64_t seed = 1;
  // Tests inspect every launch (launched(), Instance::spec in full). A daemon on the simulated
  // runtime keeps only what the simulation needs (the id, launch and address), so a benchmark
  // measures the daemon's own memory, not the simulation's copies of 30,000 instance specs.
  bool keep_specs = true;
};

class SimRuntime final : public Runtime {
 public:
  // `clock` (for ready_after) may be null when `behaviour.ready_after_ms` is 0.
  explicit SimRuntime(Executor& executor, std::string name = "process", SimBehaviour behaviour = {},
                      const Clock* clock = nullptr)
      : executor_(executor), name_(std::move(name)), behaviour_(behaviour), clock_(clock), random_(behaviour.seed) {}

  std::string name() const override { return name_; }
  Capabilities capabilities() const override { return capabilities_; }
  void set_listener(Listener* listener) override { listener_ = listener; }
  void prepare_network(const Network& network, std::function<void(Status)> done) override;
  void launch(const InstanceSpec& spec) override;
  void recover(const std::vector<Record>& records, std::function<void(std::vector<Recovered>)> done) override;
  void stop(const Ref& ref, Millis grace_ms) override;
  std::unique_ptr<Cancel> exec(const Ref& ref, const ExecRequest& request,
                               std::function<void(Result<ExecResult>)> done) override;
  void logs(const InstanceId& id, const std::string& log_path, std::int64_t offset, std::size_t max,
            std::function<void(Result<LogChunk>)> done) override;

  // ---- steering, for tests ----
  struct Instance {
    InstanceSpec spec;
    Ref ref;
    bool started = false;
    bool stopping = false;
    bool recorded = false;  // the listener accepted its creation
    bool hung = false;
    Millis started_at = 0;  // monotonic
    Executor::TimerId timer = 0;  // start, crash or kill-after-grace, whichever is pending
  };
  // Whether the instance at `ip` answers a health check now: started, `ready_after` elapsed,
  // not hung (SimBehaviour).
  bool answers(const std::string& ip) const;
  // The instance ends as if its main process exited with `code` (or was killed by `signal`).
  void exit(const Ref& ref, int code, int signal = 0);
  // The running instance hangs from now on: it stops answering and ignores SIGTERM (a stop kills
  // it after the grace), as a `hang_fraction` instance does from its start.
  void hang(const Ref& ref);
  // The running instance of (env, app, ordinal), or "" when none.
  Ref ref_of(const std::string& env, const std::string& app, int ordinal) const;
  int running(const std::string& app) const;  // started, of any environment
  const std::map<Ref, Instance>& instances() const { return instances_; }
  // Every launch asked for, "app#ordinal", in order.
  const std::vector<std::string>& launched() const { return launched_; }
  // Launches of `app` fail with `message` (kUnavailable), or `error` (say kExhausted: the
  // daemon's own limit), until cleared (empty message).
  void fail_launches(const std::string& app, const std::string& message);
  void fail_launches(const std::string& app, Error error);
  // How exec requests are answered; default: exit status 0, no output.
  void on_exec(std::function<ExecResult(const Instance&, const ExecRequest&)> fn) { exec_ = std::move(fn); }
  void set_capabilities(Capabilities c) { capabilities_ = std::move(c); }
  std::vector<Network> networks_prepared() const { return networks_; }

 private:
  void post(std::function<void()> fn) { executor_.post(std::move(fn)); }
  void start(const Ref& ref);
  void forget_address(const Instance& inst);  // before `inst` is erased
  Millis now() const { return clock_ ? clock_->monotonic_ms() : 0; }

  Executor& executor_;
  std::string name_;
  SimBehaviour behaviour_;
  const Clock* clock_;
  std::mt19937_64 random_;
  std::unordered_map<std::string, const Instance*> by_ip_;  // started instances (nodes of instances_)
  Listener* listener_ = nullptr;
  Capabilities capabilities_;
  std::map<Ref, Instance> instances_;
  std::vector<std::string> launched_;
  std::map<std::string, Error> failing_;  // app → what its launches fail with
  std::function<ExecResult(const Instance&, const ExecRequest&)> exec_;
  std::vector<Network> networks_;
  std::uint64_t next_ = 0;
};

}  // namespace berth::runtime
