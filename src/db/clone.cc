#include "db/clone.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "base/subprocess.h"
#include "base/text.h"

namespace berth::db {
namespace fs = std::filesystem;

std::string_view to_string(CloneMethod m) {
  switch (m) {
    case CloneMethod::kReflink: return "reflink";
    case CloneMethod::kOverlay: return "overlay";
    case CloneMethod::kCopy: return "copy";
    case CloneMethod::kRestore: return "restore";
  }
  return "?";
}

namespace {

struct FileJob {
  fs::path from, to;
  std::uintmax_t size;
  mode_t mode;
};

// Copy or clone one file. `reflink` failing with "not supported" is reported as kConflict so
// the caller can fall back.
Status copy_file(const FileJob& f, bool reflink) {
  int in = ::open(f.from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return unavailable(fmt::format("cannot read {}: {}", f.from.string(), std::strerror(errno)));
  int out = ::open(f.to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, f.mode & 07777);
  if (out < 0) {
    int err = errno;
    ::close(in);
    return unavailable(fmt::format("cannot create {}: {}", f.to.string(), std::strerror(err)));
  }
  Status st;
  if (reflink) {
    if (::ioctl(out, FICLONE, in) != 0) {
      int err = errno;
      st = (err == EOPNOTSUPP || err == EXDEV || err == EINVAL || err == ENOTTY || err == EPERM)
               ? conflict(fmt::format("FICLONE not supported here: {}", std::strerror(err)))
               : unavailable(fmt::format("cloning {}: {}", f.to.string(), std::strerror(err)));
    }
  } else {
    std::uintmax_t left = f.size;
    bool by_hand = false;  // copy_file_range cannot (across filesystems from an overlay): read and write
    std::vector<char> buf;
    while (left > 0) {
      ssize_t n = 0;
      if (!by_hand) {
        n = ::copy_file_range(in, nullptr, out, nullptr, left, 0);
        if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) && left == f.size) {
          by_hand = true;
          buf.resize(1 << 20);
          continue;
        }
      } else {
        n = ::read(in, buf.data(), std::min<std::uintmax_t>(buf.size(), left));
        for (ssize_t done = 0; n > 0 && done < n;) {
          const ssize_t w = ::write(out, buf.data() + done, static_cast<std::size_t>(n - done));
          if (w < 0 && errno == EINTR) continue;
          if (w <= 0) {
            n = -1;
            break;
          }
          done += w;
        }
      }
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        st = unavailable(fmt::format("copying {}: {}", f.to.string(), n == 0 ? "source shrank" : std::strerror(errno)));
        break;
      }
      left -= static_cast<std::uintmax_t>(n);
    }
  }
  ::close(in);
  if (::close(out) != 0 && st.ok()) st = unavailable(fmt::format("writing {}: {}", f.to.string(), std::strerror(errno)));
  return st;
}

// Directories, symlinks and the list of files of `golden`, created/collected under `data`.
Result<std::vector<FileJob>> make_skeleton(const fs::path& golden, const fs::path& data) {
  std::vector<FileJob> files;
  std::error_code ec;
  fs::create_directories(data, ec);
  if (ec) return unavailable(fmt::format("cannot create {}: {}", data.string(), ec.message()));
  for (auto it = fs::recursive_directory_iterator(golden, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    const fs::path rel = it->path().lexically_relative(golden);
    const fs::path to = data / rel;
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0) return unavailable(fmt::format("stat {}: {}", it->path().string(), std::strerror(errno)));
    if (S_ISDIR(st.st_mode)) {
      if (::mkdir(to.c_str(), st.st_mode & 07777) != 0 && errno != EEXIST)
        return unavailable(fmt::format("mkdir {}: {}", to.string(), std::strerror(errno)));
    } else if (S_ISLNK(st.st_mode)) {
      fs::copy_symlink(it->path(), to, ec);
      if (ec) return unavailable(fmt::format("symlink {}: {}", to.string(), ec.message()));
    } else if (S_ISREG(st.st_mode)) {
      files.push_back({it->path(), to, static_cast<std::uintmax_t>(st.st_size), st.st_mode});
    }
  }
  if (ec) return unavailable(fmt::format("listing {}: {}", golden.string(), ec.message()));
  // Largest first, so the long copies start at once.
  std::sort(files.begin(), files.end(), [](const FileJob& a, const FileJob& b) { return a.size > b.size; });
  return files;
}

Status copy_all(const std::vector<FileJob>& files, bool reflink, int parallel) {
  std::atomic<std::size_t> next{0};
  std::mutex mu;
  Status first;
  std::atomic<bool> failed{false};
  auto work = [&] {
    while (!failed) {
      std::size_t i = next++;
      if (i >= files.size()) return;
      Status st = copy_file(files[i], reflink);
      if (!st.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (!failed.exchange(true)) first = st;
      }
    }
  };
  std::vector<std::thread> pool;
  for (int i = 1; i < std::max(1, reflink ? 1 : parallel); ++i) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  return first;
}

Status mount_overlay(const fs::path& golden, const fs::path& dest) {
  const fs::path upper = dest / "upper", work = dest / "work", data = dest / "data";
  std::error_code ec;
  for (const auto& d : {upper, work, data}) fs::create_directories(d, ec);
  if (ec) return unavailable(fmt::format("cannot create {}: {}", dest.string(), ec.message()));
  const std::string opts = fmt::format("lowerdir={},upperdir={},workdir={}", golden.string(), upper.string(), work.string());
  // metacopy: giving the copy to the user its server runs as (chown) copies up metadata only,
  // not every file's data. Kernels without it mount the plain way.
  if (::mount("overlay", data.c_str(), "overlay", 0, (opts + ",metacopy=on").c_str()) == 0) return {};
  if (::mount("overlay", data.c_str(), "overlay", 0, opts.c_str()) != 0)
    return conflict(fmt::format("overlay mount on {}: {}", data.string(), std::strerror(errno)));
  return {};
}

bool is_mountpoint(const fs::path& p) {
  struct stat a {}, b {};
  if (::stat(p.c_str(), &a) != 0 || ::stat(p.parent_path().c_str(), &b) != 0) return false;
  return a.st_dev != b.st_dev;
}

}  // namespace

Result<CloneMethod> clone_tree(const std::string& golden, const std::string& dest, const CloneOptions& options) {
  std::error_code ec;
  if (!fs::is_directory(golden, ec)) return not_found(fmt::format("golden directory {} does not exist", golden));
  if (fs::exists(dest, ec)) return conflict(fmt::format("{} already exists", dest));
  const fs::path data = fs::path(dest) / "data";
  auto fail = [&](Error e) -> Result<CloneMethod> {
    (void)remove_copy(dest);
    return e;
  };
  auto files = make_skeleton(golden, data);
  if (!files.ok()) return fail(files.error());
  if (options.allow_reflink && !files->empty()) {
    // Try the first (largest) file; if the filesystem cannot clone, fall through.
    Status first = copy_file(files->front(), true);
    if (first.ok()) {
      std::vector<FileJob> rest(files->begin() + 1, files->end());
      Status st = copy_all(rest, true, 1);
      if (!st.ok()) return fail(st.error());
      return CloneMethod::kReflink;
    }
    if (first.error().code != ErrorCode::kConflict) return fail(first.error());
    fs::remove(files->front().to, ec);
  }
  if (options.allow_overlay && ::geteuid() == 0) {
    fs::remove_all(dest, ec);
    Status st = mount_overlay(golden, dest);
    if (st.ok()) return CloneMethod::kOverlay;
    fs::remove_all(dest, ec);
    files = make_skeleton(golden, data);
    if (!files.ok()) return fail(files.error());
  }
  Status st = copy_all(*files, false, options.parallel);
  if (!st.ok()) return fail(st.error());
  return CloneMethod::kCopy;
}

Status ensure_mounted(const std::string& golden, const std::string& dest, CloneMethod method) {
  if (method != CloneMethod::kOverlay) return {};
  const fs::path data = fs::path(dest) / "data";
  if (is_mountpoint(data)) return {};
  return mount_overlay(golden, dest);
}

Status remove_copy(const std::string& dest) {
  const fs::path data = fs::path(dest) / "data";
  if (is_mountpoint(data) && ::umount2(data.c_str(), MNT_DETACH) != 0)
    return unavailable(fmt::format("cannot unmount {}: {}", data.string(), std::strerror(errno)));
  std::error_code ec;
  fs::remove_all(dest, ec);
  if (ec) return unavailable(fmt::format("cannot remove {}: {}", dest, ec.message()));
  return {};
}

Status put_back(const std::string& dest, const std::string& snapshot) {
  const fs::path data = fs::path(dest) / "data", failed = fs::path(dest) / "data.failed";
  std::error_code ec;
  if (!fs::is_directory(snapshot, ec)) return not_found(fmt::format("the snapshot {} is gone", snapshot));
  if (is_mountpoint(data) && ::umount2(data.c_str(), MNT_DETACH) != 0)
    return unavailable(fmt::format("cannot unmount {}: {}", data.string(), std::strerror(errno)));
  fs::remove_all(failed, ec);
  if (fs::exists(data, ec)) fs::rename(data, failed, ec);
  if (ec) return unavailable(fmt::format("cannot move {} aside: {}", data.string(), ec.message()));
  fs::rename(snapshot, data, ec);
  if (ec) return unavailable(fmt::format("cannot move {} to {}: {}", snapshot, data.string(), ec.message()));
  for (const auto& gone : {failed, fs::path(dest) / "upper", fs::path(dest) / "work"}) fs::remove_all(gone, ec);
  return {};
}

Status archive_copy(const std::string& datadir, const std::string& tar, Identity owner, const std::string& log) {
  const std::string part = tar + ".partial";
  const fs::path marker_dir = tar + ".marker";
  std::error_code ec;
  fs::remove(part, ec);
  fs::remove_all(marker_dir, ec);
  fs::create_directories(marker_dir, ec);
  if (ec) return unavailable(fmt::format("cannot create {}: {}", marker_dir.string(), ec.message()));
  std::ofstream(marker_dir / kSeededMarker).close();
  const std::string own = fmt::format("--numeric-owner --owner={} --group={}", owner.uid, owner.gid);
  // (One command per call: run_logged execs it, so `a && b` would run `a` alone.)
  Status st = run_logged(fmt::format("tar {} -C {} -cf {} .", own, shell_quote(datadir), shell_quote(part)), log,
                         "archiving " + datadir);
  if (st.ok())
    st = run_logged(fmt::format("tar {} -C {} -rf {} {}", own, shell_quote(marker_dir.string()), shell_quote(part),
                                kSeededMarker),
                    log, "archiving " + datadir);
  if (st.ok()) st = run_logged("sync " + shell_quote(part), log, "archiving " + datadir);
  fs::remove_all(marker_dir, ec);
  if (st.ok()) {
    fs::rename(part, tar, ec);
    if (ec) st = unavailable(fmt::format("cannot rename {} to {}: {}", part, tar, ec.message()));
  }
  if (!st.ok()) fs::remove(part, ec);
  return st;
}

}  // namespace berth::db
