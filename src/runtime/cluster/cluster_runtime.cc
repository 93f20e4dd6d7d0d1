#include "runtime/cluster/cluster_runtime.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/files.h"
#include "base/text.h"
#include "cluster/placement.h"
#include "runtime/cluster/internal.h"

namespace berth::runtime::cluster {

namespace fs = std::filesystem;
using json = nlohmann::json;
namespace bc = ::berth::cluster;

// What a host's DockerRuntime says, passed on with the host in the refs.
class ClusterRuntime::HostListener final : public Listener {
 public:
  HostListener(ClusterRuntime& c, std::size_t host) : c_(c), host_(host) {}
  ~HostListener() override { *alive_ = false; }
  void on_created(const InstanceId& id, std::uint64_t launch, const Ref& ref, std::function<void(Status)> recorded) override {
    const Ref ours = c_.wrap(host_, ref);
    if (auto w = c_.placed_.find(id); w != c_.placed_.end() && w->second.host == host_) w->second.ref = ours;
    // The host's runtime goes with its host (lose()): an answer after that reaches nothing.
    auto guarded = [alive = std::weak_ptr<bool>(alive_), recorded = std::move(recorded)](Status st) {
      if (auto a = alive.lock(); a && *a) recorded(std::move(st));
    };
    if (c_.listener_) c_.listener_->on_created(id, launch, ours, std::move(guarded));
  }
  void on_started(const InstanceId& id, std::uint64_t launch, const Ref& ref, const Observed& observed) override {
    if (auto w = c_.placed_.find(id); w != c_.placed_.end() && w->second.host == host_) w->second.running = true;
    Observed o = observed;
    o.detail = fmt::format("{} on {}", observed.detail, c_.hosts_[host_]->hostname);
    if (c_.listener_) c_.listener_->on_started(id, launch, c_.wrap(host_, ref), o);
  }
  void on_failed(const InstanceId& id, std::uint64_t launch, const Ref& ref, const Error& error) override {
    if (auto w = c_.placed_.find(id); w != c_.placed_.end() && w->second.host == host_ && w->second.launch == launch)
      c_.placed_.erase(w);
    if (c_.listener_) c_.listener_->on_failed(id, launch, ref.empty() ? ref : c_.wrap(host_, ref), error);
    c_.moved(id);
  }
  void on_exited(const InstanceId& id, const Ref& ref, const Exit& exit) override {
    const Ref ours = c_.wrap(host_, ref);
    Exit e = exit;
    if (auto w = c_.placed_.find(id); w != c_.placed_.end() && w->second.ref == ours) {
      c_.placed_.erase(w);
      if (c_.moving_ == id) {  // stopped to leave a drained host: back at once, elsewhere
        e.host_lost = true;
        e.description = fmt::format("moved off {}, which is {}", c_.hosts_[host_]->hostname,
                                    c_.hosts_[host_]->leaving ? "leaving the cluster" : "drained");
      }
    }
    if (c_.listener_) c_.listener_->on_exited(id, ours, e);
  }

 private:
  ClusterRuntime& c_;
  std::size_t host_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

Result<std::unique_ptr<ClusterRuntime>> ClusterRuntime::create(Executor& loop, const Clock& clock, ClusterOptions options) {
  if (options.hosts.empty()) return invalid("a cluster needs at least one host (its first: a Swarm manager this daemon runs on)");
  std::error_code ec;
  fs::create_directories(options.state_dir, ec);
  if (ec) return unavailable(fmt::format("cannot create {}: {}", options.state_dir, ec.message()));
  fs::permissions(options.state_dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  auto engine = engine::Engine::open(options.hosts[0]);
  if (!engine.ok()) return engine.error();
  std::unique_ptr<ClusterRuntime> rt(new ClusterRuntime(loop, clock, std::move(options), std::move(engine.value())));
  if (Status st = rt->load_lease_token(); !st.ok()) return st.error();
  rt->start();
  return rt;
}

ClusterRuntime::ClusterRuntime(Executor& loop, const Clock& clock, ClusterOptions options,
                               std::unique_ptr<engine::Engine> manager)
    : loop_(loop), clock_(clock), options_(std::move(options)), swarm_(loop, clock), manager_engine_(std::move(manager)) {
  for (const auto& endpoint : options_.hosts) {
    auto h = std::make_unique<Host>();
    h->endpoint = endpoint;
    hosts_.push_back(std::move(h));
  }
  load_hosts();
}

ClusterRuntime::~ClusterRuntime() {
  *alive_ = false;
  if (poll_timer_) loop_.cancel(poll_timer_);
  for (auto& h : hosts_) h->rt.reset();
  manager_engine_.reset();  // joins its thread
}

Capabilities ClusterRuntime::capabilities() const { return {}; }

Ref ClusterRuntime::wrap(std::size_t host, const Ref& inner) const { return hosts_[host]->hostname + "/" + inner; }

bool ClusterRuntime::unwrap(const Ref& ref, std::size_t* host, Ref* inner) const {
  const auto slash = ref.find('/');
  if (slash == std::string::npos) return false;
  const std::size_t i = host_named(ref.substr(0, slash));
  if (i == hosts_.size() || !hosts_[i]->rt) return false;
  *host = i;
  *inner = ref.substr(slash + 1);
  return true;
}

std::size_t ClusterRuntime::host_named(const std::string& hostname) const {
  for (std::size_t i = 0; i < hosts_.size(); ++i)
    if (!hosts_[i]->hostname.empty() && hosts_[i]->hostname == hostname &&
        (hosts_[i]->state != Host::State::kRemoved || hosts_[i]->adding))
      return i;
  return hosts_.size();
}

// ---- start and the node watch -------------------------------------------------------------------

void ClusterRuntime::when_started(std::function<void()> fn) {
  if (started_) return fn();
  pending_.push_back(std::move(fn));
}

Status ClusterRuntime::open_host(std::size_t i) {
  Host& h = *hosts_[i];
  docker::DockerOptions o;
  o.host = h.endpoint;
  o.data_id = options_.data_id;
  o.state_dir = fmt::format("{}/host-{}", options_.state_dir, h.hostname);
  o.overlay_fence = options_.fence;
  o.manages_network = i == 0;
  auto rt = docker::DockerRuntime::create(loop_, o);
  if (!rt.ok()) return rt.error();
  h.rt = std::move(rt.value());
  h.listener = std::make_unique<HostListener>(*this, i);
  h.rt->set_listener(h.listener.get());
  return {};
}

ClusterRuntime::Host::Host() = default;
ClusterRuntime::Host::~Host() = default;

void ClusterRuntime::close_host(Host& h) {
  h.rt.reset();
  h.listener.reset();
}

void ClusterRuntime::poll() {
  if (polling_) return;
  polling_ = true;
  swarm_.nodes(options_.hosts[0], [this, asked_at = clock_.monotonic_ms()](Result<std::vector<bc::Node>> nodes) {
    polling_ = false;
    if (nodes.ok()) on_nodes(std::move(nodes.value()), asked_at);
    else std::fprintf(stderr, "berth: cluster: listing the Swarm's nodes: %s\n", nodes.error().message.c_str());
    probe_dockerds();
    // Hosts berth lost (or never reached): fenced once they answer.
    for (std::size_t i = 0; i < hosts_.size(); ++i) {
      Host& h = *hosts_[i];
      if ((h.state != Host::State::kLost && h.state != Host::State::kUnreachable) || h.asking || h.settling) continue;
      h.asking = true;
      swarm_.info(h.endpoint, [this, i](Result<bc::LocalInfo> info) {
        Host& back = *hosts_[i];
        back.asking = false;
        if (!info.ok() || (back.state != Host::State::kLost && back.state != Host::State::kUnreachable) || back.settling) return;
        if (back.hostname.empty()) back.hostname = info->hostname;
        if (back.addr.empty()) back.addr = info->node_addr;
        fence(i);
      });
    }
    poll_timer_ = loop_.after(options_.poll_ms, [this] { poll_timer_ = 0; poll(); });
  });
}

// A host that is up, or that this daemon never reached but knows from before, is lost once the
// Swarm calls its node down or no longer lists it. (The first host, this daemon's, never is.)
void ClusterRuntime::on_nodes(std::vector<bc::Node> nodes, Millis asked_at) {
  for (std::size_t i = 0; i < hosts_.size(); ++i) {
    Host& h = *hosts_[i];
    if (h.state != Host::State::kUp && (h.state != Host::State::kUnreachable || h.node.id.empty())) continue;
    if (h.finishing) continue;           // leaving the Swarm on purpose
    if (h.up_at >= asked_at) continue;  // up since the list was asked for: it may not be in it yet
    const bc::Node* n = nullptr;
    for (const auto& node : nodes)
      if (node.id == h.node.id) n = &node;
    if (n) h.node = *n;
    if (i == 0) continue;
    if (!n) lose(i, "it is no longer a node of the Swarm");
    else if (n->state == "down") lose(i, fmt::format("the Swarm calls it down{}", n->message.empty() ? "" : " (" + n->message + ")"));
  }
  next_move();
}

// The earlier of two signs of a host lost: its dockerd gone, as its lease holder (beside it) and
// berth (through its Engine API) both find. The Swarm calls such a host down only after its
// heartbeat runs out (two to four seconds with a 1 s heartbeat, measured), while a holder says
// so within two renewals. Both must agree: the holder alone cannot see a dockerd it is not
// mounted to any more, and berth alone cannot tell its own link from the host's.
void ClusterRuntime::probe_dockerds() {
  const Millis period = lease::Holder(options_.lease_ms, 0).period_ms();
  for (std::size_t i = 1; i < hosts_.size(); ++i) {
    Host& h = *hosts_[i];
    if (h.state != Host::State::kUp || h.finishing || h.adding || h.probing || h.hostname.empty() || !sandbox_netns_) continue;
    h.probing = true;
    const std::string node = h.node.id;
    lease_call(lease::Verb::kAsk, h.hostname, [this, i, node, period](const LeaseAnswer& a) {
      auto l = lease::parse_lease(a.line);
      // At least two renewals in a row said it, the last one lately.
      if (!l || l->nodocker_ms < 0 || l->silent_ms < 0 || l->silent_ms > 4 * period ||
          l->nodocker_ms - l->silent_ms < period / 2) {
        hosts_[i]->probing = false;
        return;
      }
      const Millis since = l->nodocker_ms;
      swarm_.call(hosts_[i]->endpoint, {"GET", "/_ping", "", "", "application/json", 1000},
                  [this, i, node, since](Result<engine::Response> r) {
        Host& host = *hosts_[i];
        host.probing = false;
        if (r.ok() && r->ok()) return;  // it answers berth: not gone
        if (host.state != Host::State::kUp || host.node.id != node || host.finishing) return;
        lose(i, fmt::format("its dockerd is gone: its lease holder has found its socket refusing connections for {}, and "
                            "berth's call fails ({})",
                            format_duration(since), r.ok() ? fmt::format("HTTP {}", r->status) : r.error().message));
        next_move();
      });
    });
  }
}

// ---- drains ---------------------------------------------------------------------------------------

void ClusterRuntime::drain(const std::string& host, bool drain, std::function<void(Status)> done) {
  when_started([this, host, drain, done = std::move(done)] {
    const std::size_t i = find_host(host);
    if (i == hosts_.size()) return done(no_host(host));
    if (hosts_[i]->node.id.empty() || hosts_[i]->state != Host::State::kUp || hosts_[i]->finishing)
      return done(conflict(fmt::format("host '{}' is not up in the Swarm", host)));
    swarm_.update_node(options_.hosts[0], hosts_[i]->node.id, drain ? "drain" : "active", std::nullopt,
                       [this, i, done](Result<bc::Node> n) {
                         if (!n.ok()) return done(n.error());
                         hosts_[i]->node = *n;
                         next_move();
                         done({});
                       });
  });
}

// One instance at a time leaves the drained hosts: stopped (its exit then reads host_lost), it is
// re-created elsewhere, and the next one goes once that one is ready (instance_ready).
void ClusterRuntime::next_move() {
  // One under way: being stopped, between its exit and its launch, or not yet ready elsewhere.
  if (!moving_) {
    for (const auto& [id, w] : placed_) {
      Host& h = *hosts_[w.host];
      if ((h.node.availability != "drain" && !h.leaving) || h.state != Host::State::kUp || !h.rt || w.ref.empty()) continue;
      moving_ = id;
      std::fprintf(stderr, "berth: cluster: %s/%s#%d leaves %s, which is %s\n", id.env.c_str(), id.app.c_str(), id.ordinal,
                   h.hostname.c_str(), h.leaving ? "leaving the cluster" : "drained");
      h.rt->stop(w.ref.substr(w.ref.find('/') + 1), 10'000);
      break;
    }
  }
  // A host leaving the cluster (berth cluster rm) goes once nothing of berth's is placed there.
  for (std::size_t i = 1; i < hosts_.size(); ++i) {
    const Host& h = *hosts_[i];
    if (!h.leaving || h.finishing || h.state != Host::State::kUp) continue;
    if (std::none_of(placed_.begin(), placed_.end(), [i](const auto& p) { return p.second.host == i; })) finish_leaving(i);
  }
}

void ClusterRuntime::instance_ready(const InstanceId& id, const Ref&) { moved(id); }

// The instance being moved is ready elsewhere, or will not be: the next one may go. (Had it
// landed on a host drained meanwhile, next_move() takes it off again.)
void ClusterRuntime::moved(const InstanceId& id) {
  if (moving_ != id) return;
  moving_.reset();
  next_move();
}

// The host's instances are gone as far as berth is concerned. Before their addresses are given
// again, nothing of berth's may answer there: killed through its Engine API if it answers (a
// host cut off from the Swarm but not from berth), else by its lease holder (settle()); then its
// node leaves the Swarm (until then Docker holds its addresses) and each instance is reported
// gone, host lost.
void ClusterRuntime::lose(std::size_t i, const std::string& why) {
  Host& h = *hosts_[i];
  h.state = Host::State::kLost;
  h.rt.reset();
  h.listener.reset();
  h.images.clear();
  std::vector<std::pair<InstanceId, Where>> gone;
  for (auto it = placed_.begin(); it != placed_.end();) {
    if (it->second.host == i) {
      gone.emplace_back(it->first, it->second);
      it = placed_.erase(it);
    } else {
      ++it;
    }
  }
  std::fprintf(stderr, "berth: cluster: host %s lost: %s; its %zu instance(s) move to the other hosts\n", h.hostname.c_str(),
               why.c_str(), gone.size());
  const std::string description = fmt::format("its host {} was lost ({})", h.hostname, why);
  // Once nothing of berth's can answer there (settle()): its node leaves the Swarm (until then
  // Docker holds its addresses), then each instance is reported gone, its host lost.
  settle(i, clock_.monotonic_ms(), [this, i, node = h.node.id, gone = std::move(gone), description] {
    swarm_.remove_node(options_.hosts[0], node, true, [this, i, gone, description](Result<bool> r) {
      if (!r.ok() && r.error().code != ErrorCode::kNotFound)
        std::fprintf(stderr, "berth: cluster: removing the lost node: %s (its addresses may stay taken)\n",
                     r.error().message.c_str());
      for (const auto& [id, where] : gone) {
        if (!listener_) break;
        if (where.ref.empty()) {
          listener_->on_failed(id, where.launch, "", unavailable(description));
        } else {
          Exit e;
          e.description = description;
          e.host_lost = true;
          listener_->on_exited(id, where.ref, e);
        }
      }
      if (hosts_[i]->forget_when_settled) forget(i);
    });
  });
  // What is left there is removed (disconnected first) when its Engine API answers.
  docker::DockerOptions o;
  o.host = h.endpoint;
  o.data_id = options_.data_id;
  o.state_dir = fmt::format("{}/host-{}", options_.state_dir, h.hostname);
  o.overlay_fence = options_.fence;
  o.manages_network = false;
  auto fencer = docker::DockerRuntime::create(loop_, o);
  if (!fencer.ok()) return;
  h.fencer = std::move(fencer.value());
  h.fencer->recover({}, [this, i](std::vector<Recovered>) {
    // (Not from inside the fencer's own callback.)
    loop_.post([this, alive = std::weak_ptr<bool>(alive_), i] {
      if (auto a = alive.lock(); a && *a) hosts_[i]->fencer.reset();
    });
  });
}

// A host that was lost, or never reached, answers: berth asks it for the instances it still
// counts there (none, for a lost host), which removes every other berth container on it; those
// that ended are reported gone; then it joins the Swarm again (or, still a ready node, is up).
void ClusterRuntime::fence(std::size_t i) {
  Host& h = *hosts_[i];
  if (h.hostname.empty()) return;
  h.state = Host::State::kFencing;
  h.fencer.reset();
  if (auto st = open_host(i); !st.ok()) {
    h.state = Host::State::kLost;
    return;
  }
  std::vector<Record> records;
  std::set<std::pair<std::string, std::string>> kept;
  for (const auto& [id, w] : placed_)
    if (w.host == i) {
      records.push_back({id, w.ref.substr(w.ref.find('/') + 1)});
      kept.insert({id.env, id.app});
    }
  std::fprintf(stderr, "berth: cluster: host %s answers; removing what berth no longer counts there (%zu instance(s) kept)\n",
               h.hostname.c_str(), records.size());
  h.rt->recover(records, [this, i, kept](std::vector<Recovered> got) {
    for (auto& r : got) {
      const Ref ours = wrap(i, r.ref);
      auto it = placed_.find(r.id);
      if (r.alive || it == placed_.end() || it->second.ref != ours) continue;
      placed_.erase(it);
      if (listener_) listener_->on_exited(r.id, ours, r.exit);
    }
    // Before it takes instances again: a database placed here later must get a fresh fill, not
    // the data it had before it was lost.
    drop_stale_volumes(i, kept, 60, [this, i] {
      if (hosts_[i]->state != Host::State::kFencing) return;
      if (hosts_[i]->leaving) return finish_leaving(i);  // fenced: now it may go
      rejoin(i);
    });
  });
}

void ClusterRuntime::rejoin(std::size_t i) {
  swarm_.nodes(options_.hosts[0], [this, i](Result<std::vector<bc::Node>> nodes) {
    Host& h = *hosts_[i];
    if (nodes.ok())
      for (const auto& n : *nodes)
        if (n.id == h.node.id && n.state == "ready") {  // never removed (unreachable at start): as it is
          h.node = n;
          h.state = Host::State::kUp;
          h.up_at = clock_.monotonic_ms();
          save_hosts();
          anchor(i);
          return;
        }
    swarm_.leave(h.endpoint, true, [this, i](Result<bool>) { join_again(i); });
  });
}

void ClusterRuntime::join_again(std::size_t i) {
  swarm_.join(hosts_[i]->endpoint, options_.hosts[0], hosts_[i]->addr, false, [this, i](Result<bc::LocalInfo> joined) {
    Host& h = *hosts_[i];
    if (!joined.ok()) {
      std::fprintf(stderr, "berth: cluster: host %s could not join the Swarm again: %s\n", h.hostname.c_str(),
                   joined.error().message.c_str());
      h.rt.reset();
      h.listener.reset();
      h.state = Host::State::kLost;
      return;
    }
    h.node = {};
    h.node.id = joined->node_id;
    h.node.state = "ready";
    h.state = Host::State::kUp;
    h.up_at = clock_.monotonic_ms();
    save_hosts();
    anchor(i);
    std::fprintf(stderr, "berth: cluster: host %s is back in the Swarm (node %s)\n", h.hostname.c_str(), joined->node_id.c_str());
  });
}

std::vector<HostView> ClusterRuntime::hosts() const {
  std::vector<HostView> out;
  for (std::size_t i = 0; i < hosts_.size(); ++i)
    if (hosts_[i]->state != Host::State::kRemoved) out.push_back(view(i));
  return out;
}

// ---- instances ------------------------------------------------------------------------------------

bool ClusterRuntime::has_data(const InstanceSpec& spec) {
  return std::any_of(spec.mounts.begin(), spec.mounts.end(), [](const Mount& m) { return !m.seed.empty(); });
}

Result<std::size_t> ClusterRuntime::place(const InstanceSpec& spec) const {
  std::vector<bc::HostSlot> slots;
  std::vector<std::size_t> host_of;  // slot → index in hosts_ (hosts that left have none)
  std::map<std::size_t, std::size_t> slot_of;
  for (std::size_t i = 0; i < hosts_.size(); ++i) {
    const auto& h = hosts_[i];
    if (h->state == Host::State::kRemoved) continue;
    bc::HostSlot s;
    s.name = h->hostname.empty() ? h->endpoint : h->hostname;
    s.labels = h->node.labels;
    s.nano_cpus = h->node.nano_cpus;
    s.memory_bytes = h->node.memory_bytes;
    s.schedulable = h->state == Host::State::kUp && h->rt && !h->leaving && h->node.availability != "drain" &&
                    h->node.availability != "pause";
    if (!s.schedulable)
      s.why_not = h->state != Host::State::kUp ? "not up"
                  : h->leaving                 ? "leaving the cluster"
                                               : fmt::format("availability {}", h->node.availability);
    slot_of[i] = slots.size();
    host_of.push_back(i);
    slots.push_back(std::move(s));
  }
  std::vector<bc::Placed> placed;
  for (const auto& [id, w] : placed_) {
    if (id == spec.id || !slot_of.count(w.host)) continue;
    placed.push_back({slots[slot_of.at(w.host)].name, id.env + "/" + id.app, id.ordinal, w.nano_cpus, w.memory_bytes, !w.running});
  }
  bc::Request req;
  req.app = spec.id.env + "/" + spec.id.app;
  req.ordinal = spec.id.ordinal;
  req.nano_cpus = static_cast<std::int64_t>(spec.resources.cpus * 1e9);
  req.memory_bytes = static_cast<std::int64_t>(spec.resources.memory_bytes);
  if (auto d = data_host_.find(spec.id); d != data_host_.end() && has_data(spec)) req.prefer = d->second;
  for (const auto& words : spec.constraints) {
    auto c = bc::parse_constraint(words);  // (the catalog checked them)
    if (!c.ok()) return c.error();
    req.constraints.push_back(std::move(*c));
  }
  auto chosen = bc::place(req, slots, placed);
  if (!chosen.ok()) return chosen.error();
  for (std::size_t k = 0; k < slots.size(); ++k)
    if (slots[k].name == *chosen) return host_of[k];
  return internal("placement chose a host berth does not know: " + *chosen);
}

void ClusterRuntime::launch(const InstanceSpec& spec) {
  BERTH_ASSERT_LOOP(loop_);
  when_started([this, spec] {
    auto fail = [this, spec](const Error& e) {
      loop_.post([this, alive = std::weak_ptr<bool>(alive_), spec, e] {
        if (auto a = alive.lock(); !a || !*a) return;
        if (listener_) listener_->on_failed(spec.id, spec.launch, "", e);
        moved(spec.id);
      });
    };
    const auto* image = std::get_if<ImageWorkload>(&spec.workload);
    if (!image) return fail(invalid("in a cluster every app runs as a container: give it an image"));
    auto host = place(spec);
    if (!host.ok()) return fail(host.error());
    Where w;
    w.host = *host;
    w.launch = spec.launch;
    w.nano_cpus = static_cast<std::int64_t>(spec.resources.cpus * 1e9);
    w.memory_bytes = static_cast<std::int64_t>(spec.resources.memory_bytes);
    placed_[spec.id] = w;
    if (has_data(spec)) data_host_[spec.id] = hosts_[*host]->hostname;
    ensure_image(*host, image->image, [this, spec, h = *host](Status st) {
      auto it = placed_.find(spec.id);
      if (it == placed_.end() || it->second.host != h || it->second.launch != spec.launch) return;  // lost meanwhile
      if (!st.ok() || !hosts_[h]->rt) {
        placed_.erase(it);
        if (listener_)
          listener_->on_failed(spec.id, spec.launch, "",
                               st.ok() ? unavailable(fmt::format("host {} was lost", hosts_[h]->hostname)) : st.error());
        moved(spec.id);
        return;
      }
      hosts_[h]->rt->launch(spec);
    });
  });
}

// The image on `host`, copied from a host that has it when it is not (the first host first).
void ClusterRuntime::ensure_image(std::size_t host, const std::string& image, std::function<void(Status)> done) {
  if (hosts_[host]->images.count(image)) {
    loop_.post([done = std::move(done)] { done({}); });
    return;
  }
  const std::string key = fmt::format("{}|{}", host, image);
  auto& waiters = image_waiters_[key];
  waiters.push_back(std::move(done));
  if (waiters.size() > 1) return;
  auto finish = [this, key, host, image](Status st, const std::string& id) {
    if (st.ok()) hosts_[host]->images[image] = id;
    auto w = std::move(image_waiters_[key]);
    image_waiters_.erase(key);
    for (auto& fn : w) fn(st);
  };
  swarm_.image_id(hosts_[host]->endpoint, image, [this, host, image, finish](Result<std::string> here) {
    if (here.ok()) return finish({}, *here);
    if (here.error().code != ErrorCode::kNotFound) return finish(here.error(), "");
    // Not there: from the first other host that has it.
    auto sources = std::make_shared<std::vector<std::size_t>>();
    for (std::size_t i = 0; i < hosts_.size(); ++i)
      if (i != host && hosts_[i]->state == Host::State::kUp) sources->push_back(i);
    // (The function holds itself weakly; each answer it waits for holds it strongly.)
    auto next = std::make_shared<std::function<void(std::size_t)>>();
    *next = [this, host, image, finish, sources, self = std::weak_ptr(next)](std::size_t k) {
      if (k == sources->size())
        return finish(not_found(fmt::format("no host of the cluster has image {}", image)), "");
      const std::string& from = hosts_[(*sources)[k]]->endpoint;
      swarm_.image_id(from, image, [this, host, image, finish, next = self.lock(), k, from](Result<std::string> there) {
        if (!there.ok()) return (*next)(k + 1);
        swarm_.distribute_image(from, {hosts_[host]->endpoint}, image, options_.state_dir,
                                [this, host, image, finish](Result<bc::SwarmClient::ImageCopy> copied) {
                                  if (!copied.ok()) return finish(copied.error(), "");
                                  std::fprintf(stderr, "berth: cluster: image %s copied to %s (%lld bytes, saved in %s, loaded in %s)\n",
                                               image.c_str(), hosts_[host]->hostname.c_str(),
                                               static_cast<long long>(copied->bytes),
                                               format_duration(copied->save_ms).c_str(), format_duration(copied->load_ms).c_str());
                                  finish({}, copied->image_id);
                                });
      });
    };
    (*next)(0);
  });
}

void ClusterRuntime::recover(const std::vector<Record>& records, std::function<void(std::vector<Recovered>)> done) {
  when_started([this, records, done = std::move(done)] {
    std::vector<std::vector<Record>> by_host(hosts_.size());
    auto out = std::make_shared<std::vector<Recovered>>();
    for (const auto& r : records) {
      if (const auto slash = r.ref.find('/'); slash != std::string::npos) data_host_[r.id] = r.ref.substr(0, slash);
      std::size_t h = 0;
      Ref inner;
      if (unwrap(r.ref, &h, &inner)) {
        by_host[h].push_back({r.id, inner});
        continue;
      }
      const auto slash = r.ref.find('/');
      if (slash != std::string::npos) {
        // On a host this daemon knows but cannot reach: counted there, as running, until the
        // Swarm says the host is down (then it moves) or the host answers (then it is asked).
        const std::size_t k = host_named(r.ref.substr(0, slash));
        if (k < hosts_.size() && hosts_[k]->state == Host::State::kUnreachable) {
          Where w;
          w.host = k;
          w.ref = r.ref;
          w.running = true;
          placed_[r.id] = w;
          Recovered kept{r.id, r.ref, true, {}, {}};
          kept.observed.detail = fmt::format("on {}, which does not answer", hosts_[k]->hostname);
          out->push_back(std::move(kept));
          continue;
        }
      }
      Recovered gone{r.id, r.ref, false, {}, {}};
      gone.exit.host_lost = true;
      gone.exit.description = fmt::format("its host {} does not answer", slash == std::string::npos ? r.ref : r.ref.substr(0, slash));
      out->push_back(std::move(gone));
    }
    auto left = std::make_shared<std::size_t>(0);
    for (std::size_t i = 0; i < hosts_.size(); ++i)
      if (hosts_[i]->rt) ++*left;
    if (*left == 0) return done(std::move(*out));
    for (std::size_t i = 0; i < hosts_.size(); ++i) {
      if (!hosts_[i]->rt) continue;
      hosts_[i]->rt->recover(by_host[i], [this, i, out, left, done](std::vector<Recovered> got) {
        for (auto& r : got) {
          r.ref = wrap(i, r.ref);
          if (r.alive) {
            Where w;
            w.host = i;
            w.ref = r.ref;
            w.running = true;
            placed_[r.id] = w;
            r.observed.detail = fmt::format("{} on {}", r.observed.detail, hosts_[i]->hostname);
          }
          out->push_back(std::move(r));
        }
        if (--*left == 0) done(std::move(*out));
      });
    }
  });
}

void ClusterRuntime::stop(const Ref& ref, Millis grace_ms) {
  std::size_t h = 0;
  Ref inner;
  if (unwrap(ref, &h, &inner)) return hosts_[h]->rt->stop(inner, grace_ms);
  // On a host that is gone: so is the instance.
  for (auto it = placed_.begin(); it != placed_.end(); ++it) {
    if (it->second.ref != ref) continue;
    const InstanceId id = it->first;
    placed_.erase(it);
    loop_.post([this, alive = std::weak_ptr<bool>(alive_), id, ref] {
      if (auto a = alive.lock(); !a || !*a || !listener_) return;
      Exit e;
      e.description = "its host is gone";
      listener_->on_exited(id, ref, e);
    });
    return;
  }
}

std::unique_ptr<Cancel> ClusterRuntime::exec(const Ref& ref, const ExecRequest& request,
                                             std::function<void(Result<ExecResult>)> done) {
  std::size_t h = 0;
  Ref inner;
  if (unwrap(ref, &h, &inner)) return hosts_[h]->rt->exec(inner, request, std::move(done));
  auto alive = std::make_shared<bool>(true);
  loop_.post([alive, ref, done = std::move(done)] {
    if (*alive) done(unavailable(fmt::format("{}: its host is not reachable", ref)));
  });
  return cancel_with([alive] { *alive = false; });
}

void ClusterRuntime::logs(const InstanceId&, const std::string& log_path, std::int64_t offset, std::size_t max,
                          std::function<void(Result<LogChunk>)> done) {
  // Output is appended to the log file on this host, whichever host the instance runs on.
  auto chunk = read_log_file(log_path, offset, max);
  loop_.post([chunk = std::move(chunk), done = std::move(done)]() mutable { done(std::move(chunk)); });
}

}  // namespace berth::runtime::cluster
