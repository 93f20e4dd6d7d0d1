#include "control/reconciler.h"

#include <fmt/format.h>

namespace berth::control {

std::vector<Action> reconcile_app(const AppTarget& target, const std::map<int, Supervisor>& instances) {
  const model::AppSpec& spec = *target.spec;
  std::vector<Action> out;
  // Rolling replacement: one instance of the app replaced at a time, the next once it is ready
  // again. (An ordinal's address and port cannot be held by old and new at once.)
  bool replacing = false;
  for (const auto& [o, sup] : instances) {
    const auto& s = sup.state();
    if (!s.replacing) continue;
    if (s.exists() && s.phase == Phase::kReady) out.push_back({Action::Kind::kReplaced, o});
    else if (o < spec.instances) replacing = true;
  }
  static const Supervisor kNone;
  for (int ordinal = 0; ordinal < spec.instances; ++ordinal) {
    auto it = instances.find(ordinal);
    const Supervisor::State& s = (it != instances.end() ? it->second : kNone).state();
    const auto& address = target.addresses.at(static_cast<std::size_t>(ordinal));
    if (!address.ok()) {
      out.push_back({Action::Kind::kWait, ordinal, address.error().message});
      continue;
    }
    if (s.exists()) {
      if (s.phase == Phase::kStopping || s.phase == Phase::kRecovering || s.phase == Phase::kLaunching) continue;
      if (!target.artifact_ready) continue;  // the running build serves until the new one exists
      std::string why;
      if (s.fingerprint != target.fingerprint) {
        // Same settings, other artifact: a new build, or a new copy of the database.
        const bool same_settings = s.fingerprint.substr(0, s.fingerprint.find(':')) == spec.fingerprint();
        why = !same_settings   ? "settings changed"
              : spec.database ? fmt::format("a new copy of {}", spec.database->standard)
                              : fmt::format("a new build ({})", target.artifact_id);
      } else if (s.ip != *address) {
        why = fmt::format("address moved to {}", *address);
      } else if (s.restart_requested) {
        why = "restart requested";
      }
      if (!why.empty() && !replacing) {
        replacing = true;
        out.push_back({Action::Kind::kReplace, ordinal, why});
      }
      continue;
    }
    Phase phase = s.phase;
    if (phase == Phase::kCompleted) {
      if (s.fingerprint == target.fingerprint || !target.artifact_ready) continue;  // done, with these settings
      out.push_back({Action::Kind::kRerun, ordinal});  // its settings changed: it runs again
      phase = Phase::kStopped;
    }
    if (phase == Phase::kStopping || phase == Phase::kBackoff || phase == Phase::kFailed) continue;
    if (!target.artifact_ready) {
      out.push_back({Action::Kind::kWait, ordinal, target.artifact_wait});
      continue;
    }
    if (!target.gate_wait.empty()) {
      out.push_back({Action::Kind::kWait, ordinal, target.gate_wait, ordinal == 0});
      continue;
    }
    out.push_back({Action::Kind::kStart, ordinal});
  }
  return out;
}

DependencyWatch::Outcome DependencyWatch::check(const model::AppSpec& spec, const std::vector<bool>& satisfied,
                                                const std::map<int, Supervisor>& instances,
                                                const std::function<std::string(std::size_t)>& say) {
  Outcome out;
  bool running = false;
  for (const auto& [o, sup] : instances)
    if (sup.state().exists() && sup.state().phase != Phase::kStopping) running = true;
  for (std::size_t i = 0; i < spec.depends_on.size(); ++i) {
    const model::Dependency& dep = spec.depends_on[i];
    const bool ok = satisfied.at(i);
    bool& last = ok_[dep.app];
    const bool was_ok = last;
    last = ok;
    if (ok && failed_.erase(dep.app)) {
      out.events.push_back({"dependency-recovered", fmt::format("dependency {} is ready again", dep.app), true});
      continue;
    }
    // Dependents are told only about a dependency that was satisfied while they ran.
    if (ok || !was_ok || !running || dep.on_failure == model::DependencyFailure::kIgnore) continue;
    failed_.insert(dep.app);
    out.events.push_back({"dependency-failed", fmt::format("{}; policy {}", say(i), model::to_string(dep.on_failure)), true});
    for (const auto& [o, sup] : instances) {
      if (dep.on_failure == model::DependencyFailure::kMark)
        out.actions.push_back({Action::Kind::kDegrade, o, "", false, true});
      else if (sup.state().exists() && sup.state().phase != Phase::kStopping)
        out.actions.push_back({Action::Kind::kRestart, o, dep.app});
    }
  }
  // Degraded marks last while a dependency with policy mark is still failed.
  bool marked = false;
  for (const auto& dep : spec.depends_on)
    if (dep.on_failure == model::DependencyFailure::kMark && failed_.count(dep.app)) marked = true;
  if (!marked)
    for (const auto& [o, sup] : instances)
      if (sup.state().degraded) out.actions.push_back({Action::Kind::kDegrade, o, "", false, false});
  return out;
}

}  // namespace berth::control
