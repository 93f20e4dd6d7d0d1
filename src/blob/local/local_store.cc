#include "blob/local/local_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

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
  std::string dir = root_ + "/" + key.substr(0, 2);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return unavailable(fmt::format("{}: cannot create {}: {}", describe(), dir, ec.message()));
  std::string tmp = fmt::format("{}/.{}.{}.tmp", dir, key, getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return unavailable(fmt::format("{}: cannot write {}: {}", describe(), tmp, std::strerror(errno)));
  std::size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = errno;
      ::close(fd);
      fs::remove(tmp, ec);
      return unavailable(fmt::format("{}: writing object {}: {}", describe(), key, std::strerror(err)));
    }
    off += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    fs::remove(tmp, ec);
    return unavailable(fmt::format("{}: flushing object {}: {}", describe(), key, std::strerror(errno)));
  }
  fs::rename(tmp, path_of(key), ec);
  if (ec) return unavailable(fmt::format("{}: storing object {}: {}", describe(), key, ec.message()));
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
