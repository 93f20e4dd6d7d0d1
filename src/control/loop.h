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
#include "build/builder.h"
#include "control/read_model.h"
#include "control/status.h"
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
  // Environment lifetimes (`expires:`): an event this long before, down at expiry, the document
  // deleted this long after.
  Millis expiry_warning_ms = 3'600'000;
  Millis expiry_grace_ms = 86'400'000;
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

// An instance ready this long has its crash count (and so its restart backoff) reset.
inline constexpr Millis kStableAfterMs = 10'000;
// The level-triggered safety net: a full reconcile pass at least this often.
inline constexpr Millis kFullPassMs = 5'000;
// After the state store failed a write of the loop's: a full pass this soon, to write it again.
inline constexpr Millis kStoreRetryMs = 1'000;
// The read model is published at most this long after a change the reader did not cause (an
// instance started, a probe answered, a pass decided); an API write publishes before its reply.
// Rebuilding an environment's view per instance event was half the loop's time at 1,000
// environments: a burst of events now costs one rebuild per environment.
inline constexpr Millis kStatusPublishMs = 20;

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
  using Subscription = std::uint64_t;
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
  // their instances replaced one at a time, each new one health-gated before the next.
  Status refresh(const std::string& env);

  const model::Catalog* catalog() const { return catalog_ ? &*catalog_ : nullptr; }
  // The status read model: what the API shows, as of the last publish. Every change the loop
  // makes to what a status shows marks its environment, and the loop publishes the marked ones
  // within kStatusPublishMs. The model itself may be read on any thread.
  const ReadModel& read_model() const { return read_model_; }
  // Publish what changed since the last publish now (the API does after each request it routes
  // to the loop, so that a client reads its own writes). With `only`, a write that concerns one
  // environment: its view (and those of the thin environments falling through to it) now, the
  // rest of what changed within kStatusPublishMs. Loop thread only.
  void publish_status(const std::string& only = "");
  // Live status, walked from the loop's state (the read model is made of these). Loop thread only.
  Result<EnvStatus> status(const std::string& env) const;
  Result<std::vector<store::Event>> events(const std::string& env, std::int64_t after_id, int limit);
  // Id of the newest event emitted (stored or about to be: events are written in batches).
  Result<std::int64_t> last_event_id() const { return last_event_id_; }
  const build::Builder* builder() const { return d_.builder; }
  db::Manager* databases() const { return d_.databases; }
  // Something outside the loop changed (a database copy, a standard version): reconcile soon.
  void poke() { schedule_reconcile(); }
  // Throw away the environment's copy of database `db` and make a fresh one (its server is
  // replaced once the new copy exists). `version` 0: as the catalog asks; otherwise it must match.
  Status reset_database(const std::string& env, const std::string& db, int version);
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
  // kRecovering: recorded before a daemon restart, its runtime not yet asked; kLaunching: a
  // launch in flight (created or not yet).
  // kCompleted: a job (kind: job) that exited 0 with the settings it has now.
  enum class Phase { kStopped, kWaiting, kRecovering, kLaunching, kStarting, kReady, kUnhealthy, kBackoff, kFailed, kStopping,
                     kCompleted };

  struct Instance {
    ipam::LeaseKey key;
    std::string ip;
    Phase phase = Phase::kStopped;
    std::string runtime_name;   // the runtime it was launched in
    runtime::Ref ref;           // set once created (or as recorded before a restart)
    std::uint64_t launch = 0;   // the launch in flight; 0 when none
    std::string launch_what;    // what the launch runs, for the "starting" event
    int pid = 0;                // its main process on this host, when known
    std::string detail;         // "pid 4711", "container 3fa2c1d0e9ab"
    std::string fingerprint;
    std::optional<health::Tracker> tracker;
    std::unique_ptr<health::ProbeHandle> probe;
    std::unique_ptr<runtime::Cancel> probe_exec;  // an exec probe in flight
    Executor::TimerId probe_timer = 0;
    Executor::TimerId backoff_timer = 0;
    int restarts = 0;
    int crashes = 0;          // consecutive, reset once ready
    bool started_before = false;
    Millis started_mono = 0;
    Millis ready_at = 0;      // wall
    Millis ready_mono = 0;    // monotonic, for backoff reset
    bool degraded = false;
    bool replacing = false;   // stopped to be replaced with new settings; done once ready again
    bool restart_requested = false;  // berth restart: replaced in the rolling replacement, health-gated
    bool backoff_after_stop = false;  // stopped for failing its health check: restart with backoff
    std::string build_id;     // the build the running process runs
    std::string message;
    std::string last_probe;
    bool probe_trouble = false;  // the last probe was inconclusive (the daemon's own error), announced
    // Something of it exists in its runtime (or may: a launch in flight).
    bool exists() const { return launch != 0 || !ref.empty(); }
  };
  struct Source {
    std::string ref_key;     // repo#tag the state below is for
    std::string commit;
    bool resolving = false;
    std::string error;       // resolving failed
    std::string build_id;
    std::string announced;   // last build state told in an event
    std::string db_announced;  // last database copy state told in an event
  };
  struct App {
    std::map<int, Instance> instances;
    Source src;
    std::string desired_fp;  // fingerprint the last pass wanted (settings + build)
    std::map<std::string, bool> dep_ok;  // per dependency: satisfied at the last pass
    std::set<std::string> failed_deps;   // dependencies whose failure was announced
  };
  struct Env {
    std::map<std::string, App> apps;
  };

  explicit ControlLoop(const Deps& deps, ipam::Ipam ipam) : d_(deps), ipam_(std::move(ipam)) {}

  // The catalog of the fleet document and every valid environment document; the documents left
  // out are in invalid_documents_.
  Status load(const store::StoredCatalog& fleet, const std::vector<model::EnvDocument>& docs);
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
  EnvSummary summary(const model::Environment& espec) const;
  void schedule_reconcile();                        // full
  void schedule_reconcile(const std::string& env);  // env and what falls through to it
  void reconcile();
  void post_pass();  // one pass posted at a time
  void arm_full_pass();
  void retry_store();  // a full pass in kStoreRetryMs (one armed at a time)
  void reconcile_env(const std::string& name, Env& env, const model::Environment* spec);
  void reconcile_app(const std::string& env, App& app, const model::AppSpec& spec, const model::Environment& espec);
  void check_dependencies(const std::string& env, App& app, const model::AppSpec& spec, const model::Environment& espec);
  bool dependency_satisfied(const model::Dependency& dep, const model::Environment& espec) const;
  std::string waiting_message(const model::Dependency& dep, const model::Environment& espec) const;
  AppStatus app_status(const model::AppSpec& aspec, const model::Environment& espec) const;
  void publish_zone();
  std::shared_ptr<const dns::EnvRecords> env_records(const model::Environment& espec) const;
  // What an environment shows changed: its names and status (touched), or its status only. Both
  // mark the thin environments falling through to it too and schedule a publish.
  void touched(const std::string& env);
  void status_changed(const std::string& env);
  void status_changed_all();
  void schedule_status_publish();
  int ready_count(const std::string& env, const std::string& app) const;

  struct Artifact {
    std::string path;
    std::string build_id;
    std::string commit;
  };
  // For an app with a source: resolve, build, and say whether its artifact is there; when not,
  // `wait` says why.
  bool prepare_build(const std::string& env, App& app, const model::AppSpec& spec, Artifact& out, std::string& wait);
  // For a database: the environment's copy of its standard; when not there yet, `wait` says why.
  bool prepare_database(const std::string& env, App& app, const model::AppSpec& spec, Artifact& out, std::string& wait);
  // Who an app's process instances run as: `user:` of the app (root: the daemon's user), else
  // the environment's own uid (given out, and stored, the first time); nullopt: the daemon's user.
  Result<std::optional<Identity>> identity_for(const std::string& env, const model::AppSpec& spec);
  // A completed job runs again: its completion (stored as a record of kCompletedRef) is forgotten.
  void forget_completion(Instance& inst);
  // What the instances table holds, runtime "", for a job that completed.
  static constexpr const char* kCompletedRef = "completed";
  // The environment is gone: its uid may go to another (kept while a copy of its data is here).
  void release_uid(const std::string& env);
  App* find_app(const std::string& env, const std::string& app);
  runtime::Runtime* runtime_named(const std::string& name) const;
  // The runtime an app runs in: docker for images, process otherwise; nullptr (and `why`) if this
  // daemon has none such.
  runtime::Runtime* runtime_for(const model::AppSpec& spec, std::string* why) const;
  runtime::InstanceSpec instance_spec(const Instance& inst, const model::AppSpec& spec, const model::Environment& espec,
                                      const Artifact& artifact) const;
  void start(Instance& inst, const model::AppSpec& spec, const model::Environment& espec, const Artifact& artifact,
             const std::string& fingerprint);
  void stop(Instance& inst, const std::string& why);
  void prepare_network();
  void prepare_network_from(std::size_t i, const runtime::Network& net);
  void on_recovered(const std::vector<runtime::Recovered>& recovered);
  // runtime::Listener
  Status on_created(const runtime::InstanceId& id, std::uint64_t launch, const runtime::Ref& ref) override;
  void on_started(const runtime::InstanceId& id, std::uint64_t launch, const runtime::Ref& ref,
                  const runtime::Observed& observed) override;
  void on_failed(const runtime::InstanceId& id, std::uint64_t launch, const runtime::Ref& ref, const Error& error) override;
  void on_exited(const runtime::InstanceId& id, const runtime::Ref& ref, const runtime::Exit& exit) override;
  // Wait before starting the instance again: the next delay of its crash count (doubling from
  // restart.backoff up to restart.max_backoff), or none. Returns the delay.
  Millis back_off(Instance& inst, const model::RestartSpec& restart, bool immediately);
  void schedule_probe(Instance& inst);  // at the tracker's next_probe_at
  void run_probe(const ipam::LeaseKey& key);
  void on_probe(const ipam::LeaseKey& key, const health::ProbeResult& result);
  void mark_ready(Instance& inst, const std::string& detail);
  void cancel_timers(Instance& inst);

  Instance* find(const ipam::LeaseKey& key);
  Instance* find(const runtime::InstanceId& id) { return find(ipam::LeaseKey{id.env, id.app, id.ordinal}); }
  const model::AppSpec* spec_of(const ipam::LeaseKey& key) const;
  void emit(const std::string& env, const std::string& type, const std::string& app, int ordinal,
            const std::string& ip, const std::string& message);
  std::string public_state(const Instance& inst) const;

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
  std::map<std::string, std::string> invalid_documents_;  // name → why it is left out
  std::set<std::string> expiry_warned_;
  std::map<std::string, std::vector<std::string>> drop_copies_;  // deleted env → its database copies to remove
  std::map<std::string, std::uint32_t> env_uids_;  // env → the uid its instances run as (Deps::instance_ids)
  Executor::TimerId lifetime_timer_ = 0;
  std::map<Subscription, std::function<void(const store::Event&)>> subscribers_;
  // Events emitted and not yet delivered to subscribers, oldest first. Each is numbered when
  // emitted, written with the others in one transaction at the next publish (stored before any
  // subscriber sees it; a daemon killed first loses only events nobody saw), and delivered once
  // its environment's view is published.
  struct PendingEvent {
    store::Event event;
    bool written = false;
  };
  std::deque<PendingEvent> undelivered_;
  std::int64_t last_event_id_ = 0;
  void write_events();    // the unwritten ones, one transaction
  void deliver_events();  // writes, then delivers those whose view is published
  Subscription last_subscription_ = 0;
  std::set<std::string> up_;
  std::map<std::string, Env> envs_;
  bool reconcile_pending_ = false;
  bool full_dirty_ = true;
  bool address_waiters_ = false;  // an instance found the pool exhausted (since the last full pass)
  std::set<std::string> dirty_;
  // env → the thin environments with an app served by it (recomputed when the catalog changes).
  std::map<std::string, std::set<std::string>> falls_through_to_;
  Executor::TimerId full_pass_timer_ = 0;
  Executor::TimerId store_retry_timer_ = 0;
  PassStats last_pass_;
  // DNS: per-environment records, rebuilt when their environment is marked dirty.
  std::map<std::string, std::shared_ptr<const dns::EnvRecords>> env_records_;
  std::set<std::string> dns_dirty_;
  bool dns_all_dirty_ = true;
  std::uint32_t zone_serial_ = 0;
  // The read model: the views of the last snapshot, rebuilt when their environment is marked.
  ReadModel read_model_;
  std::unordered_map<std::string, std::shared_ptr<const EnvView>> views_;
  std::shared_ptr<const std::unordered_map<std::string, std::size_t>> view_index_;  // of this catalog
  std::set<std::string> status_dirty_;
  bool status_all_dirty_ = true;
  Executor::TimerId status_publish_timer_ = 0;
  std::uint64_t view_generation_ = 0;
  std::uint64_t status_serial_ = 0;
  std::map<std::string, Executor::TimerId> follow_timers_;  // env → next refresh
  std::uint64_t reconciles_ = 0;
  std::uint64_t launches_ = 0;
  runtime::Network network_;            // the catalog's pool, as runtimes are given it
  std::optional<runtime::Network> prepared_;  // the network last asked of the runtimes
  bool network_ready_ = false;          // every runtime has answered for prepared_
  std::string resolver_;                // berth's name server for instances (port 53), when it answers there
  std::string resolver_note_;           // why it does not
  std::map<std::uint64_t, std::unique_ptr<runtime::Cancel>> execs_;  // berth exec in flight
  std::uint64_t next_exec_ = 0;
};

}  // namespace berth::control
