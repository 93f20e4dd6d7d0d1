// api/handlers.h — the REST API: requests in, responses out.
//
// Routing, request-body parsing (untrusted input: every field checked, errors name it) and JSON
// rendering of control-loop state. Every request but GET /v1/health is authenticated (a bearer
// token, auth/auth.h) and authorized by role and environment ownership before it is routed;
// cross-origin browser requests are refused (Host, Origin, JSON content type). No sockets here:
// api/http_server.h carries requests in and responses out, and the fuzz target calls handle()
// directly. The formats are in docs/api.md; `loop` and `tokens` must outlive the Api.
//
// Threads. With Options::loop_executor set (berth serve), handle() runs on the transport's own
// thread: it checks the caller (Host, Origin, token) there and answers status reads (GET
// /v1/environments[/NAME]) from the loop's read model without waiting for the loop; every other
// request is posted to the loop, routed there, and its reply handed back to the transport
// through Options::to_transport (event streams are bridged the same way). So a busy loop never
// holds up a status read, and the loop never waits for a socket. Unset (unit tests, the fuzzer),
// everything runs on the caller's thread, which must be the loop's. Either way most requests are
// answered at once, a few (exec, logs) once their runtime has answered.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "auth/auth.h"
#include "base/executor.h"
#include "control/loop.h"

namespace berth::api {

struct Request {
  std::string method;  // GET, POST, PUT, PATCH, DELETE
  std::string target;  // path with query, e.g. /v1/environments/beta-7/events?after=12
  std::string body;
  // The headers the API looks at (empty when absent).
  std::string authorization, if_match, origin, host, content_type, accept_encoding;
};

struct Response {
  int status = 200;
  std::string body;  // JSON
  std::string etag;  // sent as ETag when set (the version of a document, quoted)
  std::string content_type;  // empty: application/json
  std::string cache_control;  // empty: no-store
  std::string content_encoding;  // "gzip" when `body` is compressed (sent with Vary: Accept-Encoding)
  // A response that stays open (server-sent events, text/event-stream) instead of `body`: the
  // transport calls `stream` once its headers are out, with `send` (false once the connection is
  // gone or too far behind); `stream` returns what the transport calls when the connection
  // ends. Both on the transport's thread (the Api bridges them to the loop).
  using Send = std::function<bool(const std::string&)>;
  std::function<std::function<void()>(Send)> stream;
};

struct Options {
  // Host header values accepted (DNS rebinding); empty: any.
  std::vector<std::string> allowed_hosts;
  // `source.repo` prefixes members may use in their environments.
  std::vector<std::string> member_repos;
  // Directories imports may read from (`from: dump | datadir`); empty: none.
  std::vector<std::string> import_dirs;
  // `berth serve --test-clock` only: moves the daemon's clock forward (POST /v1/test/clock,
  // admins); unset: that route does not exist.
  std::function<void(Millis)> advance_clock;
  // The transport on a thread of its own (see the top of this file): the loop's executor, and
  // how to run a function on the transport's thread. Both set, or neither.
  Executor* loop_executor = nullptr;
  std::function<void(std::function<void()>)> to_transport;
  // berth serve --cluster-host (runtime/cluster): the hosts as JSON (GET /v1/cluster); draining
  // a host or making it active again (`done` once the Swarm took it); adding a host (`done`
  // with the host as JSON once it takes instances); a host leaving (`done` once that started).
  // All on the loop. Unset: the daemon runs no cluster.
  struct ClusterHost {
    std::string endpoint;   // its Engine API
    std::string advertise;  // its address in the Swarm ("": dockerd picks)
    std::map<std::string, std::string> labels;
  };
  std::function<nlohmann::json()> cluster_hosts;
  std::function<void(const std::string& host, bool drain, std::function<void(Status)> done)> cluster_drain;
  std::function<void(ClusterHost host, std::function<void(Result<nlohmann::json>)> done)> cluster_add;
  std::function<void(const std::string& host, bool force, std::function<void(Status)> done)> cluster_remove;
};

class Api {
 public:
  using Reply = std::function<void(Response)>;
  Api(control::ControlLoop& loop, auth::Tokens& tokens, Options options = {})
      : loop_(loop), tokens_(tokens), options_(std::move(options)) {}
  // Calls `reply` exactly once, at once or later, on the thread handle() was called on.
  void handle(const Request& request, Reply reply);
  // Once the server is bound (its port may have been picked): the Host values to accept.
  void set_allowed_hosts(std::vector<std::string> hosts) { options_.allowed_hosts = std::move(hosts); }

 private:
  bool threaded() const { return options_.loop_executor != nullptr; }
  // The part of handle() that runs on the loop: authorize, route, publish what changed, reply.
  void on_loop(const Request& request, const auth::Principal& who, Reply reply);
  // `reply` as the loop calls it: hands the response (and its stream) to the transport's thread.
  Reply to_transport(Reply reply) const;
  // Cross-origin checks, then who is calling.
  Result<auth::Principal> admit(const Request& request) const;
  // May `who` make this request? Reads: everyone; writes: by role and ownership.
  Status authorize(const auth::Principal& who, const Request& request) const;
  // Requests answered later; false if `request` is not one of them.
  bool route_async(const Request& request, const auth::Principal& who, Reply& reply);
  // /v1/cluster/... (api/cluster_routes.cc): answered on the loop, always.
  bool route_cluster(const Request& request, const auth::Principal& who, Reply& reply);
  // PUT /v1/catalog's answer, once the loop has applied (or refused) the document.
  void answer_apply(const std::string& filename, Result<control::Plan> plan, const Reply& reply);
  Response route(const Request& request, const auth::Principal& who);
  // Environment documents, tokens, audit (api/documents.cc); nullopt: not one of these routes.
  std::optional<Response> route_documents(const Request& request, const auth::Principal& who);
  // /v1/standards/NAME/rollout (api/rollout_routes.cc); nullopt: not that route.
  std::optional<Response> route_rollouts(const Request& request, const auth::Principal& who);
  // /v1/drift and /v1/environments/ENV/drift (api/drift_routes.cc); nullopt: not that route.
  std::optional<Response> route_drift(const Request& request, const auth::Principal& who);
  // `path` (absolute) inside a directory the daemon may read imports and releases from
  // (Options::import_dirs): its canonical form; forbidden otherwise, naming those directories.
  // The path is the caller's, the reading is the daemon's (root's).
  Result<std::string> importable(const std::string& path) const;
  // Ownership of environment `env` (fleet or document) for `who`.
  Status may_change(const auth::Principal& who, const std::string& env, std::string_view what) const;
  // GET /v1/environments[?...] and GET /v1/environments/NAME: answered from the loop's read
  // model, never its live state (api/status.cc).
  static bool is_status_read(const Request& request);
  // The environment a POST /v1/environments/{env}/{up,down,restart,refresh} acts on; "" for
  // any other request (the loop then publishes everything that changed).
  static std::string environment_action(const Request& request);
  Response route_status(const Request& request);
  // The JSON of a view, rendered once per view (cached by environment under its generation);
  // `gz`: the status gzipped, also once per view ("" if compressing failed).
  const std::string& rendered(const control::EnvView& view, bool summary = false, bool gz = false);
  struct Rendered {
    std::uint64_t generation = 0;
    std::string body;     // the status
    std::string body_gz;  // the same, gzipped (made at the first request that accepts it)
    std::string summary;  // its summary form
  };
  std::unordered_map<std::string, Rendered> rendered_;
  // The web UI's files gzipped, by path (they never change while the daemon runs).
  std::unordered_map<std::string, std::string> assets_gz_;
  control::ControlLoop& loop_;
  auth::Tokens& tokens_;
  Options options_;
};

nlohmann::json to_json(const control::EnvStatus& s);
nlohmann::json to_json(const store::Event& e);
// Error → {"error": message, "details": [...]} with the matching HTTP status.
Response error_response(const Error& e);

}  // namespace berth::api
