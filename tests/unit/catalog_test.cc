// Catalog loading: layered resolution with provenance, and every validation error located.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "model/catalog.h"

using berth::model::Catalog;
using testing::HasSubstr;

namespace {

const char* kGood = R"(network:
  pool: 127.77.0.0/24
  exclude: [127.77.0.1]
defaults:
  tag: main
  command: svc --listen ${ip}:${port.http}
  ports: {http: 8080}
  health: {type: http, path: /healthcheck}
  env: {LOG_LEVEL: info, REGION: eu}
apps:
  users: {instances: 2}
  orders:
    depends_on: [users]
    env: {REGION: us}
environments:
  baseline:
    tag: release-1
  beta-7:
    base: baseline
    env: {LOG_LEVEL: debug}
    apps:
      orders: {tag: feature/new-pay, build_type: debug}
  beta-8:
    base: beta-7
)";

std::string replaced_once(std::string text, const std::string& from, const std::string& to) {
  auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

std::string errors_of(const std::string& yaml) {
  auto c = Catalog::parse(yaml, "berth.yaml");
  if (c.ok()) return "";
  std::string all;
  for (const auto& d : c.error().details) all += d + "\n";
  return all;
}

}  // namespace

TEST(Catalog, ResolvesLayersWithProvenance) {
  auto c = Catalog::parse(kGood, "berth.yaml");
  ASSERT_TRUE(c.ok()) << c.error().message;
  const auto* beta = c->find("beta-7");
  ASSERT_NE(beta, nullptr);
  EXPECT_EQ(beta->base, "baseline");
  const auto* orders = beta->find("orders");
  ASSERT_NE(orders, nullptr);
  EXPECT_EQ(orders->tag, "feature/new-pay");
  EXPECT_EQ(orders->from.at("tag"), "environments.beta-7.apps.orders");
  EXPECT_EQ(orders->build_type, "debug");
  EXPECT_EQ(orders->env.at("LOG_LEVEL"), "debug");
  EXPECT_EQ(orders->from.at("env.LOG_LEVEL"), "environments.beta-7");
  EXPECT_EQ(orders->env.at("REGION"), "us");
  EXPECT_EQ(orders->from.at("env.REGION"), "apps.orders");
  EXPECT_EQ(orders->from.at("command"), "defaults");
  EXPECT_EQ(orders->from.at("health.failure_threshold"), "built-in");
  const auto* users = beta->find("users");
  EXPECT_EQ(users->tag, "release-1");  // from the base environment
  EXPECT_EQ(users->from.at("tag"), "environments.baseline");
  EXPECT_EQ(users->instances, 2);
  // A chain of two bases: beta-8 inherits beta-7's override.
  EXPECT_EQ(c->find("beta-8")->find("orders")->tag, "feature/new-pay");
  EXPECT_EQ(c->find("beta-8")->find("orders")->from.at("tag"), "environments.beta-7.apps.orders");
}

TEST(Catalog, OrdersAppsAfterTheirDependencies) {
  auto c = Catalog::parse(kGood, "berth.yaml");
  ASSERT_TRUE(c.ok());
  const auto& apps = c->find("baseline")->apps;
  ASSERT_EQ(apps.size(), 2u);
  EXPECT_EQ(apps[0].app, "users");
  EXPECT_EQ(apps[1].app, "orders");
}

TEST(Catalog, FingerprintChangesOnlyWithProcessSettings) {
  auto c = Catalog::parse(kGood, "berth.yaml");
  ASSERT_TRUE(c.ok());
  EXPECT_NE(c->find("baseline")->find("orders")->fingerprint(), c->find("beta-7")->find("orders")->fingerprint());
  EXPECT_NE(c->find("baseline")->find("users")->fingerprint(), c->find("beta-7")->find("users")->fingerprint());  // LOG_LEVEL
  EXPECT_EQ(c->find("beta-7")->find("orders")->fingerprint(), c->find("beta-8")->find("orders")->fingerprint());
}

TEST(Catalog, UnknownKeyIsLocatedWithSuggestion) {
  std::string y = kGood;
  y.replace(y.find("    depends_on: [users]"), 23, "    depends_onn: [users]");
  auto e = errors_of(y);
  EXPECT_THAT(e, HasSubstr("berth.yaml:13:5: unknown key 'depends_onn' in apps.orders (did you mean 'depends_on'?)"));
}

TEST(Catalog, UnknownDependencyIsLocated) {
  std::string y = kGood;
  y.replace(y.find("[users]"), 7, "[userz]");
  EXPECT_THAT(errors_of(y), HasSubstr("berth.yaml:13:18: apps.orders.depends_on: unknown app 'userz' (did you mean 'users'?)"));
}

TEST(Catalog, DependencyCyclePrintsTheCycle) {
  std::string y = kGood;
  y.replace(y.find("  users: {instances: 2}"), 23, "  users: {instances: 2, depends_on: [orders]}");
  auto e = errors_of(y);
  EXPECT_THAT(e, HasSubstr("dependency cycle: orders → users → orders"));
  EXPECT_THAT(e, HasSubstr("berth.yaml:"));
}

TEST(Catalog, SoftDependenciesMayFormCycles) {
  std::string y = kGood;
  y.replace(y.find("  users: {instances: 2}"), 23, "  users: {instances: 2, depends_on: [{app: orders, soft: true}]}");
  EXPECT_EQ(errors_of(y), "");
}

TEST(Catalog, BaseEnvironmentCycle) {
  std::string y = kGood;
  y.replace(y.find("  baseline:\n    tag: release-1"), 30, "  baseline:\n    base: beta-8\n    tag: release-1");
  EXPECT_THAT(errors_of(y), HasSubstr("base environment cycle: "));
  EXPECT_THAT(errors_of(y), HasSubstr("beta-8 → beta-7 → baseline → beta-8"));
}

TEST(Catalog, UnknownBaseEnvironment) {
  std::string y = kGood;
  y.replace(y.find("base: baseline"), 14, "base: basline");
  EXPECT_THAT(errors_of(y), HasSubstr("berth.yaml:19:11: environments.beta-7.base: unknown environment 'basline' (did you mean 'baseline'?)"));
}

TEST(Catalog, BadDurationNamesValueAndValidForms) {
  std::string y = kGood;
  y.replace(y.find("path: /healthcheck}"), 19, "path: /healthcheck, interval: 2 seconds}");
  EXPECT_THAT(errors_of(y), HasSubstr("berth.yaml:8:54: health.interval: bad duration '2 seconds'; write a number with a unit"));
}

TEST(Catalog, BadPort) {
  std::string y = kGood;
  y.replace(y.find("{http: 8080}"), 12, "{http: 80800}");
  auto e = errors_of(y);
  EXPECT_THAT(e, HasSubstr("berth.yaml:7:17: ports.http must be an integer from 1 to 65535, not '80800'"));
  EXPECT_EQ(std::count(e.begin(), e.end(), '\n'), 1) << "one mistake, one error: " << e;
}

TEST(Catalog, DuplicatePortInOneApp) {
  std::string y = kGood;
  y.replace(y.find("  users: {instances: 2}"), 23, "  users: {instances: 2, ports: {admin: 8080}}");
  EXPECT_THAT(errors_of(y), HasSubstr("duplicate port 8080: ports.admin and ports.http of app 'users' both use it"));
}

TEST(Catalog, PoolTooSmall) {
  std::string y = kGood;
  y.replace(y.find("127.77.0.0/24"), 13, "127.77.0.0/29");
  // /29: 8 addresses − network − broadcast − 1 excluded = 5; three environments × 3 instances = 9.
  EXPECT_THAT(errors_of(y), HasSubstr("berth.yaml:2:9: network.pool 127.77.0.0/29 has 5 usable addresses"));
  EXPECT_THAT(errors_of(y), HasSubstr("ask for 9 instances (baseline 3, beta-7 3, beta-8 3)"));
}

TEST(Catalog, UnknownPlaceholderInCommand) {
  std::string y = kGood;
  y.replace(y.find("${port.http}"), 12, "${port.htp}");
  EXPECT_THAT(errors_of(y), HasSubstr("uses unknown placeholder '${port.htp}' (did you mean '${port.http}'?)"));
}

TEST(Catalog, UnknownAppInEnvironmentOverride) {
  std::string y = kGood;
  y.replace(y.find("      orders: {tag"), 13, "      ordres:");
  EXPECT_THAT(errors_of(y), HasSubstr("environments.beta-7.apps: unknown app 'ordres' (did you mean 'orders'?)"));
}

TEST(Catalog, ReportsEveryErrorNotJustTheFirst) {
  std::string y = kGood;
  y.replace(y.find("[users]"), 7, "[userz]");
  y.replace(y.find("{http: 8080}"), 12, "{http: 0}");
  auto c = Catalog::parse(y, "berth.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_GE(c.error().details.size(), 2u);
}

TEST(Catalog, YamlSyntaxErrorIsLocated) {
  EXPECT_THAT(errors_of("apps: [unclosed\n"), HasSubstr("berth.yaml:2:1: YAML syntax error"));
}

TEST(Catalog, SubstituteQuotesValues) {
  EXPECT_EQ(berth::model::substitute("run ${app} --tag=${tag} ${unknown}", {{"app", "a"}, {"tag", "it's"}}),
            "run 'a' --tag='it'\\''s' ${unknown}");
}

TEST(Network, FormatsEveryOctetWidth) {
  for (const char* text : {"0.0.0.0", "255.255.255.255", "10.100.9.200", "192.168.10.1", "1.20.255.0"})
    EXPECT_EQ(berth::model::format_ipv4(*berth::model::parse_ipv4(text)), text);
}

TEST(Network, ParsesRangesAndCountsUsable) {
  berth::model::NetworkSpec n;
  n.pool = *berth::model::parse_range("10.0.0.0/28");
  EXPECT_EQ(n.usable_count(), 13u);  // not the network, the gateway (.1) or the broadcast address
  EXPECT_FALSE(n.usable(n.gateway()));
  EXPECT_EQ(berth::model::format_ipv4(n.gateway()), "10.0.0.1");
  n.exclude = {*berth::model::parse_range("10.0.0.1"), *berth::model::parse_range("10.0.0.0-10.0.0.3"),
               *berth::model::parse_range("10.0.0.8/30")};
  EXPECT_EQ(n.usable_count(), 13u - 2u - 4u);
  EXPECT_FALSE(n.usable(*berth::model::parse_ipv4("10.0.0.0")));
  EXPECT_FALSE(n.usable(*berth::model::parse_ipv4("10.0.0.15")));
  EXPECT_FALSE(n.usable(*berth::model::parse_ipv4("10.0.0.9")));
  EXPECT_TRUE(n.usable(*berth::model::parse_ipv4("10.0.0.4")));
  EXPECT_FALSE(berth::model::parse_range("10.0.0.1/24").has_value());  // host bits set
  EXPECT_FALSE(berth::model::parse_ipv4("10.0.0.256").has_value());
  EXPECT_FALSE(berth::model::parse_ipv4("10.0.0").has_value());
}

namespace {
const char* kThin = R"(defaults: {command: svc}
apps:
  db: {}
  users: {depends_on: [db]}
  orders: {depends_on: [users]}
  gateway: {depends_on: [orders]}
  audit: {depends_on: [{app: orders, soft: true}]}
  search: {}
  reports: {}
environments:
  baseline: {}
  beta:
    base: baseline
    deploy: changed
    include: [reports]
    apps:
      users: {tag: feature/x}
  beta-2:
    base: beta
    deploy: changed
)";
}  // namespace

TEST(Catalog, ThinEnvironmentRunsChangedAppsTheirCallersAndIncluded) {
  auto c = Catalog::parse(kThin, "berth.yaml");
  ASSERT_TRUE(c.ok()) << c.error().message;
  const auto* beta = c->find("beta");
  ASSERT_TRUE(beta->deploy_changed);
  // users changed; orders and gateway call it (transitively); audit calls orders softly.
  for (const char* a : {"users", "orders", "gateway", "audit", "reports"}) EXPECT_TRUE(beta->runs(a)) << a;
  for (const char* a : {"db", "search"}) {
    EXPECT_FALSE(beta->runs(a)) << a;
    EXPECT_EQ(beta->served_by.at(a), "baseline") << a;
  }
  EXPECT_EQ(beta->instance_count(), 5);
  // beta-2 changes nothing: everything falls through, each app to whoever runs it up the chain.
  const auto* beta2 = c->find("beta-2");
  EXPECT_EQ(beta2->instance_count(), 0);
  EXPECT_EQ(beta2->served_by.at("users"), "beta");
  EXPECT_EQ(beta2->served_by.at("db"), "baseline");
  EXPECT_EQ(c->find("baseline")->served_by.at("db"), "baseline");
}

TEST(Catalog, ThinEnvironmentErrors) {
  std::string no_base = kThin;
  no_base.replace(no_base.find("  beta-2:\n    base: beta\n"), 25, "  beta-2:\n");
  EXPECT_THAT(errors_of(no_base), HasSubstr("environments.beta-2: deploy: changed needs a base environment"));
  std::string bad_mode = replaced_once(kThin, "deploy: changed\n    include", "deploy: some\n    include");
  EXPECT_THAT(errors_of(bad_mode), HasSubstr("environments.beta.deploy must be all | changed, not 'some'"));
  std::string bad_include = replaced_once(kThin, "include: [reports]", "include: [reprots]");
  EXPECT_THAT(errors_of(bad_include), HasSubstr("environments.beta.include: unknown app 'reprots' (did you mean 'reports'?)"));
}

TEST(Catalog, DnsSettings) {
  auto c = Catalog::parse(std::string(kThin) + "dns: {zone: Dev.Example., ttl: 5s, negative_ttl: 1s}\n", "berth.yaml");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->dns().zone, "dev.example");
  EXPECT_EQ(c->dns().ttl_ms, 5000);
  EXPECT_THAT(errors_of(std::string(kThin) + "dns: {zone: 'bad zone'}\n"), HasSubstr("dns.zone 'bad zone' must be a domain name"));
  EXPECT_THAT(errors_of(std::string(kThin) + "dns: {ttl: 1500ms}\n"), HasSubstr("dns.ttl: '1500ms' must be whole seconds"));
}

TEST(Catalog, DatabasesRunAsAppsWithAStandardOverridablePerEnvironment) {
  std::string yaml = std::string(kGood) + R"(databases:
  shopdb:
    standard: shop
    port: 3307
    options: {innodb_buffer_pool_size: 64M}
)";
  yaml = replaced_once(yaml, "    depends_on: [users]", "    depends_on: [users, shopdb]");
  yaml = replaced_once(yaml, "      orders: {tag: feature/new-pay, build_type: debug}",
                       "      orders: {tag: feature/new-pay, build_type: debug}\n      shopdb: {standard: shop@2}");
  auto c = Catalog::parse(yaml, "berth.yaml");
  ASSERT_TRUE(c.ok()) << c.error().message << "\n" << (c.ok() ? "" : c.error().details.front());
  const auto* base = c->find("baseline")->find("shopdb");
  ASSERT_NE(base, nullptr);
  ASSERT_TRUE(base->database);
  EXPECT_EQ(base->database->standard, "shop");
  EXPECT_EQ(base->database->version, 0);
  EXPECT_EQ(base->ports.at("sql"), 3307);
  EXPECT_THAT(base->command, HasSubstr("--innodb-buffer-pool-size=64M"));
  EXPECT_THAT(base->command, HasSubstr("${datadir}"));
  EXPECT_EQ(base->from.at("standard"), "databases.shopdb");
  const auto* beta = c->find("beta-7")->find("shopdb");
  EXPECT_EQ(beta->database->version, 2);
  EXPECT_EQ(beta->from.at("standard"), "environments.beta-7.apps.shopdb");
  EXPECT_NE(base->fingerprint(), beta->fingerprint());
  // The database starts before the app that depends on it.
  const auto& apps = c->find("baseline")->apps;
  auto pos = [&](const std::string& a) {
    return std::find_if(apps.begin(), apps.end(), [&](const auto& s) { return s.app == a; }) - apps.begin();
  };
  EXPECT_LT(pos("shopdb"), pos("orders"));
  EXPECT_FALSE(c->find("baseline")->find("users")->database);
  EXPECT_EQ(c->find("baseline")->find("users")->from.count("standard"), 0u);
  EXPECT_EQ(base->database->rollout, "manual");
}

TEST(Catalog, ADatabasesRolloutIsLayeredAndAnEnvironmentMayOptOutForAllItsDatabases) {
  std::string yaml = std::string(kGood) + "databases:\n  shopdb:\n    standard: shop\n    rollout: auto\n";
  yaml = replaced_once(yaml, "      orders: {tag: feature/new-pay, build_type: debug}",
                       "      orders: {tag: feature/new-pay, build_type: debug}\n    rollout: none");
  auto c = Catalog::parse(yaml, "berth.yaml");
  ASSERT_TRUE(c.ok()) << c.error().message << "\n" << (c.ok() ? "" : c.error().details.front());
  EXPECT_EQ(c->find("baseline")->find("shopdb")->database->rollout, "auto");
  EXPECT_EQ(c->find("baseline")->find("shopdb")->from.at("rollout"), "databases.shopdb");
  // An environment's `rollout: none` covers its databases; apps have no such setting.
  const auto* beta = c->find("beta-7");
  ASSERT_TRUE(beta->find("shopdb"));
  EXPECT_EQ(beta->find("shopdb")->database->rollout, "none");
  EXPECT_EQ(beta->find("orders")->from.count("rollout"), 0u);
  EXPECT_THAT(errors_of(replaced_once(yaml, "rollout: auto", "rollout: sometimes")),
              HasSubstr("rollout must be one of auto | manual | none, not 'sometimes'"));
}

TEST(Catalog, DatabaseErrorsAreLocated) {
  const std::string base = std::string(kGood) + "databases:\n  shopdb:\n    standard: shop\n";
  EXPECT_THAT(errors_of(replaced_once(base, "standard: shop", "standard: shop@x")),
              HasSubstr("berth.yaml:27:15: database 'shopdb': standard 'shop@x' must be NAME or NAME@VERSION"));
  EXPECT_THAT(errors_of(replaced_once(base, "standard: shop", "engine: oracle\n    standard: shop")),
              HasSubstr("berth.yaml:27:13: databases.shopdb.engine must be mariadb, not 'oracle'"));
  EXPECT_THAT(errors_of(replaced_once(base, "  shopdb:", "  users:")), HasSubstr("has the name of an app"));
  EXPECT_THAT(errors_of(replaced_once(base, "    standard: shop", "    standrd: shop")),
              HasSubstr("unknown key 'standrd' in databases.shopdb (did you mean 'standard'?)"));
  EXPECT_THAT(errors_of(replaced_once(kGood, "  users: {instances: 2}", "  users: {instances: 2, standard: shop}")),
              HasSubstr("'standard' is a setting of databases; 'users' is an app"));
}

// ---- scale: long base chains, many apps, environments sharing what they inherit -----------

namespace {

// `n` environments, each based on the one before; each sets LEVEL for every app, every 100th
// also orders' tag; `thin`: deploy: changed.
std::string chain_catalog(int n, bool thin, const std::string& first_base = "") {
  std::string y =
      "defaults:\n  command: svc ${ip}\n  ports: {http: 8080}\napps:\n  users: {}\n  orders: {depends_on: [users]}\n"
      "  web: {depends_on: [orders]}\nenvironments:\n";
  for (int e = 0; e < n; ++e) {
    std::string base = e > 0 ? "env-" + std::to_string(e - 1) : first_base;
    y += "  env-" + std::to_string(e) + ":\n";
    if (!base.empty()) y += "    base: " + base + "\n";
    if (e == 0) y += "    tag: root\n";
    if (thin && e > 0) y += "    deploy: changed\n";
    if (!thin) y += "    env: {LEVEL: '" + std::to_string(e) + "'}\n";
    if (e % 100 == 0) y += "    apps: {orders: {tag: t" + std::to_string(e) + "}}\n";
  }
  return y;
}

}  // namespace

TEST(CatalogScale, ALongBaseChainResolvesWithEveryLayersProvenance) {
  auto c = Catalog::parse(chain_catalog(2000, false), "berth.yaml");
  ASSERT_TRUE(c.ok()) << c.error().message;
  const auto* top = c->find("env-1999");
  ASSERT_NE(top, nullptr);
  EXPECT_EQ(top->base, "env-1998");
  const auto* users = top->find("users");
  EXPECT_EQ(users->env.at("LEVEL"), "1999");
  EXPECT_EQ(users->from.at("env.LEVEL"), "environments.env-1999");
  EXPECT_EQ(users->tag, "root");
  EXPECT_EQ(users->from.at("tag"), "environments.env-0");
  EXPECT_EQ(users->from.at("command"), "defaults");
  const auto* orders = top->find("orders");
  EXPECT_EQ(orders->tag, "t1900");
  EXPECT_EQ(orders->from.at("tag"), "environments.env-1900.apps.orders");
  EXPECT_EQ(c->find("env-1234")->find("orders")->from.at("tag"), "environments.env-1200.apps.orders");
  EXPECT_EQ(c->find("env-1234")->find("web")->values.at("env.LEVEL"), "1234");
  EXPECT_EQ(c->find("env-0")->find("orders")->from.at("tag"), "environments.env-0.apps.orders");
}

TEST(CatalogScale, ALongThinChainFallsThroughToWhereEachAppLastChanged) {
  auto c = Catalog::parse(chain_catalog(2000, true), "berth.yaml");
  ASSERT_TRUE(c.ok()) << c.error().message;
  const auto* e = c->find("env-1999");
  ASSERT_TRUE(e->deploy_changed);
  // orders changed at env-1900; web calls it, so it runs there too; users comes from the root.
  EXPECT_EQ(e->served_by.at("orders"), "env-1900");
  EXPECT_EQ(e->served_by.at("web"), "env-1900");
  EXPECT_EQ(e->served_by.at("users"), "env-0");
  EXPECT_EQ(c->find("env-1900")->served_by.at("orders"), "env-1900");
  EXPECT_EQ(e->find("orders")->from.at("tag"), "environments.env-1900.apps.orders");
  // Nothing changed from env-1900 up: one AppSpec serves all of them.
  EXPECT_EQ(e->apps.shared(1), c->find("env-1901")->apps.shared(1));
  EXPECT_EQ(e->find("orders")->fingerprint(), c->find("env-1900")->find("orders")->fingerprint());
}

TEST(CatalogScale, ACycleInALongChainIsReportedOnceAtTheBaseThatClosesIt) {
  // env-0's base is the top of a 2,000-long chain: every environment is in the cycle.
  const std::string y = chain_catalog(2000, false, "env-1999");
  auto c = Catalog::parse(y, "berth.yaml");
  ASSERT_FALSE(c.ok());
  ASSERT_EQ(c.error().details.size(), 1u) << c.error().details.front().substr(0, 300);
  const std::string& e = c.error().details.front();
  // Located at env-0's `base: env-1999` (line 10, column 11), the path around from there.
  EXPECT_THAT(e, testing::StartsWith("berth.yaml:10:11: base environment cycle: env-1999 → env-1998 → "));
  EXPECT_THAT(e, testing::EndsWith("env-1 → env-0 → env-1999"));
  EXPECT_EQ(y.substr(y.find("  env-0:\n") + 9, 19), "    base: env-1999\n");
}

TEST(CatalogScale, AnUnknownBaseBreaksTheChainAboveItOnce) {
  std::string y = chain_catalog(500, false);
  y = replaced_once(y, "    base: env-249\n", "    base: env-2499\n");
  auto c = Catalog::parse(y, "berth.yaml");
  ASSERT_FALSE(c.ok());
  ASSERT_EQ(c.error().details.size(), 1u);
  EXPECT_THAT(c.error().details.front(),
              HasSubstr("environments.env-250.base: unknown environment 'env-2499' (did you mean 'env-249'?)"));
}

TEST(CatalogScale, EnvironmentsThatChangeNothingShareTheAppSpecTheyInherit) {
  auto c = Catalog::parse(R"(defaults: {command: svc, env: {A: "1"}}
apps:
  users: {}
  orders: {depends_on: [users]}
environments:
  one: {}
  two: {description: nothing of its own}
  beta: {base: one}
  gamma: {base: beta, apps: {orders: {tag: x}}}
  delta: {base: gamma, env: {A: "2"}}
)", "berth.yaml");
  ASSERT_TRUE(c.ok()) << c.error().message;
  auto shared = [&](const char* env, std::size_t i) { return c->find(env)->apps.shared(i).get(); };
  EXPECT_EQ(shared("one", 0), shared("two", 0));
  EXPECT_EQ(shared("one", 1), shared("beta", 1));
  EXPECT_EQ(shared("beta", 0), shared("gamma", 0));  // gamma changes orders only
  EXPECT_NE(shared("beta", 1), shared("gamma", 1));
  EXPECT_NE(shared("gamma", 0), shared("delta", 0));  // delta changes every app
  EXPECT_EQ(c->find("gamma")->find("orders")->from.at("tag"), "environments.gamma.apps.orders");
  EXPECT_EQ(c->find("delta")->find("orders")->from.at("tag"), "environments.gamma.apps.orders");
  EXPECT_EQ(c->find("delta")->find("users")->from.at("env.A"), "environments.delta");
  EXPECT_EQ(c->find("beta")->find("users")->from.at("env.A"), "defaults");
  EXPECT_EQ(&*c->find("two")->apps.begin(), c->find("two")->find("users"));
}

TEST(CatalogScale, AnErrorNamingTheEnvironmentIsReportedForEveryEnvironmentThatHasIt) {
  // The recipe error names the environment; `one` and `two` share the app's resolution.
  auto c = Catalog::parse(R"(defaults: {command: "svc ${artifact}", build_type: weird}
apps:
  users: {source: {repo: /r, recipes: {release: {command: make, artifact: out}}}}
environments:
  one: {}
  two: {}
  three: {base: two}
)", "berth.yaml");
  ASSERT_FALSE(c.ok());
  ASSERT_EQ(c.error().details.size(), 3u) << c.error().message;
  EXPECT_THAT(c.error().details[0], HasSubstr("app 'users' in environment 'one' has build_type 'weird'"));
  EXPECT_THAT(c.error().details[1], HasSubstr("app 'users' in environment 'two' has build_type 'weird'"));
  EXPECT_THAT(c.error().details[2], HasSubstr("app 'users' in environment 'three' has build_type 'weird'"));
}

TEST(CatalogScale, AnEnvironmentWrittenAsAScalarIsReportedNotThrown) {
  // It used to escape as yaml-cpp's "operator[] call on a scalar" and hide every other error.
  const std::string e = errors_of(replaced_once(kGood, "  beta-8:\n    base: beta-7\n", "  beta-8: oops\n"));
  EXPECT_THAT(e, HasSubstr("environments.beta-8 must be a mapping"));
  EXPECT_THAT(e, testing::Not(HasSubstr("operator[]")));
}

TEST(CatalogScale, FourThousandAppsInOneDependencyChainAreOrderedWithoutRecursion) {
  std::string y = "defaults: {command: svc}\napps:\n  app0: {}\n";
  for (int a = 1; a < 4000; ++a) y += "  app" + std::to_string(a) + ": {depends_on: [app" + std::to_string(a - 1) + "]}\n";
  y += "environments:\n  one: {}\n";
  auto c = Catalog::parse(y, "berth.yaml");
  ASSERT_TRUE(c.ok()) << c.error().message;
  const auto& apps = c->find("one")->apps;
  ASSERT_EQ(apps.size(), 4000u);
  for (int a = 0; a < 4000; a += 333) EXPECT_EQ(apps[a].app, "app" + std::to_string(a));
  EXPECT_EQ(c->find("one")->find("app3999")->from.at("depends_on.app3998"), "apps.app3999");
  // A cycle closing the chain is still found and printed.
  y = replaced_once(y, "  app0: {}", "  app0: {depends_on: [app3999]}");
  auto bad = Catalog::parse(y, "berth.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error().message, HasSubstr("dependency cycle: app0 → app3999 → app3998"));
}

TEST(Catalog, ConstraintsAreLayeredSettingsAndBadOnesAreLocated) {
  std::string y = replaced_once(kGood, "  orders:\n", "  orders:\n    constraints: [[hostname, UNIQUE], [rack, GROUP_BY, 3]]\n");
  auto c = Catalog::parse(y, "berth.yaml");
  ASSERT_TRUE(c.ok()) << c.error().message;
  const auto* orders = c->find("beta-7")->find("orders");
  ASSERT_EQ(orders->constraints.size(), 2u);
  EXPECT_EQ(orders->constraints[0].words(), (std::vector<std::string>{"hostname", "UNIQUE"}));
  EXPECT_EQ(orders->constraints[1].count, 3);
  EXPECT_EQ(orders->from.at("constraints"), "apps.orders");
  EXPECT_EQ(orders->values.at("constraints"), "[[hostname, UNIQUE], [rack, GROUP_BY, 3]]");
  // They change where instances run: a change replaces them.
  auto plain = Catalog::parse(kGood, "berth.yaml");
  EXPECT_NE(plain->find("beta-7")->find("orders")->fingerprint(), orders->fingerprint());

  EXPECT_THAT(errors_of(replaced_once(kGood, "  orders:\n", "  orders:\n    constraints: [[rack, SPREAD]]\n")),
              HasSubstr("berth.yaml:13:19: constraints of app 'orders': constraint operator 'SPREAD': give UNIQUE"));
  EXPECT_THAT(errors_of(replaced_once(kGood, "  orders:\n", "  orders:\n    constraints: [hostname, UNIQUE]\n")),
              HasSubstr("apps.orders.constraints must be a list of [field, OPERATOR] or [field, OPERATOR, value] lists"));
}
