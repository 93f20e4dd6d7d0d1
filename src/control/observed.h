// control/observed.h — what the control loop knows exists: the environments that are up, and per
// environment, app and ordinal the instance's Supervisor (its state), plus per app its source's
// resolve and build state and its dependencies' watch.
//
// This is the loop's actual state, against which the reconciler compares what the planner
// wants. The loop owns the one Observed and changes it; the status and DNS views
// (control/views.h) and the reconciler read it. Loop thread only.
#pragma once

#include <map>
#include <set>
#include <string>
#include <unordered_map>

#include "control/planner.h"
#include "control/reconciler.h"
#include "control/supervisor.h"
#include "net/ipam/ipam.h"

namespace berth::control {

// An app built from source: where its tag's resolve and build stand.
struct SourceState {
  std::string ref_key;       // repo#tag the state below is for
  std::string commit;        // what runs (or is built); kept while it is resolved again
  bool resolving = false;
  bool reresolve = false;    // a refresh asked to resolve the tag again; `commit` stays meanwhile
  std::string error;         // resolving failed
  std::string build_id;
  std::string announced;     // last build state told in an event
  std::string db_announced;  // last database copy state told in an event
};

struct AppState {
  std::map<int, Supervisor> instances;
  SourceState src;
  std::string desired_fp;  // fingerprint the last pass wanted (settings + build)
  DependencyWatch deps;    // its dependencies' health, across passes
};

struct EnvState {
  std::unordered_map<std::string, AppState> apps;
  const AppState* find_app(const std::string& app) const {
    auto a = apps.find(app);
    return a == apps.end() ? nullptr : &a->second;
  }
};

struct Observed {
  std::set<std::string, std::less<>> up;           // environments requested up (as stored)
  std::unordered_map<std::string, EnvState> envs;  // every environment with something of it left

  Supervisor* find(const ipam::LeaseKey& key);
  const Supervisor* find(const ipam::LeaseKey& key) const;
  const EnvState* find_env(const std::string& env) const {
    auto e = envs.find(env);
    return e == envs.end() ? nullptr : &e->second;
  }
  AppState* find_app(const std::string& env, const std::string& app);
  const AppState* find_app(const std::string& env, const std::string& app) const;
  // Its instances that are ready (or, for a job, completed).
  int ready_count(const std::string& env, const std::string& app) const;
  // Whether a dependency's gate is open: enough of the instances that serve it are ready.
  bool satisfied(const Gate& gate) const { return ready_count(gate.env, gate.dep->app) >= gate.need; }
  // What an app waits for at a closed gate, with the most telling of the dependency's instances:
  // "waiting for db in baseline: GET /healthcheck → 503".
  std::string waiting_message(const Gate& gate, const std::string& env) const;
};

}  // namespace berth::control
