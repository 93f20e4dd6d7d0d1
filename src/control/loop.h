// control/loop.h — the reconcile loop: desired state (catalog + environments that are up)
// against actual state (instances, their processes and health), acting until they agree.
//
// Level-triggered: every trigger (API call, process exit, health change, timer) only schedules a
// reconcile pass, and the pass looks at the whole picture. So a daemon restart, an instance crash
// and a catalog change that touches one app all converge the same way. Only instances whose
// effective settings (AppSpec::fingerprint) or address changed are restarted.
//
// Ownership: the ControlLoop owns all mutable state of the daemon and runs on one thread (the
// Executor's). It uses — never owns — the runtimes, prober, store and clock given in Deps, which
// must outlive it. API handlers call its methods on the same thread (asserted in debug builds);
// runtimes report back through runtime::Listener on it too. The one thing other threads read is
// its read model (control/read_model.h): the status snapshots it publishes.
//
// Each instance runs in the runtime its app asks for: "docker" for apps with an image, "process"
// for the others. An instance is launched asynchronously (runtime/runtime.h): it is recorded in
// the store when the runtime has created it and before anything of it runs; after a daemon
// restart the recorded instances are recovered by their runtimes before anything else is started
// for their ordinals.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/clock.h"
#include "base/executor.h"
#include "base/result.h"
#include "base/worker.h"
#include "build/builder.h"
#include "control/effects.h"
#include "control/event_log.h"
#include "control/observed.h"
#include "control/planner.h"
#include "control/read_model.h"
#include "control/reconciler.h"
#include "control/start_slots.h"
#include "control/status.h"
#include "control/supervisor.h"
#include "control/views.h"
#include "db/manager.h"
#include "health/prober.h"
#include "health/tracker.h"
#include "model/catalog.h"
#include "net/dns/zone.h"
#include "net/ipam/ipam.h"
#include "runtime/runtime.h"
#include "store/store.h"

namespace berth::control {

struct Deps {
  const Clock* clock = nullptr;
  Executor* executor = nullptr;
  // The runtimes, by name(): "process" runs apps without an image, "docker" apps with one.
  // A network is prepared by them in this order.
  std::vector<runtime::Runtime*> runtimes;
  // The pool's last this many addresses are a runtime's own and never an instance's (a cluster's
  // overlay leaves them to Docker's endpoints: runtime/cluster). 0: none.
  int reserved_pool_tail = 0;
  health::Prober* prober = nullptr;
  store::StateStore* store = nullptr;
  std::string data_dir;     // instance logs go to <data_dir>/logs/<env>/<app>.<ordinal>.log
  std::string dns_address;  // passed to instances as BERTH_DNS ("ip:port"); may be empty
  // Called with every event as it is emitted, before it is written (the daemon logs them); may
  // be empty.
  std::function<void(const store::Event&)> on_event;
  // Called with a new DNS zone snapshot whenever names or readiness change (the daemon hands it
  // to the name server); may be empty. `dns_ns_ip` is the server's own address for ns.<zone>.
  std::function<void(std::shared_ptr<const dns::Zone>)> on_zone;
  std::uint32_t dns_ns_ip = 0;
  // Called once every runtime has prepared the catalog's network (the daemon then has its name
  // server answer on the network's gateway and calls set_resolver); may be empty.
  std::function<void(const runtime::Network&)> on_network_ready;
  // Builds apps that have a source; without one such apps wait with a message.
  build::Builder* builder = nullptr;
  std::uint64_t artifact_max_bytes = 2ull << 30;  // artifact store size before LRU eviction
  // Makes each environment's copy of its databases; without one, databases wait with a message.
  db::Manager* databases = nullptr;
  // Database servers run in containers from this image (a cluster: its overlay does not reach
  // processes on the daemon's host), on a volume filled from their copy (runtime::Mount::seed),
  // as the image's user kDbContainerUid. Empty: as processes on their copy, on this host.
  std::string db_image;
  // Environment lifetimes (`expires:`): an event this long before, down at expiry, the document
  // deleted this long after.
  Millis expiry_warning_ms = 3'600'000;
  Millis expiry_grace_ms = 86'400'000;
  // Slow, pure work the loop must not wait for (validating a fleet document); without one it
  // runs on the loop.
  Worker* worker = nullptr;
  // A root daemon's ids for instances (base/identity.h): each environment's process instances
  // and database servers run as a uid of their own from it, unless an app says `user:`. Unset:
  // instances run as the daemon's user (a daemon that is not root cannot switch).
  std::optional<IdRange> instance_ids;
};

// What applying a fleet document would do (and, unless a dry run, did).
struct Plan {
  struct Change {
    std::string env, app;
    std::vector<std::string> settings;  // effective settings that change
    int replaced = 0;                   // running instances replaced
  };
  std::vector<std::string> added, removed;  // environments of the fleet document
  std::vector<Change> changed;
  int replaced = 0;
  // Environment documents the new fleet document makes invalid → why (refused unless forced;
  // forced, they stay stored and are left out until fixed).
  std::map<std::string, std::string> invalidated;
  std::vector<std::string> notes;
  std::int64_t version = 0;  // of the fleet document after the apply (now, for a dry run)
  bool applied = false;
};

// One write of an environment document. `based_on`: the version the writer read (0: the
// document must not exist yet). A stale one is refused naming who changed it since.
struct DocumentWrite {
  std::string name;
  std::string text;
  std::int64_t based_on = 0;
  std::string user;
};

// An environment document with what became of it.
struct DocumentStatus {
  model::EnvDocument doc;
  std::string error;  // why it is left out of the catalog (an apply of the fleet made it invalid)
};

// `network` with its last `tail` addresses excluded too (Deps::reserved_pool_tail).
inline model::NetworkSpec with_reserved(model::NetworkSpec network, int tail) {
  if (tail > 0 && network.pool.last - network.pool.first >= static_cast<model::Ipv4>(tail) * 4)
    network.exclude.push_back({network.pool.last - static_cast<model::Ipv4>(tail - 1), network.pool.last});
  return network;
}

// The level-triggered safety net: a full reconcile pass at least this often.
inline constexpr Millis kFullPassMs = 5'000;
// After the state store failed a write of the loop's: a full pass this soon, to write it again.
inline constexpr Millis kStoreRetryMs = 1'000;

class ControlLoop : private runtime::Listener {
 public:
  // Loads the stored catalog, leases and desired environments, re-attaches to instances that
  // survived a daemon restart (killing none), then schedules a reconcile.
  static Result<std::unique_ptr<ControlLoop>> create(const Deps& deps);
  ~ControlLoop();

  // Validate and store a new catalog. On any error nothing changes.
  Status apply(const std::string& text, const std::string& filename, const std::string& base_dir = "");
  // The same, with a plan: what changes, which instances are replaced. `based_on` is the fleet
  // version the change was made from (-1: whatever is there). Refused (nothing changes) when it
  // would make an environment document invalid, unless `force`. Relative source repositories
  // keep resolving against the directory of the first apply; `base_dir` moves it only with
  // `move_base_dir`. Audited as `user`.
  Result<Plan> apply_fleet(const std::string& text, const std::string& filename, const std::string& base_dir,
                           const std::string& user, std::int64_t based_on, bool dry_run, bool force,
                           bool move_base_dir = false);
  // The same, with the parsing and validation of the document on Deps::worker, so the loop
  // answers meanwhile; `done` runs on the loop. A document written meanwhile makes it start over.
  struct FleetApply {
    std::string text, filename, base_dir, user;
    std::int64_t based_on = -1;
    bool dry_run = false, force = false, move_base_dir = false;
  };
  void apply_fleet_async(FleetApply request, std::function<void(Result<Plan>)> done);
  std::int64_t fleet_version() const { return fleet_version_; }
  Millis now_wall_ms() const { return d_.clock->wall_ms(); }

  // Environment documents (berth env ...): created, changed and deleted one at a time, each
  // validated against the fleet and every other environment; nothing else changes.
  Result<model::EnvDocument> put_document(const DocumentWrite& write);
  // Takes the environment down and deletes its document; its database copies are removed
  // unless `keep_data`. Returns what was done, for the user.
  Result<std::vector<std::string>> delete_document(const std::string& name, std::int64_t based_on,
                                                   const std::string& user, bool keep_data);
  std::vector<DocumentStatus> documents() const;
  // Record a write in the audit log (the operations above record their own).
  Status audit(const std::string& user, const std::string& action, const std::string& target, const std::string& env,
               const std::string& detail);
  Result<std::vector<store::AuditEntry>> audit_log(const store::AuditQuery& query) const {
    return d_.store->audit(query);
  }

  // Every event, once it is stored and the read model shows what it says (its environment's
  // view is published: within kStatusPublishMs), in order, until unsubscribed. So a client that
  // reads the status when an event arrives sees the change. Loop thread only; `fn` runs on it
  // and must not block.
  using Subscription = EventLog::Subscription;
  Subscription subscribe(std::function<void(const store::Event&)> fn);
  void unsubscribe(Subscription id);

  Status up(const std::string& env);
  // Refused while thin environments that are up fall through to `env`, unless `force`.
  Status down(const std::string& env, bool force = false);
  // berth restart: every instance of `app` (every app the environment runs, when empty)
  // replaced one at a time, each health-gated before the next; failed and backing-off
  // instances start again at once. `user` is in the event.
  Status restart(const std::string& env, const std::string& app, const std::string& user);
  // Re-resolve the tags of the environment's apps built from source; moved ones are rebuilt and
  // their instances replaced one at a time, each new one health-gated before the next. What runs
  // stays the commit shown until the new resolution differs. `quiet`: no `refresh` event (follow's
  // polls; a moved branch still tells `building`).
  Status refresh(const std::string& env, bool quiet = false);

  const model::Catalog* catalog() const { return catalog_ ? &*catalog_ : nullptr; }
  // The status read model: what the API shows, as of the last publish. Every change the loop
  // makes to what a status shows marks its environment, and the loop publishes the marked ones
  // within kStatusPublishMs. The model itself may be read on any thread.
  const ReadModel& read_model() const { return publisher_.read_model(); }
  // Publish what changed since the last publish now (the API does after each request it routes
  // to the loop, so that a client reads its own writes). With `only`, a write that concerns one
  // environment: its view (and those of the thin environments falling through to it) now, the
  // rest of what changed within kStatusPublishMs. Loop thread only.
  void publish_status(const std::string& only = "");
  // Live status, walked from the loop's state (the read model is made of these). Loop thread only.
  Result<EnvStatus> status(const std::string& env) const { return env_status(view_inputs(), env); }
  Result<std::vector<store::Event>> events(const std::string& env, std::int64_t after_id, int limit);
  // Id of the newest event emitted (stored or about to be: events are written in batches).
  Result<std::int64_t> last_event_id() const { return events_.last_id(); }
  const build::Builder* builder() const { return d_.builder; }
  db::Manager* databases() const { return d_.databases; }
  // Something outside the loop changed (a database copy, a standard version): reconcile soon.
  void poke() { schedule_reconcile(); }
  // Throw away the environment's copy of database `db` and make a fresh one (its server is
  // replaced once the new copy exists). `version` 0: as the catalog asks; otherwise it must match.
  Status reset_database(const std::string& env, const std::string& db, int version);
  // Bring the environments' copies of `standard` to its `version` (0: the latest) (db/rollout.h):
  // every copy the catalog lets it reach — not one pinned to a version (NAME@V), nor one whose
  // `rollout` is none; `automatic` (after a release): only those whose `rollout` is auto, and
  // none at all is no rollout (nullptr). A copy whose server runs in a container (--db-image)
  // is listed as skipped.
  Result<const db::Rollout*> rollout_database(const std::string& standard, int version, const db::RolloutOptions& options,
                                              bool automatic = false);
  // Check the environments' copies (only `env`'s when not empty) for drift (db/drift.h): a copy
  // whose server serves is read through it, one whose environment is down through a private
  // server; one whose server is starting or stopping is listed as skipped.
  Result<const db::DriftCheck*> check_database_drift(const std::string& env);
  // Apply the environment's own migrations (`files`, with their texts) to its copy of `db`
  // (db::Manager::migrate): through its server when it serves, else a private server.
  Result<std::shared_ptr<const db::Job>> migrate_database(const std::string& env, const std::string& db,
                                                          std::vector<db::Migration> files, const db::ReleaseOptions& options);
  // What db::Manager tells an environment's apps (a rollout's outcome for its copy).
  void database_event(const std::string& env, const std::string& type, const std::string& db, const std::string& message) {
    emit(env, type, db, -1, "", message);
  }
  // The log file of an instance (stdout and stderr), for an app the environment defines.
  Result<std::string> log_path(const std::string& env, const std::string& app, int ordinal) const;
  // Number of reconcile passes run; for tests and benchmarks.
  std::uint64_t reconcile_count() const { return reconciles_; }
  // Run one full reconcile pass now (normally they are scheduled); returns its duration in µs.
  std::int64_t reconcile_now();
  // The last scheduled pass: its duration (µs), how many environments it visited, whether full.
  struct PassStats {
    std::int64_t micros = 0;
    std::size_t envs = 0;
    bool full = false;
  };
  PassStats last_pass() const { return last_pass_; }
  // berth's name server answers on `ip`:53 for the instances (empty: it does not; `note` says why).
  void set_resolver(const std::string& ip, const std::string& note);
  // Run a command inside a running instance (berth exec). `done` runs on the loop.
  void exec(const std::string& env, const std::string& app, int ordinal, std::vector<std::string> argv, Millis timeout_ms,
            std::function<void(Result<runtime::ExecResult>)> done);
  // An instance's output from byte `offset` (negative: the last -offset bytes), at most `max` bytes.
  void logs(const std::string& env, const std::string& app, int ordinal, std::int64_t offset, std::size_t max,
            std::function<void(Result<runtime::LogChunk>)> done);

 private:
  ControlLoop(const Deps& deps, ipam::Ipam ipam, std::map<std::string, std::uint32_t> env_uids);

  // The catalog of the fleet document and every valid environment document; the documents left
  // out are in invalid_documents_.
  Status load(const store::StoredCatalog& fleet, const std::vector<model::EnvDocument>& docs);
  // An apply of the fleet document in three steps: what it is based on (loop), the parse and
  // validation (pure: on the worker when there is one), the plan, store and install (loop).
  struct PreparedFleet {
    std::int64_t version = 0;  // of the fleet document it was made against
    std::string base_dir;      // where relative repositories resolve
    std::vector<std::string> notes;
  };
  Result<PreparedFleet> prepare_fleet(const FleetApply& request) const;
  static Result<model::ResolvedCatalog> parse_fleet(const std::string& text, const std::string& filename,
                                                    const std::string& base_dir,
                                                    const std::vector<model::EnvDocument>& docs);
  Result<Plan> finish_fleet(const FleetApply& request, PreparedFleet prepared, Result<model::ResolvedCatalog> resolved);
  // A new catalog in force: network, names, reconcile.
  void install(model::Catalog catalog, std::map<std::string, std::string> invalid);
  // Environment lifetimes: warn, take down, delete; then schedule the next check.
  void check_lifetimes();
 public:
  // The injected clock jumped forward (berth serve --test-clock): act on what is due now.
  void clock_moved();

 private:
  // The database copies of a deleted environment, once its instances are gone.
  void drop_copies(const std::string& env);

  // Passes are incremental: a trigger about one environment marks it (and the thin environments
  // falling through to it) dirty, and the next pass visits only dirty ones. A full pass visits
  // every environment: after a catalog change, a build, a released address (another environment
  // may be waiting for one), and every kFullPassMs as the level-triggered safety net.
  void schedule_reconcile();                        // full
  void schedule_reconcile(const std::string& env);  // env and what falls through to it
  // An instance of `app` changed (it became ready, exited...): the app itself, and the apps
  // whose gates wait on it (in `env` and the thin environments falling through), not the
  // whole environment.
  void schedule_reconcile(const std::string& env, const std::string& app);
  void reconcile();
  void post_pass();  // one pass posted at a time
  void arm_full_pass();
  void retry_store();  // a full pass in kStoreRetryMs (one armed at a time)
  // `plan`: what the environment should run (nullptr: nothing, it is down or gone).
  void reconcile_env(const std::string& name, EnvState& env, const PlannedEnv* plan);
  void reconcile_app(const std::string& env, AppState& app, const PlannedApp& plan, const model::Environment& espec);
  // What the views are made of, now.
  ViewInputs view_inputs() const;
  // The publisher's timer: publish the marked views, unless a pass is pending (then after it, so
  // that what it decides shows with the change that caused it).
  void status_due();
  Now now() const { return {d_.clock->monotonic_ms(), d_.clock->wall_ms()}; }

  // For an app with a source: resolve, build, and say whether its artifact is there; when not,
  // `wait` says why.
  bool prepare_build(const std::string& env, AppState& app, const model::AppSpec& spec, Artifact& out, std::string& wait);
  // For a database: the environment's copy of its standard; when not there yet, `wait` says why.
  bool prepare_database(const std::string& env, AppState& app, const model::AppSpec& spec, Artifact& out, std::string& wait);
  // Copies a rollout holds (db::Manager::held) in environments that are not up: their server is
  // gone (or going), and the rollout is told once it is.
  void serve_database_holds();
  // Where the environment's database app `a` serves, as the catalog's user; nullopt when no
  // instance serves: `between` says one exists (starting or stopping), else none runs.
  std::optional<db::ServerSource> database_server(const std::string& env, const model::AppSpec& a, bool& between) const;
  // Reconcile the apps of those in line for a start slot, as many as there are free slots.
  void start_next_in_line();
  void start(Supervisor& sup, const model::AppSpec& spec, const model::Environment& espec, const Artifact& artifact,
             const std::string& fingerprint);
  // Carry out what an instance's supervisor asks (its events, record, timers, probe, stop...).
  void apply(Supervisor& sup, Step step);
  void prepare_network() {
    if (catalog_) fx_.prepare_network(catalog_->network());
  }
  void on_recovered(const std::vector<runtime::Recovered>& recovered);
  // runtime::Listener
  void on_created(const runtime::InstanceId& id, std::uint64_t launch, const runtime::Ref& ref,
                  std::function<void(Status)> recorded) override;
  // The records of created instances, in one transaction with their addresses (written again
  // first if the store may lack them), then each runtime answered: only then may they run.
  void record_created();
  void on_started(const runtime::InstanceId& id, std::uint64_t launch, const runtime::Ref& ref,
                  const runtime::Observed& observed) override;
  void on_failed(const runtime::InstanceId& id, std::uint64_t launch, const runtime::Ref& ref, const Error& error) override;
  void on_exited(const runtime::InstanceId& id, const runtime::Ref& ref, const runtime::Exit& exit) override;
  void run_probe(const ipam::LeaseKey& key);  // if it is still wanted
  void on_probe(const ipam::LeaseKey& key, const health::ProbeResult& result);

  Supervisor* find(const ipam::LeaseKey& key) { return obs_.find(key); }
  Supervisor* find(const runtime::InstanceId& id) { return obs_.find(ipam::LeaseKey{id.env, id.app, id.ordinal}); }
  const model::AppSpec* spec_of(const ipam::LeaseKey& key) const;
  void emit(const std::string& env, const std::string& type, const std::string& app, int ordinal,
            const std::string& ip, const std::string& message);

  // A callback that does nothing once this loop is gone (work posted to the executor, answers of
  // runtimes, which outlive the loop).
  template <class F>
  auto guarded(F fn) {
    return [alive = std::weak_ptr<bool>(alive_), fn = std::move(fn)](auto&&... args) mutable {
      if (alive.lock()) fn(std::forward<decltype(args)>(args)...);
    };
  }

  Deps d_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  ipam::Ipam ipam_;
  std::optional<model::Catalog> catalog_;
  std::optional<store::StoredCatalog> fleet_;  // the fleet document as stored
  std::int64_t fleet_version_ = 0;
  std::vector<model::EnvDocument> documents_;  // every stored one, valid or not
  std::uint64_t documents_generation_ = 0;     // changes with documents_
  std::map<std::string, std::string> invalid_documents_;  // name → why it is left out
  std::set<std::string> expiry_warned_;
  std::map<std::string, std::vector<std::string>> drop_copies_;  // deleted env → its database copies to remove
  Executor::TimerId lifetime_timer_ = 0;
  EventLog events_;
  void deliver_events();  // writes, then delivers those whose view is published
  // Record writes that may wait for the next batch: an instance's readiness, and the erase of a
  // record whose instance is gone. A daemon killed before the batch loses only what the next one
  // learns again (recover finds the instance gone; an adopted one is probed at once). Written in
  // order, and before any other write of the store that could concern the same records (a pass,
  // an instance's record, a job's completion), so an older write never lands on a newer record.
  struct RecordWrite {
    ipam::LeaseKey key;
    bool erase = false;
    Millis ready_at = 0;
  };
  std::vector<RecordWrite> record_writes_;
  // Instances created by their runtimes, waiting for their records' batch (record_created).
  struct Created {
    ipam::LeaseKey key;
    std::uint64_t launch = 0;
    runtime::Ref ref;
    std::function<void(Status)> recorded;
  };
  std::vector<Created> created_;
  bool record_posted_ = false;
  Status write_records();  // the waiting ones; inside a transaction
  void write_batch();      // the waiting records, then the events
  Planner planner_;  // of catalog_
  Observed obs_;     // the environments up, and every instance known
  bool reconcile_pending_ = false;
  StartSlots slots_;  // instances starting at once, per runtime (Capabilities::max_starting)
  bool publish_after_pass_ = false;  // the views fell due while a pass was queued: it publishes them
  bool full_dirty_ = true;
  bool address_waiters_ = false;  // an instance found the pool exhausted (since the last full pass)
  std::set<std::string> dirty_;  // environments the next pass visits whole
  std::map<std::string, std::set<std::string>> dirty_apps_;  // env → apps it visits on their own
  Executor::TimerId full_pass_timer_ = 0;
  Executor::TimerId store_retry_timer_ = 0;
  PassStats last_pass_;
  Publisher publisher_;  // the read model and the DNS zone
  Effects fx_;           // what touches the runtimes: launches, stops, probes, timers, the network, uids
  std::map<std::string, Executor::TimerId> follow_timers_;  // env → next refresh
  std::uint64_t reconciles_ = 0;
};

}  // namespace berth::control
