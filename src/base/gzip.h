// base/gzip.h — gzip (RFC 1952) with zlib, for HTTP bodies: the API sends large answers
// compressed to clients that accept it, the CLI inflates them.
//
// Pure functions on buffers; any thread. inflate is bounded: a body that would inflate past
// `max_size` is refused, so a small hostile body cannot grow into a large allocation.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "base/result.h"

namespace berth {

// `text` as one gzip member (zlib level 6: a status body of 30 KB compresses to about 2 KB in
// well under a millisecond).
Result<std::string> gzip(std::string_view text);

// The data of a gzip body: invalid if it is not gzip or is cut short, exhausted if it inflates
// past `max_size` bytes.
Result<std::string> gunzip(std::string_view body, std::size_t max_size);

// Whether an Accept-Encoding header value admits gzip (RFC 9110 §12.5.3: "gzip", "x-gzip" or
// "*", without q=0).
bool accepts_gzip(std::string_view accept_encoding);

}  // namespace berth
