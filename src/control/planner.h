// control/planner.h — what should run: the catalog and the environments that are up, turned
// into the instances wanted and the gates their starts wait on.
//
// Pure and immutable: a Planner is built once per catalog (when the loop installs one) and
// answers, per pass, which apps an environment runs itself and how many instances each, which
// environment's instances serve each dependency and how many of them must be ready first (a
// job: all of them completed; `wait: all`: all of them ready; otherwise one), and which thin
// environments fall through to an environment (they show what it runs, so a change there is
// theirs too). Everything is looked up by hash; nothing walks the catalog per pass.
// Unit-tested on catalogs (tests/unit/planner_test.cc).
//
// Ownership: it points into the model::Catalog it was built from, which must outlive it (the loop
// keeps both and replaces them together). Any thread may read it; the loop's is read on the loop.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "control/status.h"
#include "model/catalog.h"
#include "net/ipam/ipam.h"

namespace berth::control {

// Hash lookups by string_view without making a string.
struct NameHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
template <class V>
using NameMap = std::unordered_map<std::string, V, NameHash, std::equal_to<>>;

// One dependency of an app, as its start sees it.
struct Gate {
  const model::Dependency* dep = nullptr;
  std::string env;  // the environment whose instances serve it (a thin one's base, say)
  int need = 1;     // its instances that must be ready (or, for a job, completed)
};

struct PlannedApp {
  const model::AppSpec* spec = nullptr;
  std::vector<Gate> gates;  // one per spec->depends_on, in its order (soft ones too)
};

struct PlannedEnv {
  const model::Environment* spec = nullptr;
  std::vector<PlannedApp> apps;    // the apps it runs itself, in dependency order
  std::vector<std::string> thin;   // environments that fall through to it for some app
  const PlannedApp* find(std::string_view app) const;
  NameMap<std::size_t> index;  // app → position in `apps`
};

class Planner {
 public:
  Planner() = default;  // no catalog: nothing runs
  explicit Planner(const model::Catalog& catalog);

  // The environment as planned; nullptr when the catalog has none of that name.
  const PlannedEnv* find(std::string_view env) const;
  // What `env` should run now: its plan when it is up and in the catalog, else nullptr (down:
  // nothing of it is wanted).
  const PlannedEnv* desired(std::string_view env, const std::set<std::string, std::less<>>& up) const;
  // The spec of an app `env` runs itself; nullptr otherwise.
  const model::AppSpec* spec_of(std::string_view env, std::string_view app) const;
  // Whether the instance is wanted when the environments `up` are up.
  bool wanted(const ipam::LeaseKey& key, const std::set<std::string, std::less<>>& up) const;
  // Every instance wanted when the environments `up` are up, environment by environment in catalog
  // order, apps in dependency order.
  std::vector<ipam::LeaseKey> desired_instances(const std::set<std::string, std::less<>>& up) const;
  // The thin environments that fall through to `env` (empty when none).
  const std::vector<std::string>& thin_of(std::string_view env) const;
  // The apps whose starts wait on `app` as `env` runs it: (environment, app) pairs, in `env` and
  // in the thin environments falling through to it (empty when none).
  using Dependents = std::vector<std::pair<std::string, std::string>>;
  const Dependents& dependents(std::string_view env, std::string_view app) const;
  // Where each setting of an app of the catalog came from, as a status shows it; one shared copy
  // per distinct provenance (1,000 environments of one fleet share 30, not 30,000).
  std::shared_ptr<const Provenance> shown_from(const model::AppSpec& spec) const;

 private:
  std::vector<PlannedEnv> envs_;  // in catalog order
  NameMap<std::size_t> index_;
  std::unordered_map<const model::AppSpec*, std::shared_ptr<const Provenance>> from_;
  NameMap<Dependents> dependents_;  // "env/app" → who waits on it
};

}  // namespace berth::control
