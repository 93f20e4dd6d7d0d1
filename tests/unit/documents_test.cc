// Environment documents: parsing them with the fleet document (errors located in the document),
// what a member may set, editing one key, and the control loop's versioned writes, fleet plans
// and lifetimes — on the simulated runtime, a ManualClock and an in-memory SQLite store.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/text.h"
#include "control/loop.h"
#include "fake_prober.h"
#include "model/catalog.h"
#include "runtime/sim/sim_runtime.h"
#include "store/sqlite/sqlite_store.h"

using namespace berth;
using testing::HasSubstr;

namespace {

const char* kFleet = R"(network: {pool: 10.19.0.0/24}
defaults:
  command: svc ${ip}
  ports: {http: 80}
  health: {type: tcp, start_interval: 50ms, interval: 1s}
  restart: {backoff: 100ms}
apps:
  users: {}
  orders:
    depends_on: [users]
    tag: main
environments:
  baseline: {}
)";

model::EnvDocument doc(const std::string& name, const std::string& text, std::int64_t version = 1) {
  model::EnvDocument d;
  d.name = name;
  d.text = text;
  d.owner = "anna";
  d.version = version;
  return d;
}

}  // namespace

TEST(EnvDocuments, JoinTheFleetWithTheirOwnerAndLayers) {
  auto cat = model::Catalog::parse(kFleet, "berth.yaml", "", {doc("dev-anna", "base: baseline\napps:\n  orders: {tag: feature/x}\n")});
  ASSERT_TRUE(cat.ok()) << cat.error().message;
  const model::Environment* e = cat->find("dev-anna");
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(e->own_document);
  EXPECT_EQ(e->owner, "anna");
  EXPECT_EQ(e->base, "baseline");
  EXPECT_EQ(e->find("orders")->values.at("tag"), "feature/x");
  EXPECT_EQ(e->find("users")->values.at("tag"), cat->find("baseline")->find("users")->values.at("tag"));
  EXPECT_FALSE(cat->find("baseline")->own_document);
}

TEST(EnvDocuments, ErrorsAreLocatedInTheDocument) {
  auto cat = model::Catalog::parse(kFleet, "berth.yaml", "",
                                   {doc("dev-anna", "base: baseline\napps:\n  orders:\n    instances: many\n")});
  ASSERT_FALSE(cat.ok());
  EXPECT_THAT(cat.error().message, HasSubstr("environments/dev-anna.yaml:4:"));
  EXPECT_THAT(cat.error().message, HasSubstr("many"));
}

TEST(EnvDocuments, LifetimeAndEditors) {
  auto cat = model::Catalog::parse(kFleet, "berth.yaml", "",
                                   {doc("dev-anna", "base: baseline\nexpires: 2026-12-05T10:00:00Z\neditors: [ben]\n")});
  ASSERT_TRUE(cat.ok()) << cat.error().message;
  EXPECT_EQ(cat->find("dev-anna")->expires_at, parse_rfc3339("2026-12-05T10:00:00Z").value());
  EXPECT_EQ(cat->find("dev-anna")->editors, std::vector<std::string>{"ben"});
  auto bad = model::Catalog::parse(kFleet, "berth.yaml", "", {doc("dev-anna", "base: baseline\nexpires: friday\n")});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error().message, HasSubstr("environments/dev-anna.yaml:2:10"));
  EXPECT_THAT(bad.error().message, HasSubstr("2026-12-05T10:00:00Z"));
}

TEST(EnvDocuments, MembersMaySetBranchesNotCommands) {
  EXPECT_TRUE(model::check_member_document(doc("d", "base: baseline\napps:\n  orders: {tag: x, build_type: debug}\n"), {}).ok());
  auto st = model::check_member_document(doc("d", "base: baseline\napps:\n  orders: {command: rm -rf /}\n"), {});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kForbidden);
  EXPECT_THAT(st.error().message, HasSubstr("environments/d.yaml:3:12"));
  EXPECT_THAT(st.error().message, HasSubstr("command"));
  EXPECT_THAT(st.error().message, HasSubstr("tag, build_type"));
  // A repository of their own only under the allowed prefixes.
  const char* own_repo = "apps:\n  orders: {source: {repo: https://git.example/anna/orders.git}}\n";
  EXPECT_TRUE(model::check_member_document(doc("d", own_repo), {"https://git.example/"}).ok());
  auto repo = model::check_member_document(doc("d", own_repo), {"https://git.corp/"});
  ASSERT_FALSE(repo.ok());
  EXPECT_THAT(repo.error().message, HasSubstr("https://git.corp/"));
}

TEST(EnvDocuments, SetAndUnsetOneKey) {
  auto a = model::set_in_document("base: baseline\n", "orders.tag", "feature/x", false);
  ASSERT_TRUE(a.ok());
  auto b = model::set_in_document(*a, "orders.env.LOG_LEVEL", "debug", false);
  ASSERT_TRUE(b.ok());
  auto cat = model::Catalog::parse(kFleet, "berth.yaml", "", {doc("d", *b)});
  ASSERT_TRUE(cat.ok()) << cat.error().message << "\n" << *b;
  EXPECT_EQ(cat->find("d")->find("orders")->values.at("tag"), "feature/x");
  auto c = model::set_in_document(*b, "orders.tag", "", true);
  ASSERT_TRUE(c.ok());
  EXPECT_THAT(*c, testing::Not(HasSubstr("feature/x")));
  EXPECT_THAT(*c, HasSubstr("LOG_LEVEL"));
  auto d = model::set_in_document(*c, "editors", "ben,carl", false);
  ASSERT_TRUE(d.ok());
  EXPECT_THAT(*d, HasSubstr("ben"));
  EXPECT_FALSE(model::set_in_document("base: x\n", "orders..tag", "1", false).ok());
  EXPECT_FALSE(model::set_in_document("base: x\n", "base.name", "1", false).ok());
}

TEST(EnvDocuments, ResolveLeavesOutOnlyTheInvalidOnes) {
  auto r = model::resolve_catalog(kFleet, "berth.yaml", "",
                                  {doc("good", "base: baseline\n"), doc("bad", "base: nowhere\n"),
                                   doc("on-bad", "base: bad\n")});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_NE(r->catalog.find("good"), nullptr);
  EXPECT_EQ(r->catalog.find("bad"), nullptr);
  EXPECT_THAT(r->invalid.at("bad"), HasSubstr("nowhere"));
  EXPECT_THAT(r->invalid.at("on-bad"), HasSubstr("'bad' is invalid"));
}

TEST(EnvDocuments, ResolveLeavesOutEachInvalidOneWithItsOwnErrorsInOneGo) {
  std::vector<model::EnvDocument> docs;
  for (int i = 0; i < 200; ++i) docs.push_back(doc("dev-" + std::to_string(i), "base: baseline\ntag: t" + std::to_string(i) + "\n"));
  docs[10].text = "base: baseline\napps: {ordrs: {tag: x}}\n";   // an unknown app
  docs[20].text = "base: dev-10\n";                               // based on it
  docs[30].text = "base: nowhere\n";                              // an unknown base
  docs[40].text = "base: baseline\nttl: soon\n";                 // a bad lifetime
  docs[50].text = "base: dev-30\ndeploy: changed\n";              // based on an unknown base
  std::string fleet = kFleet;
  fleet.replace(fleet.find("10.19.0.0/24"), 12, "10.19.0.0/16");  // room for all
  auto r = model::resolve_catalog(fleet, "berth.yaml", "", docs);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->invalid.size(), 5u);
  EXPECT_THAT(r->invalid.at("dev-10"), HasSubstr("environments/dev-10.yaml:2:8: dev-10.apps: unknown app 'ordrs' (did you mean 'orders'?)"));
  EXPECT_EQ(r->invalid.at("dev-20"), "its base environment 'dev-10' is invalid");
  // The environments named are those there are: the fleet's and the documents kept before it.
  EXPECT_THAT(r->invalid.at("dev-30"), HasSubstr("environments.dev-30.base: unknown environment 'nowhere'; environments: "
                                                  "baseline, dev-0, dev-1, "));
  EXPECT_THAT(r->invalid.at("dev-30"), testing::Not(HasSubstr("dev-10,")));
  EXPECT_THAT(r->invalid.at("dev-40"), HasSubstr("ttl 'soon' must be a duration"));
  EXPECT_EQ(r->invalid.at("dev-50"), "its base environment 'dev-30' is invalid");
  ASSERT_EQ(r->catalog.environments().size(), 196u);
  EXPECT_EQ(r->catalog.environments().front().name, "baseline");
  EXPECT_EQ(r->catalog.find("dev-199")->find("users")->tag, "t199");
  EXPECT_EQ(r->catalog.find("dev-10"), nullptr);
  EXPECT_EQ(r->catalog.documents().size(), 195u);
  EXPECT_EQ(r->catalog.document("dev-20"), nullptr);
  EXPECT_NE(r->catalog.document("dev-21"), nullptr);
}

TEST(EnvDocuments, ResolveAddsDocumentsUntilThePoolIsFullAsOneAtATimeWould) {
  std::string fleet = kFleet;
  fleet.replace(fleet.find("10.19.0.0/24"), 12, "10.19.0.0/28");  // 13 addresses to give out; baseline takes 2
  auto r = model::resolve_catalog(fleet, "berth.yaml", "",
                                  {doc("a", "base: baseline\ninstances: 3\n"), doc("b", "base: baseline\ninstances: 4\n"),
                                   doc("c", "base: baseline\ninstances: 2\n"), doc("d", "base: c\n")});
  ASSERT_TRUE(r.ok()) << r.error().message;
  // a (6) fits, b (8) does not, c (4) still does, d (4) does not.
  EXPECT_NE(r->catalog.find("a"), nullptr);
  EXPECT_NE(r->catalog.find("c"), nullptr);
  EXPECT_EQ(r->invalid.count("a") + r->invalid.count("c"), 0u);
  EXPECT_THAT(r->invalid.at("b"), testing::StartsWith("berth.yaml:1:17: network.pool 10.19.0.0/28 has "));
  EXPECT_THAT(r->invalid.at("b"), HasSubstr("ask for 16 instances (baseline 2, a 6, b 8); use a larger pool"));
  EXPECT_THAT(r->invalid.at("d"), HasSubstr("ask for 16 instances (baseline 2, a 6, c 4, d 4)"));
}

TEST(EnvDocuments, ResolveLeavesOutADocumentRunningAContainerOnALoopbackPool) {
  std::string fleet = kFleet;
  fleet.replace(fleet.find("10.19.0.0/24"), 12, "127.19.0.0/24");
  auto r = model::resolve_catalog(fleet, "berth.yaml", "",
                                  {doc("box", "base: baseline\napps: {users: {image: 'users:1'}}\n"), doc("ok", "base: baseline\n")});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_THAT(r->invalid.at("box"), HasSubstr("app 'users' runs as a container (image users:1) but network.pool 127.19.0.0/24 "
                                              "is loopback"));
  EXPECT_NE(r->catalog.find("ok"), nullptr);
}

namespace {

class DocumentLoopTest : public testing::Test {
 protected:
  void SetUp() override {
    store_ = std::move(store::SqliteStore::open(":memory:").value());
    control::Deps d;
    d.clock = &clock_;
    d.executor = &exec_;
    d.runtimes = {&rt_};
    d.prober = &prober_;
    d.store = store_.get();
    d.data_dir = testing::TempDir();
    deps_ = d;
    loop_ = std::move(control::ControlLoop::create(deps_).value());
    auto plan = loop_->apply_fleet(kFleet, "berth.yaml", "", "admin", -1, false, false);
    ASSERT_TRUE(plan.ok()) << plan.error().message;
  }
  Result<model::EnvDocument> put(const std::string& name, const std::string& text, std::int64_t based_on,
                                 const std::string& user = "anna") {
    return loop_->put_document({name, text, based_on, user});
  }
  std::vector<std::string> event_types(const std::string& env) {
    std::vector<std::string> out;
    auto events = loop_->events(env, 0, 1000);
    for (const auto& e : *events) out.push_back(e.type);
    return out;
  }

  ManualClock clock_{1'796'205'600'000};  // 2026-12-02T10:00:00Z
  ManualExecutor exec_{clock_};
  runtime::SimRuntime rt_{exec_};
  testing_support::FakeProber prober_{exec_};
  control::Deps deps_;
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<control::ControlLoop> loop_;
};

}  // namespace

TEST_F(DocumentLoopTest, StaleWritesAreRefusedNamingWhoChangedIt) {
  auto v1 = put("dev-anna", "base: baseline\n", 0);
  ASSERT_TRUE(v1.ok()) << v1.error().message;
  EXPECT_EQ(v1->version, 1);
  EXPECT_EQ(v1->owner, "anna");
  auto v2 = put("dev-anna", "base: baseline\napps:\n  orders: {tag: x}\n", 1, "ben");
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ(v2->owner, "anna");  // a change keeps the owner
  auto stale = put("dev-anna", "base: baseline\napps:\n  orders: {tag: y}\n", 1);
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code, ErrorCode::kConflict);
  EXPECT_THAT(stale.error().message, HasSubstr("version 2"));
  EXPECT_THAT(stale.error().message, HasSubstr("ben"));
  // Nothing was overwritten.
  EXPECT_EQ(loop_->status("dev-anna").ok(), true);
  auto docs = loop_->documents();
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_THAT(docs[0].doc.text, HasSubstr("tag: x"));
  // Creating one that exists is refused too, and so is a fleet environment's name.
  EXPECT_EQ(put("dev-anna", "base: baseline\n", 0).error().code, ErrorCode::kConflict);
  EXPECT_EQ(put("baseline", "{}\n", 0).error().code, ErrorCode::kConflict);
  EXPECT_EQ(put("Bad_Name", "{}\n", 0).error().code, ErrorCode::kInvalid);
}

TEST_F(DocumentLoopTest, InvalidDocumentChangesNothing) {
  ASSERT_TRUE(put("dev-anna", "base: baseline\n", 0).ok());
  auto bad = put("dev-anna", "base: baseline\napps:\n  nope: {tag: x}\n", 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error().message, HasSubstr("environments/dev-anna.yaml:3:"));
  EXPECT_EQ(loop_->documents().at(0).doc.version, 1);
  auto stored = store_->load_documents();
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->at(0).version, 1);
}

TEST_F(DocumentLoopTest, DocumentsAndAuditSurviveARestart) {
  ASSERT_TRUE(put("dev-anna", "base: baseline\n", 0).ok());
  loop_.reset();
  loop_ = std::move(control::ControlLoop::create(deps_).value());
  ASSERT_TRUE(loop_->status("dev-anna").ok());
  EXPECT_EQ(loop_->documents().at(0).doc.owner, "anna");
  auto log = loop_->audit_log({});
  ASSERT_TRUE(log.ok());
  std::vector<std::string> actions;
  for (const auto& e : *log) actions.push_back(e.action + " " + e.target + " by " + e.user);
  EXPECT_THAT(actions, testing::IsSupersetOf({"fleet.apply berth.yaml by admin", "env.create dev-anna by anna"}));
}

TEST_F(DocumentLoopTest, FleetApplyPlansAndNeverRemovesDocuments) {
  ASSERT_TRUE(put("dev-anna", "base: baseline\napps:\n  orders: {tag: feature/x}\n", 0).ok());
  std::string next = kFleet;
  next.replace(next.find("tag: main"), 9, "tag: release");
  next += "  beta: {base: baseline}\n";
  auto plan = loop_->apply_fleet(next, "berth.yaml", "", "admin", loop_->fleet_version(), true, false);
  ASSERT_TRUE(plan.ok()) << plan.error().message;
  EXPECT_FALSE(plan->applied);
  EXPECT_EQ(plan->added, std::vector<std::string>{"beta"});
  EXPECT_TRUE(plan->removed.empty());  // dev-anna is its own document
  bool baseline_orders = false;
  for (const auto& c : plan->changed)
    if (c.env == "baseline" && c.app == "orders") baseline_orders = c.settings == std::vector<std::string>{"tag"};
  EXPECT_TRUE(baseline_orders);
  EXPECT_EQ(loop_->status("beta").ok(), false);  // a dry run changes nothing
  auto applied = loop_->apply_fleet(next, "berth.yaml", "", "admin", plan->version, false, false);
  ASSERT_TRUE(applied.ok()) << applied.error().message;
  EXPECT_TRUE(applied->applied);
  EXPECT_TRUE(loop_->status("beta").ok());
  EXPECT_TRUE(loop_->status("dev-anna").ok());
  // Based on a version that is no longer current: refused, naming who applied it.
  auto stale = loop_->apply_fleet(kFleet, "berth.yaml", "", "carl", plan->version, false, false);
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code, ErrorCode::kConflict);
  EXPECT_THAT(stale.error().message, HasSubstr("admin"));
}

TEST_F(DocumentLoopTest, FleetApplyThatInvalidatesADocumentNeedsForce) {
  ASSERT_TRUE(put("dev-anna", "base: baseline\napps:\n  orders: {tag: feature/x}\n", 0).ok());
  std::string without_orders = R"(network: {pool: 10.19.0.0/24}
defaults:
  command: svc ${ip}
  ports: {http: 80}
  health: {type: tcp}
apps:
  users: {}
environments:
  baseline: {}
)";
  auto refused = loop_->apply_fleet(without_orders, "berth.yaml", "", "admin", -1, false, false);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.error().message, HasSubstr("environment 'dev-anna'"));
  EXPECT_THAT(refused.error().message, HasSubstr("orders"));
  EXPECT_TRUE(loop_->status("dev-anna").ok());
  auto forced = loop_->apply_fleet(without_orders, "berth.yaml", "", "admin", -1, false, true);
  ASSERT_TRUE(forced.ok()) << forced.error().message;
  EXPECT_EQ(forced->invalidated.count("dev-anna"), 1u);
  // Left out, but its document is kept and says why.
  EXPECT_FALSE(loop_->status("dev-anna").ok());
  auto docs = loop_->documents();
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_THAT(docs[0].error, HasSubstr("orders"));
}

TEST_F(DocumentLoopTest, DeleteRefusedWhileOthersAreBasedOnIt) {
  ASSERT_TRUE(put("dev-anna", "base: baseline\n", 0).ok());
  ASSERT_TRUE(put("dev-anna-2", "base: dev-anna\n", 0).ok());
  auto r = loop_->delete_document("dev-anna", 0, "anna", false);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, HasSubstr("dev-anna-2"));
  ASSERT_TRUE(loop_->delete_document("dev-anna-2", 0, "anna", false).ok());
  ASSERT_TRUE(loop_->delete_document("dev-anna", 0, "anna", false).ok());
  EXPECT_FALSE(loop_->status("dev-anna").ok());
  EXPECT_TRUE(store_->load_documents()->empty());
  EXPECT_EQ(loop_->delete_document("baseline", 0, "anna", false).error().code, ErrorCode::kNotFound);
}

TEST_F(DocumentLoopTest, ExpiredEnvironmentsAreWarnedTakenDownThenDeleted) {
  ASSERT_TRUE(put("dev-anna", "base: baseline\nexpires: 2026-12-02T12:00:00Z\n", 0).ok());
  ASSERT_TRUE(put("dev-kept", "base: baseline\nexpires: 2026-12-02T12:00:00Z\nkeep: true\n", 0).ok());
  ASSERT_TRUE(loop_->up("dev-anna").ok());
  exec_.run_ready();
  EXPECT_EQ(rt_.running("users"), 1);
  // An hour before: a warning, nothing stops.
  exec_.advance(61 * 60'000);
  EXPECT_THAT(event_types("dev-anna"), testing::Contains("expiring"));
  EXPECT_EQ(rt_.running("users"), 1);
  // At expiry: down, kept.
  exec_.advance(60 * 60'000);
  exec_.run_ready();
  EXPECT_THAT(event_types("dev-anna"), testing::Contains("expired"));
  EXPECT_EQ(rt_.running("users"), 0);
  EXPECT_EQ(loop_->documents().size(), 2u);
  // A day later: deleted; `keep: true` stays.
  exec_.advance(25 * 3'600'000);
  exec_.run_ready();
  auto docs = loop_->documents();
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_EQ(docs[0].doc.name, "dev-kept");
  EXPECT_FALSE(loop_->status("dev-anna").ok());
}

TEST(Secrets, MarkedValuesReachTheInstanceOnlyAndStaySecretAbove) {
  const std::string fleet = std::string(kFleet) +
                            "  with-secret:\n    base: baseline\n    apps:\n      users:\n        env:\n"
                            "          DB_PASSWORD: {secret: true, value: hunter2}\n          LOG: debug\n";
  auto cat = model::Catalog::parse(fleet, "berth.yaml", "",
                                   {doc("dev-anna", "base: with-secret\napps:\n  users:\n    env: {DB_PASSWORD: s3cret}\n")});
  ASSERT_TRUE(cat.ok()) << cat.error().message;
  const model::AppSpec* users = cat->find("with-secret")->find("users");
  EXPECT_EQ(users->env.at("DB_PASSWORD"), "hunter2");
  EXPECT_TRUE(users->is_secret_setting("env.DB_PASSWORD"));
  EXPECT_FALSE(users->is_secret_setting("env.LOG"));
  // Overridden above with a plain value: still secret.
  const model::AppSpec* anna = cat->find("dev-anna")->find("users");
  EXPECT_EQ(anna->env.at("DB_PASSWORD"), "s3cret");
  EXPECT_TRUE(anna->is_secret_setting("env.DB_PASSWORD"));
  // Masked in text; written back masked, the stored value is kept.
  const std::string masked = model::mask_secrets(fleet);
  EXPECT_THAT(masked, testing::Not(HasSubstr("hunter2")));
  EXPECT_THAT(masked, HasSubstr(std::string(model::kSecretMask)));
  auto restored = model::restore_secrets(masked, fleet, "berth.yaml");
  ASSERT_TRUE(restored.ok());
  EXPECT_THAT(*restored, HasSubstr("hunter2"));
  auto nothing_to_keep = model::restore_secrets(masked, "apps: {}\n", "berth.yaml");
  ASSERT_FALSE(nothing_to_keep.ok());
  EXPECT_THAT(nothing_to_keep.error().message, HasSubstr("environments.with-secret.apps.users.env.DB_PASSWORD"));
  auto bad = model::Catalog::parse(std::string(kFleet) + "  x:\n    env: {A: {secret: yes, value: [1]}}\n", "berth.yaml", "");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error().message, HasSubstr("secret must be true or false"));
}

TEST_F(DocumentLoopTest, ATtlCountsFromTheLastChange) {
  ASSERT_TRUE(put("dev-anna", "base: baseline\nttl: 2h\n", 0).ok());
  const model::Environment* e = loop_->catalog()->find("dev-anna");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->expires_at, clock_.wall_ms() + 2 * 3'600'000);
  exec_.advance(90 * 60'000);
  ASSERT_TRUE(put("dev-anna", "base: baseline\nttl: 2h\ndescription: still here\n", 1).ok());
  EXPECT_EQ(loop_->catalog()->find("dev-anna")->expires_at, clock_.wall_ms() + 2 * 3'600'000);
  auto both = put("dev-anna", "base: baseline\nttl: 2h\nexpires: 2030-01-01T00:00:00Z\n", 2);
  ASSERT_FALSE(both.ok());
  EXPECT_THAT(both.error().message, HasSubstr("ttl or expires, not both"));
}

std::string replaced_text(std::string text, const std::string& from, const std::string& to) {
  auto at = text.find(from);
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

// A secret kept out of every document: {secret: true, file: PATH}, read by the daemon when the
// catalog is resolved; the fleet's maintainers' only.
TEST(Secrets, ReadFromAFileBesideTheFleetDocument) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(testing::TempDir()) / ("berth-secrets-" + std::to_string(::getpid()));
  fs::create_directories(dir / "secrets");
  std::ofstream(dir / "secrets" / "db") << "s3cr3t\n";
  const std::string fleet = "network: {pool: 10.29.0.0/24}\ndefaults: {command: svc}\napps:\n  orders:\n    env:\n"
                            "      DB_PASSWORD: {secret: true, file: secrets/db}\nenvironments:\n  dev: {}\n";
  auto c = model::Catalog::parse(fleet, "berth.yaml", dir.string());
  ASSERT_TRUE(c.ok()) << c.error().message;
  const auto* orders = c->find("dev")->find("orders");
  EXPECT_EQ(orders->env.at("DB_PASSWORD"), "s3cr3t");
  EXPECT_TRUE(orders->secrets.count("DB_PASSWORD"));
  // The stored text holds the path only; masking leaves it as it is.
  EXPECT_EQ(model::mask_secrets(fleet).find("s3cr3t"), std::string::npos);
  EXPECT_NE(model::mask_secrets(fleet).find("secrets/db"), std::string::npos);
  // A missing file is located; a file and a value at once, or a file without secret: true, refused.
  auto missing = model::Catalog::parse(replaced_text(fleet, "secrets/db", "secrets/nope"), "berth.yaml", dir.string());
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.error().message, HasSubstr("berth.yaml:6:"));
  EXPECT_THAT(missing.error().message, HasSubstr("cannot read the secrets file"));
  EXPECT_FALSE(model::Catalog::parse(replaced_text(fleet, "file: secrets/db", "file: secrets/db, value: x"), "berth.yaml",
                                     dir.string()).ok());
  auto not_secret = model::Catalog::parse(replaced_text(fleet, "secret: true, ", ""), "berth.yaml", dir.string());
  ASSERT_FALSE(not_secret.ok());
  EXPECT_THAT(not_secret.error().message, HasSubstr("add secret: true"));
  // Never a member's: the daemon would read any path for them.
  auto member = model::check_member_document(
      doc("d", "base: dev\napps:\n  orders:\n    env:\n      X: {secret: true, file: /etc/shadow}\n"), {});
  ASSERT_FALSE(member.ok());
  EXPECT_THAT(member.error().message, HasSubstr("secrets read from files"));
  fs::remove_all(dir);
}
