// Builds from source with real git repositories made by each test, against the real daemon.
#include <atomic>
#include <algorithm>
#include <filesystem>
#include <set>
#include <vector>
#include <fstream>
#include <thread>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/files.h"
#include "harness.h"

using namespace berth::it;
using nlohmann::json;
using testing::HasSubstr;

namespace {

void sh(const std::string& cmd) { ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd; }

// Pids of live `sleep SECONDS` processes (one of `seconds`) whose cwd is under `dir` ("" : any).
std::set<std::string> sleepers(const std::vector<std::string>& seconds, const std::string& dir = "") {
  std::set<std::string> pids;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string cmd = berth::testing_files::read_proc(e.path() / "cmdline");
    std::error_code ec;
    const std::string cwd = std::filesystem::read_symlink(e.path() / "cwd", ec).string();
    for (const auto& s : seconds)
      if (cmd.find(std::string("sleep\0", 6) + s) != std::string::npos && cwd.rfind(dir, 0) == 0)
        pids.insert(e.path().filename().string());
  }
  return pids;
}

// A repository whose build leaves out/svc: a launcher of berth-demo-svc reporting VERSION+type.
void make_repo(const std::string& dir, const std::string& version) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/build.sh") << "#!/bin/sh\nset -e\nmkdir -p out\n"
                                      "printf '#!/bin/sh\\nexec berth-demo-svc --version \"%s\" \"$@\"\\n' \"$(cat VERSION)+$1\" > out/svc\n"
                                      "chmod +x out/svc\necho built\n";
  std::ofstream(dir + "/VERSION") << version << "\n";
  sh("cd " + dir + " && chmod +x build.sh && git init -q -b main && git -c user.email=t@t -c user.name=t add -A && "
     "git -c user.email=t@t -c user.name=t commit -q -m v1");
}

void commit_version(const std::string& dir, const std::string& version) {
  std::ofstream(dir + "/VERSION") << version << "\n";
  sh("cd " + dir + " && git -c user.email=t@t -c user.name=t commit -q -am " + version);
}

std::string version_of(const std::string& ip) {
  namespace beast = boost::beast;
  try {
    boost::asio::io_context io;
    beast::tcp_stream s(io);
    s.expires_after(std::chrono::seconds(3));
    s.connect({boost::asio::ip::make_address(ip), 8080});
    beast::http::request<beast::http::empty_body> req(beast::http::verb::get, "/", 11);
    beast::http::write(s, req);
    beast::flat_buffer buf;
    beast::http::response<beast::http::string_body> res;
    beast::http::read(s, buf, res);
    return json::parse(res.body()).value("version", "");
  } catch (const std::exception& e) {
    return std::string("error: ") + e.what();
  }
}

std::string catalog(const std::string& prefix, const std::string& apps, const std::string& envs = "  dev-1: {}\n") {
  return "network: {pool: " + prefix + ".0.0/24}\n"
         "defaults:\n"
         "  tag: main\n"
         "  ports: {http: 8080}\n"
         "  health: {type: http, path: /healthcheck, start_interval: 20ms, interval: 200ms}\n"
         "  env: {DEMO_WARMUP_MS: \"100\"}\n"
         "apps:\n" + apps + "environments:\n" + envs;
}

const char* kSvc = R"(  svc:
    instances: 2
    source:
      repo: repos/svc
      recipes:
        default: {command: "./build.sh ${build_type}", artifact: out/svc}
    command: ${artifact} --listen ${ip}:${port.http}
)";

int build_count(Daemon& d) {
  auto b = d.api().get("/v1/builds");
  return b.ok() ? static_cast<int>(b->size()) : -1;
}

}  // namespace

TEST(Build, SameCommitBuildsOnceForConcurrentEnvironmentsAndIsCached) {
  Daemon d("build-cache");
  make_repo(d.data_dir() + "/repos/svc", "1.0");
  ASSERT_EQ(d.apply(catalog("127.97", kSvc, "  dev-1: {}\n  dev-2: {}\n")).exit_code, 0);
  // Both environments asked for at once: one build serves both.
  ASSERT_EQ(d.cli({"up", "dev-1", "--no-wait"}).exit_code, 0);
  ASSERT_EQ(d.cli({"up", "dev-2", "--no-wait"}).exit_code, 0);
  ASSERT_TRUE(wait_until([&] { return d.status("dev-1")["ready"] == true && d.status("dev-2")["ready"] == true; }));
  EXPECT_EQ(build_count(d), 1);
  auto s = d.status("dev-2");
  const auto& svc = app_of(s, "svc");
  EXPECT_EQ(svc["build"]["state"], "built");
  EXPECT_EQ(svc["build"]["commit"].get<std::string>().size(), 40u);
  EXPECT_EQ(version_of(svc["instances"][1]["ip"]), "1.0+release");
  // Down and up again on an unmoved branch: no rebuild.
  ASSERT_EQ(d.cli({"down", "dev-2", "-q"}).exit_code, 0);
  ASSERT_EQ(d.cli({"up", "dev-2", "-q"}).exit_code, 0);
  EXPECT_EQ(build_count(d), 1);
  auto table = d.cli({"status", "dev-1"});
  EXPECT_THAT(table.out, HasSubstr("main → " + svc["build"]["commit"].get<std::string>().substr(0, 7) + " (built in"));
  auto config = d.cli({"config", "dev-1", "svc"});
  EXPECT_THAT(config.out, HasSubstr("main → " + svc["build"]["commit"].get<std::string>().substr(0, 7)));
  EXPECT_THAT(config.out, HasSubstr("built in"));
  EXPECT_THAT(config.out, HasSubstr("source.repo"));
}

TEST(Build, RefreshRebuildsAMovedBranchAndReplacesWithoutAGap) {
  Daemon d("build-refresh");
  std::string repo = d.data_dir() + "/repos/svc";
  make_repo(repo, "1.0");
  ASSERT_EQ(d.apply(catalog("127.98", kSvc)).exit_code, 0);
  ASSERT_EQ(d.cli({"up", "dev-1", "-q"}).exit_code, 0);
  auto before = d.status("dev-1");
  std::string commit1 = app_of(before, "svc")["build"]["commit"];

  // Watch the app through the API all along: never a moment without a ready instance.
  std::atomic<bool> stop{false};
  std::atomic<int> min_ready{99}, samples{0};
  std::thread watcher([&] {
    berth::client::Client c(d.address(), d.admin_token());
    while (!stop) {
      auto s = c.get("/v1/environments/dev-1");
      if (s.ok()) {
        int ready = 0;
        for (const auto& a : (*s)["apps"])
          if (a["app"] == "svc")
            for (const auto& i : a["instances"]) ready += i["state"] == "ready";
        min_ready = std::min(min_ready.load(), ready);
        ++samples;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // sampling rate of the watcher
    }
  });
  commit_version(repo, "2.0");
  auto r = d.cli({"refresh", "dev-1", "--timeout", "60s"});
  stop = true;
  watcher.join();
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto after = d.status("dev-1");
  const auto& svc = app_of(after, "svc");
  EXPECT_NE(svc["build"]["commit"], commit1);
  for (const auto& i : svc["instances"]) EXPECT_EQ(version_of(i["ip"]), "2.0+release");
  EXPECT_EQ(build_count(d), 2);
  EXPECT_GT(samples.load(), 20);
  EXPECT_GE(min_ready.load(), 1) << "a moment without a ready instance";
  // Both replaced, one after the other, same addresses.
  for (std::size_t o = 0; o < 2; ++o) {
    EXPECT_NE(svc["instances"][o]["pid"], app_of(before, "svc")["instances"][o]["pid"]);
    EXPECT_EQ(svc["instances"][o]["ip"], app_of(before, "svc")["instances"][o]["ip"]);
  }
  // A refresh with nothing moved changes nothing.
  ASSERT_EQ(d.cli({"refresh", "dev-1", "-q"}).exit_code, 0);
  EXPECT_EQ(build_count(d), 2);
  EXPECT_EQ(app_of(d.status("dev-1"), "svc")["instances"][0]["pid"], svc["instances"][0]["pid"]);
}

TEST(Build, ArtifactStoreEvictsLeastRecentlyUsedArtifactsNoInstanceRuns) {
  Daemon d("build-evict", {"--artifact-store-max", "1B"});  // every artifact over the limit
  std::string repo = d.data_dir() + "/repos/svc";
  make_repo(repo, "1.0");
  ASSERT_EQ(d.apply(catalog("127.102", kSvc)).exit_code, 0);
  ASSERT_EQ(d.cli({"up", "dev-1", "-q"}).exit_code, 0);
  EXPECT_EQ(build_count(d), 1);  // in use: kept despite the limit
  std::string first = app_of(d.status("dev-1"), "svc")["build"]["id"];
  commit_version(repo, "2.0");
  ASSERT_EQ(d.cli({"refresh", "dev-1", "-q"}).exit_code, 0);
  // The next build's completion evicts what no instance runs any more.
  commit_version(repo, "3.0");
  ASSERT_EQ(d.cli({"refresh", "dev-1", "-q"}).exit_code, 0);
  auto builds = d.api().get("/v1/builds");
  ASSERT_TRUE(builds.ok());
  for (const auto& b : *builds) EXPECT_NE(b["id"], first) << "the first artifact should have been evicted";
  EXPECT_FALSE(std::filesystem::exists(d.data_dir() + "/artifacts/" + first));
  auto now = d.status("dev-1");  // app_of refers into it: it must outlive the loop
  for (const auto& i : app_of(now, "svc")["instances"]) EXPECT_EQ(version_of(i["ip"]), "3.0+release");
}

TEST(Build, FollowPicksUpAMovedBranch) {
  Daemon d("build-follow");
  std::string repo = d.data_dir() + "/repos/svc";
  make_repo(repo, "1.0");
  ASSERT_EQ(d.apply(catalog("127.103", kSvc, "  dev-1: {follow: true, follow_interval: 1s}\n")).exit_code, 0);
  ASSERT_EQ(d.cli({"up", "dev-1", "-q"}).exit_code, 0);
  // Polls of an unmoved branch leave the environment as it is: never updating, its commit always
  // shown (a poll whose resolve outlasted the interval once kept `berth up` waiting forever).
  const std::string commit1 = app_of(d.status("dev-1"), "svc")["build"]["commit"];
  int samples = 0;
  for (auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(2500); std::chrono::steady_clock::now() < end;) {
    auto s = d.status("dev-1");
    ASSERT_EQ(s["updating"], false) << s.dump();
    ASSERT_EQ(app_of(s, "svc")["build"]["commit"], commit1) << s.dump();
    ++samples;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // sampling rate over two polls
  }
  EXPECT_GT(samples, 20);
  commit_version(repo, "2.0");
  ASSERT_TRUE(wait_until([&] {
    auto s = d.status("dev-1");
    const auto& svc = app_of(s, "svc");
    return s["ready"] == true && s["updating"] == false && version_of(svc["instances"][0]["ip"]) == "2.0+release" &&
           version_of(svc["instances"][1]["ip"]) == "2.0+release";
  }));
}

TEST(Build, FailedBuildIsIsolatedToItsAppAndItsDependents) {
  Daemon d("build-fail");
  make_repo(d.data_dir() + "/repos/svc", "1.0");
  std::string apps = R"(  broken:
    source:
      repo: repos/svc
      recipes: {default: {command: "echo compiling; echo 'error: undefined reference to main' >&2; exit 3", artifact: out/x}}
    command: ${artifact}
  after-broken:
    depends_on: [broken]
    command: berth-demo-svc --listen ${ip}:${port.http}
  plain:
    command: berth-demo-svc --listen ${ip}:${port.http}
)";
  ASSERT_EQ(d.apply(catalog("127.99", apps)).exit_code, 0);
  auto up = d.cli({"up", "dev-1", "--timeout", "5s"});
  EXPECT_EQ(up.exit_code, 1);
  EXPECT_THAT(up.err, HasSubstr("root cause: broken is build-failed"));
  auto s = d.status("dev-1");
  EXPECT_EQ(app_of(s, "broken")["state"], "build-failed");
  EXPECT_THAT(app_of(s, "broken")["build"]["error"].get<std::string>(), HasSubstr("exited with status 3"));
  EXPECT_THAT(app_of(s, "broken")["build"]["error"].get<std::string>(), HasSubstr("error: undefined reference to main"));
  EXPECT_EQ(app_of(s, "after-broken")["state"], "waiting");
  EXPECT_THAT(app_of(s, "after-broken")["message"].get<std::string>(), HasSubstr("waiting for broken: broken is build failed"));
  EXPECT_EQ(app_of(s, "plain")["state"], "ready");
  auto logs = d.cli({"build", "logs", "broken", "-e", "dev-1"});
  EXPECT_EQ(logs.exit_code, 0);
  EXPECT_THAT(logs.out, HasSubstr("compiling"));
  EXPECT_THAT(logs.out, HasSubstr("berth: cloning"));
}

TEST(Build, TimeoutKillsTheBuildsWholeProcessGroup) {
  Daemon d("build-timeout");
  make_repo(d.data_dir() + "/repos/svc", "1.0");
  std::string apps = R"(  slow:
    source:
      repo: repos/svc
      timeout: 1s
      recipes: {default: {command: "sh -c 'sleep 301' & sleep 302", artifact: out/x}}
    command: ${artifact}
)";
  ASSERT_EQ(d.apply(catalog("127.100", apps)).exit_code, 0);
  ASSERT_EQ(d.cli({"up", "dev-1", "--no-wait"}).exit_code, 0);
  ASSERT_TRUE(wait_until([&] { return app_of(d.status("dev-1"), "slow")["state"] == "build-failed"; }, std::chrono::seconds(20)));
  EXPECT_THAT(app_of(d.status("dev-1"), "slow")["build"]["error"].get<std::string>(), HasSubstr("timed out after 1s"));
  EXPECT_TRUE(wait_until([&] { return sleepers({"301", "302"}).empty(); }, std::chrono::seconds(5))) << "the recipe's children survived";
}

TEST(Build, BadSourcesAreNamed) {
  Daemon d("build-bad");
  make_repo(d.data_dir() + "/repos/svc", "1.0");
  std::string apps = R"(  unknown-ref:
    tag: feature/nope
    source: {repo: repos/svc, recipes: {default: {command: "./build.sh x", artifact: out/svc}}}
    command: ${artifact}
  unreachable:
    source: {repo: /nonexistent/repo.git, recipes: {default: {command: "true", artifact: x}}}
    command: ${artifact}
)";
  ASSERT_EQ(d.apply(catalog("127.101", apps)).exit_code, 0);
  ASSERT_EQ(d.cli({"up", "dev-1", "--no-wait"}).exit_code, 0);
  ASSERT_TRUE(wait_until([&] {
    auto s = d.status("dev-1");
    return app_of(s, "unknown-ref")["state"] == "build-failed" && app_of(s, "unreachable")["state"] == "build-failed";
  }, std::chrono::seconds(20)));
  auto s = d.status("dev-1");
  EXPECT_THAT(app_of(s, "unknown-ref")["build"]["error"].get<std::string>(),
              HasSubstr("repos/svc has no branch or tag 'feature/nope'"));
  EXPECT_THAT(app_of(s, "unreachable")["build"]["error"].get<std::string>(),
              HasSubstr("repository /nonexistent/repo.git is unreachable"));
  // A build_type with no recipe (and no default) is refused at apply, naming the recipes.
  std::string no_recipe = R"(  svc:
    build_type: debug
    source: {repo: repos/svc, recipes: {release: {command: "./build.sh release", artifact: out/svc}}}
    command: ${artifact}
)";
  auto r = d.apply(catalog("127.101", no_recipe), "bad.yaml");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("has build_type 'debug' but its source has no recipe for it and no 'default'; recipes: release"));
}

TEST(Build, ADaemonKilledMidBuildLeavesNoBuildRunning) {
  // The build's whole process group outlives a SIGKILLed daemon; the next daemon kills it before
  // it runs the build again, so nothing writes into the fresh work tree behind its back.
  Daemon d("build-kill");
  make_repo(d.data_dir() + "/repos/svc", "1.0");
  std::string apps = R"(  slow:
    source:
      repo: repos/svc
      recipes: {default: {command: "sh -c 'sleep 303' & sleep 304", artifact: out/x}}
    command: ${artifact}
)";
  // This daemon's recipe processes: their cwd is in its data directory.
  auto recipe = [&d] { return sleepers({"303", "304"}, d.data_dir()); };
  ASSERT_EQ(d.apply(catalog("127.100", apps)).exit_code, 0);
  ASSERT_EQ(d.cli({"up", "dev-1", "--no-wait"}).exit_code, 0);
  ASSERT_TRUE(wait_until([&] { return recipe().size() == 2; }, std::chrono::seconds(20)));
  const auto old = recipe();
  d.kill9();
  EXPECT_EQ(recipe(), old);  // the group outlived its daemon
  d.start();
  // The new daemon killed them, then runs the build again: two new sleepers, none of the old.
  std::set<std::string> now;
  ASSERT_TRUE(wait_until([&] {
    now = recipe();
    return now.size() == 2 && std::none_of(now.begin(), now.end(), [&](const std::string& p) { return old.count(p) > 0; });
  }, std::chrono::seconds(20))) << now.size() << " recipe processes, old ones still there";
}
