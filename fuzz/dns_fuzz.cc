// Fuzz the name server's packet path: parse any bytes as a query and answer it from a zone with
// plain, multi-instance, fall-through and port records, over UDP and TCP size limits. Every
// response must be within the buffer and, when not dropped, at least a header.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "net/dns/zone.h"

namespace {

berth::dns::Zone make_zone() {
  using namespace berth::dns;
  Zone z;
  z.ns_ip = 0x7F000001;
  auto base = std::make_shared<EnvRecords>();
  base->apps["users"] = {"baseline", {0x7F4D000A, 0x7F4D000B}, {true, false}, {{"http", 8080}}};
  AppRecords many{"baseline", {}, {}, {{"http", 80}, {"admin", 81}}};
  for (std::uint32_t i = 0; i < 80; ++i) {
    many.ips.push_back(0x7F4E0000 + i);
    many.ready.push_back(i % 3 != 0);
  }
  base->apps["many"] = many;
  z.envs.set("baseline", base);
  auto thin = std::make_shared<EnvRecords>();
  thin->apps["orders"] = {"beta-7", {0x7F4D0014}, {true}, {{"http", 8080}}};
  thin->fall_through["users"] = "baseline";
  thin->fall_through["many"] = "baseline";
  thin->fall_through["ghost"] = "nowhere";
  z.envs.set("beta-7", thin);
  return z;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const berth::dns::Zone zone = make_zone();
  static std::vector<std::uint8_t> out(65535);
  std::span<const std::uint8_t> packet(data, size);
  for (bool tcp : {false, true}) {
    std::size_t n = berth::dns::respond(zone, packet, out, tcp);
    if (n > out.size() || (n != 0 && n < 12)) __builtin_trap();
    if (!tcp && n > 1232 && n > 512) __builtin_trap();  // never more than a UDP client may take
  }
  return 0;
}
