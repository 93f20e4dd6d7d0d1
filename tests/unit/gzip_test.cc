#include <gtest/gtest.h>

#include <string>

#include "base/gzip.h"

namespace berth {
namespace {

std::string status_like(int apps) {
  std::string s = "[";
  for (int i = 0; i < apps; ++i)
    s += "{\"app\":\"l1-app" + std::to_string(i) + "\",\"from\":{\"build_type\":\"built-in\",\"command\":\"defaults\"}},";
  return s + "]";
}

TEST(Gzip, RoundTripsAndCompressesRepetitiveJson) {
  const std::string text = status_like(300);
  auto z = gzip(text);
  ASSERT_TRUE(z.ok());
  EXPECT_LT(z->size() * 5, text.size());
  EXPECT_EQ(static_cast<unsigned char>((*z)[0]), 0x1f);  // gzip magic
  EXPECT_EQ(static_cast<unsigned char>((*z)[1]), 0x8b);
  auto back = gunzip(*z, text.size());
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(*back, text);
  auto empty = gzip("");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(gunzip(*empty, 0).value(), "");
}

TEST(Gzip, InflatingIsBoundedAndRefusesWhatIsNotWholeGzip) {
  // 8 MiB of zeros compress to about 8 KB: a bomb for a reader without a bound.
  const std::string zeros(8 << 20, '\0');
  auto bomb = gzip(zeros);
  ASSERT_TRUE(bomb.ok());
  auto refused = gunzip(*bomb, 1 << 20);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ErrorCode::kExhausted);
  EXPECT_NE(refused.error().message.find("1048576"), std::string::npos);

  auto z = gzip(status_like(10)).value();
  auto cut = gunzip(std::string_view(z).substr(0, z.size() / 2), 1 << 20);
  ASSERT_FALSE(cut.ok());
  EXPECT_EQ(cut.error().code, ErrorCode::kInvalid);
  EXPECT_NE(cut.error().message.find("cut short"), std::string::npos) << cut.error().message;
  auto garbage = gunzip("{\"not\": \"gzip\"}", 1 << 20);
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.error().code, ErrorCode::kInvalid);
}

TEST(Gzip, AcceptEncodingIsReadAsRfc9110Says) {
  EXPECT_TRUE(accepts_gzip("gzip"));
  EXPECT_TRUE(accepts_gzip("gzip, deflate, br, zstd"));  // a browser's
  EXPECT_TRUE(accepts_gzip("deflate;q=0.5, GZip;q=0.8"));
  EXPECT_TRUE(accepts_gzip(" x-gzip "));
  EXPECT_TRUE(accepts_gzip("*"));
  EXPECT_FALSE(accepts_gzip(""));
  EXPECT_FALSE(accepts_gzip("identity"));
  EXPECT_FALSE(accepts_gzip("br, zstd"));
  EXPECT_FALSE(accepts_gzip("gzip;q=0"));
  EXPECT_FALSE(accepts_gzip("gzip; q=0.000"));
  EXPECT_FALSE(accepts_gzip("gzipped"));
  EXPECT_TRUE(accepts_gzip("gzip;q=0.001"));
}

}  // namespace
}  // namespace berth
