#include "docker_env.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <future>
#include <mutex>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "harness.h"
#include "engine/engine.h"

namespace berth::it {

std::optional<DockerEnv> DockerEnv::from_environment(std::string* why) {
  const char* netns = std::getenv("BERTH_TEST_DOCKER_NETNS");
  const char* host = std::getenv("BERTH_TEST_DOCKER_HOST");
  if (!netns || !host || !*netns || !*host) {
    *why = "no dockerd for the container tests: run scripts/docker-netns.sh start and set BERTH_TEST_DOCKER_NETNS and "
           "BERTH_TEST_DOCKER_HOST (scripts/test.sh does)";
    return std::nullopt;
  }
  if (geteuid() != 0) {
    *why = "the container tests need root (a network namespace, dockerd)";
    return std::nullopt;
  }
  DockerEnv e;
  e.netns_ = netns;
  e.host_ = host;
  return e;
}

bool DockerEnv::enter() {
  int fd = ::open(netns_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
    ADD_FAILURE() << "cannot enter " << netns_ << ": " << std::strerror(errno);
    if (fd >= 0) close(fd);
    return false;
  }
  close(fd);
  // The image every container test runs, of the berth-demo-svc just built (the script imports
  // it again only when its contents changed).
  static std::once_flag once;
  static bool made = false;
  std::call_once(once, [&] {
    std::string cmd = fmt::format("DOCKER_HOST={} {}/scripts/make-images.sh {}/berth-demo-svc >/dev/null", host_, SOURCE_DIR,
                                  DEMO_SVC_DIR);
    made = std::system(cmd.c_str()) == 0;
  });
  if (!made) ADD_FAILURE() << "scripts/make-images.sh could not make berth-demo:latest in " << host_;
  return made;
}

Result<EngineAnswer> engine_call(const std::string& host, const std::string& method, const std::string& target,
                                 const std::string& body, Millis timeout_ms) {
  auto engine = engine::Engine::open(host);
  if (!engine.ok()) return engine.error();
  std::promise<Result<engine::Response>> p;
  (*engine)->request({method, target, body, "", "application/json", timeout_ms},
                     [&](Result<engine::Response> r) { p.set_value(std::move(r)); });
  auto r = p.get_future().get();
  if (!r.ok()) return r.error();
  return EngineAnswer{r->status, r->body};
}

Result<EngineAnswer> DockerEnv::call(const std::string& method, const std::string& target, const std::string& body) {
  return engine_call(host_, method, target, body);
}

namespace {
std::string label_filter(const std::string& data_id) {
  nlohmann::json filters = {{"label", nlohmann::json::array({"berth.data=" + data_id})}};
  std::string q;
  for (unsigned char c : filters.dump()) q += std::isalnum(c) ? std::string(1, static_cast<char>(c)) : fmt::format("%{:02X}", c);
  return q;
}
}  // namespace

void DockerEnv::remove_all(const std::string& data_id) {
  for (const auto& c : containers(data_id)) (void)call("DELETE", "/containers/" + c["Id"].get<std::string>() + "?force=1");
  if (auto nets = call("GET", "/networks?filters=" + label_filter(data_id)); nets.ok() && nets->json().is_array())
    for (const auto& n : nets->json()) (void)call("DELETE", "/networks/" + n["Id"].get<std::string>());
  if (auto vols = call("GET", "/volumes?filters=" + label_filter(data_id)); vols.ok()) {
    // json() parses anew each call: keep the document, the loop iterates over a part of it.
    const nlohmann::json body = vols->json();
    if (body.is_object())
      for (const auto& v : body["Volumes"]) (void)call("DELETE", "/volumes/" + v["Name"].get<std::string>());
  }
}

void DockerEnv::clear_subnet(const std::string& subnet) {
  auto nets = call("GET", "/networks");
  if (!nets.ok() || !nets->json().is_array()) return;
  for (const auto& n : nets->json()) {
    bool ours = n.contains("Labels") && n["Labels"].is_object() && n["Labels"].contains("berth.data");
    bool on_it = false;
    if (n.contains("IPAM") && n["IPAM"].is_object() && n["IPAM"]["Config"].is_array())
      for (const auto& c : n["IPAM"]["Config"]) on_it = on_it || c.value("Subnet", "") == subnet;
    if (ours && on_it) remove_all(n["Labels"]["berth.data"].get<std::string>());
  }
}

nlohmann::json DockerEnv::containers(const std::string& data_id) {
  auto r = call("GET", "/containers/json?all=1&filters=" + label_filter(data_id));
  if (!r.ok() || r->status != 200) {
    ADD_FAILURE() << "listing containers: " << (r.ok() ? r->body : r.error().message);
    return nlohmann::json::array();
  }
  return r->json();
}

std::string data_id_of(const std::string& data_dir) {
  std::string id = read_file(data_dir + "/id");
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  return id;
}

}  // namespace berth::it
