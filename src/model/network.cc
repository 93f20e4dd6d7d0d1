#include "model/network.h"

#include <algorithm>
#include <charconv>

#include <fmt/format.h>

namespace berth::model {

std::optional<Ipv4> parse_ipv4(std::string_view text) {
  Ipv4 ip = 0;
  const char* p = text.data();
  const char* end = text.data() + text.size();
  for (int i = 0; i < 4; ++i) {
    unsigned octet = 0;
    auto [next, ec] = std::from_chars(p, end, octet);
    if (ec != std::errc() || next == p || octet > 255 || next - p > 3) return std::nullopt;
    ip = (ip << 8) | octet;
    p = next;
    if (i < 3) {
      if (p == end || *p != '.') return std::nullopt;
      ++p;
    }
  }
  if (p != end) return std::nullopt;
  return ip;
}

std::string format_ipv4(Ipv4 ip) {
  // (By hand: every status view formats every instance's address.)
  char buf[16];
  char* p = buf;
  for (int shift = 24; shift >= 0; shift -= 8) {
    const unsigned octet = (ip >> shift) & 255;
    if (octet >= 100) *p++ = static_cast<char>('0' + octet / 100);
    if (octet >= 10) *p++ = static_cast<char>('0' + octet / 10 % 10);
    *p++ = static_cast<char>('0' + octet % 10);
    if (shift) *p++ = '.';
  }
  return std::string(buf, p);
}

std::optional<IpRange> parse_range(std::string_view text) {
  if (auto slash = text.find('/'); slash != std::string_view::npos) {
    auto base = parse_ipv4(text.substr(0, slash));
    unsigned len = 0;
    auto lentext = text.substr(slash + 1);
    auto [p, ec] = std::from_chars(lentext.data(), lentext.data() + lentext.size(), len);
    if (!base || ec != std::errc() || p != lentext.data() + lentext.size() || len > 32) return std::nullopt;
    Ipv4 mask = len == 0 ? 0 : ~Ipv4{0} << (32 - len);
    if ((*base & ~mask) != 0) return std::nullopt;  // host bits set: ambiguous
    return IpRange{*base, *base | ~mask};
  }
  if (auto dash = text.find('-'); dash != std::string_view::npos) {
    auto a = parse_ipv4(text.substr(0, dash));
    auto b = parse_ipv4(text.substr(dash + 1));
    if (!a || !b || *a > *b) return std::nullopt;
    return IpRange{*a, *b};
  }
  auto ip = parse_ipv4(text);
  if (!ip) return std::nullopt;
  return IpRange{*ip, *ip};
}

bool NetworkSpec::usable(Ipv4 ip) const {
  if (!pool.contains(ip)) return false;
  if (pool.last - pool.first >= 3 && (ip == pool.first || ip == pool.last || ip == gateway())) return false;
  for (const auto& r : exclude)
    if (r.contains(ip)) return false;
  return true;
}

std::uint64_t NetworkSpec::usable_count() const {
  std::uint64_t n = 0;
  // Pools are at most a /8 in practice; count by walking ranges, not addresses.
  std::uint64_t total = std::uint64_t{pool.last} - pool.first + 1;
  n = total >= 4 ? total - 2 : total;
  // Subtract excluded addresses inside the pool (ranges may overlap: merge first).
  std::vector<IpRange> ex;
  std::vector<IpRange> excluded = exclude;
  if (total >= 4) excluded.push_back({gateway(), gateway()});
  for (auto r : excluded) {
    Ipv4 lo = std::max(r.first, pool.first), hi = std::min(r.last, pool.last);
    if (total >= 4) {
      if (lo == pool.first) ++lo;
      if (hi == pool.last) --hi;
    }
    if (lo <= hi && lo >= pool.first && hi <= pool.last) ex.push_back({lo, hi});
  }
  std::sort(ex.begin(), ex.end(), [](auto a, auto b) { return a.first < b.first; });
  Ipv4 covered_to = 0;
  bool any = false;
  for (auto r : ex) {
    Ipv4 lo = (any && r.first <= covered_to) ? covered_to + 1 : r.first;
    if (any && r.last <= covered_to) continue;
    n -= std::uint64_t{r.last} - lo + 1;
    covered_to = r.last;
    any = true;
  }
  return n;
}

}  // namespace berth::model
