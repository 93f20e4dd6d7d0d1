// The core issue end to end: the real daemon binary, real instance processes (berth-demo-svc),
// real HTTP health checks over loopback addresses.
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "common/state_v1.h"
#include "harness.h"
#include "model/catalog.h"

using namespace berth::it;
using nlohmann::json;
using testing::HasSubstr;
using testing::Not;

namespace {

bool all_ready(Daemon& d, const std::string& env) {
  auto r = d.api().get("/v1/environments/" + env);
  return r.ok() && (*r)["ready"].get<bool>();
}

std::int64_t ms_of(const std::string& rfc3339) {
  // "2026-11-28T14:48:02.330Z" → milliseconds since the start of that day (tests span minutes).
  int h = std::stoi(rfc3339.substr(11, 2)), m = std::stoi(rfc3339.substr(14, 2)), s = std::stoi(rfc3339.substr(17, 2));
  int ms = std::stoi(rfc3339.substr(20, 3));
  return ((h * 60 + m) * 60 + s) * 1000 + ms;
}

json http_get(const std::string& ip, int port, const std::string& target) {
  namespace beast = boost::beast;
  boost::asio::io_context io;
  beast::tcp_stream s(io);
  s.expires_after(std::chrono::seconds(5));
  s.connect({boost::asio::ip::make_address(ip), static_cast<unsigned short>(port)});
  beast::http::request<beast::http::empty_body> req(beast::http::verb::get, target, 11);
  req.set(beast::http::field::host, ip);
  beast::http::write(s, req);
  beast::flat_buffer buf;
  beast::http::response<beast::http::string_body> res;
  beast::http::read(s, buf, res);
  return json::parse(res.body());
}

std::string replaced_all(std::string text, const std::string& from, const std::string& to) {
  for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) text.replace(at, from.size(), to);
  return text;
}

}  // namespace

TEST(Core, UpShowsProgressAndStartsInDependencyOrder) {
  Daemon d("order");
  ASSERT_EQ(d.apply(example_catalog("127.81")).exit_code, 0);
  auto up = d.cli({"up", "baseline", "--timeout", "60s"});
  ASSERT_EQ(up.exit_code, 0) << up.err;
  EXPECT_THAT(up.out, HasSubstr("waiting"));
  EXPECT_THAT(up.out, HasSubstr("baseline: 8/8 apps ready"));

  auto s = d.status("baseline");
  ASSERT_TRUE(s["ready"].get<bool>());
  // Addresses: unique, inside the pool, never excluded ones.
  std::set<std::string> ips;
  for (const auto& a : s["apps"])
    for (const auto& i : a["instances"]) {
      std::string ip = i["ip"];
      EXPECT_TRUE(ips.insert(ip).second) << ip;
      EXPECT_EQ(ip.rfind("127.81.", 0), 0u) << ip;
      // network address, the excluded gateway and management range
      for (int last = 0; last <= 9; ++last) EXPECT_NE(ip, "127.81.0." + std::to_string(last));
      EXPECT_EQ(i["state"], "ready");
      EXPECT_FALSE(i["ready_at"].is_null());
    }
  EXPECT_EQ(ips.size(), 10u);

  // Proof of order from the event log: no app started before every hard dependency was ready.
  std::map<std::string, std::int64_t> first_start, first_ready;
  for (const auto& e : d.events("baseline")) {
    if (e["app"].is_null()) continue;
    std::string app = e["app"];
    if (e["type"] == "starting" && !first_start.count(app)) first_start[app] = ms_of(e["time"]);
    if (e["type"] == "ready" && !first_ready.count(app)) first_ready[app] = ms_of(e["time"]);
  }
  std::map<std::string, std::vector<std::string>> hard = {
      {"gateway", {"orders", "search"}}, {"orders", {"users", "payments", "inventory"}}, {"payments", {"ledger"}}};
  for (const auto& [app, deps] : hard)
    for (const auto& dep : deps) {
      ASSERT_TRUE(first_start.count(app) && first_ready.count(dep)) << app << " / " << dep;
      EXPECT_GE(first_start[app], first_ready[dep]) << app << " started before " << dep << " was ready";
    }
  // Independent apps started together, not one after another.
  EXPECT_LE(std::abs(first_start["users"] - first_start["ledger"]), 200);
}

TEST(Core, SecondEnvironmentBesideTheFirstWithItsOwnTag) {
  Daemon d("beta");
  ASSERT_EQ(d.apply(example_catalog("127.82")).exit_code, 0);
  ASSERT_EQ(d.cli({"up", "baseline", "-q"}).exit_code, 0);
  auto up = d.cli({"up", "beta-7", "-q"});
  ASSERT_EQ(up.exit_code, 0) << up.err;
  auto s = d.status("beta-7");
  const auto& orders = app_of(s, "orders");
  EXPECT_EQ(orders["tag"], "feature/new-pay");
  EXPECT_EQ(orders["from"]["tag"], "environments.beta-7.apps.orders");
  EXPECT_EQ(orders["runs_in"], "beta-7");
  EXPECT_EQ(app_of(s, "users")["from"]["tag"], "defaults");
  // beta-7 is thin (deploy: changed): it runs orders and its callers, the rest falls through.
  EXPECT_EQ(app_of(s, "gateway")["runs_in"], "beta-7");
  EXPECT_EQ(app_of(s, "notifier")["runs_in"], "beta-7");  // a soft caller is a caller too
  EXPECT_EQ(app_of(s, "users")["runs_in"], "baseline");
  EXPECT_EQ(app_of(s, "payments")["runs_in"], "baseline");

  // The call chain through beta-7's gateway, resolved by DNS: gateway and orders answer from
  // beta-7 at the new tag, users, payments and the rest from baseline.
  std::string gw_ip = app_of(s, "gateway")["instances"][0]["ip"];
  json chain = http_get(gw_ip, 8080, "/");
  EXPECT_EQ(chain["env"], "beta-7");
  ASSERT_EQ(chain["calls"][0]["app"], "orders") << chain.dump();
  EXPECT_EQ(chain["calls"][0]["env"], "beta-7");
  // The gateway finds orders with getaddrinfo("orders") (its resolv.conf: berth, search beta-7);
  // orders finds its own dependencies through SRV records at BERTH_DNS.
  EXPECT_EQ(chain["calls"][0]["resolved"], "orders (system resolver)");
  EXPECT_EQ(chain["calls"][0]["calls"][0]["resolved"], "_http._tcp.users.beta-7.berth.test");
  EXPECT_EQ(chain["calls"][0]["tag"], "feature/new-pay");
  EXPECT_EQ(chain["calls"][0]["version"], "2.0-new-pay+debug");  // built from the branch, as build_type debug
  for (const auto& callee : chain["calls"][0]["calls"]) {
    EXPECT_EQ(callee["env"], "baseline") << callee.dump();
    EXPECT_FALSE(callee.contains("error")) << callee.dump();
  }
  EXPECT_EQ(chain["calls"][0]["calls"][0]["app"], "users");
  EXPECT_EQ(chain["calls"][1]["app"], "search");
  EXPECT_EQ(chain["calls"][1]["env"], "baseline");

  // Table and config views name the layers and where apps run.
  auto table = d.cli({"status", "beta-7"});
  EXPECT_THAT(table.out, HasSubstr("feature/new-pay → "));  // tag → commit (build state)
  EXPECT_THAT(table.out, HasSubstr("[env beta-7 app override]"));
  EXPECT_THAT(table.out, HasSubstr("→ baseline"));
  auto config = d.cli({"config", "beta-7", "orders"});
  EXPECT_THAT(config.out, HasSubstr("environments.beta-7.apps.orders"));
  EXPECT_THAT(config.out, HasSubstr("env.LOG_LEVEL"));

  // down stops beta-7's processes only: its 4 instances (orders ×2, gateway, notifier).
  auto before = d.processes();
  ASSERT_EQ(d.cli({"down", "beta-7", "-q"}).exit_code, 0);
  for (const auto& p : d.processes()) EXPECT_EQ(p.env, "baseline");
  EXPECT_EQ(d.processes().size(), before.size() - 4);
  auto events = d.cli({"events", "beta-7", "-o", "json"});
  auto ev = json::parse(events.out);
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev.back()["type"], "stopped");
}

TEST(Core, KilledInstanceComesBackWithTheSameAddress) {
  Daemon d("kill");
  ASSERT_EQ(d.apply(example_catalog("127.83")).exit_code, 0);
  ASSERT_EQ(d.cli({"up", "baseline", "-q"}).exit_code, 0);
  auto s = d.status("baseline");
  int old_pid = pid_of(s, "users", 1);
  std::string old_ip = app_of(s, "users")["instances"][1]["ip"];
  ASSERT_GT(old_pid, 0);
  ASSERT_EQ(::kill(old_pid, SIGKILL), 0);
  ASSERT_TRUE(wait_until([&] {
    auto now = d.status("baseline");
    int pid = pid_of(now, "users", 1);
    return pid != 0 && pid != old_pid && app_of(now, "users")["instances"][1]["state"] == "ready";
  }));
  auto now = d.status("baseline");
  EXPECT_EQ(app_of(now, "users")["instances"][1]["ip"], old_ip);
  EXPECT_EQ(app_of(now, "users")["instances"][1]["restarts"], 1);
  std::vector<std::string> types;
  for (const auto& e : d.events("baseline"))
    if (e["app"] == "users" && e["ordinal"] == 1) types.push_back(e["type"]);
  EXPECT_THAT(types, testing::IsSupersetOf({"exited", "restarting", "starting", "ready"}));
  // Its output, across both lives, through berth.
  auto logs = d.cli({"logs", "baseline", "users", "-i", "1"});
  EXPECT_EQ(logs.exit_code, 0) << logs.err;
  EXPECT_THAT(logs.out, HasSubstr("users#1 in baseline listening on " + old_ip + ":8080"));
  EXPECT_NE(d.cli({"logs", "baseline", "users", "-i", "7"}).exit_code, 0);
}

TEST(Core, ApplyOfAChangeRestartsOnlyTheChangedApp) {
  Daemon d("apply");
  std::string catalog = example_catalog("127.84");
  ASSERT_EQ(d.apply(catalog).exit_code, 0);
  ASSERT_EQ(d.cli({"up", "baseline", "-q"}).exit_code, 0);
  auto before = d.status("baseline");
  std::string changed = replaced(catalog, "DEMO_WARMUP_MS: \"600\"", "DEMO_WARMUP_MS: \"601\"");
  ASSERT_EQ(d.apply(changed).exit_code, 0);
  ASSERT_TRUE(wait_until([&] {
    auto s = d.status("baseline");
    return pid_of(s, "payments", 0) != pid_of(before, "payments", 0) && s["ready"].get<bool>();
  }));
  auto after = d.status("baseline");
  for (const auto& a : after["apps"]) {
    std::string app = a["app"];
    if (app == "payments") continue;
    for (std::size_t i = 0; i < a["instances"].size(); ++i)
      EXPECT_EQ(a["instances"][i]["pid"], app_of(before, app)["instances"][i]["pid"]) << app << " was restarted";
  }
  EXPECT_EQ(app_of(after, "payments")["instances"][0]["ip"], app_of(before, "payments")["instances"][0]["ip"]);
}

TEST(Core, DaemonSigkillMidUpConvergesWithoutDuplicates) {
  Daemon d("sigkill");
  ASSERT_EQ(d.apply(example_catalog("127.85")).exit_code, 0);
  ASSERT_EQ(d.cli({"up", "baseline", "--no-wait"}).exit_code, 0);
  // Kill the daemon while the first wave is starting and later waves are still waiting.
  ASSERT_TRUE(wait_until([&] { return d.processes().size() >= 3; }, std::chrono::seconds(10)));
  d.kill9();
  auto orphans = d.processes();
  ASSERT_FALSE(orphans.empty());
  d.start();
  ASSERT_TRUE(wait_until([&] { return all_ready(d, "baseline"); }, std::chrono::seconds(60)))
      << d.status("baseline").dump(1) << d.events("baseline").dump(1);
  // Exactly one process per instance, and the survivors were adopted, not duplicated.
  auto procs = d.processes();
  std::map<std::string, int> per_instance;
  std::set<std::string> ips;
  for (const auto& p : procs) {
    ++per_instance[p.app + "#" + p.instance];
    EXPECT_TRUE(ips.insert(p.ip).second) << "address " << p.ip << " used twice";
  }
  EXPECT_EQ(procs.size(), 10u);
  for (const auto& [k, n] : per_instance) EXPECT_EQ(n, 1) << k;
  auto s = d.status("baseline");
  for (const auto& o : orphans) {
    const auto& inst = app_of(s, o.app)["instances"][static_cast<std::size_t>(std::stoi(o.instance))];
    EXPECT_EQ(inst["ip"], o.ip) << o.app << " moved";
  }
}

TEST(Core, BadCatalogFailsWithLocationAndChangesNothing) {
  Daemon d("bad");
  std::string good = example_catalog("127.86");
  ASSERT_EQ(d.apply(good).exit_code, 0);
  ASSERT_EQ(d.cli({"up", "baseline", "-q"}).exit_code, 0);
  auto before = d.status("baseline");
  std::string bad = replaced(replaced(good, "depends_on: [ledger]", "depends_on: [ledgr]"), "interval: 2s", "interval: 2 s");
  auto r = d.apply(bad, "bad.yaml");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("bad.yaml:"));
  EXPECT_THAT(r.err, HasSubstr("unknown app 'ledgr' (did you mean 'ledger'?)"));
  EXPECT_THAT(r.err, HasSubstr("bad duration '2 s'"));
  auto catalog = d.api().get("/v1/catalog");
  ASSERT_TRUE(catalog.ok());
  EXPECT_EQ((*catalog)["text"], good);
  auto after = d.status("baseline");
  for (const auto& a : after["apps"])
    for (std::size_t i = 0; i < a["instances"].size(); ++i)
      EXPECT_EQ(a["instances"][i]["pid"], app_of(before, a["app"])["instances"][i]["pid"]);
}

TEST(Core, UpTimesOutNamingTheRootCauseAndTheRestKeepsRunning) {
  Daemon d("rootcause");
  std::string catalog = example_catalog("127.87");
  catalog = replaced(catalog, "  users:\n    instances: 2", "  users:\n    instances: 2\n    health: {path: /nope}");
  ASSERT_EQ(d.apply(catalog).exit_code, 0);
  auto up = d.cli({"up", "baseline", "--timeout", "3s"});
  EXPECT_EQ(up.exit_code, 1);
  EXPECT_THAT(up.err, HasSubstr("root cause: users is starting: GET /nope → 404 (blocking gateway, orders)"));
  auto s = d.status("baseline");
  EXPECT_EQ(app_of(s, "orders")["state"], "waiting");
  EXPECT_THAT(app_of(s, "orders")["message"].get<std::string>(), HasSubstr("waiting for users: GET /nope → 404"));
  EXPECT_EQ(app_of(s, "ledger")["state"], "ready");
  EXPECT_EQ(app_of(s, "payments")["state"], "ready");
}

TEST(Core, TcpAndExecHealthChecks) {
  Daemon d("checks");
  std::string catalog = R"(network: {pool: 127.88.0.0/24}
defaults:
  command: berth-demo-svc --listen ${ip}:${port.http}
  ports: {http: 8080}
apps:
  tcp-app:
    health: {type: tcp, start_interval: 20ms}
  exec-app:
    health: {type: exec, command: 'test "$BERTH_APP" = exec-app', start_interval: 20ms}
  after-both:
    depends_on: [tcp-app, exec-app]
environments:
  dev: {}
)";
  ASSERT_EQ(d.apply(catalog).exit_code, 0);
  auto up = d.cli({"up", "dev", "--timeout", "20s"});
  ASSERT_EQ(up.exit_code, 0) << up.err << up.out;
  auto s = d.status("dev");
  EXPECT_THAT(app_of(s, "tcp-app")["instances"][0]["health"].get<std::string>(), HasSubstr("connected"));
  EXPECT_EQ(app_of(s, "exec-app")["instances"][0]["health"], "exec → status 0");
}

// A data directory of the previous berth (state.db schema 1, instances recorded by pid) with a
// live instance: the new daemon migrates the database and adopts the process, killing nothing.
TEST(Core, AStateDbOfThePreviousSchemaMigratesAndItsInstanceIsAdopted) {
  const std::string text = example_catalog("127.89");
  pid_t survivor = -1;
  std::uint64_t ticks = 0;
  auto prepare = [&](const std::string& dir) {
    survivor = fork();
    if (survivor == 0) {
      setsid();
      for (auto [k, v] : std::map<std::string, std::string>{{"BERTH_HOME", dir}, {"BERTH_ENV", "baseline"}, {"BERTH_APP", "users"},
                                                              {"BERTH_INSTANCE", "0"}, {"BERTH_IP", "127.89.0.10"}, {"DEMO_WARMUP_MS", "0"}})
        setenv(k.c_str(), v.c_str(), 1);
      std::string svc = std::string(DEMO_SVC_DIR) + "/berth-demo-svc";
      execl(svc.c_str(), svc.c_str(), "--listen", "127.89.0.10:8080", nullptr);
      _exit(127);
    }
    std::string stat;
    ASSERT_TRUE(wait_until([&] {
      stat = read_file("/proc/" + std::to_string(survivor) + "/stat");
      return stat.find("berth-demo-svc") != std::string::npos;
    }));
    std::istringstream rest(stat.substr(stat.rfind(')') + 2));
    std::string field;
    for (int i = 3; i < 22; ++i) rest >> field;
    rest >> ticks;
    // The settings fingerprint the daemon will compare against: the catalog's own.
    auto catalog = berth::model::Catalog::parse(text, "berth.yaml", dir);
    ASSERT_TRUE(catalog.ok()) << catalog.error().message;
    const std::string fingerprint = catalog->find("baseline")->find("users")->fingerprint();
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir + "/state.db").c_str(), &db), SQLITE_OK);
    std::string sql = berth::testing_state::kSchemaV1;
    sql += fmt::format("INSERT INTO catalog VALUES (1, '{}', 'berth.yaml', 1, '{}');\n", replaced_all(text, "'", "''"), dir);
    sql += "INSERT INTO environments_up VALUES ('baseline', 1);\n";
    sql += fmt::format("INSERT INTO leases VALUES ('baseline', 'users', 0, {}, 0);\n", (127u << 24) | (89u << 16) | 10u);
    sql += fmt::format("INSERT INTO instances VALUES ('baseline', 'users', 0, {0}, {0}, {1}, '{2}', 0, 1);\n", survivor, ticks,
                       fingerprint);
    char* err = nullptr;
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
    sqlite3_free(err);
    sqlite3_close(db);
  };
  Daemon d("migrate", {}, prepare);
  ASSERT_TRUE(wait_until([&] { return all_ready(d, "baseline"); }, std::chrono::seconds(60)));
  auto s = d.status("baseline");
  const auto& users0 = app_of(s, "users")["instances"][0];
  EXPECT_EQ(users0["ip"], "127.89.0.10");
  EXPECT_EQ(users0["pid"], survivor) << "the recorded process was not adopted; recorded start ticks " << ticks
                                      << ", its /proc stat now: " << read_file("/proc/" + std::to_string(survivor) + "/stat");
  bool adopted = false;
  for (const auto& e : d.events("baseline"))
    adopted = adopted || (e["type"] == "adopted" && e["app"] == "users" && e["ordinal"] == 0);
  EXPECT_TRUE(adopted);
  EXPECT_EQ(::kill(survivor, 0), 0) << "it was killed instead";
}

TEST(Core, AJobRunsToCompletionBeforeWhatWaitsForIt) {
  Daemon d("jobs");
  const std::string catalog = R"(network: {pool: 127.115.0.0/24, exclude: [127.115.0.1]}
defaults:
  command: berth-demo-svc --listen ${ip}:${port.http}
  ports: {http: 8080}
  health: {type: http, port: http, path: /healthcheck, start_interval: 50ms}
apps:
  users: {}
  seed:
    kind: job
    command: sh -c 'echo seeding users at $BERTH_DEP_USERS_HTTP; echo seeded'
    depends_on: [users]
  orders:
    depends_on: [users, {app: seed, wait_for: completed}]
environments:
  dev: {}
)";
  ASSERT_EQ(d.apply(catalog).exit_code, 0);
  auto up = d.cli({"up", "dev", "--timeout", "60s"});
  ASSERT_EQ(up.exit_code, 0) << up.out << up.err;
  auto s = d.status("dev");
  EXPECT_EQ(app_of(s, "seed")["state"], "completed");
  EXPECT_EQ(app_of(s, "orders")["state"], "ready");
  // orders started only after seed completed.
  auto events = d.events("dev");
  std::int64_t completed = 0, orders_started = 0;
  for (const auto& e : events) {
    if (e["type"] == "completed" && e["app"] == "seed") completed = e["id"];
    if (e["type"] == "starting" && e["app"] == "orders" && !orders_started) orders_started = e["id"];
  }
  EXPECT_GT(completed, 0);
  EXPECT_GT(orders_started, completed);
  auto log = d.cli({"logs", "dev", "seed"});
  EXPECT_THAT(log.out, HasSubstr("seed#0 | seeded")) << log.out << log.err;
}

// A root daemon runs each environment's instances as a user of its own, never root unless the
// fleet document says so; they cannot read or list the daemon's data directory, and exec runs
// as the instance's user.
TEST(Core, InstancesRunUnprivilegedEachEnvironmentAsItsOwnUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "only a root daemon switches users";
  Daemon d("users");
  const std::string catalog = R"yaml(network: {pool: 127.116.0.0/24}
defaults:
  ports: {http: 8080}
  health: {type: tcp, start_interval: 20ms}
apps:
  plain:
    command: >-
      sh -c 'echo "who uid=$(id -u) gid=$(id -g) groups=$(id -G)";
      if cat "$BERTH_HOME/state.db" >/dev/null 2>&1; then echo "state.db: READ"; else echo "state.db: refused"; fi;
      if ls "$BERTH_HOME" >/dev/null 2>&1; then echo "data dir: LISTED"; else echo "data dir: not listable"; fi;
      exec berth-demo-svc --listen ${ip}:${port.http}'
  privileged:
    user: root
    command: sh -c 'echo "who uid=$(id -u)"; exec berth-demo-svc --listen ${ip}:${port.http}'
environments:
  dev: {}
  qa: {}
)yaml";
  ASSERT_EQ(d.apply(catalog).exit_code, 0);
  for (const char* env : {"dev", "qa"}) {
    auto up = d.cli({"up", env, "--timeout", "20s"});
    ASSERT_EQ(up.exit_code, 0) << up.err << up.out;
  }
  auto log_of = [&](const std::string& env, const std::string& app) {
    std::string text;
    EXPECT_TRUE(wait_until([&] {
      text = read_file(d.data_dir() + "/logs/" + env + "/" + app + ".0.log");
      return text.find("who uid=") != std::string::npos && (app != "plain" || text.find("data dir:") != std::string::npos);
    })) << text;
    return text;
  };
  auto uid_in = [](const std::string& log) {
    auto at = log.find("who uid=");
    return at == std::string::npos ? -1 : std::atoi(log.c_str() + at + 8);
  };
  const std::string dev = log_of("dev", "plain"), qa = log_of("qa", "plain");
  EXPECT_GT(uid_in(dev), 900000) << dev;
  EXPECT_GT(uid_in(qa), 900000) << qa;
  EXPECT_NE(uid_in(dev), uid_in(qa));  // one environment's code cannot touch another's
  EXPECT_THAT(dev, HasSubstr("gid=900000 groups=900000"));
  EXPECT_THAT(dev, HasSubstr("state.db: refused"));
  EXPECT_THAT(dev, HasSubstr("data dir: not listable"));
  EXPECT_EQ(uid_in(log_of("dev", "privileged")), 0);
  // The process itself, as the kernel sees it; and exec joins it as the same user.
  for (const auto& p : d.processes()) {
    if (p.app != "plain") continue;
    auto who = read_file("/proc/" + std::to_string(p.pid) + "/status");
    EXPECT_THAT(who, Not(HasSubstr("Uid:\t0\t"))) << p.env;
    EXPECT_THAT(who, HasSubstr("CapEff:\t0000000000000000")) << p.env;
  }
  auto ex = d.cli({"exec", "dev", "plain", "--", "id", "-u"});
  ASSERT_EQ(ex.exit_code, 0) << ex.err;
  EXPECT_EQ(std::atoi(ex.out.c_str()), uid_in(dev));
}

TEST(Core, ASimulatedFleetComesUpAndIsListedInPages) {
  // --runtime sim: nothing runs; each instance starts after 20 ms and answers its checks 50 ms
  // after that. The whole control plane (catalog, loop, store, API, DNS) is the real one.
  Daemon d("sim", {"--runtime", "sim", "--sim", "start=20ms,ready=50ms"});
  std::string y = "network: {pool: 127.95.0.0/16}\n"
                  "defaults: {command: svc, ports: {http: 80}, health: {type: http, start_interval: 10ms, interval: 1s}}\n"
                  "apps:\n  db: {}\n  api: {depends_on: [db]}\n  web: {depends_on: [api], instances: 3}\n"
                  "environments:\n";
  for (int e = 0; e < 5; ++e) y += fmt::format("  env-{}: {{}}\n", e);
  ASSERT_EQ(d.apply(y).exit_code, 0);
  for (int e = 0; e < 5; ++e) ASSERT_EQ(d.cli({"up", fmt::format("env-{}", e), "--no-wait"}).exit_code, 0);
  std::vector<std::string> seen;
  ASSERT_TRUE(wait_until([&] {
    seen.clear();
    std::string after;
    for (int pages = 0; pages < 10; ++pages) {
      auto r = d.api().get("/v1/environments?summary=1&limit=2" + (after.empty() ? "" : "&after=" + after));
      if (!r.ok()) return false;
      for (const auto& e : (*r)["environments"]) {
        if (!e["ready"].get<bool>() || e["ready_instances"] != 5 || e["instances"] != 5 || e["apps"] != 3)
          return false;
        seen.push_back(e["environment"]);
      }
      if ((*r)["next"].is_null()) break;
      after = (*r)["next"];
    }
    return true;
  })) << d.status("env-4").dump(2);
  EXPECT_EQ(seen, (std::vector<std::string>{"env-0", "env-1", "env-2", "env-3", "env-4"}));
  auto full = d.api().get("/v1/environments?limit=1&after=env-3");
  ASSERT_TRUE(full.ok());
  ASSERT_EQ((*full)["environments"].size(), 1u);
  EXPECT_EQ((*full)["environments"][0]["apps"].size(), 3u);  // the full form by default
  EXPECT_TRUE((*full)["next"].is_null());
  auto bad = d.api().get("/v1/environments?limit=0");
  EXPECT_FALSE(bad.ok());
  // Each simulated instance has its own stable address, as a real one would.
  auto s = d.status("env-2");
  std::set<std::string> ips;
  for (const auto& a : s["apps"])
    for (const auto& i : a["instances"]) ips.insert(i["ip"].get<std::string>());
  EXPECT_EQ(ips.size(), 5u);
}

TEST(Core, TheDaemonsOpenFilesLimitMakesInstancesWaitNotCrashLoop) {
  // The daemon's open files limit lowered under it (prlimit) to about 30 descriptors more than
  // it holds: an environment of 40 instances, each holding a pidfd, hits it. Those that cannot
  // be launched wait, saying which limit and how to raise it, once; nothing crash-loops, no
  // restart is counted, the daemon keeps serving; once the limit is back, all come up.
  Daemon d("nofile");
  const std::string y = "network: {pool: 127.141.0.0/24}\n"
                        "defaults:\n"
                        "  command: berth-demo-svc --listen ${ip}:${port.http}\n"
                        "  ports: {http: 8080}\n"
                        "  health: {type: http, path: /healthcheck, start_interval: 50ms, interval: 1s}\n"
                        "  env: {DEMO_WARMUP_MS: \"0\"}\n"
                        "apps:\n  svc: {instances: 40}\n"
                        "environments:\n  fleet: {}\n";
  ASSERT_EQ(d.apply(y).exit_code, 0);
  ASSERT_TRUE(d.api().get("/v1/environments/fleet").ok());  // (its connection is open before the limit)
  const auto held = std::distance(std::filesystem::directory_iterator(fmt::format("/proc/{}/fd", d.pid())),
                                  std::filesystem::directory_iterator());
  rlimit was{};
  ASSERT_EQ(::prlimit(d.pid(), RLIMIT_NOFILE, nullptr, &was), 0);
  rlimit low = was;
  low.rlim_cur = static_cast<rlim_t>(held + 30);
  ASSERT_EQ(::prlimit(d.pid(), RLIMIT_NOFILE, &low, nullptr), 0);
  ASSERT_TRUE(d.api().post("/v1/environments/fleet/up").ok());

  auto count = [&](const json& s, const std::string& state) {
    int n = 0;
    for (const auto& i : app_of(s, "svc")["instances"]) n += i["state"] == state ? 1 : 0;
    return n;
  };
  json s;
  std::string unanswered;  // the last failed read, if the last one failed
  ASSERT_TRUE(wait_until([&] {
    auto r = d.api().get("/v1/environments/fleet");
    unanswered = r.ok() ? "" : r.error().message;
    if (!r.ok()) return false;
    s = *r;
    return count(s, "ready") > 0 && count(s, "waiting") > 0 && count(s, "ready") + count(s, "waiting") == 40;
  }, std::chrono::seconds(60))) << "ready " << count(s, "ready") << ", waiting " << count(s, "waiting")
                                << "; the last read: " << (unanswered.empty() ? "answered" : unanswered)
                                << "; an instance: " << (s.is_null() ? "none read" : app_of(s, "svc")["instances"][0].dump());
  for (const auto& i : app_of(s, "svc")["instances"])
    if (i["state"] == "waiting") {
      EXPECT_THAT(i["message"].get<std::string>(), HasSubstr("berth's open files limit"));
      EXPECT_THAT(i["message"].get<std::string>(), HasSubstr("ulimit -n"));
    }
  // The scenario, not a wait for state: two retry periods (5 s each) at the limit. All along,
  // the last descriptors stay free (16 kept at this limit; a probe or two may be in flight).
  long most = 0;
  (void)wait_until([&] {  // (sampled for the whole period: the condition never holds)
    most = std::max<long>(most, std::distance(std::filesystem::directory_iterator(fmt::format("/proc/{}/fd", d.pid())),
                                              std::filesystem::directory_iterator()));
    return false;
  }, std::chrono::seconds(11));
  EXPECT_LE(most, static_cast<long>(low.rlim_cur) - 8) << "of " << low.rlim_cur;
  EXPECT_EQ(::kill(d.pid(), 0), 0);  // the daemon runs
  // ...and takes new API connections: the last descriptors are kept for them and the probes.
  for (int i = 0; i < 3; ++i) {
    berth::client::Client fresh(d.address(), d.admin_token());
    auto r = fresh.get("/v1/environments/fleet");
    EXPECT_TRUE(r.ok()) << r.error().message;
  }

  ASSERT_EQ(::prlimit(d.pid(), RLIMIT_NOFILE, &was, nullptr), 0);
  ASSERT_TRUE(wait_until([&] { return all_ready(d, "fleet"); }, std::chrono::seconds(60))) << d.status("fleet").dump(2);
  std::map<int, int> waits;
  int failed = 0;
  for (const auto& e : d.events("fleet")) {
    if (e["app"] != "svc" || e["ordinal"].is_null()) continue;
    if (e["type"] == "waiting") ++waits[e["ordinal"].get<int>()];
    if (e["type"] == "start-failed" || e["type"] == "restarting" || e["type"] == "exited") ++failed;
  }
  EXPECT_FALSE(waits.empty());  // the limit was hit
  for (const auto& [ordinal, n] : waits) EXPECT_EQ(n, 1) << "instance " << ordinal;
  EXPECT_EQ(failed, 0);
  const auto status = d.status("fleet");  // (app_of refers into it: it must outlive the loop)
  for (const auto& i : app_of(status, "svc")["instances"]) EXPECT_EQ(i["restarts"], 0);
}
