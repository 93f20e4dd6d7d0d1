#include "base/gzip.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

namespace berth {

namespace {

constexpr int kGzipWindow = 15 + 16;  // 2^15 window, gzip header and trailer

}  // namespace

Result<std::string> gzip(std::string_view text) {
  z_stream z{};
  if (deflateInit2(&z, 6, Z_DEFLATED, kGzipWindow, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return exhausted("gzip: zlib could not start (out of memory)");
  std::string out(deflateBound(&z, static_cast<uLong>(text.size())), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  z.avail_in = static_cast<uInt>(text.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&z, Z_FINISH);  // deflateBound's room: done in one call
  out.resize(z.total_out);
  deflateEnd(&z);
  if (rc != Z_STREAM_END) return internal(fmt::format("gzip: deflate ended with {}", rc));
  return out;
}

Result<std::string> gunzip(std::string_view body, std::size_t max_size) {
  z_stream z{};
  if (inflateInit2(&z, kGzipWindow) != Z_OK) return exhausted("gunzip: zlib could not start (out of memory)");
  std::string out;
  char chunk[16384];
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(body.data()));
  z.avail_in = static_cast<uInt>(body.size());
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    z.next_out = reinterpret_cast<Bytef*>(chunk);
    z.avail_out = sizeof chunk;
    rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) break;
    const std::size_t got = sizeof chunk - z.avail_out;
    if (out.size() + got > max_size) {
      inflateEnd(&z);
      return exhausted(fmt::format("gunzip: the body inflates past {} bytes", max_size));
    }
    out.append(chunk, got);
    if (rc == Z_OK && got == 0 && z.avail_in == 0) break;  // cut short
  }
  inflateEnd(&z);
  if (rc != Z_STREAM_END)
    return invalid(fmt::format("gunzip: not a whole gzip body ({})", z.msg                                  ? z.msg
                                                    : rc == Z_OK || rc == Z_BUF_ERROR ? "cut short"
                                                                                      : "bad data"));
  return out;
}

bool accepts_gzip(std::string_view header) {
  // Comma-separated codings, each maybe with parameters: "gzip, deflate;q=0.5, br".
  while (!header.empty()) {
    const auto comma = header.find(',');
    std::string_view item = header.substr(0, comma);
    header = comma == std::string_view::npos ? std::string_view{} : header.substr(comma + 1);
    const auto semi = item.find(';');
    std::string_view coding = item.substr(0, semi);
    std::string_view params = semi == std::string_view::npos ? std::string_view{} : item.substr(semi + 1);
    auto trim = [](std::string_view s) {
      while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
      while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
      return s;
    };
    coding = trim(coding);
    std::string lower(coding.size(), '\0');
    std::transform(coding.begin(), coding.end(), lower.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (lower != "gzip" && lower != "x-gzip" && lower != "*") continue;
    // q=0 (0, 0.0, 0.00, 0.000): not acceptable.
    params = trim(params);
    bool refused = false;
    if (params.size() >= 2 && (params[0] == 'q' || params[0] == 'Q') && params[1] == '=') {
      std::string_view q = trim(params.substr(2));
      refused = !q.empty() && q[0] == '0' && q.find_first_not_of("0.", 0) == std::string_view::npos;
    }
    if (!refused) return true;
  }
  return false;
}

}  // namespace berth
