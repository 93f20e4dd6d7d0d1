// tests/integration/docker_env.h — the dockerd the container tests run against.
//
// A workplace rule: Docker runs only inside a network namespace the tests (or the script that
// starts them) made. scripts/docker-netns.sh start makes one with its own dockerd, and
// scripts/test.sh passes it in BERTH_TEST_DOCKER_NETNS (/run/netns/NAME) and
// BERTH_TEST_DOCKER_HOST (unix:///run/NAME/docker.sock). A test calls DockerEnv::enter() first:
// its thread, and so the berth daemon and the CLI it starts, then live in that namespace. The
// image berth-demo:latest (scripts/make-images.sh) is made when missing.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "base/result.h"

namespace berth::it {

struct EngineAnswer {
  unsigned status = 0;
  std::string body;
  nlohmann::json json() const { return nlohmann::json::parse(body, nullptr, false); }
};

// One Engine API call on the dockerd at `host` (unix:///...), synchronously (a test is allowed
// to block).
Result<EngineAnswer> engine_call(const std::string& host, const std::string& method, const std::string& target,
                                 const std::string& body = "", Millis timeout_ms = 60'000);

class DockerEnv {
 public:
  // The environment's dockerd, or nullopt with `why` (the test then skips).
  static std::optional<DockerEnv> from_environment(std::string* why);
  // Moves this thread into the dockerd's network namespace and makes sure the demo image is
  // there. false (and a test failure) when it cannot.
  bool enter();
  const std::string& host() const { return host_; }
  // One Engine API call, synchronously (a test is allowed to block).
  Result<EngineAnswer> call(const std::string& method, const std::string& target, const std::string& body = "");
  // The containers labelled berth.data=<data_id> (all, running or not).
  nlohmann::json containers(const std::string& data_id);
  // Removes every container, network and volume labelled berth.data=<data_id>.
  void remove_all(const std::string& data_id);
  // Removes what an earlier run of a test left on `subnet` (berth networks on it, and their
  // containers). Tests running at the same time never share a subnet, so nothing live goes.
  void clear_subnet(const std::string& subnet);

 private:
  std::string netns_, host_;
};

// A data directory's id (its <dir>/id file), as berth labels what it creates.
std::string data_id_of(const std::string& data_dir);

}  // namespace berth::it
