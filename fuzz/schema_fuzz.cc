// Fuzz what berth reads of a server's schema dump (db/schema.h): a copy an environment may have
// changed in any way is dumped and parsed. Never throws or crashes; a schema compares equal to
// itself, and against nothing every object of it is missing.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "db/schema.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace berth::db;
  auto s = parse_schema_dump(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!s.ok()) return 0;
  if (!compare_schemas(*s, *s).empty()) std::abort();
  const auto gone = compare_schemas(*s, Schema{});
  if (gone.size() != s->size()) std::abort();
  for (const auto& d : gone)
    if (d.what != SchemaDifference::What::kMissing || !s->count(d.object)) std::abort();
  return 0;
}
