// base/files.h — writing small state files so that a crash leaves the old or the new content.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"

namespace berth {

// Write `text` to a temporary file beside `path`, fsync it and rename it over `path` (creating the parent directories).
// The file gets `mode` exactly (not reduced by the umask) when given, else 0644 less the umask.
// Errors name the file.
Status write_file_atomically(const std::string& path, std::string_view text, std::optional<unsigned> mode = std::nullopt);

// The whole file, refused (naming it and the limit) when it is larger than `max_bytes`: for
// files an untrusted program wrote (a server's dump, a tool's output).
Result<std::string> read_file_bounded(const std::string& path, std::size_t max_bytes);

}  // namespace berth
