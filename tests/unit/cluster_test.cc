// The parsers of what a Swarm manager and a host's dockerd say (cluster/cluster.h): dockerd's
// real answers (Docker 20.10, trimmed), and answers berth must refuse with the field named.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "cluster/cluster.h"

namespace berth::cluster {
namespace {

using ::testing::HasSubstr;

constexpr const char* kNodes = R"([
  {"ID":"n1","Version":{"Index":9},"Spec":{"Labels":{},"Role":"manager","Availability":"active"},
   "Description":{"Hostname":"host-1","Platform":{"Architecture":"x86_64","OS":"linux"},
                  "Resources":{"NanoCPUs":2000000000,"MemoryBytes":25264017408},"Engine":{"EngineVersion":"20.10.24"}},
   "Status":{"State":"ready","Addr":"10.231.0.11"},
   "ManagerStatus":{"Leader":true,"Reachability":"reachable","Addr":"10.231.0.11:2377"}},
  {"ID":"n2","Version":{"Index":31},"Spec":{"Labels":{"rack":"b"},"Role":"worker","Availability":"drain"},
   "Description":{"Hostname":"host-2","Resources":{"NanoCPUs":2000000000,"MemoryBytes":25264017408}},
   "Status":{"State":"down","Message":"heartbeat failure","Addr":"10.231.0.12"}}
])";

TEST(ClusterParse, NodesAsAManagerListsThem) {
  auto nodes = parse_nodes(kNodes);
  ASSERT_TRUE(nodes.ok()) << nodes.error().message;
  ASSERT_EQ(nodes->size(), 2u);
  const Node& one = (*nodes)[0];
  EXPECT_EQ(one.id, "n1");
  EXPECT_EQ(one.version, 9u);
  EXPECT_EQ(one.hostname, "host-1");
  EXPECT_EQ(one.role, "manager");
  EXPECT_TRUE(one.leader);
  EXPECT_EQ(one.state, "ready");
  EXPECT_EQ(one.nano_cpus, 2'000'000'000);
  EXPECT_EQ(one.memory_bytes, 25'264'017'408);
  EXPECT_EQ(one.engine_version, "20.10.24");
  EXPECT_TRUE(one.labels.empty());
  const Node& two = (*nodes)[1];
  EXPECT_FALSE(two.leader);  // no ManagerStatus: a worker
  EXPECT_EQ(two.availability, "drain");
  EXPECT_EQ(two.state, "down");
  EXPECT_EQ(two.message, "heartbeat failure");
  EXPECT_EQ(two.labels.at("rack"), "b");
}

TEST(ClusterParse, RefusesWhatIsNotANodeListNamingTheField) {
  EXPECT_THAT(parse_nodes("<html>").error().message, HasSubstr("GET /nodes: the answer is not JSON"));
  EXPECT_THAT(parse_nodes("{}").error().message, HasSubstr("not a list of nodes"));
  EXPECT_THAT(parse_nodes(R"([{"Status":{"State":"ready"}}])").error().message, HasSubstr("node 1: ID is missing"));
  EXPECT_THAT(parse_nodes(R"([{"ID":"a","Status":{"State":"ready"}},{"ID":"b","Status":{"State":7}}])").error().message,
              HasSubstr("node 2: Status.State is not a string"));
  EXPECT_THAT(parse_nodes(R"([{"ID":"a","Status":{"State":"ready"},"Spec":{"Labels":{"x":1}}}])").error().message,
              HasSubstr("node 1: Spec.Labels.x is not a string"));
  EXPECT_THAT(parse_nodes(R"([{"ID":"a","Status":{"State":"ready"},"Description":{"Resources":{"NanoCPUs":1.5}}}])")
                  .error()
                  .message,
              HasSubstr("Description.Resources.NanoCPUs is not an integer"));
  EXPECT_THAT(parse_nodes(R"([{"ID":"a","Status":{"State":"ready"},"Description":{"Resources":{"MemoryBytes":18446744073709551615}}}])")
                  .error()
                  .message,
              HasSubstr("MemoryBytes is out of range"));
  EXPECT_THAT(parse_nodes(R"([{"ID":"","Status":{"State":"ready"}}])").error().message, HasSubstr("ID is empty"));
}

TEST(ClusterParse, InfoInAndOutOfASwarm) {
  auto out = parse_info(R"({"Name":"host-3","ServerVersion":"20.10.24","NCPU":2,"MemTotal":25264017408,
                            "Swarm":{"NodeID":"","NodeAddr":"","LocalNodeState":"inactive","ControlAvailable":false,
                                     "RemoteManagers":null}})");
  ASSERT_TRUE(out.ok()) << out.error().message;
  EXPECT_EQ(out->hostname, "host-3");
  EXPECT_EQ(out->cpus, 2);
  EXPECT_EQ(out->swarm_state, "inactive");
  EXPECT_TRUE(out->managers.empty());
  auto in = parse_info(R"({"Name":"host-1","NCPU":2,"Swarm":{"NodeID":"n1","NodeAddr":"10.231.0.11",
      "LocalNodeState":"active","ControlAvailable":true,"Cluster":{"ID":"c1"},
      "RemoteManagers":[{"NodeID":"n1","Addr":"10.231.0.11:2377"}]}})");
  ASSERT_TRUE(in.ok()) << in.error().message;
  EXPECT_TRUE(in->manager);
  EXPECT_EQ(in->node_id, "n1");
  EXPECT_EQ(in->cluster_id, "c1");
  EXPECT_EQ(in->managers, std::vector<std::string>{"10.231.0.11:2377"});
  EXPECT_EQ(parse_info("{}")->swarm_state, "inactive");  // an Engine that says nothing of a Swarm
  EXPECT_THAT(parse_info(R"({"Swarm":{"RemoteManagers":[{"NodeID":"x"}]}})").error().message,
              HasSubstr("Swarm.RemoteManagers[0]: Addr is missing"));
  EXPECT_THAT(parse_info(R"({"NCPU":"two"})").error().message, HasSubstr("GET /info: NCPU is not an integer"));
  EXPECT_THAT(parse_info(R"({"NCPU":4294967296})").error().message, HasSubstr("NCPU is out of range"));
}

TEST(ClusterParse, SwarmTokensAndHeartbeat) {
  auto s = parse_swarm(R"({"ID":"c1","Version":{"Index":12},"Spec":{"Dispatcher":{"HeartbeatPeriod":1000000000}},
                           "JoinTokens":{"Worker":"SWMTKN-1-w","Manager":"SWMTKN-1-m"}})");
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->id, "c1");
  EXPECT_EQ(s->version, 12u);
  EXPECT_EQ(s->heartbeat_ms, 1000);
  EXPECT_EQ(s->worker_token, "SWMTKN-1-w");
  EXPECT_EQ(s->manager_token, "SWMTKN-1-m");
  EXPECT_THAT(parse_swarm(R"({"Version":{"Index":-1}})").error().message, HasSubstr("GET /swarm: ID is missing"));
  EXPECT_THAT(parse_swarm(R"({"ID":"c","Version":{"Index":-1}})").error().message, HasSubstr("Version.Index is out of range"));
}

}  // namespace
}  // namespace berth::cluster
