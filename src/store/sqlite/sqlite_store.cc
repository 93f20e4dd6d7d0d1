#include "store/sqlite/sqlite_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <unordered_map>

#include <fmt/format.h>

namespace berth::store {
namespace {

// Schema migrations, applied in order, each in one transaction with the user_version it leads
// to. A new database runs them all, so every database went through the same steps.
struct Migration {
  int version;
  const char* what;
  const char* sql;
};

constexpr Migration kMigrations[] = {
    {1, "the first schema", R"sql(
CREATE TABLE IF NOT EXISTS catalog (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  text TEXT NOT NULL, filename TEXT NOT NULL, applied_at INTEGER NOT NULL, base_dir TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS environments_up (
  env TEXT PRIMARY KEY, since INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
  env TEXT NOT NULL, app TEXT NOT NULL, ordinal INTEGER NOT NULL,
  ip INTEGER NOT NULL UNIQUE, released_at INTEGER NOT NULL,
  PRIMARY KEY (env, app, ordinal));
CREATE TABLE IF NOT EXISTS instances (
  env TEXT NOT NULL, app TEXT NOT NULL, ordinal INTEGER NOT NULL,
  pid INTEGER NOT NULL, pgid INTEGER NOT NULL, start_ticks INTEGER NOT NULL,
  fingerprint TEXT NOT NULL, restarts INTEGER NOT NULL, started_at INTEGER NOT NULL,
  PRIMARY KEY (env, app, ordinal));
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, env TEXT NOT NULL,
  type TEXT NOT NULL, app TEXT NOT NULL, ordinal INTEGER NOT NULL, ip TEXT NOT NULL,
  message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_env ON events (env, id);
)sql"},
    // Instances are identified by their runtime and an opaque reference instead of a pid; the
    // processes recorded so far become references of the process runtime.
    {2, "instances with a runtime and an opaque reference", R"sql(
ALTER TABLE instances RENAME TO instances_v1;
CREATE TABLE instances (
  env TEXT NOT NULL, app TEXT NOT NULL, ordinal INTEGER NOT NULL,
  runtime TEXT NOT NULL, ref TEXT NOT NULL,
  fingerprint TEXT NOT NULL, restarts INTEGER NOT NULL, started_at INTEGER NOT NULL,
  PRIMARY KEY (env, app, ordinal));
INSERT INTO instances (env, app, ordinal, runtime, ref, fingerprint, restarts, started_at)
  SELECT env, app, ordinal, 'process', pid || ':' || pgid || ':' || start_ticks, fingerprint, restarts, started_at
  FROM instances_v1;
DROP TABLE instances_v1;
)sql"},
    // A team shares the daemon: environments as their own documents, API tokens, an audit log,
    // and the fleet document's version.
    {3, "environment documents, tokens and the audit log", R"sql(
ALTER TABLE catalog ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE catalog ADD COLUMN applied_by TEXT NOT NULL DEFAULT '';
CREATE TABLE env_documents (
  name TEXT PRIMARY KEY, text TEXT NOT NULL, owner TEXT NOT NULL, version INTEGER NOT NULL,
  updated_at INTEGER NOT NULL, updated_by TEXT NOT NULL);
CREATE TABLE tokens (
  id TEXT PRIMARY KEY, user TEXT NOT NULL, role TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL, created_by TEXT NOT NULL, revoked_at INTEGER NOT NULL DEFAULT 0);
CREATE TABLE audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, user TEXT NOT NULL, action TEXT NOT NULL,
  target TEXT NOT NULL, env TEXT NOT NULL, before_version INTEGER NOT NULL, after_version INTEGER NOT NULL,
  detail TEXT NOT NULL);
CREATE INDEX audit_env ON audit (env, id);
CREATE INDEX audit_user ON audit (user, id);
)sql"},
    // Instances run unprivileged: each environment as a user id of its own.
    {4, "a user id per environment", R"sql(
CREATE TABLE env_uids (env TEXT PRIMARY KEY, uid INTEGER NOT NULL UNIQUE);
)sql"},
    // Readiness survives a daemon restart: an adopted ready instance keeps answering in DNS.
    {5, "instances remember when they became ready", R"sql(
ALTER TABLE instances ADD COLUMN ready_at INTEGER NOT NULL DEFAULT 0;
)sql"},
};
constexpr int kSchemaVersion = 5;

}  // namespace

// Statements prepared once and reused, keyed by their SQL text's address (string literals).
struct SqliteStore::StmtCache {
  std::unordered_map<const char*, sqlite3_stmt*> stmts;
  ~StmtCache() {
    for (auto& [sql, s] : stmts) sqlite3_finalize(s);
  }
};

namespace {

// A prepared statement: finalized on scope exit, or with a cache, reset and kept for the next
// use of the same SQL.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &s_, nullptr) != SQLITE_OK) s_ = nullptr;
  }
  Stmt(sqlite3* db, const char* sql, SqliteStore::StmtCache& cache) : db_(db), sql_(sql), cache_(&cache) {
    if (auto it = cache.stmts.find(sql); it != cache.stmts.end()) {
      s_ = it->second;
      cache.stmts.erase(it);  // ours while in use (a nested use of the same SQL prepares its own)
    } else if (sqlite3_prepare_v2(db, sql, -1, &s_, nullptr) != SQLITE_OK) {
      s_ = nullptr;
    }
  }
  ~Stmt() {
    if (!cache_ || !s_) {
      sqlite3_finalize(s_);
      return;
    }
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
    if (!cache_->stmts.emplace(sql_, s_).second) sqlite3_finalize(s_);
  }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  bool ok() const { return s_ != nullptr; }
  Stmt& bind(int i, const std::string& v) { sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT); return *this; }
  Stmt& bind(int i, std::int64_t v) { sqlite3_bind_int64(s_, i, v); return *this; }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int step() { return sqlite3_step(s_); }
  std::int64_t i64(int col) { return sqlite3_column_int64(s_, col); }
  std::string text(int col) {
    auto p = reinterpret_cast<const char*>(sqlite3_column_text(s_, col));
    return p ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, col))) : std::string();
  }
  Error error(const char* what) const {
    // A constraint (e.g. an address already leased to another key) is a conflict, not an outage.
    auto code = (sqlite3_errcode(db_) & 0xFF) == SQLITE_CONSTRAINT ? ErrorCode::kConflict : ErrorCode::kUnavailable;
    return {code, fmt::format("state store: {}: {}", what, sqlite3_errmsg(db_))};
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
  const char* sql_ = nullptr;
  SqliteStore::StmtCache* cache_ = nullptr;
};

Status run(Stmt& s, const char* what) {
  if (!s.ok()) return s.error(what);
  int rc = s.step();
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) return s.error(what);
  return {};
}

}  // namespace

Result<std::unique_ptr<SqliteStore>> SqliteStore::open(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return unavailable(fmt::format("cannot open state database {}: {}", path, msg));
  }
  std::unique_ptr<SqliteStore> store(new SqliteStore(db));
  sqlite3_busy_timeout(db, 5000);
  BERTH_TRY(store->exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"));
  BERTH_TRY(store->migrate(path));
  return store;
}

Status SqliteStore::migrate(const std::string& path) {
  int version = 0;
  {
    Stmt s(db_, "PRAGMA user_version");  // finalized before any migration runs
    if (!s.ok() || s.step() != SQLITE_ROW) return s.error("read the schema version");
    version = static_cast<int>(s.i64(0));
  }
  if (version > kSchemaVersion)
    return unavailable(fmt::format("state database {} has schema version {}, but this berth knows versions up to {}: "
                                   "it was written by a newer berth. Run that berth on this data directory (or "
                                   "start this one on another); nothing was changed",
                                   path, version, kSchemaVersion));
  for (const auto& m : kMigrations) {
    if (m.version <= version) continue;
    BERTH_TRY(exec("BEGIN IMMEDIATE"));
    Status st = exec(m.sql);
    if (st.ok()) st = exec(fmt::format("PRAGMA user_version = {}", m.version));
    if (st.ok()) st = exec("COMMIT");
    if (!st.ok()) {
      (void)exec("ROLLBACK");
      return st.error().wrap(fmt::format("migrating state database {} to schema version {} ({})", path, m.version, m.what));
    }
  }
  return {};
}

int SqliteStore::schema_version() { return kSchemaVersion; }

SqliteStore::SqliteStore(sqlite3* db) : db_(db), cache_(std::make_unique<StmtCache>()) {}

SqliteStore::~SqliteStore() {
  cache_.reset();  // statements are finalized before the connection closes
  sqlite3_close(db_);
}

Status SqliteStore::exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return unavailable("state store: " + msg);
  }
  return {};
}

Result<std::optional<StoredCatalog>> SqliteStore::load_catalog() {
  Stmt s(db_, "SELECT text, filename, applied_at, base_dir, version, applied_by FROM catalog WHERE id = 1", *cache_);
  if (!s.ok()) return s.error("load catalog");
  int rc = s.step();
  if (rc == SQLITE_DONE) return std::optional<StoredCatalog>();
  if (rc != SQLITE_ROW) return s.error("load catalog");
  return std::optional<StoredCatalog>(StoredCatalog{s.text(0), s.text(1), s.i64(2), s.text(3), s.i64(4), s.text(5)});
}

Status SqliteStore::save_catalog(const StoredCatalog& c) {
  Stmt s(db_, "INSERT OR REPLACE INTO catalog (id, text, filename, applied_at, base_dir, version, applied_by) "
              "VALUES (1, ?, ?, ?, ?, ?, ?)", *cache_);
  s.bind(1, c.text).bind(2, c.filename).bind(3, c.applied_at).bind(4, c.base_dir).bind(5, c.version).bind(6, c.applied_by);
  return run(s, "save catalog");
}

Result<std::vector<std::string>> SqliteStore::up_environments() {
  Stmt s(db_, "SELECT env FROM environments_up ORDER BY since, env", *cache_);
  if (!s.ok()) return s.error("list environments");
  std::vector<std::string> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) out.push_back(s.text(0));
  if (rc != SQLITE_DONE) return s.error("list environments");
  return out;
}

Status SqliteStore::set_up(const std::string& env, bool up) {
  if (up) {
    Stmt s(db_, "INSERT OR IGNORE INTO environments_up (env, since) VALUES (?, strftime('%s','now'))", *cache_);
    s.bind(1, env);
    return run(s, "mark environment up");
  }
  Stmt s(db_, "DELETE FROM environments_up WHERE env = ?", *cache_);
  s.bind(1, env);
  return run(s, "mark environment down");
}

Result<std::vector<InstanceRecord>> SqliteStore::load_instances() {
  Stmt s(db_, "SELECT env, app, ordinal, runtime, ref, fingerprint, restarts, started_at, ready_at FROM instances", *cache_);
  if (!s.ok()) return s.error("load instances");
  std::vector<InstanceRecord> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) {
    InstanceRecord r;
    r.key = {s.text(0), s.text(1), static_cast<int>(s.i64(2))};
    r.runtime = s.text(3);
    r.ref = s.text(4);
    r.fingerprint = s.text(5);
    r.restarts = static_cast<int>(s.i64(6));
    r.started_at = s.i64(7);
    r.ready_at = s.i64(8);
    out.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE) return s.error("load instances");
  return out;
}

Status SqliteStore::put_instance(const InstanceRecord& r) {
  Stmt s(db_, "INSERT OR REPLACE INTO instances (env, app, ordinal, runtime, ref, fingerprint, restarts, started_at, "
              "ready_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", *cache_);
  s.bind(1, r.key.env).bind(2, r.key.app).bind(3, r.key.ordinal).bind(4, r.runtime).bind(5, r.ref)
      .bind(6, r.fingerprint).bind(7, r.restarts).bind(8, r.started_at).bind(9, r.ready_at);
  return run(s, "record instance");
}

Status SqliteStore::set_instance_ready(const ipam::LeaseKey& k, Millis ready_at) {
  Stmt s(db_, "UPDATE instances SET ready_at = ? WHERE env = ? AND app = ? AND ordinal = ?", *cache_);
  s.bind(1, ready_at).bind(2, k.env).bind(3, k.app).bind(4, k.ordinal);
  return run(s, "record instance readiness");
}

Status SqliteStore::set_instance_fingerprint(const ipam::LeaseKey& k, const std::string& fingerprint) {
  Stmt s(db_, "UPDATE instances SET fingerprint = ? WHERE env = ? AND app = ? AND ordinal = ?", *cache_);
  s.bind(1, fingerprint).bind(2, k.env).bind(3, k.app).bind(4, k.ordinal);
  return run(s, "record what an instance runs");
}

Status SqliteStore::erase_instance(const ipam::LeaseKey& k) {
  Stmt s(db_, "DELETE FROM instances WHERE env = ? AND app = ? AND ordinal = ?", *cache_);
  s.bind(1, k.env).bind(2, k.app).bind(3, k.ordinal);
  return run(s, "forget instance");
}

Result<Event> SqliteStore::append_event(Event e) {
  // A NULL id is numbered by SQLite (AUTOINCREMENT: never reused); a given one is kept.
  Stmt s(db_, "INSERT INTO events (id, time, env, type, app, ordinal, ip, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", *cache_);
  if (e.id != 0) s.bind(1, e.id);
  s.bind(2, e.time).bind(3, e.env).bind(4, e.type).bind(5, e.app).bind(6, e.ordinal).bind(7, e.ip).bind(8, e.message);
  if (auto st = run(s, "append event"); !st.ok()) return st.error();
  e.id = sqlite3_last_insert_rowid(db_);
  if (++appended_[e.env] >= std::max(1, event_limit_ / 16)) {
    appended_.erase(e.env);
    BERTH_TRY(trim_events(e.env));
  }
  return e;
}

Status SqliteStore::trim_events(const std::string& env) {
  // Uses the (env, id) index: the id of the oldest event kept, then everything before it.
  Stmt s(db_, "DELETE FROM events WHERE env = ?1 AND id < "
              "(SELECT id FROM events WHERE env = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)", *cache_);
  s.bind(1, env).bind(2, static_cast<std::int64_t>(event_limit_ - 1));
  return run(s, "trim events");
}

Result<std::vector<Event>> SqliteStore::events(const std::string& env, std::int64_t after_id, int limit) {
  Stmt s(db_, "SELECT id, time, env, type, app, ordinal, ip, message FROM events WHERE env = ? AND id > ? ORDER BY id LIMIT ?", *cache_);
  if (!s.ok()) return s.error("read events");
  s.bind(1, env).bind(2, after_id).bind(3, limit);
  std::vector<Event> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW)
    out.push_back(Event{s.i64(0), s.i64(1), s.text(2), s.text(3), s.text(4), static_cast<int>(s.i64(5)), s.text(6), s.text(7)});
  if (rc != SQLITE_DONE) return s.error("read events");
  return out;
}

Result<std::int64_t> SqliteStore::last_event_id() {
  Stmt s(db_, "SELECT COALESCE(MAX(id), 0) FROM events", *cache_);
  if (!s.ok() || s.step() != SQLITE_ROW) return s.error("read events");
  return s.i64(0);
}

Result<std::vector<ipam::Lease>> SqliteStore::load_leases() {
  Stmt s(db_, "SELECT env, app, ordinal, ip, released_at FROM leases", *cache_);
  if (!s.ok()) return s.error("load leases");
  std::vector<ipam::Lease> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW)
    out.push_back({{s.text(0), s.text(1), static_cast<int>(s.i64(2))}, static_cast<ipam::Ipv4>(s.i64(3)), s.i64(4)});
  if (rc != SQLITE_DONE) return s.error("load leases");
  return out;
}

// A plain upsert on the key: an address held by another key violates the UNIQUE index and fails,
// so the database itself refuses to hand one address to two instances.
Status SqliteStore::put_lease(const ipam::Lease& l) {
  Stmt s(db_, "INSERT INTO leases (env, app, ordinal, ip, released_at) VALUES (?, ?, ?, ?, ?) "
              "ON CONFLICT (env, app, ordinal) DO UPDATE SET ip = excluded.ip, released_at = excluded.released_at", *cache_);
  s.bind(1, l.key.env).bind(2, l.key.app).bind(3, l.key.ordinal).bind(4, static_cast<std::int64_t>(l.ip)).bind(5, l.released_at);
  return run(s, "record lease");
}

Status SqliteStore::erase_lease(const ipam::LeaseKey& k) {
  Stmt s(db_, "DELETE FROM leases WHERE env = ? AND app = ? AND ordinal = ?", *cache_);
  s.bind(1, k.env).bind(2, k.app).bind(3, k.ordinal);
  return run(s, "erase lease");
}

Result<std::vector<model::EnvDocument>> SqliteStore::load_documents() {
  Stmt s(db_, "SELECT name, text, owner, version, updated_at, updated_by FROM env_documents ORDER BY name", *cache_);
  if (!s.ok()) return s.error("load environment documents");
  std::vector<model::EnvDocument> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW)
    out.push_back(model::EnvDocument{s.text(0), s.text(1), s.text(2), s.i64(3), s.i64(4), s.text(5)});
  if (rc != SQLITE_DONE) return s.error("load environment documents");
  return out;
}

Status SqliteStore::put_document(const model::EnvDocument& d) {
  Stmt s(db_, "INSERT OR REPLACE INTO env_documents (name, text, owner, version, updated_at, updated_by) "
              "VALUES (?, ?, ?, ?, ?, ?)", *cache_);
  s.bind(1, d.name).bind(2, d.text).bind(3, d.owner).bind(4, d.version).bind(5, d.updated_at).bind(6, d.updated_by);
  return run(s, "store environment document");
}

Status SqliteStore::erase_document(const std::string& name) {
  Stmt s(db_, "DELETE FROM env_documents WHERE name = ?", *cache_);
  s.bind(1, name);
  return run(s, "delete environment document");
}

Result<AuditEntry> SqliteStore::append_audit(AuditEntry a) {
  Stmt s(db_, "INSERT INTO audit (time, user, action, target, env, before_version, after_version, detail) "
              "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", *cache_);
  s.bind(1, a.time).bind(2, a.user).bind(3, a.action).bind(4, a.target).bind(5, a.env).bind(6, a.before_version)
      .bind(7, a.after_version).bind(8, a.detail);
  if (auto st = run(s, "append audit entry"); !st.ok()) return st.error();
  a.id = sqlite3_last_insert_rowid(db_);
  return a;
}

Result<std::vector<AuditEntry>> SqliteStore::audit(const AuditQuery& q) {
  Stmt s(db_, "SELECT id, time, user, action, target, env, before_version, after_version, detail FROM audit "
              "WHERE (?1 = '' OR env = ?1) AND (?2 = '' OR user = ?2) AND time >= ?3 ORDER BY id DESC LIMIT ?4", *cache_);
  if (!s.ok()) return s.error("read the audit log");
  s.bind(1, q.env).bind(2, q.user).bind(3, q.since).bind(4, q.limit);
  std::vector<AuditEntry> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW)
    out.push_back(AuditEntry{s.i64(0), s.i64(1), s.text(2), s.text(3), s.text(4), s.text(5), s.i64(6), s.i64(7), s.text(8)});
  if (rc != SQLITE_DONE) return s.error("read the audit log");
  std::reverse(out.begin(), out.end());
  return out;
}

Result<std::vector<TokenRecord>> SqliteStore::load_tokens() {
  Stmt s(db_, "SELECT id, user, role, hash, created_at, created_by, revoked_at FROM tokens ORDER BY created_at, id", *cache_);
  if (!s.ok()) return s.error("load tokens");
  std::vector<TokenRecord> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW)
    out.push_back(TokenRecord{s.text(0), s.text(1), s.text(2), s.text(3), s.i64(4), s.text(5), s.i64(6)});
  if (rc != SQLITE_DONE) return s.error("load tokens");
  return out;
}

Status SqliteStore::put_token(const TokenRecord& t) {
  Stmt s(db_, "INSERT OR REPLACE INTO tokens (id, user, role, hash, created_at, created_by, revoked_at) "
              "VALUES (?, ?, ?, ?, ?, ?, ?)", *cache_);
  s.bind(1, t.id).bind(2, t.user).bind(3, t.role).bind(4, t.hash).bind(5, t.created_at).bind(6, t.created_by)
      .bind(7, t.revoked_at);
  return run(s, "store token");
}

Result<std::map<std::string, std::uint32_t>> SqliteStore::load_env_uids() {
  Stmt s(db_, "SELECT env, uid FROM env_uids", *cache_);
  if (!s.ok()) return s.error("load environment user ids");
  std::map<std::string, std::uint32_t> out;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) out[s.text(0)] = static_cast<std::uint32_t>(s.i64(1));
  if (rc != SQLITE_DONE) return s.error("load environment user ids");
  return out;
}

Status SqliteStore::put_env_uid(const std::string& env, std::uint32_t uid) {
  Stmt s(db_, "INSERT INTO env_uids (env, uid) VALUES (?, ?) ON CONFLICT (env) DO UPDATE SET uid = excluded.uid", *cache_);
  s.bind(1, env).bind(2, static_cast<std::int64_t>(uid));
  return run(s, "store an environment's user id");
}

Status SqliteStore::erase_env_uid(const std::string& env) {
  Stmt s(db_, "DELETE FROM env_uids WHERE env = ?", *cache_);
  s.bind(1, env);
  return run(s, "forget an environment's user id");
}

namespace {
// Transaction control, prepared once (a pass, a batch of records or events each begin and end one).
constexpr const char* kBegin = "BEGIN IMMEDIATE";
constexpr const char* kCommit = "COMMIT";
constexpr const char* kRollback = "ROLLBACK";
constexpr const char* kSavepoint = "SAVEPOINT nested";
constexpr const char* kRollbackTo = "ROLLBACK TO nested";
constexpr const char* kRelease = "RELEASE nested";
}  // namespace

Status SqliteStore::control(const char* sql) {
  Stmt s(db_, sql, *cache_);
  return run(s, sql);
}

Status SqliteStore::transaction(const std::function<Status()>& body) {
  if (!sqlite3_get_autocommit(db_)) {
    // Inside another transaction: a savepoint, so this body alone is undone on failure.
    BERTH_TRY(control(kSavepoint));
    Status st = body();
    if (!st.ok()) (void)control(kRollbackTo);
    (void)control(kRelease);
    return st;
  }
  BERTH_TRY(control(kBegin));
  Status st = body();
  if (st.ok()) st = control(kCommit);
  if (!st.ok()) (void)control(kRollback);
  return st;
}

}  // namespace berth::store
