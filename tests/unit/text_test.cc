#include <gtest/gtest.h>

#include "base/text.h"

TEST(Text, Durations) {
  EXPECT_EQ(berth::parse_duration("250ms"), 250);
  EXPECT_EQ(berth::parse_duration("1.5s"), 1500);
  EXPECT_EQ(berth::parse_duration("5m"), 300000);
  EXPECT_EQ(berth::parse_duration("0"), 0);
  EXPECT_EQ(berth::parse_duration("3d"), 3 * 86'400'000);
  EXPECT_FALSE(berth::parse_duration("5").has_value());
  EXPECT_FALSE(berth::parse_duration("-1s").has_value());
  EXPECT_FALSE(berth::parse_duration("1.2.3s").has_value());
  EXPECT_FALSE(berth::parse_duration("s").has_value());
  EXPECT_EQ(berth::format_duration(1500), "1.5s");
  EXPECT_EQ(berth::format_duration(120000), "2m");
  EXPECT_EQ(berth::format_duration(200), "200ms");
}

TEST(Text, Rfc3339WithMilliseconds) {
  EXPECT_EQ(berth::rfc3339_ms(1'700'000'000'123), "2023-11-14T22:13:20.123Z");
  EXPECT_EQ(berth::parse_rfc3339("2023-11-14T22:13:20.123Z"), 1'700'000'000'123);
  EXPECT_EQ(berth::parse_rfc3339("2023-11-14T22:13:20Z"), 1'700'000'000'000);
  EXPECT_FALSE(berth::parse_rfc3339("2023-11-14 22:13:20").has_value());
  EXPECT_FALSE(berth::parse_rfc3339("2023-13-14T22:13:20Z").has_value());
  EXPECT_FALSE(berth::parse_rfc3339("2023-11-14T22:13:20+01:00").has_value());
}

TEST(Text, Suggestions) {
  std::vector<std::string> c = {"depends_on", "instances", "ports"};
  EXPECT_EQ(berth::closest("depend_on", c), "depends_on");
  EXPECT_FALSE(berth::closest("zzzzzz", c).has_value());
}

TEST(Text, FormatBytes) {
  EXPECT_EQ(berth::format_bytes(100), "100 B");
  EXPECT_EQ(berth::format_bytes(12 << 10), "12 kB");
  EXPECT_EQ(berth::format_bytes(202ull << 20), "202 MB");
  EXPECT_EQ(berth::format_bytes(1932735283ull), "1.8 GB");
}

TEST(Text, PercentEncodeKeepsOnlyUnreservedBytes) {
  EXPECT_EQ(berth::percent_encode("env-1_a.b~c"), "env-1_a.b~c");
  EXPECT_EQ(berth::percent_encode("a b/c?d=é"), "a%20b%2Fc%3Fd%3D%C3%A9");
  EXPECT_EQ(berth::percent_encode(R"({"label":["x=y"]})"), "%7B%22label%22%3A%5B%22x%3Dy%22%5D%7D");
}
