// api/handlers.h — the REST API: requests in, responses out.
//
// Routing, request-body parsing (untrusted input: every field checked, errors name it) and JSON
// rendering of control-loop state. Every request but GET /v1/health is authenticated (a bearer
// token, auth/auth.h) and authorized by role and environment ownership before it is routed;
// cross-origin browser requests are refused (Host, Origin, JSON content type). No sockets here:
// api/http_server.h carries requests in and responses out, and the fuzz target calls handle()
// directly. Most requests are answered before
// handle() returns; a few (exec, logs) once their runtime has answered. Runs on the control
// loop's thread, replies too; `loop` and `tokens` must outlive the Api. The formats are in
// docs/api.md.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "auth/auth.h"
#include "control/loop.h"

namespace berth::api {

struct Request {
  std::string method;  // GET, POST, PUT, PATCH, DELETE
  std::string target;  // path with query, e.g. /v1/environments/beta-7/events?after=12
  std::string body;
  // The headers the API looks at (empty when absent).
  std::string authorization, if_match, origin, host, content_type;
};

struct Response {
  int status = 200;
  std::string body;  // JSON
  std::string etag;  // sent as ETag when set (the version of a document, quoted)
  std::string content_type;  // empty: application/json
  std::string cache_control;  // empty: no-store
  // A response that stays open (server-sent events, text/event-stream) instead of `body`: the
  // transport calls `stream` once its headers are out, with `send` (false once the connection is
  // gone or too far behind); `stream` returns what the transport calls when the connection
  // ends. Both on the loop's thread.
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
};

class Api {
 public:
  using Reply = std::function<void(Response)>;
  Api(control::ControlLoop& loop, auth::Tokens& tokens, Options options = {})
      : loop_(loop), tokens_(tokens), options_(std::move(options)) {}
  // Calls `reply` exactly once, at once or later on the loop's thread.
  void handle(const Request& request, Reply reply);
  // Once the server is bound (its port may have been picked): the Host values to accept.
  void set_allowed_hosts(std::vector<std::string> hosts) { options_.allowed_hosts = std::move(hosts); }

 private:
  // Cross-origin checks, then who is calling.
  Result<auth::Principal> admit(const Request& request) const;
  // May `who` make this request? Reads: everyone; writes: by role and ownership.
  Status authorize(const auth::Principal& who, const Request& request) const;
  // Requests answered later; false if `request` is not one of them.
  bool route_async(const Request& request, const auth::Principal& who, Reply& reply);
  Response route(const Request& request, const auth::Principal& who);
  // Environment documents, tokens, audit (api/documents.cc); nullopt: not one of these routes.
  std::optional<Response> route_documents(const Request& request, const auth::Principal& who);
  // Ownership of environment `env` (fleet or document) for `who`.
  Status may_change(const auth::Principal& who, const std::string& env, std::string_view what) const;
  control::ControlLoop& loop_;
  auth::Tokens& tokens_;
  Options options_;
};

nlohmann::json to_json(const control::EnvStatus& s);
nlohmann::json to_json(const store::Event& e);
// Error → {"error": message, "details": [...]} with the matching HTTP status.
Response error_response(const Error& e);

}  // namespace berth::api
