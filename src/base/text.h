// base/text.h — small text helpers shared by components: durations, RFC 3339 timestamps,
// edit distance for "did you mean" suggestions, byte counts, shell quoting.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/clock.h"

namespace berth {

// "250ms", "2s", "1.5s", "5m", "1h", "3d", "0" → milliseconds. nullopt when malformed or negative.
std::optional<Millis> parse_duration(std::string_view text);
// 1500 → "1.5s", 200 → "200ms", 120000 → "2m".
std::string format_duration(Millis ms);

// Wall milliseconds → "2026-11-28T14:36:58.123Z".
std::string rfc3339_ms(Millis wall_ms);
// "2026-11-28T14:36:58Z" or with fractional seconds → wall milliseconds; UTC ('Z') only.
std::optional<Millis> parse_rfc3339(std::string_view text);

// Levenshtein distance, for suggestions.
std::size_t edit_distance(std::string_view a, std::string_view b);
// The candidate closest to `word` if it is close enough to be a plausible typo.
std::optional<std::string> closest(std::string_view word, std::span<const std::string> candidates);

// 1.9 GB, 512 MB, 12 kB, 100 B (binary multiples, as du -h counts).
std::string format_bytes(std::uint64_t n);

// Quote for POSIX sh: abc → 'abc', it's → 'it'\''s'.
std::string shell_quote(std::string_view s);

// As one path segment or query value of a URL: every byte but RFC 3986's unreserved ones
// (letters, digits, - _ . ~) as %XX. "a b/c" → "a%20b%2Fc".
std::string percent_encode(std::string_view s);

// Split a command line into words the way sh (and Compose's string form) does, without running
// anything: blanks separate words, '...' and "..." quote, backslash escapes (outside '...').
// No expansion of any kind. Error: the message says what is unbalanced.
std::optional<std::vector<std::string>> split_words(std::string_view line, std::string* error = nullptr);

// "512M", "1.5G", "64k", "1048576" → bytes (binary multiples; b/k/m/g as Docker writes them).
std::optional<std::uint64_t> parse_bytes(std::string_view text);

}  // namespace berth
