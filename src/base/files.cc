#include "base/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

namespace berth {
namespace fs = std::filesystem;

Status write_file_atomically(const std::string& path, std::string_view text, std::optional<unsigned> mode) {
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  // A temporary name of this thread's own: several threads may write the same path at once.
  const std::string tmp = fmt::format("{}.{}.{}.tmp", path, ::getpid(), ::gettid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return unavailable(fmt::format("cannot write {}: {}", tmp, std::strerror(errno)));
  if (mode && ::fchmod(fd, static_cast<mode_t>(*mode)) != 0) {
    int err = errno;
    ::close(fd);
    fs::remove(tmp, ec);
    return unavailable(fmt::format("cannot write {}: {}", tmp, std::strerror(err)));
  }
  std::size_t off = 0;
  while (off < text.size()) {
    ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = errno;
      ::close(fd);
      fs::remove(tmp, ec);
      return unavailable(fmt::format("cannot write {}: {}", tmp, std::strerror(err)));
    }
    off += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    fs::remove(tmp, ec);
    return unavailable(fmt::format("cannot write {}: {}", tmp, std::strerror(errno)));
  }
  fs::rename(tmp, path, ec);
  if (ec) return unavailable(fmt::format("cannot write {}: {}", path, ec.message()));
  return {};
}

Result<std::string> read_file_bounded(const std::string& path, std::size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return unavailable(fmt::format("cannot read {}: {}", path, std::strerror(errno)));
  std::string out;
  char buf[64 << 10];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return unavailable(fmt::format("cannot read {}: {}", path, std::strerror(err)));
    }
    if (n == 0) break;
    if (out.size() + static_cast<std::size_t>(n) > max_bytes) {
      ::close(fd);
      return invalid(fmt::format("{} is larger than {} bytes", path, max_bytes));
    }
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

}  // namespace berth
