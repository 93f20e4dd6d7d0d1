#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "cli/render.h"

using nlohmann::json;

TEST(Render, RootCauseIsTheDeepestAppNotReady) {
  json s = json::parse(R"({"environment":"e","base":null,"up":true,"ready":false,"apps":[
    {"app":"users","state":"starting","message":"starting","waiting_for":[],"from":{},"tag":"m","build_type":"r",
     "instances":[{"ordinal":0,"state":"starting","health":"GET /healthcheck → connection refused","message":"x"}]},
    {"app":"orders","state":"waiting","message":"waiting for users","waiting_for":["users"],"from":{},"tag":"m","build_type":"r","instances":[]},
    {"app":"gateway","state":"waiting","message":"waiting for orders","waiting_for":["orders"],"from":{},"tag":"m","build_type":"r","instances":[]},
    {"app":"ledger","state":"ready","message":"","waiting_for":[],"from":{},"tag":"m","build_type":"r","instances":[]}]})");
  auto causes = berth::cli::root_causes(s);
  ASSERT_EQ(causes.size(), 1u);
  EXPECT_EQ(causes[0], "users is starting: GET /healthcheck → connection refused (blocking gateway, orders)");
  EXPECT_EQ(berth::cli::progress_summary(s), "1/4 apps ready; starting: users; waiting: orders (for users), gateway (for orders)");
}

TEST(Render, ARootCauseThatExitedSaysSoRatherThanItsLastProbe) {
  json s = json::parse(R"({"environment":"e","base":null,"up":true,"ready":false,"apps":[
    {"app":"users","state":"starting","message":"starting","waiting_for":[],"from":{},"tag":"m","build_type":"r",
     "instances":[{"ordinal":0,"state":"backoff","health":"GET /healthcheck → connection refused",
                   "message":"exited with status 127: command not found; restarting in 200ms"}]}]})");
  auto causes = berth::cli::root_causes(s);
  ASSERT_EQ(causes.size(), 1u);
  EXPECT_EQ(causes[0], "users is starting: exited with status 127: command not found; restarting in 200ms");
}

TEST(Render, StatusFits120ColumnsAndWideShowsAll) {
  std::string long_message(300, 'x');
  json s = json::parse(R"({"environment":"e","base":null,"up":true,"ready":false,"notes":[],"apps":[
    {"app":"users","runs_in":"e","state":"starting","message":"m","waiting_for":[],"from":{},"tag":"main","build_type":"release",
     "ports":{"http":8080,"admin":9090},
     "instances":[{"ordinal":0,"ip":"127.77.0.10","dns":"0.users.e.berth.test","state":"starting","restarts":0,
                   "detail":"pid 4711","health":"","message":"LONG"}]}]})");
  s["apps"][0]["instances"][0]["message"] = long_message;
  const std::string narrow = berth::cli::status_table(s);
  std::size_t widest = 0;
  for (std::size_t i = 0, nl; (nl = narrow.find('\n', i)) != std::string::npos; i = nl + 1) {
    std::string line = narrow.substr(i, nl - i);
    std::size_t n = 0;
    for (unsigned char c : line) n += (c & 0xC0) != 0x80;
    widest = std::max(widest, n);
  }
  EXPECT_LE(widest, 120u);
  EXPECT_THAT(narrow, testing::HasSubstr("127.77.0.10:8080"));
  EXPECT_THAT(narrow, testing::HasSubstr("…"));
  const std::string wide = berth::cli::status_table(s, true);
  EXPECT_THAT(wide, testing::HasSubstr(long_message));
  EXPECT_THAT(wide, testing::HasSubstr("admin=9090 http=8080"));
  EXPECT_THAT(wide, testing::HasSubstr("0.users.e.berth.test"));
  EXPECT_THAT(wide, testing::HasSubstr("pid 4711"));
}

TEST(Render, ShortLayers) {
  EXPECT_EQ(berth::cli::short_layer("environments.beta-7.apps.orders"), "env beta-7 app override");
  EXPECT_EQ(berth::cli::short_layer("environments.baseline"), "env baseline");
  EXPECT_EQ(berth::cli::short_layer("apps.orders"), "app");
  EXPECT_EQ(berth::cli::short_layer("databases.shopdb"), "database");
}

TEST(Render, ADatabaseWaitingForItsCopyAndItsStatusRow) {
  json s = json::parse(R"({"environment":"e","base":null,"up":true,"ready":false,"apps":[
    {"app":"shopdb","runs_in":"e","state":"waiting","message":"cloning shop@1","waiting_for":[],"from":{"standard":"databases.shopdb"},
     "tag":"latest","build_type":"release","instances":[{"ordinal":0,"ip":"127.78.0.1","dns":"0.shopdb.e.berth.test","state":"waiting",
     "restarts":0,"health":"","message":"cloning shop@1"}],
     "database":{"standard":"shop","version":1,"copy_method":"reflink","copy_ms":56,"datadir":"/d"}}]})");
  EXPECT_EQ(berth::cli::progress_summary(s), "0/1 apps ready; waiting: shopdb (cloning shop@1)");
  EXPECT_THAT(berth::cli::status_table(s), testing::HasSubstr("shop → v1 (reflink 0.06s) [database]"));
  json v = json::parse(R"({"store":"local store /b","standards":[{"standard":"shop","versions":[{"standard":"shop","version":2,
    "created_at":"2026-11-28T17:55:12.206Z","bytes":211812352,"files":209,"uploaded_bytes":9437184,"new_chunks":273,"chunks":455,
    "import_ms":1500,"source":"dump /x.sql"}]}]})");
  const std::string table = berth::cli::versions_table(v);
  EXPECT_THAT(table, testing::HasSubstr("store: local store /b"));
  EXPECT_THAT(table, testing::HasSubstr("202 MB"));
  EXPECT_THAT(table, testing::HasSubstr("9 MB (273 new chunks of 455)"));
}
