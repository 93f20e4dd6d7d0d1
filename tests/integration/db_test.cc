// Standard databases against a real MariaDB: a golden server the test runs, imported by berth
// with mariadb-backup while it runs; each environment gets its own server on its own copy.
// Also: versions share chunks, a corrupt chunk on a cold host never yields a ready server, and
// the reflink path on an XFS loop image (root only; the default path here is overlayfs).
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <fstream>

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "blob/local/local_store.h"
#include "harness.h"

using namespace berth;
using namespace berth::it;
using testing::HasSubstr;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Run a shell command; returns its stdout (trailing newline removed) and exit status.
std::pair<int, std::string> sh(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return {-1, ""};
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  int st = ::pclose(p);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

// The golden: a MariaDB the test owns, on a unix socket only.
struct Golden {
  fs::path dir = fs::temp_directory_path() / fmt::format("berth-golden-{}", getpid());
  std::string sock() const { return (dir / "s.sock").string(); }
  pid_t pid = -1;
  std::string sql(const std::string& q) const {
    auto [rc, out] = sh(fmt::format("mariadb --no-defaults -uroot -S {} -N -e \"{}\" 2>&1", sock(), q));
    EXPECT_EQ(rc, 0) << q << ": " << out;
    return out;
  }
  void start() {
    fs::remove_all(dir);
    fs::create_directories(dir);
    auto [rc, out] = sh(fmt::format("mariadb-install-db --no-defaults --user=root --datadir={}/data "
                                    "--auth-root-authentication-method=socket --skip-test-db >{}/install.log 2>&1",
                                    dir.string(), dir.string()));
    ASSERT_EQ(rc, 0) << read_file(dir.string() + "/install.log");
    pid = fork();
    if (pid == 0) {
      std::string d = "--datadir=" + (dir / "data").string(), s = "--socket=" + sock(),
                  l = "--log-error=" + (dir / "err.log").string();
      execlp("mariadbd", "mariadbd", "--no-defaults", "--user=root", d.c_str(), s.c_str(), l.c_str(), "--skip-networking",
             "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M", static_cast<char*>(nullptr));
      _exit(127);
    }
    ASSERT_TRUE(wait_until([&] { return sh(fmt::format("mariadb --no-defaults -uroot -S {} -e 'SELECT 1' >/dev/null 2>&1", sock())).first == 0; },
                           std::chrono::seconds(60)))
        << read_file((dir / "err.log").string());
    // A few schemas: two with an indexed table of some size, several small ones.
    for (int s = 1; s <= 6; ++s) {
      sql(fmt::format("CREATE DATABASE app{0:02d}; CREATE TABLE app{0:02d}.items (id INT PRIMARY KEY, sku VARCHAR(32), "
                      "note VARCHAR(200), KEY k_sku(sku)) ENGINE=InnoDB; USE app{0:02d}; INSERT INTO items SELECT seq, "
                      "CONCAT('SKU-', seq MOD 977), REPEAT(MD5(seq), 5) FROM seq_1_to_{1}",
                      s, s <= 2 ? 60000 : 500));
    }
  }
  ~Golden() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
    }
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

std::string catalog(const std::string& prefix) {
  return fmt::format(R"(network:
  pool: {0}.0.0/24
databases:
  shopdb:
    standard: shop
    options: {{innodb_buffer_pool_size: 32M, innodb_log_file_size: 16M}}
apps:
  orders:
    command: sh -c 'echo "db url $BERTH_DB_SHOPDB_URL"; exec sleep 100000'
    depends_on: [shopdb]
environments:
  e1: {{}}
  e2: {{}}
  e3: {{}}
)",
                     prefix);
}

std::string query(const json& status, const std::string& q) {
  const std::string ip = app_of(status, "shopdb")["instances"][0]["ip"];
  auto [rc, out] = sh(fmt::format("mariadb --no-defaults --protocol=TCP -h {} -P 3306 -u berth -pberth -N -e \"{}\" 2>&1", ip, q));
  EXPECT_EQ(rc, 0) << q << ": " << out;
  return out;
}

// `berth db import shop` from the golden server; a failure says what the CLI said.
void import_golden(Daemon& d, const std::string& sock) {
  auto r = d.cli({"db", "import", "shop", "--from-server", sock, "--user", "root", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
}

// A small standard as an SQL dump in the daemon's data directory: inventory.stock, 1,234 rows
// (SUM(n) 761995). Returns its path.
std::string inventory_dump(Daemon& d) {
  const std::string dump = d.data_dir() + "/std.sql";
  std::ofstream(dump) << "CREATE DATABASE inventory; USE inventory;\n"
                         "CREATE TABLE stock (sku VARCHAR(20) PRIMARY KEY, n INT) ENGINE=InnoDB;\n"
                         "INSERT INTO stock SELECT CONCAT('s', seq), seq FROM seq_1_to_1234;\n";
  return dump;
}

bool ready(Daemon& d, const std::string& env) {
  auto s = d.status(env);
  return s["ready"].get<bool>();
}

}  // namespace

class Databases : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    golden_ = new Golden;
    golden_->start();
  }
  static void TearDownTestSuite() {
    delete golden_;
    golden_ = nullptr;
  }
  static Golden* golden_;
};
Golden* Databases::golden_ = nullptr;

TEST_F(Databases, ImportFromARunningServerThenIndependentCopiesPerEnvironment) {
  ASSERT_FALSE(HasFatalFailure());
  Daemon d("db-copies");
  ASSERT_EQ(d.apply(catalog("127.105")).exit_code, 0);
  // Before any import the database waits and says how to import.
  ASSERT_EQ(d.cli({"up", "e1", "--no-wait"}).exit_code, 0);
  ASSERT_TRUE(wait_until([&] { return app_of(d.status("e1"), "shopdb")["message"].get<std::string>().find("berth db import") != std::string::npos; }));

  auto imp = d.cli({"db", "import", "shop", "--from-server", golden_->sock(), "--user", "root"});
  ASSERT_EQ(imp.exit_code, 0) << imp.out << imp.err;
  EXPECT_THAT(imp.out, HasSubstr("shop@1"));
  ASSERT_TRUE(wait_until([&] { return ready(d, "e1"); }, std::chrono::seconds(120))) << d.status("e1").dump(2);
  ASSERT_EQ(d.cli({"up", "e2"}).exit_code, 0);
  auto s1 = d.status("e1"), s2 = d.status("e2");
  const auto& db1 = app_of(s1, "shopdb")["database"];
  EXPECT_EQ(db1["version"], 1);
  EXPECT_EQ(db1["copy_method"], ::geteuid() == 0 ? "overlay" : "copy");
  EXPECT_FALSE(db1["copy_ms"].is_null());
  // The app was told where its database is and how to log in.
  const std::string ip1 = app_of(s1, "shopdb")["instances"][0]["ip"];
  // (Its log: instances cannot write into the daemon's data directory.)
  std::string told;
  EXPECT_TRUE(wait_until([&] {
    told = read_file(d.data_dir() + "/logs/e1/orders.0.log");
    return told.find("db url") != std::string::npos;
  }));
  EXPECT_THAT(told, HasSubstr(fmt::format("db url mysql://berth:berth@{}:3306/\n", ip1)));

  EXPECT_EQ(query(s1, "SELECT COUNT(*) FROM app01.items"), "60000");
  query(s1, "INSERT INTO app01.items VALUES (1000001, 'only-in-e1', 'x')");
  EXPECT_EQ(query(s1, "SELECT COUNT(*) FROM app01.items WHERE id = 1000001"), "1");
  EXPECT_EQ(query(s2, "SELECT COUNT(*) FROM app01.items WHERE id = 1000001"), "0") << "e2's copy is its own";
  EXPECT_EQ(golden_->sql("SELECT COUNT(*) FROM app01.items WHERE id = 1000001"), "0") << "the golden is untouched";

  // The copy survives a restart of its server (it is the environment's data).
  ASSERT_EQ(d.cli({"down", "e1"}).exit_code, 0);
  ASSERT_EQ(d.cli({"up", "e1"}).exit_code, 0);
  EXPECT_EQ(query(d.status("e1"), "SELECT COUNT(*) FROM app01.items WHERE id = 1000001"), "1");

  // A fresh copy on request.
  auto cl = d.cli({"db", "clone", "shopdb", "--env", "e1"});
  ASSERT_EQ(cl.exit_code, 0) << cl.out << cl.err;
  EXPECT_EQ(query(d.status("e1"), "SELECT COUNT(*) FROM app01.items WHERE id = 1000001"), "0");
  // Its server had stopped before the copy was deleted and made again at the same path.
  std::vector<std::string> order;
  for (const auto& e : d.events("e1"))
    if (e["app"] == "shopdb" && (e["type"] == "stopped" || e["type"] == "db-reset")) order.push_back(e["type"]);
  ASSERT_GE(order.size(), 2u);
  EXPECT_EQ(order[order.size() - 2], "stopped");
  EXPECT_EQ(order.back(), "db-reset");

  // A second version after a one-table change uploads a small part of the first.
  golden_->sql("UPDATE app03.items SET note = 'changed' WHERE id <= 50");
  auto imp2 = d.cli({"db", "import", "shop", "--from-server", golden_->sock(), "--user", "root", "-q"});
  ASSERT_EQ(imp2.exit_code, 0) << imp2.err;
  auto versions = d.api().get("/v1/standards/shop");
  ASSERT_TRUE(versions.ok());
  const auto& v = (*versions)["versions"];
  ASSERT_EQ(v.size(), 2u);
  const auto up1 = v[0]["uploaded_bytes"].get<std::uint64_t>(), up2 = v[1]["uploaded_bytes"].get<std::uint64_t>();
  std::printf("version 1: %llu bytes, uploaded %llu; version 2 uploaded %llu (%.1f%%)\n",
              static_cast<unsigned long long>(v[0]["bytes"].get<std::uint64_t>()), static_cast<unsigned long long>(up1),
              static_cast<unsigned long long>(up2), 100.0 * static_cast<double>(up2) / static_cast<double>(up1));
  EXPECT_LT(up2 * 4, up1);
  // e1 stays on version 1 (its data is its own) until asked.
  EXPECT_EQ(app_of(d.status("e1"), "shopdb")["database"]["version"], 1);
  auto rm = d.cli({"db", "rm", "shop@1"});
  EXPECT_NE(rm.exit_code, 0);
  EXPECT_THAT(rm.err, HasSubstr("in use by environment"));
}

TEST_F(Databases, ACorruptChunkOnAColdHostIsNamedAndNoServerIsReady) {
  ASSERT_FALSE(HasFatalFailure());
  Daemon d("db-corrupt");
  ASSERT_EQ(d.apply(catalog("127.106")).exit_code, 0);
  auto imp = d.cli({"db", "import", "shop", "--from-server", golden_->sock(), "--user", "root", "-q"});
  ASSERT_EQ(imp.exit_code, 0) << imp.err;
  // Make this host cold (no golden) and damage one chunk of the biggest table in the store.
  fs::remove_all(d.data_dir() + "/db/golden/shop@1");
  auto versions = d.api().get("/v1/standards/shop");
  ASSERT_TRUE(versions.ok());
  blob::LocalStore store(d.data_dir() + "/blobs");
  auto manifest = store.get((*versions)["versions"][0]["manifest"].get<std::string>());
  ASSERT_TRUE(manifest.ok());
  auto m = json::parse(manifest->begin(), manifest->end());
  std::string victim, pack;
  std::size_t at = 0;
  for (const auto& e : m["entries"])
    if (e["path"] == "app01/items.ibd") {
      const auto& c = e["chunks"][0];
      victim = c["hash"];
      ASSERT_TRUE(c.contains("p")) << "standards are stored in packs";
      pack = m["packs"][c["p"].get<std::size_t>()];
      at = c["o"].get<std::size_t>() + c["l"].get<std::size_t>() / 2;
    }
  ASSERT_FALSE(victim.empty());
  {
    std::fstream f(store.path_of(pack), std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<long>(at));
    char b = 0;
    f.get(b);
    f.seekp(static_cast<long>(at));
    f.put(static_cast<char>(b ^ 0x55));
  }
  ASSERT_EQ(d.cli({"up", "e1", "--no-wait"}).exit_code, 0);
  ASSERT_TRUE(wait_until([&] {
    return app_of(d.status("e1"), "shopdb")["message"].get<std::string>().find(victim) != std::string::npos;
  }, std::chrono::seconds(60))) << d.status("e1").dump(2);
  auto s = d.status("e1");
  const auto& db = app_of(s, "shopdb");
  EXPECT_THAT(db["message"].get<std::string>(), HasSubstr("app01/items.ibd"));
  EXPECT_TRUE(db["instances"][0]["pid"].is_null()) << "no server runs on a bad copy";
  EXPECT_NE(db["state"], "ready");
  EXPECT_EQ(app_of(s, "orders")["state"], "waiting");
  EXPECT_FALSE(fs::exists(d.data_dir() + "/db/golden/shop@1"));
  EXPECT_FALSE(fs::exists(d.data_dir() + "/db/copies/e1/shopdb"));
  EXPECT_FALSE(fs::exists(d.data_dir() + "/db/cache/shop@1")) << "no cached copy of the bad object";
}

TEST_F(Databases, OnXfsWithReflinkCopiesAreReflinks) {
  ASSERT_FALSE(HasFatalFailure());
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount an XFS loop image";
  const fs::path img = fs::temp_directory_path() / fmt::format("berth-xfs-{}.img", getpid());
  const fs::path mnt = fs::temp_directory_path() / fmt::format("berth-xfs-{}", getpid());
  fs::create_directories(mnt);
  ASSERT_EQ(sh(fmt::format("truncate -s 2G {0} && mkfs.xfs -q -f -m reflink=1 {0} && mount -o loop {0} {1}", img.string(),
                           mnt.string())).first,
            0);
  {
    Daemon d("db-reflink", {"--db-dir", mnt.string()});
    ASSERT_EQ(d.apply(catalog("127.107")).exit_code, 0);
    ASSERT_NO_FATAL_FAILURE(import_golden(d, golden_->sock()));
    auto up = d.cli({"up", "e1"});
    ASSERT_EQ(up.exit_code, 0) << up.err;
    auto s = d.status("e1");
    EXPECT_EQ(app_of(s, "shopdb")["database"]["copy_method"], "reflink");
    EXPECT_EQ(query(s, "SELECT COUNT(*) FROM app01.items"), "60000");
    auto table = d.cli({"status", "e1"});
    EXPECT_THAT(table.out, HasSubstr("reflink"));
    // A cold host (no golden): the golden and e2's copy are restored at once.
    fs::remove_all(mnt / "golden" / "shop@1");
    ASSERT_EQ(d.cli({"up", "e2"}).exit_code, 0);
    auto s2 = d.status("e2");
    EXPECT_EQ(app_of(s2, "shopdb")["database"]["copy_method"], "restore");
    EXPECT_GT(app_of(s2, "shopdb")["database"]["copy_ms"].get<long>(), 0);
    EXPECT_EQ(query(s2, "SELECT COUNT(*) FROM app01.items"), "60000");
    // Once its server is ready, the host's golden is restored from the objects cached meanwhile,
    // and the next copy is a reflink again.
    ASSERT_TRUE(wait_until([&] { return fs::exists(mnt / "golden" / "shop@1" / "app01" / "items.ibd"); }));
    ASSERT_TRUE(wait_until([&] { return !fs::exists(mnt / "cache" / "shop@1"); }));
    ASSERT_EQ(d.cli({"up", "e3"}).exit_code, 0);
    EXPECT_EQ(app_of(d.status("e3"), "shopdb")["database"]["copy_method"], "reflink");
  }
  ::umount2(mnt.c_str(), MNT_DETACH);
  fs::remove_all(mnt);
  fs::remove(img);
}

TEST_F(Databases, ImportFromADumpAndFromAStoppedDataDirectory) {
  ASSERT_FALSE(HasFatalFailure());
  Daemon d("db-sources");
  const std::string dump = inventory_dump(d);
  auto imp = d.cli({"db", "import", "inv", "--from-dump", dump});
  ASSERT_EQ(imp.exit_code, 0) << imp.out << imp.err;
  EXPECT_THAT(imp.out, HasSubstr("inv@1"));
  // A stopped server's data directory: the golden of inv@1 is one.
  auto imp2 = d.cli({"db", "import", "inv2", "--from-datadir", d.data_dir() + "/db/golden/inv@1"});
  ASSERT_EQ(imp2.exit_code, 0) << imp2.out << imp2.err;
  auto listed = d.cli({"db", "versions"});
  EXPECT_THAT(listed.out, HasSubstr("dump " + dump));
  EXPECT_THAT(listed.out, HasSubstr("datadir "));
  // Both serve copies that answer.
  std::string cat = replaced(catalog("127.108"), "standard: shop", "standard: inv2");
  ASSERT_EQ(d.apply(cat).exit_code, 0);
  ASSERT_EQ(d.cli({"up", "e1"}).exit_code, 0);
  EXPECT_EQ(query(d.status("e1"), "SELECT SUM(n) FROM inventory.stock"), "761995");
  // Bad input is refused with the reason, and nothing is recorded.
  auto missing = d.cli({"db", "import", "inv", "--from-dump", d.data_dir() + "/nonexistent.sql"});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_THAT(missing.err, HasSubstr("/nonexistent.sql does not exist"));
  // Outside the directories the daemon may import from: refused before anything is read, and
  // whether the path exists is not told.
  for (const char* outside : {"/etc/shadow", "/nonexistent.sql", "/tmp/../etc/passwd"}) {
    auto refused = d.cli({"db", "import", "inv", "--from-dump", outside});
    EXPECT_NE(refused.exit_code, 0);
    EXPECT_THAT(refused.err, HasSubstr("read only from the directories the daemon was started with"));
    EXPECT_THAT(refused.err, testing::Not(HasSubstr("root:")));
  }
  auto not_datadir = d.cli({"db", "import", "inv3", "--from-datadir", d.data_dir() + "/logs"});
  EXPECT_NE(not_datadir.exit_code, 0);
  EXPECT_THAT(not_datadir.err, HasSubstr("is not a MariaDB data directory"));
  auto bad_name = d.cli({"db", "import", "Inv_1", "--from-dump", dump});
  EXPECT_NE(bad_name.exit_code, 0);
  EXPECT_THAT(bad_name.err, HasSubstr("lowercase letters, digits and '-'"));
  auto versions = d.api().get("/v1/standards/inv");
  ASSERT_TRUE(versions.ok());
  EXPECT_EQ((*versions)["versions"].size(), 1u);
}

TEST_F(Databases, ADiskFullDuringACopyLeavesNothingAndOtherAppsRun) {
  ASSERT_FALSE(HasFatalFailure());
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a small filesystem";
  const fs::path mnt = fs::temp_directory_path() / fmt::format("berth-full-{}", getpid());
  fs::create_directories(mnt);
  ASSERT_EQ(sh(fmt::format("mount -t tmpfs -o size=1G tmpfs {}", mnt.string())).first, 0);
  {
    Daemon d("db-full", {"--db-dir", mnt.string(), "--db-no-overlay"});
    std::string cat = replaced(catalog("127.109"), "apps:\n", "apps:\n  clock:\n    command: sleep 100000\n");
    ASSERT_EQ(d.apply(cat).exit_code, 0);
    ASSERT_NO_FATAL_FAILURE(import_golden(d, golden_->sock()));
    // Leave 20 MB: the golden is far larger, so copying it runs out of space.
    auto [rc, avail] = sh(fmt::format("df -B1 --output=avail {} | tail -1", mnt.string()));
    ASSERT_EQ(rc, 0);
    ASSERT_EQ(sh(fmt::format("fallocate -l {} {}/filler", std::stoull(avail) - (20ull << 20), mnt.string())).first, 0);
    ASSERT_EQ(d.cli({"up", "e1", "--no-wait"}).exit_code, 0);
    ASSERT_TRUE(wait_until([&] {
      return app_of(d.status("e1"), "shopdb")["message"].get<std::string>().find("No space left") != std::string::npos;
    }, std::chrono::seconds(60))) << d.status("e1").dump(2);
    auto s = d.status("e1");
    EXPECT_TRUE(app_of(s, "shopdb")["instances"][0]["pid"].is_null());
    EXPECT_TRUE(app_of(s, "shopdb")["database"]["version"].is_null());
    EXPECT_FALSE(fs::exists(mnt / "copies" / "e1" / "shopdb")) << "nothing half-made is left";
    EXPECT_TRUE(wait_until([&] { return app_of(d.status("e1"), "clock")["state"] == "ready"; })) << "other apps run";
    EXPECT_EQ(app_of(d.status("e1"), "orders")["state"], "waiting");
    auto events = d.cli({"events", "e1"});
    EXPECT_THAT(events.out, HasSubstr("db-copy-failed"));
  }
  ::umount2(mnt.c_str(), MNT_DETACH);
  fs::remove_all(mnt);
}

TEST_F(Databases, AServerThatCannotStartOnItsCopySaysWhyAndOtherAppsRun) {
  ASSERT_FALSE(HasFatalFailure());
  Daemon d("db-badstart");
  std::string cat = replaced(catalog("127.110"), "innodb_log_file_size: 16M", "innodb_log_file_size: 16M, no_such_option: 1");
  cat = replaced(cat, "apps:\n", "apps:\n  clock:\n    command: sleep 100000\n");
  ASSERT_EQ(d.apply(cat).exit_code, 0);
  ASSERT_NO_FATAL_FAILURE(import_golden(d, golden_->sock()));
  ASSERT_EQ(d.cli({"up", "e1", "--no-wait"}).exit_code, 0);
  ASSERT_TRUE(wait_until([&] { return app_of(d.status("e1"), "shopdb")["instances"][0]["restarts"].get<int>() >= 1; }))
      << d.status("e1").dump(2);
  ASSERT_TRUE(wait_until([&] { return app_of(d.status("e1"), "clock")["state"] == "ready"; }));
  auto s = d.status("e1");
  EXPECT_NE(app_of(s, "shopdb")["state"], "ready");
  EXPECT_EQ(app_of(s, "orders")["state"], "waiting");
  auto log = d.cli({"logs", "e1", "shopdb"});
  EXPECT_THAT(log.out, HasSubstr("no-such-option")) << "the server's own words are in its log";
  EXPECT_THAT(d.cli({"events", "e1"}).out, HasSubstr("exited"));
}

TEST_F(Databases, AResetAcknowledgedBeforeTheDaemonIsKilledIsStillDoneAndOnce) {
  ASSERT_FALSE(HasFatalFailure());
  Daemon d("db-reset-kill");
  ASSERT_EQ(d.apply(catalog("127.124")).exit_code, 0);
  ASSERT_NO_FATAL_FAILURE(import_golden(d, golden_->sock()));
  auto up = d.cli({"up", "e1"});
  ASSERT_EQ(up.exit_code, 0) << up.out << up.err;
  const std::string ip = app_of(d.status("e1"), "shopdb")["instances"][0]["ip"];
  query(d.status("e1"), "INSERT INTO app01.items VALUES (1000001, 'before-the-reset', 'x')");
  // berth db clone's request, acknowledged; the daemon killed at once, while the old server is
  // still shutting down. Before, the request lived only in the loop's memory: the restarted
  // daemon kept the copy and started a server on it again, the row still there.
  auto reset = d.api().post("/v1/environments/e1/databases/shopdb/reset");
  ASSERT_TRUE(reset.ok()) << reset.error().message;
  d.kill9();
  d.start();
  ASSERT_TRUE(wait_until([&] {
    auto s = d.status("e1");
    return s["ready"].get<bool>() && !s["updating"].get<bool>();
  }, std::chrono::seconds(120))) << d.status("e1").dump(2);
  auto s = d.status("e1");
  EXPECT_EQ(app_of(s, "shopdb")["instances"][0]["ip"], ip) << "the database kept its address";
  EXPECT_EQ(query(s, "SELECT COUNT(*) FROM app01.items WHERE id = 1000001"), "0") << "the copy was reset";
  EXPECT_EQ(query(s, "SELECT COUNT(*) FROM app01.items"), "60000");
  // Once: a row written into the fresh copy survives the next restart of the daemon.
  query(s, "INSERT INTO app01.items VALUES (1000002, 'after-the-reset', 'x')");
  d.kill9();
  d.start();
  ASSERT_TRUE(wait_until([&] {
    auto st = d.status("e1");
    return st["ready"].get<bool>() && !st["updating"].get<bool>();
  }, std::chrono::seconds(120))) << d.status("e1").dump(2);
  EXPECT_EQ(query(d.status("e1"), "SELECT COUNT(*) FROM app01.items WHERE id = 1000002"), "1") << "the fresh copy was kept";
  int servers = 0;
  for (const auto& p : d.processes()) servers += p.env == "e1" && p.app == "shopdb";
  EXPECT_EQ(servers, 1);
}

// berth db release: migrations rehearsed on a copy of the last version and sealed as the next one
// only when every file succeeds; a failing file, an edited released one, leave the standard as
// it was. From a directory, and from a git repository at a branch.
TEST_F(Databases, AReleaseBecomesTheNextVersionOnlyWhenEveryMigrationSucceeds) {
  ASSERT_FALSE(HasFatalFailure());
  Daemon d("db-release");
  const std::string dump = inventory_dump(d);
  ASSERT_EQ(d.cli({"db", "import", "inv", "--from-dump", dump, "-q"}).exit_code, 0);
  const fs::path mig = d.data_dir() + "/migrations";
  fs::create_directories(mig);
  auto write = [&](const std::string& name, const std::string& text) { std::ofstream(mig / name) << text; };
  write("V1__add_refund_state.sql", "ALTER TABLE inventory.stock ADD COLUMN refund_state VARCHAR(10) NOT NULL DEFAULT 'none';\n");
  write("V2__index_n.sql", "CREATE INDEX k_n ON inventory.stock (n);\n");
  write("V3__returns.sql", "CREATE TABLE inventory.returns (id INT PRIMARY KEY, sku VARCHAR(20)) ENGINE=InnoDB;\n"
                           "INSERT INTO inventory.returns VALUES (1, 's1');\n");
  auto rel = d.cli({"db", "release", "inv", "--from", mig.string()});
  ASSERT_EQ(rel.exit_code, 0) << rel.out << rel.err;
  EXPECT_THAT(rel.out, HasSubstr("inv@2"));
  auto versions = d.api().get("/v1/standards/inv");
  ASSERT_TRUE(versions.ok());
  ASSERT_EQ((*versions)["versions"].size(), 2u);
  const auto& v2 = (*versions)["versions"][1];
  ASSERT_EQ(v2["migrations"].size(), 3u) << v2.dump();
  EXPECT_EQ(v2["migrations"][0]["file"], "V1__add_refund_state.sql");
  EXPECT_EQ(v2["migrations"][2]["released_in"], 2);

  // The golden of inv@2 as it is now: a failed release must leave every file of it alone.
  const std::string golden2 = d.data_dir() + "/db/golden/inv@2";
  auto sums = [&] { return sh(fmt::format("cd {} && find . -type f | sort | xargs sha256sum", golden2)).second; };
  const std::string before = sums();
  ASSERT_FALSE(before.empty());
  // A migration whose second statement fails after its first (DDL, committed at once) ran.
  write("V4__broken.sql", "ALTER TABLE inventory.stock ADD COLUMN broken INT;\nINSERT INTO inventory.nope VALUES (1);\n");
  auto bad = d.cli({"db", "release", "inv", "--from", mig.string()});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.err, HasSubstr("V4__broken.sql failed at line 2 (INSERT INTO inventory.nope VALUES (1);)"));
  EXPECT_THAT(bad.err, HasSubstr("doesn't exist"));
  EXPECT_EQ((*d.api().get("/v1/standards/inv"))["versions"].size(), 2u) << "a failed release is not sealed";
  EXPECT_EQ(sums(), before);
  EXPECT_FALSE(fs::exists(d.data_dir() + "/db/golden/inv@3.import"));
  // An edited released migration: refused with both checksums.
  fs::remove(mig / "V4__broken.sql");
  write("V1__add_refund_state.sql", "ALTER TABLE inventory.stock ADD COLUMN refund_state VARCHAR(20);\n");
  auto edited = d.cli({"db", "release", "inv", "--from", mig.string()});
  EXPECT_NE(edited.exit_code, 0);
  EXPECT_THAT(edited.err, HasSubstr("V1__add_refund_state.sql changed since version 2 of 'inv' released it: its checksum was"));
  write("V1__add_refund_state.sql", "ALTER TABLE inventory.stock ADD COLUMN refund_state VARCHAR(10) NOT NULL DEFAULT 'none';\n");

  // From a repository the DBAs release to: its branch, the migrations in a subdirectory.
  const std::string repo = d.data_dir() + "/dba-repo";
  fs::create_directories(repo + "/sql");
  for (const auto& e : fs::directory_iterator(mig)) fs::copy_file(e.path(), repo + "/sql/" + e.path().filename().string());
  std::ofstream(repo + "/sql/V4__fixed.sql") << "ALTER TABLE inventory.stock ADD COLUMN fixed INT;\n";
  std::ofstream(repo + "/README") << "released by the DBAs\n";
  // (The repository's own HEAD is another branch: `release` is only origin/release in a clone.)
  ASSERT_EQ(sh(fmt::format("cd {} && git init -q -b main && git add README && git -c user.name=dba -c user.email=dba@x commit -qm "
                           "readme && git checkout -q -b release && git add -A && git -c user.name=dba -c user.email=dba@x "
                           "commit -qm r1 && git checkout -q main",
                           repo)).first, 0);
  auto from_repo = d.cli({"db", "release", "inv", "--from", repo + "@release", "--path", "sql", "-q"});
  ASSERT_EQ(from_repo.exit_code, 0) << from_repo.err;
  versions = d.api().get("/v1/standards/inv");
  ASSERT_EQ((*versions)["versions"].size(), 3u);
  EXPECT_THAT((*versions)["versions"][2]["source"].get<std::string>(), HasSubstr("@release"));

  // A copy of the last version has what every release added.
  std::string cat = replaced(catalog("127.109"), "standard: shop", "standard: inv");
  ASSERT_EQ(d.apply(cat).exit_code, 0);
  ASSERT_EQ(d.cli({"up", "e1"}).exit_code, 0);
  auto s = d.status("e1");
  EXPECT_EQ(app_of(s, "shopdb")["database"]["version"], 3);
  EXPECT_EQ(query(s, "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = 'inventory' AND table_name = "
                     "'stock' AND column_name IN ('refund_state', 'fixed', 'broken')"),
            "2");
  EXPECT_EQ(query(s, "SELECT sku FROM inventory.returns"), "s1");
  EXPECT_EQ(query(s, "SELECT COUNT(*) FROM inventory.stock WHERE refund_state = 'none'"), "1234");
}

TEST_F(Databases, ARolloutMigratesEveryCopyInPlaceAndPutsBackTheOneThatFails) {
  ASSERT_FALSE(HasFatalFailure());
  Daemon d("db-rollout");
  const std::string dump = inventory_dump(d);
  ASSERT_EQ(d.cli({"db", "import", "inv", "--from-dump", dump, "-q"}).exit_code, 0);
  // e1 takes every release at once (rollout: auto), e3 none; e2 as the catalog's default (manual).
  std::string cat = replaced(catalog("127.111"), "standard: shop", "standard: inv");
  cat = replaced(cat, "  e1: {}", "  e1: {apps: {shopdb: {rollout: auto}}}");
  cat = replaced(cat, "  e3: {}", "  e3: {}\n  e4: {apps: {shopdb: {rollout: none}}}");
  ASSERT_EQ(d.apply(cat).exit_code, 0);
  for (const char* env : {"e1", "e2", "e3", "e4"}) ASSERT_EQ(d.cli({"up", env}).exit_code, 0) << env;
  // Each environment's own data, which a rollout must keep; e2 made a table of its own that the
  // release's second file also makes; e3 is down while the rollout runs.
  for (const char* env : {"e1", "e2", "e3"})
    query(d.status(env), fmt::format("INSERT INTO inventory.stock VALUES ('own-{}', 7)", env));
  query(d.status("e2"), "CREATE TABLE inventory.returns (id INT PRIMARY KEY) ENGINE=InnoDB");
  ASSERT_EQ(d.cli({"down", "e3"}).exit_code, 0);

  const fs::path mig = d.data_dir() + "/migrations";
  fs::create_directories(mig);
  std::ofstream(mig / "V1__add_refund_state.sql")
      << "ALTER TABLE inventory.stock ADD COLUMN refund_state VARCHAR(10) NOT NULL DEFAULT 'none';\n";
  std::ofstream(mig / "V2__returns.sql") << "CREATE TABLE inventory.returns (id INT PRIMARY KEY, sku VARCHAR(20)) ENGINE=InnoDB;\n";
  ASSERT_EQ(d.cli({"db", "release", "inv", "--from", mig.string(), "-q"}).exit_code, 0);
  // The release reached e1 by itself.
  ASSERT_TRUE(wait_until([&] { return app_of(d.status("e1"), "shopdb")["database"]["version"] == 2 && ready(d, "e1"); },
                         std::chrono::seconds(120)))
      << d.status("e1").dump(2);
  auto shown = d.cli({"db", "rollout", "inv", "--show"});
  EXPECT_THAT(shown.out, HasSubstr("e1")) << shown.out;
  EXPECT_THAT(shown.out, HasSubstr("applied")) << shown.out;

  // Everyone else, by hand, the failure not stopping the rest.
  auto r = d.cli({"db", "rollout", "inv", "--continue-on-error", "-o", "json"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;  // a copy was put back
  json rows = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(rows.is_discarded()) << r.out << r.err;
  std::map<std::string, json> by_env;
  for (const auto& w : rows["rows"]) by_env[w["environment"]] = w;
  EXPECT_EQ(by_env["e1"]["state"], "skipped");
  EXPECT_EQ(by_env["e4"]["state"], "skipped");
  EXPECT_EQ(by_env["e4"]["phase"], "rollout: none in the catalog");
  EXPECT_EQ(by_env["e3"]["state"], "applied") << by_env["e3"].dump();
  ASSERT_EQ(by_env["e2"]["state"], "restored") << by_env["e2"].dump();
  EXPECT_THAT(by_env["e2"]["error"].get<std::string>(), HasSubstr("V2__returns.sql failed at line 1"));
  EXPECT_THAT(by_env["e2"]["error"].get<std::string>(), HasSubstr("already exists"));

  // e2: exactly as before — no new column although V1 had run, its own table and row there.
  ASSERT_TRUE(wait_until([&] { return ready(d, "e2"); }, std::chrono::seconds(60)));
  auto s2 = d.status("e2");
  EXPECT_EQ(app_of(s2, "shopdb")["database"]["version"], 1);
  EXPECT_EQ(app_of(s2, "shopdb")["database"]["pending_migrations"], 2);
  EXPECT_EQ(query(s2, "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = 'inventory' AND column_name = "
                      "'refund_state'"),
            "0");
  EXPECT_EQ(query(s2, "SELECT n FROM inventory.stock WHERE sku = 'own-e2'"), "7");
  bool told = false;
  for (const auto& e : d.events("e2")) told |= e["type"] == "db-rollout-failed" && e["app"] == "shopdb";
  EXPECT_TRUE(told) << "e2's apps were not told";
  // e1 (through its running server) and e3 (down: a private server): migrated, data kept.
  auto s1 = d.status("e1");
  EXPECT_EQ(query(s1, "SELECT refund_state FROM inventory.stock WHERE sku = 'own-e1'"), "none");
  EXPECT_EQ(query(s1, "SELECT COUNT(*) FROM inventory.returns"), "0");
  ASSERT_EQ(d.cli({"up", "e3"}).exit_code, 0);
  auto s3 = d.status("e3");
  EXPECT_EQ(app_of(s3, "shopdb")["database"]["version"], 2);
  EXPECT_EQ(app_of(s3, "shopdb")["database"]["pending_migrations"], 0);
  EXPECT_EQ(query(s3, "SELECT CONCAT(n, refund_state) FROM inventory.stock WHERE sku = 'own-e3'"), "7none");
  // e4 opted out: untouched.
  EXPECT_EQ(app_of(d.status("e4"), "shopdb")["database"]["version"], 1);
  // The table: each copy, from → to, state, and what happened.
  auto table = d.cli({"db", "rollout", "inv", "--show"});
  EXPECT_EQ(table.exit_code, 1);
  EXPECT_THAT(table.out, HasSubstr("put back: V2__returns.sql failed at line 1")) << table.out;
  EXPECT_THAT(table.out, HasSubstr("1 → 2")) << table.out;
  std::cout << table.out;
}

TEST_F(Databases, ADaemonKilledMidRolloutLeavesNoCopyBetweenVersions) {
  ASSERT_FALSE(HasFatalFailure());
  Daemon d("db-rollout-kill");
  const std::string dump = inventory_dump(d);
  ASSERT_EQ(d.cli({"db", "import", "inv", "--from-dump", dump, "-q"}).exit_code, 0);
  ASSERT_EQ(d.apply(replaced(catalog("127.112"), "standard: shop", "standard: inv")).exit_code, 0);
  for (const char* env : {"e1", "e2", "e3"}) ASSERT_EQ(d.cli({"up", env}).exit_code, 0) << env;
  // One file whose first statement commits before the second: a copy killed between them is
  // half-migrated unless it is put back.
  const fs::path mig = d.data_dir() + "/migrations";
  fs::create_directories(mig);
  std::ofstream(mig / "V1__two_columns.sql") << "ALTER TABLE inventory.stock ADD COLUMN a INT;\nDO SLEEP(4);\n"
                                                "ALTER TABLE inventory.stock ADD COLUMN b INT;\n";
  ASSERT_EQ(d.cli({"db", "release", "inv", "--from", mig.string(), "-q"}).exit_code, 0);
  ASSERT_EQ(d.cli({"db", "rollout", "inv", "--parallel", "3", "--detach", "-q"}).exit_code, 0);
  // Killed while the files run (every copy's phase says it is applying).
  ASSERT_TRUE(wait_until([&] {
    auto r = d.api().get("/v1/standards/inv/rollout");
    if (!r.ok()) return false;
    int applying = 0;
    for (const auto& w : (*r)["rows"]) applying += w["phase"].get<std::string>().find("applying") != std::string::npos;
    return applying == 3;
  }, std::chrono::seconds(120)));
  ASSERT_TRUE(wait_until([&] {  // (the first statement has run on each)
    int with_a = 0;
    for (const char* env : {"e1", "e2", "e3"})
      with_a += sh(fmt::format("mariadb --no-defaults --protocol=TCP -h {} -P 3306 -u berth -pberth -N -e \"SELECT COUNT(*) FROM "
                               "information_schema.columns WHERE table_schema = 'inventory' AND column_name = 'a'\" 2>&1",
                               app_of(d.status(env), "shopdb")["instances"][0]["ip"].get<std::string>()))
                    .second == "1";
    return with_a == 3;
  }, std::chrono::seconds(30)));
  d.kill9();
  d.start();
  // Each copy put back, then migrated again: `ADD COLUMN a` would fail on a copy that kept it.
  ASSERT_TRUE(wait_until([&] {
    auto r = d.api().get("/v1/standards/inv/rollout");
    return r.ok() && (*r)["state"] != "running";
  }, std::chrono::seconds(180)));
  auto r = d.api().get("/v1/standards/inv/rollout");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)["state"], "done") << r->dump(2);
  for (const auto& w : (*r)["rows"]) EXPECT_EQ(w["state"], "applied") << w.dump();
  for (const char* env : {"e1", "e2", "e3"}) {
    ASSERT_TRUE(wait_until([&] { return ready(d, env); }, std::chrono::seconds(60))) << env;
    auto s = d.status(env);
    EXPECT_EQ(app_of(s, "shopdb")["database"]["version"], 2) << env;
    EXPECT_EQ(query(s, "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = 'inventory' AND column_name IN "
                       "('a', 'b')"),
              "2")
        << env;
  }
}

TEST_F(Databases, DriftIsFoundInTheCopyAlteredByHandAndInNoOther) {
  ASSERT_FALSE(HasFatalFailure());
  Daemon d("db-drift");
  // A standard with what a dump prints noisily: a counter, a view and a routine with their
  // definer, a trigger.
  const std::string dump = d.data_dir() + "/std.sql";
  std::ofstream(dump) << "CREATE DATABASE inventory; USE inventory;\n"
                         "CREATE TABLE stock (id INT AUTO_INCREMENT PRIMARY KEY, sku VARCHAR(20), n INT, KEY k_sku (sku)) "
                         "ENGINE=InnoDB;\n"
                         "INSERT INTO stock (sku, n) SELECT CONCAT('s', seq), seq FROM seq_1_to_100;\n"
                         "CREATE VIEW low AS SELECT sku FROM stock WHERE n < 10;\n"
                         "CREATE TRIGGER t_stock BEFORE INSERT ON stock FOR EACH ROW SET NEW.n = IFNULL(NEW.n, 0);\n"
                         "DELIMITER ;;\nCREATE PROCEDURE restock(IN s VARCHAR(20)) BEGIN UPDATE stock SET n = n + 1 WHERE sku = s; "
                         "END;;\nDELIMITER ;\n"
                         "CREATE DATABASE billing; CREATE TABLE billing.invoice (id INT PRIMARY KEY, total DECIMAL(10,2));\n";
  ASSERT_EQ(d.cli({"db", "import", "inv", "--from-dump", dump, "-q"}).exit_code, 0);
  ASSERT_EQ(d.apply(replaced(catalog("127.113"), "standard: shop", "standard: inv")).exit_code, 0);
  for (const char* env : {"e1", "e2", "e3"}) ASSERT_EQ(d.cli({"up", env}).exit_code, 0) << env;
  // e1 only writes data (its counter moves); e2 changes a table and adds one by hand; e3 is down.
  query(d.status("e1"), "INSERT INTO inventory.stock (sku) VALUES ('new'), ('newer')");
  query(d.status("e2"), "ALTER TABLE inventory.stock ADD COLUMN note TEXT");
  query(d.status("e2"), "CREATE TABLE billing.scratch (x INT)");
  ASSERT_EQ(d.cli({"down", "e3"}).exit_code, 0);

  auto r = d.cli({"db", "drift", "-o", "json"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;  // a copy drifted
  json check = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(check.is_discarded()) << r.out << r.err;
  std::map<std::string, json> by_env;
  for (const auto& w : check["rows"]) by_env[w["environment"]] = w;
  ASSERT_EQ(by_env.size(), 3u) << check.dump(2);
  EXPECT_EQ(by_env["e1"]["state"], "checked") << by_env["e1"].dump(2);
  EXPECT_EQ(by_env["e1"]["drift"], 0) << by_env["e1"].dump(2);
  EXPECT_TRUE(by_env["e1"]["live"].get<bool>());
  EXPECT_EQ(by_env["e3"]["state"], "checked") << by_env["e3"].dump(2);
  EXPECT_EQ(by_env["e3"]["drift"], 0) << by_env["e3"].dump(2);
  EXPECT_FALSE(by_env["e3"]["live"].get<bool>());  // read through a private server
  ASSERT_EQ(by_env["e2"]["drift"], 2) << by_env["e2"].dump(2);
  const json& changed = by_env["e2"]["differences"][1];
  EXPECT_EQ(by_env["e2"]["differences"][0]["object"], "billing.scratch");
  EXPECT_EQ(by_env["e2"]["differences"][0]["what"], "extra");
  EXPECT_EQ(changed["object"], "inventory.stock");
  EXPECT_EQ(changed["what"], "changed");
  EXPECT_EQ(changed["only_copy"], json::array({"`note` text DEFAULT NULL"})) << changed.dump(2);
  EXPECT_EQ(changed["only_standard"], json::array()) << changed.dump(2);
  // The standard's schema, read once from its golden, has every kind of object, without its
  // counter or definers.
  std::ifstream golden_schema(d.data_dir() + "/db/standards/inv/1.schema");
  json golden = json::parse(golden_schema, nullptr, false);
  ASSERT_FALSE(golden.is_discarded());
  for (const char* key : {"inventory.stock", "inventory.low (view)", "inventory.t_stock (trigger)", "inventory.restock (procedure)",
                          "billing.invoice"})
    EXPECT_TRUE(golden.contains(key)) << key << " in " << golden.dump(2);
  EXPECT_EQ(golden.dump().find("AUTO_INCREMENT="), std::string::npos) << golden.dump(2);
  EXPECT_EQ(golden.dump().find("DEFINER"), std::string::npos) << golden.dump(2);
  std::cout << golden.dump(2) << "\n";
  // berth status says so; the table names the object and the line.
  EXPECT_EQ(app_of(d.status("e2"), "shopdb")["database"]["drift"], 2);
  EXPECT_EQ(app_of(d.status("e1"), "shopdb")["database"]["drift"], 0);
  auto table = d.cli({"db", "drift", "--env", "e2"});
  EXPECT_EQ(table.exit_code, 1);
  EXPECT_THAT(table.out, HasSubstr("~ inventory.stock (table)")) << table.out;
  EXPECT_THAT(table.out, HasSubstr("+ `note` text DEFAULT NULL")) << table.out;
  EXPECT_THAT(d.cli({"status", "e2"}).out, HasSubstr("drift 2"));
  // e3, held while it was read, comes up as before.
  ASSERT_EQ(d.cli({"up", "e3"}).exit_code, 0);
  EXPECT_EQ(query(d.status("e3"), "SELECT COUNT(*) FROM inventory.stock"), "100");
  std::cout << table.out;
}

TEST_F(Databases, ADevelopersOwnMigrationsSurviveAFleetRolloutAndAreKeptApart) {
  ASSERT_FALSE(HasFatalFailure());
  Daemon d("db-own");
  const std::string dump = inventory_dump(d);
  ASSERT_EQ(d.cli({"db", "import", "inv", "--from-dump", dump, "-q"}).exit_code, 0);
  ASSERT_EQ(d.apply(replaced(catalog("127.114"), "standard: shop", "standard: inv")).exit_code, 0);
  for (const char* env : {"e1", "e2"}) ASSERT_EQ(d.cli({"up", env}).exit_code, 0) << env;
  // e2's developer has a migration of their own (numbered V1, like the standard's first release).
  const fs::path dev = d.data_dir() + "/dev";
  fs::create_directories(dev);
  std::ofstream(dev / "V1__dev_notes.sql") << "CREATE TABLE inventory.dev_notes (id INT PRIMARY KEY, text VARCHAR(50));\n";
  auto m = d.cli({"db", "migrate", "--env", "e2", "--from", dev.string()});
  ASSERT_EQ(m.exit_code, 0) << m.out << m.err;
  EXPECT_THAT(m.out, HasSubstr("applied V1__dev_notes.sql"));
  query(d.status("e2"), "INSERT INTO inventory.dev_notes VALUES (1, 'mine')");
  EXPECT_EQ(app_of(d.status("e2"), "shopdb")["database"]["own_migrations"], 1);
  // Applied is applied: the same again is nothing to do, an edited one is refused.
  auto again = d.cli({"db", "migrate", "--env", "e2", "--from", dev.string()});
  EXPECT_NE(again.exit_code, 0);
  EXPECT_THAT(again.err, HasSubstr("nothing to apply")) << again.err;
  std::ofstream(dev / "V1__dev_notes.sql", std::ios::app) << "-- edited\n";
  auto edited = d.cli({"db", "migrate", "--env", "e2", "--from", dev.string()});
  EXPECT_NE(edited.exit_code, 0);
  EXPECT_THAT(edited.err, HasSubstr("V1__dev_notes.sql changed since it was applied to e2's copy of shopdb")) << edited.err;
  fs::remove(dev / "V1__dev_notes.sql");
  std::ofstream(dev / "V1__dev_notes.sql") << "CREATE TABLE inventory.dev_notes (id INT PRIMARY KEY, text VARCHAR(50));\n";
  // A file that fails names its line and the server's error, and is not recorded.
  std::ofstream(dev / "V2__broken.sql") << "ALTER TABLE inventory.dev_notes ADD COLUMN at INT;\nSELECT * FROM inventory.nowhere;\n";
  auto broken = d.cli({"db", "migrate", "--env", "e2", "--from", dev.string()});
  EXPECT_EQ(broken.exit_code, 1);
  EXPECT_THAT(broken.err, HasSubstr("V2__broken.sql failed at line 2")) << broken.err;
  EXPECT_EQ(app_of(d.status("e2"), "shopdb")["database"]["own_migrations"], 1);
  fs::remove(dev / "V2__broken.sql");
  // e1 is down: its own migration goes through a private server.
  ASSERT_EQ(d.cli({"down", "e1"}).exit_code, 0);
  const fs::path dev1 = d.data_dir() + "/dev1";
  fs::create_directories(dev1);
  std::ofstream(dev1 / "V1__scratch.sql") << "CREATE TABLE inventory.scratch (x INT);\n";
  auto down = d.cli({"db", "migrate", "--env", "e1", "--from", dev1.string()});
  ASSERT_EQ(down.exit_code, 0) << down.out << down.err;
  ASSERT_EQ(d.cli({"up", "e1"}).exit_code, 0);
  EXPECT_EQ(query(d.status("e1"), "SELECT COUNT(*) FROM inventory.scratch"), "0");

  // The DBAs release V1 and V2 of the standard; the fleet rollout neither applies the
  // developers' files nor trips over them.
  const fs::path mig = d.data_dir() + "/migrations";
  fs::create_directories(mig);
  std::ofstream(mig / "V1__add_refund_state.sql")
      << "ALTER TABLE inventory.stock ADD COLUMN refund_state VARCHAR(10) NOT NULL DEFAULT 'none';\n";
  std::ofstream(mig / "V2__returns.sql") << "CREATE TABLE inventory.returns (id INT PRIMARY KEY) ENGINE=InnoDB;\n";
  ASSERT_EQ(d.cli({"db", "release", "inv", "--from", mig.string(), "-q"}).exit_code, 0);
  auto r = d.cli({"db", "rollout", "inv", "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  // (The parsed document kept: a range-for over a part of a temporary reads freed memory.)
  const json rolled = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(rolled.is_discarded()) << r.out;
  for (const auto& w : rolled["rows"]) EXPECT_EQ(w["state"], "applied") << w.dump();
  ASSERT_TRUE(wait_until([&] { return ready(d, "e2"); }, std::chrono::seconds(60)));
  auto s2 = d.status("e2");
  EXPECT_EQ(app_of(s2, "shopdb")["database"]["version"], 2);
  EXPECT_EQ(app_of(s2, "shopdb")["database"]["own_migrations"], 1);
  EXPECT_EQ(query(s2, "SELECT text FROM inventory.dev_notes WHERE id = 1"), "mine");
  EXPECT_EQ(query(s2, "SELECT COUNT(*) FROM inventory.stock WHERE refund_state = 'none'"), "1234");
  // The developer goes on with their own V2 on top of the standard's version 2.
  std::ofstream(dev / "V2__dev_flags.sql") << "ALTER TABLE inventory.dev_notes ADD COLUMN flag INT;\n";
  auto next = d.cli({"db", "migrate", "--env", "e2", "--from", dev.string(), "-q"});
  ASSERT_EQ(next.exit_code, 0) << next.err;
  EXPECT_EQ(app_of(d.status("e2"), "shopdb")["database"]["own_migrations"], 2);
  EXPECT_THAT(d.cli({"status", "e2"}).out, HasSubstr("+2 own"));
}
