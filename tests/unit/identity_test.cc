// base/identity: the id range a root daemon hands out, host accounts, and chown of a tree.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/identity.h"

using namespace berth;
using testing::HasSubstr;

TEST(IdRange, ParsesAndRefusesWhatCannotWork) {
  std::string why;
  auto r = parse_id_range("900000-999999", &why);
  ASSERT_TRUE(r.has_value()) << why;
  EXPECT_EQ(r->group(), 900000u);
  EXPECT_EQ(r->builder(), (Identity{900000, 900000}));
  EXPECT_EQ(r->size(), 99999u);
  EXPECT_FALSE(parse_id_range("0-100", &why));
  EXPECT_THAT(why, HasSubstr("root"));
  EXPECT_FALSE(parse_id_range("100-100", &why));
  EXPECT_THAT(why, HasSubstr("above FIRST"));
  EXPECT_FALSE(parse_id_range("100", &why));
  EXPECT_FALSE(parse_id_range("a-b", &why));
  EXPECT_FALSE(parse_id_range("100-4294967295", &why));
}

TEST(LookupUser, NamesNumbersAndGroups) {
  auto root = lookup_user("root");
  ASSERT_TRUE(root.ok());
  EXPECT_EQ(*root, (Identity{0, 0}));
  auto nobody = lookup_user("nobody:root");
  ASSERT_TRUE(nobody.ok()) << nobody.error().message;
  EXPECT_EQ(nobody->gid, 0u);
  EXPECT_NE(nobody->uid, 0u);
  auto numeric = lookup_user("123456:654");
  ASSERT_TRUE(numeric.ok());
  EXPECT_EQ(*numeric, (Identity{123456, 654}));
  auto missing = lookup_user("no-such-account");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.error().message, HasSubstr("'no-such-account' is not an account"));
  EXPECT_FALSE(lookup_user("root:no-such-group").ok());
  EXPECT_FALSE(lookup_user(":0").ok());
}

TEST(ChownTree, GivesEveryEntryButFollowsNoLink) {
  if (::geteuid() != 0) GTEST_SKIP() << "chown to another user needs root";
  namespace fs = std::filesystem;
  fs::path dir = fs::path(testing::TempDir()) / ("berth-chown-" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "a" / "b");
  std::ofstream(dir / "a" / "b" / "f") << "x";
  fs::path outside = fs::path(testing::TempDir()) / ("berth-chown-outside-" + std::to_string(getpid()));
  std::ofstream(outside) << "y";
  fs::create_symlink(outside, dir / "a" / "link");
  ASSERT_TRUE(chown_tree(dir.string(), {777001, 777000}).ok());
  for (const auto& p : {dir, dir / "a", dir / "a" / "b", dir / "a" / "b" / "f", dir / "a" / "link"}) {
    struct stat st {};
    ASSERT_EQ(::lstat(p.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 777001u) << p;
    EXPECT_EQ(st.st_gid, 777000u) << p;
  }
  struct stat st {};
  ASSERT_EQ(::stat(outside.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);  // the link's target is not the tree's
  fs::remove_all(dir);
  fs::remove(outside);
  EXPECT_FALSE(chown_tree((dir / "gone").string(), {1, 1}).ok());
}

TEST(ProcessIdentity, ReadsOurOwn) {
  auto me = process_identity(::getpid());
  ASSERT_TRUE(me.has_value());
  EXPECT_EQ(me->uid, ::getuid());
  EXPECT_EQ(me->gid, ::getgid());
}
