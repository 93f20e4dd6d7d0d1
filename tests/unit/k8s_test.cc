// An environment as Kubernetes manifests (k8s/k8s.h): their shape, read back with yaml-cpp. No
// Kubernetes server runs here; what the export cannot do comes back as notes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include "k8s/k8s.h"

using namespace berth;
using testing::HasSubstr;

namespace {

const char* kFleet = R"(network: {pool: 10.77.0.0/16}
defaults:
  image: shop/${app}:${tag}
  command: svc --listen ${ip}:${port.http} --instance ${ordinal}
  ports: {http: 8080}
  health: {type: http, path: /healthcheck, interval: 2s}
apps:
  users: {instances: 2}
  orders:
    depends_on: [users, {app: ledger, soft: true}]
    env: {TOKEN: {secret: true, value: s3cret}, REGION: eu}
    volumes: ["orders-data:/data"]
    resources: {cpus: 0.5, memory: 256M}
  ledger: {}
  tool: {image: "", command: "tool --serve"}
environments:
  beta: {tag: main}
)";

std::vector<YAML::Node> docs_of(const std::string& yaml) { return YAML::LoadAll(yaml); }

const YAML::Node* find(const std::vector<YAML::Node>& docs, const std::string& kind, const std::string& name) {
  for (const auto& d : docs)
    if (d["kind"].as<std::string>() == kind && d["metadata"]["name"].as<std::string>() == name) return &d;
  return nullptr;
}

}  // namespace

TEST(K8sExport, AStatefulSetAndAHeadlessServicePerContainerAppGatedByInitContainers) {
  auto c = model::Catalog::parse(kFleet, "berth.yaml");
  ASSERT_TRUE(c.ok()) << c.error().message;
  auto e = k8s::manifests(*c, "beta", {{"orders/0", "10.77.0.12"}, {"users/0", "10.77.0.3"}, {"users/1", "10.77.0.4"}});
  ASSERT_TRUE(e.ok()) << e.error().message;
  auto docs = docs_of(e->yaml);
  ASSERT_EQ(docs.size(), 1u + 3 * 2) << e->yaml;  // a namespace; users, orders, ledger
  ASSERT_NE(find(docs, "Namespace", "berth-beta"), nullptr);
  const YAML::Node* svc = find(docs, "Service", "orders");
  ASSERT_NE(svc, nullptr);
  EXPECT_EQ((*svc)["spec"]["clusterIP"].as<std::string>(), "None");
  EXPECT_EQ((*svc)["metadata"]["namespace"].as<std::string>(), "berth-beta");

  const YAML::Node* orders = find(docs, "StatefulSet", "orders");
  ASSERT_NE(orders, nullptr);
  const YAML::Node spec = (*orders)["spec"];
  EXPECT_EQ(spec["serviceName"].as<std::string>(), "orders");
  EXPECT_EQ(spec["replicas"].as<int>(), 1);
  const YAML::Node pod = spec["template"];
  // A single instance keeps berth's address through Calico.
  EXPECT_EQ(pod["metadata"]["annotations"]["cni.projectcalico.org/ipAddrs"].as<std::string>(), "[\"10.77.0.12\"]");
  // Hard dependencies only, each waited for by its own check.
  ASSERT_EQ(pod["spec"]["initContainers"].size(), 1u) << e->yaml;
  EXPECT_EQ(pod["spec"]["initContainers"][0]["name"].as<std::string>(), "wait-for-users");
  EXPECT_THAT(pod["spec"]["initContainers"][0]["command"][2].as<std::string>(),
              HasSubstr("until wget -q -T 1 -O /dev/null http://users:8080/healthcheck"));
  const YAML::Node ctr = pod["spec"]["containers"][0];
  EXPECT_EQ(ctr["image"].as<std::string>(), "shop/orders:main");
  EXPECT_EQ(ctr["args"][2].as<std::string>(), "$(POD_IP):8080");
  EXPECT_EQ(ctr["args"][4].as<std::string>(), "$(BERTH_INSTANCE)");
  EXPECT_EQ(ctr["readinessProbe"]["httpGet"]["path"].as<std::string>(), "/healthcheck");
  EXPECT_EQ(ctr["readinessProbe"]["periodSeconds"].as<int>(), 2);
  EXPECT_EQ(ctr["resources"]["limits"]["cpu"].as<std::string>(), "500m");
  EXPECT_EQ(ctr["resources"]["limits"]["memory"].as<std::string>(), "256Mi");
  EXPECT_EQ(spec["volumeClaimTemplates"][0]["metadata"]["name"].as<std::string>(), "orders-data");
  // A secret's value is never written: a reference to a Secret the user makes.
  EXPECT_EQ(e->yaml.find("s3cret"), std::string::npos);
  bool ref = false;
  for (const auto& v : ctr["env"])
    if (v["name"].as<std::string>() == "TOKEN") ref = v["valueFrom"]["secretKeyRef"]["name"].as<std::string>() == "orders-secrets";
  EXPECT_TRUE(ref) << e->yaml;

  // Replicas keep names, not addresses; processes do not go; each is said.
  const YAML::Node* users = find(docs, "StatefulSet", "users");
  ASSERT_NE(users, nullptr);
  EXPECT_FALSE((*users)["spec"]["template"]["metadata"]["annotations"].IsDefined());
  std::string notes;
  for (const auto& n : e->notes) notes += n + "\n";
  EXPECT_THAT(notes, HasSubstr("users: its 2 instances keep their names, not their addresses"));
  EXPECT_THAT(notes, HasSubstr("tool: runs as a process"));
  EXPECT_THAT(notes, HasSubstr("create Secret orders-secrets with keys TOKEN"));
  EXPECT_EQ(find(docs, "StatefulSet", "tool"), nullptr);

  EXPECT_FALSE(k8s::manifests(*c, "nope", {}).ok());
}
