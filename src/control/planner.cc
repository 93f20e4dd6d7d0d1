#include "control/planner.h"

namespace berth::control {

const PlannedApp* PlannedEnv::find(std::string_view app) const {
  auto it = index.find(app);
  return it == index.end() ? nullptr : &apps[it->second];
}

Planner::Planner(const model::Catalog& catalog) {
  const auto& envs = catalog.environments();
  envs_.resize(envs.size());
  index_.reserve(envs.size());
  for (std::size_t i = 0; i < envs.size(); ++i) index_.emplace(envs[i].name, i);
  for (std::size_t i = 0; i < envs.size(); ++i) {
    const model::Environment& e = envs[i];
    PlannedEnv& p = envs_[i];
    p.spec = &e;
    for (const auto& aspec : e.apps) {
      const auto& where = e.served_by.at(aspec.app);
      if (where != e.name) {
        if (auto it = index_.find(where); it != index_.end()) {
          auto& thin = envs_[it->second].thin;
          if (thin.empty() || thin.back() != e.name) thin.push_back(e.name);
        }
        continue;
      }
      PlannedApp a;
      a.spec = &aspec;
      for (const auto& dep : aspec.depends_on) {
        Gate g;
        g.dep = &dep;
        g.env = e.served_by.at(dep.app);
        const model::Environment* serving = catalog.find(g.env);
        const model::AppSpec* target = serving ? serving->find(dep.app) : nullptr;
        g.need = target && (dep.wait_all || target->job) ? target->instances : 1;
        a.gates.push_back(std::move(g));
      }
      p.index.emplace(aspec.app, p.apps.size());
      p.apps.push_back(std::move(a));
    }
  }
  // Provenance as shown, interned: environments of one fleet mostly share their layers' names.
  std::unordered_map<std::string, std::shared_ptr<const Provenance>> interned;
  std::string key;
  for (const auto& e : envs)
    for (const auto& aspec : e.apps) {
      key.clear();
      for (const auto& [k, v] : aspec.from)
        if (k.rfind("env.", 0) != 0 && k.rfind("depends_on.", 0) != 0) key.append(k).append(1, '\0').append(v).append(1, '\0');
      auto& shared = interned[key];
      if (!shared) {
        auto p = std::make_shared<Provenance>();
        for (const auto& [k, v] : aspec.from)
          if (k.rfind("env.", 0) != 0 && k.rfind("depends_on.", 0) != 0) p->emplace(k, v);
        shared = std::move(p);
      }
      from_.emplace(&aspec, shared);
    }
  for (const auto& p : envs_)
    for (const auto& a : p.apps)
      for (const auto& g : a.gates) dependents_[g.env + "/" + g.dep->app].emplace_back(p.spec->name, a.spec->app);
  // A thin environment appears once per environment it falls through to, in catalog order.
  for (auto& p : envs_) {
    std::set<std::string> seen;
    std::vector<std::string> unique;
    for (auto& t : p.thin)
      if (seen.insert(t).second) unique.push_back(std::move(t));
    p.thin = std::move(unique);
  }
}

const PlannedEnv* Planner::find(std::string_view env) const {
  auto it = index_.find(env);
  return it == index_.end() ? nullptr : &envs_[it->second];
}

const PlannedEnv* Planner::desired(std::string_view env, const std::set<std::string, std::less<>>& up) const {
  return up.count(env) ? find(env) : nullptr;
}

const model::AppSpec* Planner::spec_of(std::string_view env, std::string_view app) const {
  const PlannedEnv* e = find(env);
  const PlannedApp* a = e ? e->find(app) : nullptr;
  return a ? a->spec : nullptr;
}

bool Planner::wanted(const ipam::LeaseKey& key, const std::set<std::string, std::less<>>& up) const {
  const PlannedEnv* e = desired(key.env, up);
  const PlannedApp* a = e ? e->find(key.app) : nullptr;
  return a && key.ordinal >= 0 && key.ordinal < a->spec->instances;
}

std::vector<ipam::LeaseKey> Planner::desired_instances(const std::set<std::string, std::less<>>& up) const {
  std::vector<ipam::LeaseKey> out;
  for (const auto& e : envs_) {
    if (!up.count(e.spec->name)) continue;
    for (const auto& a : e.apps)
      for (int o = 0; o < a.spec->instances; ++o) out.push_back({e.spec->name, a.spec->app, o});
  }
  return out;
}

std::shared_ptr<const Provenance> Planner::shown_from(const model::AppSpec& spec) const {
  static const auto kNone = std::make_shared<const Provenance>();
  auto it = from_.find(&spec);
  return it == from_.end() ? kNone : it->second;
}

const Planner::Dependents& Planner::dependents(std::string_view env, std::string_view app) const {
  static const Dependents kNone;
  std::string key;
  key.reserve(env.size() + 1 + app.size());
  key.append(env).append(1, '/').append(app);
  auto it = dependents_.find(key);
  return it == dependents_.end() ? kNone : it->second;
}

const std::vector<std::string>& Planner::thin_of(std::string_view env) const {
  static const std::vector<std::string> kNone;
  const PlannedEnv* e = find(env);
  return e ? e->thin : kNone;
}

}  // namespace berth::control
