#include "base/log_rotate.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include <fmt/format.h>

namespace berth {
namespace fs = std::filesystem;

namespace {
// Collapsed ranges must be whole filesystem blocks; 1 MiB is a multiple of every block size.
constexpr std::uint64_t kAlign = 1 << 20;

struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};
}  // namespace

Result<std::uint64_t> rotate_log(const std::string& path, std::uint64_t max_bytes, bool* copied) {
  if (copied) *copied = false;
  Fd f{::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW)};
  if (f.fd < 0) return unavailable(fmt::format("{}: {}", path, std::strerror(errno)));
  struct stat st {};
  if (::fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode)) return std::uint64_t{0};
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size <= max_bytes) return std::uint64_t{0};
  const std::uint64_t keep = max_bytes / 2;
  const std::uint64_t cut = (size - keep) / kAlign * kAlign;
  if (cut == 0) return std::uint64_t{0};  // less than one aligned range over: cut when it has grown
  if (::fallocate(f.fd, FALLOC_FL_COLLAPSE_RANGE, 0, static_cast<off_t>(cut)) == 0) return cut;
  if (errno != EOPNOTSUPP && errno != EINVAL)
    return unavailable(fmt::format("{}: cutting {} bytes: {}", path, cut, std::strerror(errno)));
  // Fallback: the newest `keep` bytes go to PATH.1, the file starts again empty.
  std::vector<char> tail(keep);
  const auto n = ::pread(f.fd, tail.data(), tail.size(), static_cast<off_t>(size - keep));
  if (n < 0) return unavailable(fmt::format("{}: {}", path, std::strerror(errno)));
  const std::string aside = path + ".1";
  Fd out{::open(aside.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, st.st_mode & 0777)};
  if (out.fd < 0 || ::write(out.fd, tail.data(), static_cast<std::size_t>(n)) != n)
    return unavailable(fmt::format("{}: {}", aside, std::strerror(errno)));
  if (::ftruncate(f.fd, 0) != 0) return unavailable(fmt::format("{}: {}", path, std::strerror(errno)));
  if (copied) *copied = true;
  return size;
}

RotateResult rotate_logs(const std::string& dir, std::uint64_t max_bytes) {
  RotateResult r;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    std::error_code e;
    if (it->path().extension() != ".log" || !it->is_regular_file(e) || it->file_size(e) <= max_bytes) continue;
    bool copied = false;
    auto freed = rotate_log(it->path().string(), max_bytes, &copied);
    if (!freed.ok() || *freed == 0) continue;
    ++r.rotated;
    r.freed += *freed;
    if (copied) ++r.copied;
  }
  return r;
}

}  // namespace berth
