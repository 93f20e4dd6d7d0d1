// IPAM: stickiness, exclusions, exhaustion, reservations, and no address handed out twice
// under any interleaving of environments going up and down.
#include <filesystem>
#include <random>
#include <thread>
#include <set>

#include <gtest/gtest.h>

#include "net/ipam/ipam.h"
#include "store/fault/fault_store.h"
#include "store/sqlite/sqlite_store.h"

using namespace berth;
using ipam::Ipam;
using ipam::LeaseKey;

namespace {

model::NetworkSpec net(const char* pool, std::vector<const char*> exclude = {}, Millis reserve = 60'000) {
  model::NetworkSpec n;
  n.pool = *model::parse_range(pool);
  n.pool_text = pool;
  for (auto e : exclude) n.exclude.push_back(*model::parse_range(e));
  n.reserve_for_ms = reserve;
  return n;
}

struct Fixture : testing::Test {
  ManualClock clock;
  std::unique_ptr<store::SqliteStore> db = std::move(store::SqliteStore::open(":memory:").value());
};

}  // namespace

using IpamTest = Fixture;

TEST_F(IpamTest, SkipsNetworkBroadcastAndExcluded) {
  auto ipam = Ipam::create(net("10.1.0.0/29", {"10.1.0.1", "10.1.0.3-10.1.0.4"}), *db, clock);
  ASSERT_TRUE(ipam.ok());
  std::vector<std::string> got;
  for (int i = 0; i < 3; ++i) got.push_back(model::format_ipv4(*ipam->assign({"e", "a", i})));
  EXPECT_EQ(got, (std::vector<std::string>{"10.1.0.2", "10.1.0.5", "10.1.0.6"}));
  auto full = ipam->assign({"e", "a", 3});
  ASSERT_FALSE(full.ok());
  EXPECT_NE(full.error().message.find("exhausted"), std::string::npos);
}

TEST_F(IpamTest, StickyAcrossCallsAndRestarts) {
  auto n = net("10.1.0.0/24");
  model::Ipv4 first;
  {
    auto ipam = Ipam::create(n, *db, clock);
    first = *ipam->assign({"beta", "users", 1});
    ipam->assign({"beta", "users", 0}).value();
    EXPECT_EQ(*ipam->assign({"beta", "users", 1}), first);
  }
  auto again = Ipam::create(n, *db, clock);  // a daemon restart: same store
  EXPECT_EQ(*again->lookup({"beta", "users", 1}), first);
  EXPECT_EQ(*again->assign({"beta", "users", 1}), first);
}

TEST_F(IpamTest, ReleasedAddressesStayReservedUntilExpiry) {
  auto ipam = Ipam::create(net("10.1.0.0/29", {"10.1.0.4-10.1.0.6"}, 10'000), *db, clock);  // 2 usable: .2 .3
  auto a = *ipam->assign({"e1", "a", 0});
  auto b = *ipam->assign({"e1", "b", 0});
  ASSERT_TRUE(ipam->release({"e1", "a", 0}).ok());
  // Reserved: another key cannot have it yet…
  EXPECT_FALSE(ipam->assign({"e2", "a", 0}).ok());
  // …but the same key gets it back.
  EXPECT_EQ(*ipam->assign({"e1", "a", 0}), a);
  ASSERT_TRUE(ipam->release({"e1", "a", 0}).ok());
  clock.advance(10'000);
  auto c = ipam->assign({"e2", "a", 0});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, a);
  EXPECT_FALSE(ipam->lookup({"e1", "a", 0}).has_value());
  EXPECT_EQ(*ipam->lookup({"e1", "b", 0}), b);
}

TEST_F(IpamTest, PoolChangeMovesLeasesOutsideIt) {
  auto ipam = Ipam::create(net("10.1.0.0/24"), *db, clock);
  auto old_ip = *ipam->assign({"e", "a", 0});
  EXPECT_EQ(model::format_ipv4(old_ip), "10.1.0.2");  // the first after the gateway
  ipam->set_network(net("10.1.0.0/24", {"10.1.0.2"}));
  EXPECT_EQ(model::format_ipv4(*ipam->assign({"e", "a", 0})), "10.1.0.3");
}

TEST_F(IpamTest, StoreRefusesOneAddressForTwoKeys) {
  ASSERT_TRUE(db->put_lease({{"e", "a", 0}, 42, 0}).ok());
  EXPECT_FALSE(db->put_lease({{"e", "b", 0}, 42, 0}).ok());
  auto leases = db->load_leases();
  ASSERT_EQ(leases->size(), 1u);
  EXPECT_EQ(leases->front().key.app, "a");
}

// Many environments going up and down in a random interleaving, with time passing: at every
// step no address is held by two keys, none is excluded, and every key keeps its address while
// it holds a lease.
TEST_F(IpamTest, RandomInterleavingNeverDoubleAssigns) {
  auto n = net("10.2.0.0/26", {"10.2.0.1", "10.2.0.10-10.2.0.19"}, 5'000);
  auto ipam = Ipam::create(n, *db, clock);
  std::mt19937 rng(7);
  std::map<LeaseKey, model::Ipv4> held;
  for (int step = 0; step < 5000; ++step) {
    LeaseKey k{"env" + std::to_string(rng() % 8), "app" + std::to_string(rng() % 3), static_cast<int>(rng() % 2)};
    switch (rng() % 4) {
      case 0:
      case 1: {
        auto ip = ipam->assign(k);
        if (!ip.ok()) break;  // exhausted is allowed; handing out a bad address is not
        ASSERT_TRUE(n.usable(*ip));
        if (held.count(k)) {
          ASSERT_EQ(held[k], *ip) << "a held lease moved";
        }
        held[k] = *ip;
        break;
      }
      case 2:
        ASSERT_TRUE(ipam->release(k).ok());
        break;
      case 3:
        clock.advance(static_cast<Millis>(rng() % 3000));
        break;
    }
    // Keys whose reservation was reclaimed no longer hold anything.
    for (auto it = held.begin(); it != held.end();)
      it = ipam->lookup(it->first) ? std::next(it) : held.erase(it);
    std::set<model::Ipv4> seen;
    for (const auto& l : ipam->leases()) ASSERT_TRUE(seen.insert(l.ip).second) << "address given twice";
  }
  // The store agrees with memory.
  EXPECT_EQ(db->load_leases()->size(), ipam->leases().size());
}

// Two allocators on one database through separate connections, racing from two threads (what
// two daemons would do if the data-directory lock were bypassed). Each has a stale view of the
// other's leases, so they pick the same addresses; the store's unique index must refuse the
// second holder every time, and every address an allocator returned must be durably its own.
TEST(IpamConcurrency, TwoAllocatorsOnOneDatabaseNeverShareAnAddress) {
  auto dir = std::filesystem::temp_directory_path() / ("berth-ipam-race-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  auto path = (dir / "state.db").string();
  ManualClock clock;
  auto n = net("10.3.0.0/24");
  std::vector<std::pair<LeaseKey, model::Ipv4>> won[2];
  auto run = [&](int side) {
    auto db = store::SqliteStore::open(path);
    ASSERT_TRUE(db.ok());
    auto ipam = Ipam::create(n, **db, clock);
    ASSERT_TRUE(ipam.ok());
    for (int i = 0; i < 100; ++i) {
      LeaseKey k{"env" + std::to_string(side), "app", i};
      if (auto ip = ipam->assign(k); ip.ok()) won[side].push_back({k, *ip});
    }
  };
  { auto init = store::SqliteStore::open(path); ASSERT_TRUE(init.ok()); }
  std::thread a(run, 0), b(run, 1);
  a.join();
  b.join();
  auto db = store::SqliteStore::open(path);
  auto stored = (*db)->load_leases();
  ASSERT_TRUE(stored.ok());
  std::map<model::Ipv4, LeaseKey> holder;
  for (const auto& l : *stored) ASSERT_TRUE(holder.emplace(l.ip, l.key).second) << "address stored twice";
  std::size_t total = 0;
  for (const auto& side : won)
    for (const auto& [k, ip] : side) {
      ++total;
      ASSERT_TRUE(holder.count(ip));
      EXPECT_EQ(holder[ip], k) << "an allocator returned an address someone else holds";
    }
  EXPECT_GT(total, 100u);  // both made progress
  std::filesystem::remove_all(dir);
}

// Filling a pool starts each search where the last one ended, but the answer is still the
// lowest free address: one freed or whose reservation expired below the others is found again.
TEST_F(IpamTest, LowestFreeAddressAfterReleasesAndExpiries) {
  auto ipam = Ipam::create(net("10.2.0.0/20", {}, 1'000), *db, clock);
  ASSERT_TRUE(ipam.ok());
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(ipam->assign({"e", "a", i}).ok());
  const auto tenth = *ipam->lookup({"e", "a", 10});
  const auto twentieth = *ipam->lookup({"e", "a", 20});
  ASSERT_TRUE(ipam->release({"e", "a", 10}).ok());  // reserved for a while: not handed out
  const auto next = *ipam->assign({"other", "a", 0});
  EXPECT_GT(next, *ipam->lookup({"e", "a", 999}));
  ASSERT_TRUE(ipam->forget({"e", "a", 20}).ok());  // gone at once: the lowest free now
  EXPECT_EQ(*ipam->assign({"other", "a", 1}), twentieth);
  clock.advance(1'001);  // the reservation expired: its address is the lowest free again
  EXPECT_EQ(*ipam->assign({"other", "a", 2}), tenth);
  EXPECT_EQ(*ipam->assign({"other", "a", 3}), next + 1);
  // Sticky as ever: the released key comes back to a new address only if its own was taken.
  EXPECT_NE(*ipam->assign({"e", "a", 10}), tenth);
}

// A write reported lost though it was done (store/fault): the store holds a lease the Ipam does
// not, so the next key's write of that address is refused. After resync() the store holds
// exactly the Ipam's leases and the address is free again: a lost acknowledgement costs none.
TEST_F(IpamTest, ResyncWritesTheStoreAgainFromMemoryAfterALostWrite) {
  using Op = store::FaultStore::Op;
  store::FaultStore faults(*db);
  auto ipam = Ipam::create(net("10.1.0.0/29"), faults, clock);
  ASSERT_TRUE(ipam.ok());
  faults.lose_ack(Op::kPutLease, 1);
  ASSERT_FALSE(ipam->assign({"e", "lost", 0}).ok());  // stored as 10.1.0.2 all the same (.1: the gateway)
  EXPECT_TRUE(ipam->suspected());
  EXPECT_EQ(model::format_ipv4(*ipam->assign({"e", "a", 0})), "10.1.0.3");  // .2 is refused by the store
  ASSERT_TRUE(ipam->resync().ok());
  EXPECT_FALSE(ipam->suspected());
  auto stored = db->load_leases();
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->size(), 1u);
  EXPECT_EQ(stored->front().key.app, "a");
  EXPECT_EQ(model::format_ipv4(*ipam->assign({"e", "b", 0})), "10.1.0.2");  // not leaked
  // A resync when nothing failed reads nothing.
  const int loads = faults.calls(Op::kLoadLeases);
  ASSERT_TRUE(ipam->resync().ok());
  EXPECT_EQ(faults.calls(Op::kLoadLeases), loads);
}

// A transaction rolled back undoes writes the Ipam made: its owner says so, resync() redoes them.
TEST_F(IpamTest, ResyncRedoesWritesARolledBackTransactionUndid) {
  auto ipam = Ipam::create(net("10.1.0.0/29"), *db, clock);
  ASSERT_TRUE(ipam.ok());
  ASSERT_TRUE(ipam->assign({"e", "kept", 0}).ok());
  Status rolled = db->transaction([&]() -> Status {
    EXPECT_TRUE(ipam->release({"e", "kept", 0}).ok());
    EXPECT_TRUE(ipam->assign({"e", "new", 0}).ok());
    return unavailable("commit failed");
  });
  ASSERT_FALSE(rolled.ok());
  ipam->suspect();
  ASSERT_TRUE(ipam->resync().ok());
  auto again = Ipam::create(net("10.1.0.0/29"), *db, clock);  // what a restarted daemon reads
  ASSERT_TRUE(again.ok());
  auto a = again->leases(), b = ipam->leases();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].key, b[i].key);
    EXPECT_EQ(a[i].ip, b[i].ip);
    EXPECT_EQ(a[i].released_at, b[i].released_at);
  }
  EXPECT_EQ(a.size(), 2u);
}
