// Containers end to end: the real daemon with its Docker runtime against a real dockerd (in the
// network namespace scripts/docker-netns.sh made; these tests skip where there is none), real
// containers of the berth-demo image, real health checks to their addresses, names resolved
// by the containers' own resolvers.
#include <signal.h>

#include <map>
#include <set>

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "docker_env.h"
#include "harness.h"

using namespace berth::it;
using nlohmann::json;
using testing::HasSubstr;

namespace {

// Six container apps, dependencies three deep, two with two instances, one with a named
// volume; every app finds its dependencies with plain getaddrinfo (DEMO_RESOLVER=system).
std::string fleet(const std::string& prefix) {
  return fmt::format(R"(network:
  pool: {0}.0.0/16
  exclude: [{0}.0.2-{0}.0.9]
defaults:
  image: berth-demo:latest
  command: berth-demo-svc --listen ${{ip}}:${{port.http}}
  ports: {{http: 8080}}
  health: {{type: http, path: /healthcheck, start_interval: 50ms, interval: 2s, start_period: 30s}}
  stop_grace: 5s
  env: {{DEMO_WARMUP_MS: "300", DEMO_RESOLVER: system}}
apps:
  gateway: {{depends_on: [orders, search]}}
  orders: {{instances: 2, depends_on: [users, payments]}}
  payments: {{depends_on: [ledger]}}
  ledger: {{volumes: ["ledger-data:/data"]}}
  users: {{instances: 2}}
  search: {{}}
environments:
  baseline: {{}}
  beta:
    base: baseline
    deploy: changed
    apps:
      orders: {{env: {{DEMO_VERSION: beta}}}}
)",
                     prefix);
}

std::int64_t ms_of(const std::string& rfc3339) {
  int h = std::stoi(rfc3339.substr(11, 2)), m = std::stoi(rfc3339.substr(14, 2)), s = std::stoi(rfc3339.substr(17, 2));
  return ((h * 60 + m) * 60 + s) * 1000 + std::stoi(rfc3339.substr(20, 3));
}

class Docker : public testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    env_ = DockerEnv::from_environment(&why);
    if (!env_) GTEST_SKIP() << why;
    ASSERT_TRUE(env_->enter());
  }
  void TearDown() override {
    if (env_ && !data_id_.empty()) env_->remove_all(data_id_);
  }
  std::unique_ptr<Daemon> daemon(const std::string& name, const std::string& subnet) {
    env_->clear_subnet(subnet);
    auto d = std::make_unique<Daemon>(name, std::vector<std::string>{"--docker-host", env_->host()});
    data_id_ = data_id_of(d->data_dir());
    return d;
  }
  bool ready(Daemon& d, const std::string& env) {
    auto r = d.api().get("/v1/environments/" + env);
    return r.ok() && (*r)["ready"].get<bool>();
  }
  // Container name → its address on berth's network, as dockerd reports it.
  std::map<std::string, std::string> container_ips() {
    std::map<std::string, std::string> out;
    for (const auto& c : env_->containers(data_id_))
      for (const auto& [net, v] : c["NetworkSettings"]["Networks"].items()) out[c["Names"][0].get<std::string>().substr(1)] = v["IPAddress"];
    return out;
  }
  CliResult exec(Daemon& d, const std::string& env, const std::string& app, const std::vector<std::string>& argv, int i = 0) {
    std::vector<std::string> args = {"exec", env, app, "-i", std::to_string(i), "--"};
    args.insert(args.end(), argv.begin(), argv.end());
    return d.cli(args);
  }

  std::optional<DockerEnv> env_;
  std::string data_id_;
};

TEST_F(Docker, AFleetComesUpInOrderEachContainerOnItsBerthAddress) {
  auto d = daemon("dk-fleet", "10.81.0.0/16");
  ASSERT_EQ(d->apply(fleet("10.81")).exit_code, 0);
  auto up = d->cli({"up", "baseline", "--timeout", "90s"});
  ASSERT_EQ(up.exit_code, 0) << up.out << up.err;
  auto s = d->status("baseline");

  // Every container is on the address berth gave it; none on the gateway or an excluded one.
  auto ips = container_ips();
  ASSERT_EQ(ips.size(), 8u);
  std::set<std::string> seen;
  for (const auto& a : s["apps"])
    for (const auto& i : a["instances"]) {
      std::string name = fmt::format("berth-{}-baseline-{}-{}", data_id_, a["app"].get<std::string>(), i["ordinal"].get<int>());
      ASSERT_TRUE(ips.count(name)) << name;
      EXPECT_EQ(ips[name], i["ip"]) << name << ": docker inspect and berth status disagree";
      EXPECT_EQ(i["runtime"], "docker");
      EXPECT_TRUE(seen.insert(i["ip"].get<std::string>()).second);
      for (int last = 0; last <= 9; ++last) EXPECT_NE(i["ip"], "10.81.0." + std::to_string(last));
    }

  // Health-gated order, from the event log.
  std::map<std::string, std::int64_t> first_start, first_ready;
  for (const auto& e : d->events("baseline")) {
    if (e["app"].is_null()) continue;
    std::string app = e["app"];
    if (e["type"] == "starting" && !first_start.count(app)) first_start[app] = ms_of(e["time"]);
    if (e["type"] == "ready" && !first_ready.count(app)) first_ready[app] = ms_of(e["time"]);
  }
  std::map<std::string, std::vector<std::string>> hard = {
      {"gateway", {"orders", "search"}}, {"orders", {"users", "payments"}}, {"payments", {"ledger"}}};
  for (const auto& [app, deps] : hard)
    for (const auto& dep : deps) EXPECT_GE(first_start[app], first_ready[dep]) << app << " started before " << dep << " was ready";

  // Containers of the first wave (started as soon as the network was there) have the resolver too.
  auto first_wave = exec(*d, "baseline", "search", {"getent", "hosts", "users"});
  EXPECT_EQ(first_wave.exit_code, 0) << first_wave.out << first_wave.err;
  // The call chain, every hop resolved by name with getaddrinfo inside the containers.
  auto chain = exec(*d, "baseline", "gateway", {"curl", "-s", "http://gateway:8080/"});
  ASSERT_EQ(chain.exit_code, 0) << chain.err;
  json c = json::parse(chain.out);
  EXPECT_EQ(c["calls"][0]["app"], "orders") << chain.out;
  EXPECT_EQ(c["calls"][0]["calls"][0]["app"], "users") << chain.out;
  EXPECT_FALSE(c["calls"][0]["calls"][0].contains("error")) << chain.out;

  // docker kill → berth starts it again, on the same address.
  const std::string victim = fmt::format("berth-{}-baseline-users-1", data_id_);
  const std::string old_ip = ips[victim];
  auto before = env_->call("GET", "/containers/" + victim + "/json");
  ASSERT_TRUE(before.ok());
  ASSERT_EQ(env_->call("POST", "/containers/" + victim + "/kill")->status, 204u);
  ASSERT_TRUE(wait_until([&] {
    auto now = d->status("baseline");
    const auto& i = app_of(now, "users")["instances"][1];
    return i["restarts"].get<int>() >= 1 && i["state"] == "ready";
  }, std::chrono::seconds(30)));
  auto after = env_->call("GET", "/containers/" + victim + "/json");
  EXPECT_NE(after->json()["Id"], before->json()["Id"]) << "a new container";
  EXPECT_EQ(container_ips()[victim], old_ip);

  // Named volumes outlive down; containers do not.
  ASSERT_EQ(exec(*d, "baseline", "ledger", {"sh", "-c", "echo kept > /data/f"}).exit_code, 0);
  ASSERT_EQ(d->cli({"down", "baseline", "-q", "--timeout", "60s"}).exit_code, 0);
  EXPECT_TRUE(env_->containers(data_id_).empty());
  auto volume = env_->call("GET", fmt::format("/volumes/berth-{}-baseline_ledger-data", data_id_));
  EXPECT_EQ(volume->status, 200u) << volume->body;
  ASSERT_EQ(d->cli({"up", "baseline", "-q", "--timeout", "90s"}).exit_code, 0);
  auto cat = exec(*d, "baseline", "ledger", {"cat", "/data/f"});
  EXPECT_EQ(cat.out, "kept\n");
}

TEST_F(Docker, AThinEnvironmentsContainersReachTheBaseByShortName) {
  auto d = daemon("dk-thin", "10.82.0.0/16");
  ASSERT_EQ(d->apply(fleet("10.82")).exit_code, 0);
  ASSERT_EQ(d->cli({"up", "baseline", "-q", "--timeout", "90s"}).exit_code, 0);
  ASSERT_EQ(d->cli({"up", "beta", "-q", "--timeout", "90s"}).exit_code, 0);
  auto s = d->status("beta");
  ASSERT_EQ(app_of(s, "orders")["runs_in"], "beta");
  ASSERT_EQ(app_of(s, "users")["runs_in"], "baseline");

  // getent inside beta's orders: `users` is baseline's (beta does not run it), `orders` its own.
  auto users = exec(*d, "beta", "orders", {"getent", "hosts", "users"});
  ASSERT_EQ(users.exit_code, 0) << users.err;
  auto base = d->status("baseline");  // app_of refers into it: it must outlive the loops
  for (const auto& i : app_of(base, "users")["instances"]) EXPECT_THAT(users.out, HasSubstr(i["ip"].get<std::string>()));
  auto orders = exec(*d, "beta", "orders", {"getent", "hosts", "orders"});
  for (const auto& i : app_of(s, "orders")["instances"]) EXPECT_THAT(orders.out, HasSubstr(i["ip"].get<std::string>()));
  for (const auto& i : app_of(base, "orders")["instances"])
    EXPECT_THAT(orders.out, testing::Not(HasSubstr(i["ip"].get<std::string>() + " "))) << "baseline's orders leaked into beta";

  // A request through beta's gateway: gateway and orders answer from beta, users from baseline.
  auto chain = exec(*d, "beta", "gateway", {"curl", "-s", "http://gateway:8080/"});
  json c = json::parse(chain.out);
  EXPECT_EQ(c["env"], "beta");
  EXPECT_EQ(c["calls"][0]["env"], "beta");
  EXPECT_EQ(c["calls"][0]["version"], "beta");
  EXPECT_EQ(c["calls"][0]["calls"][0]["app"], "users");
  EXPECT_EQ(c["calls"][0]["calls"][0]["env"], "baseline") << chain.out;
}

TEST_F(Docker, ADaemonKilledMidUpAdoptsItsContainersAndMakesNoSecondOnes) {
  auto d = daemon("dk-sigkill", "10.83.0.0/16");
  ASSERT_EQ(d->apply(fleet("10.83")).exit_code, 0);
  ASSERT_EQ(d->cli({"up", "baseline", "--no-wait"}).exit_code, 0);
  // Killed while some containers run and others are still being created or waiting.
  ASSERT_TRUE(wait_until([&] {
    int running = 0;
    for (const auto& c : env_->containers(data_id_)) running += c["State"] == "running";
    return running >= 3;
  }, std::chrono::seconds(30)));
  d->kill9();
  std::map<std::string, std::string> before;
  for (const auto& [name, ip] : container_ips())
    if (!ip.empty()) before[name] = ip;  // running: connected to berth's network
  d->start();
  ASSERT_TRUE(wait_until([&] { return ready(*d, "baseline"); }, std::chrono::seconds(90)));
  auto list = env_->containers(data_id_);
  EXPECT_EQ(list.size(), 8u) << list.dump();
  std::set<std::string> names, addresses;
  for (const auto& c : list) {
    EXPECT_EQ(c["State"], "running");
    EXPECT_TRUE(names.insert(c["Names"][0].get<std::string>()).second);
    for (const auto& [net, v] : c["NetworkSettings"]["Networks"].items())
      EXPECT_TRUE(addresses.insert(v["IPAddress"].get<std::string>()).second) << "an address held twice";
  }
  auto after = container_ips();
  for (const auto& [name, ip] : before) EXPECT_EQ(after[name], ip) << name << " moved";
  bool adopted = false;
  for (const auto& e : d->events("baseline")) adopted = adopted || e["type"] == "adopted";
  EXPECT_TRUE(adopted);
}

// Containers and processes in one environment, calling each other by name both ways. Process
// instances get their own resolver (a mount namespace with berth's /etc/resolv.conf), as root.
TEST_F(Docker, AMixedEnvironmentOfContainersAndProcesses) {
  auto d = daemon("dk-mixed", "10.84.0.0/16");
  std::string catalog = fmt::format(R"(network: {{pool: 10.84.0.0/16}}
defaults:
  command: berth-demo-svc --listen ${{ip}}:${{port.http}}
  ports: {{http: 8080}}
  health: {{type: http, path: /healthcheck, start_interval: 50ms}}
  env: {{DEMO_WARMUP_MS: "200", DEMO_RESOLVER: system}}
apps:
  front: {{image: "berth-demo:latest", depends_on: [middle]}}
  middle: {{depends_on: [back]}}
  back: {{image: "berth-demo:latest"}}
environments:
  dev: {{}}
)");
  ASSERT_EQ(d->apply(catalog).exit_code, 0);
  auto up = d->cli({"up", "dev", "--timeout", "90s"});
  ASSERT_EQ(up.exit_code, 0) << up.out << up.err;
  auto s = d->status("dev");
  EXPECT_EQ(app_of(s, "middle")["instances"][0]["runtime"], "process");
  EXPECT_EQ(app_of(s, "front")["instances"][0]["runtime"], "docker");
  // container → process → container, every hop by short name.
  auto chain = exec(*d, "dev", "front", {"curl", "-s", "http://front:8080/"});
  json c = json::parse(chain.out);
  EXPECT_EQ(c["calls"][0]["app"], "middle") << chain.out;
  EXPECT_FALSE(c["calls"][0].contains("error")) << chain.out;
  EXPECT_EQ(c["calls"][0]["calls"][0]["app"], "back") << chain.out;
  EXPECT_FALSE(c["calls"][0]["calls"][0].contains("error")) << chain.out;
  // Inside the process instance, the system resolver knows the environment's names.
  auto getent = exec(*d, "dev", "middle", {"getent", "hosts", "back"});
  EXPECT_EQ(getent.exit_code, 0) << getent.err;
  EXPECT_THAT(getent.out, HasSubstr(app_of(s, "back")["instances"][0]["ip"].get<std::string>()));
}

TEST_F(Docker, AMissingImageAndAFailingEntrypointSayWhyAndTheRestRuns) {
  auto d = daemon("dk-bad", "10.85.0.0/16");
  std::string catalog = fmt::format(R"(network: {{pool: 10.85.0.0/16}}
defaults:
  image: berth-demo:latest
  command: berth-demo-svc --listen ${{ip}}:${{port.http}}
  ports: {{http: 8080}}
  health: {{type: http, path: /healthcheck, start_interval: 50ms}}
  env: {{DEMO_WARMUP_MS: "0"}}
apps:
  good: {{}}
  missing: {{image: "berth-nowhere:1.0"}}
  broken: {{entrypoint: [/no/such/program]}}
environments:
  dev: {{}}
)");
  ASSERT_EQ(d->apply(catalog).exit_code, 0);
  ASSERT_EQ(d->cli({"up", "dev", "--no-wait"}).exit_code, 0);
  ASSERT_TRUE(wait_until([&] {
    auto s = d->status("dev");
    return app_of(s, "good")["state"] == "ready" && app_of(s, "missing")["state"] == "failed" &&
           app_of(s, "broken")["state"] == "failed";
  }, std::chrono::seconds(60))) << d->status("dev").dump(1);
  auto s = d->status("dev");
  EXPECT_THAT(app_of(s, "missing")["message"].get<std::string>(), HasSubstr("image 'berth-nowhere:1.0' is not on the Docker host"));
  EXPECT_THAT(app_of(s, "broken")["message"].get<std::string>(), HasSubstr("/no/such/program"));
  // Failed launches leave no container behind; the good one runs on.
  auto list = env_->containers(data_id_);
  ASSERT_TRUE(wait_until([&] { return env_->containers(data_id_).size() == 1u; }, std::chrono::seconds(30))) << list.dump();
  EXPECT_EQ(app_of(d->status("dev"), "good")["state"], "ready");
}

}  // namespace

// An app built from its repository as an image (recipe image: Dockerfile), through the Engine
// API: its containers run the build of their environment's branch, and two environments on the
// same commit and build_type share one image.
TEST_F(Docker, AnImageBuiltFromItsRepositoryPerBranch) {
  auto d = daemon("dk-build", "10.86.0.0/16");
  std::string catalog = fmt::format(R"(network: {{pool: 10.86.0.0/16}}
defaults:
  image: berth-demo:latest
  tag: main
  ports: {{http: 8080}}
  health: {{type: http, path: /healthcheck, start_interval: 50ms}}
  env: {{DEMO_WARMUP_MS: "0"}}
apps:
  orders:
    source:
      repo: repos/orders
      recipes:
        default: {{command: "./build.sh ${{build_type}}", image: Dockerfile}}
    command: orders --listen ${{ip}}:${{port.http}}
environments:
  main-1: {{}}
  main-2: {{}}
  branch:
    apps:
      orders: {{tag: feature/new-pay, build_type: debug}}
)");
  ASSERT_EQ(d->apply(catalog).exit_code, 0);
  for (const char* env : {"main-1", "main-2", "branch"}) {
    auto up = d->cli({"up", env, "--timeout", "120s"});
    ASSERT_EQ(up.exit_code, 0) << env << up.out << up.err;
  }
  auto version = [&](const std::string& env) {
    auto r = exec(*d, env, "orders", {"curl", "-s", "http://orders:8080/"});
    return json::parse(r.out, nullptr, false).value("version", std::string("?"));
  };
  EXPECT_EQ(version("main-1"), "1.4.0+release");
  EXPECT_EQ(version("branch"), "2.0-new-pay+debug");
  auto one = app_of(d->status("main-1"), "orders")["build"];
  auto two = app_of(d->status("main-2"), "orders")["build"];
  EXPECT_EQ(one["state"], "built");
  EXPECT_EQ(one["id"], two["id"]) << "one build (one image) for one commit and build_type";
  auto image = env_->call("GET", "/images/berth-build:" + one["id"].get<std::string>() + "/json");
  EXPECT_EQ(image->status, 200u);
  auto log = d->cli({"build", "logs", "orders", "-e", "branch"});
  EXPECT_THAT(log.out, HasSubstr("Successfully tagged berth-build:"));
}
