#include "control/views.h"

#include <algorithm>
#include <array>
#include <string_view>

#include <fmt/format.h>

#include "base/text.h"

namespace berth::control {

// ---- status -----------------------------------------------------------------------------------

namespace {

// The states an app shows, most telling first: its state is the first any of its instances is in.
constexpr std::array<std::string_view, 8> kAppStates = {"failed",  "starting", "waiting", "stopping",
                                                        "degraded", "stopped", "completed", "ready"};

// Fills `a`, a fresh AppStatus already in its environment's list (built in place: a status is
// rebuilt at every change its environment shows, thousands of times a second at fleet scale).
void fill_app_status(const ViewInputs& in, const model::AppSpec& aspec, const model::Environment& espec, AppStatus& a) {
  const std::string& env = espec.name;
  a.app = aspec.app;
  a.runs_in = env;
  a.tag = aspec.tag;
  a.build_type = aspec.build_type;
  a.from = in.planner->shown_from(aspec);
  for (const auto& dep : aspec.depends_on) a.depends_on.push_back({dep.app, dep.soft});
  a.ports = aspec.ports;
  const Observed& obs = *in.observed;
  const bool up = obs.up.count(env) > 0;
  const AppState* app = obs.find_app(env, aspec.app);
  const PlannedEnv* penv = in.planner->find(env);
  const PlannedApp* papp = penv ? penv->find(aspec.app) : nullptr;
  if (up && papp)
    for (const auto& gate : papp->gates)
      if (!gate.dep->soft && !obs.satisfied(gate)) a.waiting_for.push_back(gate.dep->app);
  std::array<int, kAppStates.size()> counts{};
  const std::string& zone = in.catalog->dns().zone;
  a.instances.reserve(static_cast<std::size_t>(std::max(aspec.instances, 0)));
  for (int o = 0; o < aspec.instances; ++o) {
    InstanceStatus& is = a.instances.emplace_back();
    is.ordinal = o;
    const std::string ordinal = std::to_string(o);
    is.dns.reserve(ordinal.size() + aspec.app.size() + env.size() + zone.size() + 3);
    is.dns.append(ordinal).append(1, '.').append(aspec.app).append(1, '.').append(env).append(1, '.').append(zone);
    const Supervisor::State* inst = nullptr;
    if (app)
      if (auto it = app->instances.find(o); it != app->instances.end()) inst = &it->second.state();
    if (auto ip = in.ipam->lookup({env, aspec.app, o})) is.ip = model::format_ipv4(*ip);
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
        for (const auto& gate : papp->gates)
          if (gate.dep->app == a.waiting_for.front()) is.message = obs.waiting_message(gate, env);
    } else {
      is.state = up ? "waiting" : "stopped";
    }
    if (is.runtime.empty()) is.runtime = aspec.container() ? "docker" : "process";
    if (auto st = std::find(kAppStates.begin(), kAppStates.end(), is.state); st != kAppStates.end())
      ++counts[static_cast<std::size_t>(st - kAppStates.begin())];
  }
  for (std::size_t i = 0; i < kAppStates.size(); ++i)
    if (counts[i]) {
      a.state = kAppStates[i];
      break;
    }
  if (aspec.source && app) {
    const SourceState& src = app->src;
    a.commit = src.commit;
    a.build_id = src.build_id;
    a.resolving = src.resolving || src.reresolve;
    if (!src.error.empty()) {
      a.build_state = "build-failed";
      a.build_error = src.error;
    } else if (src.commit.empty()) {
      a.build_state = "resolving";
    } else if (const build::Build* b = in.builder ? in.builder->find(src.build_id) : nullptr;
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
    if (const db::Copy* c = in.databases ? in.databases->find_copy(espec.name, aspec.app) : nullptr) {
      a.copy_version = c->at();
      a.copy_own = static_cast<int>(c->own.size());
      if (!aspec.database->version) a.copy_pending = in.databases->pending_migrations(c->standard, c->at());
      if (const db::DriftResult* d = in.databases->drift_of(espec.name, aspec.app);
          d && d->version == c->at() && d->state == db::DriftResult::State::kChecked) {
        a.copy_drift = static_cast<int>(d->differences.size());
        a.copy_drift_checked_at = d->checked_at;
      }
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
}

}  // namespace

Result<EnvStatus> env_status(const ViewInputs& in, const std::string& env) {
  if (!in.catalog) return not_found("no catalog applied yet: run `berth apply -f berth.yaml` first");
  const model::Catalog& catalog = *in.catalog;
  const auto* spec = catalog.find(env);
  if (!spec) {
    auto names = catalog.environment_names();
    auto hint = closest(env, names);
    return not_found(fmt::format("no environment '{}'{}", env, hint ? fmt::format(" (did you mean '{}'?)", *hint) : ""));
  }
  EnvStatus s;
  s.env = env;
  s.up = in.observed->up.count(env) > 0;
  s.ready = s.up;
  s.base = spec->base;
  // How its instances find each other by name, when not through the system resolver.
  bool processes = false, containers = false;
  for (const auto& aspec : spec->apps)
    if (spec->runs(aspec.app)) (aspec.container() ? containers : processes) = true;
  if ((processes || containers) && in.resolver.empty())
    s.notes.push_back(fmt::format("instances do not resolve short names through their system resolver: {}; they find "
                                  "each other through BERTH_DNS and BERTH_DEP_<APP>_<PORT>",
                                  in.resolver_note.empty() ? "berth's name server does not answer on the pool's gateway"
                                                           : in.resolver_note));
  if (processes && !in.resolver.empty() && !in.process_resolver_note.empty()) s.notes.push_back(in.process_resolver_note);
  s.apps.reserve(spec->apps.size());
  for (const auto& aspec : spec->apps) {
    const std::string& where = spec->served_by.at(aspec.app);
    if (where == env) {
      AppStatus& a = s.apps.emplace_back();
      fill_app_status(in, aspec, *spec, a);
      for (const auto& i : a.instances)
        if (i.state != "ready" && i.state != "degraded" && i.state != "completed") s.ready = false;
      if (!a.build_state.empty() && a.build_state != "built" && a.build_state != "build-failed") s.updating = true;
      // Updating while an instance runs older settings or build — or, for a database, another
      // copy than the current one (also in the moment before a reconcile pass has seen it), or
      // the current one while its reset is owed (after a daemon restart, before the pass stops it).
      const db::Copy* copy = aspec.database && in.databases ? in.databases->find_copy(env, aspec.app) : nullptr;
      const bool reset_owed = copy && in.databases->reset_requested(env, aspec.app);
      if (const AppState* app = in.observed->find_app(env, aspec.app))
        for (const auto& [o, sup] : app->instances) {
          const auto& inst = sup.state();
          // A replacement (berth restart, new settings) under way, or asked for.
          if (inst.restart_requested || (inst.replacing && inst.phase != Phase::kReady)) s.updating = true;
          if (!inst.exists()) continue;
          if (!app->desired_fp.empty() && inst.fingerprint != app->desired_fp) s.updating = true;
          if (copy && (inst.build_id != copy->id() || reset_owed)) s.updating = true;
        }
    } else {
      // Falls through: shown as the serving environment sees it.
      const auto* serving = catalog.find(where);
      AppStatus& a = s.apps.emplace_back();
      fill_app_status(in, *serving->find(aspec.app), *serving, a);
      a.from = in.planner->shown_from(aspec);  // its own layers
    }
  }
  return s;
}

// ---- DNS --------------------------------------------------------------------------------------

std::shared_ptr<const dns::EnvRecords> env_records(const ViewInputs& in, const model::Environment& espec) {
  auto rec = std::make_shared<dns::EnvRecords>();
  const EnvState* env = in.observed->find_env(espec.name);  // (once, not once per app)
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
    const AppState* app = env ? env->find_app(aspec.app) : nullptr;
    for (int o = 0; o < aspec.instances; ++o) {
      if (auto ip = in.ipam->lookup({espec.name, aspec.app, o})) a.ips[static_cast<std::size_t>(o)] = *ip;
      if (app)
        if (auto it = app->instances.find(o); it != app->instances.end())
          // A recorded-ready instance still being re-attached after a daemon restart keeps its
          // name: the runtime answering takes milliseconds, a client's NODATA is cached.
          a.ready[static_cast<std::size_t>(o)] =
              it->second.state().exists() && (it->second.state().phase == Phase::kReady ||
                                              (it->second.state().phase == Phase::kRecovering &&
                                               it->second.state().ready_at != 0));
    }
  }
  return rec;
}

EnvSummary env_summary(const ViewInputs& in, const model::Environment& espec) {
  EnvSummary s;
  s.env = espec.name;
  s.base = espec.base;
  s.up = in.observed->up.count(espec.name) > 0;
  s.ready = s.up;
  for (const auto& aspec : espec.apps) {
    const std::string& where = espec.served_by.at(aspec.app);
    const bool own = where == espec.name;
    if (own) {
      ++s.apps;
      s.instances += aspec.instances;
    }
    int ready = 0;
    if (const AppState* app = in.observed->find_app(where, aspec.app))
      for (const auto& [o, sup] : app->instances) {
        if (o >= aspec.instances) continue;
        const auto& inst = sup.state();
        if (inst.serving()) ++ready;
        if (!own) continue;
        if (inst.exists()) ++s.running_instances;
        if (inst.restart_requested || (inst.replacing && inst.phase != Phase::kReady)) s.updating = true;
        if (inst.exists() && !app->desired_fp.empty() && inst.fingerprint != app->desired_fp) s.updating = true;
      }
    if (own) s.ready_instances += ready;
    if (ready < aspec.instances) s.ready = false;
  }
  return s;
}

// ---- publishing -------------------------------------------------------------------------------

Publisher::~Publisher() {
  if (timer_) executor_.cancel(timer_);
  if (zone_timer_) executor_.cancel(zone_timer_);
}

void Publisher::touched(const std::string& env) {
  dns_dirty_.insert(env);
  status_changed(env);
}

void Publisher::status_changed(const std::string& env) {
  dirty_.insert(env);
  for (const auto& thin : planner_.thin_of(env)) dirty_.insert(thin);
  schedule();
}

void Publisher::all_changed() {
  all_dirty_ = true;
  schedule();
}

void Publisher::catalog_changed() {
  dns_all_dirty_ = true;
  view_index_.reset();  // new environments, new order
  all_changed();
}

void Publisher::schedule() {
  // Once per kStatusPublishMs at most: a burst of changes is one rebuild of each view it marked.
  if (timer_) return;
  const Millis delay = std::clamp(kStatusPublishCostFactor * last_cost_ms_, kStatusPublishMs, kStatusPublishMaxMs);
  timer_ = executor_.after(delay, [this] {
    timer_ = 0;
    due_();
  });
}

void Publisher::publish_zone(const ViewInputs& in) {
  if (!on_zone_ || !in.catalog) return;
  if (!dns_all_dirty_ && dns_dirty_.empty()) return;
  const Millis t0 = clock_.monotonic_ms();
  if (t0 < zone_next_at_) {
    if (!zone_timer_)
      zone_timer_ = executor_.after(zone_next_at_ - t0, [this] {
        zone_timer_ = 0;
        zone_due_();
      });
    return;
  }
  if (dns_all_dirty_) {
    env_records_.clear();  // (and so forget removed environments)
    for (const auto& espec : in.catalog->environments()) env_records_.set(espec.name, env_records(in, espec));
  } else {
    for (const auto& name : dns_dirty_)
      if (const auto* espec = in.catalog->find(name)) env_records_.set(name, env_records(in, *espec));
  }
  dns_all_dirty_ = false;
  dns_dirty_.clear();
  auto zone = std::make_shared<dns::Zone>();
  zone->apex = in.catalog->dns().zone;
  zone->ttl = static_cast<std::uint32_t>(in.catalog->dns().ttl_ms / 1000);
  zone->negative_ttl = static_cast<std::uint32_t>(in.catalog->dns().negative_ttl_ms / 1000);
  zone->serial = ++zone_serial_;
  zone->ns_ip = ns_ip_;
  zone->envs = env_records_;  // (64 shared shards)
  on_zone_(std::move(zone));
  zone_next_at_ = t0 + kStatusPublishCostFactor * (clock_.monotonic_ms() - t0);
}

void Publisher::publish_status(const ViewInputs& in, const std::string& only) {
  if (!pending()) return;
  // One environment's write: rebuild its views now and leave the other marks to the timer.
  std::set<std::string> now;
  const bool partial = !only.empty() && !all_dirty_ && view_index_ && in.catalog;
  if (partial) {
    auto take = [&](const std::string& env) {
      if (dirty_.erase(env)) now.insert(env);
    };
    take(only);
    for (const auto& thin : planner_.thin_of(only)) take(thin);
    if (now.empty()) return;
    if (!dirty_.empty()) schedule();
  }
  const std::set<std::string>& rebuild = partial ? now : dirty_;
  const Millis t0 = clock_.monotonic_ms();
  auto snap = std::make_shared<StatusSnapshot>();
  snap->serial = ++serial_;
  if (in.catalog) {
    const auto& envs = in.catalog->environments();
    if (!view_index_) {
      auto index = std::make_shared<std::unordered_map<std::string, std::size_t>>();
      index->reserve(envs.size());
      for (std::size_t i = 0; i < envs.size(); ++i) index->emplace(envs[i].name, i);
      view_index_ = std::move(index);
      all_dirty_ = true;
    }
    auto rebuild_view = [&](std::size_t i) {
      const model::Environment& espec = envs[i];
      auto& view = views_[i];
      auto v = std::make_shared<EnvView>();
      if (auto st = env_status(in, espec.name); st.ok()) v->status = std::move(st.value());
      v->summary = env_summary(in, espec);
      // A view that shows what the last one showed stays the last one, generation and all:
      // readers keep what they rendered of it (a pass marks more than it changes).
      if (!view || view->status != v->status || view->summary != v->summary) {
        v->generation = ++view_generation_;
        view = std::move(v);
      }
    };
    if (all_dirty_ || views_.size() != envs.size()) {
      // A new catalog (new order): views of environments still in it are kept by name.
      std::unordered_map<std::string, std::shared_ptr<const EnvView>> old;
      old.reserve(views_.size());
      for (auto& v : views_)
        if (v) old.emplace(v->status.env, std::move(v));
      views_.assign(envs.size(), nullptr);
      for (std::size_t i = 0; i < envs.size(); ++i) {
        if (auto o = old.find(envs[i].name); o != old.end()) views_[i] = std::move(o->second);
        rebuild_view(i);
      }
    } else {
      for (const auto& name : rebuild)
        if (auto i = view_index_->find(name); i != view_index_->end()) rebuild_view(i->second);
    }
    snap->has_catalog = true;
    snap->index = view_index_;
    snap->envs = views_;
  } else {
    views_.clear();
    view_index_.reset();
  }
  all_dirty_ = false;
  if (!partial) dirty_.clear();
  read_model_.publish(std::move(snap));
  if (!partial) last_cost_ms_ = clock_.monotonic_ms() - t0;
}

}  // namespace berth::control
