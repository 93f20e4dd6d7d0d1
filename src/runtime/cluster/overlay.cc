// The cluster's overlay network: made on the first host, berth's sandbox on it (the daemon's
// way onto it), and an anchor container on every other host.
#include <algorithm>
#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "runtime/cluster/cluster_runtime.h"
#include "runtime/cluster/internal.h"

namespace berth::runtime::cluster {

using json = nlohmann::json;

void ClusterRuntime::prepare_network(const Network& network, std::function<void(Status)> done) {
  when_started([this, network, done = std::move(done)]() mutable {
    hosts_[0]->rt->prepare_network(network, [this, network, done = std::move(done)](Status st) mutable {
      if (!st.ok()) return done(st);
      network_ = network;
      // The sandbox first: the anchors' lease holders renew with the table in it.
      ensure_sandbox(network, [this, done = std::move(done)](Status sandboxed) {
        if (sandboxed.ok())
          for (std::size_t i = 1; i < hosts_.size(); ++i)
            if (hosts_[i]->state == Host::State::kUp) anchor(i);
        done(sandboxed);
      });
    });
  });
}

json ClusterRuntime::sandbox_cmd() const {
  return json::array({"/pause", "serve-leases", std::to_string(lease::kPort)});
}

void ClusterRuntime::sandbox_call(engine::Call c, std::function<void(Result<engine::Response>)> on_loop) {
  manager_engine_->request(std::move(c), [this, alive = std::weak_ptr<bool>(alive_), on_loop = std::move(on_loop)](
                                             Result<engine::Response> r) mutable {
    if (!alive.lock()) return;
    loop_.post([alive, on_loop = std::move(on_loop), r = std::move(r)]() mutable {
      if (auto a = alive.lock(); a && *a) on_loop(std::move(r));
    });
  });
}

// berth's own container on the overlay, on this daemon's host: nothing runs in it but a pause
// program; the daemon borrows its network namespace. Labelled berth.sandbox (not berth.data, so
// no host runtime takes it for an instance).
void ClusterRuntime::ensure_sandbox(const Network& network, std::function<void(Status)> done) {
  const std::string net = hosts_[0]->rt->network_name(network);
  const std::string name = fmt::format("berth-{}-sandbox-{}", options_.data_id, network.name);
  auto adopt = [this, net, name, done](Result<engine::Response> r) {
    if (!r.ok()) return done(r.error());
    if (!r->ok()) return done(unavailable(fmt::format("inspecting {}: {}", name, engine::error_message(*r))));
    json j = json::parse(r->body, nullptr, false);
    const json* state = j.is_object() && j.contains("State") && j["State"].is_object() ? &j["State"] : nullptr;
    const int pid = state && (*state)["Pid"].is_number_integer() ? (*state)["Pid"].get<int>() : 0;
    std::string ip;
    if (j.is_object() && j.contains("NetworkSettings") && j["NetworkSettings"].is_object() &&
        j["NetworkSettings"].contains("Networks") && j["NetworkSettings"]["Networks"].is_object() &&
        j["NetworkSettings"]["Networks"].contains(net) && j["NetworkSettings"]["Networks"][net].is_object())
      ip = j["NetworkSettings"]["Networks"][net].value("IPAddress", "");
    if (pid <= 0 || ip.empty()) return done(unavailable(fmt::format("{} runs nothing on {}", name, net)));
    auto ns = Netns::of_process(pid);
    if (!ns.ok()) return done(ns.error().wrap(fmt::format("the sandbox {} (is this daemon on host {}?)", name, options_.hosts[0])));
    sandbox_netns_ = std::move(ns.value());
    sandbox_ip_ = ip;
    std::fprintf(stderr, "berth: cluster: the daemon reaches network %s through its sandbox %s at %s\n", net.c_str(),
                 name.c_str(), ip.c_str());
    if (on_gateway_) on_gateway_(*sandbox_netns_, sandbox_ip_);
    done({});
  };
  auto create = [this, net, name, done, adopt]() {
    json body = {{"Image", options_.sandbox_image},
                 {"Cmd", sandbox_cmd()},
                 {"Env", json::array({"BERTH_LEASE_TOKEN=" + lease_token_})},
                 {"Labels", {{"berth.sandbox", options_.data_id}}},
                 {"HostConfig", {{"NetworkMode", net}, {"CapDrop", json::array({"ALL"})}, {"ReadonlyRootfs", true},
                                 {"SecurityOpt", json::array({"no-new-privileges"})}}}};
    sandbox_call({"POST", "/containers/create?name=" + name, body.dump(), "", "application/json", 60'000},
                 [this, name, done, adopt](Result<engine::Response> r) {
                   if (!r.ok()) return done(r.error());
                   if (r->status == 404)
                     return done(not_found(fmt::format("the sandbox image {} is not on {}: make it there with "
                                                       "scripts/make-images.sh --sandbox (a static pause program)",
                                                       options_.sandbox_image, options_.hosts[0])));
                   if (!r->ok()) return done(unavailable(fmt::format("creating {}: {}", name, engine::error_message(*r))));
                   sandbox_call({"POST", "/containers/" + name + "/start", "", "", "application/json", 120'000},
                                [this, name, done, adopt](Result<engine::Response> s) {
                                  if (!s.ok()) return done(s.error());
                                  if (!s->ok())
                                    return done(unavailable(fmt::format("starting {}: {}", name, engine::error_message(*s))));
                                  sandbox_call({"GET", "/containers/" + name + "/json", "", "", "application/json", 30'000}, adopt);
                                });
                 });
  };
  sandbox_call({"GET", "/containers/" + name + "/json", "", "", "application/json", 30'000},
               [this, name, create, adopt](Result<engine::Response> r) {
                 if (r.ok() && r->status == 404) return create();
                 json j = r.ok() && r->ok() ? json::parse(r->body, nullptr, false) : json();
                 const bool running = j.is_object() && j.contains("State") && j["State"].is_object() &&
                                      j["State"].value("Running", false);
                 // (One from an older berth, without the lease table, or with another token, is made again.)
                 const json* config = j.is_object() && j.contains("Config") && j["Config"].is_object() ? &j["Config"] : nullptr;
                 const std::string token = "BERTH_LEASE_TOKEN=" + lease_token_;
                 const bool current = config && config->contains("Cmd") && (*config)["Cmd"] == sandbox_cmd() &&
                                      config->contains("Env") && (*config)["Env"].is_array() &&
                                      std::find((*config)["Env"].begin(), (*config)["Env"].end(), token) != (*config)["Env"].end();
                 if (running && current) return adopt(std::move(r));
                 // Left from before (stopped, or not inspectable): made again.
                 sandbox_call({"DELETE", "/containers/" + name + "?force=1", "", "", "application/json", 60'000},
                              [create](Result<engine::Response>) { create(); });
               });
}

// A container of berth's own on the overlay on host `i` (made again each time the host comes up:
// leaving the Swarm took its network away), so that the host has the network before an instance
// needs it; it holds the host's lease (lease.h). Labelled berth.sandbox: no fence removes it.
// Failures are said, not fatal.
void ClusterRuntime::anchor(std::size_t i) {
  if (!network_ || i == 0 || sandbox_ip_.empty()) return;
  // Its lease first: a host that comes up (added, back after a loss, met again by a restarted
  // daemon) may hold a revoked one, and its holder would kill what berth places there.
  const Millis up_at = hosts_[i]->up_at;
  lease_until_ok(lease::Verb::kRestore, hosts_[i]->hostname,
                 [this, i, up_at] { return hosts_[i]->state == Host::State::kUp && hosts_[i]->up_at == up_at; },
                 [this, i] { make_anchor(i); });
}

void ClusterRuntime::make_anchor(std::size_t i) {
  if (!network_ || hosts_[i]->state != Host::State::kUp) return;
  const std::string net = hosts_[0]->rt->network_name(*network_);
  const std::string name = fmt::format("berth-{}-anchor-{}", options_.data_id, network_->name);
  ensure_image(i, options_.sandbox_image, [this, i, net, name](Status st) {
    Host& h = *hosts_[i];
    auto say = [&h](const std::string& what) {
      std::fprintf(stderr, "berth: cluster: the overlay's anchor on %s: %s (its first instance will wait for the network)\n",
                   h.hostname.c_str(), what.c_str());
    };
    if (!st.ok()) return say(st.error().message);
    swarm_.call(h.endpoint, {"DELETE", "/containers/" + name + "?force=1", "", "", "application/json", 60'000},
                [this, i, net, name, say](Result<engine::Response>) {
      // Its lease holder kills berth's containers through the host's dockerd socket, mounted.
      const std::string& endpoint = hosts_[i]->endpoint;
      const std::string socket = endpoint.rfind("unix://", 0) == 0 ? endpoint.substr(7) : "/var/run/docker.sock";
      json body = {{"Image", options_.sandbox_image},
                   {"Cmd", json::array({"/pause", "hold-lease", fmt::format("{}:{}", sandbox_ip_, lease::kPort),
                                        hosts_[i]->hostname, options_.data_id, std::to_string(options_.lease_ms),
                                        "/docker.sock"})},
                   {"Env", json::array({"BERTH_LEASE_TOKEN=" + lease_token_})},
                   {"Labels", {{"berth.sandbox", options_.data_id}}},
                   {"HostConfig", {{"NetworkMode", net}, {"CapDrop", json::array({"ALL"})}, {"ReadonlyRootfs", true},
                                   {"Binds", json::array({socket + ":/docker.sock"})},
                                   {"RestartPolicy", {{"Name", "unless-stopped"}}},
                                   {"SecurityOpt", json::array({"no-new-privileges"})}}}};
      swarm_.call(hosts_[i]->endpoint, {"POST", "/containers/create?name=" + name, body.dump(), "", "application/json", 60'000},
                  [this, i, name, say](Result<engine::Response> r) {
        if (!r.ok()) return say(r.error().message);
        if (!r->ok()) return say(engine::error_message(*r));
        swarm_.call(hosts_[i]->endpoint, {"POST", "/containers/" + name + "/start", "", "", "application/json", 120'000},
                    [say](Result<engine::Response> s) {
          if (!s.ok()) return say(s.error().message);
          if (!s->ok() && s->status != 304) say(engine::error_message(*s));
        });
      });
    });
  });
}

}  // namespace berth::runtime::cluster
