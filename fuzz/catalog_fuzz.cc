// Fuzz the catalog loader: any bytes must give a Catalog or a located error, never a crash,
// an exception or an over-read.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "model/catalog.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto c = berth::model::Catalog::parse(text, "fuzz.yaml");
  if (c.ok()) {
    // Exercise what the daemon does with an accepted catalog.
    for (const auto& env : c->environments())
      for (const auto& app : env.apps) (void)app.fingerprint();
  }
  return 0;
}
