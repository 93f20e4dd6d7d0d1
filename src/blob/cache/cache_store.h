// blob/cache/cache_store.h — a remote BlobStore with a local cache of what was read from it.
//
// get() answers from the cache when it holds the key, else from the remote store, keeping a
// copy in the cache. exists() and put() go to the remote store. A host that restores a snapshot
// twice (a cold host: the environment's copy first, its golden later) fetches each object once.
// Thread-safe like the stores it wraps; the cache is a LocalStore (objects written atomically).
#pragma once

#include <string>

#include "blob/blob_store.h"
#include "blob/local/local_store.h"

namespace berth::blob {

class CacheStore final : public BlobStore {
 public:
  CacheStore(BlobStore& remote, std::string cache_dir) : remote_(remote), cache_(cache_dir), dir_(std::move(cache_dir)) {}
  Result<bool> exists(const std::string& key) override { return remote_.exists(key); }
  Result<bool> put(const std::string& key, std::span<const std::uint8_t> data) override { return remote_.put(key, data); }
  Result<std::vector<std::uint8_t>> get(const std::string& key) override;
  std::string describe() const override { return remote_.describe() + " (cached in " + dir_ + ")"; }
  // Remove the cache directory and everything in it.
  void drop();

 private:
  BlobStore& remote_;
  LocalStore cache_;
  std::string dir_;
};

}  // namespace berth::blob
