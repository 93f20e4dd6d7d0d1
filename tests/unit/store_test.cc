#include <filesystem>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include "common/state_v1.h"
#include "store/sqlite/sqlite_store.h"

using namespace berth;

TEST(SqliteStore, PersistsAcrossReopen) {
  auto dir = std::filesystem::temp_directory_path() / ("berth-store-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  auto path = (dir / "state.db").string();
  {
    auto s = store::SqliteStore::open(path);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->save_catalog({"apps: {}", "x.yaml", 5, "/srv", 3, "anna"}).ok());
    ASSERT_TRUE((*s)->set_up("beta", true).ok());
    ASSERT_TRUE((*s)->put_instance({{"beta", "a", 0}, "docker", "3fa2c1d0e9ab", "fp", 2, 7}).ok());
    ASSERT_TRUE((*s)->append_event({0, 1, "beta", "starting", "a", 0, "10.0.0.2", "m"}).ok());
  }
  auto s = store::SqliteStore::open(path);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*(*s)->load_catalog())->filename, "x.yaml");
  EXPECT_EQ((*(*s)->load_catalog())->base_dir, "/srv");
  EXPECT_EQ((*(*s)->load_catalog())->version, 3);
  EXPECT_EQ((*(*s)->load_catalog())->applied_by, "anna");
  EXPECT_EQ(*(*s)->up_environments(), std::vector<std::string>{"beta"});
  auto inst = (*s)->load_instances();
  ASSERT_EQ(inst->size(), 1u);
  EXPECT_EQ(inst->front().runtime, "docker");
  EXPECT_EQ(inst->front().ref, "3fa2c1d0e9ab");
  EXPECT_EQ(inst->front().restarts, 2);
  auto ev = (*s)->events("beta", 0, 10);
  ASSERT_EQ(ev->size(), 1u);
  EXPECT_EQ(ev->front().ip, "10.0.0.2");
  EXPECT_EQ((*s)->events("other", 0, 10)->size(), 0u);
  std::filesystem::remove_all(dir);
}

namespace {

std::string scratch(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("berth-store-" + name + "-" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return (dir / "state.db").string();
}

void run_sql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

}  // namespace

// A state.db as the previous berth (schema 1) wrote it: instances recorded by pid.
TEST(SqliteStore, MigratesTheFirstSchemaKeepingLeasesAndInstances) {
  const std::string path = scratch("v1");
  run_sql(path, std::string(testing_state::kSchemaV1) + R"sql(
INSERT INTO leases VALUES ('dev', 'users', 0, 2135752706, 0);
INSERT INTO instances VALUES ('dev', 'users', 0, 4711, 4711, 987654, 'abc:b1', 3, 1700000000000);
INSERT INTO events (time, env, type, app, ordinal, ip, message) VALUES (1, 'dev', 'ready', 'users', 0, '127.77.0.2', 'ok');
)sql");
  auto s = store::SqliteStore::open(path);
  ASSERT_TRUE(s.ok()) << s.error().message;
  auto leases = (*s)->load_leases();
  ASSERT_EQ(leases->size(), 1u);
  EXPECT_EQ(leases->front().ip, 2135752706u);
  auto inst = (*s)->load_instances();
  ASSERT_EQ(inst->size(), 1u);
  EXPECT_EQ(inst->front().runtime, "process");
  EXPECT_EQ(inst->front().ref, "4711:4711:987654");
  EXPECT_EQ(inst->front().fingerprint, "abc:b1");
  EXPECT_EQ(inst->front().restarts, 3);
  EXPECT_EQ((*s)->events("dev", 0, 10)->size(), 1u);
  s->reset();
  // Opening it again changes nothing more.
  auto again = store::SqliteStore::open(path);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->load_instances()->front().ref, "4711:4711:987654");
}

TEST(SqliteStore, RefusesASchemaNewerThanItKnows) {
  const std::string path = scratch("newer");
  ASSERT_TRUE(store::SqliteStore::open(path).ok());
  run_sql(path, "PRAGMA user_version = 99; INSERT INTO environments_up VALUES ('keep', 1);");
  auto s = store::SqliteStore::open(path);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error().message, testing::HasSubstr("has schema version 99, but this berth knows versions up to"));
  EXPECT_THAT(s.error().message, testing::HasSubstr("nothing was changed"));
  run_sql(path, "PRAGMA user_version = " + std::to_string(store::SqliteStore::schema_version()) + ";");
  auto reopened = store::SqliteStore::open(path);
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ(*(*reopened)->up_environments(), std::vector<std::string>{"keep"});
}

TEST(SqliteStore, DocumentsTokensAndTheAuditLog) {
  const std::string path = scratch("docs");
  {
    auto s = store::SqliteStore::open(path);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->put_document({"anna-x", "base: baseline\n", "anna", 2, 10, "bob"}).ok());
    ASSERT_TRUE((*s)->put_token({"t1", "anna", "member", "ab12", 5, "admin", 0}).ok());
    ASSERT_TRUE((*s)->append_audit({0, 10, "bob", "env.update", "anna-x", "anna-x", 1, 2, ""}).ok());
    ASSERT_TRUE((*s)->append_audit({0, 20, "anna", "env.up", "anna-x", "anna-x", 0, 0, ""}).ok());
    ASSERT_TRUE((*s)->append_audit({0, 30, "anna", "fleet.apply", "berth.yaml", "", 1, 2, ""}).ok());
  }
  auto s = store::SqliteStore::open(path);
  ASSERT_TRUE(s.ok());
  auto docs = (*s)->load_documents();
  ASSERT_EQ(docs->size(), 1u);
  EXPECT_EQ(docs->front().owner, "anna");
  EXPECT_EQ(docs->front().version, 2);
  EXPECT_EQ(docs->front().updated_by, "bob");
  EXPECT_EQ((*s)->load_tokens()->front().hash, "ab12");
  EXPECT_EQ((*s)->audit({"anna-x", "", 0, 100})->size(), 2u);
  EXPECT_EQ((*s)->audit({"", "anna", 0, 100})->size(), 2u);
  EXPECT_EQ((*s)->audit({"", "", 25, 100})->size(), 1u);
  auto newest = (*s)->audit({"", "", 0, 2});
  ASSERT_EQ(newest->size(), 2u);
  EXPECT_EQ(newest->back().action, "fleet.apply");  // the newest, last
}

TEST(SqliteStore, ATransactionWritesAllOrNothing) {
  const std::string path = scratch("tx");
  auto s = store::SqliteStore::open(path);
  ASSERT_TRUE(s.ok());
  Status st = (*s)->transaction([&]() -> Status {
    if (auto w = (*s)->put_document({"a", "", "anna", 1, 1, "anna"}); !w.ok()) return w;
    return conflict("refused half way");
  });
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE((*s)->load_documents()->empty());
  ASSERT_TRUE((*s)->transaction([&] { return (*s)->put_document({"a", "", "anna", 1, 1, "anna"}); }).ok());
  EXPECT_EQ((*s)->load_documents()->size(), 1u);
}

TEST(StoreEnvUids, StoredUniqueAndForgotten) {
  auto s = std::move(store::SqliteStore::open(":memory:").value());
  ASSERT_TRUE(s->put_env_uid("dev", 900001).ok());
  ASSERT_TRUE(s->put_env_uid("qa", 900002).ok());
  auto again = s->put_env_uid("beta", 900001);  // one uid, one environment
  EXPECT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, ErrorCode::kConflict);
  auto m = s->load_env_uids();
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->size(), 2u);
  EXPECT_EQ(m->at("dev"), 900001u);
  ASSERT_TRUE(s->erase_env_uid("dev").ok());
  ASSERT_TRUE(s->put_env_uid("beta", 900001).ok());
  EXPECT_EQ(s->load_env_uids()->count("dev"), 0u);
}

TEST(SqliteStore, EachEnvironmentKeepsItsNewestEvents) {
  auto s = std::move(store::SqliteStore::open(":memory:").value());
  s->set_event_limit(160);  // trimmed every 10 appends
  std::int64_t newest = 0;
  for (int i = 0; i < 1000; ++i) newest = s->append_event({0, i, "busy", "probe-error", "a", 0, "", std::to_string(i)})->id;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(s->append_event({0, i, "quiet", "ready", "a", 0, "", ""}).ok());
  auto busy = s->events("busy", 0, 100'000);
  ASSERT_TRUE(busy.ok());
  EXPECT_GE(busy->size(), 160u);
  EXPECT_LE(busy->size(), 170u);
  EXPECT_EQ(busy->back().id, newest);
  EXPECT_EQ(busy->back().message, "999");
  EXPECT_EQ(busy->front().message, std::to_string(1000 - busy->size()));  // the oldest went, in order
  EXPECT_EQ(s->events("quiet", 0, 100)->size(), 5u);  // another environment's are its own
}
