// A standard's migrations (db/migrations.h): Flyway's names, and what a release may add.
#include "db/migrations.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/digest.h"

namespace berth::db {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

Migration named(const std::string& file, const std::string& sql, int released_in = 0) {
  auto m = parse_migration_name(file);
  EXPECT_TRUE(m.ok() && *m) << file;
  Migration out = **m;
  out.sql = sql;
  out.checksum = sha256_hex(sql);
  out.released_in = released_in;
  return out;
}

std::vector<std::string> files(const std::vector<Migration>& ms) {
  std::vector<std::string> out;
  for (const auto& m : ms) out.push_back(m.file);
  return out;
}

TEST(MigrationNames, FlywaysNamingIsReadAndAnythingElseNamed) {
  auto v = parse_migration_name("V7__add_refund_state.sql");
  ASSERT_TRUE(v.ok() && *v);
  EXPECT_EQ((*v)->kind, Migration::Kind::kVersioned);
  EXPECT_EQ((*v)->version, (std::vector<std::uint64_t>{7}));
  EXPECT_EQ((*v)->description, "add refund state");
  EXPECT_EQ((*parse_migration_name("V1_2__x.sql"))->version_text(), "1.2");
  EXPECT_EQ((*parse_migration_name("V1.10__x.sql"))->version, (std::vector<std::uint64_t>{1, 10}));
  auto r = parse_migration_name("R__views.sql");
  ASSERT_TRUE(r.ok() && *r);
  EXPECT_EQ((*r)->kind, Migration::Kind::kRepeatable);
  EXPECT_EQ((*r)->version_text(), "");
  // Not SQL: left alone.
  ASSERT_TRUE(parse_migration_name("README.md").ok());
  EXPECT_FALSE(*parse_migration_name("README.md"));
  // SQL named otherwise: refused, naming the file and the naming.
  for (const char* bad : {"V7_add.sql", "v7__add.sql", "V__add.sql", "V7a__add.sql", "V7__.sql", "U7__undo.sql", "V1..2__x.sql",
                          "V99999999999999999999999__x.sql"}) {
    auto p = parse_migration_name(bad);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_THAT(p.error().message, HasSubstr(bad));
    EXPECT_THAT(p.error().message, HasSubstr("V<version>__<description>.sql"));
  }
}

TEST(MigrationNames, VersionsCompareNumberByNumberAndRepeatablesComeLast) {
  std::vector<Migration> ms = {named("R__b.sql", ""), named("V1.10__x.sql", ""), named("R__a.sql", ""), named("V1.9__x.sql", ""),
                               named("V2__x.sql", "")};
  std::sort(ms.begin(), ms.end(), migration_before);
  EXPECT_EQ(files(ms), (std::vector<std::string>{"V1.9__x.sql", "V1.10__x.sql", "V2__x.sql", "R__a.sql", "R__b.sql"}));
}

TEST(MigrationRelease, NewVersionsAndChangedRepeatablesArePending) {
  std::vector<Migration> released = {named("V1__a.sql", "create table a (id int);", 2), named("R__views.sql", "v1", 2)};
  std::vector<Migration> here = {named("V1__a.sql", "create table a (id int);"), named("V2__b.sql", "b"),
                                 named("V3__c.sql", "c"), named("R__views.sql", "v2")};
  auto p = plan_release("inv", released, here);
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ(files(*p), (std::vector<std::string>{"V2__b.sql", "V3__c.sql", "R__views.sql"}));
  // An unchanged repeatable is not applied again; nothing new is refused.
  auto none = plan_release("inv", released, {named("V1__a.sql", "create table a (id int);"), named("R__views.sql", "v1")});
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(none.error().message, HasSubstr("nothing to release"));
  // A first release of a standard imported without migrations: from any version.
  auto first = plan_release("inv", {}, {named("V40__x.sql", "x")});
  ASSERT_TRUE(first.ok());
}

TEST(MigrationRelease, AnEditedOrMissingReleasedMigrationIsRefusedWithBothChecksums) {
  std::vector<Migration> released = {named("V1__a.sql", "create table a (id int);", 2), named("V2__b.sql", "b", 3)};
  auto edited = plan_release("inv", released, {named("V1__a.sql", "create table a (id bigint);"), named("V2__b.sql", "b"),
                                               named("V3__c.sql", "c")});
  ASSERT_FALSE(edited.ok());
  EXPECT_EQ(edited.error().code, ErrorCode::kConflict);
  EXPECT_THAT(edited.error().message, HasSubstr("V1__a.sql changed since version 2 of 'inv' released it"));
  EXPECT_THAT(edited.error().message, HasSubstr(sha256_hex(std::string("create table a (id int);")).substr(0, 12)));
  EXPECT_THAT(edited.error().message, HasSubstr(sha256_hex(std::string("create table a (id bigint);")).substr(0, 12)));
  auto missing = plan_release("inv", released, {named("V2__b.sql", "b"), named("V3__c.sql", "c")});
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.error().message, HasSubstr("V1__a.sql was released in version 2 of 'inv' and is not in the directory"));
}

TEST(MigrationRelease, GapsAndOutOfOrderVersionsNeedOutOfOrder) {
  std::vector<Migration> released = {named("V1__a.sql", "a", 2), named("V5__e.sql", "e", 3)};
  auto gap = plan_release("inv", released, {named("V1__a.sql", "a"), named("V5__e.sql", "e"), named("V7__g.sql", "g")});
  ASSERT_FALSE(gap.ok());
  EXPECT_THAT(gap.error().message, HasSubstr("V7__g.sql leaves a gap: the version after V5 is V6"));
  auto late = plan_release("inv", released, {named("V1__a.sql", "a"), named("V3__c.sql", "c"), named("V5__e.sql", "e")});
  ASSERT_FALSE(late.ok());
  EXPECT_THAT(late.error().message, HasSubstr("V3__c.sql is out of order: 'inv' is at V5 already"));
  auto both = plan_release("inv", released,
                           {named("V1__a.sql", "a"), named("V3__c.sql", "c"), named("V5__e.sql", "e"), named("V7__g.sql", "g")},
                           {.out_of_order = true});
  ASSERT_TRUE(both.ok()) << both.error().message;
  EXPECT_EQ(files(*both), (std::vector<std::string>{"V3__c.sql", "V7__g.sql"}));
  // Dotted versions: their order only.
  auto dotted = plan_release("inv", {named("V1.1__a.sql", "a", 2)}, {named("V1.1__a.sql", "a"), named("V1.4__d.sql", "d")});
  EXPECT_TRUE(dotted.ok());
}

TEST(MigrationRelease, ADirectoryIsReadInOrderWithChecksumsAndDuplicatesRefused) {
  const fs::path dir = fs::temp_directory_path() / ("berth-migrations-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "sub");
  auto write = [&](const std::string& name, const std::string& text) { std::ofstream(dir / name) << text; };
  write("V2__b.sql", "select 2;");
  write("V1__a.sql", "select 1;");
  write("R__v.sql", "select 3;");
  write("notes.txt", "not a migration");
  auto ms = read_migrations(dir.string());
  ASSERT_TRUE(ms.ok()) << ms.error().message;
  EXPECT_EQ(files(*ms), (std::vector<std::string>{"V1__a.sql", "V2__b.sql", "R__v.sql"}));
  EXPECT_EQ((*ms)[0].sql, "select 1;");
  EXPECT_EQ((*ms)[0].checksum, sha256_hex(std::string("select 1;")));
  write("V1.0__again.sql", "x");  // V1 twice
  auto twice = read_migrations(dir.string());
  ASSERT_FALSE(twice.ok());
  EXPECT_THAT(twice.error().message, HasSubstr("have the same version 1"));
  fs::remove(dir / "V1.0__again.sql");
  write("add_column.sql", "x");
  auto misnamed = read_migrations(dir.string());
  ASSERT_FALSE(misnamed.ok());
  EXPECT_THAT(misnamed.error().message, HasSubstr("add_column.sql"));
  EXPECT_FALSE(read_migrations((dir / "nowhere").string()).ok());
  fs::remove(dir / "add_column.sql");
  fs::create_symlink("/etc/hostname", dir / "V3__elsewhere.sql");  // a repository's link out of itself
  auto linked = read_migrations(dir.string());
  ASSERT_FALSE(linked.ok());
  EXPECT_THAT(linked.error().message, HasSubstr("V3__elsewhere.sql is not a regular file"));
  fs::remove_all(dir);
}

TEST(MigrationRelease, ARecordReadsBackWithoutItsText) {
  Migration m = named("V3__add_x.sql", "alter table t add x int;", 4);
  auto back = migration_from_json(to_json(m));
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->file, m.file);
  EXPECT_EQ(back->version, m.version);
  EXPECT_EQ(back->checksum, m.checksum);
  EXPECT_EQ(back->released_in, 4);
  EXPECT_EQ(back->sql, "");
  EXPECT_FALSE(migration_from_json(nlohmann::json{{"file", "x.sql"}, {"checksum", "ab"}}).ok());
  EXPECT_FALSE(migration_from_json(nlohmann::json::array()).ok());
}

}  // namespace
}  // namespace berth::db
