// db/manager.h — standard databases: versions imported into a blob store, a golden directory per
// (standard, version) on this host, and each environment's private copy.
//
// A standard is imported (berth db import) from a running server, a stopped data directory or
// an SQL dump: the engine makes a data directory of it, seals it (berth's account, clean
// shutdown), and it is snapshotted into the blob store (chunks the store has are not uploaded
// again) as the next version. The imported directory becomes this host's golden for it.
//
// A database of an environment gets its copy from ensure_copy(): a golden restored from the
// store if this host lacks it (parallel fetch, decompress, verify), then cloned by the fastest
// path the host supports (db/clone.h). A copy keeps its data across restarts of its server; it
// is replaced only when the environment asks for another standard or version, or by reset().
//
// Layout under `dir`: standards/<name>/<version>.json (the registry), golden/<name>@<version>/,
// copies/<env>/<db>/{data,copy.json[,reset]}, logs/. JSON files are written to a temporary name
// and renamed, so a crash leaves the old or the new file; a copy without copy.json is incomplete
// and removed at start (so a copy is removed starting with its copy.json).
//
// Threading: every method runs on the owner's loop (the Executor). Long work runs on worker
// threads, which post their results back to the loop; jobs report progress through atomics.
// A library exception on a worker (filesystem, JSON) fails its job with the exception's text.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <set>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "base/identity.h"
#include "base/executor.h"
#include "base/result.h"
#include "blob/blob_store.h"
#include "db/clone.h"
#include "db/drift.h"
#include "db/engine.h"
#include "db/migrations.h"
#include "db/rollout.h"
#include "model/catalog.h"

namespace berth::db {

struct Version {
  std::string standard;
  int version = 0;
  std::string engine;
  std::string manifest_id;
  std::string source;            // "server 127.0.0.1:3306", "datadir /x", "dump /x.sql"
  std::uint64_t bytes = 0;       // size of the data directory
  std::uint64_t files = 0;
  std::uint64_t chunks = 0;
  std::uint64_t new_chunks = 0;
  std::uint64_t uploaded_bytes = 0;  // what this version added to the store (compressed)
  Millis created_at = 0;         // wall
  Millis import_ms = 0;          // making it: the import, or the release's rehearsal and snapshot
  // A release (berth db release): the migrations it added to the version before it, in the order
  // they were applied (released_in: this version). An import adds none.
  std::vector<Migration> migrations;
};

// Where a release's migrations are: a directory, or a git repository at a ref.
struct ReleaseSource {
  std::string path;  // a directory on the daemon's host, or a repository (path or URL) with `ref`
  std::string ref;   // "": `path` is a plain directory
  std::string subdir;  // the migrations' directory inside the repository ("": its top)
  ReleaseOptions options;
};

struct ImportSource {
  enum class Kind { kServer, kDatadir, kDump } kind = Kind::kServer;
  ServerSource server;  // kServer
  std::string path;     // kDatadir, kDump
};

struct Copy {
  std::string env, db;
  std::string standard;
  int version = 0;
  std::string dir;      // copies/<env>/<db>
  std::string datadir;  // dir/data
  std::string rundir;   // dir/run
  CloneMethod method = CloneMethod::kCopy;
  Millis clone_ms = 0;  // making the copy: cloning the golden, or restoring from the store (kRestore)
  Millis created_at = 0;
  // Who its server runs as: data/ and run/ are theirs (unset: the daemon's user).
  std::optional<Identity> owner;
  // For a server in a container (on a cluster's host): data/ as a tar archive to fill its volume
  // from (ensure_seed(); empty until made).
  std::string seed;
  // A server on a volume filled from `seed` has answered: one that starts on a fresh fill of it
  // now (its host was lost) has lost what was written since.
  bool seed_served = false;
  // A rollout (db/rollout.h) moved its schema on to this version: 0 while it is still at
  // `version`, the one it was made from (whose golden an overlay copy still lies on).
  int at_version = 0;
  // The migrations rollouts applied to it, in order.
  std::vector<Migration> applied;
  // The environment's own migrations (berth db migrate), in order: apart from the standard's, so
  // a rollout neither applies nor expects them.
  std::vector<Migration> own;
  int at() const { return at_version ? at_version : version; }
  // Names this copy among all copies ever made of the database (what its server runs on).
  std::string id() const { return "db:" + standard + "@" + std::to_string(version) + ":" + std::to_string(created_at); }
};

struct Job {
  std::string id;
  std::string kind;    // import | release | copy | seed | migrate
  std::string target;  // standard, or env/db
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> done_bytes{0}, total_bytes{0};
  Millis started_at = 0, finished_at = 0;  // wall; set on the loop
  std::string phase;   // guarded by mu
  std::string error;   // set on the loop when done
  std::optional<Version> version;  // import: what it made
  std::vector<Migration> migrations;  // migrate: the files applied (those before a failure too); set on the loop when done
  mutable std::mutex mu;
  std::string get_phase() const {
    std::lock_guard<std::mutex> lock(mu);
    return phase;
  }
  void set_phase(std::string p) {
    std::lock_guard<std::mutex> lock(mu);
    phase = std::move(p);
  }
};

struct CopyStatus {
  enum class State { kPreparing, kReady, kFailed } state = State::kPreparing;
  std::string message;      // preparing: what is happening; failed: why
  const Copy* copy = nullptr;  // kReady
};

class Manager {
 public:
  Manager(Executor& executor, const Clock& clock, std::string dir, blob::BlobStore& store, std::unique_ptr<Engine> engine,
          CloneOptions clone_options = {});
  ~Manager();  // waits for running jobs

  // Beside a copy (copies/<env>/<db>/) while a private server, run as root, may run on it.
  static constexpr const char* kPrivateServerMarker = "private-server";

  // Start importing the next version of `standard`; returns the job.
  Result<std::shared_ptr<const Job>> import(const std::string& standard, const ImportSource& source);
  // Start releasing migrations (db/migrations.h) as the next version of `standard`: what
  // plan_release() finds new is applied, in a rehearsal, to a throwaway copy of the latest
  // version by a private server; if every file succeeds the copy is sealed and snapshotted as the
  // next version, which records them. A failed file leaves no version and names the file, its
  // line and the server's error. Refused while the standard is imported or released, or has no
  // version yet. Problems plan_release() finds are the job's error, with every one in its log.
  Result<std::shared_ptr<const Job>> release(const std::string& standard, const ReleaseSource& source);
  // Every migration the standard's version `version` contains, in the order they were applied.
  std::vector<Migration> migrations_of(const std::string& standard, int version) const;
  std::shared_ptr<const Job> job(const std::string& id) const;
  std::vector<Version> versions(const std::string& standard) const;  // oldest first
  std::vector<std::string> standards() const;
  // Forget a version (its golden on this host too, deleted in the background); chunks stay in
  // the store (they may be shared). Refused while an environment's copy was made from it, while
  // a copy of it is being made, or while its golden is being restored.
  Status remove(const std::string& standard, int version);

  // The environment's copy of `db` as `spec` asks, its data/ and run/ owned by `owner` (the
  // user its server runs as; unset: the daemon's); starts making it when missing, and gives an
  // existing copy to a new owner first.
  CopyStatus ensure_copy(const std::string& env, const std::string& db, const model::DatabaseSpec& spec,
                         std::optional<Identity> owner = std::nullopt);
  // The ready copy as a tar archive for a server that runs in a container, on this host or
  // another (db/clone.h archive_copy, its files `owner`'s): made once, on a worker thread, at
  // copies/<env>/<db>/seed-<copy>.tar and kept with the copy, so a volume lost with its host is filled
  // again from it. kReady: Copy::seed is its path. Call once ensure_copy() says kReady.
  CopyStatus ensure_seed(const std::string& env, const std::string& db, Identity owner);
  // Whether any copy of the environment's databases is on this host (kept after it was deleted).
  bool has_copies(const std::string& env) const;
  const Copy* find_copy(const std::string& env, const std::string& db) const;
  // Throw the copy away; the next ensure_copy() makes a fresh one. The caller has stopped the
  // copy's server first (it must not run on a directory being deleted and made again). Refused
  // while the copy is being made.
  Status reset(const std::string& env, const std::string& db);
  // A reset asked for while the copy's server runs: it is done (reset()) once the server is
  // gone. The request is written beside the copy (its file `reset`) before this returns, so a
  // daemon killed before the server has stopped still resets the copy after its restart, and it
  // ends with the copy. Without a copy there is nothing to reset.
  Status request_reset(const std::string& env, const std::string& db);
  bool reset_requested(const std::string& env, const std::string& db) const;
  // Whether the environment's copy of `db`, or its archive, is being made now.
  bool making_copy(const std::string& env, const std::string& db) const;
  // The server on the environment's copy answers (for a copy with a seed: Copy::seed_served). A
  // copy restored straight from the store (a cold host) now has this host's golden restored from
  // the locally cached objects, in the background: doing it earlier would slow the server's start.
  void server_ready(const std::string& env, const std::string& db);

  // ---- rollouts: a standard's new version carried to the environments' copies (db/rollout.h) ----
  // Start bringing the copies in `targets` to version `to` of `standard` (0: its latest).
  // Refused while one runs for the standard or while its next version is being made. Targets
  // with `skip` set, or whose copy is at `to` already, are listed as skipped.
  Result<const Rollout*> rollout(const std::string& standard, int to, const RolloutOptions& options,
                                 const std::vector<RolloutTarget>& targets);
  const Rollout* rollout_of(const std::string& standard) const;  // the latest; null: none yet
  // How many released migrations a copy at version `from` lacks to the standard's latest version
  // (counted up to the first version that is an import: a rollout cannot pass one).
  int pending_migrations(const std::string& standard, int from) const;
  // Why the environment's copy needs its server down now (a rollout snapshots it, or puts it
  // back; a drift check reads a copy whose environment is down): while set, the loop stops the
  // server, keeps it stopped, and calls server_down() once no instance of it is left. holds()
  // lists the rollouts' only (a drift check never waits for a server to go).
  std::optional<std::string> held(const std::string& env, const std::string& db) const;
  std::vector<std::pair<std::string, std::string>> holds() const;  // (env, db) of every held copy
  void server_down(const std::string& env, const std::string& db);
  // The server on the environment's copy answers at `server` (its address and the account apps
  // use), after a start: a rollout waiting for it applies its migrations through it.
  void server_ready(const std::string& env, const std::string& db, const ServerSource& server);
  // Called on the loop with what the environment's apps are told (an event of type
  // db-rolled-out or db-rollout-failed).
  void set_on_event(std::function<void(const std::string& env, const std::string& type, const std::string& db,
                                       const std::string& message)> fn) {
    on_event_ = std::move(fn);
  }

  // ---- an environment's own migrations (berth db migrate) ----
  // Start applying to the environment's copy of `db` what `files` (read_migrations() or
  // migration_from_text(), with their texts) adds to the copy's own migrations (Copy::own; the
  // rules of plan_release(), checked here, before anything runs): through its server at `live`,
  // or, without one, through a private server while the copy is held. Each file that succeeds is
  // recorded; the first that fails stops it (the job's error names the file, its line and the
  // server's error) and what it ran before the error stays: a developer's migration has no
  // snapshot (berth db reset gives a fresh copy). Refused while a rollout, a drift check or
  // another migration has the copy, or while it is being made.
  Result<std::shared_ptr<const Job>> migrate(const std::string& env, const std::string& db, std::vector<Migration> files,
                                             const ReleaseOptions& options, std::optional<ServerSource> live,
                                             const Account& account);

  // ---- drift: each copy's schema against its version's golden (db/drift.h) ----
  // Start checking the copies in `targets` (the loop names them, knowing which servers run);
  // refused while a check runs. A copy read through a private server is held (held()) until it
  // has been read.
  Result<const DriftCheck*> check_drift(const std::vector<DriftTarget>& targets);
  const DriftCheck* drift_check() const;  // the latest since the daemon started; null: none
  // The copy's last result (kept with the copy across restarts); null: never checked. A result
  // whose version is not the copy's at() any more predates a rollout.
  const DriftResult* drift_of(const std::string& env, const std::string& db) const;

  // Called on the loop when a release became the standard's version `version`.
  void set_on_released(std::function<void(const std::string& standard, int version)> fn) { on_released_ = std::move(fn); }

  const blob::BlobStore& store() const { return store_; }
  // Called on the loop whenever a copy or a version appears or fails.
  void set_on_change(std::function<void()> fn) { on_change_ = std::move(fn); }

 private:
  std::string key(const std::string& env, const std::string& db) const { return env + "/" + db; }
  void load();
  Status save_version(const Version& v) const;
  Status save_copy(const Copy& c) const;
  // Remove the copy (copy.json first: a daemon killed meanwhile never takes what is left for a
  // copy, nor loses a requested reset of one it would keep) and forget it.
  Status discard(const std::string& k);
  Status give_to(const Copy& c, Identity owner) const;  // worker threads
  // Worker threads: `work` runs a private server on the copy (as root); what it made is given
  // back to the copy's owner after, whatever `work` returned. A marker beside the copy
  // (kPrivateServerMarker) says one may run: a daemon killed meanwhile gives the copy back to its
  // owner before its server next starts (load() forgets the owner, ensure_copy() gives it).
  Status on_private_server(const Copy& c, const std::function<Status()>& work) const;
  std::string golden_path(const std::string& standard, int version) const;
  // The copy's archive (ensure_seed()), named after the copy: never one of an earlier copy.
  static std::string seed_path(const Copy& c) { return c.dir + "/seed-" + std::to_string(c.created_at) + ".tar"; }
  std::string cache_path(const std::string& standard, int version) const;
  std::shared_ptr<Job> new_job(const std::string& kind, const std::string& target);
  // A new version being made (an import, a release): its job, its staging directory cleared.
  std::shared_ptr<Job> start_version(const std::string& kind, const std::string& standard, int version);
  std::vector<std::string> manifests(const std::string& standard) const;  // its versions': bases of the next
  std::string staging_path(const std::string& standard, int version) const;
  std::string version_log(const std::string& kind, const std::string& standard, int version) const;
  // Worker threads: the sealed `staging` snapshotted into the store as `v` (its manifest and
  // counts set), then renamed to its golden. Then finish_version() on the same thread.
  Status publish(const std::string& staging, Version& v, const std::vector<std::string>& bases, Job& job);
  // Worker threads: the staging directory gone if `st` failed; on the loop, `v` recorded (or
  // the job failed) and the standard free for the next version.
  void finish_version(std::shared_ptr<std::atomic<bool>> alive, std::shared_ptr<Job> job, Status st, Version v);
  void run_worker(std::function<void()> fn);
  // Rollouts (db/rollout.cc).
  void load_rollouts();
  Status save_rollout(const Rollout& r) const;
  RolloutRow* row_of(const std::string& env, const std::string& db);
  const RolloutRow* row_of(const std::string& env, const std::string& db) const;
  void start_rows(Rollout& r);
  // The copy's drift read or own migrations ended: a rollout row waiting for it may start.
  void copy_free(const std::string& env, const std::string& db);
  void start_row(Rollout& r, RolloutRow& row);
  void apply_row(Rollout& r, RolloutRow& row, std::optional<ServerSource> server);
  void row_applied(Rollout& r, RolloutRow& row, Status st, std::vector<Migration> applied);
  void finish_row(Rollout& r, RolloutRow& row, RolloutRow::State state, const std::string& error);
  // The migrations that take a copy from version `from` to `to`, their texts read back from the
  // files kept at release (saved_migration()); an import between them makes it an error.
  Result<std::vector<Migration>> migrations_between(const std::string& standard, int from, int to) const;
  std::string saved_migration(const std::string& standard, const Migration& m) const;
  std::string rollout_path(const std::string& standard) const;
  // Drift (db/drift.cc).
  std::string schema_path(const std::string& standard, int version) const;  // a golden's schema, read once
  void load_drift(const Copy& c);
  // Worker threads: the schema of the golden of `standard`@`version` (`lock` its golden's).
  Result<Schema> golden_schema(const std::string& standard, int version, std::mutex& lock, const std::string& log);
  // The lock of one golden: its restore and clones from it; another standard's never wait.
  std::shared_ptr<std::mutex> golden_lock(const std::string& golden);

  Executor& executor_;
  const Clock& clock_;
  std::string dir_;
  blob::BlobStore& store_;
  std::unique_ptr<Engine> engine_;
  CloneOptions clone_options_;
  std::map<std::string, std::map<int, Version>> versions_;
  std::map<std::string, int> importing_;  // standard → version being imported
  std::map<std::string, Copy> copies_;    // env/db
  std::set<std::string> resets_;          // env/db: copies to reset once their server is gone
  std::map<std::string, std::shared_ptr<Job>> copy_jobs_;  // env/db → running or failed job
  std::map<std::string, std::shared_ptr<Job>> seed_jobs_;  // env/db → archive being made, or failed
  std::map<std::string, std::string> copy_job_for_;        // env/db → standard@version the job makes
  std::set<std::string> chowning_;                         // env/db: being given to a new owner
  std::map<std::string, std::shared_ptr<Job>> jobs_;
  std::map<std::string, Version> goldens_wanted_;  // env/db → the golden to restore once its server is ready
  // golden path → its lock (taken on worker threads; the map itself only on the loop). One
  // restore of a golden at a time (two environments may want the same); clones wait for it.
  std::map<std::string, std::shared_ptr<std::mutex>> golden_locks_;
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> finished;
  };
  std::vector<Worker> workers_;  // finished ones are joined when the next one starts
  std::shared_ptr<std::atomic<bool>> alive_ = std::make_shared<std::atomic<bool>>(true);
  std::function<void()> on_change_;
  std::function<void(const std::string&, const std::string&, const std::string&, const std::string&)> on_event_;
  std::function<void(const std::string&, int)> on_released_;
  std::map<std::string, Rollout> rollouts_;  // standard → its latest rollout
  std::optional<DriftCheck> drift_check_;
  std::map<std::string, DriftResult> drift_;  // env/db → its copy's last result
  std::set<std::string> drift_reading_;       // env/db: read through a private server now (held)
  std::map<std::string, bool> migrating_;     // env/db → its own migrations being applied: through a private server (held)
  int next_job_ = 1;
};

}  // namespace berth::db
