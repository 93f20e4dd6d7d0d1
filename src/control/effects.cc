#include "control/effects.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include <fmt/format.h>

#include "base/text.h"
#include "control/loop.h"
#include "db/profile/profile.h"

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

Effects::Effects(const Deps& deps, const ipam::Ipam& ipam, std::map<std::string, std::uint32_t> env_uids, Hooks hooks)
    : d_(deps), ipam_(ipam), hooks_(std::move(hooks)), env_uids_(std::move(env_uids)) {
  if (!d_.instance_ids) return;
  // The lowest free id is the lowest gap below the highest one taken, else the one above it.
  const IdRange& ids = *d_.instance_ids;
  std::set<std::uint32_t> taken;
  for (const auto& [env, uid] : env_uids_)
    if (uid > ids.first && uid <= ids.last) taken.insert(uid);
  next_uid_ = taken.empty() ? ids.first + 1 : *taken.rbegin() + 1;
  for (std::uint32_t u = ids.first + 1; u < next_uid_; ++u)
    if (!taken.count(u)) free_uids_.insert(u);
}

Effects::~Effects() {
  for (auto& [key, h] : handles_) {
    if (h.probe_timer) d_.executor->cancel(h.probe_timer);
    if (h.backoff_timer) d_.executor->cancel(h.backoff_timer);
  }
}

// ---- runtimes and the network -----------------------------------------------------------------

runtime::Runtime* Effects::runtime_named(const std::string& name) const {
  for (auto* rt : d_.runtimes)
    if (rt->name() == name) return rt;
  return nullptr;
}

bool Effects::in_container(const model::AppSpec& spec) const {
  return spec.container() || (spec.database && !d_.db_image.empty());
}

runtime::Runtime* Effects::runtime_for(const model::AppSpec& spec, std::string* why) const {
  const bool container = in_container(spec);
  runtime::Runtime* rt = runtime_named(container ? "docker" : "process");
  if (!rt && why)
    *why = container ? fmt::format("{} runs from an image but this daemon has no container runtime: start berth "
                                          "serve with --docker-host unix:///path/to/docker.sock", spec.app)
                            : "this daemon has no process runtime";
  return rt;
}

void Effects::prepare_network(const model::NetworkSpec& n) {
  network_ = {"default", n.pool_text, model::format_ipv4(n.gateway())};
  if (prepared_ == network_) return;
  prepared_ = network_;
  network_ready_ = false;  // instances wait: their resolver is known once the network is there
  prepare_network_from(0, network_);
}

// One runtime after another (a bridge network first gives the gateway its address).
void Effects::prepare_network_from(std::size_t i, const runtime::Network& net) {
  if (prepared_ != net) return;  // the catalog moved on
  if (i == d_.runtimes.size()) {
    if (d_.on_network_ready) d_.on_network_ready(net);
    network_ready_ = true;
    hooks_.network_ready();
    return;
  }
  d_.runtimes[i]->prepare_network(net, guarded([this, net, i](Status st) {
    if (!st.ok()) {
      // Instances still launch; the runtime says again what is missing when they do.
      hooks_.emit("", "error", "", -1, net.gateway,
           fmt::format("the {} runtime could not prepare network {}: {}", d_.runtimes[i]->name(), net.subnet,
                       st.error().message));
    }
    prepare_network_from(i + 1, net);
  }));
}

void Effects::set_resolver(const std::string& ip, const std::string& note) {
  resolver_ = ip;
  resolver_note_ = note;
}

// ---- who instances run as ---------------------------------------------------------------------

Result<std::optional<Identity>> Effects::identity_for(const std::string& env, const model::AppSpec& spec) {
  if (!d_.instance_ids || spec.user == "root") return std::optional<Identity>();
  if (!spec.user.empty()) {
    if (spec.container()) return std::optional<Identity>();  // the container's user, inside it
    auto who = lookup_user(spec.user);
    if (!who.ok()) return who.error().wrap(fmt::format("user of app '{}'", spec.app));
    return std::optional<Identity>(*who);
  }
  const IdRange& ids = *d_.instance_ids;
  if (auto it = env_uids_.find(env); it != env_uids_.end()) return std::optional<Identity>(Identity{it->second, ids.group()});
  const std::uint32_t uid = free_uids_.empty() ? next_uid_ : *free_uids_.begin();
  if (uid > ids.last)
    return unavailable(fmt::format("every instance id of {}-{} is taken ({} environments); widen berth serve --instance-ids",
                                   ids.first, ids.last, env_uids_.size()));
  BERTH_TRY(d_.store->put_env_uid(env, uid));
  if (free_uids_.erase(uid) == 0) ++next_uid_;
  env_uids_[env] = uid;
  return std::optional<Identity>(Identity{uid, ids.group()});
}

Status Effects::release_uid(const std::string& env) {
  auto it = env_uids_.find(env);
  if (it == env_uids_.end()) return {};
  if (d_.databases && d_.databases->has_copies(env)) return {};  // kept data stays its own
  BERTH_TRY(d_.store->erase_env_uid(env));
  if (d_.instance_ids && it->second > d_.instance_ids->first && it->second < next_uid_) free_uids_.insert(it->second);
  env_uids_.erase(it);
  return {};
}

// ---- instances --------------------------------------------------------------------------------

runtime::InstanceSpec Effects::instance_spec(const Supervisor::State& inst, const model::AppSpec& spec,
                                             const model::Environment& espec, const model::Catalog& catalog,
                                             const Artifact& artifact) const {
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
  const db::Copy* copy = spec.database && d_.databases ? d_.databases->find_copy(key.env, key.app) : nullptr;
  const bool db_container = spec.database && !d_.db_image.empty();
  if (copy) {
    // In a container its data is a volume filled from the copy's archive.
    vars["datadir"] = db_container ? std::string(kDbContainerDatadir) : copy->datadir;
    vars["rundir"] = db_container ? std::string(kDbContainerRundir) : copy->rundir;
  }
  const std::string domain = fmt::format("{}.{}", key.env, catalog.dns().zone);
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
  if (in_container(spec)) {
    if (!resolver_.empty()) rs.env["BERTH_DNS"] = resolver_ + ":53";
  } else if (!d_.dns_address.empty()) {
    rs.env["BERTH_DNS"] = d_.dns_address;
  }
  // Where the dependencies are: every instance's stable address, per named port.
  std::string dep_names;
  for (const auto& dep : spec.depends_on) {
    dep_names += (dep_names.empty() ? "" : ",") + dep.app;
    const std::string& where = espec.served_by.at(dep.app);
    const auto* serving = catalog.find(where);
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
      if (const db::ServerProfile* profile = db::server_profile(dspec->database->engine))
        rs.env[fmt::format("BERTH_DB_{}_URL", n)] = profile->url(dspec->database->user, dspec->database->password, host, port);
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
  } else if (db_container) {
    rs.workload = database_workload(spec, vars);
    if (copy) {
      // The volume is named after the copy: a reset or another version gets a fresh one.
      runtime::Mount m;
      m.source = fmt::format("{}_db-{}-{}", key.env, key.app, copy->created_at);
      m.target = kDbContainerDatadir;
      m.seed = copy->seed;
      rs.mounts.push_back(std::move(m));
    }
  } else {
    std::string command = model::substitute(spec.command, vars);
    for (const auto& a : spec.args) command += " " + shell_quote(model::substitute_raw(a, vars));
    rs.workload = runtime::ProcessWorkload{command};
  }
  rs.resources = {spec.resources.cpus, spec.resources.memory_bytes};
  for (const auto& c : spec.constraints) rs.constraints.push_back(c.words());
  rs.ip = inst.ip;
  rs.network = network_;
  if (!resolver_.empty()) rs.resolver = {resolver_, domain};
  rs.labels = {{"berth.env", key.env}, {"berth.app", key.app}, {"berth.ordinal", std::to_string(key.ordinal)}};

  const fs::path dir = fs::path(d_.data_dir) / "logs" / key.env;
  if (!log_dirs_.count(key.env)) {  // (once per environment, not one mkdir per launch)
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (!ec) log_dirs_.insert(key.env);
  }
  rs.log_path = (dir / fmt::format("{}.{}.log", key.app, key.ordinal)).string();
  return rs;
}

runtime::ImageWorkload Effects::database_workload(const model::AppSpec& spec,
                                                  const std::map<std::string, std::string>& vars) const {
  runtime::ImageWorkload w;
  w.image = d_.db_image;
  w.user = fmt::format("{0}:{0}", kDbContainerUid);
  std::string command = model::substitute(spec.command, vars);
  for (const auto& a : spec.args) command += " " + shell_quote(model::substitute_raw(a, vars));
  if (auto words = split_words(command)) {
    // (What the process form needs and a container's server goes without: db/profile/profile.h.)
    if (const db::ServerProfile* profile = spec.database ? db::server_profile(spec.database->engine) : nullptr)
      for (const auto& word : profile->not_in_containers) std::erase(*words, word);
    w.command = std::move(*words);
  } else {
    w.command = std::vector<std::string>{"/bin/sh", "-c", "exec " + command};  // (quotes split_words cannot take)
  }
  return w;
}

Result<Supervisor::Launch> Effects::launch(const Supervisor::State& inst, const model::AppSpec& spec,
                                           const model::Environment& espec, const model::Catalog& catalog,
                                           const Artifact& artifact, const std::string& fingerprint) {
  std::string why;
  runtime::Runtime* rt = runtime_for(spec, &why);
  if (!network_ready_) why = fmt::format("preparing network {}", network_.subnet);
  auto identity = identity_for(inst.key.env, spec);
  if (!identity.ok()) why = identity.error().message;
  if (!rt || !network_ready_ || !identity.ok()) return unavailable(why);
  runtime::InstanceSpec rs = instance_spec(inst, spec, espec, catalog, artifact);
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
  // (The runtime answers later, on the loop: the launch is told to the supervisor first.)
  rt->launch(rs);
  return Supervisor::Launch{rs.launch, rt->name(), std::move(what), fingerprint, artifact.build_id, in_container(spec)};
}

void Effects::stop(const Supervisor::State& inst, Millis grace_ms) {
  if (runtime::Runtime* rt = runtime_named(inst.runtime_name)) rt->stop(inst.ref, grace_ms);
}

void Effects::cancel(const ipam::LeaseKey& key) {
  auto h = handles_.find(key);
  if (h == handles_.end()) return;
  if (h->second.probe_timer) d_.executor->cancel(h->second.probe_timer);
  if (h->second.backoff_timer) d_.executor->cancel(h->second.backoff_timer);
  handles_.erase(h);  // (and with it a probe in flight)
}

void Effects::schedule_probe(const Supervisor::State& inst) {
  if (!inst.tracker) return;
  const Millis delay = std::max<Millis>(0, inst.tracker->next_probe_at() - d_.clock->monotonic_ms());
  auto& h = handles_[inst.key];
  if (h.probe_timer) d_.executor->cancel(h.probe_timer);
  h.probe_timer = d_.executor->after(delay, [this, key = inst.key] {
    if (auto it = handles_.find(key); it != handles_.end()) it->second.probe_timer = 0;
    hooks_.probe_due(key);
  });
}

void Effects::probe(const Supervisor::State& inst, const model::AppSpec& app) {
  const model::AppSpec* spec = &app;
  const ipam::LeaseKey& key = inst.key;
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
    h.probe_exec = rt->exec(inst.ref, req, [this, key, timeout = spec->health.timeout_ms](Result<runtime::ExecResult> r) {
      health::ProbeResult pr;
      if (!r.ok()) {
        // The runtime could not run the check (the instance's exit, if that is why, comes apart).
        pr.detail = "berth could not run the check: " + r.error().message;
        pr.inconclusive = true;
      } else if (r->timed_out) {
        pr.detail = fmt::format("exec → timed out after {}", format_duration(timeout));
      } else {
        pr.ok = r->exit.success();
        std::string first_line = r->output.substr(0, r->output.find('\n'));
        pr.detail = pr.ok ? "exec → status 0"
                          : fmt::format("exec → {}{}", r->exit.description, first_line.empty() ? "" : ": " + first_line.substr(0, 200));
      }
      hooks_.probed(key, pr);
    });
    return;
  }
  if (runtime::Runtime* rt = runtime_named(inst.runtime_name); rt && !rt->capabilities().direct_probe) {
    // Its addresses are not reachable from here: only a check inside it can tell.
    return hooks_.probed(key, {false, fmt::format("the {} runtime's instances cannot be probed from the daemon; use health.type: "
                                             "exec", rt->name())});
  }
  health::ProbeTarget t;
  t.spec = spec->health;
  t.ip = inst.ip;
  if (auto p = spec->ports.find(spec->health.port); p != spec->ports.end()) t.port = p->second;
  h.probe = d_.prober->probe(t, [this, key](health::ProbeResult r) {
    // Runs later, on the loop; the probe handle may be gone by then only if cancelled, and a
    // cancelled probe never calls back.
    d_.executor->post(guarded([this, key, r = std::move(r)] { hooks_.probed(key, r); }));
  });
}

void Effects::probe_done(const ipam::LeaseKey& key) {
  if (auto h = handles_.find(key); h != handles_.end()) {
    h->second.probe.reset();
    h->second.probe_exec.reset();
  }
}

void Effects::backoff(const ipam::LeaseKey& key, Millis delay) {
  auto& h = handles_[key];
  if (h.backoff_timer) d_.executor->cancel(h.backoff_timer);
  h.backoff_timer = d_.executor->after(delay, [this, key] {
    if (auto it = handles_.find(key); it != handles_.end()) it->second.backoff_timer = 0;
    hooks_.backoff_elapsed(key);
  });
}

void Effects::exec(const Supervisor::State& state, std::vector<std::string> argv, Millis timeout_ms,
                   std::function<void(Result<runtime::ExecResult>)> done) {
  const Supervisor::State* inst = &state;
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

}  // namespace berth::control
