#include "cluster/swarm/swarm.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "base/text.h"

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

Result<engine::Engine*> SwarmClient::engine_of(const std::string& host) {
  auto it = engines_.find(host);
  if (it == engines_.end()) {
    auto opened = engine::Engine::open(host);
    if (!opened.ok()) return opened.error();
    it = engines_.emplace(host, std::move(opened.value())).first;
  }
  return it->second.get();
}

void SwarmClient::call(const std::string& host, engine::Call c, std::function<void(Result<engine::Response>)> on_loop) {
  auto engine = engine_of(host);
  if (!engine.ok()) {
    loop_.post([alive = std::weak_ptr<bool>(alive_), on_loop = std::move(on_loop), e = engine.error()]() mutable {
      if (auto a = alive.lock(); a && *a) on_loop(std::move(e));
    });
    return;
  }
  (*engine)->request(std::move(c), [&loop = loop_, alive = std::weak_ptr<bool>(alive_), on_loop = std::move(on_loop)](
                                        Result<engine::Response> r) mutable {
    if (!alive.lock()) return;
    loop.post([alive, on_loop = std::move(on_loop), r = std::move(r)]() mutable {
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

namespace {

// Where a saved image goes, written on the saving Engine's thread only.
struct TarSink {
  int fd = -1;
  std::int64_t bytes = 0;
  std::string error;
  ~TarSink() {
    if (fd >= 0) ::close(fd);
  }
  bool write(std::string_view piece) {
    if (!error.empty()) return false;
    if (bytes + static_cast<std::int64_t>(piece.size()) > SwarmClient::kMaxImageBytes) {
      error = fmt::format("the image is larger than {} GiB", SwarmClient::kMaxImageBytes >> 30);
      return false;
    }
    while (!piece.empty()) {
      const ssize_t n = ::write(fd, piece.data(), piece.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        error = std::strerror(errno);
        return false;
      }
      piece.remove_prefix(static_cast<std::size_t>(n));
      bytes += n;
    }
    return true;
  }
};

// The part of an image's name that may go into a file name.
std::string file_safe(std::string_view name) {
  std::string out;
  for (char c : name.substr(0, 64)) out += std::isalnum(static_cast<unsigned char>(c)) ? c : '-';
  return out;
}

}  // namespace

void SwarmClient::image_id(const std::string& host, const std::string& image, Done<std::string> done) {
  call_ok(host, get(fmt::format("/images/{}/json", image)), [host, image, done = std::move(done)](Result<engine::Response> r) {
    if (!r.ok()) return done(r.error());
    auto doc = document(*r, "GET /images/{name}/json");
    if (!doc.ok()) return done(doc.error());
    const json id = (*doc)["Id"];
    if (!id.is_string() || id.get<std::string>().empty()) return done(invalid(fmt::format("{} gave no id for image '{}'", host, image)));
    done(id.get<std::string>());
  });
}

void SwarmClient::distribute_image(const std::string& from, const std::vector<std::string>& to, const std::string& image,
                                   const std::string& work_dir, Done<ImageCopy> done) {
  const Millis t0 = clock_.monotonic_ms();
  call_ok(from, get(fmt::format("/images/{}/json", image)), [=, this, done = std::move(done)](Result<engine::Response> r) mutable {
    if (!r.ok()) return done(r.error());
    auto doc = document(*r, "GET /images/{name}/json");
    if (!doc.ok()) return done(doc.error());
    const json id = (*doc)["Id"];
    if (!id.is_string() || id.get<std::string>().empty()) return done(invalid(fmt::format("{} gave no id for image '{}'", from, image)));
    ImageCopy copy;
    copy.image_id = id.get<std::string>();
    // A private file of its own (0600, never an existing one).
    const std::string path = fmt::format("{}/image-{}-{}.tar", work_dir, file_safe(image), ++next_stream_);
    auto sink = std::make_shared<TarSink>();
    sink->fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (sink->fd < 0) return done(unavailable(fmt::format("cannot create {}: {}", path, std::strerror(errno))));
    auto engine = engine_of(from);
    if (!engine.ok()) {
      ::unlink(path.c_str());
      return done(engine.error());
    }
    const std::uint64_t stream_id = next_stream_;
    // Saved: each host loads the file at once; when all have, each is asked for the image.
    auto saved = [=, this, done = std::move(done)](Result<engine::Response> end) mutable {
      streams_.erase(stream_id);
      if (end.ok() && !end->ok()) end = unavailable(fmt::format("{}: {}", end->status, engine::error_message(*end)));
      if (end.ok() && !sink->error.empty()) end = unavailable(sink->error);
      copy.bytes = sink->bytes;
      sink.reset();  // (its writer is done)
      if (!end.ok()) {
        ::unlink(path.c_str());
        return done(Error{end.error().code, fmt::format("saving image '{}' from {}: {}", image, from, end.error().message)});
      }
      copy.save_ms = clock_.monotonic_ms() - t0;
      struct Pending {
        std::size_t left = 0;
        std::vector<std::string> errors;
      };
      auto pending = std::make_shared<Pending>();
      pending->left = to.size();
      const Millis t1 = clock_.monotonic_ms();
      auto finish = [=, this, done = std::move(done)]() mutable {
        ::unlink(path.c_str());
        if (!pending->errors.empty())
          return done(unavailable(fmt::format("loading image '{}': {}", image, fmt::join(pending->errors, "; "))));
        copy.load_ms = clock_.monotonic_ms() - t1;
        done(copy);
      };
      if (to.empty()) return finish();
      auto shared_finish = std::make_shared<decltype(finish)>(std::move(finish));
      for (const auto& host : to) {
        engine::Call load{"POST", "/images/load?quiet=1", "", path, "application/x-tar", 600'000};
        call_ok(host, std::move(load), [=, this](Result<engine::Response> l) {
          auto verified = [=](Result<engine::Response> v) {
            if (!v.ok()) {
              pending->errors.push_back(v.error().message);
            } else {
              json got = json::parse(v->body, nullptr, false);
              if (!got.is_object() || got.value("Id", "") != copy.image_id)
                pending->errors.push_back(fmt::format("{} has another image under '{}' after loading it", host, copy.image_id));
            }
            if (--pending->left == 0) (*shared_finish)();
          };
          if (!l.ok()) return verified(l.error());
          call_ok(host, get(fmt::format("/images/{}/json", copy.image_id)), verified);
        });
      }
    };
    // Saved by the name asked for, so that the hosts know it by that name too (a name:tag);
    // the ids are compared after the load.
    engine::Call save{"GET", "/images/get?names=" + percent_encode(image), "", "", "application/json", 0};
    auto handle = (*engine)->stream(
        std::move(save), [sink](std::string_view piece) { return sink->write(piece); },
        [&loop = loop_, alive = std::weak_ptr<bool>(alive_), saved = std::move(saved)](Result<engine::Response> end) mutable {
          if (!alive.lock()) return;
          loop.post([alive, saved = std::move(saved), end = std::move(end)]() mutable {
            if (auto a = alive.lock(); a && *a) saved(std::move(end));
          });
        });
    streams_.emplace(stream_id, std::move(handle));
  });
}

}  // namespace berth::cluster
