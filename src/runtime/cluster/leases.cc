// The daemon's side of the host leases (runtime/cluster/lease.h): the token, requests to the
// sandbox's table, and how a lost host is settled before its addresses are given again.
#include <sys/random.h>
#include <sys/socket.h>

#include <cstdio>
#include <fstream>
#include <iterator>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/files.h"
#include "base/text.h"
#include "runtime/cluster/cluster_runtime.h"
#include "runtime/cluster/internal.h"
#include "runtime/cluster/lease.h"

namespace berth::runtime::cluster {

using json = nlohmann::json;

// The token outlives the daemon, as the sandbox and the holders that know it do.
Status ClusterRuntime::load_lease_token() {
  const std::string path = options_.state_dir + "/lease.token";
  std::ifstream in(path);
  std::string token;
  if (in) std::getline(in, token);
  if (token.size() >= 32 && token.find_first_not_of("0123456789abcdef") == std::string::npos) {
    lease_token_ = token;
    return {};
  }
  unsigned char raw[16];
  if (getrandom(raw, sizeof raw, 0) != static_cast<ssize_t>(sizeof raw))
    return internal("the system's random generator failed; no lease token was made");
  token.clear();
  for (unsigned char c : raw) token += fmt::format("{:02x}", c);
  if (Status st = write_file_atomically(path, token + "\n", 0600); !st.ok()) return st;
  lease_token_ = token;
  return {};
}

void ClusterRuntime::lease_call(lease::Verb verb, const std::string& host, std::function<void(const LeaseAnswer&)> done) {
  if (!sandbox_netns_) return loop_.post([done = std::move(done)] { done({"", false}); });
  auto fd = sandbox_netns_->socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK);
  if (!fd.ok()) return loop_.post([done = std::move(done)] { done({"", true}); });
  const std::string line = lease::format({verb, lease_token_, host, "", 0});
  lease_worker_.post([this, alive = std::weak_ptr<bool>(alive_), fd = *fd, ip = sandbox_ip_, line, done = std::move(done)] {
    std::string answer = lease::exchange(fd, ip, lease::kPort, line, 1000);
    loop_.post([alive, answer = std::move(answer), done] {
      if (auto a = alive.lock(); a && *a) done({answer, true});
    });
  });
}

// Until the table says OK (the sandbox may not be up yet, after a restart): every second, while
// `still()` holds.
void ClusterRuntime::lease_until_ok(lease::Verb verb, const std::string& host, std::function<bool()> still,
                                    std::function<void()> then) {
  if (!still()) return;
  lease_call(verb, host, [this, verb, host, still, then](const LeaseAnswer& a) {
    if (a.line == "OK") return then();
    loop_.after(1000, [this, alive = std::weak_ptr<bool>(alive_), verb, host, still, then] {
      if (auto l = alive.lock(); l && *l) lease_until_ok(verb, host, still, then);
    });
  });
}

void ClusterRuntime::each_container(std::size_t i, const std::string& label, bool all, const std::string& method,
                                    const std::string& suffix, Millis timeout_ms, std::function<void(bool)> done) {
  const std::string endpoint = hosts_[i]->endpoint;
  json filters = {{"label", json::array({label})}};
  swarm_.call(endpoint, {"GET", fmt::format("/containers/json?all={}&filters={}", all ? 1 : 0, percent_encode(filters.dump())),
                         "", "", "application/json", timeout_ms},
              [this, endpoint, method, suffix, timeout_ms, done = std::move(done)](Result<engine::Response> r) {
    if (!r.ok() || !r->ok()) return done(false);
    const json list = json::parse(r->body, nullptr, false);
    if (!list.is_array()) return done(false);
    auto left = std::make_shared<std::size_t>(1);
    auto every = std::make_shared<bool>(true);
    auto one_done = [left, every, done](bool ok) {
      *every = *every && ok;
      if (--*left == 0) done(*every);
    };
    for (const auto& c : list) {
      const std::string id = c.is_object() ? c.value("Id", "") : "";
      if (id.empty()) continue;
      ++*left;
      swarm_.call(endpoint, {method, "/containers/" + id + suffix, "", "", "application/json", timeout_ms},
                  [one_done](Result<engine::Response> k) {
                    one_done(k.ok() && (k->ok() || k->status == 404 || k->status == 409));
                  });
    }
    one_done(true);
  });
}

void ClusterRuntime::drop_stale_volumes(std::size_t i, std::set<std::pair<std::string, std::string>> keep, int tries,
                                        std::function<void()> then) {
  const std::string endpoint = hosts_[i]->endpoint;
  json filters = {{"label", json::array({"berth.data=" + options_.data_id, "berth.seeded=1"})}};
  swarm_.call(endpoint, {"GET", "/volumes?filters=" + percent_encode(filters.dump()), "", "", "application/json", 30'000},
              [this, i, endpoint, keep, tries, then](Result<engine::Response> r) {
    const json list = r.ok() && r->ok() ? json::parse(r->body, nullptr, false) : json();
    if (!list.is_object() || !list.contains("Volumes") || !list["Volumes"].is_array()) {
      if (tries <= 0) return then();
      std::fprintf(stderr, "berth: cluster: cannot list the volumes of host %s: %s\n", hosts_[i]->hostname.c_str(),
                   r.ok() ? engine::error_message(*r).c_str() : r.error().message.c_str());
      loop_.after(1000, [this, alive = std::weak_ptr<bool>(alive_), i, keep, tries, then] {
        if (auto a = alive.lock(); a && *a) drop_stale_volumes(i, keep, tries - 1, then);
      });
      return;
    }
    auto left = std::make_shared<std::size_t>(1);
    auto busy = std::make_shared<bool>(false);
    auto one_done = [this, i, keep, tries, then, left, busy](bool in_use) {
      *busy = *busy || in_use;
      if (--*left) return;
      if (!*busy || tries <= 0) return then();
      loop_.after(1000, [this, alive = std::weak_ptr<bool>(alive_), i, keep, tries, then] {
        if (auto a = alive.lock(); a && *a) drop_stale_volumes(i, keep, tries - 1, then);
      });
    };
    for (const auto& v : list["Volumes"]) {
      if (!v.is_object() || !v.contains("Name") || !v["Name"].is_string()) continue;
      std::string env, app;
      if (v.contains("Labels") && v["Labels"].is_object()) {
        const json& l = v["Labels"];
        if (l.contains("berth.env") && l["berth.env"].is_string()) env = l["berth.env"].get<std::string>();
        if (l.contains("berth.app") && l["berth.app"].is_string()) app = l["berth.app"].get<std::string>();
      }
      if (keep.count({env, app})) continue;
      ++*left;
      swarm_.call(endpoint, {"DELETE", "/volumes/" + percent_encode(v["Name"].get<std::string>()), "", "", "application/json", 60'000},
                  [one_done](Result<engine::Response> d) { one_done(!d.ok() || d->status == 409); });
    }
    one_done(false);
  });
}

// Every running berth container of host `i` killed through its Engine API (a kill, not a stop:
// what matters is that nothing answers there any more); true once each kill was answered, false
// when the host could not be asked.
void ClusterRuntime::kill_all(std::size_t i, std::function<void(bool)> done) {
  each_container(i, "berth.data=" + options_.data_id, false, "POST", "/kill", 2000, std::move(done));
}

// Host `i` was lost at `since`. `then` runs once nothing of berth's can answer there: its
// containers were killed through its Engine API, or its holder reports that it killed every one
// (or that its dockerd is dead: Docker kills them when it restarts, and once the node is removed
// the Swarm no longer routes their addresses there), or the host has not renewed its lease for
// the lease plus a margin (its holder killed them at half of it). A host with no holder at all
// (an older anchor) is given the lease plus the margin from its loss, and said. Until it is
// settled, a host that answers again is not fenced (poll()): the settling goes on.
void ClusterRuntime::settle(std::size_t i, Millis since, std::function<void()> then) {
  const std::string hostname = hosts_[i]->hostname;
  hosts_[i]->settling = true;
  auto settled = std::make_shared<bool>(false);
  auto finish = [this, i, hostname, since, settled, then = std::move(then)](const std::string& how) {
    if (*settled) return;
    *settled = true;
    hosts_[i]->settling = false;
    std::fprintf(stderr, "berth: cluster: host %s settled %s after its loss: %s\n", hostname.c_str(),
                 format_duration(clock_.monotonic_ms() - since).c_str(), how.c_str());
    then();
  };
  kill_all(i, [finish](bool killed) {
    if (killed) finish("its berth containers were killed through its Engine API");
  });
  // Revoked, then asked every 100 ms until settled. (Each ask holds the function; it holds itself weakly.)
  auto revoked = std::make_shared<bool>(false);
  auto ask = std::make_shared<std::function<void()>>();
  *ask = [this, hostname, since, settled, revoked, finish, self = std::weak_ptr(ask)] {
    if (*settled) return;
    auto again = [this, again_fn = self.lock()] {
      loop_.after(100, [alive = std::weak_ptr<bool>(alive_), again_fn] {
        if (auto a = alive.lock(); a && *a) (*again_fn)();
      });
    };
    if (!*revoked) {
      return lease_call(lease::Verb::kRevoke, hostname, [revoked, again](const LeaseAnswer& a) {
        *revoked = a.line == "OK";
        again();
      });
    }
    lease_call(lease::Verb::kAsk, hostname, [this, since, settled, finish, again](const LeaseAnswer& a) {
      if (*settled) return;
      auto l = lease::parse_lease(a.line);
      const Millis wait = std::max<Millis>(options_.lease_ms, l ? l->ttl_ms : 0) + lease::kLeaseMarginMs;
      const Millis waited = clock_.monotonic_ms() - since;
      if (l && l->settled_by_report()) return finish("its lease holder reports " + l->report);
      if (l && l->silent_ms > wait) return finish(fmt::format("its lease was not renewed for {}", format_duration(l->silent_ms)));
      if (l && l->silent_ms < 0 && l->up_ms > wait && waited > wait)
        return finish("it holds no lease (no holder ever renewed it): what runs there may answer when it is back");
      // (The table unreachable from the sandbox it runs in, for a whole lease: the holders cannot reach it either.)
      if (!l && a.reached && waited > wait) return finish("the lease table does not answer");
      again();
    });
  };
  (*ask)();
}

}  // namespace berth::runtime::cluster
