// base/digest.h — SHA-256 of bytes, as lowercase hex (OpenSSL's EVP): the key of a chunk, the
// hash a token is kept as, the checksum of a migration.
// Threading: a pure function; any thread.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace berth {

std::string sha256_hex(std::string_view data);
inline std::string sha256_hex(std::span<const std::uint8_t> data) {
  return sha256_hex(std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
}

}  // namespace berth
