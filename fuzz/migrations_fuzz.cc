// Fuzz what berth reads of a standard's migrations (db/migrations.h): file names from a
// repository the DBAs release to, and the records a release compares them with. Each line is a
// file name, then (after a tab) its text; lines before a line "--" were released, the rest are
// the directory. Never throws or crashes; what is planned is new, in order, and reads back.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/digest.h"
#include "db/migrations.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace berth;
  using namespace berth::db;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::vector<Migration> released, available;
  bool in_released = true;
  while (!input.empty()) {
    const auto nl = input.find('\n');
    const std::string_view line = input.substr(0, nl);
    if (line == "--") {
      in_released = false;
    } else {
      const auto tab = line.find('\t');
      auto m = parse_migration_name(line.substr(0, tab));
      if (m.ok() && *m) {
        Migration got = **m;
        got.sql = tab == std::string_view::npos ? "" : std::string(line.substr(tab + 1));
        got.checksum = sha256_hex(got.sql);
        got.released_in = 1;
        auto back = migration_from_json(to_json(got));
        if (!back.ok() || back->file != got.file || back->version != got.version || back->checksum != got.checksum)
          __builtin_trap();
        (in_released ? released : available).push_back(std::move(got));
      }
    }
    if (nl == std::string_view::npos) break;
    input.remove_prefix(nl + 1);
  }
  std::stable_sort(available.begin(), available.end(), migration_before);
  for (bool out_of_order : {false, true}) {
    auto plan = plan_release("std", released, available, {.out_of_order = out_of_order});
    if (!plan.ok()) {
      if (plan.error().message.empty()) __builtin_trap();
      continue;
    }
    // Planned versioned ones come in increasing order and none was released.
    const std::vector<std::uint64_t>* last = nullptr;
    for (const auto& m : *plan) {
      if (m.kind != Migration::Kind::kVersioned) continue;
      if (last && !(*last < m.version)) __builtin_trap();
      for (const auto& r : released)
        if (r.kind == Migration::Kind::kVersioned && r.version == m.version) __builtin_trap();
      last = &m.version;
    }
  }
  return 0;
}
