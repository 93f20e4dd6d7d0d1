// The life of an instance: start (behind the record step), stop, exit and restart with backoff,
// health probing and readiness. Part of ControlLoop (control/loop.h); runs on its loop.
#include "control/loop.h"

#include <sys/wait.h>

#include <algorithm>
#include <filesystem>

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
  if (spec.database && d_.databases) {
    if (const db::Copy* c = d_.databases->find_copy(key.env, key.app)) {
      vars["datadir"] = c->datadir;
      vars["rundir"] = c->rundir;
    }
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
  if (!artifact.path.empty() && !spec.database) {
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
    // A database: where it is and how to log in.
    if (dspec->database && dspec->ports.count("sql")) {
      const std::string n = env_var_name(dep.app);
      auto ip = ipam_.lookup({where, dep.app, 0});
      const std::string host = ip ? model::format_ipv4(*ip) : "";
      const int port = dspec->ports.at("sql");
      rs.env_vars[fmt::format("BERTH_DB_{}_HOST", n)] = host;
      rs.env_vars[fmt::format("BERTH_DB_{}_PORT", n)] = std::to_string(port);
      rs.env_vars[fmt::format("BERTH_DB_{}_USER", n)] = dspec->database->user;
      rs.env_vars[fmt::format("BERTH_DB_{}_PASSWORD", n)] = dspec->database->password;
      rs.env_vars[fmt::format("BERTH_DB_{}_URL", n)] =
          fmt::format("mysql://{}:{}@{}:{}/", dspec->database->user, dspec->database->password, host, port);
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
    back_off(inst, spec.restart, false);
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
  schedule_probe(inst);
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
      Millis delay = back_off(*inst, spec->restart, false);
      inst->message = fmt::format("unhealthy; restarting in {}", format_duration(delay));
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
  Millis delay = back_off(*inst, spec->restart, was_ready && inst->crashes == 0);
  inst->message = fmt::format("{}; restarting in {}", exit.description, format_duration(delay));
  emit(key.env, "restarting", key.app, key.ordinal, inst->ip, fmt::format("in {} (attempt {})", format_duration(delay), inst->crashes));
  schedule_reconcile();
}

Millis ControlLoop::back_off(Instance& inst, const model::RestartSpec& restart, bool immediately) {
  Millis delay = immediately ? 0 : std::min(restart.max_backoff_ms, restart.backoff_ms << std::min(inst.crashes, 20));
  ++inst.crashes;
  inst.phase = Phase::kBackoff;
  inst.backoff_timer = d_.executor->after(delay, [this, key = inst.key] {
    if (auto* i = find(key)) {
      i->backoff_timer = 0;
      if (i->phase == Phase::kBackoff) i->phase = Phase::kStopped;
      schedule_reconcile();
    }
  });
  return delay;
}

void ControlLoop::schedule_probe(Instance& inst) {
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
  if (inst->phase != Phase::kStopping) schedule_probe(*inst);
}

void ControlLoop::mark_ready(Instance& inst, const std::string& detail) {
  dns_dirty_.insert(inst.key.env);
  inst.phase = Phase::kReady;
  inst.ready_at = d_.clock->wall_ms();
  inst.ready_mono = d_.clock->monotonic_ms();
  Millis took = d_.clock->monotonic_ms() - inst.started_mono;
  inst.message = fmt::format("ready in {}", format_duration(took));
  emit(inst.key.env, "ready", inst.key.app, inst.key.ordinal, inst.ip, fmt::format("{} (after {})", detail, format_duration(took)));
  if (const model::AppSpec* spec = spec_of(inst.key); spec && spec->database && d_.databases)
    d_.databases->server_ready(inst.key.env, inst.key.app);
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

}  // namespace berth::control
