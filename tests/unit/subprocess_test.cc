// base/subprocess.h: the descriptors the daemon keeps for itself.
#include "base/subprocess.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#if defined(__SANITIZE_THREAD__)
// ThreadSanitizer takes spawn()'s clone(CLONE_VM | CLONE_VFORK) for a fork, and its child (which
// shares our memory until it execs) marks the whole process as forked: the next thread this
// process starts (a worker after a spawn, as the database manager's archive test does) would
// make it die. The child only execs, so the unit tests run with that check off.
extern "C" const char* __tsan_default_options() { return "die_after_fork=0"; }
#endif

namespace berth {
namespace {

using testing::HasSubstr;

TEST(DescriptorReserve, IsAnEighthOfTheLimitWithinBounds) {
  EXPECT_EQ(descriptor_reserve(64), 16u);
  EXPECT_EQ(descriptor_reserve(1024), 128u);
  EXPECT_EQ(descriptor_reserve(1'048'576), 512u);
}

TEST(DescriptorHeadroom, RefusesOnceOnlyTheReserveIsLeftAndAgainOnceSomeAreFreed) {
  rlimit was{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &was), 0);
  const auto held = std::distance(std::filesystem::directory_iterator("/proc/self/fd"), std::filesystem::directory_iterator());
  rlimit low = was;
  low.rlim_cur = static_cast<rlim_t>(held + 40);  // a reserve of 16 (the least), about 24 to take
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  const auto reserve = descriptor_reserve(low.rlim_cur);

  // Long-lived descriptors, taken while there is room (lowest first, as the kernel hands them out).
  std::vector<int> taken;
  while (descriptor_headroom().ok() && taken.size() < 1000) taken.push_back(dup(STDERR_FILENO));
  ASSERT_LT(taken.size(), 1000u);
  EXPECT_GT(taken.size(), 0u);
  const Status refused = descriptor_headroom();
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ErrorCode::kExhausted);
  EXPECT_THAT(refused.error().message, HasSubstr("berth's open files limit"));
  EXPECT_THAT(refused.error().message, HasSubstr("ulimit -n"));
  // Exactly the reserve is left: as many more can be opened, and not one beyond.
  std::vector<int> rest;
  for (int fd; (fd = dup(STDERR_FILENO)) >= 0;) rest.push_back(fd);
  EXPECT_EQ(rest.size(), reserve);
  for (int fd : rest) close(fd);

  close(taken.back());  // an instance ends: its descriptor's room is there again
  taken.pop_back();
  EXPECT_TRUE(descriptor_headroom().ok());

  for (int fd : taken) close(fd);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &was), 0);
}

}  // namespace
}  // namespace berth
