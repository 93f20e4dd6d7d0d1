// Snapshots: content-defined chunking, round trips, deduplication between versions, and
// verification that names the corrupt, missing or truncated chunk and its file.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/digest.h"
#include "blob/local/local_store.h"
#include "common/files.h"
#include "snapshot/snapshot.h"

using namespace berth;
using testing::HasSubstr;
namespace fs = std::filesystem;
using namespace berth::testing_files;

namespace {




std::vector<std::size_t> cuts(const std::vector<std::uint8_t>& data, const snapshot::ChunkerParams& p) {
  std::vector<std::size_t> out;
  std::size_t at = 0;
  while (at < data.size()) {
    at += snapshot::next_chunk(std::span<const std::uint8_t>(data).subspan(at), p);
    out.push_back(at);
  }
  return out;
}

struct SnapshotTest : testing::Test {
  fs::path dir = fs::temp_directory_path() / ("berth-snap-" + std::to_string(getpid()) + "-" +
                                               testing::UnitTest::GetInstance()->current_test_info()->name());
  void SetUp() override { fs::remove_all(dir); }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir);
  }
};

}  // namespace

TEST(Chunker, SizesStayWithinBoundsAndCutsFollowContent) {
  snapshot::ChunkerParams p;
  auto data = random_bytes(8 << 20, 1);
  auto a = cuts(data, p);
  std::size_t prev = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    std::size_t len = a[i] - prev;
    if (i + 1 < a.size()) {
      EXPECT_GE(len, p.min);
      EXPECT_LE(len, p.max);
    }
    prev = a[i];
  }
  double avg = static_cast<double>(data.size()) / static_cast<double>(a.size());
  EXPECT_GT(avg, p.avg * 0.5);
  EXPECT_LT(avg, p.avg * 2.0);
  // Insert 100 bytes near the start: boundaries after it shift by 100 and stay content-aligned.
  auto shifted = data;
  shifted.insert(shifted.begin() + 1000, 100, 0x42);
  auto b = cuts(shifted, p);
  std::set<std::size_t> moved;
  for (auto c : a) moved.insert(c + 100);
  int shared = 0;
  for (auto c : b) shared += moved.count(c) ? 1 : 0;
  EXPECT_GE(shared, static_cast<int>(a.size()) - 2);
}

TEST_F(SnapshotTest, RoundTripKeepsContentModesAndLinks) {
  write(dir / "src/ibdata1", random_bytes(3 << 20, 2));
  write(dir / "src/db1/t1.ibd", random_bytes(700 << 10, 3));
  write(dir / "src/db1/t2.frm", random_bytes(100, 4));
  write(dir / "src/empty", {});
  fs::create_directories(dir / "src/db2");  // an empty directory
  fs::create_symlink("db1/t1.ibd", dir / "src/link");
  fs::permissions(dir / "src/db1/t2.frm", fs::perms::owner_read | fs::perms::group_read);
  blob::LocalStore store((dir / "blobs").string());
  auto made = snapshot::create_snapshot((dir / "src").string(), store);
  ASSERT_TRUE(made.ok()) << made.error().message;
  EXPECT_EQ(made->files, 4u);
  EXPECT_EQ(made->bytes, (3u << 20) + (700u << 10) + 100u);
  EXPECT_EQ(made->new_chunks, made->chunks);
  auto back = snapshot::restore_snapshot(made->manifest_id, store, (dir / "dst").string());
  ASSERT_TRUE(back.ok()) << back.error().message;
  for (const char* f : {"ibdata1", "db1/t1.ibd", "db1/t2.frm", "empty"})
    EXPECT_EQ(read(dir / "dst" / f), read(dir / "src" / f)) << f;
  EXPECT_TRUE(fs::is_directory(dir / "dst/db2"));
  EXPECT_EQ(fs::read_symlink(dir / "dst/link"), "db1/t1.ibd");
  EXPECT_EQ(fs::status(dir / "dst/db1/t2.frm").permissions(), fs::perms::owner_read | fs::perms::group_read);
  // The same tree gives the same manifest id and uploads nothing new.
  auto again = snapshot::create_snapshot((dir / "src").string(), store);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->manifest_id, made->manifest_id);
  EXPECT_EQ(again->uploaded_bytes, 0u);
}

TEST_F(SnapshotTest, ANewVersionUploadsOnlyWhatChanged) {
  auto big = random_bytes(16 << 20, 5);
  write(dir / "src/big.ibd", big);
  write(dir / "src/other.ibd", random_bytes(4 << 20, 6));
  blob::LocalStore store((dir / "blobs").string());
  auto v1 = snapshot::create_snapshot((dir / "src").string(), store);
  ASSERT_TRUE(v1.ok());
  // Change one 16 KiB page in the middle of one file (an update of one table).
  auto page = random_bytes(16 << 10, 7);
  std::copy(page.begin(), page.end(), big.begin() + (9 << 20));
  write(dir / "src/big.ibd", big);
  auto v2 = snapshot::create_snapshot((dir / "src").string(), store);
  ASSERT_TRUE(v2.ok());
  EXPECT_NE(v2->manifest_id, v1->manifest_id);
  EXPECT_LE(v2->new_chunks, 3u);
  EXPECT_LT(static_cast<double>(v2->uploaded_bytes), 0.02 * static_cast<double>(v2->bytes));
  auto back = snapshot::restore_snapshot(v2->manifest_id, store, (dir / "v2").string());
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(read(dir / "v2/big.ibd"), big);
}

TEST_F(SnapshotTest, CorruptMissingOrTruncatedChunkIsNamedAndLeavesNothing) {
  write(dir / "src/data.ibd", random_bytes(1 << 20, 8));
  blob::LocalStore store((dir / "blobs").string());
  auto made = snapshot::create_snapshot((dir / "src").string(), store);
  ASSERT_TRUE(made.ok());
  // The first chunk of data.ibd: find it through a first restore's manifest order = file order.
  std::string first = sha256_hex(std::span<const std::uint8_t>(read(dir / "src/data.ibd")).first(
      snapshot::next_chunk(read(dir / "src/data.ibd"), {})));
  const std::string object = store.path_of(first);
  auto original = read(object);

  auto expect_failure = [&](const std::string& what) {
    auto r = snapshot::restore_snapshot(made->manifest_id, store, (dir / "dst").string());
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_THAT(r.error().message, HasSubstr("chunk " + first + " of file data.ibd")) << what;
    EXPECT_FALSE(fs::exists(dir / "dst")) << what;
    EXPECT_FALSE(fs::exists(dir / "dst.partial")) << what;
  };
  auto flipped = original;
  flipped[flipped.size() / 2] ^= 0xFF;
  write(object, flipped);
  expect_failure("corrupt");
  write(object, std::vector<std::uint8_t>(original.begin(), original.begin() + static_cast<long>(original.size() / 2)));
  expect_failure("truncated");
  fs::remove(object);
  expect_failure("missing");
  write(object, original);
  EXPECT_TRUE(snapshot::restore_snapshot(made->manifest_id, store, (dir / "dst").string()).ok());
}

TEST_F(SnapshotTest, CorruptManifestIsRefused) {
  write(dir / "src/a", random_bytes(1000, 9));
  blob::LocalStore store((dir / "blobs").string());
  auto made = snapshot::create_snapshot((dir / "src").string(), store);
  ASSERT_TRUE(made.ok());
  auto m = read(store.path_of(made->manifest_id));
  m[m.size() / 2] ^= 1;
  write(store.path_of(made->manifest_id), m);
  auto r = snapshot::restore_snapshot(made->manifest_id, store, (dir / "dst").string());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error().message, HasSubstr("manifest " + made->manifest_id));
  EXPECT_THAT(r.error().message, HasSubstr("corrupt"));
}

TEST_F(SnapshotTest, HostileManifestCannotWriteOutsideTheDestination) {
  blob::LocalStore store((dir / "blobs").string());
  auto put_manifest = [&](const std::string& text) {
    std::vector<std::uint8_t> bytes(text.begin(), text.end());
    std::string id = sha256_hex(bytes);
    EXPECT_TRUE(store.put(id, bytes).ok());
    return id;
  };
  for (const std::string entries : {
           R"([{"path":"x","type":"symlink","mode":511,"target":"/etc"},{"path":"x/passwd","type":"file","mode":420,"size":0,"chunks":[]}])",
           R"([{"path":"../escape","type":"file","mode":420,"size":0,"chunks":[]}])",
           R"([{"path":"y","type":"symlink","mode":511,"target":"../../etc"}])"}) {
    std::string id = put_manifest(R"({"format":1,"files":0,"bytes":0,"entries":)" + entries + "}");
    auto r = snapshot::restore_snapshot(id, store, (dir / "dst").string());
    EXPECT_FALSE(r.ok()) << entries;
    EXPECT_FALSE(fs::exists(dir / "dst")) << entries;
  }
}
