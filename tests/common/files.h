// tests/common/files.h — file helpers the unit and integration tests share.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace berth::testing_files {

// `n` bytes from a seeded generator: the same seed, the same bytes.
inline std::vector<std::uint8_t> random_bytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint8_t> v(n);
  for (auto& b : v) b = static_cast<std::uint8_t>(rng());
  return v;
}

// Write `data` to `p`, creating its directories.
inline void write(const std::filesystem::path& p, const std::vector<std::uint8_t>& data) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(data.data()), static_cast<long>(data.size()));
}

inline std::vector<std::uint8_t> read(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The text of a /proc file (cmdline, environ, stat, status...), at most `limit` bytes; "" when the
// process is gone or the file cannot be read. A process can exit between listing /proc and reading
// its files: read() then fails with ESRCH, which std::ifstream's buffer reports by throwing.
inline std::string read_proc(const std::filesystem::path& p, std::size_t limit = 1 << 20) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  std::string out;
  char buf[4096];
  while (out.size() < limit) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out.size() > limit ? out.substr(0, limit) : out;
}

}  // namespace berth::testing_files
