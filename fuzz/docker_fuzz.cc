// Fuzz what berth reads from dockerd (engine/stream.h) and from the programs in containers: the
// multiplexed output stream (fed in pieces of the sizes the input's first byte picks), lines,
// log timestamps, event and build-progress JSON.
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/stream.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace berth::engine;
  if (size == 0) return 0;
  const std::size_t piece = 1 + data[0] % 64;
  std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  Demux demux;
  Lines lines(256);
  std::size_t out = 0;
  for (std::size_t i = 0; i < input.size(); i += piece) {
    auto st = demux.feed(input.substr(i, piece), [&](int stream, std::string_view p) {
      if (stream < 0 || stream > 2) __builtin_trap();
      out += p.size();
      lines.feed(p, [&](std::string_view line, bool) {
        if (line.size() > 256) __builtin_trap();  // a line is never longer than its bound
        (void)split_timestamp(line);
      });
    });
    if (!st.ok()) break;
  }
  if (out > input.size()) __builtin_trap();  // payload is never more than what came in
  lines.finish([](std::string_view, bool) {});
  Lines json_lines;
  json_lines.feed(input, [](std::string_view line, bool) {
    (void)parse_container_event(line);
    (void)parse_build_message(line);
  });
  return 0;
}
