#include "control/loop.h"

#include <algorithm>
#include <filesystem>
#include <utility>

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
  auto ipam = ipam::Ipam::create(with_reserved(resolved ? resolved->catalog.network() : model::NetworkSpec{}, d.reserved_pool_tail),
                                 *d.store, *d.clock);
  if (!ipam.ok()) return ipam.error();
  auto last_event = d.store->last_event_id();
  if (!last_event.ok()) return last_event.error();
  auto uids = d.store->load_env_uids();
  if (!uids.ok()) return uids.error();
  std::unique_ptr<ControlLoop> loop(new ControlLoop(d, std::move(ipam.value()), std::move(uids.value())));
  loop->events_.start_after(*last_event);  // (before anything can emit)
  loop->documents_ = std::move(docs.value());
  if (*stored) {
    loop->fleet_ = **stored;
    loop->fleet_version_ = (*stored)->version;
    loop->catalog_ = std::move(resolved->catalog);
    loop->planner_ = Planner(*loop->catalog_);
    loop->invalid_documents_ = std::move(resolved->invalid);
  }
  auto up = d.store->up_environments();
  if (!up.ok()) return up.error();
  loop->obs_.up.insert(up->begin(), up->end());

  // Instances that outlived the previous daemon: their runtimes re-attach to the live ones, and
  // until they have answered nothing else is started for those ordinals.
  auto* self = loop.get();
  for (auto* rt : d.runtimes) rt->set_listener(self);
  auto records = d.store->load_instances();
  if (!records.ok()) return records.error();
  std::map<std::string, std::vector<runtime::Record>> by_runtime;
  for (const auto& r : *records) {
    Supervisor& sup = loop->obs_.envs[r.key.env].apps[r.key.app].instances.try_emplace(r.key.ordinal, r.key).first->second;
    auto ip = loop->ipam_.lookup(r.key);
    sup.recorded({ip ? model::format_ipv4(*ip) : "", r.runtime, r.ref, r.fingerprint, r.restarts, r.ready_at});
    if (sup.state().phase == Phase::kCompleted) continue;
    if (!loop->fx_.runtime_named(r.runtime)) {
      // Kept as recorded (it may still run): never a second instance for this ordinal.
      loop->apply(sup, sup.unrecoverable(fmt::format("recorded in the {} runtime, which this daemon was not started with; "
                                                     "start berth serve with it (e.g. --docker-host) to recover it",
                                                     r.runtime)));
      continue;
    }
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
    loop->fx_.runtime_named(name)->recover(recs, loop->guarded([self](std::vector<runtime::Recovered> rs) { self->on_recovered(rs); }));
  loop->prepare_network();
  if (d.builder) {
    d.builder->set_on_change([self](const build::Build& b) {
      if (b.state == build::State::kSucceeded) {
        std::set<std::string> in_use;
        for (const auto& [n, env] : self->obs_.envs)
          for (const auto& [a, app] : env.apps) {
            in_use.insert(app.src.build_id);
            for (const auto& [o, sup] : app.instances) in_use.insert(sup.state().build_id);
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

ControlLoop::ControlLoop(const Deps& deps, ipam::Ipam ipam, std::map<std::string, std::uint32_t> env_uids)
    : d_(deps),
      ipam_(std::move(ipam)),
      events_(*deps.store, *deps.clock, deps.on_event),
      publisher_(*deps.executor, *deps.clock, planner_, deps.on_zone, deps.dns_ns_ip, [this] { status_due(); },
                 [this] { publisher_.publish_zone(view_inputs()); }),
      fx_(d_, ipam_, std::move(env_uids),
          {[this](const std::string& env, const std::string& type, const std::string& app, int ordinal,
                  const std::string& ip, const std::string& message) { emit(env, type, app, ordinal, ip, message); },
           [this] { schedule_reconcile(); },
           [this](const ipam::LeaseKey& key) { run_probe(key); },
           [this](const ipam::LeaseKey& key, const health::ProbeResult& r) { on_probe(key, r); },
           [this](const ipam::LeaseKey& key) {
             if (Supervisor* sup = find(key)) apply(*sup, sup->backoff_elapsed());
           }}) {
  for (auto* rt : d_.runtimes) slots_.set_limit(rt->name(), rt->capabilities().max_starting);
}

ControlLoop::~ControlLoop() {
  write_batch();  // a daemon that stops keeps its last events and records
  for (auto* rt : d_.runtimes) rt->set_listener(nullptr);
  if (d_.builder) d_.builder->set_on_change(nullptr);
  for (auto& [env, timer] : follow_timers_) d_.executor->cancel(timer);
  if (lifetime_timer_) d_.executor->cancel(lifetime_timer_);
  if (full_pass_timer_) d_.executor->cancel(full_pass_timer_);
  if (store_retry_timer_) d_.executor->cancel(store_retry_timer_);
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
  if (!obs_.up.count(env)) {
    BERTH_TRY(d_.store->set_up(env, true));
    obs_.up.insert(env);
    emit(env, "up", "", -1, "", "environment requested up");
  }
  schedule_reconcile(env);
  return {};
}

Status ControlLoop::down(const std::string& env, bool force) {
  BERTH_ASSERT_LOOP(*d_.executor);
  if (!force && catalog_ && obs_.up.count(env)) {
    // Thin environments that are up and fall through to it would lose what they call.
    std::vector<std::string> thin;
    for (const auto& e : catalog_->environments()) {
      if (e.name == env || !obs_.up.count(e.name)) continue;
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
  if (!obs_.up.count(env) && !obs_.envs.count(env)) {
    if (catalog_ && catalog_->find(env)) return {};  // already down
    return not_found(fmt::format("no environment '{}'", env));
  }
  if (obs_.up.count(env)) {
    BERTH_TRY(d_.store->set_up(env, false));
    obs_.up.erase(env);
    emit(env, "down", "", -1, "", "environment requested down");
    // Jobs that completed run again at the next up.
    if (auto e = obs_.envs.find(env); e != obs_.envs.end())
      for (auto& [name, app] : e->second.apps)
        for (auto& [o, sup] : app.instances) apply(sup, sup.rerun());
  }
  schedule_reconcile(env);
  return {};
}

Status ControlLoop::refresh(const std::string& env, bool quiet) {
  BERTH_ASSERT_LOOP(*d_.executor);
  if (!catalog_ || !catalog_->find(env)) return not_found(fmt::format("no environment '{}'", env));
  auto e = obs_.envs.find(env);
  int n = 0;
  if (e != obs_.envs.end())
    for (auto& [name, app] : e->second.apps)
      if (!app.src.ref_key.empty()) {
        // Resolved again; the current commit keeps running and stays the one shown meanwhile.
        app.src.reresolve = true;
        app.src.error.clear();
        ++n;
      }
  if (n > 0 && !quiet)
    emit(env, "refresh", "", -1, "", fmt::format("re-resolving the tags of {} app(s) built from source", n));
  schedule_reconcile(env);
  return {};
}

Status ControlLoop::restart(const std::string& env, const std::string& app_name, const std::string& user) {
  BERTH_ASSERT_LOOP(*d_.executor);
  const model::Environment* spec = catalog_ ? catalog_->find(env) : nullptr;
  if (!spec) return not_found(fmt::format("no environment '{}'", env));
  if (!obs_.up.count(env)) return conflict(fmt::format("environment '{}' is down; berth up {} starts it", env, env));
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
  // The request is kept with the records of the instances it replaces before it is
  // acknowledged (all or none): a daemon killed meanwhile still replaces them when it adopts them.
  std::vector<Supervisor*> chosen;
  if (auto e = obs_.envs.find(env); e != obs_.envs.end())
    for (auto& [name, app] : e->second.apps) {
      if (!app_name.empty() && name != app_name) continue;
      if (!spec->runs(name)) continue;
      for (auto& [o, sup] : app.instances) chosen.push_back(&sup);
    }
  const Status kept = d_.store->transaction([&]() -> Status {
    for (const Supervisor* sup : chosen)
      if (!sup->state().ref.empty())
        BERTH_TRY(d_.store->set_instance_fingerprint(sup->state().key, Supervisor::restart_marked(sup->state().fingerprint)));
    return {};
  });
  if (!kept.ok()) return kept;
  const int n = static_cast<int>(chosen.size());
  for (Supervisor* sup : chosen) apply(*sup, sup->restart());
  emit(env, "restart", app_name, -1, "", fmt::format("{} instance(s) restarted one at a time, by {}", n, user));
  schedule_reconcile(env);
  return {};
}

Result<std::vector<store::Event>> ControlLoop::events(const std::string& env, std::int64_t after_id, int limit) {
  write_batch();  // what a reader sees is stored: a restarted daemon never numbers another event the same
  return d_.store->events(env, after_id, limit);
}

// ---- what it shows -----------------------------------------------------------------------------

ViewInputs ControlLoop::view_inputs() const {
  ViewInputs in;
  in.catalog = catalog_ ? &*catalog_ : nullptr;
  in.planner = &planner_;
  in.observed = &obs_;
  in.ipam = &ipam_;
  in.builder = d_.builder;
  in.databases = d_.databases;
  in.resolver = fx_.resolver();
  in.resolver_note = fx_.resolver_note();
  if (runtime::Runtime* rt = fx_.runtime_named("process"); rt && !rt->capabilities().private_resolver)
    in.process_resolver_note = rt->capabilities().resolver_note;
  return in;
}

void ControlLoop::status_due() {
  // A pass already queued publishes when it ends (what it changes is shown with the rest). Not
  // a new timer: a loop under steady load always has a pass queued, and re-arming each time
  // held every view back for as long as the load lasted (15 s seen at 6,000 instances).
  if (reconcile_pending_) {
    publish_after_pass_ = true;
    return;
  }
  publish_status();
}

void ControlLoop::publish_status(const std::string& only) {
  BERTH_ASSERT_LOOP(*d_.executor);
  publisher_.publish_status(view_inputs(), only);
  deliver_events();
}

void ControlLoop::deliver_events() {
  write_batch();
  if (!publisher_.pending()) return events_.deliver(nullptr);  // every view is published
  events_.deliver([this](const std::string& env) { return publisher_.shown(env); });
}

Status ControlLoop::write_records() {
  // Each write is its own: one that fails (its record gone meanwhile, say) does not undo the others.
  for (const auto& w : record_writes_) {
    const Status st = w.erase ? d_.store->erase_instance(w.key) : d_.store->set_instance_ready(w.key, w.ready_at);
    if (!st.ok()) emit(w.key.env, "error", w.key.app, w.key.ordinal, "", st.error().message);
  }
  record_writes_.clear();
  return {};
}

void ControlLoop::write_batch() {
  if (!record_writes_.empty())
    if (auto st = d_.store->transaction([&] { return write_records(); }); !st.ok())
      emit("", "error", "", -1, "", "writing instance records: " + st.error().message);
  events_.write();  // (its own transaction: each event knows whether it was stored)
}
// ---- reconcile --------------------------------------------------------------------------------

void ControlLoop::schedule_reconcile(const std::string& env) {
  dirty_.insert(env);
  for (const auto& thin : planner_.thin_of(env)) dirty_.insert(thin);
  publisher_.status_changed(env);
  post_pass();
}

void ControlLoop::schedule_reconcile(const std::string& env, const std::string& app) {
  dirty_apps_[env].insert(app);
  for (const auto& [e, a] : planner_.dependents(env, app)) dirty_apps_[e].insert(a);
  publisher_.status_changed(env);
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
  publisher_.all_changed();
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
  std::set<std::string> names;  // visited whole
  std::map<std::string, std::set<std::string>> apps;  // visited app by app
  if (full) {
    names.insert(obs_.up.begin(), obs_.up.end());
    for (const auto& [n, e] : obs_.envs) names.insert(n);
    full_dirty_ = false;
    address_waiters_ = false;  // found again by this pass
    arm_full_pass();
  } else {
    names.swap(dirty_);
    apps.swap(dirty_apps_);
    // An app's own visit is enough while its environment runs it; otherwise (the environment
    // down, the app scaled away or gone) the environment is visited whole, to stop what is left.
    for (auto it = apps.begin(); it != apps.end();) {
      const PlannedEnv* plan = planner_.desired(it->first, obs_.up);
      bool whole = names.count(it->first) > 0 || !plan;
      for (const auto& a : it->second) whole = whole || !plan->find(a);
      if (whole) {
        names.insert(it->first);
        it = apps.erase(it);
      } else {
        ++it;
      }
    }
  }
  dirty_.clear();  // (a full pass visits them all)
  dirty_apps_.clear();
  // The pass's writes (leases, records it forgets) are one transaction, committed before
  // anything it launched can run: a runtime lets an instance run only once on_created has
  // recorded it, which is posted and so comes after the pass.
  Status committed = d_.store->transaction([&]() -> Status {
    // After a failed commit the store may lack addresses memory holds: written again first.
    if (auto st = ipam_.resync(); !st.ok()) emit("", "error", "", -1, "", "re-writing IP leases: " + st.error().message);
    (void)write_records();  // older than anything this pass writes
    for (const auto& name : names) {
      if (!obs_.up.count(name) && !obs_.envs.count(name)) continue;  // down and nothing left of it
      const PlannedEnv* plan = planner_.desired(name, obs_.up);
      reconcile_env(name, obs_.envs[name], plan);
      if (!plan && obs_.envs[name].apps.empty()) {
        obs_.envs.erase(name);
        drop_copies(name);
        if (!catalog_ || !catalog_->find(name))
          if (auto st = fx_.release_uid(name); !st.ok()) emit(name, "error", "", -1, "", st.error().message);
      }
    }
    for (const auto& [name, which] : apps) {
      const PlannedEnv* plan = planner_.desired(name, obs_.up);
      EnvState& env = obs_.envs[name];
      for (const auto& app : which) reconcile_app(name, env.apps[app], *plan->find(app), *plan->spec);
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
  start_next_in_line();
  if (full) serve_database_holds();
  publisher_.publish_zone(view_inputs());
  if (std::exchange(publish_after_pass_, false)) publish_status();
  else if (publisher_.pending()) publisher_.schedule();
  last_pass_ = {std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count(),
                names.size() + apps.size(), full};
}

void ControlLoop::reconcile_env(const std::string& name, EnvState& env, const PlannedEnv* plan) {
  // Stop what is no longer wanted: the whole environment when down, else removed apps/ordinals.
  for (auto ait = env.apps.begin(); ait != env.apps.end();) {
    const PlannedApp* papp = plan ? plan->find(ait->first) : nullptr;
    auto& instances = ait->second.instances;
    for (auto it = instances.begin(); it != instances.end();) {
      Supervisor& sup = it->second;
      const auto& s = sup.state();
      if (papp && s.key.ordinal < papp->spec->instances) { ++it; continue; }  // wanted
      if (s.phase == Phase::kRecovering) {  // stopped once its runtime has answered
        ++it;
        continue;
      }
      if (s.exists()) {
        apply(sup, sup.stop(plan ? "scaled down or removed from the catalog" : "environment down"));
        ++it;
        continue;
      }
      fx_.cancel(s.key);
      publisher_.touched(name);
      apply(sup, sup.rerun());  // a completed job's record goes
      if (auto st = ipam_.release(s.key); !st.ok())
        emit(name, "error", s.key.app, s.key.ordinal, s.ip, st.error().message);
      else if (address_waiters_) schedule_reconcile();  // an instance waits for an address
      it = instances.erase(it);
    }
    if (instances.empty() && !papp) ait = env.apps.erase(ait);
    else ++ait;
  }
  const model::Environment* spec = plan ? plan->spec : nullptr;
  auto timer = follow_timers_.find(name);
  if (!spec || !spec->follow) {
    if (timer != follow_timers_.end()) {
      d_.executor->cancel(timer->second);
      follow_timers_.erase(timer);
    }
  } else if (timer == follow_timers_.end()) {
    follow_timers_[name] = d_.executor->after(spec->follow_interval_ms, [this, name] {
      follow_timers_.erase(name);
      // Quiet: a follow tells only a moved branch (event `building`), not each poll.
      if (obs_.up.count(name)) (void)refresh(name, /*quiet=*/true);  // schedules the next one through reconcile
    });
  }
  if (!plan) return;
  for (const auto& papp : plan->apps) reconcile_app(name, env.apps[papp.spec->app], papp, *spec);
}

void ControlLoop::reconcile_app(const std::string& env, AppState& app, const PlannedApp& plan, const model::Environment& espec) {
  const model::AppSpec& spec = *plan.spec;
  // Its dependencies' health: failures it ran through get their policy.
  std::vector<bool> ok(plan.gates.size());
  for (std::size_t i = 0; i < plan.gates.size(); ++i) ok[i] = obs_.satisfied(plan.gates[i]);
  auto watched = app.deps.check(spec, ok, app.instances, [&](std::size_t i) { return obs_.waiting_message(plan.gates[i], env); });
  for (const auto& e : watched.events) emit(env, e.type, spec.app, -1, "", e.message);
  for (const auto& a : watched.actions) {
    Supervisor& sup = app.instances.at(a.ordinal);
    if (a.kind == Action::Kind::kDegrade) {
      sup.mark_degraded(a.on);
    } else {
      emit(env, "restarting", spec.app, a.ordinal, sup.state().ip, "on_failure: restart of dependency " + a.why);
      apply(sup, sup.stop("dependency " + a.why + " failed"));
    }
  }

  AppTarget target;
  target.spec = &spec;
  for (std::size_t i = 0; i < plan.gates.size(); ++i)
    if (!plan.gates[i].dep->soft && !ok[i]) {
      target.gate_wait = obs_.waiting_message(plan.gates[i], env);
      break;
    }
  Artifact artifact;
  target.artifact_ready = spec.source     ? prepare_build(env, app, spec, artifact, target.artifact_wait)
                          : spec.database ? prepare_database(env, app, spec, artifact, target.artifact_wait)
                                          : true;
  target.artifact_id = artifact.build_id;
  target.fingerprint = spec.fingerprint() + (artifact.build_id.empty() ? "" : ":" + artifact.build_id);
  if (target.artifact_ready) app.desired_fp = target.fingerprint;
  target.addresses.reserve(static_cast<std::size_t>(spec.instances));
  for (int ordinal = 0; ordinal < spec.instances; ++ordinal) {
    Supervisor& sup = app.instances.try_emplace(ordinal, ipam::LeaseKey{env, spec.app, ordinal}).first->second;
    auto ip = ipam_.assign(sup.state().key);
    if (!ip.ok()) {
      address_waiters_ = true;
      target.addresses.emplace_back(ip.error());
      continue;
    }
    std::string text = model::format_ipv4(*ip);
    if (!sup.state().exists()) sup.set_ip(text);
    target.addresses.emplace_back(std::move(text));
  }
  for (const Action& a : control::reconcile_app(target, app.instances)) {
    Supervisor& sup = app.instances.at(a.ordinal);
    switch (a.kind) {
      case Action::Kind::kStart: start(sup, spec, espec, artifact, target.fingerprint); break;
      case Action::Kind::kReplace: apply(sup, sup.replace(a.why)); break;
      case Action::Kind::kReplaced: sup.replaced(); break;
      case Action::Kind::kWait: apply(sup, sup.wait(a.why, a.announce)); break;
      case Action::Kind::kRerun: apply(sup, sup.rerun()); break;
      case Action::Kind::kRestart:
      case Action::Kind::kDegrade: break;  // (DependencyWatch's)
    }
  }
}

bool ControlLoop::prepare_database(const std::string& env, AppState& app, const model::AppSpec& spec, Artifact& out,
                                   std::string& wait) {
  if (!d_.databases) {
    wait = "cannot copy the standard: this daemon has no database manager";
    return false;
  }
  // A rollout snapshotting the copy or putting it back: its server stops and stays stopped.
  if (auto why = d_.databases->held(env, spec.app)) {
    bool running = false;
    for (auto& [o, sup] : app.instances)
      if (sup.state().exists()) {
        running = true;
        apply(sup, sup.stop("its database copy is held by a " + *why));
      }
    if (!running) d_.databases->server_down(env, spec.app);
    wait = *why;
    return false;
  }
  // A copy being reset, or replaced by one of another standard or version, is deleted and made
  // again at the same path: its server must be gone first, not run on a directory being deleted.
  const db::Copy* have = d_.databases->find_copy(env, spec.app);
  const bool reset = d_.databases->reset_requested(env, spec.app);
  const bool replaced = have && !(have->standard == spec.database->standard &&
                                  (spec.database->version == 0 || spec.database->version == have->at()));
  if (reset || replaced) {
    bool running = false;
    for (auto& [o, sup] : app.instances)
      if (sup.state().exists()) {
        running = true;
        apply(sup, sup.stop(reset ? "its database copy is reset" : "its database copy is replaced"));
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
  auto owner = fx_.identity_for(env, spec);
  if (!owner.ok()) {
    wait = owner.error().message;
    return false;
  }
  const db::CopyStatus cs = d_.databases->ensure_copy(env, spec.app, *spec.database, *owner);
  std::string state;
  switch (cs.state) {
    case db::CopyStatus::State::kReady: {
      const db::Copy& c = *cs.copy;
      if (!d_.db_image.empty()) {
        // Its server runs in a container, on a volume filled from the copy's archive. A server
        // still running as a process on the copy (a daemon started before with processes)
        // stops first: the archive must not be taken of a directory a server writes to.
        bool process = false;
        for (auto& [o, sup] : app.instances)
          if (sup.state().exists() && sup.state().runtime_name == "process") {
            process = true;
            apply(sup, sup.stop("its server moves into a container (--db-image)"));
          }
        if (process) {
          wait = "stopping the server's process before it moves into a container";
          return false;
        }
        const db::CopyStatus as = d_.databases->ensure_seed(env, spec.app, Identity{kDbContainerUid, kDbContainerUid});
        if (as.state != db::CopyStatus::State::kReady) {
          wait = as.state == db::CopyStatus::State::kFailed ? "no archive of the copy: " + as.message : as.message;
          if (as.state == db::CopyStatus::State::kFailed && app.src.db_announced != "failed " + as.message)
            emit(env, "db-copy-failed", spec.app, -1, "", as.message);
          app.src.db_announced = as.state == db::CopyStatus::State::kFailed ? "failed " + as.message : "preparing";
          return false;
        }
      }
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
  AppState* app = obs_.find_app(env, db);
  bool running = false;
  if (app)
    for (const auto& [o, sup] : app->instances) running |= sup.state().exists();
  if (running) {
    // The server stops first; the copy is discarded once it is gone (prepare_database). The
    // request is kept with the copy (before anything stops), so a daemon killed before then
    // still discards it.
    BERTH_TRY(d_.databases->request_reset(env, db));
    for (auto& [o, sup] : app->instances) apply(sup, sup.stop("its database copy is reset"));
  } else {
    BERTH_TRY(d_.databases->reset(env, db));
    emit(env, "db-reset", db, -1, "", "copy discarded; a fresh one is made at the next up");
  }
  schedule_reconcile(env);
  return {};
}

void ControlLoop::serve_database_holds() {
  if (!d_.databases) return;
  for (const auto& [env, db] : d_.databases->holds()) {
    if (obs_.up.count(env)) continue;  // reconciled: prepare_database() stops its server
    const AppState* app = obs_.find_app(env, db);
    bool running = false;
    if (app)
      for (const auto& [o, sup] : app->instances) running |= sup.state().exists();
    if (!running) d_.databases->server_down(env, db);
  }
}

Result<const db::Rollout*> ControlLoop::rollout_database(const std::string& standard, int version,
                                                         const db::RolloutOptions& options, bool automatic) {
  BERTH_ASSERT_LOOP(*d_.executor);
  if (!d_.databases) return unavailable("this daemon has no database manager");
  std::vector<db::RolloutTarget> targets;
  if (catalog_)
    for (const auto& e : catalog_->environments())
      for (const auto& a : e.apps) {
        if (!a.database || a.database->standard != standard || !e.runs(a.app)) continue;
        const db::Copy* c = d_.databases->find_copy(e.name, a.app);
        if (!c || c->standard != standard) continue;  // made at its first up, of the version it asks
        if (automatic && a.database->rollout != "auto") continue;
        db::RolloutTarget t;
        t.env = e.name;
        t.db = a.app;
        t.serving = obs_.up.count(e.name) > 0;
        t.account = {a.database->user, a.database->password};
        if (a.database->version)
          t.skip = fmt::format("pinned to {}@{} in the catalog", standard, a.database->version);
        else if (a.database->rollout == "none")
          t.skip = "rollout: none in the catalog";
        else if (!d_.db_image.empty())
          t.skip = "its server runs in a container on a volume (--db-image): rollouts reach copies a server runs on "
                   "directly, for now";
        targets.push_back(std::move(t));
      }
  if (automatic && targets.empty()) return nullptr;
  return d_.databases->rollout(standard, version, options, targets);
}

std::optional<db::ServerSource> ControlLoop::database_server(const std::string& env, const model::AppSpec& a, bool& between) const {
  between = false;
  const AppState* app = obs_.find_app(env, a.app);
  if (!app || !a.database) return std::nullopt;
  bool exists = false;
  for (const auto& [o, sup] : app->instances) {
    const auto& st = sup.state();
    exists |= st.exists();
    if (st.serving() && !st.ip.empty() && a.ports.count("sql"))
      return db::ServerSource{fmt::format("{}:{}", st.ip, a.ports.at("sql")), a.database->user, a.database->password};
  }
  between = exists;
  return std::nullopt;
}

Result<std::shared_ptr<const db::Job>> ControlLoop::migrate_database(const std::string& env, const std::string& db,
                                                                     std::vector<db::Migration> files,
                                                                     const db::ReleaseOptions& options) {
  BERTH_ASSERT_LOOP(*d_.executor);
  if (!d_.databases) return unavailable("this daemon has no database manager");
  const model::Environment* e = catalog_ ? catalog_->find(env) : nullptr;
  if (!e) return not_found(fmt::format("no environment '{}'", env));
  const model::AppSpec* a = nullptr;
  for (const auto& x : e->apps)
    if (x.app == db && x.database) a = &x;
  if (!a) return not_found(fmt::format("environment '{}' has no database '{}'", env, db));
  bool between = false;
  auto live = database_server(env, *a, between);
  if (between) return conflict(fmt::format("{}'s server of {} is starting or stopping: try again once it serves", env, db));
  if (!live && !d_.db_image.empty())
    return conflict(fmt::format("{}'s server of {} runs in a container on a volume (--db-image) and is not running: "
                                "its own migrations go through its server (berth up {})",
                                env, db, env));
  return d_.databases->migrate(env, db, std::move(files), options, live, {a->database->user, a->database->password});
}

Result<const db::DriftCheck*> ControlLoop::check_database_drift(const std::string& env) {
  BERTH_ASSERT_LOOP(*d_.executor);
  if (!d_.databases) return unavailable("this daemon has no database manager");
  if (!env.empty() && (!catalog_ || !catalog_->find(env)))
    return not_found(fmt::format("no environment '{}'", env));
  std::vector<db::DriftTarget> targets;
  if (catalog_)
    for (const auto& e : catalog_->environments()) {
      if (!env.empty() && e.name != env) continue;
      for (const auto& a : e.apps) {
        if (!a.database || !e.runs(a.app) || !d_.databases->find_copy(e.name, a.app)) continue;
        db::DriftTarget t;
        t.env = e.name;
        t.db = a.app;
        bool between = false;
        t.live = database_server(e.name, a, between);
        if (between)
          t.skip = "its server is starting or stopping: check again once it serves";
        else if (!t.live && !d_.db_image.empty())
          t.skip = "its server runs in a container on a volume (--db-image), and is not running: it is read through its server only";
        targets.push_back(std::move(t));
      }
    }
  return d_.databases->check_drift(targets);
}

bool ControlLoop::prepare_build(const std::string& env, AppState& app, const model::AppSpec& spec, Artifact& out,
                                std::string& wait) {
  const model::SourceSpec& so = *spec.source;
  SourceState& src = app.src;
  const std::string ref_key = so.repo + "#" + spec.tag;
  if (src.ref_key != ref_key) {
    src = {};
    src.ref_key = ref_key;
  }
  if (!d_.builder) {
    wait = "cannot build: this daemon has no builder";
    return false;
  }
  if (src.commit.empty() && !src.error.empty()) {
    wait = "cannot build: " + src.error;
    return false;
  }
  if ((src.commit.empty() || src.reresolve) && !src.resolving) {
    src.resolving = true;
    src.reresolve = false;
    d_.builder->resolve(so.repo, spec.tag, [this, env, name = spec.app, ref_key](Result<std::string> r) {
      AppState* a = obs_.find_app(env, name);
      if (!a || a->src.ref_key != ref_key) return;
      a->src.resolving = false;
      if (r.ok()) {
        a->src.commit = *r;
      } else if (a->src.commit.empty()) {
        a->src.error = r.error().message;
        emit(env, "build-failed", name, -1, "", r.error().message);
      } else {
        // A refresh that cannot resolve leaves what runs alone.
        emit(env, "build-failed", name, -1, "",
             fmt::format("{}; {} keeps running at {}", r.error().message, name, a->src.commit.substr(0, 7)));
      }
      schedule_reconcile(env);
    });
  }
  if (src.commit.empty()) {
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
