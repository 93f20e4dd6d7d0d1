// What should run (control/planner.h): catalog + environments up → the instances wanted, the gates
// of their starts, and the thin environments falling through to an environment.
#include <gtest/gtest.h>

#include "control/planner.h"

using namespace berth;
using control::Planner;

namespace {

const char* kCatalog = R"(network: {pool: 10.9.0.0/24}
defaults:
  command: svc ${ip}
  ports: {http: 80}
apps:
  db: {}
  migrate: {kind: job, depends_on: [db]}
  api:
    instances: 2
    depends_on: [{app: db, wait_for: all}, {app: migrate, wait_for: completed}, {app: cache, soft: true}]
  cache: {instances: 3}
  web:
    depends_on: [api]
environments:
  baseline: {}
  beta-7:
    base: baseline
    deploy: changed
    apps:
      web: {tag: feature/x}
  scaled:
    apps:
      api: {instances: 4}
)";

using Up = std::set<std::string, std::less<>>;

class PlannerTest : public testing::Test {
 protected:
  void SetUp() override {
    auto c = model::Catalog::parse(kCatalog, "berth.yaml");
    ASSERT_TRUE(c.ok()) << c.error().message;
    catalog_ = std::move(c.value());
    planner_ = Planner(*catalog_);
  }
  std::optional<model::Catalog> catalog_;
  Planner planner_;
};

}  // namespace

TEST_F(PlannerTest, NothingIsWantedOfAnEnvironmentThatIsDown) {
  EXPECT_TRUE(planner_.desired_instances({}).empty());
  EXPECT_EQ(planner_.desired("baseline", {}), nullptr);
  EXPECT_NE(planner_.find("baseline"), nullptr);
  EXPECT_FALSE(planner_.wanted({"baseline", "db", 0}, {}));
}

TEST_F(PlannerTest, EveryInstanceOfEveryAppAnEnvironmentRunsItself) {
  auto keys = planner_.desired_instances(Up{"baseline"});
  EXPECT_EQ(keys.size(), 1u + 1 + 2 + 3 + 1);
  EXPECT_TRUE(planner_.wanted({"baseline", "api", 1}, Up{"baseline"}));
  EXPECT_FALSE(planner_.wanted({"baseline", "api", 2}, Up{"baseline"}));
  EXPECT_TRUE(planner_.wanted({"scaled", "api", 3}, Up{"scaled"}));
  EXPECT_FALSE(planner_.wanted({"nowhere", "api", 0}, Up{"nowhere"}));
}

TEST_F(PlannerTest, AThinEnvironmentRunsOnlyWhatItChangesAndFallsThroughToItsBase) {
  Up up{"baseline", "beta-7"};
  const auto* beta = planner_.desired("beta-7", up);
  ASSERT_NE(beta, nullptr);
  ASSERT_EQ(beta->apps.size(), 1u);
  EXPECT_EQ(beta->apps[0].spec->app, "web");
  EXPECT_FALSE(planner_.wanted({"beta-7", "api", 0}, up));
  EXPECT_EQ(planner_.thin_of("baseline"), std::vector<std::string>{"beta-7"});
  EXPECT_TRUE(planner_.thin_of("beta-7").empty());
  EXPECT_EQ(planner_.spec_of("beta-7", "api"), nullptr);  // it does not run api
  ASSERT_NE(planner_.spec_of("beta-7", "web"), nullptr);
  EXPECT_EQ(planner_.spec_of("beta-7", "web")->tag, "feature/x");
}

TEST_F(PlannerTest, GatesSayWhereADependencyIsServedAndHowManyMustBeReady) {
  const auto* api = planner_.find("baseline")->find("api");
  ASSERT_NE(api, nullptr);
  ASSERT_EQ(api->gates.size(), 3u);
  EXPECT_EQ(api->gates[0].dep->app, "db");
  EXPECT_EQ(api->gates[0].need, 1);  // wait: all of its one instance
  EXPECT_EQ(api->gates[1].dep->app, "migrate");
  EXPECT_EQ(api->gates[1].need, 1);  // a job: every instance completed
  EXPECT_EQ(api->gates[2].need, 1);
  EXPECT_TRUE(api->gates[2].dep->soft);
  // A thin environment's own app waits on its base's instances.
  const auto* web = planner_.find("beta-7")->find("web");
  ASSERT_EQ(web->gates.size(), 1u);
  EXPECT_EQ(web->gates[0].env, "baseline");
  EXPECT_EQ(web->gates[0].dep->app, "api");
}

TEST_F(PlannerTest, ThoseWhoWaitOnAnAppAreItsDependentsHereAndInTheThinEnvironments) {
  using Pairs = Planner::Dependents;
  EXPECT_EQ(planner_.dependents("baseline", "api"), (Pairs{{"baseline", "web"}, {"beta-7", "web"}}));
  EXPECT_EQ(planner_.dependents("baseline", "db"), (Pairs{{"baseline", "migrate"}, {"baseline", "api"}}));
  EXPECT_EQ(planner_.dependents("baseline", "cache"), (Pairs{{"baseline", "api"}}));  // soft ones too
  EXPECT_TRUE(planner_.dependents("baseline", "web").empty());
  EXPECT_TRUE(planner_.dependents("beta-7", "api").empty());  // beta-7 does not run api
}
