#include "db/manager.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/files.h"
#include "base/subprocess.h"
#include "base/text.h"
#include "blob/cache/cache_store.h"
#include "db/files.h"
#include "snapshot/snapshot.h"

namespace berth::db {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Data directories change in scattered pages: chunks of about 256 KiB dedup well between
// versions, and packs of 8 MiB keep a 2 GB standard to a few dozen objects (a remote store's
// per-request cost would dominate with one object per chunk).
constexpr snapshot::ChunkerParams kDatabaseChunking{64 << 10, 256 << 10, 1 << 20};
constexpr std::size_t kPackBytes = 8 << 20;

json to_json(const Version& v) {
  json migrations = json::array();
  for (const auto& m : v.migrations) migrations.push_back(to_json(m));
  return {{"standard", v.standard}, {"version", v.version}, {"engine", v.engine}, {"manifest", v.manifest_id},
          {"source", v.source}, {"bytes", v.bytes}, {"files", v.files}, {"chunks", v.chunks},
          {"new_chunks", v.new_chunks}, {"uploaded_bytes", v.uploaded_bytes}, {"created_at", v.created_at},
          {"import_ms", v.import_ms}, {"migrations", migrations}};
}

std::optional<Version> version_from(const json& j) {
  try {
    Version v;
    v.standard = j.at("standard");
    v.version = j.at("version");
    v.engine = j.at("engine");
    v.manifest_id = j.at("manifest");
    v.source = j.value("source", "");
    v.bytes = j.value("bytes", 0ull);
    v.files = j.value("files", 0ull);
    v.chunks = j.value("chunks", 0ull);
    v.new_chunks = j.value("new_chunks", 0ull);
    v.uploaded_bytes = j.value("uploaded_bytes", 0ull);
    v.created_at = j.value("created_at", 0ll);
    v.import_ms = j.value("import_ms", 0ll);
    if (j.contains("migrations"))
      for (const auto& m : j.at("migrations")) {
        auto read = migration_from_json(m);
        if (!read.ok()) return std::nullopt;
        v.migrations.push_back(std::move(*read));
      }
    return v;
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

// Write a filesystem's dirty data to disk (syncfs on the filesystem holding `path`).
void sync_filesystem(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::syncfs(fd);
  ::close(fd);
}

}  // namespace

Status write_json(const fs::path& path, const json& j) { return write_file_atomically(path.string(), j.dump(2) + "\n"); }

std::optional<json> read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  json j = json::parse(in, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

Status catching(const std::function<Status()>& work) {
  try {
    return work();
  } catch (const std::exception& e) {
    return internal(fmt::format("unexpected error: {}", e.what()));
  }
}

Millis steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Manager::Manager(Executor& executor, const Clock& clock, std::string dir, blob::BlobStore& store,
                 std::unique_ptr<Engine> engine, CloneOptions clone_options)
    : executor_(executor), clock_(clock), dir_(std::move(dir)), store_(store), engine_(std::move(engine)),
      clone_options_(clone_options) {
  load();
}

Manager::~Manager() {
  *alive_ = false;
  for (auto& w : workers_) w.thread.join();
}

void Manager::run_worker(std::function<void()> fn) {
  std::erase_if(workers_, [](Worker& w) {
    if (!*w.finished) return false;
    w.thread.join();
    return true;
  });
  auto finished = std::make_shared<std::atomic<bool>>(false);
  workers_.push_back({std::thread([fn = std::move(fn), finished] {
                        try {
                          fn();
                        } catch (const std::exception& e) {  // the work itself catches; a last guard
                          fmt::print(stderr, "berth: database worker: {}\n", e.what());
                        }
                        *finished = true;
                      }),
                      finished});
}

std::shared_ptr<std::mutex> Manager::golden_lock(const std::string& golden) {
  auto& lock = golden_locks_[golden];
  if (!lock) lock = std::make_shared<std::mutex>();
  return lock;
}

void Manager::load() {
  std::error_code ec;
  for (const auto& s : fs::directory_iterator(fs::path(dir_) / "standards", ec))
    for (const auto& f : fs::directory_iterator(s.path(), ec))
      if (f.path().extension() == ".json")
        if (auto j = read_json(f.path()))
          if (auto v = version_from(*j)) versions_[v->standard][v->version] = *v;
  for (const auto& e : fs::directory_iterator(fs::path(dir_) / "copies", ec)) {
    for (const auto& d : fs::directory_iterator(e.path(), ec)) {
      auto j = read_json(d.path() / "copy.json");
      if (!j) {  // never finished: nothing half-made stays
        (void)remove_copy(d.path().string());
        continue;
      }
      Copy c;
      try {
        c.env = j->at("env");
        c.db = j->at("db");
        c.standard = j->at("standard");
        c.version = j->at("version");
        std::string m = j->at("method");
        c.method = m == "reflink"   ? CloneMethod::kReflink
                   : m == "overlay" ? CloneMethod::kOverlay
                   : m == "restore" ? CloneMethod::kRestore
                                    : CloneMethod::kCopy;
        c.clone_ms = j->value("clone_ms", 0ll);
        c.created_at = j->value("created_at", 0ll);
        if (j->contains("owner_uid")) c.owner = Identity{j->at("owner_uid"), j->at("owner_gid")};
        c.seed_served = j->value("seed_served", false);
        c.at_version = j->value("at_version", 0);
        if (j->contains("applied"))
          for (const auto& a : j->at("applied"))
            if (auto read = migration_from_json(a); read.ok()) c.applied.push_back(std::move(*read));
        if (j->contains("own"))
          for (const auto& a : j->at("own"))
            if (auto read = migration_from_json(a); read.ok()) c.own.push_back(std::move(*read));
      } catch (const json::exception&) {
        continue;
      }
      c.dir = d.path().string();
      c.datadir = c.dir + "/data";
      c.rundir = c.dir + "/run";
      if (fs::exists(seed_path(c), ec)) c.seed = seed_path(c);
      // A private server ran on it when the daemon was killed: what it made may be root's.
      if (fs::exists(d.path() / kPrivateServerMarker, ec)) c.owner.reset();  // (given to its owner again by ensure_copy)
      copies_[key(c.env, c.db)] = c;
      load_drift(c);
      if (fs::exists(d.path() / "reset", ec)) resets_.insert(key(c.env, c.db));
    }
  }
  // Unfinished goldens and imports.
  for (const auto& g : fs::directory_iterator(fs::path(dir_) / "golden", ec))
    if (g.path().string().ends_with(".partial") || g.path().string().ends_with(".import") ||
        g.path().string().ends_with(".import.src") || g.path().string().ends_with(".import.work") ||
        g.path().string().ends_with(".removing") || g.path().string().ends_with(".schema.work"))
      (void)remove_copy(g.path().string());  // (a throwaway clone may be an overlay, still mounted)
  load_rollouts();
}

Status Manager::save_version(const Version& v) const {
  return write_json(fs::path(dir_) / "standards" / v.standard / fmt::format("{}.json", v.version), to_json(v));
}

Status Manager::save_copy(const Copy& c) const {
  json j = {{"env", c.env}, {"db", c.db}, {"standard", c.standard}, {"version", c.version},
            {"method", std::string(to_string(c.method))}, {"clone_ms", c.clone_ms}, {"created_at", c.created_at}};
  if (c.owner) j["owner_uid"] = c.owner->uid, j["owner_gid"] = c.owner->gid;
  if (c.seed_served) j["seed_served"] = true;
  if (c.at_version) {
    j["at_version"] = c.at_version;
    json applied = json::array();
    for (const auto& m : c.applied) applied.push_back(to_json(m));
    j["applied"] = applied;
  }
  if (!c.own.empty()) {
    json own = json::array();
    for (const auto& m : c.own) own.push_back(to_json(m));
    j["own"] = own;
  }
  return write_json(fs::path(c.dir) / "copy.json", j);
}

Status Manager::on_private_server(const Copy& c, const std::function<Status()>& work) const {
  const fs::path marker = fs::path(c.dir) / kPrivateServerMarker;
  if (c.owner) BERTH_TRY(write_file_atomically(marker.string(), "a private server may run on data/\n"));
  Status st = work();
  if (!c.owner) return st;
  Status given = give_to(c, *c.owner);
  if (!given.ok()) return st.ok() ? given : st;
  std::error_code ec;
  fs::remove(marker, ec);
  return st;
}

Status Manager::give_to(const Copy& c, Identity owner) const {
  // The way in: the directories above are the daemon's, entered (not listed) by the instances'
  // group; copy.json beside data/ stays the daemon's alone.
  for (const fs::path& p : {fs::path(dir_), fs::path(dir_) / "copies", fs::path(c.dir).parent_path(), fs::path(c.dir)})
    BERTH_TRY(open_to_group(p.string(), owner.gid, 0710));
  BERTH_TRY(chown_tree(c.datadir, owner));
  return chown_tree(c.rundir, owner);
}

bool Manager::has_copies(const std::string& env) const {
  auto it = copies_.lower_bound(env + "/");
  return it != copies_.end() && it->first.rfind(env + "/", 0) == 0;
}

std::string Manager::golden_path(const std::string& standard, int version) const {
  return fmt::format("{}/golden/{}@{}", dir_, standard, version);
}

std::shared_ptr<Job> Manager::new_job(const std::string& kind, const std::string& target) {
  auto j = std::make_shared<Job>();
  j->id = fmt::format("{}-{}", kind, next_job_++);
  j->kind = kind;
  j->target = target;
  j->started_at = clock_.wall_ms();
  jobs_[j->id] = j;
  return j;
}

std::shared_ptr<const Job> Manager::job(const std::string& id) const {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : it->second;
}

std::vector<std::string> Manager::standards() const {
  std::vector<std::string> out;
  for (const auto& [s, vs] : versions_)
    if (!vs.empty()) out.push_back(s);
  return out;
}

std::vector<Version> Manager::versions(const std::string& standard) const {
  std::vector<Version> out;
  if (auto it = versions_.find(standard); it != versions_.end())
    for (const auto& [n, v] : it->second) out.push_back(v);
  return out;
}

Result<std::shared_ptr<const Job>> Manager::import(const std::string& standard, const ImportSource& source) {
  if (standard.empty() || standard.size() > 63 ||
      standard.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") != std::string::npos)
    return invalid(fmt::format("standard name '{}' must be lowercase letters, digits and '-' (at most 63)", standard));
  if (importing_.count(standard))
    return conflict(fmt::format("version {} of standard '{}' is being made; wait for it", importing_[standard], standard));
  int version = 1;
  if (auto it = versions_.find(standard); it != versions_.end() && !it->second.empty())
    version = it->second.rbegin()->first + 1;
  std::string what;
  switch (source.kind) {
    case ImportSource::Kind::kServer: what = "server " + source.server.address; break;
    case ImportSource::Kind::kDatadir: what = "datadir " + source.path; break;
    case ImportSource::Kind::kDump: what = "dump " + source.path; break;
  }
  if (source.kind != ImportSource::Kind::kServer && !fs::exists(source.path))
    return not_found(fmt::format("{} does not exist", source.path));
  auto job = start_version("import", standard, version);
  job->set_phase("copying from " + what);
  run_worker([this, alive = alive_, job, standard, version, source, what, bases = manifests(standard)] {
    const Millis t0 = steady_ms();
    Version v;
    v.standard = standard;
    v.version = version;
    v.engine = engine_->name();
    v.source = what;
    const std::string staging = staging_path(standard, version);
    const std::string log = version_log("import", standard, version);
    Status st = catching([&]() -> Status {
      switch (source.kind) {
        case ImportSource::Kind::kServer: BERTH_TRY(engine_->copy_running(source.server, staging, log)); break;
        case ImportSource::Kind::kDump: BERTH_TRY(engine_->load_dump(source.path, staging, log)); break;
        case ImportSource::Kind::kDatadir: BERTH_TRY(engine_->copy_datadir(source.path, staging, log)); break;
      }
      job->set_phase("adding berth's account, clean shutdown");
      BERTH_TRY(engine_->seal(staging, Account{}, log));
      return publish(staging, v, bases, *job);
    });
    v.import_ms = steady_ms() - t0;
    finish_version(alive, job, st, std::move(v));
  });
  return std::shared_ptr<const Job>(job);
}

Result<std::shared_ptr<const Job>> Manager::release(const std::string& standard, const ReleaseSource& source) {
  auto vs = versions_.find(standard);
  if (vs == versions_.end() || vs->second.empty())
    return not_found(fmt::format("standard '{}' has no version to release migrations onto; import one first: berth db import {} "
                                 "--from-server HOST:PORT (or --from-datadir DIR, --from-dump FILE)",
                                 standard, standard));
  if (importing_.count(standard))
    return conflict(fmt::format("version {} of standard '{}' is being made; wait for it", importing_[standard], standard));
  if (source.path.empty()) return invalid("a release needs the migrations' directory or repository");
  const Version base = vs->second.rbegin()->second;
  const int version = base.version + 1;
  const std::string what = source.ref.empty() ? source.path
                                              : fmt::format("{}@{}{}", source.path, source.ref,
                                                            source.subdir.empty() ? "" : " (" + source.subdir + ")");
  auto job = start_version("release", standard, version);
  job->set_phase("reading the migrations in " + what);
  const std::string golden = golden_path(standard, base.version);
  run_worker([this, alive = alive_, job, standard, version, source, what, base, golden, lock = golden_lock(golden),
              released = migrations_of(standard, base.version), bases = manifests(standard)] {
    const Millis t0 = steady_ms();
    Version v;
    v.standard = standard;
    v.version = version;
    v.engine = engine_->name();
    v.source = "migrations " + what;
    const std::string staging = staging_path(standard, version);
    const std::string log = version_log("release", standard, version);
    const std::string checkout = staging + ".src";
    const std::string work = staging + ".work";
    Status st = catching([&]() -> Status {
      std::string dir = source.path;
      if (!source.ref.empty()) {
        std::error_code e;
        fs::remove_all(checkout, e);
        BERTH_TRY(run_logged(fmt::format("git clone --quiet --no-checkout {} {}", shell_quote(source.path), shell_quote(checkout)),
                             log, "git clone " + source.path));
        // A branch of the repository is origin/<ref> in the clone; a tag or a commit is itself.
        const std::string branch = "origin/" + source.ref;
        const bool is_branch =
            run_logged(fmt::format("git -C {} rev-parse --verify --quiet {}", shell_quote(checkout), shell_quote(branch + "^{commit}")),
                       log, "looking for branch " + source.ref)
                .ok();
        BERTH_TRY(run_logged(fmt::format("git -C {} checkout --quiet --detach {}", shell_quote(checkout),
                                         shell_quote(is_branch ? branch : source.ref)),
                             log, fmt::format("checking out {} of {}", source.ref, source.path)));
        dir = source.subdir.empty() ? checkout : checkout + "/" + source.subdir;
        // (A symbolic link in the repository must not lead the daemon's reading out of it.)
        std::error_code ec;
        const std::string real = fs::canonical(dir, ec).string(), top = fs::canonical(checkout, ec).string();
        if (real != top && real.rfind(top + "/", 0) != 0)
          return invalid(fmt::format("{} of {} is not a directory inside the repository", source.subdir, source.path));
      }
      auto available = read_migrations(dir);
      if (!available.ok()) return available.error();
      auto pending = plan_release(standard, released, *available, source.options);
      if (!pending.ok()) {
        Error e = pending.error();
        for (const auto& d : e.details) e.message += "\n  " + d;
        return e;
      }
      for (auto& m : *pending) m.released_in = version;
      // The rehearsal: the migrations on a throwaway copy of the latest version, which becomes
      // the next version only if every one of them succeeds.
      job->set_phase(fmt::format("rehearsing {} migration(s) on a copy of {}@{}", pending->size(), standard, base.version));
      {
        std::lock_guard<std::mutex> held(*lock);
        if (fs::exists(golden)) {
          // A copy of its own (reflink where the filesystem has it, else every byte): it becomes
          // the next version's golden, so never an overlay on this one.
          CloneOptions own = clone_options_;
          own.allow_overlay = false;
          auto m = clone_tree(golden, work, own);
          if (!m.ok()) return m.error().wrap(fmt::format("copying {}@{}", standard, base.version));
          std::error_code e;
          fs::rename(work + "/data", staging, e);
          if (e) return unavailable(fmt::format("moving {}/data to {}: {}", work, staging, e.message()));
          fs::remove_all(work, e);
        } else {
          snapshot::RestoreOptions o;
          auto r = snapshot::restore_snapshot(base.manifest_id, store_, staging, o);
          if (!r.ok()) return r.error().wrap(fmt::format("restoring {}@{} from {}", standard, base.version, store_.describe()));
        }
      }
      BERTH_TRY(engine_->apply(staging, *pending, Account{}, log));
      job->set_phase("adding berth's account, clean shutdown");
      BERTH_TRY(engine_->seal(staging, Account{}, log));
      // Each file's text is kept, named by its checksum: rollouts apply it to the copies.
      for (const auto& m : *pending) BERTH_TRY(write_file_atomically(saved_migration(standard, m), m.sql, 0600));
      for (auto& m : *pending) m.sql.clear(), m.path.clear();
      v.migrations = std::move(*pending);
      return publish(staging, v, bases, *job);
    });
    std::error_code e;
    fs::remove_all(checkout, e);
    (void)remove_copy(work);
    v.import_ms = steady_ms() - t0;
    finish_version(alive, job, st, std::move(v));
  });
  return std::shared_ptr<const Job>(job);
}

std::vector<Migration> Manager::migrations_of(const std::string& standard, int version) const {
  std::vector<Migration> out;
  if (auto it = versions_.find(standard); it != versions_.end())
    for (const auto& [n, v] : it->second)
      if (n <= version) out.insert(out.end(), v.migrations.begin(), v.migrations.end());
  return out;
}

std::shared_ptr<Job> Manager::start_version(const std::string& kind, const std::string& standard, int version) {
  importing_[standard] = version;
  auto job = new_job(kind, fmt::format("{}@{}", standard, version));
  std::error_code ec;
  fs::create_directories(fs::path(version_log(kind, standard, version)).parent_path(), ec);
  fs::remove_all(staging_path(standard, version), ec);
  fs::create_directories(fs::path(staging_path(standard, version)).parent_path(), ec);
  return job;
}

std::vector<std::string> Manager::manifests(const std::string& standard) const {
  std::vector<std::string> out;
  if (auto it = versions_.find(standard); it != versions_.end())
    for (const auto& [n, v] : it->second) out.push_back(v.manifest_id);
  return out;
}

std::string Manager::staging_path(const std::string& standard, int version) const {
  return golden_path(standard, version) + ".import";
}

std::string Manager::version_log(const std::string& kind, const std::string& standard, int version) const {
  return fmt::format("{}/logs/{}-{}@{}.log", dir_, kind, standard, version);
}

Status Manager::publish(const std::string& staging, Version& v, const std::vector<std::string>& bases, Job& job) {
  job.set_phase("uploading to " + store_.describe());
  snapshot::CreateOptions o;
  o.params = kDatabaseChunking;
  o.pack_bytes = kPackBytes;
  o.base_manifests = bases;  // earlier versions: their chunks are referenced, not stored again
  o.progress = [&](const snapshot::Progress& p) {
    job.done_bytes = p.done_bytes;
    job.total_bytes = p.total_bytes;
  };
  auto made = snapshot::create_snapshot(staging, store_, o);
  if (!made.ok()) return made.error();
  v.manifest_id = made->manifest_id;
  v.bytes = made->bytes;
  v.files = made->files;
  v.chunks = made->chunks;
  v.new_chunks = made->new_chunks;
  v.uploaded_bytes = made->uploaded_bytes;
  // The staged directory is this host's golden of the new version. Flushed now, so the first
  // reflink copy of it does not wait for its data to reach the disk.
  std::error_code e;
  fs::rename(staging, golden_path(v.standard, v.version), e);
  if (e) return unavailable(fmt::format("moving {} into place: {}", staging, e.message()));
  job.set_phase("flushing the golden to disk");
  job.total_bytes = 0;
  sync_filesystem(golden_path(v.standard, v.version));
  return {};
}

void Manager::finish_version(std::shared_ptr<std::atomic<bool>> alive, std::shared_ptr<Job> job, Status st, Version v) {
  if (!st.ok()) {
    std::error_code e;
    fs::remove_all(staging_path(v.standard, v.version), e);
  }
  executor_.post([this, alive, job, st, v]() mutable {
    if (!*alive) return;
    importing_.erase(v.standard);
    job->finished_at = clock_.wall_ms();
    if (st.ok()) {
      v.created_at = clock_.wall_ms();
      Status saved = save_version(v);
      if (saved.ok()) {
        versions_[v.standard][v.version] = v;
        job->version = v;
        job->set_phase("done");
        if (job->kind == "release" && on_released_) on_released_(v.standard, v.version);
      } else {
        job->error = saved.error().message;
      }
    } else {
      job->error = st.error().message;
      job->set_phase("failed");
    }
    job->done = true;
    if (on_change_) on_change_();
  });
}

Status Manager::remove(const std::string& standard, int version) {
  auto it = versions_.find(standard);
  if (it == versions_.end() || !it->second.count(version))
    return not_found(fmt::format("standard '{}' has no version {}", standard, version));
  for (const auto& [k, c] : copies_)
    if (c.standard == standard && c.version == version)
      return conflict(fmt::format("{}@{} is in use by environment {} (database {}); down it or reset its copy first",
                                  standard, version, c.env, c.db));
  const std::string want = fmt::format("{}@{}", standard, version);
  for (const auto& [k, w] : copy_job_for_)
    if (w == want && copy_jobs_.count(k) && !copy_jobs_.at(k)->done)
      return conflict(fmt::format("a copy of {} is being made for {}; wait for it", want, k));
  const std::string golden = golden_path(standard, version);
  auto lock = golden_lock(golden);
  std::unique_lock<std::mutex> held(*lock, std::try_to_lock);
  if (!held) return conflict(fmt::format("the golden of {} is being restored or cloned; try again when it is done", want));
  std::error_code ec;
  fs::remove(fs::path(dir_) / "standards" / standard / fmt::format("{}.json", version), ec);
  if (ec) return unavailable(fmt::format("cannot remove version {} of {}: {}", version, standard, ec.message()));
  it->second.erase(version);
  // Deleting a golden of gigabytes takes long: it is renamed away now (a restart finishes the
  // job) and deleted on a worker.
  const std::string doomed = fmt::format("{}.removing.{}", golden, clock_.wall_ms());
  fs::rename(golden, doomed, ec);
  if (!ec)
    run_worker([doomed] {
      std::error_code e;
      fs::remove_all(doomed, e);
    });
  return {};
}

void Manager::server_ready(const std::string& env, const std::string& db) {
  if (auto c = copies_.find(key(env, db)); c != copies_.end() && !c->second.seed.empty() && !c->second.seed_served) {
    c->second.seed_served = true;
    run_worker([this, c = c->second] {
      if (Status st = catching([&] { return save_copy(c); }); !st.ok())
        fmt::print(stderr, "berth: database copy {}/{}: {}\n", c.env, c.db, st.error().message);
    });
  }
  auto it = goldens_wanted_.find(key(env, db));
  if (it == goldens_wanted_.end()) return;
  const Version ver = it->second;
  goldens_wanted_.erase(it);
  const std::string golden = golden_path(ver.standard, ver.version);
  const std::string cache = cache_path(ver.standard, ver.version);
  run_worker([this, ver, golden, cache, lock = golden_lock(golden)] {
    // Background work: one thread at the lowest priority, so that the environment that just
    // became ready (its first queries) keeps the machine.
    ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 19);
    std::lock_guard<std::mutex> held(*lock);
    // A failure here costs only speed: the next copy restores from the store again.
    (void)catching([&]() -> Status {
      if (fs::exists(golden)) return {};
      blob::CacheStore cached(store_, cache);
      snapshot::RestoreOptions o;
      o.parallel = 1;
      if (snapshot::restore_snapshot(ver.manifest_id, cached, golden, o).ok()) cached.drop();
      return {};
    });
  });
}

std::string Manager::cache_path(const std::string& standard, int version) const {
  return fmt::format("{}/cache/{}@{}", dir_, standard, version);
}

const Copy* Manager::find_copy(const std::string& env, const std::string& db) const {
  auto it = copies_.find(key(env, db));
  return it == copies_.end() ? nullptr : &it->second;
}

bool Manager::making_copy(const std::string& env, const std::string& db) const {
  auto j = copy_jobs_.find(key(env, db));
  auto a = seed_jobs_.find(key(env, db));
  return (j != copy_jobs_.end() && !j->second->done) || (a != seed_jobs_.end() && !a->second->done);
}

Status Manager::reset(const std::string& env, const std::string& db) {
  const std::string k = key(env, db);
  if (making_copy(env, db)) return conflict(fmt::format("the copy of {} for {} is being made; wait for it", db, env));
  if (const RolloutRow* row = row_of(env, db))
    return conflict(fmt::format("a rollout to version {} is migrating the copy of {} for {}; wait for it", row->to, db, env));
  // (A private server may run on it: never deleted from under one.)
  if (drift_reading_.count(k)) return conflict(fmt::format("a drift check reads the copy of {} for {}; wait for it", db, env));
  if (migrating_.count(k)) return conflict(fmt::format("{}'s own migrations are being applied to its copy of {}; wait for them", env, db));
  copy_jobs_.erase(k);
  copy_job_for_.erase(k);
  goldens_wanted_.erase(k);  // only speed is owed: the next cold copy restores from the store
  return discard(k);
}

Status Manager::request_reset(const std::string& env, const std::string& db) {
  const std::string k = key(env, db);
  auto it = copies_.find(k);
  if (it == copies_.end() || resets_.count(k)) return {};
  BERTH_TRY(write_file_atomically((fs::path(it->second.dir) / "reset").string(), "requested\n"));
  resets_.insert(k);
  return {};
}

bool Manager::reset_requested(const std::string& env, const std::string& db) const { return resets_.count(key(env, db)) > 0; }

Status Manager::discard(const std::string& k) {
  auto it = copies_.find(k);
  if (it == copies_.end()) return {};
  const std::string dir = it->second.dir;
  copies_.erase(it);
  resets_.erase(k);
  drift_.erase(k);
  seed_jobs_.erase(k);
  std::error_code ec;
  fs::remove(fs::path(dir) / "copy.json", ec);
  if (ec) return unavailable(fmt::format("cannot remove {}/copy.json: {}", dir, ec.message()));
  return remove_copy(dir);
}

CopyStatus Manager::ensure_copy(const std::string& env, const std::string& db, const model::DatabaseSpec& spec,
                                std::optional<Identity> owner) {
  const std::string k = key(env, db);
  auto vs = versions_.find(spec.standard);
  const bool any = vs != versions_.end() && !vs->second.empty();
  // An existing copy serves while it is of what is asked (a copy of "latest" stays on the version
  // it was made from: its data is the environment's).
  if (auto it = copies_.find(k); it != copies_.end()) {
    const Copy& c = it->second;
    if (c.standard == spec.standard && (spec.version == 0 || spec.version == c.at())) {
      Status mounted = ensure_mounted(golden_path(c.standard, c.version), c.dir, c.method);
      if (!mounted.ok()) return {CopyStatus::State::kFailed, mounted.error().message, nullptr};
      if (!owner || c.owner == owner) return {CopyStatus::State::kReady, "", &c};
      // Made for another user (an environment's id changed, or a copy from before ids): give it
      // to this one first — metadata only, also on overlayfs (mounted with metacopy).
      const std::string msg = fmt::format("giving the copy to uid {}", owner->uid);
      if (chowning_.insert(k).second) {
        auto alive = alive_;
        run_worker([this, alive, c, k, who = *owner] {
          Copy given = c;
          given.owner = who;
          Status st = catching([&] { return give_to(given, who); });
          if (st.ok()) st = catching([&] { return save_copy(given); });
          if (st.ok()) {
            std::error_code ec;
            fs::remove(fs::path(given.dir) / kPrivateServerMarker, ec);
          }
          executor_.post([this, alive, st, given, k] {
            if (!*alive) return;
            chowning_.erase(k);
            if (st.ok()) copies_[k] = given;
            else fmt::print(stderr, "berth: database copy {}: {}\n", k, st.error().message);
            if (on_change_) on_change_();
          });
        });
      }
      return {CopyStatus::State::kPreparing, msg, nullptr};
    }
    // Another standard or version asked for: this copy goes (its server is being replaced), once
    // its archive is not being written any more.
    if (auto j = seed_jobs_.find(k); j != seed_jobs_.end() && !j->second->done)
      return {CopyStatus::State::kPreparing, "waiting for the old copy's archive to be written", nullptr};
    (void)discard(k);
  }
  if (!any)
    return {CopyStatus::State::kFailed,
            fmt::format("standard '{}' has no versions yet; import one: berth db import {} --from-server HOST:PORT "
                        "(or --from-datadir DIR, --from-dump FILE)",
                        spec.standard, spec.standard),
            nullptr};
  const int version = spec.version ? spec.version : vs->second.rbegin()->first;
  auto v = vs->second.find(version);
  if (v == vs->second.end())
    return {CopyStatus::State::kFailed,
            fmt::format("standard '{}' has no version {} (latest is {})", spec.standard, version, vs->second.rbegin()->first),
            nullptr};
  const std::string want = fmt::format("{}@{}", spec.standard, version);
  if (auto j = copy_jobs_.find(k); j != copy_jobs_.end() && copy_job_for_[k] == want) {
    if (!j->second->done) {
      std::string msg = j->second->get_phase();
      if (j->second->total_bytes)
        msg += fmt::format(" {} of {}", format_bytes(j->second->done_bytes), format_bytes(j->second->total_bytes));
      return {CopyStatus::State::kPreparing, msg, nullptr};
    }
    return {CopyStatus::State::kFailed,
            fmt::format("{} (to try again: berth db clone {} --env {})", j->second->error, db, env), nullptr};
  }
  // Make it.
  auto job = new_job("copy", k);
  copy_jobs_[k] = job;
  copy_job_for_[k] = want;
  const Version ver = v->second;
  const std::string golden = golden_path(spec.standard, version);
  const std::string dest = fmt::format("{}/copies/{}/{}", dir_, env, db);
  job->set_phase(fs::exists(golden) ? "cloning " + want : "restoring " + want + " from " + store_.describe());
  auto alive = alive_;
  run_worker([this, alive, job, ver, golden, dest, env, db, k, want, owner, lock = golden_lock(golden)] {
    Copy c;
    c.owner = owner;
    c.env = env;
    c.db = db;
    c.standard = ver.standard;
    c.version = ver.version;
    c.dir = dest;
    c.datadir = dest + "/data";
    c.rundir = dest + "/run";
    auto work = [&]() -> Status {
      (void)remove_copy(dest);  // leftovers of an interrupted attempt
      std::error_code e;
      fs::create_directories(fs::path(dest).parent_path(), e);
      {
        // A cold host: the copy is restored from the store directly, keeping the fetched objects
        // in a local cache; the golden is restored from that cache once the copy's server is
        // ready (server_ready()). Restoring both at once doubled the data waiting to be written
        // to disk while the server started, and a reflink copy of a fresh golden must wait for
        // all of it to be written.
        std::lock_guard<std::mutex> held(*lock);
        if (!fs::exists(golden)) {
          const Millis t0 = steady_ms();
          fs::create_directories(dest, e);
          snapshot::RestoreOptions o;
          o.progress = [&](const snapshot::Progress& p) {
            job->done_bytes = p.done_bytes;
            job->total_bytes = p.total_bytes;
          };
          blob::CacheStore cached(store_, cache_path(ver.standard, ver.version));
          auto r = snapshot::restore_snapshot(ver.manifest_id, cached, c.datadir, o);
          if (!r.ok()) {
            cached.drop();  // it may hold the very object that was corrupt
            return r.error().wrap("restoring " + want + " from " + store_.describe());
          }
          c.clone_ms = steady_ms() - t0;
          c.method = CloneMethod::kRestore;
          fs::create_directories(c.rundir, e);
          if (e) return unavailable(fmt::format("cannot create {}: {}", c.rundir, e.message()));
          if (owner) BERTH_TRY(give_to(c, *owner));
          c.created_at = clock_.wall_ms();
          return save_copy(c);
        }
      }
      job->set_phase("cloning " + want);
      job->total_bytes = 0;
      const Millis t1 = steady_ms();
      auto m = clone_tree(golden, dest, clone_options_);
      if (!m.ok()) return m.error().wrap("copying " + want);
      c.method = *m;
      c.clone_ms = steady_ms() - t1;
      fs::create_directories(c.rundir, e);
      if (e) return unavailable(fmt::format("cannot create {}: {}", c.rundir, e.message()));
      if (owner) BERTH_TRY(give_to(c, *owner));
      c.created_at = clock_.wall_ms();
      return save_copy(c);  // last: a copy without copy.json is incomplete
    };
    Status st = catching(work);
    if (!st.ok()) (void)remove_copy(dest);
    executor_.post([this, alive, job, st, c, k, ver] {
      if (!*alive) return;
      job->finished_at = clock_.wall_ms();
      if (st.ok()) {
        if (c.method == CloneMethod::kRestore) goldens_wanted_[k] = ver;
        copies_[k] = c;
        copy_jobs_.erase(k);
        copy_job_for_.erase(k);
        job->set_phase("done");
      } else {
        job->error = st.error().message;
        job->set_phase("failed");
      }
      job->done = true;
      if (on_change_) on_change_();
    });
  });
  return {CopyStatus::State::kPreparing, job->get_phase(), nullptr};
}

CopyStatus Manager::ensure_seed(const std::string& env, const std::string& db, Identity owner) {
  const std::string k = key(env, db);
  auto it = copies_.find(k);
  if (it == copies_.end()) return {CopyStatus::State::kFailed, "no copy to archive", nullptr};
  if (!it->second.seed.empty()) return {CopyStatus::State::kReady, "", &it->second};
  if (auto j = seed_jobs_.find(k); j != seed_jobs_.end()) {
    if (!j->second->done) return {CopyStatus::State::kPreparing, j->second->get_phase(), nullptr};
    return {CopyStatus::State::kFailed,
            fmt::format("{} (to try again: berth db clone {} --env {})", j->second->error, db, env), nullptr};
  }
  auto job = new_job("seed", k);
  seed_jobs_[k] = job;
  job->set_phase("archiving the copy for its container");
  const Copy c = it->second;
  const std::string tar = seed_path(c);
  const std::string log = fmt::format("{}/logs/seed-{}-{}.log", dir_, env, db);
  auto alive = alive_;
  run_worker([this, alive, job, c, tar, log, k, owner] {
    Status st = catching([&] {
      fs::create_directories(fs::path(log).parent_path());
      return archive_copy(c.datadir, tar, owner, log);
    });
    executor_.post([this, alive, job, st, c, tar, k] {
      if (!*alive) return;
      job->finished_at = clock_.wall_ms();
      job->done = true;
      auto now_copy = copies_.find(k);
      if (!st.ok()) {
        job->error = st.error().message;
        job->set_phase("failed");
      } else {
        if (now_copy != copies_.end() && now_copy->second.created_at == c.created_at) now_copy->second.seed = tar;
        seed_jobs_.erase(k);
        job->set_phase("done");
      }
      if (on_change_) on_change_();
    });
  });
  return {CopyStatus::State::kPreparing, job->get_phase(), nullptr};
}

}  // namespace berth::db
