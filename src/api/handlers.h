// api/handlers.h — the REST API as a pure function from request to response.
//
// Routing, request-body parsing (untrusted input: every field checked, errors name it) and JSON
// rendering of control-loop state. No sockets here: api/http_server.h carries requests in and
// responses out, and the fuzz target calls handle() directly. Runs on the control loop's
// thread; `loop` must outlive the Api. The formats are documented in docs/api.md.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "control/loop.h"

namespace berth::api {

struct Request {
  std::string method;  // GET, POST, PUT, DELETE
  std::string target;  // path with query, e.g. /v1/environments/beta-7/events?after=12
  std::string body;
};

struct Response {
  int status = 200;
  std::string body;  // JSON
};

class Api {
 public:
  explicit Api(control::ControlLoop& loop) : loop_(loop) {}
  Response handle(const Request& request);

 private:
  Response route(const Request& request);
  control::ControlLoop& loop_;
};

nlohmann::json to_json(const control::EnvStatus& s);
nlohmann::json to_json(const store::Event& e);
// Error → {"error": message, "details": [...]} with the matching HTTP status.
Response error_response(const Error& e);

}  // namespace berth::api
