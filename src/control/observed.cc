#include "control/observed.h"

#include <fmt/format.h>

namespace berth::control {

Supervisor* Observed::find(const ipam::LeaseKey& key) {
  return const_cast<Supervisor*>(std::as_const(*this).find(key));
}

const Supervisor* Observed::find(const ipam::LeaseKey& key) const {
  const AppState* a = find_app(key.env, key.app);
  if (!a) return nullptr;
  auto i = a->instances.find(key.ordinal);
  return i == a->instances.end() ? nullptr : &i->second;
}

AppState* Observed::find_app(const std::string& env, const std::string& app) {
  return const_cast<AppState*>(std::as_const(*this).find_app(env, app));
}

const AppState* Observed::find_app(const std::string& env, const std::string& app) const {
  const EnvState* e = find_env(env);
  return e ? e->find_app(app) : nullptr;
}

int Observed::ready_count(const std::string& env, const std::string& app) const {
  const AppState* a = find_app(env, app);
  if (!a) return 0;
  int n = 0;
  for (const auto& [o, sup] : a->instances)
    if (sup.state().serving()) ++n;
  return n;
}

std::string Observed::waiting_message(const Gate& gate, const std::string& env) const {
  const model::Dependency& dep = *gate.dep;
  const std::string& where = gate.env;
  std::string detail = "not started";
  if (const AppState* a = find_app(where, dep.app)) {
    // The most telling instance: one with a probe result, else one with a message.
    for (const auto& [o, sup] : a->instances) {
      const auto& s = sup.state();
      if (s.phase == Phase::kReady) continue;
      if (!s.last_probe.empty()) {
        detail = s.last_probe;
        break;
      }
      if (s.phase == Phase::kWaiting) detail = fmt::format("{} is {}", dep.app, s.message);
      else if (s.phase == Phase::kStarting || s.phase == Phase::kLaunching) detail = "starting";
      else if (s.phase == Phase::kRecovering) detail = s.message;
      else if (!s.message.empty()) detail = s.message;
    }
  }
  if (where != env && !up.count(where)) detail = fmt::format("{} is down", where);
  return fmt::format("waiting for {}{}{}: {}", dep.app, where != env ? " in " + where : "", dep.wait_all ? " (all instances)" : "",
                     detail);
}

}  // namespace berth::control
