// Fuzz the sandbox's lease table (runtime/cluster/lease.h): any instance on the overlay can send
// it bytes. Each line must be answered with one line, never throw or crash; an answer to ASK
// must read back.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "runtime/cluster/lease.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace berth::lease;
  static const std::string token = "0123456789abcdef0123456789abcdef";
  Table table(token, 0);
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::int64_t now = 0;
  // Each line as the table would get it; a token-bearing copy too, to reach past DENIED.
  while (!input.empty()) {
    const auto nl = input.find('\n');
    const std::string_view line = input.substr(0, nl);
    for (const std::string& l : {std::string(line), std::string(line.substr(0, line.find(' ') + 1)) + token + " h"}) {
      const std::string answer = table.handle(l, now += 7);
      if (answer.empty() || answer.find('\n') != std::string::npos || answer.size() > kMaxLine) __builtin_trap();
      if (answer.rfind("LEASE ", 0) == 0 && !parse_lease(answer)) __builtin_trap();
    }
    std::string why;
    // What is accepted reads back the same once written out.
    if (auto r = parse_request(line, &why)) {
      auto again = parse_request(format(*r), &why);
      if (!again || format(*again) != format(*r)) __builtin_trap();
    }
    if (nl == std::string_view::npos) break;
    input.remove_prefix(nl + 1);
  }
  (void)parse_lease(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
