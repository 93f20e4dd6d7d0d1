// net/ipam/ipam.h — stable addresses for instances.
//
// Every (environment, app, ordinal) gets one address from the catalog's pool and keeps it across
// instance restarts, daemon restarts and re-deploys. Never handed out: the pool's network and
// broadcast addresses, excluded addresses, an address held by another key. When an environment
// goes down its leases become reservations that expire after network.reserve_for, so a quick
// `up` gets the same addresses back; only expired reservations are reclaimed for other keys.
//
// Every change is written through the LeaseStore before the call returns, so a crash at any
// moment loses no lease and never lets two keys hold one address. When a write fails, or the
// transaction it was part of is rolled back, resync() writes the store again from memory. The
// Ipam is owned by the control loop (single-threaded); it takes no locks.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <functional>
#include <vector>

#include "base/clock.h"
#include "base/result.h"
#include "model/network.h"

namespace berth::ipam {

using model::Ipv4;

struct LeaseKey {
  std::string env;
  std::string app;
  int ordinal = 0;
  auto operator<=>(const LeaseKey&) const = default;
};

// A key by reference, to look one up without copying its names.
struct LeaseKeyRef {
  LeaseKeyRef(std::string_view e, std::string_view a, int o) : env(e), app(a), ordinal(o) {}
  LeaseKeyRef(const LeaseKey& k) : env(k.env), app(k.app), ordinal(k.ordinal) {}  // NOLINT: implicit on purpose
  std::string_view env;
  std::string_view app;
  int ordinal = 0;
};

// For unordered containers of keys; transparent: they find a LeaseKeyRef too.
struct LeaseKeyHash {
  using is_transparent = void;
  std::size_t operator()(const LeaseKey& k) const noexcept { return (*this)(LeaseKeyRef(k)); }
  std::size_t operator()(const LeaseKeyRef& k) const noexcept {
    std::size_t h = std::hash<std::string_view>{}(k.env);
    h ^= std::hash<std::string_view>{}(k.app) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    return h ^ (static_cast<std::size_t>(k.ordinal) * 0x9e3779b97f4a7c15ULL);
  }
};
struct LeaseKeyEqual {
  using is_transparent = void;
  bool operator()(const LeaseKeyRef& x, const LeaseKeyRef& y) const noexcept {
    return x.ordinal == y.ordinal && x.app == y.app && x.env == y.env;
  }
};

struct Lease {
  LeaseKey key;
  Ipv4 ip = 0;
  // 0 while assigned; the wall time of release while only reserved.
  Millis released_at = 0;
  bool reserved() const { return released_at != 0; }
};

// Durable storage of leases; implemented by the state store.
class LeaseStore {
 public:
  virtual ~LeaseStore() = default;
  virtual Result<std::vector<Lease>> load_leases() = 0;
  virtual Status put_lease(const Lease& lease) = 0;
  virtual Status erase_lease(const LeaseKey& key) = 0;
};

class Ipam {
 public:
  // Loads the stored leases. `store` and `clock` must outlive the Ipam.
  static Result<Ipam> create(model::NetworkSpec network, LeaseStore& store, const Clock& clock);

  // The key's address: its existing lease (assigned or reserved), or the lowest free usable
  // address. A lease outside the pool or now excluded (after a catalog change) is replaced.
  Result<Ipv4> assign(const LeaseKey& key);
  // Turn the key's lease into a reservation (environment down). No-op without a lease.
  Status release(const LeaseKey& key);
  // Forget the key's lease at once (app removed from the catalog).
  Status forget(const LeaseKey& key);

  // The store may no longer hold what this Ipam holds: a transaction its writes were part of
  // was rolled back, or a write was reported failed though it may have been done. The Ipam marks
  // itself so on every failed write; its owner marks it when a transaction fails.
  void suspect() { suspect_ = true; }
  bool suspected() const { return suspect_; }
  // When suspected, makes the store hold exactly this Ipam's leases: stored leases it does not
  // hold as they are are erased, then every missing one is written. Nothing to do otherwise.
  // Memory is the truth while the daemon runs; the store must be this Ipam's alone (the daemon's
  // is). Call it inside the transaction of the writes that depend on it (an instance's record),
  // and call suspect() again if that transaction fails.
  Status resync();

  std::optional<Ipv4> lookup(const LeaseKeyRef& key) const;
  std::vector<Lease> leases() const;  // by key
  void set_network(model::NetworkSpec network) {
    network_ = std::move(network);
    hint_ = 0;
  }
  const model::NetworkSpec& network() const { return network_; }

 private:
  Ipam(model::NetworkSpec network, LeaseStore& store, const Clock& clock)
      : network_(std::move(network)), store_(&store), clock_(&clock) {}
  bool expired(const Lease& l) const;
  Status drop(const LeaseKey& key);
  Status write(Status st);  // a store write's outcome; a failure makes the Ipam suspect

  model::NetworkSpec network_;
  LeaseStore* store_;
  const Clock* clock_;
  std::unordered_map<LeaseKey, Lease, LeaseKeyHash, LeaseKeyEqual> by_key_;
  std::map<Ipv4, LeaseKey> by_ip_;
  std::set<Ipv4> taken_elsewhere_;  // refused by the store: leased through another connection
  bool suspect_ = false;            // the store may differ from by_key_ (see suspect())
  // Where the search for the lowest free address starts: every address below it is unusable or
  // held by an assigned (not reserved) lease. Lowered whenever a lease is reserved or dropped,
  // so filling a pool costs O(1) per address instead of a scan from its start.
  std::uint64_t hint_ = 0;
};

}  // namespace berth::ipam
