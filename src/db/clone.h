// db/clone.h — a private, writable copy of a golden data directory, by the fastest path the
// host supports.
//
// reflink: every file cloned with FICLONE (XFS with reflink, btrfs): constant time per file,
//          blocks shared until written. Needs the golden and the copy on the same filesystem.
// overlay: an overlayfs mount with the golden as its read-only lower layer (root only). Fast to
//          make, but MariaDB's first write to a file copies the whole file up.
// copy:    every file copied with copy_file_range, several files at once.
// The copy lives in DEST/data (the directory a server runs on); DEST must not exist. Nothing
// half-made is left: on failure DEST is removed.
#pragma once

#include <string>
#include <string_view>

#include "base/identity.h"
#include "base/result.h"

namespace berth::db {

// kRestore: not cloned — restored straight from the blob store (a host without the golden).
enum class CloneMethod { kReflink, kOverlay, kCopy, kRestore };
std::string_view to_string(CloneMethod m);

struct CloneOptions {
  bool allow_reflink = true;
  bool allow_overlay = true;  // also requires root
  int parallel = 4;           // files copied at once by the copy path
};

Result<CloneMethod> clone_tree(const std::string& golden, const std::string& dest, const CloneOptions& options = {});

// After a reboot an overlay copy is not mounted any more: mount it again (no-op otherwise).
Status ensure_mounted(const std::string& golden, const std::string& dest, CloneMethod method);

// Unmount (an overlay) and remove a copy.
Status remove_copy(const std::string& dest);

// Put `snapshot` (a directory made by clone_tree(DEST/data, ...)'s data/) back as DEST/data:
// an overlay copy is unmounted and becomes a plain directory (its layers removed). Blocking.
Status put_back(const std::string& dest, const std::string& snapshot);

// The last entry of every archive_copy(): an empty file. A container's volume filled from the
// archive is complete once it is there (runtime::Mount::seed says the same).
inline constexpr std::string_view kSeededMarker = ".berth-seeded";

// A tar archive at `tar` of the data directory `datadir` (its contents, not the directory), every
// entry owned by `owner` (the user a server in a container runs as), its last entry
// kSeededMarker: what fills a volume for a server that runs on another host
// (runtime::Mount::seed). Written under a temporary name and renamed; `log` gets tar's output.
// Blocking: for worker threads.
Status archive_copy(const std::string& datadir, const std::string& tar, Identity owner, const std::string& log);

}  // namespace berth::db
