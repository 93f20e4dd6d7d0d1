#include "cluster/swarm/swarm.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace berth::cluster {

namespace {

using nlohmann::json;

engine::Call get(std::string target) { return {"GET", std::move(target), "", "", "application/json", 30'000}; }
engine::Call post(std::string target, std::string body) {
  return {"POST", std::move(target), std::move(body), "", "application/json", 60'000};
}

// A JSON document dockerd sent, or an error saying which call's answer it was not.
Result<json> document(const engine::Response& r, std::string_view what) {
  json doc = json::parse(r.body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) return invalid(fmt::format("{}: the answer is not a JSON object", what));
  return doc;
}

// "10.231.0.11" → "10.231.0.11:2377"; an address with a port stays as it is.
std::string with_swarm_port(const std::string& addr) {
  if (addr.empty() || addr.find(':') != std::string::npos) return addr;
  return addr + ":2377";
}

}  // namespace

SwarmClient::~SwarmClient() { *alive_ = false; }

void SwarmClient::call(const std::string& host, engine::Call c, std::function<void(Result<engine::Response>)> on_loop) {
  auto it = engines_.find(host);
  if (it == engines_.end()) {
    auto opened = engine::Engine::open(host);
    if (!opened.ok()) {
      loop_.post([alive = std::weak_ptr<bool>(alive_), on_loop = std::move(on_loop), e = opened.error()]() mutable {
        if (auto a = alive.lock(); a && *a) on_loop(std::move(e));
      });
      return;
    }
    it = engines_.emplace(host, std::move(opened.value())).first;
  }
  it->second->request(std::move(c), [this, alive = std::weak_ptr<bool>(alive_), on_loop = std::move(on_loop)](
                                        Result<engine::Response> r) mutable {
    if (!alive.lock()) return;
    loop_.post([alive, on_loop = std::move(on_loop), r = std::move(r)]() mutable {
      if (auto a = alive.lock(); a && *a) on_loop(std::move(r));
    });
  });
}

void SwarmClient::call_ok(const std::string& host, engine::Call c, std::function<void(Result<engine::Response>)> on_loop) {
  std::string what = fmt::format("{} {} on {}", c.method, c.target, host);
  call(host, std::move(c), [what = std::move(what), on_loop = std::move(on_loop)](Result<engine::Response> r) {
    if (!r.ok()) return on_loop(Error{r.error().code, fmt::format("{}: {}", what, r.error().message)});
    if (!r->ok()) {
      // 503: not a manager, or the Swarm has lost its quorum; 406: not in a Swarm.
      const ErrorCode code = r->status == 404 ? ErrorCode::kNotFound
                             : r->status == 409 ? ErrorCode::kConflict
                             : r->status == 503 || r->status == 406 ? ErrorCode::kUnavailable
                                                                     : ErrorCode::kInvalid;
      return on_loop(Error{code, fmt::format("{}: {} {}", what, r->status, engine::error_message(*r))});
    }
    on_loop(std::move(r));
  });
}

void SwarmClient::info(const std::string& host, Done<LocalInfo> done) {
  call_ok(host, get("/info"), [done = std::move(done)](Result<engine::Response> r) {
    if (!r.ok()) return done(r.error());
    done(parse_info(r->body));
  });
}

void SwarmClient::create(const std::string& host, const std::string& advertise_addr, Millis heartbeat_ms,
                         Done<std::string> done) {
  json body = {{"ListenAddr", "0.0.0.0:2377"}};
  if (!advertise_addr.empty()) body["AdvertiseAddr"] = advertise_addr;
  if (heartbeat_ms > 0) body["Spec"] = {{"Dispatcher", {{"HeartbeatPeriod", heartbeat_ms * 1'000'000}}}};
  call_ok(host, post("/swarm/init", body.dump()), [done = std::move(done)](Result<engine::Response> r) {
    if (!r.ok()) return done(r.error());
    json id = json::parse(r->body, nullptr, false);  // the node's id, as a JSON string
    if (!id.is_string() || id.get<std::string>().empty())
      return done(invalid("POST /swarm/init: the answer is not the new node's id"));
    done(id.get<std::string>());
  });
}

void SwarmClient::join(const std::string& host, const std::string& manager, const std::string& advertise_addr,
                       bool as_manager, Done<LocalInfo> done) {
  // The Swarm's token from a manager, its managers' addresses from the manager's info, then the join.
  swarm(manager, [this, host, manager, advertise_addr, as_manager, done = std::move(done)](Result<SwarmInfo> s) mutable {
    if (!s.ok()) return done(s.error());
    std::string token = as_manager ? s->manager_token : s->worker_token;
    if (token.empty()) return done(unavailable(fmt::format("{} gave no join token", manager)));
    info(manager, [this, host, advertise_addr, token = std::move(token), manager,
                   done = std::move(done)](Result<LocalInfo> m) mutable {
      if (!m.ok()) return done(m.error());
      std::vector<std::string> remotes = m->managers;
      if (remotes.empty() && !m->node_addr.empty()) remotes.push_back(with_swarm_port(m->node_addr));
      if (remotes.empty()) return done(unavailable(fmt::format("{} does not say where its Swarm's managers are", manager)));
      json body = {{"ListenAddr", "0.0.0.0:2377"}, {"RemoteAddrs", remotes}, {"JoinToken", token}};
      if (!advertise_addr.empty()) body["AdvertiseAddr"] = advertise_addr;
      call_ok(host, post("/swarm/join", body.dump()), [this, host, done = std::move(done)](Result<engine::Response> r) mutable {
        if (!r.ok()) return done(r.error());
        info(host, std::move(done));
      });
    });
  });
}

void SwarmClient::nodes(const std::string& manager, Done<std::vector<Node>> done) {
  call_ok(manager, get("/nodes"), [done = std::move(done)](Result<engine::Response> r) {
    if (!r.ok()) return done(r.error());
    done(parse_nodes(r->body));
  });
}

void SwarmClient::swarm(const std::string& manager, Done<SwarmInfo> done) {
  call_ok(manager, get("/swarm"), [done = std::move(done)](Result<engine::Response> r) {
    if (!r.ok()) return done(r.error());
    done(parse_swarm(r->body));
  });
}

void SwarmClient::set_heartbeat(const std::string& manager, Millis heartbeat_ms, Done<SwarmInfo> done) {
  if (heartbeat_ms <= 0) return loop_.post([done = std::move(done), heartbeat_ms] {
    done(invalid(fmt::format("heartbeat: {} ms is not a period; give at least 1 ms", heartbeat_ms)));
  });
  // An update sends the whole spec back, at the version it was read at (else 409/500: retry).
  call_ok(manager, get("/swarm"), [this, manager, heartbeat_ms, done = std::move(done)](Result<engine::Response> r) mutable {
    if (!r.ok()) return done(r.error());
    auto doc = document(*r, "GET /swarm");
    if (!doc.ok()) return done(doc.error());
    auto parsed = parse_swarm(r->body);
    if (!parsed.ok()) return done(parsed.error());
    json spec = (*doc)["Spec"].is_object() ? (*doc)["Spec"] : json::object();
    spec["Dispatcher"]["HeartbeatPeriod"] = heartbeat_ms * 1'000'000;
    call_ok(manager, post(fmt::format("/swarm/update?version={}", parsed->version), spec.dump()),
            [this, manager, done = std::move(done)](Result<engine::Response> u) mutable {
              if (!u.ok()) return done(u.error());
              swarm(manager, std::move(done));
            });
  });
}

void SwarmClient::update_node(const std::string& manager, const std::string& node_id, std::optional<std::string> availability,
                              std::optional<std::map<std::string, std::string>> labels, Done<Node> done) {
  if (availability && *availability != "active" && *availability != "pause" && *availability != "drain")
    return loop_.post([done = std::move(done), a = *availability] {
      done(invalid(fmt::format("availability '{}': give active, pause or drain", a)));
    });
  call_ok(manager, get("/nodes/" + node_id),
          [this, manager, node_id, availability = std::move(availability), labels = std::move(labels),
           done = std::move(done)](Result<engine::Response> r) mutable {
            if (!r.ok()) return done(r.error());
            auto doc = document(*r, "GET /nodes/" + node_id);
            if (!doc.ok()) return done(doc.error());
            auto parsed = parse_nodes("[" + r->body + "]");
            if (!parsed.ok() || parsed->size() != 1) return done(parsed.ok() ? invalid("GET /nodes/ID: not one node") : parsed.error());
            json spec = (*doc)["Spec"].is_object() ? (*doc)["Spec"] : json::object();
            if (availability) spec["Availability"] = *availability;
            if (labels) spec["Labels"] = *labels;
            call_ok(manager, post(fmt::format("/nodes/{}/update?version={}", node_id, parsed->front().version), spec.dump()),
                    [this, manager, node_id, done = std::move(done)](Result<engine::Response> u) mutable {
                      if (!u.ok()) return done(u.error());
                      call_ok(manager, get("/nodes/" + node_id), [done = std::move(done)](Result<engine::Response> n) {
                        if (!n.ok()) return done(n.error());
                        auto node = parse_nodes("[" + n->body + "]");
                        if (!node.ok()) return done(node.error());
                        if (node->size() != 1) return done(invalid("GET /nodes/ID: not one node"));
                        done(std::move(node->front()));
                      });
                    });
          });
}

void SwarmClient::leave(const std::string& host, bool force, Done<bool> done) {
  call_ok(host, post(fmt::format("/swarm/leave?force={}", force ? "true" : "false"), ""),
          [done = std::move(done)](Result<engine::Response> r) {
            if (!r.ok()) return done(r.error());
            done(true);
          });
}

void SwarmClient::remove_node(const std::string& manager, const std::string& node_id, bool force, Done<bool> done) {
  engine::Call c{"DELETE", fmt::format("/nodes/{}?force={}", node_id, force ? "true" : "false"), "", "", "application/json", 30'000};
  call_ok(manager, std::move(c), [done = std::move(done)](Result<engine::Response> r) {
    if (!r.ok()) return done(r.error());
    done(true);
  });
}

}  // namespace berth::cluster
