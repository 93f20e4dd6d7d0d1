// The control loop on a state store that fails (store/fault): a write refused, a commit lost, an
// acknowledgement lost. Whatever the store does, nothing is half-applied, no instance runs
// without its address stored, no address is held twice, and a restarted loop adopts what runs.
// Same doubles as loop_test.cc: the simulated runtime, a fake prober, virtual time.
#include <algorithm>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "control/loop.h"
#include "fake_prober.h"
#include "runtime/sim/sim_runtime.h"
#include "store/fault/fault_store.h"
#include "store/sqlite/sqlite_store.h"

using namespace berth;
using testing::HasSubstr;
using Op = store::FaultStore::Op;

namespace {

using testing_support::FakeProber;

const char* kCatalog = R"(network: {pool: 10.29.0.0/24}
defaults:
  command: svc ${ip}
  ports: {http: 80}
  health: {type: http, start_interval: 50ms, interval: 1s, start_period: 10s, failure_threshold: 2}
  restart: {backoff: 100ms}
apps:
  db: {}
  api:
    depends_on: [db]
  web:
    instances: 2
    depends_on: [api]
  cron: {}
environments:
  dev: {}
)";

const std::vector<std::string> kApps = {"db", "api", "web", "cron"};

class StoreFaultTest : public testing::Test {
 protected:
  void SetUp() override {
    for (int i = 2; i <= 40; ++i) prober_.healthy.insert("10.29.0." + std::to_string(i));
    start_daemon();
    ASSERT_TRUE(loop_->apply(kCatalog, "t.yaml").ok());
  }
  void start_daemon() {
    loop_.reset();
    control::Deps d;
    d.clock = &clock_;
    d.executor = &exec_;
    d.runtimes = {&rt_};
    d.prober = &prober_;
    d.store = &faults_;
    d.data_dir = testing::TempDir();
    loop_ = std::move(control::ControlLoop::create(d).value());
  }
  bool ready() { return loop_->status("dev").ok() && loop_->status("dev")->ready; }
  int instances_running() {
    int n = 0;
    for (const auto& a : kApps) n += rt_.running(a);
    return n;
  }

  // What a daemon killed now would find, checked against what runs: every instance the runtime
  // created has its record and an assigned lease in the store, at the address it was started
  // with; no two keys share an address; no address lies outside the pool.
  void expect_store_matches_runtime() {
    auto leases = sqlite_->load_leases();
    auto records = sqlite_->load_instances();
    ASSERT_TRUE(leases.ok() && records.ok());
    std::map<ipam::LeaseKey, ipam::Lease> by_key;
    std::set<model::Ipv4> addresses;
    for (const auto& l : *leases) {
      by_key[l.key] = l;
      EXPECT_TRUE(addresses.insert(l.ip).second) << model::format_ipv4(l.ip) << " is leased twice";
      EXPECT_EQ(model::format_ipv4(l.ip).rfind("10.29.0.", 0), 0u) << model::format_ipv4(l.ip);
    }
    std::set<ipam::LeaseKey> recorded;
    for (const auto& r : *records) recorded.insert(r.key);
    std::set<std::string> running_ips;
    for (const auto& [ref, inst] : rt_.instances()) {
      const auto& id = inst.spec.id;
      ipam::LeaseKey key{id.env, id.app, id.ordinal};
      EXPECT_TRUE(running_ips.insert(inst.spec.ip).second) << inst.spec.ip << " runs twice";
      if (!inst.recorded) continue;  // its on_created has not been answered yet
      EXPECT_TRUE(recorded.count(key)) << id.app << "." << id.ordinal << " runs with no record: a restart would leak it";
      auto l = by_key.find(key);
      ASSERT_NE(l, by_key.end()) << id.app << "." << id.ordinal << " runs at " << inst.spec.ip << " with no stored lease";
      EXPECT_FALSE(l->second.reserved()) << id.app;
      EXPECT_EQ(model::format_ipv4(l->second.ip), inst.spec.ip) << id.app << " runs at another address than stored";
    }
  }
  std::map<std::string, std::string> addresses() {
    std::map<std::string, std::string> out;
    auto s = loop_->status("dev");
    for (const auto& a : s->apps)
      for (const auto& i : a.instances) out[a.app + "." + std::to_string(i.ordinal)] = i.ip;
    return out;
  }
  // The daemon is killed and started again on the same store; it must adopt everything.
  void restart_and_expect_adopted() {
    const auto before = addresses();
    const auto launches = rt_.launched().size();
    start_daemon();  // (the old loop is destroyed first)
    exec_.advance(300);
    EXPECT_TRUE(ready());
    EXPECT_EQ(rt_.launched().size(), launches) << "a restarted daemon started second copies";
    EXPECT_EQ(addresses(), before);
    expect_store_matches_runtime();
  }

  ManualClock clock_;
  ManualExecutor exec_{clock_};
  runtime::SimRuntime rt_{exec_};
  FakeProber prober_{exec_};
  std::unique_ptr<store::SqliteStore> sqlite_ = std::move(store::SqliteStore::open(":memory:").value());
  store::FaultStore faults_{*sqlite_};
  std::unique_ptr<control::ControlLoop> loop_;
};

}  // namespace

TEST_F(StoreFaultTest, APassWhoseCommitFailsRunsNothingWithoutItsAddressStored) {
  ASSERT_TRUE(loop_->up("dev").ok());
  faults_.fail(Op::kTransaction, 1, "disk I/O error");
  loop_->reconcile_now();  // assigns addresses and launches wave 1; its commit fails
  ASSERT_EQ(faults_.injected(Op::kTransaction), 1);
  exec_.run_ready();  // the runtime creates what was launched
  expect_store_matches_runtime();
  exec_.advance(2000);
  EXPECT_TRUE(ready());
  EXPECT_EQ(instances_running(), 5);
  expect_store_matches_runtime();
  restart_and_expect_adopted();
}

TEST_F(StoreFaultTest, EveryCommitFailingForAWhileThenHealing) {
  ASSERT_TRUE(loop_->up("dev").ok());
  faults_.fail(Op::kTransaction, 1, "database is locked", /*sticky=*/true);
  for (int i = 0; i < 20; ++i) {
    exec_.advance(100);
    expect_store_matches_runtime();
  }
  EXPECT_EQ(instances_running(), 0);  // none could be recorded with its address: none ran
  EXPECT_FALSE(ready());
  auto status = loop_->status("dev");
  ASSERT_TRUE(status.ok());
  EXPECT_THAT(status->apps.front().message, HasSubstr("database is locked"));
  faults_.heal();
  exec_.advance(3000);
  EXPECT_TRUE(ready());
  EXPECT_EQ(instances_running(), 5);
  expect_store_matches_runtime();
  restart_and_expect_adopted();
}

TEST_F(StoreFaultTest, ALostCommitAcknowledgementLeavesOneAddressPerInstance) {
  ASSERT_TRUE(loop_->up("dev").ok());
  faults_.lose_ack(Op::kTransaction, 1);  // the pass's writes are stored; the loop is told not
  loop_->reconcile_now();
  exec_.run_ready();
  expect_store_matches_runtime();
  exec_.advance(2000);
  EXPECT_TRUE(ready());
  expect_store_matches_runtime();
  restart_and_expect_adopted();
}

TEST_F(StoreFaultTest, ALostLeaseAcknowledgementLeavesOneAddressPerInstance) {
  ASSERT_TRUE(loop_->up("dev").ok());
  faults_.lose_ack(Op::kPutLease, 1);  // db's address is stored; the IPAM is told it is not
  exec_.advance(2000);
  EXPECT_TRUE(ready());
  EXPECT_EQ(instances_running(), 5);
  expect_store_matches_runtime();
  restart_and_expect_adopted();
}

TEST_F(StoreFaultTest, AnInstanceWhoseRecordCannotBeStoredNeverRunsAndIsTriedAgain) {
  ASSERT_TRUE(loop_->up("dev").ok());
  faults_.fail(Op::kPutInstance, 1, "disk full");
  loop_->reconcile_now();
  exec_.run_ready();
  // One of wave 1 was refused by its on_created: the runtime dropped it before it ran.
  EXPECT_EQ(rt_.running("db") + rt_.running("cron"), 1);
  expect_store_matches_runtime();
  exec_.advance(2000);
  EXPECT_TRUE(ready());
  EXPECT_EQ(instances_running(), 5);
  auto events = loop_->events("dev", 0, 1000);
  ASSERT_TRUE(events.ok());
  EXPECT_TRUE(std::any_of(events->begin(), events->end(), [](const store::Event& e) {
    return e.type == "start-failed" && e.message.find("disk full") != std::string::npos;
  }));
  restart_and_expect_adopted();
}

TEST_F(StoreFaultTest, AnUpThatCannotBeStoredChangesNothing) {
  faults_.fail(Op::kSetUp, 1, "disk full");
  auto st = loop_->up("dev");
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.error().message, HasSubstr("disk full"));
  exec_.advance(1000);
  EXPECT_EQ(rt_.launched().size(), 0u);
  EXPECT_FALSE(loop_->status("dev")->up);
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(1000);
  EXPECT_TRUE(ready());
}

TEST_F(StoreFaultTest, AnApplyWhoseAuditCannotBeStoredIsNotApplied) {
  const std::string bigger = std::string(kCatalog) + "  beta: {}\n";
  faults_.fail(Op::kAppendAudit, 1, "disk full");
  auto st = loop_->apply(bigger, "t.yaml");
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.error().message, HasSubstr("disk full"));
  EXPECT_EQ(loop_->fleet_version(), 1);
  EXPECT_FALSE(loop_->status("beta").ok());
  auto stored = sqlite_->load_catalog();
  ASSERT_TRUE(stored.ok() && *stored);
  EXPECT_EQ((*stored)->version, 1);
  EXPECT_EQ((*stored)->text, kCatalog);
  start_daemon();  // and a restart finds the old one
  EXPECT_FALSE(loop_->status("beta").ok());
  ASSERT_TRUE(loop_->apply(bigger, "t.yaml").ok());
  EXPECT_TRUE(loop_->status("beta").ok());
}

TEST_F(StoreFaultTest, EventsThatCannotBeStoredAreStillDeliveredAndTheLoopGoesOn) {
  std::vector<store::Event> seen;
  loop_->subscribe([&](const store::Event& e) { seen.push_back(e); });
  faults_.fail(Op::kAppendEvent, 1, "disk full", /*sticky=*/true);
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(2000);
  EXPECT_TRUE(ready());
  ASSERT_FALSE(seen.empty());
  EXPECT_THAT(seen.front().message, HasSubstr("[not stored: state store: append_event: disk full]"));
  faults_.heal();
  expect_store_matches_runtime();
}

TEST_F(StoreFaultTest, AddressesRecordsAndEventsAreWrittenInTransactions) {
  for (Op op : {Op::kPutLease, Op::kEraseLease, Op::kPutInstance, Op::kAppendEvent})
    faults_.on_call(op, [&, op] {
      if (!faults_.in_transaction()) ADD_FAILURE() << store::FaultStore::name(op) << " outside a transaction";
    });
  const int transactions = faults_.calls(Op::kTransaction), events = faults_.calls(Op::kAppendEvent);
  ASSERT_TRUE(loop_->up("dev").ok());
  exec_.advance(2000);
  ASSERT_TRUE(ready());
  ASSERT_TRUE(loop_->down("dev").ok());
  exec_.advance(2000);
  EXPECT_GT(faults_.calls(Op::kPutLease), 0);
  // A pass's leases are one transaction; an instance's record and its address are one; the
  // events of a burst are one: fewer commits than events.
  const int commits = faults_.calls(Op::kTransaction) - transactions, written = faults_.calls(Op::kAppendEvent) - events;
  EXPECT_LT(commits, written) << commits << " transactions for " << written << " events";
  // And every event emitted is stored, numbered in order.
  auto stored = sqlite_->events("dev", 0, 1000);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(static_cast<int>(stored->size()), written);
  for (std::size_t i = 1; i < stored->size(); ++i) EXPECT_GT((*stored)[i].id, (*stored)[i - 1].id);
  EXPECT_EQ(*loop_->last_event_id(), stored->back().id);
}
