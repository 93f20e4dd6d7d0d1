// model/network.h — the address pool instances draw from: IPv4 prefix plus excluded addresses.
//
// Pure values and parsing. The allocator that hands addresses out lives in net/ipam.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/clock.h"

namespace berth::model {

using Ipv4 = std::uint32_t;  // host byte order

std::optional<Ipv4> parse_ipv4(std::string_view text);
std::string format_ipv4(Ipv4 ip);

struct IpRange {  // inclusive
  Ipv4 first = 0;
  Ipv4 last = 0;
  bool contains(Ipv4 ip) const { return ip >= first && ip <= last; }
};

// "a.b.c.d", "a.b.c.d/len" or "a.b.c.d-a.b.c.e".
std::optional<IpRange> parse_range(std::string_view text);

struct NetworkSpec {
  IpRange pool{0x7F4D0000u, 0x7F4DFFFFu};  // 127.77.0.0/16
  std::string pool_text = "127.77.0.0/16";
  std::vector<IpRange> exclude;
  Millis reserve_for_ms = 10 * 60 * 1000;  // addresses of a downed environment stay reserved this long

  // The pool's gateway: its first host address. Never an instance's; berth's name server
  // answers on port 53 there, and a Docker bridge network of the pool has it as its gateway.
  Ipv4 gateway() const { return pool.last - pool.first >= 3 ? pool.first + 1 : pool.first; }
  bool loopback() const { return (pool.first >> 24) == 127; }
  // Usable: inside the pool, not its network, gateway or broadcast address, not excluded.
  bool usable(Ipv4 ip) const;
  std::uint64_t usable_count() const;
};

}  // namespace berth::model
