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

TEST(Render, ShortLayers) {
  EXPECT_EQ(berth::cli::short_layer("environments.beta-7.apps.orders"), "env beta-7 app override");
  EXPECT_EQ(berth::cli::short_layer("environments.baseline"), "env baseline");
  EXPECT_EQ(berth::cli::short_layer("apps.orders"), "app");
}
