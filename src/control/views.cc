// What the ControlLoop shows of its state: status of environments and apps, the DNS zone
// snapshots and status read model it publishes, and the delivery of events once that model shows
// them. Part of ControlLoop (control/loop.h); runs on its loop.
#include "control/loop.h"

#include <sys/wait.h>

#include <algorithm>
#include <filesystem>

#include <fmt/format.h>

#include "base/text.h"

namespace berth::control {

// ---- status -----------------------------------------------------------------------------------

std::string ControlLoop::public_state(const Instance& inst) const {
  switch (inst.phase) {
    case Phase::kWaiting: return "waiting";
    case Phase::kRecovering:
    case Phase::kLaunching:
    case Phase::kStarting: return "starting";
    case Phase::kReady: return inst.degraded ? "degraded" : "ready";
    case Phase::kUnhealthy:
    case Phase::kBackoff:
    case Phase::kFailed: return "failed";
    case Phase::kStopping: return inst.exists() ? "stopping" : "stopped";
    case Phase::kStopped: return inst.exists() ? "starting" : "stopped";
    case Phase::kCompleted: return "completed";
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
  for (const auto& dep : aspec.depends_on) a.depends_on.push_back({dep.app, dep.soft});
  a.ports = aspec.ports;
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
      is.runtime = inst->runtime_name;
      if (inst->exists()) {
        is.pid = inst->pid;
        is.detail = inst->detail;
      }
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
    if (is.runtime.empty()) is.runtime = aspec.container() ? "docker" : "process";
    ++counts[is.state];
    a.instances.push_back(std::move(is));
  }
  for (const char* st : {"failed", "starting", "waiting", "stopping", "degraded", "stopped", "completed", "ready"})
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
    } else if (const build::Build* b = d_.builder ? d_.builder->find(src.build_id) : nullptr;
               b && b->request.commit != src.commit) {
      // Resolved to another commit than the last build's: its build is asked for at the next pass.
      a.build_state = "queued";
    } else if (b) {
      a.build_state = std::string(build::to_string(b->state));
      if (b->state == build::State::kSucceeded || b->state == build::State::kFailed) a.build_ms = b->finished_at - b->started_at;
      a.build_error = b->error;
    }
    if (a.build_state == "build-failed") a.state = "build-failed";
  }
  if (aspec.database) {
    a.standard = aspec.database->standard + (aspec.database->version ? fmt::format("@{}", aspec.database->version) : "");
    if (const db::Copy* c = d_.databases ? d_.databases->find_copy(espec.name, aspec.app) : nullptr) {
      a.copy_version = c->version;
      a.copy_method = std::string(db::to_string(c->method));
      a.copy_ms = c->clone_ms;
      a.datadir = c->datadir;
    }
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
  // How its instances find each other by name, when not through the system resolver.
  bool processes = false, containers = false;
  for (const auto& aspec : spec->apps)
    if (spec->runs(aspec.app)) (aspec.container() ? containers : processes) = true;
  if ((processes || containers) && resolver_.empty())
    s.notes.push_back(fmt::format("instances do not resolve short names through their system resolver: {}; they find "
                                  "each other through BERTH_DNS and BERTH_DEP_<APP>_<PORT>",
                                  resolver_note_.empty() ? "berth's name server does not answer on the pool's gateway"
                                                         : resolver_note_));
  if (processes && !resolver_.empty())
    if (runtime::Runtime* rt = runtime_named("process"); rt && !rt->capabilities().private_resolver)
      s.notes.push_back(rt->capabilities().resolver_note);
  for (const auto& aspec : spec->apps) {
    const std::string& where = spec->served_by.at(aspec.app);
    if (where == env) {
      AppStatus a = app_status(aspec, *spec);
      for (const auto& i : a.instances)
        if (i.state != "ready" && i.state != "degraded" && i.state != "completed") s.ready = false;
      if (!a.build_state.empty() && a.build_state != "built" && a.build_state != "build-failed") s.updating = true;
      // Updating while an instance runs older settings or build — or, for a database, another
      // copy than the current one (also in the moment before a reconcile pass has seen it), or
      // the current one while its reset is owed (after a daemon restart, before the pass stops it).
      const db::Copy* copy = aspec.database && d_.databases ? d_.databases->find_copy(env, aspec.app) : nullptr;
      if (auto e = envs_.find(env); e != envs_.end())
        if (auto it = e->second.apps.find(aspec.app); it != e->second.apps.end())
          for (const auto& [o, inst] : it->second.instances) {
            // A replacement (berth restart, new settings) under way, or asked for.
            if (inst.restart_requested || (inst.replacing && inst.phase != Phase::kReady)) s.updating = true;
            if (!inst.exists()) continue;
            if (!it->second.desired_fp.empty() && inst.fingerprint != it->second.desired_fp) s.updating = true;
            if (copy && (inst.build_id != copy->id() || d_.databases->reset_requested(env, aspec.app))) s.updating = true;
          }
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

Result<std::string> ControlLoop::log_path(const std::string& env, const std::string& app, int ordinal) const {
  if (!catalog_) return not_found("no catalog applied yet");
  const auto* espec = catalog_->find(env);
  if (!espec) return not_found(fmt::format("no environment '{}'", env));
  const auto* aspec = espec->find(app);
  if (!aspec) return not_found(fmt::format("no app '{}' in environment '{}'", app, env));
  const std::string& where = espec->served_by.at(app);
  if (where != env)
    return not_found(fmt::format("{} does not run {}: it falls through to {} (ask for the logs there)", env, app, where));
  if (ordinal < 0 || ordinal >= aspec->instances)
    return not_found(fmt::format("{} in {} has instances 0..{}, not {}", app, env, aspec->instances - 1, ordinal));
  // Names are DNS labels (validated by the catalog), so the path cannot leave the logs folder.
  return fmt::format("{}/logs/{}/{}.{}.log", d_.data_dir, env, app, ordinal);
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
          // A recorded-ready instance still being re-attached after a daemon restart keeps its
          // name: the runtime answering takes milliseconds, a client's NODATA is cached.
          a.ready[static_cast<std::size_t>(o)] =
              it->second.exists() && (it->second.phase == Phase::kReady ||
                                      (it->second.phase == Phase::kRecovering && it->second.ready_at != 0));
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

EnvSummary ControlLoop::summary(const model::Environment& espec) const {
  EnvSummary s;
  s.env = espec.name;
  s.base = espec.base;
  s.up = up_.count(espec.name) > 0;
  s.ready = s.up;
  for (const auto& aspec : espec.apps) {
    const std::string& where = espec.served_by.at(aspec.app);
    const bool own = where == espec.name;
    if (own) {
      ++s.apps;
      s.instances += aspec.instances;
    }
    int ready = 0;
    if (auto e = envs_.find(where); e != envs_.end())
      if (auto it = e->second.apps.find(aspec.app); it != e->second.apps.end())
        for (const auto& [o, inst] : it->second.instances) {
          if (o >= aspec.instances) continue;
          if ((inst.phase == Phase::kReady && inst.exists()) || inst.phase == Phase::kCompleted) ++ready;
          if (!own) continue;
          if (inst.restart_requested || (inst.replacing && inst.phase != Phase::kReady)) s.updating = true;
          if (inst.exists() && !it->second.desired_fp.empty() && inst.fingerprint != it->second.desired_fp) s.updating = true;
        }
    if (own) s.ready_instances += ready;
    if (ready < aspec.instances) s.ready = false;
  }
  return s;
}

// ---- the read model ---------------------------------------------------------------------------

void ControlLoop::touched(const std::string& env) {
  dns_dirty_.insert(env);
  status_changed(env);
}

void ControlLoop::status_changed(const std::string& env) {
  status_dirty_.insert(env);
  if (auto it = falls_through_to_.find(env); it != falls_through_to_.end())
    status_dirty_.insert(it->second.begin(), it->second.end());
  schedule_status_publish();
}

void ControlLoop::status_changed_all() {
  status_all_dirty_ = true;
  schedule_status_publish();
}

void ControlLoop::schedule_status_publish() {
  // Once per kStatusPublishMs at most: a burst of changes is one rebuild of each view it marked.
  if (status_publish_timer_) return;
  status_publish_timer_ = d_.executor->after(kStatusPublishMs, guarded([this] {
    status_publish_timer_ = 0;
    // A pass is pending: publish after it, so that what it decides shows with the change that
    // caused it.
    if (reconcile_pending_) schedule_status_publish();
    else publish_status();
  }));
}

void ControlLoop::publish_status(const std::string& only) {
  BERTH_ASSERT_LOOP(*d_.executor);
  if (!status_all_dirty_ && status_dirty_.empty()) return deliver_events();
  // One environment's write: rebuild its views now and leave the other marks to the timer.
  std::set<std::string> now;
  const bool partial = !only.empty() && !status_all_dirty_ && view_index_ && catalog_;
  if (partial) {
    auto take = [&](const std::string& env) {
      if (status_dirty_.erase(env)) now.insert(env);
    };
    take(only);
    if (auto it = falls_through_to_.find(only); it != falls_through_to_.end())
      for (const auto& thin : it->second) take(thin);
    if (now.empty()) return deliver_events();
    if (!status_dirty_.empty()) schedule_status_publish();
  }
  const std::set<std::string>& rebuild = partial ? now : status_dirty_;
  auto snap = std::make_shared<StatusSnapshot>();
  snap->serial = ++status_serial_;
  if (catalog_) {
    const auto& envs = catalog_->environments();
    if (!view_index_) {
      auto index = std::make_shared<std::unordered_map<std::string, std::size_t>>();
      index->reserve(envs.size());
      for (std::size_t i = 0; i < envs.size(); ++i) index->emplace(envs[i].name, i);
      view_index_ = std::move(index);
      status_all_dirty_ = true;
    }
    if (status_all_dirty_) views_.clear();  // (and so forget removed environments)
    snap->has_catalog = true;
    snap->index = view_index_;
    snap->envs.reserve(envs.size());
    for (const auto& espec : envs) {
      auto& view = views_[espec.name];
      if (!view || rebuild.count(espec.name)) {
        auto v = std::make_shared<EnvView>();
        v->generation = ++view_generation_;
        if (auto st = status(espec.name); st.ok()) v->status = std::move(st.value());
        v->summary = summary(espec);
        view = std::move(v);
      }
      snap->envs.push_back(view);
    }
  } else {
    views_.clear();
    view_index_.reset();
  }
  status_all_dirty_ = false;
  if (!partial) status_dirty_.clear();
  read_model_.publish(std::move(snap));
  deliver_events();
}

// ---- events: written, then delivered once the read model shows them -----------------------

void ControlLoop::write_events() {
  std::vector<PendingEvent*> batch;
  for (auto& p : undelivered_)
    if (!p.written) batch.push_back(&p);
  if (batch.empty()) return;
  std::vector<std::string> refused(batch.size());  // why each one was not stored ("" if it was)
  const Status committed = d_.store->transaction([&]() -> Status {
    for (std::size_t i = 0; i < batch.size(); ++i)
      if (auto r = d_.store->append_event(batch[i]->event); !r.ok()) refused[i] = r.error().message;
    return {};
  });
  for (std::size_t i = 0; i < batch.size(); ++i) {
    // An event that cannot be stored must not stop the loop; it is still logged and delivered.
    if (refused[i].empty() && !committed.ok()) refused[i] = committed.error().message;
    if (!refused[i].empty()) batch[i]->event.message += " [not stored: " + refused[i] + "]";
    batch[i]->written = true;
  }
}

void ControlLoop::deliver_events() {
  if (undelivered_.empty()) return;
  write_events();
  if (subscribers_.empty()) {  // written, and nobody to deliver them to
    undelivered_.clear();
    return;
  }
  std::deque<PendingEvent> ready;
  if (!status_all_dirty_ && status_dirty_.empty()) {
    ready.swap(undelivered_);  // every view is published: all of them
  } else {
    std::deque<PendingEvent> waiting;
    for (auto& p : undelivered_) {
      const std::string& env = p.event.env;
      const bool shown = env.empty() || (!status_all_dirty_ && !status_dirty_.count(env));
      (shown ? ready : waiting).push_back(std::move(p));
    }
    undelivered_ = std::move(waiting);
  }
  for (const auto& p : ready) {
    // Subscribers may unsubscribe (or subscribe) from inside their call: iterate over a copy.
    auto subscribers = subscribers_;
    for (const auto& [id, fn] : subscribers)
      if (subscribers_.count(id)) fn(p.event);
  }
}

}  // namespace berth::control
