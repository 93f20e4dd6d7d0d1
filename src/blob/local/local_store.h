// blob/local/local_store.h — BlobStore in a local directory: <root>/<key[0:2]>/<key>. Objects are
// written with write_file_atomically (temporary file, fsync, rename), so a crash leaves either
// the whole object or none.
#pragma once

#include <string>

#include "blob/blob_store.h"

namespace berth::blob {

class LocalStore final : public BlobStore {
 public:
  explicit LocalStore(std::string root) : root_(std::move(root)) {}
  Result<bool> exists(const std::string& key) override;
  Result<bool> put(const std::string& key, std::span<const std::uint8_t> data) override;
  Result<std::vector<std::uint8_t>> get(const std::string& key) override;
  std::string describe() const override { return "local store " + root_; }
  std::string path_of(const std::string& key) const;

 private:
  std::string root_;
};

}  // namespace berth::blob
