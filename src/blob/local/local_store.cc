#include "blob/local/local_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "base/files.h"

namespace berth::blob {
namespace fs = std::filesystem;

namespace {
bool valid_key(const std::string& key) {
  return key.size() >= 3 && key.find_first_not_of("0123456789abcdef") == std::string::npos;
}
}  // namespace

std::string LocalStore::path_of(const std::string& key) const { return root_ + "/" + key.substr(0, 2) + "/" + key; }

Result<bool> LocalStore::exists(const std::string& key) {
  if (!valid_key(key)) return invalid(fmt::format("bad object key '{}'", key));
  std::error_code ec;
  return fs::exists(path_of(key), ec);
}

Result<bool> LocalStore::put(const std::string& key, std::span<const std::uint8_t> data) {
  auto there = exists(key);
  if (!there.ok()) return there.error();
  if (*there) return false;
  Status st = write_file_atomically(
      path_of(key), std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
  if (!st.ok()) return st.error().wrap(describe() + ": storing object " + key);
  return true;
}

Result<std::vector<std::uint8_t>> LocalStore::get(const std::string& key) {
  if (!valid_key(key)) return invalid(fmt::format("bad object key '{}'", key));
  int fd = ::open(path_of(key).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return not_found(fmt::format("{}: object {} is missing", describe(), key));
    return unavailable(fmt::format("{}: reading object {}: {}", describe(), key, std::strerror(errno)));
  }
  std::vector<std::uint8_t> out;
  std::uint8_t buf[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return unavailable(fmt::format("{}: reading object {}: {}", describe(), key, std::strerror(err)));
    }
    if (n == 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  ::close(fd);
  return out;
}

}  // namespace berth::blob
