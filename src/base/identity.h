// base/identity.h — the unprivileged users berth runs instances and builds as.
//
// A root daemon never runs what a catalog or a branch supplies as root: each environment's
// process instances run as a user id of their own from a configured range (so one
// environment's code cannot signal, trace or read another's), builds as the range's first id,
// all with the range's first id as their only group — the group that may enter the data
// directory and read artifacts, nothing else in it. The ids need no /etc/passwd entries.
//
// Plain values and pure functions, except lookup_user (reads the host's account database) and
// chown_tree (file system); callable from any thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"

namespace berth {

struct Identity {
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  auto operator<=>(const Identity&) const = default;
};

// The range of ids a root daemon hands out: `group` (also the builds' user) = first; each
// environment gets one of first+1 … last.
struct IdRange {
  std::uint32_t first = 0;
  std::uint32_t last = 0;
  std::uint32_t group() const { return first; }
  Identity builder() const { return {first, first}; }
  std::uint32_t size() const { return last > first ? last - first : 0; }  // environments it can hold
};

// "900000-999999" → a range of at least two ids, none of them 0 and none ≥ 2^31; nullopt with
// `error` saying what is wrong.
std::optional<IdRange> parse_id_range(std::string_view text, std::string* error);

// A host account: "name", "uid", "name:group" or "uid:gid". A name must exist in the host's
// account database; a user without a group gets the account's primary group (or gid = uid for a
// bare number). Errors name the value.
Result<Identity> lookup_user(const std::string& spec);

// Give `path` and everything below it (not following symbolic links, not crossing into other
// file systems' mount points below it) to `who`. Errors name the first path that failed.
Status chown_tree(const std::string& path, Identity who);

// Let `gid` into the directory `path` (the daemon's, owner unchanged) with exactly `mode` (0710:
// enter, not list). Errors name the path.
Status open_to_group(const std::string& path, std::uint32_t gid, unsigned mode);

// The real uid and gid of a running process (/proc/<pid>/status), nullopt when it is gone.
std::optional<Identity> process_identity(pid_t pid);

}  // namespace berth
