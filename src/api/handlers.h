// api/handlers.h — the REST API: requests in, responses out.
//
// Routing, request-body parsing (untrusted input: every field checked, errors name it) and JSON
// rendering of control-loop state. No sockets here: api/http_server.h carries requests in and
// responses out, and the fuzz target calls handle() directly. Most requests are answered before
// handle() returns; a few (exec, logs) once their runtime has answered. Runs on the control
// loop's thread, replies too; `loop` must outlive the Api. The formats are in docs/api.md.
#pragma once

#include <functional>
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
  using Reply = std::function<void(Response)>;
  explicit Api(control::ControlLoop& loop) : loop_(loop) {}
  // Calls `reply` exactly once, at once or later on the loop's thread.
  void handle(const Request& request, Reply reply);

 private:
  // Requests answered later; false if `request` is not one of them.
  bool route_async(const Request& request, Reply& reply);
  Response route(const Request& request);
  control::ControlLoop& loop_;
};

nlohmann::json to_json(const control::EnvStatus& s);
nlohmann::json to_json(const store::Event& e);
// Error → {"error": message, "details": [...]} with the matching HTTP status.
Response error_response(const Error& e);

}  // namespace berth::api
