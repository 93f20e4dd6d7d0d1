// Placement (cluster/placement.h): spreading, resources, hosts that cannot take instances, and
// each constraint operator, placing instances one after another as the loop would.
#include <map>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "cluster/placement.h"
#include "control/loop.h"
#include "runtime/docker/docker_runtime.h"

namespace berth::cluster {
namespace {

using ::testing::HasSubstr;

constexpr std::int64_t kCpu = 1'000'000'000;
constexpr std::int64_t kGiB = 1024LL * 1024 * 1024;

HostSlot host(std::string name, std::map<std::string, std::string> labels = {}, std::int64_t cpus = 2 * kCpu,
              std::int64_t memory = 4 * kGiB) {
  HostSlot h;
  h.name = std::move(name);
  h.labels = std::move(labels);
  h.nano_cpus = cpus;
  h.memory_bytes = memory;
  return h;
}

Constraint constraint(std::vector<std::string> words) {
  auto c = parse_constraint(words);
  EXPECT_TRUE(c.ok()) << c.error().message;
  return c.ok() ? *c : Constraint{};
}

// Places `n` instances of `app` one after another; the hosts chosen, or the error that stopped it.
std::vector<std::string> place_all(Request r, int n, const std::vector<HostSlot>& hosts, std::vector<Placed>& placed,
                                   std::string* error = nullptr) {
  std::vector<std::string> chosen;
  for (int o = 0; o < n; ++o) {
    r.ordinal = o;
    auto h = place(r, hosts, placed);
    if (!h.ok()) {
      if (error) *error = h.error().message;
      break;
    }
    chosen.push_back(*h);
    placed.push_back({*h, r.app, o, r.nano_cpus, r.memory_bytes});
  }
  return chosen;
}

TEST(Placement, ParsesMarathonConstraintsAndNamesWhatIsWrong) {
  EXPECT_EQ(constraint({"host", "UNIQUE"}).words(), (std::vector<std::string>{"hostname", "UNIQUE"}));
  EXPECT_EQ(constraint({"rack", "GROUP_BY", "3"}).count, 3);
  EXPECT_EQ(constraint({"rack", "GROUP_BY"}).count, 0);
  EXPECT_EQ(constraint({"zone", "IS", "eu"}).op, Constraint::Op::kCluster);
  EXPECT_EQ(constraint({"rack", "MAX_PER", "2"}).count, 2);
  EXPECT_NE(constraint({"hostname", "LIKE", "h[12]"}).pattern, nullptr);

  auto error = [](std::vector<std::string> words) {
    auto c = parse_constraint(words);
    EXPECT_FALSE(c.ok());
    return c.ok() ? std::string() : c.error().message;
  };
  EXPECT_THAT(error({"rack"}), HasSubstr("[field, OPERATOR] or [field, OPERATOR, value], not 1 words"));
  EXPECT_THAT(error({"rack", "SPREAD"}), HasSubstr("operator 'SPREAD': give UNIQUE, CLUSTER value, IS value"));
  EXPECT_THAT(error({"rack", "UNIQUE", "a"}), HasSubstr("UNIQUE takes no value, not 'a'"));
  EXPECT_THAT(error({"rack", "CLUSTER"}), HasSubstr("CLUSTER needs a value"));
  EXPECT_THAT(error({"rack", "GROUP_BY", "many"}), HasSubstr("GROUP_BY 'many': give how many values"));
  EXPECT_THAT(error({"rack", "MAX_PER", "0"}), HasSubstr("MAX_PER '0': give the most instances per value, 1 to"));
  EXPECT_THAT(error({"rack", "LIKE", "(a"}), HasSubstr("LIKE '(a': not a regular expression"));
  EXPECT_THAT(error({"rack", "LIKE", std::string(300, 'a')}), HasSubstr("the pattern is 300 characters; at most 256"));
  EXPECT_THAT(error({"ra ck", "UNIQUE"}), HasSubstr("constraint field 'ra ck': give hostname or a host label"));
}

TEST(Placement, SpreadsAnAppThenFillsTheLeastLoaded) {
  std::vector<HostSlot> hosts{host("h1"), host("h2"), host("h3")};
  std::vector<Placed> placed{{"h1", "e/other", 0, kCpu, 0}};  // h1 is busier
  Request r{"e/web", 0, kCpu / 2, 0, {}, ""};
  // One per host, the least loaded first (h2 before h3 by name), then again by load.
  EXPECT_EQ(place_all(r, 4, hosts, placed), (std::vector<std::string>{"h2", "h3", "h1", "h2"}));
}

TEST(Placement, AppsThatAskForNoResourcesSpreadByInstanceCount) {
  std::vector<HostSlot> hosts{host("h1"), host("h2"), host("h3")};
  std::vector<Placed> placed;
  std::map<std::string, int> per_host;
  for (const char* app : {"e/a", "e/b", "e/c", "e/d", "e/e", "e/f"})
    for (const auto& h : place_all(Request{app, 0, 0, 0, {}, ""}, 1, hosts, placed)) ++per_host[h];
  EXPECT_EQ(per_host, (std::map<std::string, int>{{"h1", 2}, {"h2", 2}, {"h3", 2}}));
}

TEST(Placement, CountsResourcesAndSaysWhyNoHostFits) {
  std::vector<HostSlot> hosts{host("h1", {}, 2 * kCpu), host("h2", {}, 1 * kCpu, 1 * kGiB), host("h3")};
  hosts[2].schedulable = false;
  hosts[2].why_not = "down";
  std::vector<Placed> placed;
  std::string error;
  Request r{"e/db", 0, kCpu, kGiB / 2, {}, ""};
  EXPECT_EQ(place_all(r, 4, hosts, placed, &error), (std::vector<std::string>{"h1", "h2", "h1"}));
  EXPECT_THAT(error, HasSubstr("no host can run e/db #3: h1: needs 1 CPUs, 0 of 2 free; h2: needs 1 CPUs, 0 of 1 free; h3: down"));
  // Memory too, and an app without requests still goes anywhere schedulable.
  placed.clear();
  Request big{"e/cache", 0, 0, 3 * kGiB, {}, ""};
  EXPECT_EQ(place(big, hosts, placed).value(), "h1");
  placed.push_back({"h1", "e/cache", 0, 0, 3 * kGiB});
  EXPECT_THAT(place({"e/cache", 1, 0, 3 * kGiB, {}, ""}, hosts, placed).error().message,
              HasSubstr("h1: needs 3072 MiB, 1024 MiB of 4096 MiB free; h2: needs 3072 MiB, 1024 MiB of 1024 MiB free"));
  EXPECT_EQ(place({"e/tiny", 0, 0, 0, {}, ""}, hosts, placed).value(), "h2");
  EXPECT_THAT(place(r, {}, {}).error().message, HasSubstr("the cluster has no hosts"));
}

TEST(Placement, UniqueHostnameAndMaxPerRack) {
  std::vector<HostSlot> hosts{host("h1", {{"rack", "a"}}), host("h2", {{"rack", "a"}}), host("h3", {{"rack", "b"}})};
  std::vector<Placed> placed;
  std::string error;
  Request unique{"e/web", 0, 0, 0, {constraint({"hostname", "UNIQUE"})}, ""};
  EXPECT_EQ(place_all(unique, 4, hosts, placed, &error), (std::vector<std::string>{"h1", "h2", "h3"}));
  EXPECT_THAT(error, HasSubstr("h1: hostname=h1 already runs e/web (hostname UNIQUE)"));

  placed.clear();
  Request max_per{"e/api", 0, 0, 0, {constraint({"rack", "MAX_PER", "1"})}, ""};
  EXPECT_EQ(place_all(max_per, 3, hosts, placed, &error), (std::vector<std::string>{"h1", "h3"}));
  EXPECT_THAT(error, HasSubstr("h2: rack=a already runs 1 of e/api (rack MAX_PER 1)"));
}

TEST(Placement, GroupByAlternatesOverTheFieldsValues) {
  std::vector<HostSlot> hosts{host("h1", {{"rack", "a"}}), host("h2", {{"rack", "a"}}), host("h3", {{"rack", "b"}}),
                              host("h4")};  // no rack: never chosen under GROUP_BY rack
  std::vector<Placed> placed;
  Request r{"e/web", 0, 0, 0, {constraint({"rack", "GROUP_BY", "2"})}, ""};
  EXPECT_EQ(place_all(r, 4, hosts, placed), (std::vector<std::string>{"h1", "h3", "h2", "h3"}));
  // Expecting three racks where two are schedulable: the instance waits.
  placed.clear();
  Request three{"e/web", 0, 0, 0, {constraint({"rack", "GROUP_BY", "3"})}, ""};
  auto none = place(three, hosts, placed);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, ErrorCode::kExhausted);
  EXPECT_THAT(none.error().message, HasSubstr("h1: only 2 of 3 values of rack are schedulable"));
  EXPECT_THAT(none.error().message, HasSubstr("h4: has no label 'rack' (rack GROUP_BY 3)"));
}

TEST(Placement, ClusterLikeAndUnlike) {
  std::vector<HostSlot> hosts{host("h1", {{"zone", "eu-1"}}), host("h2", {{"zone", "us-1"}}), host("h3")};
  EXPECT_EQ(place({"e/a", 0, 0, 0, {constraint({"zone", "CLUSTER", "us-1"})}, ""}, hosts, {}).value(), "h2");
  EXPECT_EQ(place({"e/a", 0, 0, 0, {constraint({"zone", "LIKE", "eu-.*"})}, ""}, hosts, {}).value(), "h1");
  // UNLIKE also takes the host without the label.
  std::vector<Placed> placed;
  Request unlike{"e/b", 0, 0, 0, {constraint({"zone", "UNLIKE", "eu-.*"})}, ""};
  EXPECT_EQ(place_all(unlike, 2, hosts, placed), (std::vector<std::string>{"h2", "h3"}));
  // LIKE matches the whole value, not a part of it.
  EXPECT_THAT(place({"e/c", 0, 0, 0, {constraint({"zone", "LIKE", "eu"})}, ""}, hosts, {}).error().message,
              HasSubstr("h1: zone=eu-1 (zone LIKE eu)"));
}

}  // namespace
}  // namespace berth::cluster

// The overlay's slice for Docker's own endpoints (runtime/docker) and berth's IPAM leaving it
// alone (control/loop.h).
TEST(OverlayFence, IsThePoolsLastAddressesAndNeverAnInstances) {
  EXPECT_EQ(*berth::runtime::docker::fence_range("10.77.0.0/16", 16), "10.77.255.240/28");
  EXPECT_EQ(*berth::runtime::docker::fence_range("10.233.0.0/24", 16), "10.233.0.240/28");
  EXPECT_EQ(*berth::runtime::docker::fence_range("10.233.0.77/24", 4), "10.233.0.252/30");  // host bits ignored
  auto small = berth::runtime::docker::fence_range("10.1.0.0/27", 16);
  ASSERT_FALSE(small.ok());
  EXPECT_NE(small.error().message.find("/26 or larger"), std::string::npos) << small.error().message;
  EXPECT_FALSE(berth::runtime::docker::fence_range("10.1.0.0/24", 12).ok());
  EXPECT_FALSE(berth::runtime::docker::fence_range("10.1.0.0", 16).ok());
  EXPECT_FALSE(berth::runtime::docker::fence_range("10.1.0.0/33", 16).ok());

  berth::model::NetworkSpec n;
  n.pool = *berth::model::parse_range("10.233.0.0/24");
  const auto fenced = berth::control::with_reserved(n, 16);
  for (berth::model::Ipv4 ip = n.pool.first; ip <= n.pool.last; ++ip) {
    const bool in_fence = ip >= n.pool.last - 15;
    EXPECT_EQ(fenced.usable(ip), n.usable(ip) && !in_fence) << berth::model::format_ipv4(ip);
  }
  EXPECT_EQ(fenced.usable_count(), n.usable_count() - 15);  // (the broadcast address was never usable)
}

namespace berth::cluster {

TEST(Placement, InstancesStillStartingSpreadBeforeCountsDo) {
  // h2 runs nothing; h1 runs two, both up. Two instances moved at once: the first goes to h2,
  // the second to h1, where nothing is starting, rather than queueing behind the first on h2.
  std::vector<HostSlot> hosts{host("h1"), host("h2")};
  std::vector<Placed> placed{{"h1", "e/a", 0, 0, 0, false}, {"h1", "e/b", 0, 0, 0, false}};
  auto first = place(Request{"e/c", 0, 0, 0, {}, ""}, hosts, placed);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(*first, "h2");
  placed.push_back({*first, "e/c", 0, 0, 0, true});
  auto second = place(Request{"e/d", 0, 0, 0, {}, ""}, hosts, placed);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*second, "h1");
}

}  // namespace berth::cluster

namespace berth::cluster {
namespace {

// An instance with data on a host (a database's volume) keeps to it while it can take it, even
// where spreading would choose another; a host that cannot take it is passed over as usual.
TEST(Placement, AnInstanceKeepsToTheHostItsDataIsOnWhileThatHostCanTakeIt) {
  std::vector<HostSlot> hosts = {host("h1"), host("h2"), host("h3")};
  std::vector<Placed> placed = {{"h2", "beta/a", 0, 0, 0}, {"h2", "beta/b", 0, 0, 0}};
  Request r;
  r.app = "beta/shopdb";
  EXPECT_EQ(*place(r, hosts, placed), "h1") << "spread: the emptiest host";
  r.prefer = "h2";
  EXPECT_EQ(*place(r, hosts, placed), "h2") << "where its data is";
  hosts[1].schedulable = false;
  hosts[1].why_not = "down";
  EXPECT_EQ(*place(r, hosts, placed), "h1") << "its host is down: elsewhere";
  hosts[1].schedulable = true;
  r.constraints = {constraint({"hostname", "UNLIKE", "h2"})};
  EXPECT_EQ(*place(r, hosts, placed), "h1") << "its constraints first";
  r.constraints.clear();
  r.prefer = "gone";
  EXPECT_EQ(*place(r, hosts, placed), "h1") << "a host the cluster no longer has";
}

}  // namespace
}  // namespace berth::cluster
