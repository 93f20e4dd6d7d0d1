// store/store.h — the daemon's durable state.
//
// What must survive a SIGKILL of the daemon lives here: the applied catalog, which environments
// are up, IP leases, the processes berth started (so a restarted daemon adopts them instead of
// starting duplicates) and the event log. Every write is committed before the call returns.
// A store is owned by the control loop; it is not thread-safe.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/result.h"
#include "net/ipam/ipam.h"

namespace berth::store {

struct StoredCatalog {
  std::string text;
  std::string filename;
  Millis applied_at = 0;
  std::string base_dir;  // relative source repositories are resolved against it
};

// An instance a runtime created for berth; enough to find it again after a daemon restart.
struct InstanceRecord {
  ipam::LeaseKey key;
  std::string runtime;      // the runtime's name: "process", "docker"
  std::string ref;          // the runtime's opaque reference (runtime/runtime.h)
  std::string fingerprint;  // settings the instance was started with
  int restarts = 0;
  Millis started_at = 0;
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

  // Appends and returns the event with its id set.
  virtual Result<Event> append_event(Event event) = 0;
  // Events of `env` with id > after_id, oldest first, at most `limit`.
  virtual Result<std::vector<Event>> events(const std::string& env, std::int64_t after_id, int limit) = 0;
  // Id of the newest event of any environment (0 when none).
  virtual Result<std::int64_t> last_event_id() = 0;
};

}  // namespace berth::store
