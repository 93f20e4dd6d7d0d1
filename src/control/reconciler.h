// control/reconciler.h — desired against observed, for one app of one environment: which
// instances to start, replace or leave waiting (and why), and what its dependencies' health asks
// of it.
//
// Pure: it reads what the loop wants of the app (AppTarget: its settings' fingerprint, whether
// its build or database copy exists, the first dependency it waits for, each instance's address)
// and the app's Supervisors, and returns Actions; the loop carries them out through the
// supervisors and its effects. Rolling replacement lives here: at most one instance of an app is
// replaced at a time, the next only once the replaced one is ready again, so a multi-instance
// app never has all its instances down. Unit-tested on plain values
// (tests/unit/reconciler_test.cc).
//
// Thread: whoever calls it (the loop); it keeps nothing but DependencyWatch's memory.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "base/result.h"
#include "control/supervisor.h"
#include "model/catalog.h"

namespace berth::control {

// What the pass wants of one app.
struct AppTarget {
  const model::AppSpec* spec = nullptr;
  std::string fingerprint;      // the settings' hash, then ":" and the build or copy, when it has one
  bool artifact_ready = true;   // its build or database copy exists (or it needs none)
  std::string artifact_wait;    // why not
  std::string artifact_id;      // the build or copy it should run
  std::string gate_wait;        // the first hard dependency not satisfied, said; empty: none
  // Per ordinal below spec->instances: its address, or why it has none (the pool is exhausted).
  std::vector<Result<std::string>> addresses;
};

struct Action {
  enum class Kind {
    kStart,      // launch it
    kReplace,    // stop it to start it again (`why`), health-gated: the next waits for it
    kReplaced,   // its replacement is ready: the next one may go
    kWait,       // it waits to start: `why`, announced as the app's once when `announce`
    kRerun,      // a completed job whose settings changed: it runs again
    kRestart,    // a dependency it needs failed and its policy is restart: stop it (`why`)
    kDegrade,    // mark it degraded (a dependency with policy mark failed) or not (`on`)
  };
  Action(Kind k, int o, std::string w = {}, bool a = false, bool o2 = false)
      : kind(k), ordinal(o), why(std::move(w)), announce(a), on(o2) {}
  Kind kind;
  int ordinal = 0;
  std::string why;
  bool announce = false;
  bool on = false;
};

// The instances of the app that should be started, replaced or waiting, given `target`.
// `instances` are the app's supervisors by ordinal; the loop has made one for every ordinal below
// spec->instances and given those that run nothing their address.
std::vector<Action> reconcile_app(const AppTarget& target, const std::map<int, Supervisor>& instances);

// Watches the dependencies of one app across passes: a dependency that was satisfied while the
// app ran and no longer is gets its on_failure policy applied once (mark: degraded until it
// recovers; restart: its running instances stopped, to start again once it is back; ignore), and
// its recovery is said.
class DependencyWatch {
 public:
  struct Outcome {
    std::vector<Step::Event> events;  // about the app
    std::vector<Action> actions;      // kRestart and kDegrade, per instance
  };
  // `satisfied[i]`: whether spec.depends_on[i] is satisfied now; `say(i)` words what the app
  // waits for when it is not (called only for a failure to announce).
  Outcome check(const model::AppSpec& spec, const std::vector<bool>& satisfied, const std::map<int, Supervisor>& instances,
                const std::function<std::string(std::size_t)>& say);

 private:
  std::map<std::string, bool> ok_;    // per dependency: satisfied at the last pass
  std::set<std::string> failed_;      // dependencies whose failure was announced
};

}  // namespace berth::control
