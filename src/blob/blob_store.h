// blob/blob_store.h — content-addressed object storage for snapshots.
//
// A BlobStore holds immutable objects under string keys (chunk and manifest hashes). Writing a
// key that exists is a no-op; a reader never sees a partly written object. Implementations:
// blob/local (a directory, the embedded default); Swift and S3 stores follow the same interface.
// exists() and get() may be called from several threads at once (parallel restore); put() from
// one thread at a time.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"

namespace berth::blob {

class BlobStore {
 public:
  virtual ~BlobStore() = default;
  virtual Result<bool> exists(const std::string& key) = 0;
  // Store `data` under `key` unless the key exists; returns whether it was written.
  virtual Result<bool> put(const std::string& key, std::span<const std::uint8_t> data) = 0;
  virtual Result<std::vector<std::uint8_t>> get(const std::string& key) = 0;
  virtual std::string describe() const = 0;  // for messages: "local store /var/lib/berth/blobs"
};

}  // namespace berth::blob
