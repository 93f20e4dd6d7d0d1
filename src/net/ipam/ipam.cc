#include "net/ipam/ipam.h"

#include <algorithm>
#include <fmt/format.h>

namespace berth::ipam {

Result<Ipam> Ipam::create(model::NetworkSpec network, LeaseStore& store, const Clock& clock) {
  Ipam ipam(std::move(network), store, clock);
  auto leases = store.load_leases();
  if (!leases.ok()) return leases.error().wrap("loading IP leases");
  for (const auto& l : *leases) {
    if (ipam.by_ip_.count(l.ip)) {
      // Cannot happen with the store's unique index; refuse rather than hand one IP out twice.
      return internal(fmt::format("stored leases give {} to two instances", model::format_ipv4(l.ip)));
    }
    ipam.by_key_[l.key] = l;
    ipam.by_ip_[l.ip] = l.key;
  }
  return ipam;
}

bool Ipam::expired(const Lease& l) const {
  return l.reserved() && clock_->wall_ms() - l.released_at >= network_.reserve_for_ms;
}

Status Ipam::drop(const LeaseKey& key) {
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return {};
  BERTH_TRY(write(store_->erase_lease(key)));
  hint_ = std::min<std::uint64_t>(hint_, it->second.ip);
  by_ip_.erase(it->second.ip);
  by_key_.erase(it);
  return {};
}

Result<Ipv4> Ipam::assign(const LeaseKey& key) {
  if (auto it = by_key_.find(key); it != by_key_.end()) {
    Lease lease = it->second;
    if (network_.usable(lease.ip)) {
      if (lease.reserved()) {
        lease.released_at = 0;
        BERTH_TRY(write(store_->put_lease(lease)));
        it->second = lease;
      }
      return lease.ip;
    }
    BERTH_TRY(drop(key));  // the pool changed under it
  }
  const auto& pool = network_.pool;
  bool solid = true;  // everything from hint_ to here is unusable or assigned
  for (std::uint64_t ip = std::max<std::uint64_t>(pool.first, hint_); ip <= pool.last; ++ip) {
    auto candidate = static_cast<Ipv4>(ip);
    auto passed = [&](bool for_good) {
      solid = solid && for_good;
      if (solid) hint_ = ip + 1;
    };
    if (!network_.usable(candidate)) {
      passed(true);
      continue;
    }
    if (auto held = by_ip_.find(candidate); held != by_ip_.end()) {
      const Lease& other = by_key_.at(held->second);
      if (!expired(other)) {
        passed(!other.reserved());  // a reservation may expire: the search must come back to it
        continue;
      }
      BERTH_TRY(drop(other.key));
    }
    if (taken_elsewhere_.count(candidate)) {
      passed(false);
      continue;
    }
    Lease lease{key, candidate, 0};
    if (auto st = store_->put_lease(lease); !st.ok()) {
      // Someone else sharing the store holds it: never ours; try the next address.
      if (st.error().code == ErrorCode::kConflict) {
        taken_elsewhere_.insert(candidate);
        continue;
      }
      suspect_ = true;  // (it may have been written all the same)
      return st.error();
    }
    by_key_[key] = lease;
    by_ip_[candidate] = key;
    passed(true);
    return candidate;
  }
  return unavailable(fmt::format("address pool {} is exhausted: {} usable addresses, all leased or reserved; "
                                 "bring an environment down, wait for reservations to expire "
                                 "(network.reserve_for) or use a larger pool",
                                 network_.pool_text, network_.usable_count()));
}

Status Ipam::release(const LeaseKey& key) {
  auto it = by_key_.find(key);
  if (it == by_key_.end() || it->second.reserved()) return {};
  Lease lease = it->second;
  lease.released_at = clock_->wall_ms();
  BERTH_TRY(write(store_->put_lease(lease)));
  it->second = lease;
  hint_ = std::min<std::uint64_t>(hint_, lease.ip);
  return {};
}

Status Ipam::forget(const LeaseKey& key) { return drop(key); }

Status Ipam::write(Status st) {
  if (!st.ok()) suspect_ = true;
  return st;
}

Status Ipam::resync() {
  if (!suspect_) return {};
  auto stored = store_->load_leases();
  if (!stored.ok()) return stored.error().wrap("re-reading IP leases");
  std::set<LeaseKey> same;
  for (const auto& l : *stored) {
    auto it = by_key_.find(l.key);
    if (it != by_key_.end() && it->second.ip == l.ip && it->second.released_at == l.released_at) {
      same.insert(l.key);
      continue;
    }
    BERTH_TRY(store_->erase_lease(l.key));  // first, so that its address is free to be written
  }
  for (const auto& [key, lease] : by_key_)
    if (!same.count(key)) BERTH_TRY(store_->put_lease(lease));
  // What the store refused before may have been this Ipam's own write, reported lost.
  taken_elsewhere_.clear();
  hint_ = 0;
  suspect_ = false;
  return {};
}

std::optional<Ipv4> Ipam::lookup(const LeaseKeyRef& key) const {
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return std::nullopt;
  return it->second.ip;
}

std::vector<Lease> Ipam::leases() const {
  std::vector<Lease> out;
  for (const auto& [k, l] : by_key_) out.push_back(l);
  std::sort(out.begin(), out.end(), [](const Lease& a, const Lease& b) { return a.key < b.key; });
  return out;
}

}  // namespace berth::ipam
