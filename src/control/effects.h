// control/effects.h — what the loop's decisions do outside it.
//
// The planner, reconciler and supervisors decide; Effects carries out what touches a runtime:
// launching an instance with everything it must know (its command or image with placeholders
// substituted, its address, name, resolver, the addresses of its dependencies, its database
// copy, the user it runs as, its log file), stopping it, its health probes (from the daemon, or
// inside it for exec checks) and the timers of its probes and backoff, berth exec and logs, the
// pool's network in every runtime, and the uid each environment's instances run as (kept in the
// state store). What comes back — a probe's answer, a timer that ran out, the network ready, an
// error to tell — is handed to the loop through Hooks.
//
// Ownership: the ControlLoop owns its Effects; both use the Deps it was given (runtimes, prober,
// store, executor, clock, builder, databases), which outlive them. Loop thread only; hooks run
// on it, never from inside the call that caused them, and never after Effects is gone.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/executor.h"
#include "base/identity.h"
#include "base/result.h"
#include "control/supervisor.h"
#include "health/prober.h"
#include "model/catalog.h"
#include "net/ipam/ipam.h"
#include "runtime/runtime.h"

namespace berth::control {

struct Deps;

// A database server in a container (Deps::db_image): where its data and sockets are inside it,
// and the user it runs as, who owns the files of its volume (the image's mysql:
// scripts/make-images.sh --mariadb).
inline constexpr std::string_view kDbContainerDatadir = "/var/lib/mysql";
inline constexpr std::string_view kDbContainerRundir = "/run/mysqld";
inline constexpr std::uint32_t kDbContainerUid = 999;

// What an instance runs besides its settings: the artifact of its build (path, id, commit) or,
// for a database, the copy of its standard (datadir, copy id).
struct Artifact {
  std::string path;
  std::string build_id;
  std::string commit;
};

class Effects {
 public:
  struct Hooks {
    std::function<void(const std::string& env, const std::string& type, const std::string& app, int ordinal,
                       const std::string& ip, const std::string& message)>
        emit;
    std::function<void()> network_ready;                // every runtime prepared the pool
    std::function<void(const ipam::LeaseKey&)> probe_due;  // its probe timer ran out: probe(), if still wanted
    std::function<void(const ipam::LeaseKey&, const health::ProbeResult&)> probed;
    std::function<void(const ipam::LeaseKey&)> backoff_elapsed;
  };
  // `ipam` is read for addresses (the loop's). `env_uids`: the uids given out, as stored.
  Effects(const Deps& deps, const ipam::Ipam& ipam, std::map<std::string, std::uint32_t> env_uids, Hooks hooks);
  ~Effects();

  // ---- runtimes and the network ----
  runtime::Runtime* runtime_named(const std::string& name) const;
  // The runtime an app runs in: docker for images, process otherwise; nullptr (and `why`) if this
  // daemon has none such.
  runtime::Runtime* runtime_for(const model::AppSpec& spec, std::string* why) const;
  // Whether it runs in a container: it has an image, or it is a database and databases run from
  // Deps::db_image.
  bool in_container(const model::AppSpec& spec) const;
  // Have every runtime prepare the catalog's pool, one after another (a bridge network first
  // gives the gateway its address); instances wait until they all did.
  void prepare_network(const model::NetworkSpec& pool);
  bool network_ready() const { return network_ready_; }
  const runtime::Network& network() const { return network_; }
  // berth's name server answers instances on `ip`:53 (empty: it does not; `note` says why).
  void set_resolver(const std::string& ip, const std::string& note);
  const std::string& resolver() const { return resolver_; }
  const std::string& resolver_note() const { return resolver_note_; }

  // ---- who instances run as ----
  // `user:` of the app (root: the daemon's user), else the environment's own uid (given out, and
  // stored, the first time); nullopt: the daemon's user.
  Result<std::optional<Identity>> identity_for(const std::string& env, const model::AppSpec& spec);
  // The environment is gone: its uid may go to another.
  Status release_uid(const std::string& env);
  bool has_uid(const std::string& env) const { return env_uids_.count(env) > 0; }

  // ---- instances ----
  // Launch the instance (its supervisor says where it stands) in its runtime: the launch to tell
  // its supervisor, or why it cannot start yet (no runtime for it, the network not ready, no
  // uid left).
  Result<Supervisor::Launch> launch(const Supervisor::State& inst, const model::AppSpec& spec,
                                    const model::Environment& espec, const model::Catalog& catalog,
                                    const Artifact& artifact, const std::string& fingerprint);
  void stop(const Supervisor::State& inst, Millis grace_ms);
  // Probe it at its tracker's next_probe_at (Hooks::probe_due then), replacing any probe timer.
  void schedule_probe(const Supervisor::State& inst);
  // Probe it now: from the daemon, or inside it for an exec check; Hooks::probed with the answer.
  void probe(const Supervisor::State& inst, const model::AppSpec& spec);
  // Its probe answered: what was in flight for it is done.
  void probe_done(const ipam::LeaseKey& key);
  void backoff(const ipam::LeaseKey& key, Millis delay);  // Hooks::backoff_elapsed then
  // Cancel its timers and its probe in flight.
  void cancel(const ipam::LeaseKey& key);

  // berth exec inside a running instance; `done` runs on the loop.
  void exec(const Supervisor::State& inst, std::vector<std::string> argv, Millis timeout_ms,
            std::function<void(Result<runtime::ExecResult>)> done);

 private:
  // What is in flight for an instance: its probe, its exec probe, its timers.
  struct Handles {
    std::unique_ptr<health::ProbeHandle> probe;
    std::unique_ptr<runtime::Cancel> probe_exec;
    Executor::TimerId probe_timer = 0;
    Executor::TimerId backoff_timer = 0;
  };
  runtime::InstanceSpec instance_spec(const Supervisor::State& inst, const model::AppSpec& spec,
                                      const model::Environment& espec, const model::Catalog& catalog,
                                      const Artifact& artifact) const;
  // A database server's command (its layers' `command`, placeholders substituted) run in the
  // container image Deps::db_image as kDbContainerUid.
  runtime::ImageWorkload database_workload(const model::AppSpec& spec, const std::map<std::string, std::string>& vars) const;
  void prepare_network_from(std::size_t i, const runtime::Network& net);
  template <class F>
  auto guarded(F fn) {
    return [alive = std::weak_ptr<bool>(alive_), fn = std::move(fn)](auto&&... args) mutable {
      if (alive.lock()) fn(std::forward<decltype(args)>(args)...);
    };
  }

  const Deps& d_;
  const ipam::Ipam& ipam_;
  Hooks hooks_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::map<std::string, std::uint32_t> env_uids_;  // env → the uid its instances run as (Deps::instance_ids)
  // The ids of Deps::instance_ids not in env_uids_: every one from next_uid_ up, and these below it
  // (built at construction; then each new environment's id is found in O(log n)).
  std::set<std::uint32_t> free_uids_;
  std::uint32_t next_uid_ = 0;
  std::unordered_map<ipam::LeaseKey, Handles, ipam::LeaseKeyHash> handles_;  // of the instances with something in flight
  std::uint64_t launches_ = 0;
  mutable std::set<std::string> log_dirs_;  // environments whose log directory exists
  runtime::Network network_;                  // the catalog's pool, as runtimes are given it
  std::optional<runtime::Network> prepared_;  // the network last asked of the runtimes
  bool network_ready_ = false;                // every runtime has answered for prepared_
  std::string resolver_;                      // berth's name server for instances (port 53), when it answers there
  std::string resolver_note_;                 // why it does not
  std::map<std::uint64_t, std::unique_ptr<runtime::Cancel>> execs_;  // berth exec in flight
  std::uint64_t next_exec_ = 0;
};

}  // namespace berth::control
