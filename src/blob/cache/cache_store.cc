#include "blob/cache/cache_store.h"

#include <filesystem>

namespace berth::blob {

Result<std::vector<std::uint8_t>> CacheStore::get(const std::string& key) {
  auto cached = cache_.get(key);
  if (cached.ok()) return cached;
  auto fresh = remote_.get(key);
  // A cache that cannot be written only costs a second fetch later.
  if (fresh.ok()) (void)cache_.put(key, *fresh);
  return fresh;
}

void CacheStore::drop() {
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

}  // namespace berth::blob
