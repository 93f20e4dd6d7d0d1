// base/log_rotate.h — keeping append-only log files bounded while their writers keep writing.
//
// Instances write their output straight into their log file (O_APPEND; the daemon holds no
// pipe), so a file cannot be renamed away and reopened. Instead a file over `max_bytes` loses its
// oldest part in place: fallocate(FALLOC_FL_COLLAPSE_RANGE) removes whole blocks from its head
// while appends continue (the kernel serializes both), so no line written meanwhile is lost.
// Where the filesystem cannot collapse (tmpfs, overlayfs), the newest half is copied aside and
// the file truncated: lines written during that copy may be lost, which the result says.
//
// Readers that kept an offset find it past the end, or pointing at later text: read_log_file
// (runtime/runtime.h) restarts a reader whose offset is past the end from the file's tail.
//
// Thread: any; touches only the files. Call it off the control loop (it reads and writes up to
// max_bytes per file in the fallback).
#pragma once

#include <cstdint>
#include <string>

#include "base/result.h"

namespace berth {

struct RotateResult {
  int rotated = 0;             // files cut
  std::uint64_t freed = 0;     // bytes removed from them
  int copied = 0;              // of which by the copy-and-truncate fallback
};

// Cuts every regular file named *.log under `dir` (recursively) that is over `max_bytes` down
// to about half of `max_bytes` (its newest part; in whole MiB, so a file is cut once it is at
// least 1 MiB over half). Unreadable entries are skipped.
RotateResult rotate_logs(const std::string& dir, std::uint64_t max_bytes);
// The same for one file.
Result<std::uint64_t> rotate_log(const std::string& path, std::uint64_t max_bytes, bool* copied = nullptr);

}  // namespace berth
