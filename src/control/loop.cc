#include "control/loop.h"

#include <algorithm>
#include <filesystem>

#include <sys/wait.h>

#include <fmt/format.h>

#include "base/text.h"

// Lifecycle, API operations, the reconcile pass, dependency gating and builds. The rest of
// ControlLoop is in instances.cc (processes and health) and views.cc (status and DNS).
namespace berth::control {

Result<std::unique_ptr<ControlLoop>> ControlLoop::create(const Deps& d) {
  auto stored = d.store->load_catalog();
  if (!stored.ok()) return stored.error();
  auto docs = d.store->load_documents();
  if (!docs.ok()) return docs.error();
  std::optional<model::ResolvedCatalog> resolved;
  if (*stored) {
    auto r = model::resolve_catalog((*stored)->text, (*stored)->filename, (*stored)->base_dir, *docs);
    if (!r.ok()) return r.error().wrap("the stored catalog no longer parses");
    resolved = std::move(r.value());
  }
  auto ipam = ipam::Ipam::create(resolved ? resolved->catalog.network() : model::NetworkSpec{}, *d.store, *d.clock);
  if (!ipam.ok()) return ipam.error();
  auto last_event = d.store->last_event_id();
  if (!last_event.ok()) return last_event.error();
  std::unique_ptr<ControlLoop> loop(new ControlLoop(d, std::move(ipam.value())));
  loop->last_event_id_ = *last_event;  // (before anything can emit)
  loop->documents_ = std::move(docs.value());
  if (*stored) {
    loop->fleet_ = **stored;
    loop->fleet_version_ = (*stored)->version;
    loop->catalog_ = std::move(resolved->catalog);
    loop->invalid_documents_ = std::move(resolved->invalid);
  }
  auto up = d.store->up_environments();
  if (!up.ok()) return up.error();
  loop->up_.insert(up->begin(), up->end());
  auto uids = d.store->load_env_uids();
  if (!uids.ok()) return uids.error();
  loop->env_uids_ = std::move(uids.value());

  // Instances that outlived the previous daemon: their runtimes re-attach to the live ones, and
  // until they have answered nothing else is started for those ordinals.
  auto* self = loop.get();
  for (auto* rt : d.runtimes) rt->set_listener(self);
  auto records = d.store->load_instances();
  if (!records.ok()) return records.error();
  std::map<std::string, std::vector<runtime::Record>> by_runtime;
  for (const auto& r : *records) {
    Instance& inst = loop->envs_[r.key.env].apps[r.key.app].instances[r.key.ordinal];
    inst.key = r.key;
    if (auto ip = loop->ipam_.lookup(r.key)) inst.ip = model::format_ipv4(*ip);
    inst.runtime_name = r.runtime;
    inst.ref = r.ref;
    inst.fingerprint = r.fingerprint;
    // The stored fingerprint is the settings' hash (hex), then ":" and the build or database copy
    // the instance runs, if any.
    if (auto colon = r.fingerprint.find(':'); colon != std::string::npos) inst.build_id = r.fingerprint.substr(colon + 1);
    inst.restarts = r.restarts;
    inst.ready_at = r.ready_at;
    inst.started_before = true;
    if (r.runtime.empty() && r.ref == kCompletedRef) {
      // A job that had completed: nothing runs; it stays done while its settings do not change.
      inst.ref.clear();
      inst.phase = Phase::kCompleted;
      inst.message = "completed before the daemon restarted";
      continue;
    }
    inst.phase = Phase::kRecovering;
    if (!loop->runtime_named(r.runtime)) {
      // Kept as recorded (it may still run): never a second instance for this ordinal.
      inst.message = fmt::format("recorded in the {} runtime, which this daemon was not started with; start berth serve "
                                 "with it (e.g. --docker-host) to recover it", r.runtime);
      loop->emit(r.key.env, "error", r.key.app, r.key.ordinal, inst.ip, inst.message);
      continue;
    }
    inst.message = "recovering after a daemon restart";
    by_runtime[r.runtime].push_back({{r.key.env, r.key.app, r.key.ordinal}, r.ref});
  }
  // A lease assigned to no recorded instance was written for a launch the previous daemon died
  // before recording: its gated child never ran (or its container was never started and is
  // removed by recover). Release it, so it stays sticky as a reservation but does not hold the
  // address for good when the environment is down or scaled down by now.
  for (const auto& lease : loop->ipam_.leases()) {
    if (lease.reserved() || loop->find(lease.key)) continue;
    if (auto st = loop->ipam_.release(lease.key); !st.ok())
      loop->emit(lease.key.env, "error", lease.key.app, lease.key.ordinal, "", st.error().message);
  }
  for (auto& [name, recs] : by_runtime)
    loop->runtime_named(name)->recover(recs, loop->guarded([self](std::vector<runtime::Recovered> rs) { self->on_recovered(rs); }));
  loop->prepare_network();
  if (d.builder) {
    d.builder->set_on_change([self](const build::Build& b) {
      if (b.state == build::State::kSucceeded) {
        std::set<std::string> in_use;
        for (const auto& [n, env] : self->envs_)
          for (const auto& [a, app] : env.apps) {
            in_use.insert(app.src.build_id);
            for (const auto& [o, inst] : app.instances) in_use.insert(inst.build_id);
          }
        self->d_.builder->evict(self->d_.artifact_max_bytes, in_use);
      }
      self->schedule_reconcile();
    });
  }
  loop->schedule_reconcile();
  loop->check_lifetimes();
  return loop;
}

ControlLoop::~ControlLoop() {
  write_events();  // a daemon that stops keeps its last events
  for (auto* rt : d_.runtimes) rt->set_listener(nullptr);
  if (d_.builder) d_.builder->set_on_change(nullptr);
  for (auto& [env, timer] : follow_timers_) d_.executor->cancel(timer);
  if (lifetime_timer_) d_.executor->cancel(lifetime_timer_);
  if (full_pass_timer_) d_.executor->cancel(full_pass_timer_);
  if (store_retry_timer_) d_.executor->cancel(store_retry_timer_);
  if (status_publish_timer_) d_.executor->cancel(status_publish_timer_);
  for (auto& [n, env] : envs_)
    for (auto& [a, app] : env.apps)
      for (auto& [o, inst] : app.instances) cancel_timers(inst);
}

// ---- API operations ---------------------------------------------------------------------------

Status ControlLoop::apply(const std::string& text, const std::string& filename, const std::string& base_dir) {
  auto plan = apply_fleet(text, filename, base_dir, "local", -1, false, false, true);
  if (!plan.ok()) return plan.error();
  return {};
}

Status ControlLoop::up(const std::string& env) {
  BERTH_ASSERT_LOOP(*d_.executor);
  if (!catalog_) return not_found("no catalog applied yet: run `berth apply -f berth.yaml` first");
  if (!catalog_->find(env)) {
    auto names = catalog_->environment_names();
    auto hint = closest(env, names);
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    return not_found(fmt::format("no environment '{}' in the catalog{}; environments: {}", env,
                                 hint ? fmt::format(" (did you mean '{}'?)", *hint) : "", list));
  }
  if (!up_.count(env)) {
    BERTH_TRY(d_.store->set_up(env, true));
    up_.insert(env);
    emit(env, "up", "", -1, "", "environment requested up");
  }
  schedule_reconcile(env);
  return {};
}

Status ControlLoop::down(const std::string& env, bool force) {
  BERTH_ASSERT_LOOP(*d_.executor);
  if (!force && catalog_ && up_.count(env)) {
    // Thin environments that are up and fall through to it would lose what they call.
    std::vector<std::string> thin;
    for (const auto& e : catalog_->environments()) {
      if (e.name == env || !up_.count(e.name)) continue;
      for (const auto& [app, by] : e.served_by)
        if (by == env) {
          thin.push_back(e.name);
          break;
        }
    }
    if (!thin.empty()) {
      std::string list;
      for (const auto& t : thin) list += (list.empty() ? "" : ", ") + t;
      return conflict(fmt::format("environment '{}' serves the thin environment(s) {}, which are up and fall through to "
                                  "it; take them down first, or --force", env, list));
    }
  }
  if (!up_.count(env) && !envs_.count(env)) {
    if (catalog_ && catalog_->find(env)) return {};  // already down
    return not_found(fmt::format("no environment '{}'", env));
  }
  if (up_.count(env)) {
    BERTH_TRY(d_.store->set_up(env, false));
    up_.erase(env);
    emit(env, "down", "", -1, "", "environment requested down");
    // Jobs that completed run again at the next up.
    if (auto e = envs_.find(env); e != envs_.end())
      for (auto& [name, app] : e->second.apps)
        for (auto& [o, inst] : app.instances)
          if (inst.phase == Phase::kCompleted) forget_completion(inst);
  }
  schedule_reconcile(env);
  return {};
}

Status ControlLoop::refresh(const std::string& env) {
  BERTH_ASSERT_LOOP(*d_.executor);
  if (!catalog_ || !catalog_->find(env)) return not_found(fmt::format("no environment '{}'", env));
  auto e = envs_.find(env);
  int n = 0;
  if (e != envs_.end())
    for (auto& [name, app] : e->second.apps)
      if (!app.src.ref_key.empty() && !app.src.resolving) {
        app.src.commit.clear();  // resolve again; running instances keep running meanwhile
        app.src.error.clear();
        ++n;
      }
  if (n > 0) emit(env, "refresh", "", -1, "", fmt::format("re-resolving the tags of {} app(s) built from source", n));
  schedule_reconcile(env);
  return {};
}

Status ControlLoop::restart(const std::string& env, const std::string& app_name, const std::string& user) {
  BERTH_ASSERT_LOOP(*d_.executor);
  const model::Environment* spec = catalog_ ? catalog_->find(env) : nullptr;
  if (!spec) return not_found(fmt::format("no environment '{}'", env));
  if (!up_.count(env)) return conflict(fmt::format("environment '{}' is down; berth up {} starts it", env, env));
  if (!app_name.empty()) {
    if (!spec->find(app_name)) {
      std::vector<std::string> names;
      for (const auto& a : spec->apps) names.push_back(a.app);
      auto hint = closest(app_name, names);
      return not_found(fmt::format("no app '{}' in environment '{}'{}", app_name, env,
                                   hint ? fmt::format(" (did you mean '{}'?)", *hint) : ""));
    }
    if (!spec->runs(app_name))
      return conflict(fmt::format("environment '{}' does not run {}: it falls through to {}; restart it there", env,
                                  app_name, spec->served_by.count(app_name) ? spec->served_by.at(app_name) : "its base"));
  }
  int n = 0;
  if (auto e = envs_.find(env); e != envs_.end())
    for (auto& [name, app] : e->second.apps) {
      if (!app_name.empty() && name != app_name) continue;
      if (!spec->runs(name)) continue;
      for (auto& [o, inst] : app.instances) {
        ++n;
        if (inst.exists()) {
          inst.restart_requested = true;
        } else if (inst.phase == Phase::kBackoff || inst.phase == Phase::kFailed || inst.phase == Phase::kCompleted) {
          if (inst.backoff_timer) d_.executor->cancel(inst.backoff_timer);
          inst.backoff_timer = 0;
          if (inst.phase == Phase::kCompleted) forget_completion(inst);
          inst.phase = Phase::kStopped;
        }
      }
    }
  emit(env, "restart", app_name, -1, "", fmt::format("{} instance(s) restarted one at a time, by {}", n, user));
  schedule_reconcile(env);
  return {};
}

Result<std::vector<store::Event>> ControlLoop::events(const std::string& env, std::int64_t after_id, int limit) {
  write_events();  // what a reader sees is stored: a restarted daemon never numbers another event the same
  return d_.store->events(env, after_id, limit);
}

// ---- reconcile --------------------------------------------------------------------------------

void ControlLoop::schedule_reconcile(const std::string& env) {
  dirty_.insert(env);
  if (auto it = falls_through_to_.find(env); it != falls_through_to_.end()) dirty_.insert(it->second.begin(), it->second.end());
  status_changed(env);
  post_pass();
}

void ControlLoop::post_pass() {
  if (reconcile_pending_) return;
  reconcile_pending_ = true;
  d_.executor->post(guarded([this] {
    reconcile_pending_ = false;
    reconcile();
  }));
}

void ControlLoop::arm_full_pass() {
  if (full_pass_timer_) d_.executor->cancel(full_pass_timer_);
  // The safety net re-reads everything; what it changes marks the views it concerns.
  full_pass_timer_ = d_.executor->after(kFullPassMs, guarded([this] {
    full_pass_timer_ = 0;
    full_dirty_ = true;
    post_pass();
  }));
}

void ControlLoop::retry_store() {
  if (store_retry_timer_) return;
  store_retry_timer_ = d_.executor->after(kStoreRetryMs, guarded([this] {
    store_retry_timer_ = 0;
    schedule_reconcile();
  }));
}

void ControlLoop::schedule_reconcile() {
  full_dirty_ = true;
  // Something outside any one environment changed (the catalog, a build, a database, an address
  // freed): every view may show it.
  status_changed_all();
  post_pass();
}

std::int64_t ControlLoop::reconcile_now() {
  BERTH_ASSERT_LOOP(*d_.executor);
  auto t0 = std::chrono::steady_clock::now();
  full_dirty_ = true;
  reconcile();
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
}

void ControlLoop::reconcile() {
  ++reconciles_;
  const auto t0 = std::chrono::steady_clock::now();
  const bool full = full_dirty_;
  std::set<std::string> names;
  if (full) {
    names.insert(up_.begin(), up_.end());
    for (const auto& [n, e] : envs_) names.insert(n);
    full_dirty_ = false;
    address_waiters_ = false;  // found again by this pass
    arm_full_pass();
  } else {
    names.swap(dirty_);
  }
  dirty_.clear();  // (a full pass visits them all)
  // The pass's writes (leases, records it forgets) are one transaction, committed before
  // anything it launched can run: a runtime lets an instance run only once on_created has
  // recorded it, which is posted and so comes after the pass.
  Status committed = d_.store->transaction([&]() -> Status {
    // After a failed commit the store may lack addresses memory holds: written again first.
    if (auto st = ipam_.resync(); !st.ok()) emit("", "error", "", -1, "", "re-writing IP leases: " + st.error().message);
    for (const auto& name : names) {
      if (!up_.count(name) && !envs_.count(name)) continue;  // down and nothing left of it
      const model::Environment* spec = up_.count(name) && catalog_ ? catalog_->find(name) : nullptr;
      reconcile_env(name, envs_[name], spec);
      if (!spec && envs_[name].apps.empty()) {
        envs_.erase(name);
        drop_copies(name);
        if (!catalog_ || !catalog_->find(name)) release_uid(name);
      }
    }
    return {};
  });
  if (!committed.ok()) {
    // None of the pass's writes may be stored; what it launched runs only once its record and
    // its address are (on_created), and the next pass writes the addresses again.
    ipam_.suspect();
    emit("", "error", "", -1, "", "writing a reconcile pass: " + committed.error().message);
    retry_store();
  }
  // The zone now; the views within kStatusPublishMs, those marked by what changed (the triggers of
  // this pass marked their environments; what the pass did marked its own): a full pass that
  // changes nothing rebuilds none.
  publish_zone();
  if (status_all_dirty_ || !status_dirty_.empty()) schedule_status_publish();
  last_pass_ = {std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count(),
                names.size(), full};
}

void ControlLoop::reconcile_env(const std::string& name, Env& env, const model::Environment* spec) {
  // Stop what is no longer wanted: the whole environment when down, else removed apps/ordinals.
  for (auto ait = env.apps.begin(); ait != env.apps.end();) {
    const model::AppSpec* aspec = spec && spec->runs(ait->first) ? spec->find(ait->first) : nullptr;
    auto& instances = ait->second.instances;
    for (auto it = instances.begin(); it != instances.end();) {
      Instance& inst = it->second;
      bool wanted = aspec && inst.key.ordinal < aspec->instances;
      if (wanted) { ++it; continue; }
      if (inst.phase == Phase::kRecovering) {  // stopped once its runtime has answered
        ++it;
        continue;
      }
      if (inst.exists()) {
        stop(inst, spec ? "scaled down or removed from the catalog" : "environment down");
        ++it;
        continue;
      }
      cancel_timers(inst);
      touched(name);
      if (inst.phase == Phase::kCompleted) forget_completion(inst);
      if (auto st = ipam_.release(inst.key); !st.ok())
        emit(name, "error", inst.key.app, inst.key.ordinal, inst.ip, st.error().message);
      else if (address_waiters_) schedule_reconcile();  // an instance waits for an address
      it = instances.erase(it);
    }
    if (instances.empty() && !aspec) ait = env.apps.erase(ait);
    else ++ait;
  }
  auto timer = follow_timers_.find(name);
  if (!spec || !spec->follow) {
    if (timer != follow_timers_.end()) {
      d_.executor->cancel(timer->second);
      follow_timers_.erase(timer);
    }
  } else if (timer == follow_timers_.end()) {
    follow_timers_[name] = d_.executor->after(spec->follow_interval_ms, [this, name] {
      follow_timers_.erase(name);
      if (up_.count(name)) (void)refresh(name);  // schedules the next one through reconcile
    });
  }
  if (!spec) return;
  for (const auto& aspec : spec->apps)
    if (spec->runs(aspec.app)) reconcile_app(name, env.apps[aspec.app], aspec, *spec);
}

int ControlLoop::ready_count(const std::string& env, const std::string& app) const {
  auto e = envs_.find(env);
  if (e == envs_.end()) return 0;
  auto a = e->second.apps.find(app);
  if (a == e->second.apps.end()) return 0;
  int n = 0;
  for (const auto& [o, inst] : a->second.instances)
    if ((inst.phase == Phase::kReady && inst.exists()) || inst.phase == Phase::kCompleted) ++n;
  return n;
}

bool ControlLoop::dependency_satisfied(const model::Dependency& dep, const model::Environment& espec) const {
  // A thin environment's dependency may be served by its base: gate on the instances that serve it.
  const std::string& where = espec.served_by.at(dep.app);
  const auto* serving = catalog_->find(where);
  const auto* target = serving ? serving->find(dep.app) : nullptr;
  // A job: every instance completed.
  int need = (dep.wait_all || (target && target->job)) && target ? target->instances : 1;
  return ready_count(where, dep.app) >= need;
}

std::string ControlLoop::waiting_message(const model::Dependency& dep, const model::Environment& espec) const {
  const std::string& where = espec.served_by.at(dep.app);
  auto e = envs_.find(where);
  std::string detail = "not started";
  if (e != envs_.end()) {
    if (auto a = e->second.apps.find(dep.app); a != e->second.apps.end()) {
      // The most telling instance: one with a probe result, else one with a message.
      for (const auto& [o, inst] : a->second.instances) {
        if (inst.phase == Phase::kReady) continue;
        if (!inst.last_probe.empty()) { detail = inst.last_probe; break; }
        if (inst.phase == Phase::kWaiting) detail = fmt::format("{} is {}", dep.app, inst.message);
        else if (inst.phase == Phase::kStarting || inst.phase == Phase::kLaunching) detail = "starting";
        else if (inst.phase == Phase::kRecovering) detail = inst.message;
        else if (!inst.message.empty()) detail = inst.message;
      }
    }
  }
  if (where != espec.name && !up_.count(where)) detail = fmt::format("{} is down", where);
  return fmt::format("waiting for {}{}{}: {}", dep.app, where != espec.name ? " in " + where : "",
                     dep.wait_all ? " (all instances)" : "", detail);
}

void ControlLoop::check_dependencies(const std::string& env, App& app, const model::AppSpec& spec,
                                     const model::Environment& espec) {
  bool running = false;
  for (const auto& [o, inst] : app.instances)
    if (inst.exists() && inst.phase != Phase::kStopping) running = true;
  for (const auto& dep : spec.depends_on) {
    bool ok = dependency_satisfied(dep, espec);
    bool was_ok = app.dep_ok[dep.app];
    app.dep_ok[dep.app] = ok;
    if (ok && app.failed_deps.erase(dep.app)) {
      emit(env, "dependency-recovered", spec.app, -1, "", fmt::format("dependency {} is ready again", dep.app));
      continue;
    }
    // Dependents are told only about a dependency that was satisfied while they ran.
    if (ok || !was_ok || !running || dep.on_failure == model::DependencyFailure::kIgnore) continue;
    app.failed_deps.insert(dep.app);
    emit(env, "dependency-failed", spec.app, -1, "",
         fmt::format("{}; policy {}", waiting_message(dep, espec), model::to_string(dep.on_failure)));
    for (auto& [o, inst] : app.instances) {
      if (dep.on_failure == model::DependencyFailure::kMark) {
        inst.degraded = true;
      } else if (inst.exists() && inst.phase != Phase::kStopping) {
        emit(env, "restarting", spec.app, o, inst.ip, "on_failure: restart of dependency " + dep.app);
        stop(inst, "dependency " + dep.app + " failed");
      }
    }
  }
  // Degraded marks last while a dependency with policy mark is still failed.
  bool marked = false;
  for (const auto& dep : spec.depends_on)
    if (dep.on_failure == model::DependencyFailure::kMark && app.failed_deps.count(dep.app)) marked = true;
  if (!marked)
    for (auto& [o, inst] : app.instances) inst.degraded = false;
}

void ControlLoop::reconcile_app(const std::string& env, App& app, const model::AppSpec& spec,
                                const model::Environment& espec) {
  check_dependencies(env, app, spec, espec);

  std::vector<std::string> waiting;
  for (const auto& dep : spec.depends_on)
    if (!dep.soft && !dependency_satisfied(dep, espec)) waiting.push_back(waiting_message(dep, espec));

  Artifact artifact;
  std::string build_wait;
  const bool build_ready = spec.source     ? prepare_build(env, app, spec, artifact, build_wait)
                           : spec.database ? prepare_database(env, app, spec, artifact, build_wait)
                                           : true;
  const std::string fingerprint = spec.fingerprint() + (artifact.build_id.empty() ? "" : ":" + artifact.build_id);
  if (build_ready) app.desired_fp = fingerprint;
  // Rolling replacement: at most one instance of the app is being replaced at a time, and the
  // next only once the replaced one is ready again — so a multi-instance app never has all its
  // instances down. (An ordinal's address and port cannot be held by old and new at once.)
  bool replacing = false;
  for (const auto& [o, inst] : app.instances)
    if (o < spec.instances && inst.replacing && !(inst.exists() && inst.phase == Phase::kReady)) replacing = true;
  for (auto& [o, inst] : app.instances)
    if (inst.replacing && inst.exists() && inst.phase == Phase::kReady) inst.replacing = false;
  for (int ordinal = 0; ordinal < spec.instances; ++ordinal) {
    Instance& inst = app.instances[ordinal];
    inst.key = {env, spec.app, ordinal};
    auto ip = ipam_.assign(inst.key);
    if (!ip.ok()) {
      address_waiters_ = true;
      inst.phase = Phase::kWaiting;
      inst.message = ip.error().message;
      continue;
    }
    std::string ip_text = model::format_ipv4(*ip);
    if (inst.exists()) {
      if (inst.phase == Phase::kStopping || inst.phase == Phase::kRecovering || inst.phase == Phase::kLaunching) continue;
      if (!build_ready) continue;  // the running build serves until the new one exists
      std::string why;
      if (inst.fingerprint != fingerprint) {
        // Same settings, other artifact: a new build, or a new copy of the database.
        const bool same_settings = inst.fingerprint.substr(0, inst.fingerprint.find(':')) == spec.fingerprint();
        why = !same_settings   ? "settings changed"
              : spec.database ? fmt::format("a new copy of {}", spec.database->standard)
                              : fmt::format("a new build ({})", artifact.build_id);
      }
      else if (inst.ip != ip_text) why = fmt::format("address moved to {}", ip_text);
      else if (inst.restart_requested) why = "restart requested";
      if (!why.empty() && !replacing) {
        replacing = true;
        inst.replacing = true;
        inst.restart_requested = false;
        emit(env, "restarting", spec.app, ordinal, inst.ip, why);
        stop(inst, why);
      }
      continue;
    }
    inst.ip = ip_text;
    if (inst.phase == Phase::kCompleted) {
      if (inst.fingerprint == fingerprint || !build_ready) continue;  // done, with these settings
      forget_completion(inst);  // its settings changed: it runs again
      inst.message.clear();
    }
    if (inst.phase == Phase::kStopping || inst.phase == Phase::kBackoff || inst.phase == Phase::kFailed) continue;
    if (!build_ready) {
      inst.phase = Phase::kWaiting;
      inst.message = build_wait;
      continue;
    }
    if (!waiting.empty()) {
      if (inst.phase != Phase::kWaiting || inst.message != waiting.front()) {
        bool first = inst.phase != Phase::kWaiting;
        inst.phase = Phase::kWaiting;
        inst.message = waiting.front();
        if (first && ordinal == 0) emit(env, "waiting", spec.app, -1, "", inst.message);
      }
      continue;
    }
    start(inst, spec, espec, artifact, fingerprint);
  }
}

ControlLoop::App* ControlLoop::find_app(const std::string& env, const std::string& app) {
  auto e = envs_.find(env);
  if (e == envs_.end()) return nullptr;
  auto a = e->second.apps.find(app);
  return a == e->second.apps.end() ? nullptr : &a->second;
}

void ControlLoop::forget_completion(Instance& inst) {
  inst.phase = Phase::kStopped;
  if (auto st = d_.store->erase_instance(inst.key); !st.ok())
    emit(inst.key.env, "error", inst.key.app, inst.key.ordinal, inst.ip, st.error().message);
}

Result<std::optional<Identity>> ControlLoop::identity_for(const std::string& env, const model::AppSpec& spec) {
  if (!d_.instance_ids || spec.user == "root") return std::optional<Identity>();
  if (!spec.user.empty()) {
    if (spec.container()) return std::optional<Identity>();  // the container's user, inside it
    auto who = lookup_user(spec.user);
    if (!who.ok()) return who.error().wrap(fmt::format("user of app '{}'", spec.app));
    return std::optional<Identity>(*who);
  }
  const IdRange& ids = *d_.instance_ids;
  if (auto it = env_uids_.find(env); it != env_uids_.end()) return std::optional<Identity>(Identity{it->second, ids.group()});
  std::set<std::uint32_t> taken;
  for (const auto& [e, uid] : env_uids_) taken.insert(uid);
  std::uint32_t uid = ids.first + 1;
  while (uid <= ids.last && taken.count(uid)) ++uid;
  if (uid > ids.last)
    return unavailable(fmt::format("every instance id of {}-{} is taken ({} environments); widen berth serve --instance-ids",
                                   ids.first, ids.last, env_uids_.size()));
  BERTH_TRY(d_.store->put_env_uid(env, uid));
  env_uids_[env] = uid;
  return std::optional<Identity>(Identity{uid, ids.group()});
}

void ControlLoop::release_uid(const std::string& env) {
  auto it = env_uids_.find(env);
  if (it == env_uids_.end()) return;
  if (d_.databases && d_.databases->has_copies(env)) return;  // kept data stays its own
  if (auto st = d_.store->erase_env_uid(env); !st.ok()) return emit(env, "error", "", -1, "", st.error().message);
  env_uids_.erase(it);
}

bool ControlLoop::prepare_database(const std::string& env, App& app, const model::AppSpec& spec, Artifact& out,
                                   std::string& wait) {
  if (!d_.databases) {
    wait = "cannot copy the standard: this daemon has no database manager";
    return false;
  }
  // A copy being reset, or replaced by one of another standard or version, is deleted and made
  // again at the same path: its server must be gone first, not run on a directory being deleted.
  const db::Copy* have = d_.databases->find_copy(env, spec.app);
  const bool reset = d_.databases->reset_requested(env, spec.app);
  const bool replaced = have && !(have->standard == spec.database->standard &&
                                  (spec.database->version == 0 || spec.database->version == have->version));
  if (reset || replaced) {
    bool running = false;
    for (auto& [o, inst] : app.instances)
      if (inst.exists()) {
        running = true;
        stop(inst, reset ? "its database copy is reset" : "its database copy is replaced");
      }
    if (running) {
      wait = "stopping the server before its copy is replaced";
      return false;
    }
    if (reset) {
      if (auto st = d_.databases->reset(env, spec.app); !st.ok()) {
        wait = st.error().message;
        return false;
      }
      emit(env, "db-reset", spec.app, -1, "", "copy discarded; a fresh one is being made");
    }
  }
  auto owner = identity_for(env, spec);
  if (!owner.ok()) {
    wait = owner.error().message;
    return false;
  }
  const db::CopyStatus cs = d_.databases->ensure_copy(env, spec.app, *spec.database, *owner);
  std::string state;
  switch (cs.state) {
    case db::CopyStatus::State::kReady: {
      const db::Copy& c = *cs.copy;
      out = {c.datadir, c.id(), ""};
      state = fmt::format("ready {}@{} {}", c.standard, c.version, c.created_at);
      if (app.src.db_announced != state)
        emit(env, "db-copied", spec.app, -1, "",
             fmt::format("{}@{} by {} in {}", c.standard, c.version, db::to_string(c.method), format_duration(c.clone_ms)));
      app.src.db_announced = state;
      return true;
    }
    case db::CopyStatus::State::kPreparing:
      wait = cs.message;
      state = "preparing";
      break;
    case db::CopyStatus::State::kFailed:
      wait = "no copy of the standard: " + cs.message;
      state = "failed " + cs.message;
      if (app.src.db_announced != state) emit(env, "db-copy-failed", spec.app, -1, "", cs.message);
      break;
  }
  app.src.db_announced = state;
  return false;
}

Status ControlLoop::reset_database(const std::string& env, const std::string& db, int version) {
  BERTH_ASSERT_LOOP(*d_.executor);
  if (!d_.databases) return unavailable("this daemon has no database manager");
  const model::Environment* espec = catalog_ ? catalog_->find(env) : nullptr;
  if (!espec) return not_found(fmt::format("no environment '{}' in the catalog", env));
  const model::AppSpec* spec = espec->find(db);
  if (!spec || !spec->database) return not_found(fmt::format("environment '{}' has no database '{}'", env, db));
  if (espec->served_by.at(db) != env)
    return conflict(fmt::format("environment '{}' does not run its own '{}': {} serves it", env, db, espec->served_by.at(db)));
  if (version && spec->database->version != version)
    return conflict(fmt::format("the catalog asks {}{} for '{}' in '{}'; to use version {} set "
                                "environments.{}.apps.{}.standard: {}@{}",
                                spec->database->standard,
                                spec->database->version ? fmt::format("@{}", spec->database->version) : " (the latest)", db,
                                env, version, env, db, spec->database->standard, version));
  if (d_.databases->making_copy(env, db))
    return conflict(fmt::format("the copy of {} for {} is being made; wait for it", db, env));
  bool running = false;
  if (App* app = find_app(env, db))
    for (auto& [o, inst] : app->instances)
      if (inst.exists()) {
        running = true;
        stop(inst, "its database copy is reset");
      }
  if (running) {
    // The server stops first; the copy is discarded once it is gone (prepare_database). The
    // request is kept with the copy, so a daemon killed before then still discards it.
    BERTH_TRY(d_.databases->request_reset(env, db));
  } else {
    BERTH_TRY(d_.databases->reset(env, db));
    emit(env, "db-reset", db, -1, "", "copy discarded; a fresh one is made at the next up");
  }
  schedule_reconcile(env);
  return {};
}

bool ControlLoop::prepare_build(const std::string& env, App& app, const model::AppSpec& spec, Artifact& out,
                                std::string& wait) {
  const model::SourceSpec& so = *spec.source;
  Source& src = app.src;
  const std::string ref_key = so.repo + "#" + spec.tag;
  if (src.ref_key != ref_key) {
    src = {};
    src.ref_key = ref_key;
  }
  if (!d_.builder) {
    wait = "cannot build: this daemon has no builder";
    return false;
  }
  if (src.commit.empty()) {
    if (!src.error.empty()) {
      wait = "cannot build: " + src.error;
      return false;
    }
    if (!src.resolving) {
      src.resolving = true;
      d_.builder->resolve(so.repo, spec.tag, [this, env, name = spec.app, ref_key](Result<std::string> r) {
        App* a = find_app(env, name);
        if (!a || a->src.ref_key != ref_key) return;
        a->src.resolving = false;
        if (r.ok()) {
          a->src.commit = *r;
        } else {
          a->src.error = r.error().message;
          emit(env, "build-failed", name, -1, "", r.error().message);
        }
        schedule_reconcile(env);
      });
    }
    wait = fmt::format("resolving {} in {}", spec.tag, so.repo);
    return false;
  }
  build::Request req{so.repo, src.commit, spec.build_type, so.command, so.artifact, so.timeout_ms, so.dockerfile};
  const build::Build& b = d_.builder->ensure(req);
  src.build_id = b.id;
  const std::string short_commit = src.commit.substr(0, 7);
  std::string state(build::to_string(b.state));
  if (src.announced != b.id + state) {
    src.announced = b.id + state;
    if (b.state == build::State::kSucceeded)
      emit(env, "built", spec.app, -1, "", fmt::format("{} at {} ({}) in {}", spec.tag, short_commit, spec.build_type,
                                                       format_duration(b.finished_at - b.started_at)));
    else if (b.state == build::State::kFailed)
      emit(env, "build-failed", spec.app, -1, "", fmt::format("{} at {} ({}): {}", spec.tag, short_commit, spec.build_type, b.error));
    else
      emit(env, "building", spec.app, -1, "", fmt::format("{} at {} ({})", spec.tag, short_commit, spec.build_type));
  }
  switch (b.state) {
    case build::State::kSucceeded:
      out = {b.artifact_path, b.id, src.commit};
      d_.builder->touch(b.id);
      return true;
    case build::State::kFailed:
      wait = fmt::format("build failed ({} at {}): {}", spec.tag, short_commit, b.error.substr(0, b.error.find('\n')));
      return false;
    default:
      wait = fmt::format("building {} at {} ({})", spec.tag, short_commit, spec.build_type);
      return false;
  }
}

}  // namespace berth::control
