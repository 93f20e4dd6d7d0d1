// base/files.h — writing small state files so that a crash leaves the old or the new content.
#pragma once

#include <string>
#include <string_view>

#include "base/result.h"

namespace berth {

// Write `text` to a temporary file beside `path`, fsync it and rename it over `path` (creating the parent directories).
// Errors name the file.
Status write_file_atomically(const std::string& path, std::string_view text);

}  // namespace berth
