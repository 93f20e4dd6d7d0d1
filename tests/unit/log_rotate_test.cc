// Cutting log files that their writers keep appending to (base/log_rotate.cc), on the machine's
// real filesystem (ext4 here: the in-place collapse) and, when /dev/shm is tmpfs, the fallback.
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/log_rotate.h"
#include "runtime/runtime.h"

using namespace berth;
namespace fs = std::filesystem;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Numbered lines, as an instance would write them, through an O_APPEND descriptor it keeps.
struct Writer {
  explicit Writer(const std::string& path) : fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) {}
  ~Writer() { ::close(fd); }
  std::size_t lines(int from, int to) {
    std::string text;
    for (int i = from; i < to; ++i) text += fmt::format("line {:08d} of the instance's output\n", i);
    EXPECT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
    return text.size();
  }
  int fd;
};

void check_cut(const std::string& dir) {
  const std::string path = dir + "/web.0.log";
  fs::remove(path);
  fs::remove(path + ".1");
  Writer w(path);
  w.lines(0, 150'000);  // 5.4 MB
  const auto before = fs::file_size(path);
  auto r = rotate_logs(dir, 2 << 20);
  ASSERT_EQ(r.rotated, 1);
  std::printf("%s: cut %s\n", dir.c_str(), r.copied ? "by copy and truncate" : "in place (collapse range)");
  const auto appended = w.lines(150'000, 150'010);  // the writer goes on, through the same descriptor
  std::string kept = slurp(path);
  if (r.copied) kept = slurp(path + ".1") + kept;  // the fallback put the newest half aside
  EXPECT_EQ(kept.size(), (r.copied ? (1u << 20) : before - r.freed) + appended);
  EXPECT_LT(fs::file_size(path), 2u << 20);
  // Nothing written after the cut is lost, and it follows what was kept in order.
  EXPECT_THAT(kept, testing::EndsWith("line 00150009 of the instance's output\n"));
  EXPECT_NE(kept.find("line 00149999 of the instance's output\nline 00150000"), std::string::npos);
  EXPECT_EQ(kept.find("line 00000000 "), std::string::npos);
  // A reader whose offset is now past the end goes on from the tail instead of reading nothing.
  auto chunk = runtime::read_log_file(path, static_cast<std::int64_t>(before), 4096);
  ASSERT_TRUE(chunk.ok());
  EXPECT_THAT(chunk->text, testing::EndsWith("line 00150009 of the instance's output\n"));
  EXPECT_EQ(chunk->offset, static_cast<std::int64_t>(fs::file_size(path)));
}

}  // namespace

TEST(LogRotate, AFileOverItsLimitLosesItsOldestPartWhileItsWriterGoesOn) {
  const std::string dir = testing::TempDir() + "berth-logcut-" + std::to_string(::getpid());
  fs::create_directories(dir);
  check_cut(dir);
  EXPECT_EQ(rotate_logs(dir, 2 << 20).rotated, 0);  // under the limit now
  fs::remove_all(dir);
}

TEST(LogRotate, WhereTheFilesystemCannotCollapseTheNewestHalfIsCopiedAside) {
  if (!fs::is_directory("/dev/shm")) GTEST_SKIP() << "no /dev/shm";
  const std::string dir = "/dev/shm/berth-logcut-" + std::to_string(::getpid());
  fs::create_directories(dir);
  check_cut(dir);
  fs::remove_all(dir);
}
