// store/sqlite/sqlite_store.h — StateStore on one SQLite file (WAL, synchronous=NORMAL on top
// of WAL: a committed write survives the daemon being killed; only a power loss can undo the
// last commits). The schema and its versions are in docs/formats.md: open() migrates an older
// schema (PRAGMA user_version) forward, each step in one transaction, and refuses a newer one.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "store/store.h"

struct sqlite3;

namespace berth::store {

class SqliteStore final : public StateStore {
 public:
  static Result<std::unique_ptr<SqliteStore>> open(const std::string& path);
  ~SqliteStore() override;
  // The schema version this build writes.
  static int schema_version();
  // Each environment keeps its newest `per_env` events (default 20,000); older ones are deleted
  // as new ones arrive (every 1/16th of the limit, so the table stays within limit + 1/16th).
  void set_event_limit(int per_env) { event_limit_ = per_env; }

  Result<std::optional<StoredCatalog>> load_catalog() override;
  Status save_catalog(const StoredCatalog& catalog) override;
  Result<std::vector<std::string>> up_environments() override;
  Status set_up(const std::string& env, bool up) override;
  Result<std::vector<InstanceRecord>> load_instances() override;
  Status put_instance(const InstanceRecord& record) override;
  Status erase_instance(const ipam::LeaseKey& key) override;
  Status set_instance_ready(const ipam::LeaseKey& key, Millis ready_at) override;
  Status set_instance_fingerprint(const ipam::LeaseKey& key, const std::string& fingerprint) override;
  Result<Event> append_event(Event event) override;
  Result<std::vector<Event>> events(const std::string& env, std::int64_t after_id, int limit) override;
  Result<std::int64_t> last_event_id() override;
  Result<std::vector<ipam::Lease>> load_leases() override;
  Status put_lease(const ipam::Lease& lease) override;
  Status erase_lease(const ipam::LeaseKey& key) override;
  Result<std::vector<model::EnvDocument>> load_documents() override;
  Status put_document(const model::EnvDocument& doc) override;
  Status erase_document(const std::string& name) override;
  Result<AuditEntry> append_audit(AuditEntry entry) override;
  Result<std::vector<AuditEntry>> audit(const AuditQuery& query) override;
  Result<std::vector<TokenRecord>> load_tokens() override;
  Status put_token(const TokenRecord& token) override;
  Result<std::map<std::string, std::uint32_t>> load_env_uids() override;
  Status put_env_uid(const std::string& env, std::uint32_t uid) override;
  Status erase_env_uid(const std::string& env) override;
  Status transaction(const std::function<Status()>& body) override;

  struct StmtCache;

 private:
  explicit SqliteStore(sqlite3* db);
  Status exec(const std::string& sql);
  Status control(const char* sql);  // BEGIN, COMMIT...: a prepared statement kept for the next time
  Status migrate(const std::string& path);
  Status trim_events(const std::string& env);
  sqlite3* db_;
  std::unique_ptr<StmtCache> cache_;
  int event_limit_ = 20'000;
  std::map<std::string, int> appended_;  // env → events appended since its last trim
};

}  // namespace berth::store
