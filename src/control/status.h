// control/status.h — what the control loop shows of an environment: its status, app by app and
// instance by instance, and the same in a few numbers. Plain values: made by the loop
// (control/loop.h), kept in its read model (control/read_model.h), rendered by the API.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/clock.h"

namespace berth::control {

struct InstanceStatus {
  int ordinal = 0;
  std::string ip;
  std::string dns;
  std::string state;  // waiting | starting | ready | degraded | failed | stopped
  std::string runtime;  // process | docker
  std::string detail;   // what runs it: "pid 4711", "container 3fa2c1d0e9ab"
  int pid = 0;          // its main process on this host, when known
  int restarts = 0;
  Millis ready_at = 0;  // wall; 0 = not ready
  std::string message;
  std::string health;   // last probe result

  bool operator==(const InstanceStatus&) const = default;
};

// Setting → the layer it came from, as a status shows it (no env values, no dependencies):
// immutable, and shared by every app of every environment whose layers are the same.
using Provenance = std::map<std::string, std::string>;

struct AppStatus {
  std::string app;
  std::string runs_in;  // the environment whose instances serve this app (itself unless thin)
  std::string tag;
  std::string build_type;
  std::shared_ptr<const Provenance> from;  // never null
  std::string state;
  std::string message;
  std::vector<std::string> waiting_for;  // hard dependencies not yet satisfied
  struct Dep {
    std::string app;
    bool soft = false;

    bool operator==(const Dep&) const = default;
  };
  std::vector<Dep> depends_on;
  std::map<std::string, int> ports;  // name → port, on each instance's address
  std::vector<InstanceStatus> instances;
  // Apps with a source: the commit the tag resolved to, and its build.
  std::string commit;       // full id; empty while resolving or without a source
  std::string build_id;
  std::string build_state;  // resolving | queued | building | built | build-failed; empty without a source
  bool resolving = false;   // the tag is being resolved (again, after a refresh: `commit` is the current one)
  Millis build_ms = 0;      // duration of the build (0 while not finished)
  std::string build_error;
  // Databases: the standard and version of the environment's copy, how it was made, how long it took.
  std::string standard;     // as asked: NAME or NAME@VERSION
  int copy_version = 0;     // the version the copy is of (0: no copy yet)
  int copy_pending = 0;     // released migrations it lacks to the latest version (db rollout brings them)
  int copy_own = 0;         // the environment's own migrations applied to it (berth db migrate)
  int copy_drift = -1;      // objects its schema differs in from its version's golden (berth db drift); -1: not checked at this version
  Millis copy_drift_checked_at = 0;  // wall
  std::string copy_method;  // reflink | overlay | copy | restore
  Millis copy_ms = 0;       // cloning the golden, or restoring from the store (method restore)
  std::string datadir;

  // (`from` compares by identity: the planner interns provenance maps, so equal layers share one.)
  bool operator==(const AppStatus&) const = default;
};

struct EnvStatus {
  std::string env;
  std::string base;
  bool up = false;
  bool ready = false;     // up, and every instance ready
  bool updating = false;  // a build in progress, or instances still to be replaced by a newer one
  std::vector<AppStatus> apps;
  std::vector<std::string> notes;  // what the environment's instances lack, and why (their resolver)

  bool operator==(const EnvStatus&) const = default;
};

// An environment in a few numbers (GET /v1/environments?summary=1): cheap to make, no texts.
struct EnvSummary {
  std::string env;
  std::string base;
  bool up = false;
  bool ready = false;     // as EnvStatus::ready
  bool updating = false;  // an instance being replaced, or running other settings than wanted
  int apps = 0;           // apps it runs itself
  int instances = 0;      // of those
  int running_instances = 0;  // launched and not stopped: ready or not
  int ready_instances = 0;

  bool operator==(const EnvSummary&) const = default;
};

}  // namespace berth::control
