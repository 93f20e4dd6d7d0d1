#include "control/loop.h"

#include <algorithm>
#include <filesystem>

#include <sys/wait.h>

#include <fmt/format.h>

#include "base/text.h"

namespace berth::control {
namespace fs = std::filesystem;

namespace {

std::string env_var_name(std::string s) {
  for (auto& c : s) c = c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}


}  // namespace

Result<std::unique_ptr<ControlLoop>> ControlLoop::create(const Deps& d) {
  auto stored = d.store->load_catalog();
  if (!stored.ok()) return stored.error();
  std::optional<model::Catalog> catalog;
  if (*stored) {
    auto parsed = model::Catalog::parse((*stored)->text, (*stored)->filename, (*stored)->base_dir);
    if (!parsed.ok()) return parsed.error().wrap("the stored catalog no longer parses");
    catalog = std::move(parsed.value());
  }
  auto ipam = ipam::Ipam::create(catalog ? catalog->network() : model::NetworkSpec{}, *d.store, *d.clock);
  if (!ipam.ok()) return ipam.error();
  std::unique_ptr<ControlLoop> loop(new ControlLoop(d, std::move(ipam.value())));
  loop->catalog_ = std::move(catalog);
  auto up = d.store->up_environments();
  if (!up.ok()) return up.error();
  loop->up_.insert(up->begin(), up->end());

  // Adopt the instances that outlived the previous daemon; forget the ones that did not.
  auto records = d.store->load_instances();
  if (!records.ok()) return records.error();
  for (const auto& r : *records) {
    runtime::Handle h{r.pid, r.pgid, r.start_ticks};
    auto key = r.key;
    auto* self = loop.get();
    bool alive = d.runtime->adopt(h, [self, key, pid = r.pid](const runtime::Exit& e) { self->on_exit(key, pid, e); });
    if (!alive) {
      BERTH_TRY(d.store->erase_instance(r.key));
      continue;
    }
    Instance& inst = loop->envs_[r.key.env].apps[r.key.app].instances[r.key.ordinal];
    inst.key = r.key;
    if (auto ip = loop->ipam_.lookup(r.key)) inst.ip = model::format_ipv4(*ip);
    inst.proc = h;
    inst.fingerprint = r.fingerprint;
    inst.restarts = r.restarts;
    inst.started_before = true;
    inst.phase = Phase::kStarting;
    inst.started_mono = d.clock->monotonic_ms();
    inst.message = fmt::format("adopted pid {} after a daemon restart", r.pid);
    loop->emit(r.key.env, "adopted", r.key.app, r.key.ordinal, inst.ip, inst.message);
    if (const auto* spec = loop->spec_of(r.key)) {
      inst.tracker.emplace(spec->health, inst.started_mono);
      loop->schedule_probe(inst, *spec);
    }
  }
  if (d.builder) {
    auto* self = loop.get();
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
  return loop;
}

ControlLoop::~ControlLoop() {
  if (d_.builder) d_.builder->set_on_change(nullptr);
  for (auto& [env, timer] : follow_timers_) d_.executor->cancel(timer);
  for (auto& [n, env] : envs_)
    for (auto& [a, app] : env.apps)
      for (auto& [o, inst] : app.instances) cancel_timers(inst);
}

// ---- API operations ---------------------------------------------------------------------------

Status ControlLoop::apply(const std::string& text, const std::string& filename, const std::string& base_dir) {
  auto parsed = model::Catalog::parse(text, filename, base_dir);
  if (!parsed.ok()) return parsed.error();
  // Removing an environment that is up would strand its instances without a spec: refuse.
  for (const auto& e : up_)
    if (!parsed->find(e))
      return conflict(fmt::format("environment '{}' is up but the new catalog does not define it; "
                                  "run `berth down {}` first", e, e));
  BERTH_TRY(d_.store->save_catalog({text, filename, d_.clock->wall_ms(), base_dir}));
  catalog_ = std::move(parsed.value());
  ipam_.set_network(catalog_->network());
  dns_all_dirty_ = true;
  for (const auto& e : up_) emit(e, "applied", "", -1, "", fmt::format("catalog {} applied", filename));
  schedule_reconcile();
  return {};
}

Status ControlLoop::up(const std::string& env) {
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
  schedule_reconcile();
  return {};
}

Status ControlLoop::down(const std::string& env) {
  if (!up_.count(env) && !envs_.count(env)) {
    if (catalog_ && catalog_->find(env)) return {};  // already down
    return not_found(fmt::format("no environment '{}'", env));
  }
  if (up_.count(env)) {
    BERTH_TRY(d_.store->set_up(env, false));
    up_.erase(env);
    emit(env, "down", "", -1, "", "environment requested down");
  }
  schedule_reconcile();
  return {};
}

Status ControlLoop::refresh(const std::string& env) {
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
  emit(env, "refresh", "", -1, "", fmt::format("re-resolving the tags of {} app(s) built from source", n));
  schedule_reconcile();
  return {};
}

Result<std::vector<store::Event>> ControlLoop::events(const std::string& env, std::int64_t after_id, int limit) const {
  return d_.store->events(env, after_id, limit);
}

// ---- reconcile --------------------------------------------------------------------------------

void ControlLoop::schedule_reconcile() {
  if (reconcile_pending_) return;
  reconcile_pending_ = true;
  d_.executor->post([this] {
    reconcile_pending_ = false;
    reconcile();
  });
}

std::int64_t ControlLoop::reconcile_now() {
  auto t0 = std::chrono::steady_clock::now();
  reconcile();
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
}

void ControlLoop::reconcile() {
  ++reconciles_;
  std::set<std::string> names(up_.begin(), up_.end());
  for (const auto& [n, e] : envs_) names.insert(n);
  for (const auto& name : names) {
    const model::Environment* spec = up_.count(name) && catalog_ ? catalog_->find(name) : nullptr;
    reconcile_env(name, envs_[name], spec);
    if (!spec && envs_[name].apps.empty()) envs_.erase(name);
  }
  publish_zone();
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
      if (inst.proc) {
        stop(inst, spec ? "scaled down or removed from the catalog" : "environment down");
        ++it;
        continue;
      }
      cancel_timers(inst);
      dns_dirty_.insert(name);
      if (auto st = ipam_.release(inst.key); !st.ok())
        emit(name, "error", inst.key.app, inst.key.ordinal, inst.ip, st.error().message);
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
    if (inst.phase == Phase::kReady && inst.proc) ++n;
  return n;
}

bool ControlLoop::dependency_satisfied(const model::Dependency& dep, const model::Environment& espec) const {
  // A thin environment's dependency may be served by its base: gate on the instances that serve it.
  const std::string& where = espec.served_by.at(dep.app);
  const auto* serving = catalog_->find(where);
  const auto* target = serving ? serving->find(dep.app) : nullptr;
  int need = dep.wait_all && target ? target->instances : 1;
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
        else if (inst.phase == Phase::kStarting) detail = "starting";
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
    if (inst.proc && inst.phase != Phase::kStopping) running = true;
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
      } else if (inst.proc && inst.phase != Phase::kStopping) {
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
  const bool build_ready = !spec.source || prepare_build(env, app, spec, artifact, build_wait);
  const std::string fingerprint = spec.fingerprint() + (artifact.build_id.empty() ? "" : ":" + artifact.build_id);
  if (build_ready) app.desired_fp = fingerprint;
  // Rolling replacement: at most one instance of the app is being replaced at a time, and the
  // next only once the replaced one is ready again — so a multi-instance app never has all its
  // instances down. (An ordinal's address and port cannot be held by old and new at once.)
  bool replacing = false;
  for (const auto& [o, inst] : app.instances)
    if (o < spec.instances && inst.replacing && !(inst.proc && inst.phase == Phase::kReady)) replacing = true;
  for (auto& [o, inst] : app.instances)
    if (inst.replacing && inst.proc && inst.phase == Phase::kReady) inst.replacing = false;
  for (int ordinal = 0; ordinal < spec.instances; ++ordinal) {
    Instance& inst = app.instances[ordinal];
    inst.key = {env, spec.app, ordinal};
    auto ip = ipam_.assign(inst.key);
    if (!ip.ok()) {
      inst.phase = Phase::kWaiting;
      inst.message = ip.error().message;
      continue;
    }
    std::string ip_text = model::format_ipv4(*ip);
    if (inst.proc) {
      if (inst.phase == Phase::kStopping) continue;
      if (!build_ready) continue;  // the running build serves until the new one exists
      std::string why;
      if (inst.fingerprint != fingerprint) why = "settings changed";
      else if (inst.ip != ip_text) why = fmt::format("address moved to {}", ip_text);
      if (!why.empty() && !replacing) {
        replacing = true;
        inst.replacing = true;
        emit(env, "restarting", spec.app, ordinal, inst.ip, why);
        stop(inst, why);
      }
      continue;
    }
    inst.ip = ip_text;
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
        schedule_reconcile();
      });
    }
    wait = fmt::format("resolving {} in {}", spec.tag, so.repo);
    return false;
  }
  build::Request req{so.repo, src.commit, spec.build_type, so.command, so.artifact, so.timeout_ms};
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

// ---- instances --------------------------------------------------------------------------------

void ControlLoop::start(Instance& inst, const model::AppSpec& spec, const model::Environment& espec,
                        const Artifact& artifact, const std::string& fingerprint) {
  const auto& key = inst.key;
  std::map<std::string, std::string> vars = {
      {"tag", spec.tag}, {"build_type", spec.build_type}, {"env", key.env},
      {"app", key.app}, {"ordinal", std::to_string(key.ordinal)}, {"ip", inst.ip}, {"artifact", artifact.path}};
  runtime::InstanceSpec rs;
  rs.env = key.env;
  rs.app = key.app;
  rs.ordinal = key.ordinal;
  rs.env_vars = spec.env;
  for (const auto& [name, port] : spec.ports) {
    vars["port." + name] = std::to_string(port);
    rs.env_vars["BERTH_PORT_" + env_var_name(name)] = std::to_string(port);
  }
  rs.command = model::substitute(spec.command, vars);
  rs.env_vars["BERTH_ENV"] = key.env;
  rs.env_vars["BERTH_APP"] = key.app;
  rs.env_vars["BERTH_INSTANCE"] = std::to_string(key.ordinal);
  rs.env_vars["BERTH_IP"] = inst.ip;
  rs.env_vars["BERTH_TAG"] = spec.tag;
  rs.env_vars["BERTH_BUILD_TYPE"] = spec.build_type;
  rs.env_vars["BERTH_NAME"] = fmt::format("{}.{}.{}.{}", key.ordinal, key.app, key.env, catalog_->dns().zone);
  rs.env_vars["BERTH_DOMAIN"] = fmt::format("{}.{}", key.env, catalog_->dns().zone);
  rs.env_vars["BERTH_HOME"] = d_.data_dir;
  if (!artifact.path.empty()) {
    rs.env_vars["BERTH_ARTIFACT"] = artifact.path;
    rs.env_vars["BERTH_COMMIT"] = artifact.commit;
  }
  if (!d_.dns_address.empty()) rs.env_vars["BERTH_DNS"] = d_.dns_address;
  // Where the dependencies are: every instance's stable address, per named port.
  std::string dep_names;
  for (const auto& dep : spec.depends_on) {
    dep_names += (dep_names.empty() ? "" : ",") + dep.app;
    const std::string& where = espec.served_by.at(dep.app);
    const auto* serving = catalog_->find(where);
    const auto* dspec = serving ? serving->find(dep.app) : nullptr;
    if (!dspec) continue;
    for (const auto& [pname, port] : dspec->ports) {
      std::string addrs;
      for (int o = 0; o < dspec->instances; ++o) {
        auto ip = ipam_.lookup({where, dep.app, o});
        if (ip) addrs += fmt::format("{}{}:{}", addrs.empty() ? "" : ",", model::format_ipv4(*ip), port);
      }
      rs.env_vars[fmt::format("BERTH_DEP_{}_{}", env_var_name(dep.app), env_var_name(pname))] = addrs;
    }
  }
  rs.env_vars["BERTH_DEPS"] = dep_names;

  std::error_code ec;
  fs::path dir = fs::path(d_.data_dir) / "logs" / key.env;
  fs::create_directories(dir, ec);
  rs.log_path = (dir / fmt::format("{}.{}.log", key.app, key.ordinal)).string();

  if (inst.started_before) ++inst.restarts;
  const int restarts = inst.restarts;
  auto record = [&](const runtime::Handle& h) {
    return d_.store->put_instance({key, h.pid, h.pgid, h.start_ticks, fingerprint, restarts, d_.clock->wall_ms()});
  };
  auto handle = d_.runtime->start(rs, record, [this, key](const runtime::Exit& e) {
    // pid is checked in on_exit against the instance's current process
    on_exit(key, -1, e);
  });
  inst.started_before = true;
  if (!handle.ok()) {
    inst.phase = Phase::kBackoff;
    inst.message = "could not start: " + handle.error().message;
    emit(key.env, "exited", key.app, key.ordinal, inst.ip, inst.message);
    Millis delay = std::min(spec.restart.max_backoff_ms, spec.restart.backoff_ms << std::min(inst.crashes, 20));
    ++inst.crashes;
    inst.backoff_timer = d_.executor->after(delay, [this, key] {
      if (auto* i = find(key)) {
        i->backoff_timer = 0;
        if (i->phase == Phase::kBackoff) i->phase = Phase::kStopped;
        schedule_reconcile();
      }
    });
    return;
  }
  dns_dirty_.insert(key.env);
  inst.proc = *handle;
  inst.fingerprint = fingerprint;
  inst.build_id = artifact.build_id;
  inst.phase = Phase::kStarting;
  inst.degraded = false;
  inst.started_mono = d_.clock->monotonic_ms();
  inst.ready_at = 0;
  inst.last_probe.clear();
  inst.message = fmt::format("started pid {}", handle->pid);
  emit(key.env, "starting", key.app, key.ordinal, inst.ip, fmt::format("pid {}: {}", handle->pid, rs.command));
  if (spec.health.type == model::HealthType::kNone) {
    mark_ready(inst, "no health check: ready once started");
    return;
  }
  inst.tracker.emplace(spec.health, inst.started_mono);
  schedule_probe(inst, spec);
}

void ControlLoop::stop(Instance& inst, const std::string& why) {
  if (!inst.proc || inst.phase == Phase::kStopping) return;
  cancel_timers(inst);
  dns_dirty_.insert(inst.key.env);
  inst.phase = Phase::kStopping;
  inst.message = "stopping: " + why;
  const auto* spec = spec_of(inst.key);
  d_.runtime->stop(*inst.proc, spec ? spec->stop_grace_ms : 5000);
}

void ControlLoop::cancel_timers(Instance& inst) {
  if (inst.probe_timer) d_.executor->cancel(inst.probe_timer);
  if (inst.backoff_timer) d_.executor->cancel(inst.backoff_timer);
  inst.probe_timer = inst.backoff_timer = 0;
  inst.probe.reset();
}

void ControlLoop::on_exit(const ipam::LeaseKey& key, int /*pid*/, const runtime::Exit& exit) {
  Instance* inst = find(key);
  if (!inst || !inst->proc) return;
  auto st = d_.store->erase_instance(key);
  if (!st.ok()) emit(key.env, "error", key.app, key.ordinal, inst->ip, st.error().message);
  dns_dirty_.insert(key.env);
  inst->proc.reset();
  inst->tracker.reset();
  cancel_timers(*inst);
  const bool was_ready = inst->phase == Phase::kReady;
  const auto* spec = spec_of(key);
  if (inst->phase == Phase::kStopping) {
    inst->phase = Phase::kStopped;
    inst->message = "stopped (" + exit.description + ")";
    emit(key.env, "stopped", key.app, key.ordinal, inst->ip, exit.description);
    if (inst->backoff_after_stop && spec) {
      // Stopped for failing its health check: restarts back off like crashes do.
      inst->backoff_after_stop = false;
      Millis delay = std::min(spec->restart.max_backoff_ms, spec->restart.backoff_ms << std::min(inst->crashes, 20));
      ++inst->crashes;
      inst->phase = Phase::kBackoff;
      inst->message = fmt::format("unhealthy; restarting in {}", format_duration(delay));
      inst->backoff_timer = d_.executor->after(delay, [this, key] {
        if (auto* i = find(key)) {
          i->backoff_timer = 0;
          if (i->phase == Phase::kBackoff) i->phase = Phase::kStopped;
          schedule_reconcile();
        }
      });
    }
    schedule_reconcile();
    return;
  }
  emit(key.env, "exited", key.app, key.ordinal, inst->ip, exit.description);
  bool failure = !exit.status_known || !WIFEXITED(exit.wait_status) || WEXITSTATUS(exit.wait_status) != 0;
  auto policy = spec ? spec->restart.policy : model::RestartPolicy::kNever;
  bool restart = policy == model::RestartPolicy::kAlways || (policy == model::RestartPolicy::kOnFailure && failure);
  if (!restart) {
    inst->phase = Phase::kFailed;
    inst->message = fmt::format("{}; restart policy {}: not restarted", exit.description, model::to_string(policy));
    schedule_reconcile();
    return;
  }
  // A crash after a stable run restarts at once; crash loops back off exponentially.
  if (was_ready && d_.clock->monotonic_ms() - inst->ready_mono >= kStableAfterMs) inst->crashes = 0;
  Millis delay = inst->crashes == 0 && was_ready
                     ? 0
                     : std::min(spec->restart.max_backoff_ms, spec->restart.backoff_ms << std::min(inst->crashes, 20));
  ++inst->crashes;
  inst->phase = Phase::kBackoff;
  inst->message = fmt::format("{}; restarting in {}", exit.description, format_duration(delay));
  emit(key.env, "restarting", key.app, key.ordinal, inst->ip, fmt::format("in {} (attempt {})", format_duration(delay), inst->crashes));
  inst->backoff_timer = d_.executor->after(delay, [this, key] {
    if (auto* i = find(key)) {
      i->backoff_timer = 0;
      if (i->phase == Phase::kBackoff) i->phase = Phase::kStopped;
      schedule_reconcile();
    }
  });
  schedule_reconcile();
}

void ControlLoop::schedule_probe(Instance& inst, const model::AppSpec& /*spec*/) {
  if (!inst.tracker) return;
  Millis delay = std::max<Millis>(0, inst.tracker->next_probe_at() - d_.clock->monotonic_ms());
  auto key = inst.key;
  if (inst.probe_timer) d_.executor->cancel(inst.probe_timer);
  inst.probe_timer = d_.executor->after(delay, [this, key] {
    if (auto* i = find(key)) i->probe_timer = 0;
    run_probe(key);
  });
}

void ControlLoop::run_probe(const ipam::LeaseKey& key) {
  Instance* inst = find(key);
  const model::AppSpec* spec = spec_of(key);
  if (!inst || !spec || !inst->proc || !inst->tracker || inst->phase == Phase::kStopping) return;
  health::ProbeTarget t;
  t.spec = spec->health;
  t.ip = inst->ip;
  if (auto p = spec->ports.find(spec->health.port); p != spec->ports.end()) t.port = p->second;
  t.env = {{"BERTH_IP", inst->ip}, {"BERTH_ENV", key.env}, {"BERTH_APP", key.app},
           {"BERTH_INSTANCE", std::to_string(key.ordinal)}};
  for (const auto& [name, port] : spec->ports) t.env["BERTH_PORT_" + env_var_name(name)] = std::to_string(port);
  inst->probe = d_.prober->probe(t, [this, key](health::ProbeResult r) {
    // Runs later, on the loop; the probe handle may be gone by then only if cancelled, and a
    // cancelled probe never calls back.
    d_.executor->post([this, key, r = std::move(r)] { on_probe(key, r); });
  });
}

void ControlLoop::on_probe(const ipam::LeaseKey& key, const health::ProbeResult& r) {
  Instance* inst = find(key);
  const model::AppSpec* spec = spec_of(key);
  if (!inst || !spec || !inst->proc || !inst->tracker || inst->phase == Phase::kStopping) return;
  inst->probe.reset();
  inst->last_probe = r.detail;
  auto change = inst->tracker->record(r.ok, d_.clock->monotonic_ms());
  if (change == health::Tracker::Change::kBecameReady) {
    mark_ready(*inst, r.detail);
  } else if (change == health::Tracker::Change::kBecameUnhealthy) {
    dns_dirty_.insert(key.env);
    inst->phase = Phase::kUnhealthy;
    inst->ready_at = 0;
    inst->message = "unhealthy: " + r.detail;
    emit(key.env, "unhealthy", key.app, key.ordinal, inst->ip, r.detail);
    if (spec->restart.on_unhealthy && spec->restart.policy != model::RestartPolicy::kNever) {
      emit(key.env, "restarting", key.app, key.ordinal, inst->ip, "health check failing: " + r.detail);
      stop(*inst, "unhealthy");
      inst->backoff_after_stop = true;
    }
    schedule_reconcile();
  } else if (inst->phase == Phase::kStarting) {
    inst->message = "starting: " + r.detail;
  }
  if (inst->phase != Phase::kStopping) schedule_probe(*inst, *spec);
}

void ControlLoop::mark_ready(Instance& inst, const std::string& detail) {
  dns_dirty_.insert(inst.key.env);
  inst.phase = Phase::kReady;
  inst.ready_at = d_.clock->wall_ms();
  inst.ready_mono = d_.clock->monotonic_ms();
  Millis took = d_.clock->monotonic_ms() - inst.started_mono;
  inst.message = fmt::format("ready in {}", format_duration(took));
  emit(inst.key.env, "ready", inst.key.app, inst.key.ordinal, inst.ip, fmt::format("{} (after {})", detail, format_duration(took)));
  schedule_reconcile();
}

ControlLoop::Instance* ControlLoop::find(const ipam::LeaseKey& key) {
  auto e = envs_.find(key.env);
  if (e == envs_.end()) return nullptr;
  auto a = e->second.apps.find(key.app);
  if (a == e->second.apps.end()) return nullptr;
  auto i = a->second.instances.find(key.ordinal);
  return i == a->second.instances.end() ? nullptr : &i->second;
}

const model::AppSpec* ControlLoop::spec_of(const ipam::LeaseKey& key) const {
  if (!catalog_) return nullptr;
  const auto* env = catalog_->find(key.env);
  return env ? env->find(key.app) : nullptr;
}

void ControlLoop::emit(const std::string& env, const std::string& type, const std::string& app, int ordinal,
                       const std::string& ip, const std::string& message) {
  store::Event e{0, d_.clock->wall_ms(), env, type, app, ordinal, ip, message};
  auto r = d_.store->append_event(e);
  if (!r.ok()) e.message += " [not stored: " + r.error().message + "]";
  // An event that cannot be stored must not stop the loop; it is still logged.
  if (d_.on_event) d_.on_event(r.ok() ? *r : e);
}

// ---- status -----------------------------------------------------------------------------------

std::string ControlLoop::public_state(const Instance& inst) const {
  switch (inst.phase) {
    case Phase::kWaiting: return "waiting";
    case Phase::kStarting: return "starting";
    case Phase::kReady: return inst.degraded ? "degraded" : "ready";
    case Phase::kUnhealthy:
    case Phase::kBackoff:
    case Phase::kFailed: return "failed";
    case Phase::kStopping:
    case Phase::kStopped: return inst.proc ? "starting" : "stopped";
  }
  return "stopped";
}

AppStatus ControlLoop::app_status(const model::AppSpec& aspec, const model::Environment& espec) const {
  const std::string& env = espec.name;
  AppStatus a;
  a.app = aspec.app;
  a.runs_in = env;
  a.tag = aspec.tag;
  a.build_type = aspec.build_type;
  for (const auto& [k, v] : aspec.from)
    if (k.rfind("env.", 0) != 0 && k.rfind("depends_on.", 0) != 0) a.from[k] = v;
  const bool up = up_.count(env) > 0;
  const App* app = nullptr;
  if (auto e = envs_.find(env); e != envs_.end())
    if (auto it = e->second.apps.find(aspec.app); it != e->second.apps.end()) app = &it->second;
  if (up)
    for (const auto& dep : aspec.depends_on)
      if (!dep.soft && !dependency_satisfied(dep, espec)) a.waiting_for.push_back(dep.app);
  std::map<std::string, int> counts;
  for (int o = 0; o < aspec.instances; ++o) {
    InstanceStatus is;
    is.ordinal = o;
    is.dns = fmt::format("{}.{}.{}.{}", o, aspec.app, env, catalog_->dns().zone);
    const Instance* inst = nullptr;
    if (app)
      if (auto it = app->instances.find(o); it != app->instances.end()) inst = &it->second;
    if (auto ip = ipam_.lookup({env, aspec.app, o})) is.ip = model::format_ipv4(*ip);
    if (inst) {
      is.state = public_state(*inst);
      is.pid = inst->proc ? inst->proc->pid : 0;
      is.restarts = inst->restarts;
      is.ready_at = inst->phase == Phase::kReady ? inst->ready_at : 0;
      is.message = inst->message;
      is.health = inst->last_probe;
      // What a waiting instance waits for, as of now (dependencies' probes move on between passes).
      if (inst->phase == Phase::kWaiting && !a.waiting_for.empty())
        for (const auto& dep : aspec.depends_on)
          if (dep.app == a.waiting_for.front()) is.message = waiting_message(dep, espec);
    } else {
      is.state = up ? "waiting" : "stopped";
    }
    ++counts[is.state];
    a.instances.push_back(std::move(is));
  }
  for (const char* st : {"failed", "starting", "waiting", "degraded", "stopped", "ready"})
    if (counts.count(st)) {
      a.state = st;
      break;
    }
  if (aspec.source && app) {
    const Source& src = app->src;
    a.commit = src.commit;
    a.build_id = src.build_id;
    if (!src.error.empty()) {
      a.build_state = "build-failed";
      a.build_error = src.error;
    } else if (src.commit.empty()) {
      a.build_state = "resolving";
    } else if (const build::Build* b = d_.builder ? d_.builder->find(src.build_id) : nullptr) {
      a.build_state = std::string(build::to_string(b->state));
      if (b->state == build::State::kSucceeded || b->state == build::State::kFailed) a.build_ms = b->finished_at - b->started_at;
      a.build_error = b->error;
    }
    if (a.build_state == "build-failed") a.state = "build-failed";
  }
  if (a.state == "waiting" && !a.instances.empty()) a.message = a.instances.front().message;
  else if (a.state == "failed" || a.state == "starting")
    for (const auto& i : a.instances)
      if (i.state == a.state) {
        a.message = i.message;
        break;
      }
  return a;
}

Result<EnvStatus> ControlLoop::status(const std::string& env) const {
  if (!catalog_) return not_found("no catalog applied yet: run `berth apply -f berth.yaml` first");
  const auto* spec = catalog_->find(env);
  if (!spec) {
    auto names = catalog_->environment_names();
    auto hint = closest(env, names);
    return not_found(fmt::format("no environment '{}'{}", env, hint ? fmt::format(" (did you mean '{}'?)", *hint) : ""));
  }
  EnvStatus s;
  s.env = env;
  s.up = up_.count(env) > 0;
  s.ready = s.up;
  s.base = spec->base;
  for (const auto& aspec : spec->apps) {
    const std::string& where = spec->served_by.at(aspec.app);
    if (where == env) {
      AppStatus a = app_status(aspec, *spec);
      for (const auto& i : a.instances)
        if (i.state != "ready" && i.state != "degraded") s.ready = false;
      if (!a.build_state.empty() && a.build_state != "built" && a.build_state != "build-failed") s.updating = true;
      if (auto e = envs_.find(env); e != envs_.end())
        if (auto it = e->second.apps.find(aspec.app); it != e->second.apps.end())
          for (const auto& [o, inst] : it->second.instances)
            if (inst.proc && !it->second.desired_fp.empty() && inst.fingerprint != it->second.desired_fp) s.updating = true;
      s.apps.push_back(std::move(a));
    } else {
      // Falls through: shown as the serving environment sees it.
      const auto* serving = catalog_->find(where);
      AppStatus a = app_status(*serving->find(aspec.app), *serving);
      a.from = {};
      for (const auto& [k, v] : aspec.from)
        if (k.rfind("env.", 0) != 0 && k.rfind("depends_on.", 0) != 0) a.from[k] = v;
      s.apps.push_back(std::move(a));
    }
  }
  return s;
}

// ---- DNS --------------------------------------------------------------------------------------

std::shared_ptr<const dns::EnvRecords> ControlLoop::env_records(const model::Environment& espec) const {
  auto rec = std::make_shared<dns::EnvRecords>();
  auto e = envs_.find(espec.name);
  for (const auto& aspec : espec.apps) {
    const std::string& where = espec.served_by.at(aspec.app);
    if (where != espec.name) {
      rec->fall_through[aspec.app] = where;
      continue;
    }
    dns::AppRecords& a = rec->apps[aspec.app];
    a.env = espec.name;
    a.ips.assign(static_cast<std::size_t>(aspec.instances), 0);
    a.ready.assign(static_cast<std::size_t>(aspec.instances), false);
    for (const auto& [name, port] : aspec.ports) a.ports.emplace_back(name, static_cast<std::uint16_t>(port));
    const App* app = nullptr;
    if (e != envs_.end())
      if (auto it = e->second.apps.find(aspec.app); it != e->second.apps.end()) app = &it->second;
    for (int o = 0; o < aspec.instances; ++o) {
      if (auto ip = ipam_.lookup({espec.name, aspec.app, o})) a.ips[static_cast<std::size_t>(o)] = *ip;
      if (app)
        if (auto it = app->instances.find(o); it != app->instances.end())
          a.ready[static_cast<std::size_t>(o)] = it->second.proc && it->second.phase == Phase::kReady;
    }
  }
  return rec;
}

void ControlLoop::publish_zone() {
  if (!d_.on_zone || !catalog_) return;
  if (!dns_all_dirty_ && dns_dirty_.empty()) return;
  if (dns_all_dirty_) env_records_.clear();
  for (const auto& espec : catalog_->environments())
    if (dns_all_dirty_ || dns_dirty_.count(espec.name) || !env_records_.count(espec.name))
      env_records_[espec.name] = env_records(espec);
  dns_all_dirty_ = false;
  dns_dirty_.clear();
  auto zone = std::make_shared<dns::Zone>();
  zone->apex = catalog_->dns().zone;
  zone->ttl = static_cast<std::uint32_t>(catalog_->dns().ttl_ms / 1000);
  zone->negative_ttl = static_cast<std::uint32_t>(catalog_->dns().negative_ttl_ms / 1000);
  zone->serial = ++zone_serial_;
  zone->ns_ip = d_.dns_ns_ip;
  for (const auto& [name, rec] : env_records_) zone->envs[name] = rec;
  d_.on_zone(std::move(zone));
}

std::vector<EnvStatus> ControlLoop::all_status() const {
  std::vector<EnvStatus> out;
  if (!catalog_) return out;
  for (const auto& e : catalog_->environments())
    if (auto s = status(e.name); s.ok()) out.push_back(std::move(s.value()));
  return out;
}

}  // namespace berth::control
