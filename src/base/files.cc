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

}  // namespace berth
