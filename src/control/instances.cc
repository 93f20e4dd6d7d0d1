// The life of an instance: launch (recorded before it runs), stop, exit and restart with
// backoff, recovery after a daemon restart, health probing and readiness, exec and logs. Part of
// ControlLoop (control/loop.h); runs on its loop, and is the loop's runtime::Listener.
#include "control/loop.h"

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

std::vector<std::string> substituted(const std::vector<std::string>& words, const std::map<std::string, std::string>& vars) {
  std::vector<std::string> out;
  for (const auto& w : words) out.push_back(model::substitute_raw(w, vars));
  return out;
}

}  // namespace

// ---- runtimes ---------------------------------------------------------------------------------

runtime::Runtime* ControlLoop::runtime_named(const std::string& name) const {
  for (auto* rt : d_.runtimes)
    if (rt->name() == name) return rt;
  return nullptr;
}

runtime::Runtime* ControlLoop::runtime_for(const model::AppSpec& spec, std::string* why) const {
  const char* name = spec.container() ? "docker" : "process";
  runtime::Runtime* rt = runtime_named(name);
  if (!rt && why)
    *why = spec.container() ? fmt::format("{} runs from an image but this daemon has no container runtime: start berth "
                                          "serve with --docker-host unix:///path/to/docker.sock", spec.app)
                            : "this daemon has no process runtime";
  return rt;
}

void ControlLoop::prepare_network() {
  if (!catalog_) return;
  const model::NetworkSpec& n = catalog_->network();
  network_ = {"default", n.pool_text, model::format_ipv4(n.gateway())};
  if (prepared_ == network_) return;
  prepared_ = network_;
  network_ready_ = false;  // instances wait: their resolver is known once the network is there
  prepare_network_from(0, network_);
}

// One runtime after another (a bridge network first gives the gateway its address).
void ControlLoop::prepare_network_from(std::size_t i, const runtime::Network& net) {
  if (prepared_ != net) return;  // the catalog moved on
  if (i == d_.runtimes.size()) {
    if (d_.on_network_ready) d_.on_network_ready(net);
    network_ready_ = true;
    schedule_reconcile();
    return;
  }
  d_.runtimes[i]->prepare_network(net, guarded([this, net, i](Status st) {
    if (!st.ok()) {
      // Instances still launch; the runtime says again what is missing when they do.
      emit("", "error", "", -1, net.gateway,
           fmt::format("the {} runtime could not prepare network {}: {}", d_.runtimes[i]->name(), net.subnet,
                       st.error().message));
    }
    prepare_network_from(i + 1, net);
  }));
}

void ControlLoop::set_resolver(const std::string& ip, const std::string& note) {
  BERTH_ASSERT_LOOP(*d_.executor);
  resolver_ = ip;
  resolver_note_ = note;
  publisher_.all_changed();  // the environments' notes say how their instances resolve names
}

// ---- instances --------------------------------------------------------------------------------

runtime::InstanceSpec ControlLoop::instance_spec(const Supervisor::State& inst, const model::AppSpec& spec,
                                                 const model::Environment& espec, const Artifact& artifact) const {
  const auto& key = inst.key;
  std::map<std::string, std::string> vars = {
      {"tag", spec.tag}, {"build_type", spec.build_type}, {"env", key.env},
      {"app", key.app}, {"ordinal", std::to_string(key.ordinal)}, {"ip", inst.ip}, {"artifact", artifact.path}};
  runtime::InstanceSpec rs;
  rs.id = {key.env, key.app, key.ordinal};
  rs.env = spec.env;
  rs.ports = spec.ports;
  for (const auto& [name, port] : spec.ports) {
    vars["port." + name] = std::to_string(port);
    rs.env["BERTH_PORT_" + env_var_name(name)] = std::to_string(port);
  }
  if (spec.database && d_.databases) {
    if (const db::Copy* c = d_.databases->find_copy(key.env, key.app)) {
      vars["datadir"] = c->datadir;
      vars["rundir"] = c->rundir;
    }
  }
  const std::string domain = fmt::format("{}.{}", key.env, catalog_->dns().zone);
  rs.env["BERTH_ENV"] = key.env;
  rs.env["BERTH_APP"] = key.app;
  rs.env["BERTH_INSTANCE"] = std::to_string(key.ordinal);
  rs.env["BERTH_IP"] = inst.ip;
  rs.env["BERTH_TAG"] = spec.tag;
  rs.env["BERTH_BUILD_TYPE"] = spec.build_type;
  rs.env["BERTH_NAME"] = fmt::format("{}.{}.{}", key.ordinal, key.app, domain);
  rs.env["BERTH_DOMAIN"] = domain;
  rs.env["BERTH_HOME"] = d_.data_dir;
  if (!artifact.path.empty() && !spec.database) {
    rs.env["BERTH_ARTIFACT"] = artifact.path;
    rs.env["BERTH_COMMIT"] = artifact.commit;
  }
  // berth's name server as the instance can reach it: a container cannot reach the daemon's
  // loopback, only the gateway.
  if (spec.container()) {
    if (!resolver_.empty()) rs.env["BERTH_DNS"] = resolver_ + ":53";
  } else if (!d_.dns_address.empty()) {
    rs.env["BERTH_DNS"] = d_.dns_address;
  }
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
      rs.env[fmt::format("BERTH_DEP_{}_{}", env_var_name(dep.app), env_var_name(pname))] = addrs;
    }
    // A database: where it is and how to log in.
    if (dspec->database && dspec->ports.count("sql")) {
      const std::string n = env_var_name(dep.app);
      auto ip = ipam_.lookup({where, dep.app, 0});
      const std::string host = ip ? model::format_ipv4(*ip) : "";
      const int port = dspec->ports.at("sql");
      rs.env[fmt::format("BERTH_DB_{}_HOST", n)] = host;
      rs.env[fmt::format("BERTH_DB_{}_PORT", n)] = std::to_string(port);
      rs.env[fmt::format("BERTH_DB_{}_USER", n)] = dspec->database->user;
      rs.env[fmt::format("BERTH_DB_{}_PASSWORD", n)] = dspec->database->password;
      rs.env[fmt::format("BERTH_DB_{}_URL", n)] =
          fmt::format("mysql://{}:{}@{}:{}/", dspec->database->user, dspec->database->password, host, port);
    }
  }
  rs.env["BERTH_DEPS"] = dep_names;

  if (spec.container()) {
    runtime::ImageWorkload w;
    w.image = spec.image_from_build ? artifact.path : model::image_reference(spec.image, vars);
    if (spec.entrypoint) w.entrypoint = substituted(*spec.entrypoint, vars);
    // args follow the command; with no command of its own they are the image's arguments.
    if (spec.command_words || !spec.args.empty()) {
      std::vector<std::string> cmd = spec.command_words ? substituted(*spec.command_words, vars) : std::vector<std::string>{};
      for (const auto& a : substituted(spec.args, vars)) cmd.push_back(a);
      w.command = std::move(cmd);
    }
    w.user = spec.user;
    w.workdir = spec.workdir;
    for (const auto& v : spec.volumes) {
      runtime::Mount m;
      m.kind = v.bind ? runtime::Mount::Kind::kBind : runtime::Mount::Kind::kVolume;
      // A named volume belongs to its environment: `data` of beta-7 is not `data` of baseline.
      m.source = v.bind ? v.source : key.env + "_" + model::substitute_raw(v.source, vars);
      m.target = v.target;
      m.read_only = v.read_only;
      rs.mounts.push_back(std::move(m));
    }
    rs.workload = std::move(w);
  } else {
    std::string command = model::substitute(spec.command, vars);
    for (const auto& a : spec.args) command += " " + shell_quote(model::substitute_raw(a, vars));
    rs.workload = runtime::ProcessWorkload{command};
  }
  rs.resources = {spec.resources.cpus, spec.resources.memory_bytes};
  rs.ip = inst.ip;
  rs.network = network_;
  if (!resolver_.empty()) rs.resolver = {resolver_, domain};
  rs.labels = {{"berth.env", key.env}, {"berth.app", key.app}, {"berth.ordinal", std::to_string(key.ordinal)}};

  std::error_code ec;
  fs::path dir = fs::path(d_.data_dir) / "logs" / key.env;
  fs::create_directories(dir, ec);
  rs.log_path = (dir / fmt::format("{}.{}.log", key.app, key.ordinal)).string();
  return rs;
}

void ControlLoop::start(Supervisor& sup, const model::AppSpec& spec, const model::Environment& espec,
                        const Artifact& artifact, const std::string& fingerprint) {
  const auto& key = sup.state().key;
  std::string why;
  runtime::Runtime* rt = runtime_for(spec, &why);
  if (!network_ready_) why = fmt::format("preparing network {}", network_.subnet);
  auto identity = identity_for(key.env, spec);
  if (!identity.ok()) why = identity.error().message;
  if (!rt || !network_ready_ || !identity.ok()) return apply(sup, sup.wait(why, false));
  runtime::InstanceSpec rs = instance_spec(sup.state(), spec, espec, artifact);
  rs.identity = *identity;
  rs.privileged = spec.user == "root";
  rs.launch = ++launches_;
  rs.labels["berth.fingerprint"] = fingerprint;
  std::string what = std::visit(
      [](const auto& w) -> std::string {
        using W = std::decay_t<decltype(w)>;
        if constexpr (std::is_same_v<W, runtime::ProcessWorkload>) {
          return w.command;
        } else {
          return w.command ? fmt::format("{} {}", w.image, fmt::join(*w.command, " ")) : w.image;
        }
      },
      rs.workload);
  apply(sup, sup.launching({rs.launch, rt->name(), std::move(what), fingerprint, artifact.build_id, spec.container()}, now()));
  rt->launch(rs);
}

void ControlLoop::apply(Supervisor& sup, Step step) {
  const auto& s = sup.state();
  const ipam::LeaseKey key = s.key;  // (a copy: emit and timers outlive nothing, but be plain)
  for (const auto& e : step.events) emit(key.env, e.type, key.app, e.whole_app ? -1 : key.ordinal, s.ip, e.message);
  if (step.cancel) cancel_timers(key);
  if (step.stop)
    if (runtime::Runtime* rt = runtime_named(s.runtime_name)) {
      const auto* spec = spec_of(key);
      rt->stop(s.ref, spec ? spec->stop_grace_ms : 5000);
    }
  Status written;
  switch (step.write) {
    case Step::Write::kNone: break;
    case Step::Write::kErase: written = d_.store->erase_instance(key); break;
    case Step::Write::kReadiness: written = d_.store->set_instance_ready(key, s.ready_at); break;
    case Step::Write::kCompleted:
      written = d_.store->put_instance({key, "", kCompletedRef, s.fingerprint, s.restarts, d_.clock->wall_ms()});
      break;
  }
  if (!written.ok()) emit(key.env, "error", key.app, key.ordinal, s.ip, written.error().message);
  if (step.backoff >= 0)
    handles_[key].backoff_timer = d_.executor->after(step.backoff, [this, key] {
      if (auto h = handles_.find(key); h != handles_.end()) h->second.backoff_timer = 0;
      if (Supervisor* i = find(key)) apply(*i, i->backoff_elapsed());
    });
  if (step.probe) schedule_probe(s);
  if (step.names) publisher_.touched(key.env);
  else if (step.shown) publisher_.status_changed(key.env);
  if (step.database_ready && d_.databases) d_.databases->server_ready(key.env, key.app);
  if (step.reconcile) schedule_reconcile(key.env);
}

Status ControlLoop::on_created(const runtime::InstanceId& id, std::uint64_t launch, const runtime::Ref& ref) {
  Supervisor* sup = find(id);
  if (!sup) return conflict("this launch is no longer wanted");
  BERTH_TRY(sup->created(launch));
  const auto& s = sup->state();
  // The record and the instance's address are stored together before it may run: after a failed
  // pass commit the address may not be, and a daemon restarted then would give it to another.
  const Status written = d_.store->transaction([&]() -> Status {
    BERTH_TRY(ipam_.resync());
    return d_.store->put_instance({s.key, s.runtime_name, ref, s.fingerprint, s.restarts, d_.clock->wall_ms()});
  });
  if (!written.ok()) {
    ipam_.suspect();
    retry_store();
    return written.error();
  }
  sup->record_written(ref);
  return {};
}

void ControlLoop::on_started(const runtime::InstanceId& id, std::uint64_t launch, const runtime::Ref& ref,
                             const runtime::Observed& observed) {
  Supervisor* sup = find(id);
  if (!sup || sup->state().launch != launch || sup->state().ref != ref) return;
  runtime::Runtime* rt = runtime_named(sup->state().runtime_name);
  const bool observed_ip = rt && !rt->capabilities().fixed_ip;
  apply(*sup, sup->started(observed, observed_ip, spec_of(sup->state().key), now()));
}

void ControlLoop::on_failed(const runtime::InstanceId& id, std::uint64_t launch, const runtime::Ref& ref,
                            const Error& error) {
  Supervisor* sup = find(id);
  if (!sup || sup->state().launch != launch) return;
  apply(*sup, sup->failed(ref, error, spec_of(sup->state().key), now()));
}

void ControlLoop::on_recovered(const std::vector<runtime::Recovered>& recovered) {
  for (const auto& rec : recovered) {
    Supervisor* sup = find(rec.id);
    if (!sup || sup->state().ref != rec.ref || sup->state().phase != Phase::kRecovering) continue;
    apply(*sup, sup->recovered(rec, spec_of(sup->state().key), now()));
  }
  schedule_reconcile();
}

void ControlLoop::cancel_timers(const ipam::LeaseKey& key) {
  auto h = handles_.find(key);
  if (h == handles_.end()) return;
  if (h->second.probe_timer) d_.executor->cancel(h->second.probe_timer);
  if (h->second.backoff_timer) d_.executor->cancel(h->second.backoff_timer);
  handles_.erase(h);  // (and with it a probe in flight)
}

void ControlLoop::on_exited(const runtime::InstanceId& id, const runtime::Ref& ref, const runtime::Exit& exit) {
  Supervisor* sup = find(id);
  if (!sup || ref.empty() || sup->state().ref != ref) return;
  apply(*sup, sup->exited(exit, spec_of(sup->state().key), now()));
}

// ---- health -----------------------------------------------------------------------------------

void ControlLoop::schedule_probe(const Supervisor::State& inst) {
  if (!inst.tracker) return;
  const Millis delay = std::max<Millis>(0, inst.tracker->next_probe_at() - d_.clock->monotonic_ms());
  auto& h = handles_[inst.key];
  if (h.probe_timer) d_.executor->cancel(h.probe_timer);
  h.probe_timer = d_.executor->after(delay, [this, key = inst.key] {
    if (auto it = handles_.find(key); it != handles_.end()) it->second.probe_timer = 0;
    run_probe(key);
  });
}

void ControlLoop::run_probe(const ipam::LeaseKey& key) {
  Supervisor* sup = find(key);
  const model::AppSpec* spec = spec_of(key);
  if (!sup || !spec || !sup->probing()) return;
  const auto& inst = sup->state();
  auto& h = handles_[key];
  if (spec->health.type == model::HealthType::kExec) {
    // Inside the instance: its runtime runs the command there (in a container: split into
    // words, without a shell).
    runtime::Runtime* rt = runtime_named(inst.runtime_name);
    if (!rt) return;
    runtime::ExecRequest req;
    if (spec->container()) req.argv = split_words(spec->health.command).value_or(std::vector<std::string>{});
    else req.argv = {"/bin/sh", "-c", spec->health.command};
    req.env = {{"BERTH_IP", inst.ip}, {"BERTH_ENV", key.env}, {"BERTH_APP", key.app},
               {"BERTH_INSTANCE", std::to_string(key.ordinal)}};
    for (const auto& [name, port] : spec->ports) req.env["BERTH_PORT_" + env_var_name(name)] = std::to_string(port);
    req.timeout_ms = spec->health.timeout_ms;
    req.max_output = 2048;
    h.probe_exec = rt->exec(inst.ref, req, [this, key](Result<runtime::ExecResult> r) {
      health::ProbeResult pr;
      if (!r.ok()) {
        // The runtime could not run the check (the instance's exit, if that is why, comes apart).
        pr.detail = "berth could not run the check: " + r.error().message;
        pr.inconclusive = true;
      } else if (r->timed_out) {
        pr.detail = fmt::format("exec → timed out after {}", format_duration(spec_of(key) ? spec_of(key)->health.timeout_ms : 0));
      } else {
        pr.ok = r->exit.success();
        std::string first_line = r->output.substr(0, r->output.find('\n'));
        pr.detail = pr.ok ? "exec → status 0"
                          : fmt::format("exec → {}{}", r->exit.description, first_line.empty() ? "" : ": " + first_line.substr(0, 200));
      }
      on_probe(key, pr);
    });
    return;
  }
  if (runtime::Runtime* rt = runtime_named(inst.runtime_name); rt && !rt->capabilities().direct_probe) {
    // Its addresses are not reachable from here: only a check inside it can tell.
    return on_probe(key, {false, fmt::format("the {} runtime's instances cannot be probed from the daemon; use health.type: "
                                             "exec", rt->name())});
  }
  health::ProbeTarget t;
  t.spec = spec->health;
  t.ip = inst.ip;
  if (auto p = spec->ports.find(spec->health.port); p != spec->ports.end()) t.port = p->second;
  h.probe = d_.prober->probe(t, [this, key](health::ProbeResult r) {
    // Runs later, on the loop; the probe handle may be gone by then only if cancelled, and a
    // cancelled probe never calls back.
    d_.executor->post(guarded([this, key, r = std::move(r)] { on_probe(key, r); }));
  });
}

void ControlLoop::on_probe(const ipam::LeaseKey& key, const health::ProbeResult& r) {
  Supervisor* sup = find(key);
  const model::AppSpec* spec = spec_of(key);
  if (!sup || !spec || !sup->probing()) return;
  if (auto h = handles_.find(key); h != handles_.end()) {
    h->second.probe.reset();
    h->second.probe_exec.reset();
  }
  apply(*sup, sup->probed(r, *spec, now()));
}

// ---- exec and logs ----------------------------------------------------------------------------

void ControlLoop::exec(const std::string& env, const std::string& app, int ordinal, std::vector<std::string> argv,
                       Millis timeout_ms, std::function<void(Result<runtime::ExecResult>)> done) {
  BERTH_ASSERT_LOOP(*d_.executor);
  auto path = log_path(env, app, ordinal);  // the same checks: a known app this environment runs
  if (!path.ok()) return done(path.error());
  if (argv.empty()) return done(invalid("exec needs a command"));
  const Supervisor* sup = find(ipam::LeaseKey{env, app, ordinal});
  const Supervisor::State* inst = sup ? &sup->state() : nullptr;
  const bool running = inst && !inst->ref.empty() &&
                       (inst->phase == Phase::kStarting || inst->phase == Phase::kReady || inst->phase == Phase::kUnhealthy);
  if (!running)
    return done(conflict(fmt::format("{} #{} in {} is not running{}", app, ordinal, env,
                                     inst && !inst->message.empty() ? " (" + inst->message + ")" : "")));
  runtime::Runtime* rt = runtime_named(inst->runtime_name);
  if (!rt) return done(unavailable(fmt::format("the {} runtime is not available", inst->runtime_name)));
  runtime::ExecRequest req;
  req.argv = std::move(argv);
  req.timeout_ms = timeout_ms;
  req.max_output = 1 << 20;
  const std::uint64_t id = ++next_exec_;
  execs_[id] = rt->exec(inst->ref, req, [this, id, done = std::move(done)](Result<runtime::ExecResult> r) {
    done(std::move(r));
    execs_.erase(id);
  });
}

void ControlLoop::logs(const std::string& env, const std::string& app, int ordinal, std::int64_t offset, std::size_t max,
                       std::function<void(Result<runtime::LogChunk>)> done) {
  BERTH_ASSERT_LOOP(*d_.executor);
  auto path = log_path(env, app, ordinal);
  if (!path.ok()) return done(path.error());
  const Supervisor* sup = find(ipam::LeaseKey{env, app, ordinal});
  runtime::Runtime* rt = sup && !sup->state().runtime_name.empty() ? runtime_named(sup->state().runtime_name) : nullptr;
  if (!rt)
    if (const auto* spec = spec_of({env, app, ordinal})) rt = runtime_for(*spec, nullptr);
  if (!rt) rt = runtime_named("process");
  if (!rt) return done(unavailable("no runtime to read logs from"));
  rt->logs({env, app, ordinal}, *path, offset, max, std::move(done));
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

// ---- lookup and events ------------------------------------------------------------------------

const model::AppSpec* ControlLoop::spec_of(const ipam::LeaseKey& key) const {
  // (The app as its environment defines it, whether it runs it or falls through.)
  if (!catalog_) return nullptr;
  const auto* env = catalog_->find(key.env);
  return env ? env->find(key.app) : nullptr;
}

void ControlLoop::emit(const std::string& env, const std::string& type, const std::string& app, int ordinal,
                       const std::string& ip, const std::string& message) {
  // Whatever is worth an event changed what the environment's status shows.
  if (!env.empty()) publisher_.status_changed(env);
  events_.emit(env, type, app, ordinal, ip, message);
  // Written with the others of this burst (one commit instead of one per event), then delivered.
  publisher_.schedule();
}

ControlLoop::Subscription ControlLoop::subscribe(std::function<void(const store::Event&)> fn) {
  BERTH_ASSERT_LOOP(*d_.executor);
  return events_.subscribe(std::move(fn));
}

void ControlLoop::unsubscribe(Subscription id) {
  BERTH_ASSERT_LOOP(*d_.executor);
  events_.unsubscribe(id);
}

}  // namespace berth::control
