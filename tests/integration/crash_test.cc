// The crash campaign: the daemon SIGKILLed at random moments while it brings an environment up
// (with a build from source), rolls out a changed setting, restarts every instance one at a
// time and brings it down. After each kill it is started again and must converge, and then the
// process table and `status` must show the desired instances exactly — one process per instance,
// none after down — every address unique, in the pool, not excluded, and the same as before the
// kill. CI runs 15 kills; tests/crash_campaign.sh runs more (BERTH_CRASH_KILLS) and the seed
// (BERTH_CRASH_SEED) replays a run.
//
// Its second test does the same for database copies (a real MariaDB per copy): kills while an
// environment's copy is made and its server starts (up), while a copy is reset (berth db clone:
// the server stopped, the copy discarded and made again, the new server started) and while it
// goes down. After each kill: converged, exactly one mariadbd per copy that should run and none
// after down, each copy's server answers with the standard's data and exactly the rows written
// since its last reset, its address unchanged, and no copy directory or overlay mount beyond the
// copies the status lists. CI runs 6 kills (BERTH_CRASH_DB_KILLS sets more).
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "harness.h"
#include "model/catalog.h"
#include "model/network.h"

using namespace berth::it;
using nlohmann::json;

namespace {

int env_int(const char* name, int def) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : def;
}

struct Counts {
  int kills = 0, converged = 0, instances_checked = 0, addresses_checked = 0;
};

namespace fs = std::filesystem;

// Run a shell command; returns its exit status and stdout (trailing newlines removed).
std::pair<int, std::string> shell(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return {-1, ""};
  char buf[4096];
  while (std::size_t got = std::fread(buf, 1, sizeof buf, p)) out.append(buf, got);
  int st = ::pclose(p);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

// A mariadbd process whose data directory is under `under`, from the process table.
struct Server {
  pid_t pid, pgid;
  std::string datadir, bind;
};
std::vector<Server> mariadb_servers(const std::string& under) {
  std::vector<Server> out;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    if (read_file((entry.path() / "comm").string()) != "mariadbd\n") continue;
    std::string stat = read_file((entry.path() / "stat").string());
    if (stat.find(") Z") != std::string::npos) continue;  // a zombie runs nothing
    const std::string cmdline = read_file((entry.path() / "cmdline").string());
    Server s{std::stoi(name), ::getpgid(std::stoi(name)), "", ""};
    for (std::size_t i = 0; i < cmdline.size();) {
      std::size_t end = cmdline.find('\0', i);
      if (end == std::string::npos) end = cmdline.size();
      const std::string arg = cmdline.substr(i, end - i);
      if (arg.starts_with("--datadir=")) s.datadir = arg.substr(10);
      if (arg.starts_with("--bind-address=")) s.bind = arg.substr(15);
      i = end + 1;
    }
    if (s.datadir.starts_with(under + "/")) out.push_back(s);
  }
  return out;
}

// Mount points under `under` (overlay copies of databases), one entry per mount.
std::vector<std::string> mounts_under(const std::string& under) {
  std::vector<std::string> out;
  std::ifstream in("/proc/self/mountinfo");
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::string id, parent, dev, root, point;
    words >> id >> parent >> dev >> root >> point;
    if (point.starts_with(under + "/")) out.push_back(point);
  }
  return out;
}

}  // namespace

TEST(CrashCampaign, EveryKillConvergesToTheDesiredInstancesWithTheirAddresses) {
  const int kills = env_int("BERTH_CRASH_KILLS", 15);
  const unsigned seed = static_cast<unsigned>(env_int("BERTH_CRASH_SEED", static_cast<int>(std::random_device{}() & 0x7fffffff)));
  std::mt19937 random(seed);
  std::printf("crash campaign: %d kills, seed %u (BERTH_CRASH_SEED=%u replays it)\n", kills, seed, seed);

  const std::string base = example_catalog("127.114");
  auto parsed = berth::model::Catalog::parse(base, "berth.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  const berth::model::NetworkSpec net = parsed->network();

  Daemon d("crash");
  ASSERT_EQ(d.apply(base).exit_code, 0);
  std::map<std::string, std::string> address;  // app#n → its address, fixed once first seen
  Counts n;
  int variant = 0;

  // Converged: every instance the status wants is ready, one process each, addresses as known.
  auto check_up = [&](const char* phase) {
    ASSERT_TRUE(wait_until([&] {
      auto s = d.api().get("/v1/environments/baseline");
      return s.ok() && (*s)["ready"].get<bool>() && !(*s)["updating"].get<bool>();
    }, std::chrono::seconds(90))) << phase << ": did not converge\n" << d.status("baseline").dump(1);
    auto s = d.status("baseline");
    std::map<std::string, std::string> wanted;  // app#n → ip, from the status
    for (const auto& a : s["apps"]) {
      if (a["runs_in"] != "baseline") continue;
      for (const auto& i : a["instances"])
        if (i["state"] != "completed") wanted[fmt::format("{}#{}", a["app"].get<std::string>(), i["ordinal"].get<int>())] = i["ip"];
    }
    std::map<std::string, int> running;
    std::set<std::string> ips;
    for (const auto& p : d.processes()) {
      if (p.env != "baseline") continue;
      const std::string k = p.app + "#" + p.instance;
      ++running[k];
      EXPECT_TRUE(ips.insert(p.ip).second) << phase << ": " << p.ip << " held twice";
      auto ip = berth::model::parse_ipv4(p.ip);
      EXPECT_TRUE(ip && net.usable(*ip)) << phase << ": " << p.ip << " is not a usable pool address";
      ++n.addresses_checked;
    }
    for (const auto& [k, ip] : wanted) {
      EXPECT_EQ(running[k], 1) << phase << ": " << k << " has " << running[k] << " processes";
      if (auto it = address.find(k); it != address.end()) EXPECT_EQ(ip, it->second) << phase << ": " << k << " moved";
      else address[k] = ip;
      ++n.instances_checked;
    }
    for (const auto& [k, count] : running) EXPECT_TRUE(wanted.count(k)) << phase << ": " << k << " runs but is not wanted";
    ++n.converged;
  };
  auto check_down = [&](const char* phase) {
    ASSERT_TRUE(wait_until([&] {
      for (const auto& p : d.processes())
        if (p.env == "baseline") return false;
      return true;
    }, std::chrono::seconds(60))) << phase << ": processes left after down";
    ++n.converged;
  };
  auto kill_soon = [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 1200)(random)));
    d.kill9();
    ++n.kills;
    d.start();
  };

  for (int k = 0; k < kills && !HasFatalFailure(); ++k) {
    switch (k % 4) {
      case 0:  // up (its first wave, the build of orders from source, later waves)
        ASSERT_EQ(d.cli({"up", "baseline", "--no-wait"}).exit_code, 0);
        kill_soon();
        check_up("up");
        break;
      case 1: {  // a changed setting rolled out instance by instance
        std::string changed = replaced(base, "DEMO_WARMUP_MS: \"600\"", fmt::format("DEMO_WARMUP_MS: \"{}\"", 601 + variant++));
        ASSERT_EQ(d.apply(changed).exit_code, 0);
        kill_soon();
        check_up("rolling apply");
        break;
      }
      case 2:  // every instance restarted, one at a time
        ASSERT_TRUE(d.api().post("/v1/environments/baseline/restart").ok());
        kill_soon();
        check_up("restart");
        break;
      case 3:  // down: nothing may be left, and the next up gets the same addresses back
        ASSERT_EQ(d.cli({"down", "baseline", "--no-wait"}).exit_code, 0);
        kill_soon();
        check_down("down");
        break;
    }
  }
  std::printf("crash campaign: %d kills, %d convergences checked, %d instance checks, %d address checks, seed %u\n",
              n.kills, n.converged, n.instances_checked, n.addresses_checked, seed);
}

TEST(CrashCampaign, DatabaseCopiesSurviveKillsDuringUpCloneAndDown) {
  const int kills = env_int("BERTH_CRASH_DB_KILLS", 6);
  const unsigned seed = static_cast<unsigned>(env_int("BERTH_CRASH_SEED", static_cast<int>(std::random_device{}() & 0x7fffffff)));
  std::mt19937 random(seed);
  std::printf("crash campaign (databases): %d kills, seed %u (BERTH_CRASH_SEED=%u replays it)\n", kills, seed, seed);

  // e1 goes through up, berth db clone and down; e2 stays up throughout, beside it.
  const std::string catalog = R"(network:
  pool: 127.123.0.0/24
databases:
  shopdb:
    standard: shop
    options: {innodb_buffer_pool_size: 32M, innodb_log_file_size: 16M}
apps:
  orders:
    command: sleep 100000
    depends_on: [shopdb]
environments:
  e1: {}
  e2: {}
)";
  auto parsed = berth::model::Catalog::parse(catalog, "berth.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  const berth::model::NetworkSpec net = parsed->network();

  Daemon d("crash-db");
  const std::string under = d.data_dir();
  const std::string copies_dir = under + "/db/copies";
  // The shop's standard (examples/shop/standard.sql), imported from a dump inside the directory
  // the daemon may import from.
  fs::copy_file(std::string(SOURCE_DIR) + "/examples/shop/standard.sql", under + "/standard.sql");
  auto imported = d.cli({"db", "import", "shop", "--from-dump", under + "/standard.sql", "-q"});
  ASSERT_EQ(imported.exit_code, 0) << "importing the standard: " << imported.out << imported.err;
  ASSERT_EQ(d.apply(catalog).exit_code, 0);
  auto e2_up = d.cli({"up", "e2", "-q"});
  ASSERT_EQ(e2_up.exit_code, 0) << "up e2: " << e2_up.out << e2_up.err << d.status("e2").dump(1);

  struct DbCounts {
    int kills = 0, converged = 0, clones = 0, clones_finished_before_kill = 0, processes_checked = 0, servers_checked = 0,
        addresses_checked = 0, sql_checks = 0, rows_checked = 0, copies_checked = 0, mounts_checked = 0;
  } n;
  std::set<std::string> up = {"e2"};
  std::map<std::string, std::set<int>> rows;   // env → rows written into its copy since its last reset
  std::map<std::string, std::string> address;  // env/app#n → its address, fixed once first seen
  int next_row = 1000001;

  auto sql = [&](const std::string& ip, const std::string& q) {
    auto [rc, out] =
        shell(fmt::format("mariadb --no-defaults --protocol=TCP -h {} -P 3306 -u berth -pberth -N -e \"{}\" 2>&1", ip, q));
    EXPECT_EQ(rc, 0) << "SQL on " << ip << " failed: " << q << ": " << out;
    return out;
  };
  auto db_ip = [&](const std::string& env) { return address[env + "/shopdb#0"]; };
  // A row written into the environment's copy: it must be there after every kill until the
  // copy is reset.
  auto write_row = [&](const std::string& env) {
    const int id = next_row++;
    sql(db_ip(env), fmt::format("INSERT INTO users.users VALUES ({0}, 'crash{0}@example.com', 'XX')", id));
    rows[env].insert(id);
  };

  // Converged and whole: the environment ready and not updating, one process per instance, one
  // mariadbd on its copy (the instance's), its address the one it had, the standard's data and
  // exactly the rows written since the copy was made.
  auto check_up = [&](const std::string& env, const std::string& phase) {
    ASSERT_TRUE(wait_until([&] {
      auto s = d.api().get("/v1/environments/" + env);
      return s.ok() && (*s)["ready"].get<bool>() && !(*s)["updating"].get<bool>();
    }, std::chrono::seconds(120))) << phase << ": " << env << " did not converge (ready, not updating)\n" << d.status(env).dump(1);
    auto s = d.status(env);
    std::map<std::string, std::string> wanted;  // app#n → ip
    int db_pid = 0;
    std::string datadir;
    for (const auto& a : s["apps"]) {
      ASSERT_EQ(a["runs_in"], env) << phase << ": " << a.dump();
      for (const auto& i : a["instances"])
        wanted[fmt::format("{}#{}", a["app"].get<std::string>(), i["ordinal"].get<int>())] = i["ip"];
      if (a["app"] == "shopdb") {
        db_pid = a["instances"][0]["pid"].is_null() ? 0 : a["instances"][0]["pid"].get<int>();
        ASSERT_TRUE(a.contains("database") && a["database"]["datadir"].is_string())
            << phase << ": " << env << "'s copy is not listed\n" << a.dump(1);
        datadir = a["database"]["datadir"];
        EXPECT_EQ(a["database"]["version"], 1) << phase << ": " << env;
      }
    }
    ASSERT_EQ(wanted.size(), 2u) << phase << ": " << s.dump(1);
    std::map<std::string, int> running;
    for (const auto& p : d.processes())
      if (p.env == env) {
        const std::string k = p.app + "#" + p.instance;
        ++running[k];
        if (wanted.count(k)) {
          EXPECT_EQ(p.ip, wanted.at(k))
              << phase << ": " << env << " " << k << " runs on " << p.ip << ", its status says " << wanted.at(k);
        }
        ++n.processes_checked;
      }
    for (const auto& [k, ip] : wanted) {
      EXPECT_EQ(running[k], 1) << phase << ": " << env << " " << k << " has " << running[k] << " processes";
      auto parsed_ip = berth::model::parse_ipv4(ip);
      EXPECT_TRUE(parsed_ip && net.usable(*parsed_ip))
          << phase << ": " << env << " " << k << " has " << ip << ", not a usable pool address";
      const std::string key = env + "/" + k;
      if (auto it = address.find(key); it != address.end()) EXPECT_EQ(ip, it->second) << phase << ": " << key << " moved";
      else address[key] = ip;
      ++n.addresses_checked;
    }
    for (const auto& [k, count] : running)
      EXPECT_TRUE(wanted.count(k)) << phase << ": " << env << " " << k << " runs but is not wanted";
    // One server on the copy: the instance's own (its process group), on the instance's address.
    std::vector<Server> on_copy;
    for (const auto& srv : mariadb_servers(under))
      if (srv.datadir == datadir) on_copy.push_back(srv);
    ASSERT_EQ(on_copy.size(), 1u) << phase << ": " << env << ": " << on_copy.size() << " mariadbd processes on " << datadir;
    EXPECT_EQ(on_copy[0].pgid, db_pid) << phase << ": " << env << "'s mariadbd (pid " << on_copy[0].pid
                                       << ") is not in the process group of the instance the status shows";
    EXPECT_EQ(on_copy[0].bind, address[env + "/shopdb#0"]) << phase << ": " << env << "'s mariadbd listens elsewhere";
    ++n.servers_checked;
    // The standard's data, and the rows written since the copy was made: no more, no fewer.
    EXPECT_EQ(sql(db_ip(env), "SELECT (SELECT COUNT(*) FROM catalog.products), (SELECT COUNT(*) FROM orders.orders), "
                              "(SELECT COUNT(*) FROM users.users WHERE id <= 5000)"),
              "20000\t100000\t5000")
        << phase << ": " << env << "'s copy does not hold the standard";
    std::string expected;
    for (int id : rows[env]) expected += (expected.empty() ? "" : ",") + std::to_string(id);
    EXPECT_EQ(sql(db_ip(env), "SELECT IFNULL(GROUP_CONCAT(id ORDER BY id), '') FROM users.users WHERE id > 5000"), expected)
        << phase << ": " << env << "'s copy has other rows than those written since its last reset";
    n.sql_checks += 2;
    n.rows_checked += static_cast<int>(rows[env].size());
    ++n.converged;
  };
  // Down: no process of the environment left, no server on its copy. Its copy stays (it is the
  // environment's data).
  auto check_down = [&](const std::string& env, const std::string& phase) {
    const std::string prefix = copies_dir + "/" + env + "/";
    ASSERT_TRUE(wait_until([&] {
      for (const auto& p : d.processes())
        if (p.env == env) return false;
      for (const auto& srv : mariadb_servers(under))
        if (srv.datadir.starts_with(prefix)) return false;
      return true;
    }, std::chrono::seconds(90))) << phase << ": processes of " << env << " left after down\n" << d.status(env).dump(1);
    ++n.converged;
  };
  // Across the daemon: addresses unique; no mariadbd but one per copy of an environment that is
  // up; no copy directory or overlay mount but those of the copies the status lists.
  auto check_all = [&](const std::string& phase) {
    std::set<std::string> ips;
    for (const auto& p : d.processes()) {
      EXPECT_TRUE(up.count(p.env))
          << phase << ": " << p.env << " " << p.app << "#" << p.instance << " runs but " << p.env << " is down";
      EXPECT_TRUE(ips.insert(p.ip).second) << phase << ": " << p.ip << " held twice";
    }
    std::map<std::string, std::string> listed;  // datadir → copy method
    for (const char* env : {"e1", "e2"}) {
      const json s = d.status(env);
      const json& a = app_of(s, "shopdb");
      EXPECT_TRUE(a.contains("database")) << phase << ": " << env << " shows no database shopdb\n" << s.dump(1);
      if (a.contains("database") && a["database"]["datadir"].is_string())
        listed[a["database"]["datadir"]] = a["database"]["copy_method"];
    }
    std::map<std::string, int> servers;
    for (const auto& srv : mariadb_servers(under)) ++servers[srv.datadir];
    for (const auto& [dir, count] : servers) {
      const bool wanted = listed.count(dir) && up.count(fs::path(dir).parent_path().parent_path().filename().string());
      EXPECT_TRUE(wanted && count == 1)
          << phase << ": " << count << " mariadbd on " << dir << (wanted ? "" : ", which should have none");
    }
    std::set<std::string> on_disk, expected;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(copies_dir, ec))
      for (const auto& c : fs::directory_iterator(e.path(), ec)) on_disk.insert(c.path().string());
    for (const auto& [dir, method] : listed) expected.insert(fs::path(dir).parent_path().string());
    EXPECT_EQ(on_disk, expected) << phase << ": the copy directories are not the copies the status lists";
    n.copies_checked += static_cast<int>(on_disk.size());
    std::map<std::string, int> mounted;
    for (const auto& m : mounts_under(under)) ++mounted[m];
    for (const auto& [dir, method] : listed)
      if (method == "overlay") {
        EXPECT_EQ(mounted[dir], 1) << phase << ": the overlay copy " << dir << " is mounted " << mounted[dir] << " times";
        ++n.mounts_checked;
      }
    for (const auto& [m, count] : mounted)
      EXPECT_TRUE(listed.count(m) && listed[m] == "overlay") << phase << ": " << m << " is mounted but is no copy the status lists";
  };
  auto pause = [&] { std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 2500)(random))); };
  auto restart = [&] {
    d.kill9();
    ++n.kills;
    d.start();
  };
  auto resets_audited = [&] {
    auto a = d.api().get("/v1/audit?env=e1&limit=100000");
    int count = 0;
    if (a.ok())
      for (const auto& e : *a) count += e["action"] == "db.reset";
    return a.ok() ? count : -1;
  };

  check_up("e2", "start");
  for (int k = 0; k < kills && !HasFatalFailure(); ++k) {
    const int step = k % 6;
    std::string phase;
    if (step == 0 || step == 3) {
      // up: at 0 its copy is made (after the first round: reset while down, so discarded at
      // once), then its server starts; at 3 the copy it kept across down serves again.
      phase = step == 0 ? "up making a copy" : "up on the kept copy";
      if (step == 0 && k > 0) {
        auto r = d.api().post("/v1/environments/e1/databases/shopdb/reset");
        ASSERT_TRUE(r.ok()) << "reset while down: " << r.error().message;
        rows["e1"].clear();
      }
      write_row("e2");
      ASSERT_EQ(d.cli({"up", "e1", "--no-wait"}).exit_code, 0);
      up.insert("e1");
      pause();
      restart();
    } else if (step == 1 || step == 4) {
      // berth db clone: the server stops, the copy is discarded and made again, a server starts
      // on it. Killed at a moment after the daemon acknowledged it (audited), so it must happen,
      // and once: the row written before is gone.
      phase = "db clone";
      write_row("e1");
      write_row("e2");
      const int before = resets_audited();
      ASSERT_GE(before, 0) << "reading the audit log";
      CliResult clone;
      std::thread cli([&] { clone = d.cli({"db", "clone", "shopdb", "--env", "e1", "-q"}); });
      const bool acknowledged = wait_until([&] { return resets_audited() > before; }, std::chrono::seconds(30));
      if (!acknowledged) {
        cli.join();
        FAIL() << "berth db clone was not acknowledged: " << clone.out << clone.err;
      }
      rows["e1"].clear();
      ++n.clones;
      pause();
      d.kill9();
      ++n.kills;
      cli.join();  // it ends once the daemon is gone (or it had finished)
      if (clone.exit_code == 0) ++n.clones_finished_before_kill;
      d.start();
    } else {
      phase = "down";
      write_row("e1");
      write_row("e2");
      ASSERT_EQ(d.cli({"down", "e1", "--no-wait"}).exit_code, 0);
      up.erase("e1");
      pause();
      restart();
    }
    phase += fmt::format(" (kill {})", k + 1);
    if (up.count("e1")) check_up("e1", phase);
    else check_down("e1", phase);
    check_up("e2", phase);
    check_all(phase);
  }
  std::printf("crash campaign (databases): %d kills (%d after berth db clone was acknowledged, %d of them once it had "
              "finished), %d convergences checked, %d process checks, %d mariadbd checks, %d address checks, %d SQL checks "
              "(%d written rows), %d copy directories and %d overlay mounts checked, seed %u\n",
              n.kills, n.clones, n.clones_finished_before_kill, n.converged, n.processes_checked, n.servers_checked,
              n.addresses_checked, n.sql_checks, n.rows_checked, n.copies_checked, n.mounts_checked, seed);
}
