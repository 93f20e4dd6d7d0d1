// The database manager (db/manager.cc) with a file-copying engine, a local blob store behind the
// fault-injecting wrapper (blob/fault), and a ManualExecutor the test drives. Worker threads are
// real: the test polls their results with a deadline, and holds a restore in progress at the
// store's gate instead of sleeping.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "blob/fault/fault_store.h"
#include "blob/local/local_store.h"
#include "base/subprocess.h"
#include "db/manager.h"

using namespace berth;
using testing::HasSubstr;
namespace fs = std::filesystem;

namespace {

// "Imports" a data directory by copying it; a server or a dump is not needed here.
class CopyEngine : public db::Engine {
 public:
  bool throw_on_copy = false;
  std::string name() const override { return "files"; }
  Status copy_running(const db::ServerSource&, const std::string&, const std::string&) override {
    return unavailable("no servers here");
  }
  Status copy_datadir(const std::string& from, const std::string& dir, const std::string&) override {
    if (throw_on_copy) fs::copy("/nonexistent/berth-test", dir);  // throws filesystem_error
    std::error_code ec;
    fs::copy(from, dir, fs::copy_options::recursive, ec);
    if (ec) return unavailable(ec.message());
    return {};
  }
  Status load_dump(const std::string&, const std::string&, const std::string&) override { return unavailable("no dumps"); }
  Status seal(const std::string&, const db::Account&, const std::string&) override { return {}; }
  // A migration's "statements" are appended to applied.sql in the data directory; one that says
  // FAIL fails after its first line ran (as DDL that committed before an error), and so does
  // every one on a directory that has a file named `poison`.
  Status apply(const std::string& dir, const std::vector<db::Migration>& migrations, const db::Account&,
               const std::string&) override {
    for (const auto& m : migrations) {
      std::ofstream(fs::path(dir) / "applied.sql", std::ios::app) << m.sql.substr(0, m.sql.find('\n') + 1);
      if (m.sql.find("FAIL") != std::string::npos || fs::exists(fs::path(dir) / "poison"))
        return invalid(m.file + " failed at line 2: FAIL");
    }
    return {};
  }
  // "Through the running server": here the server's address is the data directory it runs on.
  std::vector<std::string> live;  // addresses applied through
  Status apply_live(const db::ServerSource& server, const std::vector<db::Migration>& migrations,
                    const std::string& log) override {
    live.push_back(server.address);
    return apply(server.address, migrations, {}, log);
  }
  // The "schema": a table per line of applied.sql (what the migrations made) and per file a test
  // put in the data directory's `tables/`; read live, or of a directory (`schema_dirs` says which).
  std::vector<std::string> schema_dirs;
  Result<db::Schema> schema(const db::ServerSource& server, const std::string& log) override { return schema_of(server.address, log); }
  Result<db::Schema> schema_of(const std::string& dir, const std::string&) override {
    schema_dirs.push_back(dir);
    db::Schema s;
    std::ifstream in(fs::path(dir) / "applied.sql");
    for (std::string line; std::getline(in, line);) s["app01." + line] = {"table", {line}};
    std::error_code ec;
    for (const auto& f : fs::directory_iterator(fs::path(dir) / "tables", ec))
      s["app01." + f.path().filename().string()] = {"table", {"made by hand"}};
    return s;
  }
};

class DbManagerTest : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(testing::TempDir()) / ("berth-dbm-" + std::to_string(::getpid()) + "-" +
                                          testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    for (const char* standard : {"alpha", "beta"}) {
      fs::create_directories(dir_ / "src" / standard / "app01");
      std::ofstream(dir_ / "src" / standard / "app01" / "t.ibd") << std::string(300'000, standard[0]);
    }
    local_ = std::make_unique<blob::LocalStore>((dir_ / "blobs").string());
    faulty_ = std::make_unique<blob::FaultStore>(*local_);
    start_manager();
  }
  // A manager on the test's directory: at SetUp, and again as a restarted daemon's.
  void start_manager() {
    m_.reset();
    auto engine = std::make_unique<CopyEngine>();
    engine_ = engine.get();
    db::CloneOptions plain;  // plain copies: the test is about jobs and locks, not clone paths
    plain.allow_reflink = plain.allow_overlay = false;
    m_ = std::make_unique<db::Manager>(exec_, clock_, (dir_ / "db").string(), *faulty_, std::move(engine), plain);
  }
  void TearDown() override {
    faulty_->open(blob::FaultStore::Op::kGet);
    m_.reset();
    fs::remove_all(dir_);
  }
  // Runs the loop's posted work until `done` holds, for at most 30 s.
  template <class F>
  bool until(F done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      exec_.run_ready();
      std::this_thread::yield();
    }
    return true;
  }
  void import(const std::string& standard) {
    db::ImportSource src{db::ImportSource::Kind::kDatadir, {}, (dir_ / "src" / standard).string()};
    auto job = m_->import(standard, src);
    ASSERT_TRUE(job.ok()) << job.error().message;
    ASSERT_TRUE(until([&] { return (*job)->done.load(); }));
    ASSERT_EQ((*job)->error, "");
  }
  db::CopyStatus copy(const std::string& env, const std::string& standard) {
    model::DatabaseSpec spec;
    spec.standard = standard;
    return m_->ensure_copy(env, "shopdb", spec);
  }
  std::string golden(const std::string& standard) { return (dir_ / "db" / "golden" / (standard + "@1")).string(); }

  ManualClock clock_;
  ManualExecutor exec_{clock_};
  fs::path dir_;
  std::unique_ptr<blob::LocalStore> local_;
  std::unique_ptr<blob::FaultStore> faulty_;
  CopyEngine* engine_ = nullptr;
  std::unique_ptr<db::Manager> m_;
};

using Op = blob::FaultStore::Op;
using State = db::CopyStatus::State;

}  // namespace

TEST_F(DbManagerTest, ARestoreOfOneStandardDoesNotHoldUpAnotherAndItsVersionCannotBeRemovedMeanwhile) {
  import("alpha");
  import("beta");
  fs::remove_all(golden("alpha"));  // a cold host for alpha: its copy is restored from the store
  faulty_->close(Op::kGet);
  EXPECT_EQ(copy("dev", "alpha").state, State::kPreparing);
  ASSERT_TRUE(until([&] { return faulty_->waiting(Op::kGet) > 0; }));  // the restore is under way

  auto removed = m_->remove("alpha", 1);
  ASSERT_FALSE(removed.ok());
  EXPECT_THAT(removed.error().message, HasSubstr("a copy of alpha@1 is being made for dev/shopdb"));
  // Another standard's copy is made meanwhile: before, one mutex across the whole restore made
  // every copy job of any standard wait behind it.
  EXPECT_EQ(copy("qa", "beta").state, State::kPreparing);
  EXPECT_TRUE(until([&] { return copy("qa", "beta").state == State::kReady; })) << "beta waited for alpha's restore";

  faulty_->open(Op::kGet);
  ASSERT_TRUE(until([&] { return copy("dev", "alpha").state == State::kReady; }));
  EXPECT_EQ(m_->find_copy("dev", "shopdb")->method, db::CloneMethod::kRestore);
  removed = m_->remove("alpha", 1);
  ASSERT_FALSE(removed.ok());
  EXPECT_THAT(removed.error().message, HasSubstr("in use by environment dev"));
  // Its server answered: this host's golden is restored from the cached objects meanwhile.
  m_->server_ready("dev", "shopdb");
  ASSERT_TRUE(until([&] { return fs::exists(golden("alpha") + "/app01/t.ibd"); }));
  ASSERT_TRUE(m_->reset("dev", "shopdb").ok());
  ASSERT_TRUE(until([&] { return m_->remove("alpha", 1).ok(); }));  // once the golden's restore let go
  EXPECT_FALSE(fs::exists(golden("alpha")));
  EXPECT_TRUE(m_->versions("alpha").empty());
}

TEST_F(DbManagerTest, ALibraryExceptionOnAWorkerFailsItsJob) {
  engine_->throw_on_copy = true;  // before: std::terminate, the daemon gone
  db::ImportSource src{db::ImportSource::Kind::kDatadir, {}, (dir_ / "src" / "alpha").string()};
  auto job = m_->import("alpha", src);
  ASSERT_TRUE(job.ok());
  ASSERT_TRUE(until([&] { return (*job)->done.load(); }));
  EXPECT_THAT((*job)->error, HasSubstr("unexpected error"));
  EXPECT_TRUE(m_->versions("alpha").empty());
  EXPECT_FALSE(fs::exists(golden("alpha") + ".import"));
}

TEST_F(DbManagerTest, AStoreFailingDuringARestoreLeavesNoHalfCopy) {
  import("alpha");
  fs::remove_all(golden("alpha"));
  faulty_->fail(Op::kGet, 2, "connection reset by peer", true);
  EXPECT_EQ(copy("dev", "alpha").state, State::kPreparing);
  ASSERT_TRUE(until([&] { return copy("dev", "alpha").state == State::kFailed; }));
  auto failed = copy("dev", "alpha");
  EXPECT_THAT(failed.message, HasSubstr("connection reset by peer"));
  EXPECT_THAT(failed.message, HasSubstr("berth db clone shopdb --env dev"));
  EXPECT_FALSE(fs::exists(dir_ / "db" / "copies" / "dev" / "shopdb"));
  EXPECT_EQ(m_->find_copy("dev", "shopdb"), nullptr);
}

TEST_F(DbManagerTest, AResetAskedForWhileTheServerRunsOutlivesADaemonRestartAndEndsWithTheCopy) {
  import("alpha");
  ASSERT_TRUE(until([&] { return copy("dev", "alpha").state == State::kReady; }));
  const std::string copy_dir = m_->find_copy("dev", "shopdb")->dir;
  std::ofstream(copy_dir + "/data/app01/written") << "by the environment";
  EXPECT_TRUE(m_->request_reset("nobody", "shopdb").ok()) << "no copy: nothing to reset";
  EXPECT_FALSE(m_->reset_requested("nobody", "shopdb"));
  ASSERT_TRUE(m_->request_reset("dev", "shopdb").ok());
  EXPECT_TRUE(m_->reset_requested("dev", "shopdb"));

  // The daemon killed before the server stopped: the next one still owes the reset (before, the
  // request lived in the loop's memory only, and the server came back on the old copy).
  start_manager();
  ASSERT_NE(m_->find_copy("dev", "shopdb"), nullptr);
  EXPECT_TRUE(m_->reset_requested("dev", "shopdb"));
  ASSERT_TRUE(m_->reset("dev", "shopdb").ok());
  EXPECT_FALSE(m_->reset_requested("dev", "shopdb"));
  ASSERT_TRUE(until([&] { return copy("dev", "alpha").state == State::kReady; }));
  EXPECT_FALSE(fs::exists(copy_dir + "/data/app01/written")) << "a fresh copy";

  // Done once: the fresh copy is not reset again by the next daemon.
  start_manager();
  ASSERT_NE(m_->find_copy("dev", "shopdb"), nullptr);
  EXPECT_FALSE(m_->reset_requested("dev", "shopdb"));

  // A reset removes the copy starting with its copy.json: a daemon killed just after that does
  // not take what is left (whatever the removal had got to, the request file included) for a
  // copy, and makes a fresh one.
  ASSERT_TRUE(m_->request_reset("dev", "shopdb").ok());
  fs::remove(copy_dir + "/copy.json");
  start_manager();
  EXPECT_EQ(m_->find_copy("dev", "shopdb"), nullptr);
  EXPECT_FALSE(m_->reset_requested("dev", "shopdb"));
  EXPECT_FALSE(fs::exists(copy_dir));
}

// A server in a container gets the copy as an archive: made once, every entry the container
// user's, its marker last; kept across a daemon restart with whether a server on it answered;
// gone with the copy.
TEST_F(DbManagerTest, ACopysArchiveIsMadeOnceForTheContainersUserEndsWithItsMarkerAndGoesWithTheCopy) {
  import("alpha");
  ASSERT_TRUE(until([&] { return copy("dev", "alpha").state == State::kReady; }));
  EXPECT_EQ(m_->ensure_seed("nobody", "shopdb", {999, 999}).state, State::kFailed) << "no copy, no archive";
  EXPECT_EQ(m_->ensure_seed("dev", "shopdb", {999, 999}).state, State::kPreparing);
  db::CopyStatus made;
  ASSERT_TRUE(until([&] { return (made = m_->ensure_seed("dev", "shopdb", {999, 999})).state != State::kPreparing; }));
  ASSERT_EQ(made.state, State::kReady) << made.message;
  const std::string tar = made.copy->seed;
  ASSERT_TRUE(fs::exists(tar)) << tar;
  EXPECT_FALSE(made.copy->seed_served);

  // tar's own listing: owners, and the marker last.
  const std::string listing_file = (dir_ / "listing").string();
  // (Through spawn(), not std::system: ThreadSanitizer refuses a fork of a process with threads.)
  auto listed = run_logged("tar --numeric-owner -tvf " + tar, listing_file, "listing the archive");
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  std::ifstream in(listing_file);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    if (!line.starts_with("$ ")) lines.push_back(line);  // (run_logged writes the command first)
  ASSERT_GE(lines.size(), 3u);
  for (const auto& l : lines) EXPECT_THAT(l, HasSubstr(" 999/999 ")) << l;
  EXPECT_TRUE(std::any_of(lines.begin(), lines.end(), [](const auto& l) { return l.ends_with("./app01/t.ibd"); }));
  EXPECT_TRUE(lines.back().ends_with(std::string(db::kSeededMarker))) << fmt::format("{}", fmt::join(lines, "\n"));
  EXPECT_FALSE(fs::exists(tar + ".partial"));

  // A server on a fill of it answers: recorded, and kept by a restarted daemon with the archive.
  m_->server_ready("dev", "shopdb");
  EXPECT_TRUE(m_->find_copy("dev", "shopdb")->seed_served);
  ASSERT_TRUE(until([&] {
    std::ifstream j(m_->find_copy("dev", "shopdb")->dir + "/copy.json");
    return std::string(std::istreambuf_iterator<char>(j), {}).find("seed_served") != std::string::npos;
  }));
  start_manager();
  ASSERT_NE(m_->find_copy("dev", "shopdb"), nullptr);
  EXPECT_EQ(m_->find_copy("dev", "shopdb")->seed, tar);
  EXPECT_TRUE(m_->find_copy("dev", "shopdb")->seed_served);
  EXPECT_EQ(m_->ensure_seed("dev", "shopdb", {999, 999}).state, State::kReady) << "made once";

  // A reset: a fresh copy, without an archive until one is asked for.
  ASSERT_TRUE(m_->reset("dev", "shopdb").ok());
  EXPECT_FALSE(fs::exists(tar));
  ASSERT_TRUE(until([&] { return copy("dev", "alpha").state == State::kReady; }));
  EXPECT_EQ(m_->find_copy("dev", "shopdb")->seed, "");
  EXPECT_FALSE(m_->find_copy("dev", "shopdb")->seed_served);
}

// berth db release: the migrations new since the last version are rehearsed on a throwaway copy
// of it and sealed as the next version, which records them; anything refused or failed leaves
// no version and no trace, and the versions read back after a restart.
TEST_F(DbManagerTest, AReleaseSealsItsMigrationsAsTheNextVersionOrLeavesNothing) {
  import("alpha");
  const fs::path mig = dir_ / "migrations";
  fs::create_directories(mig);
  auto write = [&](const std::string& name, const std::string& text) { std::ofstream(mig / name) << text; };
  write("V1__add_x.sql", "alter table t add x int;\n");
  write("V2__add_y.sql", "alter table t add y int;\n");
  auto release = [&](db::ReleaseOptions o = {}) -> std::string {
    db::ReleaseSource src;
    src.path = mig.string();
    src.options = o;
    auto job = m_->release("alpha", src);
    EXPECT_TRUE(job.ok()) << job.error().message;
    if (!job.ok()) return job.error().message;
    EXPECT_TRUE(until([&] { return (*job)->done.load(); }));
    EXPECT_EQ((*job)->kind, "release");
    return (*job)->error;
  };
  ASSERT_EQ(release(), "");
  auto vs = m_->versions("alpha");
  ASSERT_EQ(vs.size(), 2u);
  ASSERT_EQ(vs[1].migrations.size(), 2u);
  EXPECT_EQ(vs[1].migrations[0].file, "V1__add_x.sql");
  EXPECT_EQ(vs[1].migrations[1].released_in, 2);
  EXPECT_THAT(vs[1].source, HasSubstr(mig.string()));
  const fs::path golden2 = dir_ / "db" / "golden" / "alpha@2";
  std::string applied;
  std::getline(std::ifstream(golden2 / "applied.sql"), applied, '\0');
  EXPECT_EQ(applied, "alter table t add x int;\nalter table t add y int;\n");
  EXPECT_FALSE(fs::exists(golden("alpha") + "/applied.sql")) << "the rehearsal ran on the version it started from";
  EXPECT_TRUE(fs::exists(golden2 / "app01" / "t.ibd"));

  // Nothing new; a released migration edited: refused, no version.
  EXPECT_THAT(release(), HasSubstr("nothing to release"));
  write("V1__add_x.sql", "alter table t add x bigint;\n");
  EXPECT_THAT(release(), HasSubstr("V1__add_x.sql changed since version 2 of 'alpha' released it"));
  write("V1__add_x.sql", "alter table t add x int;\n");
  // A migration that fails: no version 3, no staging left, the error names the file.
  write("V3__bad.sql", "alter table t add z int;\nFAIL\n");
  EXPECT_THAT(release(), HasSubstr("V3__bad.sql failed at line 2"));
  EXPECT_EQ(m_->versions("alpha").size(), 2u);
  EXPECT_FALSE(fs::exists(dir_ / "db" / "golden" / "alpha@3"));
  EXPECT_FALSE(fs::exists(dir_ / "db" / "golden" / "alpha@3.import"));
  // A gap needs --out-of-order.
  fs::remove(mig / "V3__bad.sql");
  write("V4__later.sql", "alter table t add w int;\n");
  EXPECT_THAT(release(), HasSubstr("V4__later.sql leaves a gap"));
  ASSERT_EQ(release({.out_of_order = true}), "");

  // After a restart: every version with what it released; a new one follows on.
  start_manager();
  vs = m_->versions("alpha");
  ASSERT_EQ(vs.size(), 3u);
  EXPECT_EQ(vs[2].migrations.size(), 1u);
  EXPECT_EQ(m_->migrations_of("alpha", 3).size(), 3u);
  EXPECT_EQ(m_->migrations_of("alpha", 1).size(), 0u);
  // A standard with no version has nothing to release onto.
  db::ReleaseSource src;
  src.path = mig.string();
  auto none = m_->release("gamma", src);
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(none.error().message, HasSubstr("import one first"));
}

// What the control loop does for a rollout, played by hand: stops a held copy's server (here:
// none runs) and says so, and says when a server answers again.
namespace {
std::string read_all(const fs::path& p) {
  std::string text;
  std::getline(std::ifstream(p), text, '\0');
  return text;
}
}  // namespace

TEST_F(DbManagerTest, ARolloutMigratesEachCopyOrPutsItBackAndResumesAfterADaemonRestart) {
  import("alpha");
  for (const char* env : {"a", "b", "c", "d"}) ASSERT_TRUE(until([&] { return copy(env, "alpha").state == State::kReady; }));
  const fs::path mig = dir_ / "migrations";
  fs::create_directories(mig);
  std::ofstream(mig / "V1__add_x.sql") << "alter table t add x int;\n";
  std::ofstream(mig / "V2__add_y.sql") << "alter table t add y int;\n";
  db::ReleaseSource src;
  src.path = mig.string();
  auto job = m_->release("alpha", src);
  ASSERT_TRUE(job.ok()) << job.error().message;
  ASSERT_TRUE(until([&] { return (*job)->done.load(); }));
  ASSERT_EQ((*job)->error, "");

  // b's copy fails its migrations (after the first statement ran); c's server runs.
  const fs::path copies = dir_ / "db" / "copies";
  std::ofstream(copies / "b" / "shopdb" / "data" / "poison") << "x";
  std::ofstream(copies / "b" / "shopdb" / "data" / "applied.sql") << "the environment's own\n";
  std::vector<std::tuple<std::string, std::string, std::string>> events;
  m_->set_on_event([&](const std::string& env, const std::string& type, const std::string&, const std::string& message) {
    events.emplace_back(env, type, message);
  });
  std::vector<db::RolloutTarget> targets;
  for (const char* env : {"a", "b", "c"}) targets.push_back({env, "shopdb", std::string(env) == "c", {}, ""});
  targets.push_back({"d", "shopdb", false, {}, "pinned to alpha@1 in the catalog"});
  db::RolloutOptions o;
  o.parallel = 1;
  o.continue_on_error = true;
  o.canary = {"c"};
  auto r = m_->rollout("alpha", 0, o, targets);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ((*r)->to, 2);
  EXPECT_EQ((*r)->rows[3].state, db::RolloutRow::State::kSkipped);
  EXPECT_EQ((*r)->rows[3].phase, "pinned to alpha@1 in the catalog");
  // The canary first, alone: held until its server is down.
  EXPECT_EQ((*r)->rows[2].state, db::RolloutRow::State::kApplying);
  EXPECT_EQ((*r)->rows[0].state, db::RolloutRow::State::kPending);
  ASSERT_TRUE(m_->held("c", "shopdb"));
  EXPECT_FALSE(m_->held("a", "shopdb"));
  auto play_loop = [&] {
    for (const auto& [env, db] : m_->holds()) m_->server_down(env, db);
    for (const auto& row : m_->rollout_of("alpha")->rows)
      if (row.step == db::RolloutRow::Step::kWaitReady)
        m_->server_ready(row.env, row.db, {(copies / row.env / row.db / "data").string(), "berth", "berth"});
    return m_->rollout_of("alpha")->state != db::Rollout::State::kRunning;
  };
  ASSERT_TRUE(until(play_loop));
  const db::Rollout* done = m_->rollout_of("alpha");
  EXPECT_EQ(done->state, db::Rollout::State::kDone);
  EXPECT_EQ(done->rows[0].state, db::RolloutRow::State::kApplied) << done->rows[0].error;
  EXPECT_EQ(done->rows[2].state, db::RolloutRow::State::kApplied) << done->rows[2].error;
  ASSERT_EQ(done->rows[1].state, db::RolloutRow::State::kRestored);
  EXPECT_THAT(done->rows[1].error, HasSubstr("V1__add_x.sql failed at line 2"));
  // Applied: the copy says so; the canary through its server, the others through a private one.
  EXPECT_EQ(m_->find_copy("a", "shopdb")->at(), 2);
  EXPECT_EQ(m_->find_copy("a", "shopdb")->version, 1);
  EXPECT_EQ(m_->find_copy("a", "shopdb")->applied.size(), 2u);
  EXPECT_EQ(read_all(copies / "a" / "shopdb" / "data" / "applied.sql"), "alter table t add x int;\nalter table t add y int;\n");
  EXPECT_EQ(engine_->live, std::vector<std::string>{(copies / "c" / "shopdb" / "data").string()});
  // Restored: exactly as before, at its old version; no snapshot or journal left anywhere.
  EXPECT_EQ(m_->find_copy("b", "shopdb")->at(), 1);
  EXPECT_EQ(read_all(copies / "b" / "shopdb" / "data" / "applied.sql"), "the environment's own\n");
  for (const char* env : {"a", "b", "c"}) {
    EXPECT_FALSE(fs::exists(copies / env / "shopdb" / "snap")) << env;
    EXPECT_FALSE(fs::exists(copies / env / "shopdb" / "rollout.json")) << env;
  }
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(std::get<1>(events[0]), "db-rolled-out");  // c, the canary
  EXPECT_EQ(std::get<0>(events[0]), "c");
  EXPECT_EQ(std::get<1>(events[2]), "db-rollout-failed");
  EXPECT_THAT(std::get<2>(events[2]), HasSubstr("put back to its snapshot"));

  // A daemon killed while b's migrations ran (its journal says so, its snapshot is there, half
  // of them applied): at its restart b is put back first, then migrated again.
  fs::remove(copies / "b" / "shopdb" / "data" / "poison");
  o.canary.clear();
  auto again = m_->rollout("alpha", 2, o, {{"b", "shopdb", false, {}, ""}});
  ASSERT_TRUE(again.ok()) << again.error().message;
  ASSERT_TRUE(until([&] { return m_->held("b", "shopdb") && m_->rollout_of("alpha")->rows[0].step == db::RolloutRow::Step::kWaitDown; }));
  m_.reset();
  const fs::path b = copies / "b" / "shopdb";
  fs::create_directories(b / "snap");
  fs::copy(b / "data", b / "snap" / "data", fs::copy_options::recursive);
  std::ofstream(b / "data" / "applied.sql", std::ios::app) << "alter table t add x int;\n";  // half of it
  std::ofstream(b / "rollout.json") << R"({"to": 2, "step": "apply"})";
  start_manager();
  ASSERT_TRUE(m_->held("b", "shopdb")) << "put back before anything else";
  ASSERT_TRUE(until(play_loop));
  EXPECT_EQ(m_->rollout_of("alpha")->rows[0].state, db::RolloutRow::State::kApplied) << m_->rollout_of("alpha")->rows[0].error;
  EXPECT_EQ(read_all(b / "data" / "applied.sql"),
            "the environment's own\nalter table t add x int;\nalter table t add y int;\n");
  EXPECT_EQ(m_->find_copy("b", "shopdb")->at(), 2);
  // Nothing to do any more: every copy is at 2.
  auto none = m_->rollout("alpha", 0, o, targets);
  ASSERT_TRUE(none.ok());
  for (const auto& row : (*none)->rows) EXPECT_EQ(row.state, db::RolloutRow::State::kSkipped) << row.env;
}

TEST_F(DbManagerTest, DriftIsEachCopysSchemaAgainstItsVersionsGoldenReadOnceAndKeptWithTheCopy) {
  import("alpha");
  for (const char* env : {"a", "b", "c"}) ASSERT_TRUE(until([&] { return copy(env, "alpha").state == State::kReady; }));
  const fs::path copies = dir_ / "db" / "copies";
  // b's table made by hand; a's server runs; c is being read by its own server's start.
  fs::create_directories(copies / "b" / "shopdb" / "data" / "tables");
  std::ofstream(copies / "b" / "shopdb" / "data" / "tables" / "scratch") << "x";
  const std::string a_data = (copies / "a" / "shopdb" / "data").string();
  std::vector<db::DriftTarget> targets = {{"a", "shopdb", db::ServerSource{a_data, "berth", "berth"}, ""},
                                          {"b", "shopdb", std::nullopt, ""},
                                          {"c", "shopdb", std::nullopt, "its server is starting"},
                                          {"nocopy", "shopdb", std::nullopt, ""}};
  auto check = m_->check_drift(targets);
  ASSERT_TRUE(check.ok()) << check.error().message;
  EXPECT_FALSE((*check)->done);
  // b is read through a private server: held meanwhile (its server must not start on it).
  EXPECT_TRUE(m_->held("b", "shopdb"));
  EXPECT_FALSE(m_->held("a", "shopdb"));
  EXPECT_EQ(m_->check_drift(targets).error().code, ErrorCode::kConflict) << "one check at a time";
  ASSERT_TRUE(until([&] { return m_->drift_check()->done; }));
  EXPECT_FALSE(m_->held("b", "shopdb"));
  const auto& rows = m_->drift_check()->rows;
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0].state, db::DriftResult::State::kChecked) << rows[0].error;
  EXPECT_TRUE(rows[0].live);
  EXPECT_TRUE(rows[0].differences.empty());
  ASSERT_EQ(rows[1].state, db::DriftResult::State::kChecked) << rows[1].error;
  ASSERT_EQ(rows[1].differences.size(), 1u);
  EXPECT_EQ(rows[1].differences[0].object, "app01.scratch");
  EXPECT_EQ(rows[1].differences[0].what, db::SchemaDifference::What::kExtra);
  EXPECT_EQ(rows[2].state, db::DriftResult::State::kSkipped);
  EXPECT_EQ(rows[2].error, "its server is starting");
  EXPECT_EQ(rows[3].state, db::DriftResult::State::kSkipped);
  // The golden was read once, on a throwaway clone (never the golden itself), and kept.
  const auto reads = engine_->schema_dirs;
  EXPECT_EQ(std::count(reads.begin(), reads.end(), golden("alpha")), 0);
  EXPECT_TRUE(fs::exists(dir_ / "db" / "standards" / "alpha" / "1.schema"));
  ASSERT_TRUE(m_->check_drift(targets).ok());
  ASSERT_TRUE(until([&] { return m_->drift_check()->done; }));
  EXPECT_EQ(engine_->schema_dirs.size(), reads.size() + 2) << "two copies read again, the golden not";
  // Kept with the copy: a restarted daemon still knows; a reset copy forgets.
  start_manager();
  ASSERT_NE(m_->drift_of("b", "shopdb"), nullptr);
  EXPECT_EQ(m_->drift_of("b", "shopdb")->differences.size(), 1u);
  EXPECT_EQ(m_->drift_of("c", "shopdb"), nullptr);
  ASSERT_TRUE(m_->reset("b", "shopdb").ok());
  EXPECT_EQ(m_->drift_of("b", "shopdb"), nullptr);
}

TEST_F(DbManagerTest, AnEnvironmentsOwnMigrationsAreKeptApartAndARolloutWaitsForThem) {
  import("alpha");
  ASSERT_TRUE(until([&] { return copy("a", "alpha").state == State::kReady; }));
  const fs::path data = dir_ / "db" / "copies" / "a" / "shopdb" / "data";
  auto own = [](const std::string& file, const std::string& sql) { return **db::migration_from_text(file, sql); };
  const fs::path mig = dir_ / "migrations";
  fs::create_directories(mig);
  std::ofstream(mig / "V1__add_x.sql") << "alter table t add x int;\n";
  db::ReleaseSource src;
  src.path = mig.string();
  auto rel = m_->release("alpha", src);
  ASSERT_TRUE(rel.ok());
  ASSERT_TRUE(until([&] { return (*rel)->done.load(); }));
  // Its own migration through its server (here: the directory): not held, it keeps serving.
  auto job = m_->migrate("a", "shopdb", {own("V1__mine.sql", "create table mine;\n")}, {},
                         db::ServerSource{data.string(), "berth", "berth"}, {});
  ASSERT_TRUE(job.ok()) << job.error().message;
  EXPECT_FALSE(m_->held("a", "shopdb"));
  EXPECT_EQ(m_->migrate("a", "shopdb", {own("V2__more.sql", "x\n")}, {}, std::nullopt, {}).error().code, ErrorCode::kConflict)
      << "one at a time";
  // A rollout meanwhile (the loop has not seen the migration end): the copy's row waits, its
  // server is not stopped under the migration.
  auto r = m_->rollout("alpha", 0, {}, {{"a", "shopdb", false, {}, ""}});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ((*r)->rows[0].state, db::RolloutRow::State::kPending);
  EXPECT_EQ((*r)->state, db::Rollout::State::kRunning);
  EXPECT_FALSE(m_->held("a", "shopdb"));
  ASSERT_TRUE(until([&] {
    for (const auto& [env, db] : m_->holds()) m_->server_down(env, db);
    return (*job)->done.load() && m_->rollout_of("alpha")->state != db::Rollout::State::kRunning;
  }));
  EXPECT_EQ((*job)->error, "");
  ASSERT_EQ((*job)->migrations.size(), 1u);
  EXPECT_EQ(m_->rollout_of("alpha")->rows[0].state, db::RolloutRow::State::kApplied) << m_->rollout_of("alpha")->rows[0].error;
  // Both in the copy, each recorded in its own list; a restarted daemon still knows.
  EXPECT_EQ(read_all(data / "applied.sql"), "create table mine;\nalter table t add x int;\n");
  start_manager();
  const db::Copy* c = m_->find_copy("a", "shopdb");
  ASSERT_NE(c, nullptr);
  ASSERT_EQ(c->own.size(), 1u);
  EXPECT_EQ(c->own[0].file, "V1__mine.sql");
  ASSERT_EQ(c->applied.size(), 1u);
  EXPECT_EQ(c->applied[0].file, "V1__add_x.sql");
  // The rules of a release: nothing new, or an applied file edited, is refused before anything runs.
  EXPECT_THAT(m_->migrate("a", "shopdb", {own("V1__mine.sql", "create table mine;\n")}, {}, std::nullopt, {}).error().message,
              HasSubstr("nothing to apply"));
  EXPECT_THAT(m_->migrate("a", "shopdb", {own("V1__mine.sql", "create table yours;\n")}, {}, std::nullopt, {}).error().message,
              HasSubstr("V1__mine.sql changed since it was applied to a's copy of shopdb"));
  EXPECT_FALSE(m_->held("a", "shopdb"));
}

TEST_F(DbManagerTest, ACopyAPrivateServerRanOnWhenTheDaemonWasKilledIsGivenBackToItsOwner) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (chown)";
  import("alpha");
  model::DatabaseSpec spec;
  spec.standard = "alpha";
  const Identity owner{4242, 4242};
  ASSERT_TRUE(until([&] { return m_->ensure_copy("a", "shopdb", spec, owner).state == State::kReady; }));
  const fs::path dir = dir_ / "db" / "copies" / "a" / "shopdb";
  // Killed while a private server (root) ran on it: a file it made is root's, the marker is there.
  std::ofstream(dir / "data" / "ib_logfile0") << "x";
  ASSERT_EQ(::chown((dir / "data" / "ib_logfile0").c_str(), 0, 0), 0);
  std::ofstream(dir / db::Manager::kPrivateServerMarker) << "x";
  start_manager();
  EXPECT_FALSE(m_->find_copy("a", "shopdb")->owner) << "its owner forgotten until it is given back";
  EXPECT_EQ(m_->ensure_copy("a", "shopdb", spec, owner).state, State::kPreparing);
  ASSERT_TRUE(until([&] { return m_->ensure_copy("a", "shopdb", spec, owner).state == State::kReady; }));
  struct stat st {};
  ASSERT_EQ(::stat((dir / "data" / "ib_logfile0").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 4242u);
  EXPECT_FALSE(fs::exists(dir / db::Manager::kPrivateServerMarker));
  start_manager();
  EXPECT_EQ(m_->find_copy("a", "shopdb")->owner, owner);
}
