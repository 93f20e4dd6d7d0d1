// control/start_slots.h: slots per runtime, a line first come first served, no one twice.
#include "control/start_slots.h"

#include <gtest/gtest.h>

using berth::control::StartSlots;
using berth::ipam::LeaseKey;

TEST(StartSlots, AtMostTheLimitHoldASlotAndTheRestWaitInLineInOrder) {
  StartSlots slots;
  slots.set_limit("process", 2);
  const LeaseKey a{"dev", "a", 0}, b{"dev", "b", 0}, c{"dev", "c", 0}, d{"qa", "d", 0};
  EXPECT_TRUE(slots.take(a, "process"));
  EXPECT_TRUE(slots.take(a, "process")) << "a holds one already";
  EXPECT_TRUE(slots.take(b, "process"));
  EXPECT_FALSE(slots.take(c, "process"));
  EXPECT_FALSE(slots.take(d, "process"));
  EXPECT_FALSE(slots.take(c, "process")) << "still full";
  EXPECT_EQ(slots.in_line(), 2u) << "c is in line once";
  EXPECT_TRUE(slots.take(c, "docker")) << "another runtime, without a limit";
  EXPECT_EQ(slots.starting("docker"), 0) << "no count is kept without a limit";
  EXPECT_TRUE(slots.next_in_line().empty()) << "no free slot";

  EXPECT_TRUE(slots.release(a));
  EXPECT_FALSE(slots.release(a)) << "released once";
  const auto next = slots.next_in_line();
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].app, "c") << "first come, first served";
  EXPECT_EQ(slots.in_line(), 1u);
  EXPECT_EQ(slots.starting("process"), 1);
  EXPECT_TRUE(slots.release(b));
  EXPECT_EQ(slots.next_in_line().size(), 1u) << "d (c was taken out of line: reconciled, it takes a slot or queues again)";
  EXPECT_EQ(slots.in_line(), 0u);
}
