// client/client.h — a blocking client for the daemon's REST API, used by the CLI, the
// integration tests and the benchmarks. One keep-alive connection, reopened when needed.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "base/result.h"

namespace berth::client {

// The daemon address: `flag` if set, else $BERTH_ADDR, else 127.0.0.1:7700.
std::string default_address(const std::string& flag);

class Client {
 public:
  explicit Client(std::string address);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // 2xx → parsed body; otherwise an Error carrying the daemon's message and details.
  Result<nlohmann::json> get(const std::string& target);
  Result<nlohmann::json> post(const std::string& target, const nlohmann::json& body = nlohmann::json::object());
  Result<nlohmann::json> put(const std::string& target, const nlohmann::json& body);
  Result<nlohmann::json> del(const std::string& target);

 private:
  Result<nlohmann::json> call(const std::string& method, const std::string& target, const std::string& body);
  struct Conn;
  std::string address_;
  std::unique_ptr<Conn> conn_;
};

}  // namespace berth::client
