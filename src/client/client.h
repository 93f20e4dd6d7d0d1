// client/client.h — a blocking client for the daemon's REST API, used by the CLI, the
// integration tests and the benchmarks. One keep-alive connection, reopened when needed.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "base/result.h"

namespace berth::client {

// The daemon address: `flag` if set, else $BERTH_ADDR, else 127.0.0.1:7700. "https://HOST:PORT"
// speaks TLS, verifying the daemon's certificate against $BERTH_CACERT (or the system's CAs)
// and HOST.
std::string default_address(const std::string& flag);
// The API token: `flag` if set, else $BERTH_TOKEN, else the first line of $BERTH_TOKEN_FILE,
// else of $BERTH_DATA_DIR/admin.token, else of ~/.berth/admin.token (the daemon's admin token,
// readable by whoever may run the daemon); "" when none.
std::string default_token(const std::string& flag);

class Client {
 public:
  explicit Client(std::string address, std::string token = default_token(""));
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // 2xx → parsed body; otherwise an Error carrying the daemon's message and details.
  Result<nlohmann::json> get(const std::string& target);
  Result<nlohmann::json> post(const std::string& target, const nlohmann::json& body = nlohmann::json::object());
  Result<nlohmann::json> put(const std::string& target, const nlohmann::json& body);
  Result<nlohmann::json> del(const std::string& target);
  // With If-Match: the version the change is based on (0: none sent).
  Result<nlohmann::json> put(const std::string& target, const nlohmann::json& body, std::int64_t if_match);
  Result<nlohmann::json> patch(const std::string& target, const nlohmann::json& body, std::int64_t if_match);
  Result<nlohmann::json> del(const std::string& target, std::int64_t if_match);

  // Follow a server-sent event stream (GET /v1/events/stream...) on a connection of its own:
  // `on` gets each event's JSON, and nullptr whenever `tick_ms` pass without one; it returns
  // false to stop. Returns when stopped, or with the error that ended the stream.
  Status stream(const std::string& target, const std::function<bool(const nlohmann::json*)>& on, std::int64_t tick_ms);

 private:
  Result<nlohmann::json> call(const std::string& method, const std::string& target, const std::string& body,
                              std::int64_t if_match = 0);
  struct Endpoint {
    bool tls = false;
    std::string host, port, host_port;
  };
  Result<Endpoint> endpoint() const;
  struct Conn;
  std::string address_;
  std::string token_;
  std::unique_ptr<Conn> conn_;
};

}  // namespace berth::client
