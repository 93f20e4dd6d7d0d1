// Containers: networks, launch (create → record → start), output, exits and stops. The rest of
// DockerRuntime is in recover.cc (adoption after a restart) and exec.cc (exec, image builds).
#include "runtime/docker/docker_runtime.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <mutex>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/text.h"
#include "runtime/docker/internal.h"

namespace berth::runtime::docker {
namespace fs = std::filesystem;
using nlohmann::json;

std::string short_id(const std::string& id) { return id.substr(0, 12); }

std::string since_after(std::string_view rfc3339) {
  if (rfc3339.size() < 20) return "";
  std::tm tm{};
  if (std::sscanf(std::string(rfc3339.substr(0, 19)).c_str(), "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon,
                  &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
    return "";
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  long long seconds = timegm(&tm);
  long long nanos = 0;
  if (rfc3339.size() > 20 && rfc3339[19] == '.') {
    std::string digits;
    for (std::size_t i = 20; i < rfc3339.size() && std::isdigit(static_cast<unsigned char>(rfc3339[i])); ++i) digits += rfc3339[i];
    digits.resize(9, '0');
    nanos = std::stoll(digits);
  }
  nanos += 1;
  if (nanos >= 1'000'000'000) {
    nanos -= 1'000'000'000;
    ++seconds;
  }
  return fmt::format("{}.{:09d}", seconds, nanos);
}

Exit exit_of(std::optional<int> code, bool oom) {
  Exit e;
  if (!code) {
    e.description = "ended";
    return e;
  }
  e.status_known = true;
  e.code = *code;
  if (*code > 128 && *code < 128 + 65) e.signal = *code - 128;
  e.description = describe(e) + (oom ? " (out of memory)" : "");
  return e;
}

DockerRuntime::DockerRuntime(Executor& loop, DockerOptions options, std::unique_ptr<Engine> engine)
    : loop_(loop), options_(std::move(options)), engine_(std::move(engine)) {}

Result<std::unique_ptr<DockerRuntime>> DockerRuntime::create(Executor& loop, DockerOptions options) {
  auto engine = Engine::open(options.host);
  if (!engine.ok()) return engine.error();
  std::error_code ec;
  fs::create_directories(options.state_dir, ec);
  if (ec) return unavailable(fmt::format("cannot create {}: {}", options.state_dir, ec.message()));
  std::unique_ptr<DockerRuntime> rt(new DockerRuntime(loop, std::move(options), std::move(engine.value())));
  rt->watch_events();
  return rt;
}

DockerRuntime::~DockerRuntime() {
  *alive_ = false;
  events_.reset();
  for (auto& [name, c] : containers_)
    if (c->drain_timer) loop_.cancel(c->drain_timer);
  engine_.reset();  // joins the Engine's thread before anything it may still use goes
}

Capabilities DockerRuntime::capabilities() const { return {}; }

std::string DockerRuntime::container_name(const InstanceId& id) const {
  return fmt::format("berth-{}-{}-{}-{}", options_.data_id, id.env, id.app, id.ordinal);
}
std::string DockerRuntime::network_name(const Network& n) const { return fmt::format("berth-{}-{}", options_.data_id, n.name); }
std::string DockerRuntime::volume_name(const std::string& scoped) const { return fmt::format("berth-{}-{}", options_.data_id, scoped); }

void DockerRuntime::call(Call c, std::function<void(Result<Response>)> on_loop) {
  engine_->request(std::move(c), [this, alive = std::weak_ptr<bool>(alive_), on_loop = std::move(on_loop)](Result<Response> r) mutable {
    if (!alive.lock()) return;
    loop_.post([alive, on_loop = std::move(on_loop), r = std::move(r)]() mutable {
      if (auto a = alive.lock(); a && *a) on_loop(std::move(r));
    });
  });
}

DockerRuntime::Container* DockerRuntime::by_ref(const Ref& ref) {
  auto n = names_.find(ref);
  if (n == names_.end()) return nullptr;
  auto c = containers_.find(n->second);
  return c == containers_.end() ? nullptr : c->second.get();
}

// ---- networks ---------------------------------------------------------------------------------

void DockerRuntime::prepare_network(const Network& network, std::function<void(Status)> done) {
  ensure_network(network, std::move(done));
}

Result<std::string> fence_range(const std::string& subnet, int size) {
  const auto slash = subnet.find('/');
  in_addr a{};
  int len = -1;
  if (slash != std::string::npos) {
    const std::string bits = subnet.substr(slash + 1);
    if (!bits.empty() && bits.size() <= 2 && std::all_of(bits.begin(), bits.end(), [](char c) { return c >= '0' && c <= '9'; }))
      len = std::stoi(bits);
  }
  if (slash == std::string::npos || len < 0 || len > 32 || ::inet_pton(AF_INET, subnet.substr(0, slash).c_str(), &a) != 1)
    return invalid(fmt::format("pool {}: not a.b.c.d/len", subnet));
  if (size < 4 || (size & (size - 1)) != 0) return invalid(fmt::format("fence of {} addresses: not a power of two ≥ 4", size));
  const std::uint64_t span = std::uint64_t{1} << (32 - len);
  if (span < static_cast<std::uint64_t>(size) * 4)
    return invalid(fmt::format("pool {} has {} addresses: too small to spare the last {} for Docker's own endpoints (a /{} "
                               "or larger is needed)",
                               subnet, span, size, 32 - std::countr_zero(static_cast<unsigned>(size)) - 2));
  const std::uint32_t mask = len == 0 ? 0 : ~std::uint32_t{0} << (32 - len);
  const std::uint32_t first = (ntohl(a.s_addr) & mask) + static_cast<std::uint32_t>(span - static_cast<std::uint64_t>(size));
  in_addr f{htonl(first)};
  char text[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &f, text, sizeof text);
  return fmt::format("{}/{}", text, 32 - std::countr_zero(static_cast<unsigned>(size)));
}

void DockerRuntime::ensure_network(const Network& network, std::function<void(Status)> done) {
  const std::string name = network_name(network);
  auto& ns = networks_[name];
  if (!ns) ns = std::make_unique<NetworkState>();
  if (ns->ready && ns->network == network) {
    loop_.post([done = std::move(done), st = ns->status] { done(st); });
    return;
  }
  ns->waiters.push_back(std::move(done));
  if (ns->working) return;
  ns->working = true;
  ns->network = network;
  if (options_.overlay_fence > 0 && !options_.manages_network) {
    // A worker's: the manager made it; it appears here with the first container on it.
    loop_.post([this, alive = std::weak_ptr<bool>(alive_), name] {
      if (auto a = alive.lock(); a && *a) network_done(name, {});
    });
    return;
  }
  call({"GET", "/networks/" + name, "", "", "application/json", 30'000}, [this, name, network](Result<Response> r) {
    if (!r.ok()) return network_done(name, r.error());
    if (r->status == 404) return create_network(network);
    if (!r->ok()) return network_done(name, unavailable(fmt::format("inspecting network {}: {}", name, error_message(*r))));
    json j = json::parse(r->body, nullptr, false);
    std::string subnet;
    if (j.is_object() && j.contains("IPAM") && j["IPAM"].is_object() && j["IPAM"].contains("Config") &&
        j["IPAM"]["Config"].is_array() && !j["IPAM"]["Config"].empty() && j["IPAM"]["Config"][0].is_object())
      subnet = j["IPAM"]["Config"][0].value("Subnet", "");
    if (subnet != network.subnet)
      return network_done(name, conflict(fmt::format("Docker network {} exists with subnet {}, but the pool is {}: remove it "
                                                     "(docker network rm {}) once no container uses it",
                                                     name, subnet.empty() ? "(none)" : subnet, network.subnet, name)));
    if (options_.overlay_fence > 0) {
      // Docker's own range must be berth's fence: were it wider, Docker could take an address
      // berth assigns.
      const std::string range = j["IPAM"]["Config"][0].value("IPRange", "");
      auto fence = fence_range(network.subnet, options_.overlay_fence);
      if (fence.ok() && range != *fence)
        return network_done(name, conflict(fmt::format(
            "Docker network {} leaves {} to Docker, but berth now leaves it {} (--cluster-max-hosts changed?): start the "
            "daemon as the network was made, or remove the network once no container uses it",
            name, range.empty() ? "(no range)" : range, *fence)));
    }
    network_done(name, {});
  });
}

void DockerRuntime::create_network(const Network& network) {
  const std::string name = network_name(network);
  // A bridge: the gateway alone as the dynamic range, so Docker never picks an address berth
  // might assign. An overlay: the fence, since every host's load balancer endpoint takes one.
  std::string range = network.gateway + "/32";
  if (options_.overlay_fence > 0) {
    auto fence = fence_range(network.subnet, options_.overlay_fence);
    if (!fence.ok()) return network_done(name, fence.error());
    range = *fence;
  }
  json body = {{"Name", name},
               {"Driver", options_.overlay_fence > 0 ? "overlay" : "bridge"},
               {"CheckDuplicate", true},
               {"IPAM", {{"Driver", "default"},
                         {"Config", json::array({{{"Subnet", network.subnet}, {"Gateway", network.gateway},
                                                  {"IPRange", range}}})}}},
               {"Labels", {{"berth.data", options_.data_id}, {"berth.pool", network.subnet}}}};
  if (options_.overlay_fence > 0) body["Attachable"] = true;
  call({"POST", "/networks/create", body.dump(), "", "application/json", 30'000}, [this, name, network](Result<Response> r) {
    if (!r.ok()) return network_done(name, r.error());
    if (r->status == 409) {  // made meanwhile by someone else: check it as it is
      networks_[name]->working = false;
      auto waiters = std::move(networks_[name]->waiters);
      for (auto& w : waiters) ensure_network(network, std::move(w));
      return;
    }
    if (!r->ok()) {
      const std::string why = error_message(*r);
      if (why.find("overlaps") == std::string::npos)
        return network_done(name, unavailable(fmt::format("creating Docker network {} for pool {}: {}", name, network.subnet, why)));
      // Name the network in the way: the pool has to move, or that network has to go.
      return call({"GET", "/networks", "", "", "application/json", 30'000}, [this, name, network, why](Result<Response> list) {
        std::string other;
        json nets = list.ok() ? json::parse(list->body, nullptr, false) : json();
        if (nets.is_array())
          for (const auto& n : nets)
            if (n.is_object() && n.contains("IPAM") && n["IPAM"].is_object() && n["IPAM"].contains("Config") &&
                n["IPAM"]["Config"].is_array())
              for (const auto& c : n["IPAM"]["Config"])
                if (c.is_object() && c.contains("Subnet") && c["Subnet"].is_string())
                  other += fmt::format("{}{} ({})", other.empty() ? "" : ", ", n.value("Name", "?"), c["Subnet"].get<std::string>());
        network_done(name, conflict(fmt::format("creating Docker network {} for pool {}: {}; networks on this dockerd: {}. "
                                                "Choose a network.pool no other network overlaps, or remove the one in the "
                                                "way (docker network rm NAME)",
                                                name, network.subnet, why, other.empty() ? "(none found)" : other)));
      });
    }
    network_done(name, {});
  });
}

void DockerRuntime::network_done(const std::string& name, Status st) {
  auto& ns = networks_[name];
  ns->working = false;
  ns->ready = st.ok();
  ns->status = st;
  auto waiters = std::move(ns->waiters);
  for (auto& w : waiters) w(st);
}

// ---- launch -----------------------------------------------------------------------------------

void DockerRuntime::launch(const InstanceSpec& spec) {
  BERTH_ASSERT_LOOP(loop_);
  const std::string name = container_name(spec.id);
  if (!std::holds_alternative<ImageWorkload>(spec.workload)) {
    loop_.post([this, id = spec.id, launch = spec.launch, alive = std::weak_ptr<bool>(alive_)] {
      if (alive.lock() && listener_) listener_->on_failed(id, launch, "", invalid("the Docker runtime runs images, not commands"));
    });
    return;
  }
  if (containers_.count(name)) {
    loop_.post([this, id = spec.id, launch = spec.launch, name, alive = std::weak_ptr<bool>(alive_)] {
      if (alive.lock() && listener_)
        listener_->on_failed(id, launch, "", conflict(fmt::format("container {} is still being handled", name)));
    });
    return;
  }
  auto c = std::make_unique<Container>();
  c->spec = spec;
  c->id = spec.id;
  c->launch = spec.launch;
  c->name = name;
  c->network = network_name(spec.network);
  c->log_path = spec.log_path;
  containers_[name] = std::move(c);
  ensure_network(spec.network, [this, name](Status st) {
    if (!st.ok()) return fail_launch(name, st.error());
    check_image(name);
  });
}

void DockerRuntime::fail_launch(const std::string& name, const Error& error) {
  auto it = containers_.find(name);
  if (it == containers_.end()) return;
  auto c = std::move(it->second);
  containers_.erase(it);
  Ref ref = c->ref;
  if (!ref.empty()) names_.erase(ref);
  auto report = [this, id = c->id, launch = c->launch, ref, error] {
    if (listener_) listener_->on_failed(id, launch, ref, error);
  };
  if (ref.empty()) return report();
  remove_container(ref, c->network, report);  // nothing of it is left when on_failed arrives
}

void DockerRuntime::check_image(const std::string& name) {
  Container& c = *containers_.at(name);
  const std::string image = std::get<ImageWorkload>(c.spec.workload).image;
  call({"GET", "/images/" + image + "/json", "", "", "application/json", 30'000}, [this, name, image](Result<Response> r) {
    if (!containers_.count(name)) return;
    if (!r.ok()) return fail_launch(name, r.error());
    if (r->status == 404)
      return fail_launch(name, not_found(fmt::format("image '{}' is not on the Docker host ({}); berth never pulls: build "
                                                     "it there or load it (docker load)",
                                                     image, engine_->socket_path())));
    if (!r->ok()) return fail_launch(name, unavailable(fmt::format("inspecting image '{}': {}", image, error_message(*r))));
    make_volumes(name, 0);
  });
}

void DockerRuntime::make_volumes(const std::string& name, std::size_t next) {
  Container& c = *containers_.at(name);
  while (next < c.spec.mounts.size() && c.spec.mounts[next].kind != Mount::Kind::kVolume) ++next;
  if (next == c.spec.mounts.size()) return create_container(name, false);
  const Mount& m = c.spec.mounts[next];
  const std::string volume = volume_name(m.source);
  json labels = {{"berth.data", options_.data_id}, {"berth.env", c.id.env}};
  if (!m.seed.empty()) labels["berth.app"] = c.id.app, labels["berth.seeded"] = "1";
  json body = {{"Name", volume}, {"Labels", labels}};
  call({"POST", "/volumes/create", body.dump(), "", "application/json", 30'000}, [this, name, next, volume](Result<Response> r) {
    if (!containers_.count(name)) return;
    if (!r.ok()) return fail_launch(name, r.error());
    if (!r->ok()) return fail_launch(name, unavailable(fmt::format("creating volume {}: {}", volume, error_message(*r))));
    if (!containers_.at(name)->spec.mounts[next].seed.empty()) return seed_volume(name, next);  // (runtime/docker/seed.cc)
    make_volumes(name, next + 1);
  });
}

void DockerRuntime::create_container(const std::string& name, bool retried) {
  Container& c = *containers_.at(name);
  const InstanceSpec& s = c.spec;
  const auto& w = std::get<ImageWorkload>(s.workload);
  json env = json::array();
  for (const auto& [k, v] : s.env) env.push_back(k + "=" + v);
  // berth.log: where its output goes, so a restarted daemon that adopts it knows.
  json labels = {{"berth.data", options_.data_id}, {"berth.launch", std::to_string(s.launch)}, {"berth.log", s.log_path}};
  for (const auto& [k, v] : s.labels) labels[k] = v;
  json exposed = json::object();
  for (const auto& [pname, port] : s.ports) exposed[fmt::format("{}/tcp", port)] = json::object();
  json mounts = json::array();
  for (const auto& m : s.mounts)
    mounts.push_back({{"Type", m.kind == Mount::Kind::kVolume ? "volume" : "bind"},
                      {"Source", m.kind == Mount::Kind::kVolume ? volume_name(m.source) : m.source},
                      {"Target", m.target},
                      {"ReadOnly", m.read_only}});
  json host = {{"NetworkMode", c.network},
               {"Mounts", mounts},
               {"RestartPolicy", {{"Name", "no"}}},  // berth supervises
               {"SecurityOpt", json::array({"no-new-privileges"})},
               {"LogConfig", {{"Type", "json-file"}, {"Config", {{"max-size", "50m"}, {"max-file", "2"}}}}}};
  // Least privilege: no capabilities (binding a port below 1024 needs `user: root`).
  if (!s.privileged) host["CapDrop"] = json::array({"ALL"});
  if (s.resources.cpus > 0) host["NanoCpus"] = static_cast<std::int64_t>(std::llround(s.resources.cpus * 1e9));
  if (s.resources.memory_bytes) host["Memory"] = s.resources.memory_bytes;
  if (!s.resolver.server.empty()) {
    host["Dns"] = json::array({s.resolver.server});
    host["DnsSearch"] = json::array({s.resolver.search});
    host["DnsOptions"] = json::array({"ndots:1"});  // short names try the environment's domain first
  }
  json body = {{"Image", w.image},
               {"Env", env},
               {"Labels", labels},
               {"Hostname", fmt::format("{}-{}", s.id.app, s.id.ordinal)},
               {"ExposedPorts", exposed},
               {"HostConfig", host},
               {"NetworkingConfig", {{"EndpointsConfig", {{c.network, {{"IPAMConfig", {{"IPv4Address", s.ip}}}}}}}}}};
  if (w.entrypoint) body["Entrypoint"] = *w.entrypoint;
  if (w.command) body["Cmd"] = *w.command;
  if (!w.user.empty()) body["User"] = w.user;
  if (!w.workdir.empty()) body["WorkingDir"] = w.workdir;
  call({"POST", "/containers/create?name=" + percent_encode(name), body.dump(), "", "application/json", 60'000},
       [this, name, retried](Result<Response> r) {
         if (!containers_.count(name)) return;
         if (!r.ok()) return fail_launch(name, r.error());
         if (r->status == 409 && !retried) {
           // A container of this name that berth has no record of (its daemon died before
           // recording it): it never ran; remove it and create ours.
           call({"DELETE", "/containers/" + name + "?force=1", "", "", "application/json", 60'000},
                [this, name](Result<Response>) {
                  if (containers_.count(name)) create_container(name, true);
                });
           return;
         }
         if (!r->ok())
           return fail_launch(name, unavailable(fmt::format("creating container {}: {}", name, error_message(*r))));
         json j = json::parse(r->body, nullptr, false);
         std::string id = j.is_object() ? j.value("Id", "") : "";
         if (id.empty()) return fail_launch(name, unavailable("creating container: the Engine answered without an id"));
         created(name, id);
       });
}

void DockerRuntime::created(const std::string& name, const Ref& ref) {
  Container& c = *containers_.at(name);
  c.ref = ref;
  c.state = Container::State::kCreated;
  names_[ref] = name;
  auto recorded = [this, name, ref](Status st) {
    auto it = containers_.find(name);
    if (it == containers_.end() || it->second->ref != ref) return;  // (gone meanwhile)
    if (!st.ok()) return fail_launch(name, st.error());
    if (it->second->stop_requested) return begin_exit(name, std::nullopt, false);  // recorded, never started
    start_container(name);
  };
  if (!listener_) return recorded(internal("no listener"));
  listener_->on_created(c.id, c.launch, ref, std::move(recorded));
}

void DockerRuntime::start_container(const std::string& name) {
  Container& c = *containers_.at(name);
  c.state = Container::State::kStarting;
  call({"POST", "/containers/" + c.ref + "/start", "", "", "application/json", 60'000}, [this, name](Result<Response> r) {
    auto it = containers_.find(name);
    if (it == containers_.end()) return;
    Container& cc = *it->second;
    if (!r.ok()) return fail_launch(name, r.error());
    if (!r->ok() && r->status != 304)
      return fail_launch(name, unavailable(fmt::format("starting container {}: {}", name, error_message(*r))));
    cc.state = Container::State::kRunning;
    cc.started = true;
    for (const auto& m : cc.spec.mounts)
      if (!m.seed.empty()) fresh_volumes_.erase(volume_name(m.source));
    follow_logs(cc, "0");
    if (listener_) listener_->on_started(cc.id, cc.launch, cc.ref, {cc.spec.ip, "container " + short_id(cc.ref), 0, cc.seeded});
    if (cc.died) return begin_exit(name, cc.exit_code, cc.exit_known);
    if (cc.stop_requested) stop(cc.ref, cc.grace_ms);
  });
}

// ---- logs -------------------------------------------------------------------------------------

void DockerRuntime::follow_logs(Container& c, const std::string& since) {
  auto f = std::make_shared<LogFollower>();
  f->log_path = c.log_path;
  f->pos_path = fmt::format("{}/{}.logpos", options_.state_dir, c.ref);
  if (!f->log_path.empty()) f->fd = ::open(f->log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  f->pos_fd = ::open(f->pos_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  c.log = f;
  c.logs_drained = false;
  const std::string target = fmt::format("/containers/{}/logs?follow=1&stdout=1&stderr=1&timestamps=1&since={}", c.ref, since);
  const std::string name = c.name;
  f->stream = engine_->stream(
      {"GET", target, "", "", "application/json", 0}, [f](std::string_view piece) { return f->take(piece); },
      [this, f, name, alive = std::weak_ptr<bool>(alive_)](Result<Response>) {
        f->finish();
        if (!alive.lock()) return;
        loop_.post([this, name, f, alive] {
          if (!alive.lock()) return;
          auto it = containers_.find(name);
          if (it == containers_.end() || it->second->log != f) return;
          it->second->logs_drained = true;
          if (it->second->state == Container::State::kExiting) finish_exit(name);
        });
      });
}

void DockerRuntime::logs(const InstanceId&, const std::string& log_path, std::int64_t offset, std::size_t max,
                         std::function<void(Result<LogChunk>)> done) {
  loop_.post([done = std::move(done), chunk = read_log_file(log_path, offset, max)]() mutable { done(std::move(chunk)); });
}

// ---- events and exits -------------------------------------------------------------------------

void DockerRuntime::watch_events() {
  json filters = {{"type", json::array({"container"})},
                  {"label", json::array({"berth.data=" + options_.data_id})},
                  {"event", json::array({"die", "oom", "destroy"})}};
  std::string target = "/events?filters=" + percent_encode(filters.dump());
  if (!events_since_.empty()) target += "&since=" + events_since_;  // replay what a broken stream missed
  auto lines = std::make_shared<Lines>(1 << 20);
  auto alive = std::weak_ptr<bool>(alive_);
  events_ = engine_->stream(
      {"GET", target, "", "", "application/json", 0},
      [this, lines, alive](std::string_view piece) {
        lines->feed(piece, [&](std::string_view line, bool complete) {
          if (!complete) return;
          auto ev = parse_container_event(line);
          auto j = json::parse(line, nullptr, false);
          std::string when;
          if (j.is_object() && j.contains("timeNano") && j["timeNano"].is_number_integer()) {
            auto ns = j["timeNano"].get<std::int64_t>();
            when = fmt::format("{}.{:09d}", ns / 1'000'000'000, ns % 1'000'000'000 + 1);
          }
          if (!ev) return;
          loop_.post([this, alive, ev = *ev, when] {
            if (!alive.lock()) return;
            if (!when.empty()) events_since_ = when;
            events_backoff_ms_ = 500;
            on_container_event(ev.action, ev.id, ev.exit_code);
          });
        });
        return true;
      },
      [this, alive](Result<Response>) {
        if (!alive.lock()) return;
        loop_.post([this, alive] {
          if (!alive.lock()) return;
          // dockerd went away or restarted: listen again, replaying from the last event seen,
          // and check what ended meanwhile.
          events_backoff_ms_ = std::min<Millis>(events_backoff_ms_ * 2, 10'000);
          loop_.after(events_backoff_ms_, [this, alive] {
            if (!alive.lock()) return;
            watch_events();
            resync();
          });
        });
      });
}

void DockerRuntime::on_container_event(const std::string& action, const std::string& id, std::optional<int> exit_code) {
  Container* c = by_ref(id);
  if (!c) {
    if (action == "die" || action == "destroy") {
      if (died_unknown_.size() > 10'000) died_unknown_.clear();
      died_unknown_.insert(id);
    }
    return;
  }
  if (action == "oom") {
    c->oom = true;
    return;
  }
  if (c->died) return;
  c->died = true;
  c->exit_code = exit_code;
  c->exit_known = exit_code.has_value();
  if (c->state == Container::State::kRunning) begin_exit(c->name, exit_code, c->exit_known);
  // Created or starting: the start's answer handles it.
}

void DockerRuntime::begin_exit(const std::string& name, std::optional<int> exit_code, bool known) {
  auto it = containers_.find(name);
  if (it == containers_.end()) return;
  Container& c = *it->second;
  if (c.state == Container::State::kExiting) return;
  c.state = Container::State::kExiting;
  if (known) {
    c.exit_code = exit_code;
    c.exit_known = true;
  }
  // Its last output first: the log stream ends shortly after the container does.
  if (!c.log || c.logs_drained) return finish_exit(name);
  c.drain_timer = loop_.after(3000, [this, name] {
    auto jt = containers_.find(name);
    if (jt == containers_.end()) return;
    jt->second->drain_timer = 0;
    jt->second->logs_drained = true;
    finish_exit(name);
  });
}

void DockerRuntime::finish_exit(const std::string& name) {
  auto it = containers_.find(name);
  if (it == containers_.end() || it->second->reported) return;
  Container& c = *it->second;
  if (c.drain_timer) {
    loop_.cancel(c.drain_timer);
    c.drain_timer = 0;
  }
  c.reported = true;
  auto report = [this, name] {
    auto jt = containers_.find(name);
    if (jt == containers_.end()) return;
    auto cc = std::move(jt->second);
    containers_.erase(jt);
    names_.erase(cc->ref);
    cc->log.reset();
    std::error_code ec;
    fs::remove(fmt::format("{}/{}.logpos", options_.state_dir, cc->ref), ec);
    Exit e = cc->started ? exit_of(cc->exit_known ? cc->exit_code : std::nullopt, cc->oom)
                         : Exit{true, 0, 0, "stopped before it started"};
    if (listener_) listener_->on_exited(cc->id, cc->ref, e);
  };
  // How it ended, if the event did not say; then out of the network and gone.
  call({"GET", "/containers/" + c.ref + "/json", "", "", "application/json", 30'000}, [this, name, report](Result<Response> r) {
    auto jt = containers_.find(name);
    if (jt == containers_.end()) return;
    Container& cc = *jt->second;
    if (r.ok() && r->ok()) {
      json j = json::parse(r->body, nullptr, false);
      if (j.is_object() && j.contains("State") && j["State"].is_object()) {
        const json& st = j["State"];
        if (st.value("OOMKilled", false)) cc.oom = true;
        if (!cc.exit_known && st.contains("ExitCode") && st["ExitCode"].is_number_integer() &&
            st.value("Status", "") == "exited") {
          cc.exit_code = st["ExitCode"].get<int>();
          cc.exit_known = true;
        }
      }
    }
    remove_container(cc.ref, cc.network, report);
  });
}

void DockerRuntime::remove_container(const Ref& ref, const std::string& network, std::function<void()> then) {
  // Disconnect first: dockerd does not always free a static address on removal (moby#27754).
  json body = {{"Container", ref}, {"Force", true}};
  call({"POST", "/networks/" + network + "/disconnect", body.dump(), "", "application/json", 30'000},
       [this, ref, then = std::move(then)](Result<Response>) {
         call({"DELETE", "/containers/" + ref + "?force=1", "", "", "application/json", 60'000},
              [then](Result<Response>) { then(); });
       });
}

void DockerRuntime::stop(const Ref& ref, Millis grace_ms) {
  BERTH_ASSERT_LOOP(loop_);
  Container* c = by_ref(ref);
  if (!c) return;
  c->stop_requested = true;
  c->grace_ms = grace_ms;
  if (c->state != Container::State::kRunning) return;  // created or starting: handled when it gets there
  const long seconds = std::max<long>(1, static_cast<long>((grace_ms + 999) / 1000));
  const std::string name = c->name;
  // dockerd answers once the container is gone (SIGTERM, SIGKILL after `seconds`).
  call({"POST", fmt::format("/containers/{}/stop?t={}", ref, seconds), "", "", "application/json", seconds * 1000 + 30'000},
       [this, name](Result<Response> r) {
         auto it = containers_.find(name);
         if (it == containers_.end()) return;
         if (r.ok() && (r->ok() || r->status == 304 || r->status == 404)) return begin_exit(name, std::nullopt, false);
         // Not stopped (dockerd busy?): the event or the next stop settles it.
       });
}

}  // namespace berth::runtime::docker
