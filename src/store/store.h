// store/store.h — the daemon's durable state.
//
// What must survive a SIGKILL of the daemon lives here: the applied catalog (the fleet document)
// and the environment documents, which environments are up, IP leases, the processes berth
// started (so a restarted daemon adopts them instead of starting duplicates), the event log, the
// API's tokens (hashed) and the audit log of every write. Every write is committed before the
// call returns, or with the transaction() it is part of. A store is owned by the control loop
// and used on its thread only; it is not thread-safe.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/result.h"
#include "model/catalog.h"
#include "net/ipam/ipam.h"

namespace berth::store {

struct StoredCatalog {
  std::string text;
  std::string filename;
  Millis applied_at = 0;
  std::string base_dir;  // relative source repositories are resolved against it
  std::int64_t version = 0;  // 1 for the first applied, +1 per apply
  std::string applied_by;
};

// One write through the API: who, what, and the versions of the document before and after.
struct AuditEntry {
  std::int64_t id = 0;
  Millis time = 0;     // wall
  std::string user;
  std::string action;  // "env.create", "env.update", "env.delete", "fleet.apply", "env.up", "token.create", ...
  std::string target;  // what it acted on: an environment, "berth.yaml", a token id
  std::string env;     // the environment concerned, if any
  std::int64_t before_version = 0;  // 0: none (created)
  std::int64_t after_version = 0;   // 0: none (deleted, or not a document)
  std::string detail;
};

struct AuditQuery {
  std::string env, user;
  Millis since = 0;
  int limit = 1000;
};

// An API token: only its SHA-256 is kept.
struct TokenRecord {
  std::string id;     // short public id (for ls and revoke)
  std::string user;
  std::string role;   // admin | member | viewer
  std::string hash;   // hex SHA-256 of the secret token
  Millis created_at = 0;
  std::string created_by;
  Millis revoked_at = 0;  // 0: valid
};

// An instance a runtime created for berth; enough to find it again after a daemon restart.
struct InstanceRecord {
  ipam::LeaseKey key;
  std::string runtime;      // the runtime's name: "process", "docker"
  std::string ref;          // the runtime's opaque reference (runtime/runtime.h)
  std::string fingerprint;  // settings the instance was started with
  int restarts = 0;
  Millis started_at = 0;
  Millis ready_at = 0;  // wall time it last became ready; 0 while not ready
};

struct Event {
  std::int64_t id = 0;
  Millis time = 0;  // wall
  std::string env;
  std::string type;
  std::string app;
  int ordinal = -1;  // -1: not about one instance
  std::string ip;
  std::string message;
};

class StateStore : public ipam::LeaseStore {
 public:
  virtual Result<std::optional<StoredCatalog>> load_catalog() = 0;
  virtual Status save_catalog(const StoredCatalog& catalog) = 0;

  virtual Result<std::vector<std::string>> up_environments() = 0;
  virtual Status set_up(const std::string& env, bool up) = 0;

  virtual Result<std::vector<InstanceRecord>> load_instances() = 0;
  virtual Status put_instance(const InstanceRecord& record) = 0;
  virtual Status erase_instance(const ipam::LeaseKey& key) = 0;
  // When a recorded instance became ready (0: it is not ready now); nothing if there is no record.
  virtual Status set_instance_ready(const ipam::LeaseKey& key, Millis ready_at) = 0;
  // The settings a recorded instance runs (InstanceRecord::fingerprint); nothing if there is no
  // record. (berth restart marks it, so a restarted daemon still replaces the instance.)
  virtual Status set_instance_fingerprint(const ipam::LeaseKey& key, const std::string& fingerprint) = 0;

  // Appends and returns the event with its id set: the store numbers it when `event.id` is 0,
  // else it keeps the id given (which must be greater than every stored one).
  virtual Result<Event> append_event(Event event) = 0;
  // Events of `env` with id > after_id, oldest first, at most `limit`.
  virtual Result<std::vector<Event>> events(const std::string& env, std::int64_t after_id, int limit) = 0;
  // Id of the newest event of any environment (0 when none).
  virtual Result<std::int64_t> last_event_id() = 0;

  // Environment documents (model/catalog.h), each keyed by its name.
  virtual Result<std::vector<model::EnvDocument>> load_documents() = 0;
  virtual Status put_document(const model::EnvDocument& doc) = 0;
  virtual Status erase_document(const std::string& name) = 0;

  virtual Result<AuditEntry> append_audit(AuditEntry entry) = 0;
  // Newest last; at most query.limit, the newest ones.
  virtual Result<std::vector<AuditEntry>> audit(const AuditQuery& query) = 0;

  virtual Result<std::vector<TokenRecord>> load_tokens() = 0;
  virtual Status put_token(const TokenRecord& token) = 0;

  // The user id each environment's instances run as (base/identity.h), while it exists.
  virtual Result<std::map<std::string, std::uint32_t>> load_env_uids() = 0;
  // Refused (conflict) when another environment has `uid`.
  virtual Status put_env_uid(const std::string& env, std::uint32_t uid) = 0;
  virtual Status erase_env_uid(const std::string& env) = 0;

  // Runs `body` (calls of this store) as one transaction: all its writes or none. Inside another
  // transaction it is a savepoint: on failure its own writes are undone, the outer ones stay.
  virtual Status transaction(const std::function<Status()>& body) = 0;
};

}  // namespace berth::store
