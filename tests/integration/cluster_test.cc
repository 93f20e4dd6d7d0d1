// A real Docker Swarm of three hosts (scripts/cluster.sh: three dockerds, each in a network
// namespace of its own behind a bridge in a hub namespace; nothing on the machine's network),
// driven by berth's Swarm client: create, join, list, tune the heartbeat, label, drain, lose a
// host and remove it.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iterator>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "base/asio_executor.h"
#include "base/clock.h"
#include "base/text.h"
#include "cluster/swarm/swarm.h"
#include "docker_env.h"
#include "harness.h"

namespace berth::it {
namespace {

using ::testing::HasSubstr;

class Cluster : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "the cluster tests need root (network namespaces, dockerd)";
    if (std::system("command -v dockerd >/dev/null && command -v docker >/dev/null") != 0)
      GTEST_SKIP() << "the cluster tests need dockerd and the docker CLI (docker.io; scripts/install-deps.sh)";
    name_ = fmt::format("berth-it-cl{}", getpid());
    started_ = true;  // (a start that fails half-way is cleaned up too)
    ASSERT_EQ(script("start 3 >/dev/null"), 0) << "scripts/cluster.sh start 3 failed";
    for (int k = 1; k <= 3; ++k) hosts_.push_back(fmt::format("unix:///run/{}-{}/docker.sock", name_, k));
  }
  void TearDown() override {
    if (started_) {
      EXPECT_EQ(script("stop"), 0) << "scripts/cluster.sh stop failed";
    }
  }

  int script(const std::string& args) const {
    return std::system(fmt::format("BERTH_CLUSTER_NAME={} {}/scripts/cluster.sh {}", name_, SOURCE_DIR, args).c_str());
  }
  static std::string addr(int k) { return fmt::format("10.231.0.{}", 10 + k); }

  // Runs the loop until the client's answer comes (the client posts every answer to it).
  template <typename T, typename Start>
  Result<T> await(Start start) {
    std::optional<Result<T>> got;
    start([&](Result<T> r) { got.emplace(std::move(r)); });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
    while (!got && std::chrono::steady_clock::now() < deadline) {
      io_.restart();
      io_.run_one_for(std::chrono::milliseconds(200));
    }
    if (!got) return unavailable("no answer from the Swarm client within 90 s");
    return std::move(*got);
  }

  // One Engine API call on a host (docker_env.h); the answer's JSON, or null and the error.
  struct Answer {
    unsigned status = 0;
    nlohmann::json body;
    std::string text;
  };
  static Answer engine_call(const std::string& host, const std::string& method, const std::string& target,
                            const nlohmann::json& body = nullptr, Millis timeout_ms = 60'000) {
    auto r = it::engine_call(host, method, target, body.is_null() ? "" : body.dump(), timeout_ms);
    if (!r.ok()) return {0, nullptr, r.error().message};
    return {r->status, r->json(), r->body};
  }

  // Hosts 1 (manager, heartbeat 1 s), 2 and 3 (workers) in one Swarm, all ready.
  void make_swarm() {
    auto id = await<std::string>([&](auto done) { client_.create(hosts_[0], addr(1), 1000, done); });
    ASSERT_TRUE(id.ok()) << id.error().message;
    for (int k = 2; k <= 3; ++k) {
      auto joined = await<cluster::LocalInfo>(
          [&](auto done) { client_.join(hosts_[static_cast<std::size_t>(k - 1)], hosts_[0], addr(k), false, done); });
      ASSERT_TRUE(joined.ok()) << joined.error().message;
    }
    ASSERT_TRUE(wait_until([&] {
      auto now = nodes(hosts_[0]);
      return now.size() == 3 && std::all_of(now.begin(), now.end(), [](const auto& n) { return n.state == "ready"; });
    }, std::chrono::seconds(60)));
  }

  // The demo image on every host (made on host 1, copied to the others); its id.
  std::string image_everywhere() {
    EXPECT_EQ(std::system(fmt::format("DOCKER_HOST={} {}/scripts/make-images.sh {}/berth-demo-svc >/dev/null", hosts_[0],
                                      SOURCE_DIR, DEMO_SVC_DIR)
                              .c_str()),
              0);
    char tmpl[] = "/tmp/berth-it-image.XXXXXX";
    EXPECT_NE(mkdtemp(tmpl), nullptr);
    auto copied = await<cluster::SwarmClient::ImageCopy>(
        [&](auto done) { client_.distribute_image(hosts_[0], {hosts_[1], hosts_[2]}, "berth-demo:latest", tmpl, done); });
    std::filesystem::remove_all(tmpl);
    EXPECT_TRUE(copied.ok()) << copied.error().message;
    return copied.ok() ? copied->image_id : "";
  }

  std::vector<cluster::Node> nodes(const std::string& manager) {
    auto n = await<std::vector<cluster::Node>>([&](auto done) { client_.nodes(manager, done); });
    EXPECT_TRUE(n.ok()) << n.error().message;
    return n.ok() ? *n : std::vector<cluster::Node>{};
  }
  // (Not of a temporary list: the pointer would outlive it.)
  const cluster::Node* node_named(std::vector<cluster::Node>&&, int) const = delete;
  const cluster::Node* node_named(const std::vector<cluster::Node>& all, int k) const {
    for (const auto& n : all)
      if (n.hostname == fmt::format("{}-{}", name_, k)) return &n;
    return nullptr;
  }

  std::string name_;
  bool started_ = false;
  std::vector<std::string> hosts_;
  boost::asio::io_context io_;
  AsioExecutor loop_{io_};
  SystemClock clock_;
  cluster::SwarmClient client_{loop_, clock_};
};

TEST_F(Cluster, SwarmOfThreeHostsIsMadeListedTunedAndLosesAHost) {
  // Three fresh dockerds, in no Swarm.
  for (const auto& h : hosts_) {
    auto info = await<cluster::LocalInfo>([&](auto done) { client_.info(h, done); });
    ASSERT_TRUE(info.ok()) << info.error().message;
    EXPECT_EQ(info->swarm_state, "inactive");
    EXPECT_GT(info->cpus, 0);
    EXPECT_GT(info->memory_bytes, 0);
  }

  // Host 1 creates the Swarm with a 1 s heartbeat; 2 and 3 join as workers.
  auto id = await<std::string>([&](auto done) { client_.create(hosts_[0], addr(1), 1000, done); });
  ASSERT_TRUE(id.ok()) << id.error().message;
  for (int k = 2; k <= 3; ++k) {
    auto joined = await<cluster::LocalInfo>(
        [&](auto done) { client_.join(hosts_[static_cast<std::size_t>(k - 1)], hosts_[0], addr(k), false, done); });
    ASSERT_TRUE(joined.ok()) << joined.error().message;
    EXPECT_EQ(joined->swarm_state, "active");
    EXPECT_FALSE(joined->manager);
    EXPECT_EQ(joined->node_addr, addr(k));
  }

  auto all = nodes(hosts_[0]);
  ASSERT_EQ(all.size(), 3u);
  for (int k = 1; k <= 3; ++k) {
    const auto* n = node_named(all, k);
    ASSERT_NE(n, nullptr) << "host " << k << " is not among the Swarm's nodes";
    EXPECT_EQ(n->role, k == 1 ? "manager" : "worker");
    EXPECT_EQ(n->leader, k == 1);
    EXPECT_EQ(n->availability, "active");
    EXPECT_GT(n->nano_cpus, 0);
    EXPECT_GT(n->memory_bytes, 0);
    EXPECT_EQ(n->addr, addr(k));
  }
  EXPECT_EQ(node_named(all, 1)->id, *id);
  // Workers join as "unknown" and become ready at their first heartbeat.
  EXPECT_TRUE(wait_until([&] {
    auto now = nodes(hosts_[0]);
    return now.size() == 3 && std::all_of(now.begin(), now.end(), [](const auto& n) { return n.state == "ready"; });
  }, std::chrono::seconds(60)));

  // The heartbeat, read and changed.
  auto swarm = await<cluster::SwarmInfo>([&](auto done) { client_.swarm(hosts_[0], done); });
  ASSERT_TRUE(swarm.ok()) << swarm.error().message;
  EXPECT_EQ(swarm->heartbeat_ms, 1000);
  EXPECT_FALSE(swarm->worker_token.empty());
  auto tuned = await<cluster::SwarmInfo>([&](auto done) { client_.set_heartbeat(hosts_[0], 2000, done); });
  ASSERT_TRUE(tuned.ok()) << tuned.error().message;
  EXPECT_EQ(tuned->heartbeat_ms, 2000);
  EXPECT_GT(tuned->version, swarm->version);
  tuned = await<cluster::SwarmInfo>([&](auto done) { client_.set_heartbeat(hosts_[0], 1000, done); });
  ASSERT_TRUE(tuned.ok()) << tuned.error().message;
  EXPECT_EQ(tuned->heartbeat_ms, 1000);

  // A worker is not a manager: asking it for the nodes is an error that names it.
  auto from_worker = await<std::vector<cluster::Node>>([&](auto done) { client_.nodes(hosts_[1], done); });
  ASSERT_FALSE(from_worker.ok());
  EXPECT_EQ(from_worker.error().code, ErrorCode::kUnavailable);
  EXPECT_THAT(from_worker.error().message, HasSubstr(hosts_[1]));

  // Labels and availability of host 2.
  const std::string two = node_named(all, 2)->id;
  auto labelled = await<cluster::Node>([&](auto done) {
    client_.update_node(hosts_[0], two, std::nullopt, std::map<std::string, std::string>{{"rack", "b"}}, done);
  });
  ASSERT_TRUE(labelled.ok()) << labelled.error().message;
  EXPECT_EQ(labelled->labels.at("rack"), "b");
  EXPECT_EQ(labelled->availability, "active");
  auto drained = await<cluster::Node>([&](auto done) { client_.update_node(hosts_[0], two, "drain", std::nullopt, done); });
  ASSERT_TRUE(drained.ok()) << drained.error().message;
  EXPECT_EQ(drained->availability, "drain");
  EXPECT_EQ(drained->labels.at("rack"), "b");  // kept
  auto bad = await<cluster::Node>([&](auto done) { client_.update_node(hosts_[0], two, "asleep", std::nullopt, done); });
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error().message, HasSubstr("'asleep': give active, pause or drain"));

  // Host 3's dockerd dies: the Swarm marks it down within a few heartbeats.
  const std::string three = node_named(all, 3)->id;
  ASSERT_EQ(script("kill 3"), 0);
  std::string state;
  EXPECT_TRUE(wait_until([&] {
    auto now = nodes(hosts_[0]);
    const auto* n = node_named(now, 3);
    state = n ? n->state : "absent";
    return state == "down";
  }, std::chrono::seconds(60))) << "host 3 is still " << state;
  auto gone = await<cluster::LocalInfo>([&](auto done) { client_.info(hosts_[2], done); });
  EXPECT_FALSE(gone.ok());  // its Engine does not answer

  // Removed from the Swarm, it is no longer listed.
  auto removed = await<bool>([&](auto done) { client_.remove_node(hosts_[0], three, true, done); });
  ASSERT_TRUE(removed.ok()) << removed.error().message;
  all = nodes(hosts_[0]);
  EXPECT_EQ(all.size(), 2u);
  EXPECT_EQ(node_named(all, 3), nullptr);
}

TEST_F(Cluster, AnImageReachesEveryHostWithoutARegistry) {
  // The demo image, made in host 1 only (as a build would), then saved once and loaded on 2 and 3.
  ASSERT_EQ(std::system(fmt::format("DOCKER_HOST={} {}/scripts/make-images.sh {}/berth-demo-svc >/dev/null", hosts_[0], SOURCE_DIR,
                                    DEMO_SVC_DIR)
                            .c_str()),
            0);
  char tmpl[] = "/tmp/berth-it-image.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string work = tmpl;
  auto copied = await<cluster::SwarmClient::ImageCopy>(
      [&](auto done) { client_.distribute_image(hosts_[0], {hosts_[1], hosts_[2]}, "berth-demo:latest", work, done); });
  ASSERT_TRUE(copied.ok()) << copied.error().message;
  EXPECT_THAT(copied->image_id, ::testing::StartsWith("sha256:"));
  EXPECT_GT(copied->bytes, 1 << 20);  // a binary and its libraries
  std::printf("image of %.1f MB: saved in %lld ms, loaded on 2 hosts in %lld ms\n", static_cast<double>(copied->bytes) / 1e6,
              static_cast<long long>(copied->save_ms), static_cast<long long>(copied->load_ms));
  // The tar is gone; an image that is not there is an error naming it and the host.
  EXPECT_TRUE(std::filesystem::is_empty(work));
  auto missing = await<cluster::SwarmClient::ImageCopy>(
      [&](auto done) { client_.distribute_image(hosts_[1], {hosts_[2]}, "no-such-image:1", work, done); });
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
  EXPECT_THAT(missing.error().message, HasSubstr("no-such-image:1"));
  EXPECT_THAT(missing.error().message, HasSubstr(hosts_[1]));
  std::filesystem::remove_all(work);
}

// What the failover design rests on (docs/cluster.md), verified on this kernel: a container
// created with a fixed address on an attachable overlay answers there from another host; once
// its host is lost and removed from the Swarm, the same address can be given to a container on
// another host, and answers from there.
TEST_F(Cluster, AFixedOverlayAddressAnswersAcrossHostsAndMovesWhenItsHostIsLost) {
  make_swarm();
  const std::string image = image_everywhere();
  ASSERT_FALSE(image.empty());
  // berth's pool as the subnet, Docker's own addresses fenced into a slice berth never assigns.
  auto net = engine_call(hosts_[0], "POST", "/networks/create",
                         {{"Name", "berth-ovl"}, {"Driver", "overlay"}, {"Attachable", true}, {"CheckDuplicate", true},
                          {"IPAM", {{"Config", {{{"Subnet", "10.232.0.0/24"}, {"IPRange", "10.232.0.240/28"},
                                                 {"Gateway", "10.232.0.1"}}}}}}});
  ASSERT_EQ(net.status, 201u) << net.text;

  // A container on `host` at `ip`, running `cmd`; its id ("" and a failure if it could not start).
  auto run = [&](int host, const std::string& name, const std::string& ip, std::vector<std::string> cmd) -> std::string {
    const std::string& h = hosts_[static_cast<std::size_t>(host - 1)];
    auto created = engine_call(h, "POST", "/containers/create?name=" + name,
                               {{"Image", image},
                                {"Cmd", cmd},
                                {"HostConfig", {{"NetworkMode", "berth-ovl"}}},
                                {"NetworkingConfig", {{"EndpointsConfig", {{"berth-ovl", {{"IPAMConfig", {{"IPv4Address", ip}}}}}}}}}});
    if (created.status != 201) {
      ADD_FAILURE() << "creating " << name << " on host " << host << ": " << created.status << " " << created.text;
      return "";
    }
    const std::string id = created.body["Id"].get<std::string>();
    auto started = engine_call(h, "POST", "/containers/" + id + "/start", nullptr, 120'000);
    if (started.status != 204) {
      ADD_FAILURE() << "starting " << name << " on host " << host << ": " << started.status << " " << started.text;
      return "";
    }
    return id;
  };
  // Whether a client on `host` gets an answer from `ip` (a container that curls it, then exits).
  auto answers = [&](int host, const std::string& name, const std::string& ip, const std::string& from_ip) {
    const std::string id = run(host, name, from_ip,
                               {"/bin/sh", "-c",
                                fmt::format("n=0; while [ $n -lt 60 ]; do "
                                            "curl -sf --max-time 2 http://{}:8080/healthcheck && exit 0; n=$((n+1)); sleep 0.5; "
                                            "done; exit 1",
                                            ip)});
    if (id.empty()) return false;
    auto waited = engine_call(hosts_[static_cast<std::size_t>(host - 1)], "POST", "/containers/" + id + "/wait", nullptr, 90'000);
    return waited.status == 200 && waited.body.is_object() && waited.body.value("StatusCode", -1) == 0;
  };

  ASSERT_FALSE(run(2, "srv", "10.232.0.10", {"/usr/local/bin/berth-demo-svc", "--listen", "0.0.0.0:8080"}).empty());
  EXPECT_TRUE(answers(3, "probe-1", "10.232.0.10", "10.232.0.11")) << "10.232.0.10 on host 2 did not answer host 3";

  // Host 2 is lost: marked down, then removed from the Swarm.
  auto all = nodes(hosts_[0]);
  const auto* two = node_named(all, 2);
  ASSERT_NE(two, nullptr);
  const std::string two_id = two->id;
  ASSERT_EQ(script("kill 2"), 0);
  ASSERT_TRUE(wait_until([&] {
    const auto now = nodes(hosts_[0]);
    const auto* n = node_named(now, 2);
    return n && n->state == "down";
  }, std::chrono::seconds(60)));
  auto removed = await<bool>([&](auto done) { client_.remove_node(hosts_[0], two_id, true, done); });
  ASSERT_TRUE(removed.ok()) << removed.error().message;

  // The address, given again on host 3, answers from there (to a client on host 1).
  EXPECT_FALSE(run(3, "srv-moved", "10.232.0.10", {"/usr/local/bin/berth-demo-svc", "--listen", "0.0.0.0:8080"}).empty());
  EXPECT_TRUE(answers(1, "probe-2", "10.232.0.10", "10.232.0.12")) << "10.232.0.10, moved to host 3, did not answer host 1";
}

}  // namespace
}  // namespace berth::it

namespace berth::it {
namespace {

// Ten container apps (three with two instances), dependencies four deep, each finding the
// others by plain name through the system resolver: berth's name server in its sandbox on the
// overlay.
std::string cluster_fleet() {
  return R"(network:
  pool: 10.233.0.0/24
defaults:
  image: berth-demo:latest
  command: berth-demo-svc --listen ${ip}:${port.http}
  ports: {http: 8080}
  health: {type: http, path: /healthcheck, start_interval: 50ms, interval: 1s, start_period: 60s}
  stop_grace: 2s
  env: {DEMO_WARMUP_MS: "100", DEMO_RESOLVER: system}
apps:
  gateway: {depends_on: [orders, search]}
  orders: {instances: 2, depends_on: [users, payments]}
  payments: {depends_on: [ledger, fx]}
  ledger: {}
  fx: {}
  users: {instances: 2, depends_on: [profiles]}
  profiles: {}
  search: {instances: 2, depends_on: [catalog]}
  catalog: {depends_on: [media]}
  media: {}
environments:
  beta: {}
)";
}

class ClusterDaemon : public Cluster {
 protected:
  // Every berth container of the daemon on host `k` (1-based): name → {ip, running}.
  struct Seen {
    std::string ip;
    bool running = false;
  };
  std::map<std::string, Seen> containers_on(int k, const std::string& data_id) {
    std::map<std::string, Seen> out;
    const std::string filters = R"({"label":["berth.data=)" + data_id + R"("]})";
    const std::size_t i = static_cast<std::size_t>(k - 1);
    auto list = engine_call(i < seen_through_.size() ? seen_through_[i] : hosts_[i], "GET",
                            "/containers/json?all=1&filters=" + percent_encode(filters));
    if (list.status != 200 || !list.body.is_array()) return out;
    for (const auto& c : list.body) {
      Seen s;
      s.running = c.value("State", "") == "running";
      for (const auto& [net, v] : c["NetworkSettings"]["Networks"].items()) s.ip = v.value("IPAddress", "");
      out[c["Names"][0].get<std::string>().substr(1)] = s;
    }
    return out;
  }
  // app/ordinal → {host's name, ip} from berth status.
  std::map<std::string, std::pair<std::string, std::string>> placement(Daemon& d) {
    std::map<std::string, std::pair<std::string, std::string>> out;
    auto s = d.status("beta");
    for (const auto& a : s["apps"])
      for (const auto& i : a["instances"]) {
        const std::string detail = i["detail"].is_string() ? i["detail"].get<std::string>() : "";
        const auto on = detail.rfind(" on ");
        out[fmt::format("{}/{}", a["app"].get<std::string>(), i["ordinal"].get<int>())] = {
            on == std::string::npos ? "" : detail.substr(on + 4), i["ip"].is_string() ? i["ip"].get<std::string>() : ""};
      }
    return out;
  }
  bool all_ready(Daemon& d) {
    auto r = d.api().get("/v1/environments/beta");
    return r.ok() && (*r)["ready"].get<bool>();
  }
  // The Swarm, the images on host 1 only (berth copies an app's image to the hosts it places
  // instances on), and a daemon on the three hosts with `catalog` applied and its environment up.
  // `prepare` runs once the daemon is up, before the catalog is applied.
  std::unique_ptr<Daemon> berth_on_cluster(const std::string& name, const std::string& catalog,
                                           const std::function<void(Daemon&)>& prepare = {}) {
    make_swarm();
    EXPECT_EQ(std::system(fmt::format("DOCKER_HOST={} {}/scripts/make-images.sh {}/berth-demo-svc >/dev/null", hosts_[0],
                                      SOURCE_DIR, DEMO_SVC_DIR).c_str()), 0);
    EXPECT_EQ(std::system(fmt::format("DOCKER_HOST={} {}/scripts/make-images.sh --sandbox {} >/dev/null", hosts_[0],
                                      SOURCE_DIR, BERTH_PAUSE).c_str()), 0);
    std::vector<std::string> args;
    for (const auto& h : hosts_) args.insert(args.end(), {"--cluster-host", h});
    auto d = std::make_unique<Daemon>(name, args);
    data_id_ = data_id_of(d->data_dir());
    if (prepare) prepare(*d);
    auto applied = d->apply(catalog);
    EXPECT_EQ(applied.exit_code, 0) << applied.out << applied.err;
    auto up = d->cli({"up", "beta", "--timeout", "150s"});
    EXPECT_EQ(up.exit_code, 0) << up.out << up.err;
    return d;
  }
  // Whether every instance is ready and none is on host `k`.
  bool moved_off(Daemon& d, int k) {
    if (!all_ready(d)) return false;
    for (const auto& [inst, where] : placement(d))
      if (where.first == fmt::format("{}-{}", name_, k) || where.first.empty()) return false;
    return true;
  }
  // Running berth containers, counted by address over every host that answers: the addresses
  // that run on more than one.
  std::set<std::string> doubled_addresses() {
    std::map<std::string, int> ips;
    for (int k = 1; k <= 3; ++k)
      for (const auto& [name, seen] : containers_on(k, data_id_))
        if (seen.running && !seen.ip.empty()) ++ips[seen.ip];  // (a container being attached has none yet)
    std::set<std::string> out;
    for (const auto& [ip, n] : ips)
      if (n > 1) out.insert(ip);
    return out;
  }
  // Samples doubled_addresses() on a thread of its own, back to back, until stopped; what it ever saw.
  class DoubleWatch {
   public:
    explicit DoubleWatch(ClusterDaemon& t) : thread_([this, &t](std::stop_token stop) {
      while (!stop.stop_requested()) {
        auto d = t.doubled_addresses();
        {
          std::lock_guard<std::mutex> lock(mu_);
          seen_.insert(d.begin(), d.end());
          ++samples_;
        }
      }
    }) {}
    std::pair<std::set<std::string>, int> stop() {
      thread_.request_stop();
      thread_.join();
      std::lock_guard<std::mutex> lock(mu_);
      return {seen_, samples_};
    }

   private:
    std::mutex mu_;
    std::set<std::string> seen_;
    int samples_ = 0;
    std::jthread thread_;
  };
  // Every berth container over the hosts, by name: on how many hosts.
  std::map<std::string, int> copies() {
    std::map<std::string, int> out;
    for (int k = 1; k <= 3; ++k)
      for (const auto& [name, seen] : containers_on(k, data_id_)) ++out[name];
    return out;
  }
  std::string data_id_;
  // How the test reaches each host's dockerd, when not as berth does (set before any watch starts).
  std::vector<std::string> seen_through_;
};

// Six single-instance apps, no dependencies; f only on host 1 (a constraint).
std::string small_fleet() {
  return R"(network:
  pool: 10.233.0.0/24
defaults:
  image: berth-demo:latest
  command: berth-demo-svc --listen ${ip}:${port.http}
  ports: {http: 8080}
  health: {type: http, path: /healthcheck, start_interval: 50ms, interval: 1s, start_period: 60s}
  stop_grace: 2s
apps: {a: {}, b: {}, c: {}, d: {}, e: {}, f: {constraints: [[hostname, LIKE, ".*-1"]]}}
environments:
  beta: {}
)";
}

TEST_F(ClusterDaemon, AnEnvironmentSpreadOverThreeHostsKeepsEveryAddressAndNameWhenAHostDies) {
  auto d = berth_on_cluster("cl-fleet", cluster_fleet());
  ASSERT_FALSE(HasFailure());
  const std::string data_id = data_id_;

  // Spread over the three hosts; each container on the address berth status gives it.
  auto before = placement(*d);
  ASSERT_EQ(before.size(), 13u);
  std::map<std::string, int> per_host;
  for (const auto& [inst, where] : before) ++per_host[where.first];
  EXPECT_EQ(per_host.size(), 3u) << "instances on " << per_host.size() << " hosts";
  for (const auto& [host, n] : per_host) EXPECT_GE(n, 3) << host;
  for (int k = 1; k <= 3; ++k)
    for (const auto& [name, seen] : containers_on(k, data_id)) {
      const std::string prefix = fmt::format("berth-{}-beta-", data_id);
      ASSERT_EQ(name.rfind(prefix, 0), 0u) << name;
      const std::string rest = name.substr(prefix.size());
      const std::string inst = rest.substr(0, rest.rfind('-')) + "/" + rest.substr(rest.rfind('-') + 1);
      EXPECT_EQ(before[inst].first, fmt::format("{}-{}", name_, k)) << inst;
      EXPECT_EQ(before[inst].second, seen.ip) << inst;
    }
  // Names through the system resolver, and a call chain across hosts.
  auto chain = d->cli({"exec", "beta", "gateway", "--", "curl", "-s", "http://gateway:8080/"});
  ASSERT_EQ(chain.exit_code, 0) << chain.out << chain.err;
  auto c = nlohmann::json::parse(chain.out, nullptr, false);
  ASSERT_TRUE(c.is_object()) << chain.out;
  EXPECT_EQ(c["calls"][0]["app"], "orders") << chain.out;
  EXPECT_FALSE(c["calls"][0]["calls"][0].contains("error")) << chain.out;

  // Host 2's dockerd dies (not host 1: this daemon's own). Its instances come back on hosts 1
  // and 3, each at its old address and name.
  int on_two = 0;
  for (const auto& [inst, where] : before) on_two += where.first == fmt::format("{}-2", name_);
  ASSERT_GT(on_two, 0);
  ASSERT_EQ(script("kill 2"), 0);
  ASSERT_TRUE(wait_until([&] { return moved_off(*d, 2); }, std::chrono::seconds(90))) << d->cli({"status", "beta"}).out;
  auto after = placement(*d);
  for (const auto& [inst, where] : before) EXPECT_EQ(after[inst].second, where.second) << inst << " moved address";
  // Lost on the first sign: its dockerd gone, as its lease holder and berth found (not later,
  // when the Swarm's heartbeat ran out).
  int told = 0;
  for (const auto& e : d->events("beta"))
    if (e["type"] == "moving") {
      EXPECT_NE(e["message"].get<std::string>().find("its dockerd is gone"), std::string::npos) << e.dump();
      ++told;
    }
  EXPECT_EQ(told, on_two);
  // The call chain works again, every hop found by name. (Once in five runs, a moved container's
  // first lookups failed for a few seconds after it was ready — the overlay settling after the
  // node's removal — so this waits, and says how long it took.)
  const auto moved = std::chrono::steady_clock::now();
  CliResult again;
  const bool chain_works = wait_until([&] {
    again = d->cli({"exec", "beta", "gateway", "--", "curl", "-s", "http://gateway:8080/"});
    return again.exit_code == 0 && again.out.find("\"calls\"") != std::string::npos &&
           again.out.find("error") == std::string::npos;
  }, std::chrono::seconds(30));
  EXPECT_TRUE(chain_works) << again.out << again.err << "\n"
                           << d->cli({"exec", "beta", "orders", "--", "cat", "/etc/resolv.conf"}).out
                           << d->cli({"exec", "beta", "orders", "--", "getent", "hosts", "users"}).out;
  std::fprintf(stderr, "the call chain worked again %.1f s after every instance was ready\n",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - moved).count());

  // Host 2 returns: its stale containers are gone before it takes instances again, and no
  // instance has a container on two hosts.
  ASSERT_EQ(script("restart 2"), 0);
  ASSERT_TRUE(wait_until([&] { return containers_on(2, data_id).empty(); }, std::chrono::seconds(60)))
      << containers_on(2, data_id).size() << " berth containers left on host 2";
  std::map<std::string, int> copies;
  std::map<std::string, int> ips;
  for (int k = 1; k <= 3; ++k)
    for (const auto& [name, seen] : containers_on(k, data_id)) {
      ++copies[name];
      ++ips[seen.ip];
    }
  EXPECT_EQ(copies.size(), 13u);
  for (const auto& [name, n] : copies) EXPECT_EQ(n, 1) << name << " on " << n << " hosts";
  for (const auto& [ip, n] : ips) EXPECT_EQ(n, 1) << ip << " on " << n << " containers";
  ASSERT_EQ(d->cli({"down", "beta", "-q", "--timeout", "60s"}).exit_code, 0);
}

}  // namespace
}  // namespace berth::it

namespace berth::it {
namespace {

TEST_F(ClusterDaemon, AHostCutOffByTheNetworkIsFencedBeforeItsAddressesAreUsedElsewhere) {
  auto d = berth_on_cluster("cl-cut", small_fleet());
  ASSERT_FALSE(HasFailure());
  auto before = placement(*d);
  int on_three = 0;
  for (const auto& [inst, where] : before) on_three += where.first == fmt::format("{}-3", name_);
  ASSERT_GT(on_three, 0);

  // From the cut to the healed host back in the Swarm, no address ever runs on two hosts (sampled
  // continuously).
  DoubleWatch watch(*this);
  ASSERT_EQ(script("cut 3"), 0);
  ASSERT_TRUE(wait_until([&] { return moved_off(*d, 3); }, std::chrono::seconds(90))) << d->cli({"status", "beta"}).out;
  for (const auto& [inst, where] : placement(*d)) EXPECT_EQ(where.second, before[inst].second) << inst << " moved address";
  ASSERT_EQ(script("heal 3"), 0);
  ASSERT_TRUE(wait_until([&] {
    const auto now = nodes(hosts_[0]);
    return std::any_of(now.begin(), now.end(), [&](const auto& n) {
      return n.hostname == fmt::format("{}-3", name_) && n.state == "ready";
    });
  }, std::chrono::seconds(90))) << "host 3 did not join the Swarm again";
  auto [doubled, samples] = watch.stop();
  EXPECT_GT(samples, 10);
  EXPECT_TRUE(doubled.empty()) << "addresses running on two hosts at once: " << fmt::format("{}", fmt::join(doubled, ", "));
  for (const auto& [name, n] : copies()) EXPECT_EQ(n, 1) << name << " on " << n << " hosts";
}

// A host cut off from the Swarm and from berth alike (its link down, and its dockerd's socket
// gone from berth's sight; the test keeps a second name for it): berth cannot fence it, so its
// lease holder kills its instances, and berth gives their addresses again only after that.
TEST_F(ClusterDaemon, AHostCutOffFromBerthTooKillsItsOwnInstancesBeforeTheirAddressesAreUsedElsewhere) {
  auto d = berth_on_cluster("cl-lease", small_fleet());
  ASSERT_FALSE(HasFailure());
  const std::string three = fmt::format("{}-3", name_);
  auto before = placement(*d);
  const auto on_three = std::count_if(before.begin(), before.end(), [&](const auto& p) { return p.second.first == three; });
  ASSERT_GT(on_three, 0);
  // The test's own name for host 3's socket, which berth does not know.
  const std::string sock = hosts_[2].substr(std::string("unix://").size());
  ASSERT_EQ(::link(sock.c_str(), (sock + ".test").c_str()), 0) << std::strerror(errno);
  seen_through_ = {hosts_[0], hosts_[1], "unix://" + sock + ".test"};

  DoubleWatch watch(*this);
  ASSERT_EQ(script("cut 3"), 0);
  ASSERT_EQ(::unlink(sock.c_str()), 0);
  ASSERT_TRUE(wait_until([&] { return moved_off(*d, 3); }, std::chrono::seconds(90))) << d->cli({"status", "beta"}).out;
  for (const auto& [inst, where] : placement(*d)) EXPECT_EQ(where.second, before[inst].second) << inst << " moved address";
  // Still cut off, its instances are dead: killed by its holder, not by berth.
  for (const auto& [name, seen] : containers_on(3, data_id_)) EXPECT_FALSE(seen.running) << name << " runs on the cut-off host";
  // Back: fenced, and in the Swarm again.
  ASSERT_EQ(::link((sock + ".test").c_str(), sock.c_str()), 0) << std::strerror(errno);
  ASSERT_EQ(script("heal 3"), 0);
  ASSERT_TRUE(wait_until([&] {
    const auto now = nodes(hosts_[0]);
    return std::any_of(now.begin(), now.end(), [&](const auto& n) { return n.hostname == three && n.state == "ready"; });
  }, std::chrono::seconds(90))) << "host 3 did not join the Swarm again";
  auto [doubled, samples] = watch.stop();
  EXPECT_GT(samples, 10);
  EXPECT_TRUE(doubled.empty()) << "addresses running on two hosts at once: " << fmt::format("{}", fmt::join(doubled, ", "));
  for (const auto& [name, n] : copies()) EXPECT_EQ(n, 1) << name << " on " << n << " hosts";
  // The loss was settled by the lease, as the daemon says.
  std::ifstream log(d->data_dir() + "/daemon.log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_THAT(text, HasSubstr(fmt::format("host {} settled", three)));
  EXPECT_THAT(text, HasSubstr("its lease was not renewed for"));
  ::unlink((sock + ".test").c_str());
}

TEST_F(ClusterDaemon, ADaemonKilledDuringAFailoverConvergesWithOneContainerPerInstance) {
  auto d = berth_on_cluster("cl-crash", small_fleet());
  ASSERT_FALSE(HasFailure());
  auto before = placement(*d);
  ASSERT_EQ(script("kill 2"), 0);
  // The moment berth starts moving host 2's instances, the daemon is killed.
  ASSERT_TRUE(wait_until([&] { return read_file(d->data_dir() + "/daemon.log").find(" lost: ") != std::string::npos; },
                         std::chrono::seconds(60)));
  d->kill9();
  d->start();
  ASSERT_TRUE(wait_until([&] { return moved_off(*d, 2); }, std::chrono::seconds(120))) << d->cli({"status", "beta"}).out;
  for (const auto& [inst, where] : placement(*d)) EXPECT_EQ(where.second, before[inst].second) << inst << " moved address";
  ASSERT_EQ(script("restart 2"), 0);
  ASSERT_TRUE(wait_until([&] { return containers_on(2, data_id_).empty(); }, std::chrono::seconds(60)))
      << containers_on(2, data_id_).size() << " berth containers left on host 2";
  auto all = copies();
  EXPECT_EQ(all.size(), 6u);
  for (const auto& [name, n] : all) EXPECT_EQ(n, 1) << name << " on " << n << " hosts";
  EXPECT_TRUE(doubled_addresses().empty());
}

}  // namespace
}  // namespace berth::it

namespace berth::it {
namespace {

TEST_F(ClusterDaemon, ADrainMovesAHostsInstancesOneAtATimeEachReadyBeforeTheNext) {
  auto d = berth_on_cluster("cl-drain", small_fleet());
  ASSERT_FALSE(HasFailure());
  const std::string two = fmt::format("{}-2", name_);
  auto ls = d->cli({"cluster", "ls", "-o", "json"});
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  auto hosts = nlohmann::json::parse(ls.out, nullptr, false);
  ASSERT_TRUE(hosts.is_object()) << ls.out;
  ASSERT_EQ(hosts["hosts"].size(), 3u) << ls.out;
  std::size_t on_two = 0, placed = 0;
  for (const auto& h : hosts["hosts"]) {
    EXPECT_EQ(h["state"], "up") << h.dump();
    EXPECT_EQ(h["swarm"]["state"], "ready") << h.dump();
    EXPECT_GT(h["nano_cpus"].get<std::int64_t>(), 0) << h.dump();
    placed += h["instances"].size();
    if (h["host"] == two) on_two = h["instances"].size();
  }
  EXPECT_EQ(placed, 6u) << ls.out;
  ASSERT_GE(on_two, 2u) << ls.out;
  // The table a person reads.
  auto table = d->cli({"cluster", "ls"});
  EXPECT_NE(table.out.find("AVAILABILITY"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find(two), std::string::npos) << table.out;

  auto before = placement(*d);
  EXPECT_EQ(before["f/0"].first, fmt::format("{}-1", name_)) << "f's constraint";
  auto drained = d->cli({"cluster", "drain", two});
  ASSERT_EQ(drained.exit_code, 0) << drained.out << drained.err;
  ASSERT_TRUE(wait_until([&] { return moved_off(*d, 2); }, std::chrono::seconds(90))) << d->cli({"status", "beta"}).out;
  for (const auto& [inst, where] : placement(*d)) EXPECT_EQ(where.second, before[inst].second) << inst << " moved address";

  // One at a time: each move starts after the one before it was ready again.
  std::vector<std::pair<std::int64_t, std::string>> moves, readies;
  for (const auto& e : d->events("beta")) {
    if (e["app"].is_null()) continue;
    const std::string who = fmt::format("{}#{}", e["app"].get<std::string>(), e["ordinal"].is_null() ? 0 : e["ordinal"].get<int>());
    if (e["type"] == "moving") moves.emplace_back(e["id"].get<std::int64_t>(), who);
    if (e["type"] == "ready") readies.emplace_back(e["id"].get<std::int64_t>(), who);
  }
  ASSERT_EQ(moves.size(), on_two);
  for (std::size_t k = 1; k < moves.size(); ++k) {
    const auto& [prev_at, prev] = moves[k - 1];
    const bool ready_between = std::any_of(readies.begin(), readies.end(), [&](const auto& r) {
      return r.second == prev && r.first > prev_at && r.first < moves[k].first;
    });
    EXPECT_TRUE(ready_between) << moves[k].second << " moved before " << prev << " was ready again";
  }
  auto after = nlohmann::json::parse(d->cli({"cluster", "ls", "-o", "json"}).out, nullptr, false);
  for (const auto& h : after["hosts"])
    if (h["host"] == two) {
      EXPECT_EQ(h["swarm"]["availability"], "drain");
      EXPECT_TRUE(h["instances"].empty()) << h.dump();
    }
  EXPECT_EQ(d->cli({"cluster", "undrain", two}).exit_code, 0);
  EXPECT_NE(d->cli({"cluster", "drain", "no-such-host"}).err.find("no host 'no-such-host'"), std::string::npos);
}

// berth makes the Swarm itself: the daemon starts on one host in no Swarm, two more are added
// with `berth cluster add`, and one leaves with `berth cluster rm` (its instances first, at their
// addresses); a restarted daemon keeps the host it was given by the API, not the one that left.
TEST_F(ClusterDaemon, HostsJoinWithClusterAddAndLeaveWithClusterRmOnceTheirInstancesMoved) {
  EXPECT_EQ(std::system(fmt::format("DOCKER_HOST={} {}/scripts/make-images.sh {}/berth-demo-svc >/dev/null", hosts_[0],
                                    SOURCE_DIR, DEMO_SVC_DIR).c_str()), 0);
  EXPECT_EQ(std::system(fmt::format("DOCKER_HOST={} {}/scripts/make-images.sh --sandbox {} >/dev/null", hosts_[0],
                                    SOURCE_DIR, BERTH_PAUSE).c_str()), 0);
  auto d = std::make_unique<Daemon>("cl-members", std::vector<std::string>{"--cluster-host", hosts_[0],
                                                                           "--cluster-advertise", addr(1)});
  data_id_ = data_id_of(d->data_dir());
  auto ls = [&] {
    auto r = d->cli({"cluster", "ls", "-o", "json"});
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    return j.is_object() ? j["hosts"] : nlohmann::json::array();
  };
  auto host = [&](int k) -> nlohmann::json {
    for (const auto& h : ls())
      if (h["host"] == fmt::format("{}-{}", name_, k)) return h;
    return nullptr;
  };
  // The first host was in no Swarm: berth made one there, with itself the manager.
  ASSERT_TRUE(wait_until([&] { auto h = host(1); return !h.is_null() && h["state"] == "up"; }, std::chrono::seconds(60)))
      << ls().dump();
  EXPECT_EQ(host(1)["swarm"]["role"], "manager");

  auto added = d->cli({"cluster", "add", hosts_[1], "--advertise", addr(2), "--label", "rack=r2"});
  ASSERT_EQ(added.exit_code, 0) << added.out << added.err;
  EXPECT_THAT(added.out, HasSubstr(fmt::format("{}-2", name_)));
  added = d->cli({"cluster", "add", hosts_[2], "--advertise", addr(3)});
  ASSERT_EQ(added.exit_code, 0) << added.out << added.err;
  ASSERT_EQ(nodes(hosts_[0]).size(), 3u);
  EXPECT_EQ(host(2)["labels"]["rack"], "r2") << host(2).dump();
  // Refused, and said why.
  EXPECT_THAT(d->cli({"cluster", "add", hosts_[1]}).err, HasSubstr("is a host of the cluster already"));
  EXPECT_THAT(d->cli({"cluster", "add", "unix:///run/berth-no-such-host/docker.sock"}).err, HasSubstr("does not answer"));
  EXPECT_THAT(d->cli({"cluster", "rm", fmt::format("{}-1", name_)}).err, HasSubstr("cannot leave the cluster"));
  EXPECT_THAT(d->cli({"cluster", "rm", "no-such-host"}).err, HasSubstr("no host 'no-such-host'"));
  auto bad = d->api().post("/v1/cluster/hosts", {{"endpoint", 7}});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error().message, HasSubstr("field 'endpoint'"));

  ASSERT_EQ(d->apply(small_fleet()).exit_code, 0);
  auto up = d->cli({"up", "beta", "--timeout", "150s"});
  ASSERT_EQ(up.exit_code, 0) << up.out << up.err;
  auto before = placement(*d);
  const std::string three = fmt::format("{}-3", name_);
  ASSERT_GE(std::count_if(before.begin(), before.end(), [&](const auto& p) { return p.second.first == three; }), 1)
      << d->cli({"status", "beta"}).out;

  auto removed = d->cli({"cluster", "rm", three, "--timeout", "120s"});
  ASSERT_EQ(removed.exit_code, 0) << removed.out << removed.err;
  EXPECT_THAT(removed.out, HasSubstr("has left the cluster"));
  EXPECT_TRUE(host(3).is_null()) << ls().dump();
  ASSERT_TRUE(wait_until([&] { return moved_off(*d, 3); }, std::chrono::seconds(90))) << d->cli({"status", "beta"}).out;
  for (const auto& [inst, where] : placement(*d)) EXPECT_EQ(where.second, before[inst].second) << inst << " moved address";
  // Out of the Swarm, and nothing of berth's left on it (its anchor included).
  for (const auto& n : nodes(hosts_[0])) EXPECT_NE(n.hostname, three);
  auto info = await<cluster::LocalInfo>([&](auto done) { client_.info(hosts_[2], done); });
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_EQ(info->swarm_state, "inactive");
  auto left = engine_call(hosts_[2], "GET", "/containers/json?all=1");
  EXPECT_TRUE(left.body.is_array() && left.body.empty()) << left.text;

  // A restarted daemon: host 2 (added through the API) is still a host; host 3 is not.
  d->kill9();
  d->start();
  ASSERT_TRUE(wait_until([&] { auto h = host(2); return !h.is_null() && h["state"] == "up"; }, std::chrono::seconds(60)))
      << ls().dump();
  EXPECT_EQ(ls().size(), 2u) << ls().dump();
  ASSERT_TRUE(wait_until([&] { return all_ready(*d); }, std::chrono::seconds(60))) << d->cli({"status", "beta"}).out;
  // And the host that left can come back.
  added = d->cli({"cluster", "add", hosts_[2], "--advertise", addr(3)});
  EXPECT_EQ(added.exit_code, 0) << added.out << added.err;
}

// An app built from its repository as an image: built once (on the first host, where the
// daemon builds), and every host an instance is placed on gets that image by its id.
TEST_F(ClusterDaemon, AnImageBuiltFromSourceIsBuiltOnceAndReachesEveryHostItRunsOn) {
  auto d = berth_on_cluster("cl-build", R"(network:
  pool: 10.233.0.0/24
defaults:
  image: berth-demo:latest
  tag: main
  ports: {http: 8080}
  health: {type: http, path: /healthcheck, start_interval: 50ms, start_period: 60s}
  env: {DEMO_WARMUP_MS: "0"}
  stop_grace: 2s
apps:
  orders:
    instances: 3
    constraints: [[hostname, UNIQUE]]
    source:
      repo: repos/orders
      recipes:
        default: {command: "./build.sh ${build_type}", image: Dockerfile}
    command: orders --listen ${ip}:${port.http}
environments:
  beta: {}
)");
  ASSERT_FALSE(HasFailure());
  std::set<std::string> on;
  for (const auto& [inst, where] : placement(*d)) on.insert(where.first);
  EXPECT_EQ(on.size(), 3u) << d->cli({"status", "beta"}).out;
  auto status = d->status("beta");
  nlohmann::json build;
  for (const auto& a : status["apps"])
    if (a["app"] == "orders") build = a["build"];
  ASSERT_EQ(build["state"], "built") << status.dump();
  const std::string image = "berth-build:" + build["id"].get<std::string>();
  std::set<std::string> ids;
  for (const auto& h : hosts_) {
    auto inspect = engine_call(h, "GET", "/images/" + image + "/json");
    ASSERT_EQ(inspect.status, 200u) << h << ": " << inspect.text;
    ids.insert(inspect.body["Id"].get<std::string>());
  }
  EXPECT_EQ(ids.size(), 1u) << "one image, the same id on every host";
  auto log = d->cli({"build", "logs", "orders", "-e", "beta"});
  const auto first = log.out.find("Successfully tagged berth-build:");
  ASSERT_NE(first, std::string::npos) << log.out;
  EXPECT_EQ(log.out.find("Successfully tagged berth-build:", first + 1), std::string::npos) << "built once";
}

// A database of the environment runs in a container (berth-mariadb, on a volume filled from its
// copy of the standard), at its address on the overlay. Its host dies: it is made again on
// another host from the same copy, at the same address, and an event says that what was
// written to it is gone.
TEST_F(ClusterDaemon, ADatabaseWhoseHostDiesIsMadeAgainElsewhereFromItsCopyAndSaysWhatWasLost) {
  auto d = berth_on_cluster("cl-db", R"(network:
  pool: 10.233.0.0/24
databases:
  shopdb: {standard: inv, options: {innodb_buffer_pool_size: 16M}}
apps:
  orders:
    image: berth-demo:latest
    command: berth-demo-svc --listen ${ip}:${port.http}
    ports: {http: 8080}
    health: {type: http, path: /healthcheck, start_interval: 50ms, interval: 1s, start_period: 60s}
    stop_grace: 2s
    depends_on: [shopdb]
environments:
  beta:
    apps:
      shopdb: {constraints: [[hostname, LIKE, ".*-[23]"]]}
)", [&](Daemon& daemon) {
    EXPECT_EQ(std::system(fmt::format("DOCKER_HOST={} {}/scripts/make-images.sh --mariadb >/dev/null", hosts_[0],
                                      SOURCE_DIR).c_str()), 0);
    const std::string dump = daemon.data_dir() + "/inv.sql";
    std::ofstream(dump) << "CREATE DATABASE inventory; USE inventory;\n"
                           "CREATE TABLE stock (sku VARCHAR(20) PRIMARY KEY, n INT) ENGINE=InnoDB;\n"
                           "INSERT INTO stock SELECT CONCAT('s', seq), seq FROM seq_1_to_1234;\n";
    auto imp = daemon.cli({"db", "import", "inv", "--from-dump", dump, "-q"});
    EXPECT_EQ(imp.exit_code, 0) << imp.out << imp.err;
  });
  ASSERT_FALSE(HasFailure());
  auto before = placement(*d);
  const auto [db_host, db_ip] = before["shopdb/0"];
  ASSERT_TRUE(db_host == fmt::format("{}-2", name_) || db_host == fmt::format("{}-3", name_)) << db_host;
  const int k = db_host.back() - '0';
  auto sql = [&](const std::string& q) {
    return d->cli({"exec", "beta", "shopdb", "--", "mariadb", "--no-defaults", "--protocol=TCP", "-h", db_ip, "-u", "berth",
                   "-pberth", "-N", "-e", q});
  };
  // Its own copy of the standard, written to in the environment.
  auto n = sql("SELECT COUNT(*) FROM inventory.stock");
  ASSERT_EQ(n.exit_code, 0) << n.out << n.err;
  EXPECT_EQ(n.out, "1234\n");
  ASSERT_EQ(sql("INSERT INTO inventory.stock VALUES ('written-in-beta', 1)").exit_code, 0);
  // A restart on the same host keeps what was written (the volume stays with its host).
  ASSERT_EQ(d->cli({"restart", "beta", "shopdb"}).exit_code, 0);
  ASSERT_TRUE(wait_until([&] { return all_ready(*d); }, std::chrono::seconds(90))) << d->cli({"status", "beta"}).out;
  EXPECT_EQ(placement(*d)["shopdb/0"].first, db_host);
  EXPECT_EQ(sql("SELECT COUNT(*) FROM inventory.stock").out, "1235\n");

  // Its host dies: the server comes back on the other host, at its address, on a fresh fill of
  // the copy, and the events say what was lost.
  ASSERT_EQ(script(fmt::format("kill {}", k)), 0);
  ASSERT_TRUE(wait_until([&] { return moved_off(*d, k); }, std::chrono::seconds(120))) << d->cli({"status", "beta"}).out;
  const auto after = placement(*d)["shopdb/0"];
  EXPECT_NE(after.first, db_host);
  EXPECT_EQ(after.second, db_ip);
  auto again = sql("SELECT COUNT(*) FROM inventory.stock");
  ASSERT_EQ(again.exit_code, 0) << again.out << again.err;
  EXPECT_EQ(again.out, "1234\n") << "the copy as the standard made it, without what was written on the lost host";
  nlohmann::json lost;
  for (const auto& e : d->events("beta"))
    if (e["type"] == "db-copy-lost") lost = e;
  ASSERT_TRUE(lost.is_object()) << d->events("beta").dump(1);
  EXPECT_EQ(lost["app"], "shopdb");
  EXPECT_THAT(lost["message"].get<std::string>(), HasSubstr("inv@1"));
  EXPECT_THAT(lost["message"].get<std::string>(), HasSubstr(after.first));

  // The lost host returns: before it takes instances again its database volume is gone, so a
  // server placed there later never serves what it held before the loss.
  auto seeded_volumes = [&](int host) {
    const std::string filters = R"({"label":["berth.data=)" + data_id_ + R"(","berth.seeded=1"]})";
    auto list = engine_call(hosts_[static_cast<std::size_t>(host - 1)], "GET", "/volumes?filters=" + percent_encode(filters));
    return list.status == 200 && list.body["Volumes"].is_array() ? static_cast<int>(list.body["Volumes"].size()) : -1;
  };
  ASSERT_EQ(script(fmt::format("restart {}", k)), 0);
  ASSERT_TRUE(wait_until([&] {
    const auto now = nodes(hosts_[0]);
    return std::any_of(now.begin(), now.end(), [&](const auto& node) { return node.hostname == db_host && node.state == "ready"; });
  }, std::chrono::seconds(90))) << db_host << " did not join the Swarm again";
  EXPECT_EQ(seeded_volumes(k), 0) << "the returned host still has a database volume";
  EXPECT_EQ(seeded_volumes(after.first.back() - '0'), 1) << "the serving host has its one volume";
  ASSERT_EQ(d->cli({"down", "beta", "-q", "--timeout", "60s"}).exit_code, 0);
}

}  // namespace
}  // namespace berth::it
