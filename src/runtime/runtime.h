// runtime/runtime.h — the contract between the control loop and whatever runs instances.
//
// Shaped like Mesos' containerizer: the loop describes a typed workload (a process command or a
// container image) with its address, ports, mounts, limits and labels, and a Runtime makes it
// run. The Runtime hands back an opaque reference (Ref) that the loop stores durably and gives
// back later (stop, exec, logs, recover); the loop never looks inside it — a process runtime
// puts "pid:pgid:start_ticks" there, the Docker runtime a container id.
//
// Launching is asynchronous and keeps one guarantee: nothing runs unrecorded.
//   launch(spec) → the runtime creates the instance without running anything of it
//                → Listener::on_created(ref, recorded): the loop records ref (with others, in one
//                  write) and answers through `recorded`; only if that says ok
//                → the runtime starts it → on_started (or on_failed, after which nothing of it is left)
//                → later on_exited, once it is gone (a container is removed by then).
// If the daemon dies between create and record, the created instance never runs: a gated child
// sees EOF and exits; a created container is removed by recover() as one berth has no record of.
//
// Threading: every method is called on the loop's thread and returns at once; slow work (fork,
// Engine API calls) happens elsewhere or asynchronously. Every Listener call and callback is
// made on the loop's thread too (posted through the Executor), never from inside the method
// that caused it. A Runtime outlives the ControlLoop that uses it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "base/clock.h"
#include "base/identity.h"
#include "base/result.h"

namespace berth::runtime {

// Which instance: environment, app, ordinal.
struct InstanceId {
  std::string env;
  std::string app;
  int ordinal = 0;
  auto operator<=>(const InstanceId&) const = default;
};

// A host process: `/bin/sh -c "exec COMMAND"` (placeholders already substituted and quoted).
struct ProcessWorkload {
  std::string command;
};

// A container from an image. Unset fields keep what the image says.
struct ImageWorkload {
  std::string image;
  std::optional<std::vector<std::string>> entrypoint;
  std::optional<std::vector<std::string>> command;  // the image's CMD when unset
  std::string user;
  std::string workdir;
};

using Workload = std::variant<ProcessWorkload, ImageWorkload>;

struct Mount {
  enum class Kind { kVolume, kBind } kind = Kind::kVolume;
  std::string source;  // a volume's full name, or an absolute host path
  std::string target;  // absolute path inside the instance
  bool read_only = false;
  // A volume's first contents: a tar archive on the daemon's host, extracted into the volume
  // on the host the instance runs on unless the volume there is complete already. Complete
  // means it has the file `.berth-seeded` at its top, the archive's last entry (db/clone.h
  // archive_copy makes such archives), so a fill cut short is done again. Observed::seeded says
  // whether this start filled it. Empty: a volume as Docker makes it.
  std::string seed;
};

struct Resources {
  double cpus = 0;                 // 0: no limit
  std::uint64_t memory_bytes = 0;  // 0: no limit
};

// The address pool an instance's address is from, as a runtime must provide it (a Docker
// bridge network with this subnet, say). `gateway` is never an instance's address.
struct Network {
  std::string name;    // berth's name for the pool ("default")
  std::string subnet;  // "10.77.0.0/16"
  std::string gateway; // "10.77.0.1"
  auto operator<=>(const Network&) const = default;
};

// The resolver an instance should use: berth's name server and the environment's search domain.
// Empty server: none reachable; the instance keeps the host's resolver.
struct Resolver {
  std::string server;  // an IPv4 address; port 53
  std::string search;  // "beta-7.berth.test"
};

struct InstanceSpec {
  InstanceId id;
  std::uint64_t launch = 0;  // the loop's number for this launch; echoed in every Listener call
  Workload workload;
  std::map<std::string, std::string> env;  // added to the runtime's base environment
  std::map<std::string, int> ports;        // named ports the instance listens on at its address
  std::vector<Mount> mounts;
  Resources resources;
  // Where it may run, in a runtime with several hosts: [field, OPERATOR, value?] each
  // (model/constraint.h; runtime/cluster). Others ignore them.
  std::vector<std::vector<std::string>> constraints;
  std::string ip;   // the instance's fixed address (runtimes with Capabilities::fixed_ip)
  Network network;
  Resolver resolver;
  std::map<std::string, std::string> labels;
  std::string log_path;  // stdout and stderr are appended here
  // Processes: the user they run as (and exec'd commands in them); unset: the daemon's own
  // (the catalog said `user: root`, or the daemon is not root). Containers ignore it: they run
  // as their image's user or ImageWorkload::user.
  std::optional<Identity> identity;
  // Containers: keep Docker's default capabilities (the catalog said `user: root`); otherwise
  // every capability is dropped and no process in it can gain privileges.
  bool privileged = false;
};

using Ref = std::string;

// How an instance ended.
struct Exit {
  bool status_known = false;  // false: it went away without a status (e.g. an adopted process)
  int code = 0;               // exit status; for a signal 128 + signal, as a shell reports it
  int signal = 0;             // the signal that killed it, if any
  std::string description;    // "exited with status 1", "killed by SIGKILL", "ended"
  // Its host was lost (runtime/cluster): not the instance's failure. The loop re-creates it at
  // once, whatever its restart policy, and the runtime places it on another host.
  bool host_lost = false;
  bool success() const { return status_known && signal == 0 && code == 0; }
};

// What the runtime observed when the instance started.
struct Observed {
  std::string ip;      // its address (the fixed one where the runtime pins addresses)
  std::string detail;  // "pid 4711", "container 3fa2c1d0e9ab"
  int pid = 0;         // the main process on this host, when there is one
  // A volume of the instance was filled from its Mount::seed for this start (it was new or
  // incomplete on the host it runs on), so what an earlier start wrote to it is not there.
  bool seeded = false;
};

struct Capabilities {
  bool fixed_ip = true;       // instances get InstanceSpec::ip; otherwise Observed::ip is their address
  bool direct_probe = true;   // the daemon reaches instance addresses (http/tcp probes from the daemon)
  bool private_resolver = true;  // instances can be given InstanceSpec::resolver
  std::string resolver_note;     // why not, when they cannot
  // Instances launching or starting (not yet ready) at once in this runtime; the loop makes the
  // others wait in line (control/start_slots.h). 0: no limit.
  int max_starting = 0;
};

// Receives what happens to instances. Called on the loop's thread.
class Listener {
 public:
  virtual ~Listener() = default;
  // The instance exists but runs nothing. The listener records `ref` durably, then calls
  // `recorded` — later, on the loop, never from inside this call (records are written in
  // batches): ok lets it run; an error makes the runtime destroy it (on_failed follows). A
  // listener that goes away first never calls it: the instance must then never run (the next
  // daemon's recover removes what is left of it).
  virtual void on_created(const InstanceId& id, std::uint64_t launch, const Ref& ref,
                          std::function<void(Status)> recorded) = 0;
  virtual void on_started(const InstanceId& id, std::uint64_t launch, const Ref& ref, const Observed& observed) = 0;
  // The launch failed; nothing of the instance is left. `ref` is empty if it was never created.
  virtual void on_failed(const InstanceId& id, std::uint64_t launch, const Ref& ref, const Error& error) = 0;
  // A started or recovered instance is gone.
  virtual void on_exited(const InstanceId& id, const Ref& ref, const Exit& exit) = 0;
};

// An instance recorded before a daemon restart.
struct Record {
  InstanceId id;
  Ref ref;
};

struct Recovered {
  InstanceId id;
  Ref ref;
  bool alive = false;  // running: adopted, watched like one it started
  Exit exit;           // when not alive: how it ended, if the runtime knows
  Observed observed;   // when alive
};

struct ExecRequest {
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;  // added to the instance's environment
  Millis timeout_ms = 10'000;
  std::size_t max_output = 64 << 10;  // output beyond this is dropped (ExecResult::truncated)
};

struct ExecResult {
  bool timed_out = false;
  Exit exit;
  std::string output;  // stdout and stderr, interleaved
  bool truncated = false;
};

struct LogChunk {
  std::string text;
  std::int64_t offset = 0;  // where the next read continues
};

// Cancels an operation when destroyed; its callback then never runs.
class Cancel {
 public:
  virtual ~Cancel() = default;
};

// A Cancel that runs `fn` when destroyed.
std::unique_ptr<Cancel> cancel_with(std::function<void()> fn);

class Runtime {
 public:
  virtual ~Runtime() = default;
  virtual std::string name() const = 0;  // "process", "docker": stored beside each Ref
  virtual Capabilities capabilities() const = 0;
  virtual void set_listener(Listener* listener) = 0;

  // Make `network` usable for instances. `done` runs on the loop once it is (or cannot be).
  virtual void prepare_network(const Network& network, std::function<void(Status)> done) = 0;
  virtual void launch(const InstanceSpec& spec) = 0;
  // Re-attach to instances recorded before a daemon restart. Every record comes back once in
  // `done`; a runtime that finds instances of its own it has no record of destroys them.
  virtual void recover(const std::vector<Record>& records, std::function<void(std::vector<Recovered>)> done) = 0;
  // Ask it to end (SIGTERM / docker stop), force after `grace_ms`; on_exited follows.
  virtual void stop(const Ref& ref, Millis grace_ms) = 0;
  // Run a command inside the instance (its namespaces, its environment).
  virtual std::unique_ptr<Cancel> exec(const Ref& ref, const ExecRequest& request,
                                       std::function<void(Result<ExecResult>)> done) = 0;
  // Output of an instance from byte `offset` (negative: the last -offset bytes), at most `max`
  // bytes; also after it ended. `log_path` is the InstanceSpec's.
  virtual void logs(const InstanceId& id, const std::string& log_path, std::int64_t offset, std::size_t max,
                    std::function<void(Result<LogChunk>)> done) = 0;
  // The instance passed its health check: it is ready (again). For runtimes that move instances
  // one at a time and wait for each to be ready at its new place (a cluster's drain); nothing by
  // default.
  virtual void instance_ready(const InstanceId& /*id*/, const Ref& /*ref*/) {}
};

// "exited with status 1", "killed by SIGKILL".
std::string describe(const Exit& exit);
// An Exit from a wait status (WIFEXITED...).
Exit exit_from_wait_status(int wait_status);
// Reads `log_path` from `offset` as Runtime::logs describes; for runtimes that keep output in
// the log file.
Result<LogChunk> read_log_file(const std::string& log_path, std::int64_t offset, std::size_t max);

}  // namespace berth::runtime
