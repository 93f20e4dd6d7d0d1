// The cluster's hosts: the Swarm made or met at start, hosts added and removed since (berth
// cluster add | rm), and what berth keeps of them in hosts.json.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/files.h"
#include "runtime/cluster/cluster_runtime.h"
#include "runtime/cluster/internal.h"

namespace berth::runtime::cluster {

using json = nlohmann::json;
namespace bc = ::berth::cluster;

// ---- what outlives the daemon --------------------------------------------------------------------

// What berth learnt of each host (its name, node and address, whether it is leaving) outlives
// the daemon: a host added since the start is a host again after a restart, and a host that does
// not answer a restarted daemon is still known by the refs recorded on it.
void ClusterRuntime::load_hosts() {
  std::ifstream in(options_.state_dir + "/hosts.json");
  if (!in) return;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  json j = text.size() > (1 << 20) ? json() : json::parse(text, nullptr, false);
  if (!j.is_array()) {
    // (Written whole and renamed, it should never be so. Kept aside for a person to read.)
    const std::string aside = options_.state_dir + "/hosts.json.unreadable";
    std::error_code ec;
    std::filesystem::rename(options_.state_dir + "/hosts.json", aside, ec);
    std::fprintf(stderr,
                 "berth: cluster: %s/hosts.json is not a list of hosts (moved to %s): hosts added with berth cluster add "
                 "are not known; add them again\n",
                 options_.state_dir.c_str(), aside.c_str());
    return;
  }
  for (const auto& e : j) {
    // (A field of another type reads as absent: the file is ours, but read as untrusted.)
    auto text_of = [&e](const char* key) {
      return e.is_object() && e.contains(key) && e[key].is_string() ? e[key].get<std::string>() : std::string();
    };
    const std::string endpoint = text_of("endpoint");
    if (endpoint.empty()) continue;
    auto it = std::find_if(hosts_.begin(), hosts_.end(), [&](const auto& h) { return h->endpoint == endpoint; });
    if (it == hosts_.end()) {  // added with berth cluster add
      hosts_.push_back(std::make_unique<Host>());
      hosts_.back()->endpoint = endpoint;
      it = std::prev(hosts_.end());
    }
    Host& h = **it;
    h.hostname = text_of("hostname");
    h.node.id = text_of("node_id");
    h.addr = text_of("addr");
    h.leaving = it != hosts_.begin() && e.contains("leaving") && e["leaving"].is_boolean() && e["leaving"].get<bool>();
  }
}

void ClusterRuntime::save_hosts() const {
  json j = json::array();
  for (const auto& h : hosts_)
    if (!h->hostname.empty() && h->state != Host::State::kRemoved)
      j.push_back({{"endpoint", h->endpoint}, {"hostname", h->hostname}, {"node_id", h->node.id}, {"addr", h->addr},
                   {"leaving", h->leaving}});
  if (Status st = write_file_atomically(options_.state_dir + "/hosts.json", j.dump(), 0600); !st.ok())
    std::fprintf(stderr, "berth: cluster: %s\n", st.error().message.c_str());
}

std::size_t ClusterRuntime::live_hosts() const {
  return static_cast<std::size_t>(std::count_if(hosts_.begin(), hosts_.end(), [](const auto& h) {
    return h->state != Host::State::kRemoved || h->adding;
  }));
}

std::size_t ClusterRuntime::find_host(const std::string& host) const {
  for (std::size_t i = 0; i < hosts_.size(); ++i) {
    const Host& h = *hosts_[i];
    if (h.state == Host::State::kRemoved && !h.adding) continue;
    if (h.endpoint == host || (!h.hostname.empty() && h.hostname == host)) return i;
  }
  return hosts_.size();
}

Error ClusterRuntime::no_host(const std::string& host) const {
  std::string known;
  for (const auto& h : hosts_)
    if (h->state != Host::State::kRemoved) known += (known.empty() ? "" : ", ") + (h->hostname.empty() ? h->endpoint : h->hostname);
  return not_found(fmt::format("no host '{}' in the cluster; its hosts: {}", host, known));
}

HostView ClusterRuntime::view(std::size_t i) const {
  const Host& h = *hosts_[i];
  HostView v{h.endpoint, h.hostname, "", h.leaving, h.node, {}};
  switch (h.state) {
    case Host::State::kUp: v.state = "up"; break;
    case Host::State::kLost: v.state = "lost"; break;
    case Host::State::kFencing: v.state = "fencing"; break;
    case Host::State::kUnreachable: v.state = "unreachable"; break;
    case Host::State::kRemoved: v.state = "removed"; break;
  }
  for (const auto& [id, w] : placed_)
    if (w.host == i) v.instances.push_back(id);
  return v;
}

// ---- the start ---------------------------------------------------------------------------------------

// The first host in no Swarm: berth creates one there. Then the Swarm's heartbeat (how soon a
// host is called down), then each host's own account of itself (admit()).
void ClusterRuntime::start() {
  if (started_ || starting_) return;
  starting_ = true;
  swarm_.info(hosts_[0]->endpoint, [this](Result<bc::LocalInfo> info) {
    if (info.ok() && info->swarm_state == "inactive") {
      std::fprintf(stderr, "berth: cluster: %s (%s) is in no Swarm: creating one there, advertising %s\n",
                   hosts_[0]->endpoint.c_str(), info->hostname.c_str(),
                   options_.advertise.empty() ? "what dockerd picks" : options_.advertise.c_str());
      swarm_.create(hosts_[0]->endpoint, options_.advertise, options_.heartbeat_ms, [this](Result<std::string> node) {
        if (!node.ok()) {
          std::fprintf(stderr, "berth: cluster: creating the Swarm on %s: %s; trying again\n", hosts_[0]->endpoint.c_str(),
                       node.error().message.c_str());
          return retry_start();
        }
        meet_hosts();
      });
      return;
    }
    swarm_.set_heartbeat(hosts_[0]->endpoint, options_.heartbeat_ms, [this](Result<bc::SwarmInfo> s) {
      if (!s.ok()) {
        std::fprintf(stderr, "berth: cluster: setting the Swarm's heartbeat on %s: %s; trying again\n",
                     hosts_[0]->endpoint.c_str(), s.error().message.c_str());
        return retry_start();
      }
      meet_hosts();
    });
  });
}

void ClusterRuntime::retry_start() {
  for (auto& h : hosts_) {
    close_host(*h);
    if (h->state != Host::State::kRemoved) h->state = Host::State::kUnreachable;
  }
  starting_ = false;
  poll_timer_ = loop_.after(std::max<Millis>(options_.poll_ms, 1000), [this] { poll_timer_ = 0; start(); });
}

void ClusterRuntime::meet_hosts() {
  auto left = std::make_shared<std::size_t>(hosts_.size());
  for (std::size_t i = 0; i < hosts_.size(); ++i) {
    admit(i, hosts_[i]->addr, [this, i, left](Status st) {
      if (!st.ok())
        std::fprintf(stderr, "berth: cluster: host %s: %s; it takes no instances until it answers\n",
                     hosts_[i]->endpoint.c_str(), st.error().message.c_str());
      if (--*left > 0) return;
      if (hosts_[0]->state != Host::State::kUp) {
        std::fprintf(stderr, "berth: cluster: the first host (%s) must be an active manager, trying again\n",
                     hosts_[0]->endpoint.c_str());
        return retry_start();
      }
      save_hosts();
      started_ = true;
      starting_ = false;
      auto pending = std::move(pending_);
      for (auto& fn : pending) fn();
      poll();
    });
  }
}

void ClusterRuntime::admit(std::size_t i, const std::string& advertise, std::function<void(Status)> done) {
  const std::string endpoint = hosts_[i]->endpoint;
  swarm_.info(endpoint, [this, i, advertise, endpoint, done = std::move(done)](Result<bc::LocalInfo> info) mutable {
    if (!info.ok()) return done(unavailable(fmt::format("{} does not answer: {}", endpoint, info.error().message)));
    auto take = [this, i](const bc::LocalInfo& li) -> Status {
      Host& h = *hosts_[i];
      h.hostname = li.hostname;
      h.addr = li.node_addr;
      h.node.id = li.node_id;
      if (Status st = open_host(i); !st.ok()) return st;
      h.state = Host::State::kUp;
      h.up_at = clock_.monotonic_ms();
      return {};
    };
    if (info->swarm_state == "active" && !info->node_id.empty()) return done(take(*info));
    if (info->swarm_state != "inactive" || i == 0)
      return done(conflict(fmt::format("{} ({}) is not in the Swarm: its Swarm state is '{}'", endpoint, info->hostname,
                                       info->swarm_state)));
    hosts_[i]->hostname = info->hostname;
    swarm_.join(endpoint, hosts_[0]->endpoint, advertise, false,
                [this, endpoint, take, done = std::move(done)](Result<bc::LocalInfo> joined) mutable {
      if (!joined.ok()) return done(unavailable(fmt::format("{} could not join the Swarm: {}", endpoint, joined.error().message)));
      std::fprintf(stderr, "berth: cluster: %s (%s) joined the Swarm as node %s, at %s\n", endpoint.c_str(),
                   joined->hostname.c_str(), joined->node_id.c_str(), joined->node_addr.c_str());
      done(take(*joined));
    });
  });
}

// ---- berth cluster add | rm -------------------------------------------------------------------------

void ClusterRuntime::add_host(NewHost req, std::function<void(Result<HostView>)> done) {
  when_started([this, req = std::move(req), done = std::move(done)]() mutable {
    if (req.endpoint.empty()) return done(invalid("a host is its Engine API endpoint, like unix:///run/host-2/docker.sock"));
    if (std::size_t k = find_host(req.endpoint); k != hosts_.size())
      return done(conflict(fmt::format("{} is a host of the cluster already{}", req.endpoint,
                                       hosts_[k]->hostname.empty() ? "" : " (" + hosts_[k]->hostname + ")")));
    if (live_hosts() >= static_cast<std::size_t>(max_hosts()))
      return done(conflict(fmt::format(
          "the cluster has {} hosts, its most: the overlay leaves the pool's last {} addresses to Docker's own endpoints, "
          "two per host; give the daemon --cluster-max-hosts before its network is first made",
          live_hosts(), options_.fence)));
    // A slot for it at once (a host that left and comes back gets its old one), so that a second
    // add of the same endpoint meanwhile is refused.
    std::size_t i = 0;
    while (i < hosts_.size() && !(hosts_[i]->state == Host::State::kRemoved && hosts_[i]->endpoint == req.endpoint)) ++i;
    if (i == hosts_.size()) {
      hosts_.push_back(std::make_unique<Host>());
      hosts_.back()->endpoint = req.endpoint;
      hosts_.back()->state = Host::State::kRemoved;
    }
    Host& h = *hosts_[i];
    h.adding = true;
    h.leaving = h.finishing = h.settling = h.forget_when_settled = false;
    h.hostname.clear();
    h.node = {};
    h.images.clear();
    h.fencer.reset();
    auto fail = [this, i, done](const Error& e) {
      Host& failed = *hosts_[i];
      failed.adding = false;
      close_host(failed);
      failed.state = Host::State::kRemoved;
      done(e);
    };
    // Refused before anything changes: a host that is silent, named like another, or in another Swarm.
    swarm_.info(req.endpoint, [this, i, req, done, fail](Result<bc::LocalInfo> info) {
      if (!info.ok()) return fail(unavailable(fmt::format("{} does not answer: {}", req.endpoint, info.error().message)));
      if (std::size_t k = host_named(info->hostname); k != hosts_.size())
        return fail(conflict(fmt::format("{} is named {}, like {} of the cluster: berth tells hosts apart by their names",
                                         req.endpoint, info->hostname, hosts_[k]->endpoint)));
      hosts_[i]->hostname = info->hostname;  // (another add of the same name meanwhile is refused)
      auto go = [this, i, req, done, fail] {
        admit(i, req.advertise, [this, i, req, done, fail](Status st) {
          if (!st.ok()) return fail(st.error());
          hosts_[i]->adding = false;
          save_hosts();  // before anything is placed there: a restarted daemon must know the host
          auto finish = [this, i, done] {
            save_hosts();
            anchor(i);
            std::fprintf(stderr, "berth: cluster: host %s (%s) added\n", hosts_[i]->hostname.c_str(), hosts_[i]->endpoint.c_str());
            done(view(i));
          };
          if (req.labels.empty()) return finish();
          auto labels = hosts_[i]->node.labels;
          for (const auto& [k, v] : req.labels) labels[k] = v;
          swarm_.update_node(hosts_[0]->endpoint, hosts_[i]->node.id, std::nullopt, labels,
                             [this, i, finish](Result<bc::Node> n) {
            if (n.ok()) hosts_[i]->node = *n;
            else std::fprintf(stderr, "berth: cluster: labelling host %s: %s\n", hosts_[i]->hostname.c_str(), n.error().message.c_str());
            finish();
          });
        });
      };
      if (info->swarm_state != "active") return go();
      // In a Swarm already: this one's, or refused.
      swarm_.nodes(hosts_[0]->endpoint, [this, info = *info, req, go, fail](Result<std::vector<bc::Node>> nodes) {
        if (!nodes.ok()) return fail(nodes.error());
        for (const auto& n : *nodes)
          if (n.id == info.node_id) return go();
        fail(conflict(fmt::format("{} ({}) is in a Swarm as node {}, which is not a node of this one (another Swarm, "
                                  "or removed from this one); make it leave first (docker swarm leave --force) and "
                                  "add it again",
                                  req.endpoint, info.hostname, info.node_id)));
      });
    });
  });
}

void ClusterRuntime::remove_host(const std::string& host, bool force, std::function<void(Status)> done) {
  when_started([this, host, force, done = std::move(done)] {
    const std::size_t i = find_host(host);
    if (i == hosts_.size()) return done(no_host(host));
    if (hosts_[i]->adding) return done(conflict(fmt::format("{} is being added; remove it once it is up", host)));
    Host& h = *hosts_[i];
    if (i == 0)
      return done(conflict(fmt::format("{} is the first host, the Swarm manager this daemon runs on: it cannot leave the "
                                       "cluster", h.hostname.empty() ? h.endpoint : h.hostname)));
    const bool already = h.leaving;
    h.leaving = true;
    save_hosts();
    std::fprintf(stderr, "berth: cluster: host %s leaves the cluster%s\n", h.hostname.c_str(), force ? " (forced)" : "");
    switch (h.state) {
      case Host::State::kUp:
        if (already) return done({});
        // Drained in the Swarm too, so that its own tasks leave; berth's instances leave one at a time.
        swarm_.update_node(hosts_[0]->endpoint, h.node.id, "drain", std::nullopt, [this, i, done](Result<bc::Node> n) {
          if (n.ok()) hosts_[i]->node = *n;
          next_move();
          done({});
        });
        return;
      case Host::State::kUnreachable:
        // Its instances, recorded there, move now; it is fenced once it answers.
        lose(i, "it leaves the cluster and does not answer");
        [[fallthrough]];
      case Host::State::kLost:
        // Forced: forgotten once settled (its instances elsewhere); else once it answers, and is fenced.
        if (force && h.settling) h.forget_when_settled = true;
        else if (force) forget(i);
        return done({});
      case Host::State::kFencing:
      case Host::State::kRemoved:
        return done({});  // it leaves once fenced
    }
  });
}

// A leaving host with nothing of berth's placed there: its anchor and whatever berth container is
// left go, it leaves the Swarm and its node is removed, then it is forgotten.
void ClusterRuntime::finish_leaving(std::size_t i) {
  Host& h = *hosts_[i];
  h.finishing = true;
  std::fprintf(stderr, "berth: cluster: host %s has no instance left: removing berth's containers there and leaving the Swarm\n",
               h.hostname.c_str());
  auto leave = [this, i] {
    swarm_.leave(hosts_[i]->endpoint, true, [this, i](Result<bool> left) {
      if (!left.ok())
        std::fprintf(stderr, "berth: cluster: host %s leaving the Swarm: %s; its node is removed anyway\n",
                     hosts_[i]->hostname.c_str(), left.error().message.c_str());
      swarm_.remove_node(hosts_[0]->endpoint, hosts_[i]->node.id, true, [this, i](Result<bool> r) {
        if (!r.ok() && r.error().code != ErrorCode::kNotFound)
          std::fprintf(stderr, "berth: cluster: removing host %s's node: %s\n", hosts_[i]->hostname.c_str(),
                       r.error().message.c_str());
        forget(i);
      });
    });
  };
  auto containers = [this, i, leave] {
    if (!hosts_[i]->rt) return leave();
    hosts_[i]->rt->recover({}, [this, leave](std::vector<Recovered>) {
      // (Not from inside the host runtime's own callback: leave() ends it.)
      loop_.post([alive = std::weak_ptr<bool>(alive_), leave] {
        if (auto a = alive.lock(); a && *a) leave();
      });
    });
  };
  // berth's own containers there (its anchor, whatever the network's name), by their label.
  each_container(i, "berth.sandbox=" + options_.data_id, true, "DELETE", "?force=1", 60'000,
                 [containers](bool) { containers(); });
}

void ClusterRuntime::forget(std::size_t i) {
  Host& h = *hosts_[i];
  std::fprintf(stderr, "berth: cluster: host %s (%s) has left the cluster\n", h.hostname.c_str(), h.endpoint.c_str());
  h.state = Host::State::kRemoved;
  h.leaving = h.finishing = h.forget_when_settled = false;
  close_host(h);
  h.images.clear();
  save_hosts();
}

}  // namespace berth::runtime::cluster
