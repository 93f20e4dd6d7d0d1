#include <filesystem>

#include <gtest/gtest.h>

#include "store/sqlite/sqlite_store.h"

using namespace berth;

TEST(SqliteStore, PersistsAcrossReopen) {
  auto dir = std::filesystem::temp_directory_path() / ("berth-store-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  auto path = (dir / "state.db").string();
  {
    auto s = store::SqliteStore::open(path);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->save_catalog({"apps: {}", "x.yaml", 5, "/srv"}).ok());
    ASSERT_TRUE((*s)->set_up("beta", true).ok());
    ASSERT_TRUE((*s)->put_instance({{"beta", "a", 0}, 123, 123, 999, "fp", 2, 7}).ok());
    ASSERT_TRUE((*s)->append_event({0, 1, "beta", "starting", "a", 0, "10.0.0.2", "m"}).ok());
  }
  auto s = store::SqliteStore::open(path);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*(*s)->load_catalog())->filename, "x.yaml");
  EXPECT_EQ((*(*s)->load_catalog())->base_dir, "/srv");
  EXPECT_EQ(*(*s)->up_environments(), std::vector<std::string>{"beta"});
  auto inst = (*s)->load_instances();
  ASSERT_EQ(inst->size(), 1u);
  EXPECT_EQ(inst->front().start_ticks, 999u);
  EXPECT_EQ(inst->front().restarts, 2);
  auto ev = (*s)->events("beta", 0, 10);
  ASSERT_EQ(ev->size(), 1u);
  EXPECT_EQ(ev->front().ip, "10.0.0.2");
  EXPECT_EQ((*s)->events("other", 0, 10)->size(), 0u);
  std::filesystem::remove_all(dir);
}
