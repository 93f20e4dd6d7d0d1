// The runtime contract (runtime/runtime.h), one suite run against every implementation: the
// process runtime, the Docker runtime against a real dockerd (in its network namespace; the suite
// skips that one where there is none) and the simulated runtime the scale benchmark and the loop's
// tests run on. Each case drives a Runtime directly on a real io_context and checks what the loop
// relies on: nothing runs before it is recorded, a refused record leaves nothing, exits and stops
// are reported with their status, a restarted daemon re-finds what runs, logs and exec work, a
// failed start says why.
//
// What a case makes the workload do (exit with a status, ignore SIGTERM, print, fail to start) is
// a shell script for the real runtimes; the simulated runtime's instances run nothing, so there
// the same acts go through its steering (SimRuntime::exit, hang, fail_launches, on_exec), and what
// the real runtimes show by a marker file or a health answer it shows by its own state.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/asio_executor.h"
#include "base/text.h"
#include "docker_env.h"
#include "harness.h"
#include "runtime/docker/docker_runtime.h"
#include "runtime/process/process_runtime.h"
#include "runtime/sim/sim_runtime.h"

using namespace berth;
using namespace berth::it;
using testing::HasSubstr;
namespace fs = std::filesystem;

namespace {

// Everything the runtime tells the loop, in order.
struct Recorder : runtime::Listener {
  struct Event {
    std::string kind;  // created started failed exited
    runtime::Ref ref;
    runtime::Exit exit;
    std::string error;
  };
  std::vector<Event> events;
  std::function<Status(const runtime::Ref&)> on_record = [](const runtime::Ref&) { return Status{}; };
  Executor* executor = nullptr;  // answers go through it, as the loop's do: never from inside on_created

  void on_created(const runtime::InstanceId&, std::uint64_t, const runtime::Ref& ref,
                  std::function<void(Status)> recorded) override {
    events.push_back({"created", ref, {}, ""});
    executor->post([this, ref, recorded = std::move(recorded)] { recorded(on_record(ref)); });
  }
  void on_started(const runtime::InstanceId&, std::uint64_t, const runtime::Ref& ref, const runtime::Observed&) override {
    events.push_back({"started", ref, {}, ""});
  }
  void on_failed(const runtime::InstanceId&, std::uint64_t, const runtime::Ref& ref, const Error& e) override {
    events.push_back({"failed", ref, {}, e.message});
  }
  void on_exited(const runtime::InstanceId&, const runtime::Ref& ref, const runtime::Exit& exit) override {
    events.push_back({"exited", ref, exit, ""});
  }
  const Event* last(const std::string& kind) const {
    for (auto it = events.rbegin(); it != events.rend(); ++it)
      if (it->kind == kind) return &*it;
    return nullptr;
  }
};

class RuntimeContract : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() / fmt::format("berth-contract-{}-{}", GetParam(), getpid())).string();
    fs::remove_all(dir_);
    fs::create_directories(dir_ + "/shared");
    ::chmod((dir_ + "/shared").c_str(), 0777);
    if (GetParam() == "docker") {
      std::string why;
      docker_env_ = DockerEnv::from_environment(&why);
      if (!docker_env_) GTEST_SKIP() << why;
      if (!docker_env_->enter()) return;
      data_id_ = fmt::format("c{:07x}", static_cast<unsigned>(getpid()) & 0xfffffff);
      docker_env_->clear_subnet(network().subnet);
    }
    make_runtime();
  }
  void TearDown() override {
    runtime_.reset();
    sim_.reset();
    if (docker_env_) docker_env_->remove_all(data_id_);  // nothing of this test may stay behind
    if (!HasFailure()) fs::remove_all(dir_);
  }

  // A new runtime object, as a restarted daemon makes one. The simulated runtime's instances live
  // in its object (they outlive a ControlLoop, not the process): a restarted loop on the same
  // object stands for a restarted daemon.
  void make_runtime() {
    runtime_.reset();
    if (sim()) {
      if (!sim_) sim_ = std::make_unique<runtime::SimRuntime>(executor_);
    } else if (GetParam() == "process") {
      runtime_ = std::make_unique<runtime::ProcessRuntime>(io_, executor_, dir_ + "/run");
    } else {
      auto d = runtime::docker::DockerRuntime::create(executor_, {docker_env_->host(), data_id_, dir_ + "/run/docker"});
      ASSERT_TRUE(d.ok()) << d.error().message;
      runtime_ = std::move(d.value());
    }
    rec_.executor = &executor_;
    rt().set_listener(&rec_);
  }
  runtime::Runtime& rt() { return sim_ ? *sim_ : *runtime_; }
  bool sim() const { return GetParam() == "sim"; }

  // Whether the instance of `s` has run its script (the marker it makes) or, simulated, started.
  bool ran(const runtime::InstanceSpec& s) const {
    return sim() ? !sim_->ref_of(s.id.env, s.id.app, s.id.ordinal).empty() : fs::exists(marker());
  }
  // Whether the instance at `s`'s address answers its health check.
  bool answers(const runtime::InstanceSpec& s) const {
    if (sim()) return sim_->answers(s.ip);
    return std::system(fmt::format("curl -sf -m 1 http://{}:8080/healthcheck >/dev/null", s.ip).c_str()) == 0;
  }
  // The workload ends by itself with status 3 (berth-demo-svc's /crash).
  void crash(const runtime::InstanceSpec& s, const runtime::Ref& ref) {
    if (sim()) sim_->exit(ref, 3);
    else ASSERT_GE(std::system(fmt::format("curl -s -m 2 -X POST http://{}:8080/crash >/dev/null", s.ip).c_str()), 0);
  }

  // Runs the loop until `cond` holds (or 60 s pass).
  bool run_until(const std::function<bool()>& cond) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!cond()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      io_.run_for(std::chrono::milliseconds(20));
    }
    return true;
  }

  // Each case its own pool (127.120+ / 10.120+; other tests use 127.77-127.110): cases run in
  // parallel, and dockerd refuses two networks on one subnet.
  int pool() const {
    static const std::vector<std::string> cases = {"NothingRunsBeforeItIsRecorded", "ARefusedRecordLeavesNothing",
                                                   "ReadinessAndAnExitWithItsStatus", "StopAsksFirstAndForcesAfterTheGrace",
                                                   "ARestartedDaemonRecoversWhatRunsAndForgetsWhatDoesNot",
                                                   "OutputIsInItsLogsAndExecRunsInside", "AFailedStartSaysWhy"};
    std::string name = testing::UnitTest::GetInstance()->current_test_info()->name();
    name = name.substr(0, name.find('/'));  // "Case/param"
    auto it = std::find(cases.begin(), cases.end(), name);
    return 150 + static_cast<int>(it - cases.begin());  // 127.150-156: no other test uses them
  }
  std::string ip(int n) const {
    return GetParam() == "process" ? fmt::format("127.{}.0.{}", pool(), n) : fmt::format("10.{}.0.{}", pool(), n);
  }
  runtime::Network network() const {
    const std::string prefix = GetParam() == "process" ? fmt::format("127.{}", pool()) : fmt::format("10.{}", pool());
    return {"default", prefix + ".0.0/16", prefix + ".0.1"};
  }

  // An instance running `script` with sh (for Docker: in the demo image, with the shared
  // directory mounted at the same path).
  runtime::InstanceSpec spec(const std::string& script, int n = 2) {
    runtime::InstanceSpec s;
    s.id = {"contract", "app", n};
    s.launch = static_cast<std::uint64_t>(n);
    s.ip = ip(n);
    s.network = network();
    s.ports = {{"http", 8080}};
    s.env = {{"BERTH_IP", s.ip}, {"BERTH_PORT_HTTP", "8080"}, {"BERTH_APP", "app"}, {"DEMO_WARMUP_MS", "0"},
             {"PATH", "/usr/local/bin:/usr/bin:/bin:" DEMO_SVC_DIR}};
    s.log_path = fmt::format("{}/app.{}.log", dir_, n);
    if (GetParam() == "process") {
      s.workload = runtime::ProcessWorkload{"/bin/sh -c " + shell_quote(script)};
    } else {
      s.workload = runtime::ImageWorkload{"berth-demo:latest", std::nullopt, std::vector<std::string>{"/bin/sh", "-c", script}, "", ""};
      s.mounts.push_back({runtime::Mount::Kind::kBind, dir_ + "/shared", dir_ + "/shared", false, ""});
    }
    return s;
  }
  std::string marker() const { return dir_ + "/shared/marker"; }
  runtime::Ref launch_and_start(const runtime::InstanceSpec& s) {
    const std::size_t before = rec_.events.size();
    rt().launch(s);
    const Recorder::Event* outcome = nullptr;
    EXPECT_TRUE(run_until([&] {
      for (std::size_t i = before; i < rec_.events.size(); ++i)
        if (rec_.events[i].kind == "started" || rec_.events[i].kind == "failed") outcome = &rec_.events[i];
      return outcome != nullptr;
    }));
    if (!outcome) return "";
    EXPECT_EQ(outcome->kind, "started") << outcome->error;
    return outcome->kind == "started" ? outcome->ref : "";
  }
  bool stopped(const runtime::Ref& ref) {
    return run_until([&] {
      for (const auto& e : rec_.events)
        if (e.kind == "exited" && e.ref == ref) return true;
      return false;
    });
  }

  boost::asio::io_context io_{1};
  // Answers posted from other threads (the Engine's) must find the loop running.
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_ = boost::asio::make_work_guard(io_);
  AsioExecutor executor_{io_};
  Recorder rec_;
  std::unique_ptr<runtime::Runtime> runtime_;
  std::unique_ptr<runtime::SimRuntime> sim_;  // the "sim" case's runtime, in place of runtime_
  std::optional<DockerEnv> docker_env_;
  std::string dir_, data_id_;
};

TEST_P(RuntimeContract, NothingRunsBeforeItIsRecorded) {
  const auto s = spec(fmt::format(": > {}; exec sleep 600", marker()));
  bool ran_before_record = true;
  rec_.on_record = [&](const runtime::Ref&) {
    ran_before_record = ran(s);
    return Status{};
  };
  auto ref = launch_and_start(s);
  ASSERT_FALSE(ref.empty());
  EXPECT_EQ(rec_.events.front().kind, "created");
  EXPECT_FALSE(ran_before_record);
  EXPECT_TRUE(run_until([&] { return ran(s); }));  // and it runs once recorded
  rt().stop(ref, 1000);
  EXPECT_TRUE(stopped(ref));
}

TEST_P(RuntimeContract, ARefusedRecordLeavesNothing) {
  rec_.on_record = [](const runtime::Ref&) { return Status(unavailable("disk full")); };
  const auto s = spec(fmt::format(": > {}; exec sleep 600", marker()));
  rt().launch(s);
  ASSERT_TRUE(run_until([&] { return rec_.last("failed") != nullptr; }));
  EXPECT_THAT(rec_.last("failed")->error, HasSubstr("disk full"));
  EXPECT_EQ(rec_.last("started"), nullptr);
  EXPECT_FALSE(ran(s));
  if (sim()) {
    EXPECT_TRUE(sim_->instances().empty()) << "the created instance was not destroyed";
  }
  if (docker_env_) {
    EXPECT_TRUE(docker_env_->containers(data_id_).empty()) << "the created container was not removed";
  }
}

TEST_P(RuntimeContract, ReadinessAndAnExitWithItsStatus) {
  auto s = spec("exec berth-demo-svc");
  auto ref = launch_and_start(s);
  ASSERT_FALSE(ref.empty());
  // Its own address answers (the daemon probes instances directly).
  ASSERT_TRUE(run_until([&] { return answers(s); }));
  crash(s, ref);
  ASSERT_TRUE(stopped(ref));
  const auto* e = rec_.last("exited");
  EXPECT_TRUE(e->exit.status_known);
  EXPECT_EQ(e->exit.code, 3);
  EXPECT_EQ(e->exit.description, "exited with status 3");
}

TEST_P(RuntimeContract, StopAsksFirstAndForcesAfterTheGrace) {
  auto polite_spec = spec("exec berth-demo-svc", 2);
  auto polite = launch_and_start(polite_spec);  // ends on SIGTERM, once it has set itself up
  auto stubborn = launch_and_start(spec("trap '' TERM; exec sleep 600", 3));  // ignores it
  ASSERT_FALSE(polite.empty());
  ASSERT_FALSE(stubborn.empty());
  if (sim()) sim_->hang(stubborn);  // the script's trap, simulated
  ASSERT_TRUE(run_until([&] { return answers(polite_spec); }));
  rt().stop(polite, 10'000);
  rt().stop(stubborn, 500);
  ASSERT_TRUE(stopped(polite));
  ASSERT_TRUE(stopped(stubborn));
  for (const auto& e : rec_.events) {
    if (e.kind != "exited") continue;
    if (e.ref == polite) {
      EXPECT_NE(e.exit.signal, SIGKILL) << e.exit.description;
      // berth-demo-svc ends with status 0 on SIGTERM; a simulated instance is ended by it.
      EXPECT_EQ(sim() ? e.exit.signal : e.exit.code, sim() ? SIGTERM : 0) << e.exit.description;
    }
    if (e.ref == stubborn) {
      EXPECT_EQ(e.exit.signal, SIGKILL) << e.exit.description << " " << e.exit.code;
    }
  }
}

TEST_P(RuntimeContract, ARestartedDaemonRecoversWhatRunsAndForgetsWhatDoesNot) {
  auto s = spec("exec berth-demo-svc");
  auto ref = launch_and_start(s);
  ASSERT_FALSE(ref.empty());
  auto gone = launch_and_start(spec("exec sleep 600", 3));
  rt().stop(gone, 500);
  ASSERT_TRUE(stopped(gone));
  make_runtime();  // the daemon died; its instances did not
  std::vector<runtime::Recovered> got;
  bool answered = false;
  rt().recover({{s.id, ref}, {{"contract", "app", 3}, gone}}, [&](std::vector<runtime::Recovered> r) {
    got = std::move(r);
    answered = true;
  });
  ASSERT_TRUE(run_until([&] { return answered; }));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_TRUE(got[0].alive) << got[0].exit.description << " " << ref;
  EXPECT_FALSE(got[1].alive);
  // Adopted: watched like its own, stopped like its own.
  rt().stop(ref, 5000);
  EXPECT_TRUE(stopped(ref));
}

TEST_P(RuntimeContract, OutputIsInItsLogsAndExecRunsInside) {
  auto s = spec("echo to-stdout; echo to-stderr >&2; exec berth-demo-svc");
  auto ref = launch_and_start(s);
  ASSERT_FALSE(ref.empty());
  if (sim()) {  // what the script prints, written where a real runtime's instance writes it
    std::ofstream(s.log_path) << "to-stdout\nto-stderr\nlistening on " << s.ip << ":8080\n";
    sim_->on_exec([](const runtime::SimRuntime::Instance& i, const runtime::ExecRequest&) {
      runtime::ExecResult r;
      r.exit = {true, 2, 0, "exited with status 2"};
      r.output = "inside " + i.spec.env.at("BERTH_APP") + "\noops\n";
      return r;
    });
  }
  std::string text;
  ASSERT_TRUE(run_until([&] {
    bool done = false;
    rt().logs(s.id, s.log_path, 0, 1 << 20, [&](Result<runtime::LogChunk> c) {
      if (c.ok()) text = c->text;
      done = true;
    });
    run_until([&] { return done; });
    return text.find("to-stderr") != std::string::npos && text.find("listening on") != std::string::npos;
  })) << text;
  EXPECT_THAT(text, HasSubstr("to-stdout"));
  std::optional<Result<runtime::ExecResult>> r;
  runtime::ExecRequest req;
  req.argv = {"/bin/sh", "-c", "echo inside $BERTH_APP; echo oops >&2; exit 2"};
  auto handle = rt().exec(ref, req, [&](Result<runtime::ExecResult> x) { r = std::move(x); });
  ASSERT_TRUE(run_until([&] { return r.has_value(); }));
  ASSERT_TRUE(r->ok()) << r->error().message;
  EXPECT_EQ((*r)->exit.code, 2);
  EXPECT_THAT((*r)->output, HasSubstr("inside app"));
  EXPECT_THAT((*r)->output, HasSubstr("oops"));
  rt().stop(ref, 5000);
  EXPECT_TRUE(stopped(ref));
}

TEST_P(RuntimeContract, AFailedStartSaysWhy) {
  auto s = spec("exec berth-demo-svc");
  std::string why;
  if (GetParam() == "process") {
    s.log_path = why = "/nonexistent/dir/app.log";
  } else if (sim()) {
    sim_->fail_launches("app", why = "no such image: berth-no-such-image:1");
  } else {
    s.workload = runtime::ImageWorkload{"berth-no-such-image:1", std::nullopt, std::nullopt, "", ""};
    why = "berth-no-such-image:1";
  }
  rt().launch(s);
  ASSERT_TRUE(run_until([&] { return rec_.last("failed") != nullptr; }));
  EXPECT_EQ(rec_.last("started"), nullptr);
  EXPECT_THAT(rec_.last("failed")->error, HasSubstr(why));
}

INSTANTIATE_TEST_SUITE_P(Runtimes, RuntimeContract, testing::Values("process", "docker", "sim"),
                         [](const auto& param_info) { return param_info.param; });

// Docker only: a container created by a daemon that died before recording it never runs, and
// the next daemon removes it.
TEST(DockerRecovery, RemovesContainersItHasNoRecordOf) {
  std::string why;
  auto env = DockerEnv::from_environment(&why);
  if (!env) GTEST_SKIP() << why;
  ASSERT_TRUE(env->enter());
  const std::string id = fmt::format("o{:07x}", static_cast<unsigned>(getpid()) & 0xfffffff);
  nlohmann::json body = {{"Image", "berth-demo:latest"}, {"Labels", {{"berth.data", id}}}};
  auto made = env->call("POST", "/containers/create?name=berth-" + id + "-e-a-0", body.dump());
  ASSERT_TRUE(made.ok() && made->status == 201) << (made.ok() ? made->body : made.error().message);
  ASSERT_EQ(env->containers(id).size(), 1u);
  boost::asio::io_context io{1};
  auto work = boost::asio::make_work_guard(io);
  AsioExecutor executor{io};
  auto dir = fs::temp_directory_path() / fmt::format("berth-orphan-{}", getpid());
  auto rt = runtime::docker::DockerRuntime::create(executor, {env->host(), id, dir.string()});
  ASSERT_TRUE(rt.ok());
  bool answered = false;
  (*rt)->recover({}, [&](std::vector<runtime::Recovered>) { answered = true; });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while ((!answered || !env->containers(id).empty()) && std::chrono::steady_clock::now() < deadline)
    io.run_for(std::chrono::milliseconds(20));
  EXPECT_TRUE(answered);
  EXPECT_TRUE(env->containers(id).empty()) << "a container without a record was left";
  env->remove_all(id);
  fs::remove_all(dir);
}

}  // namespace
