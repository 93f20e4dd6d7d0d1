// Blob stores against real servers: the local directory, OpenStack Swift (tempauth, SLO) and S3
// (SigV4, path style) through Swift's s3api middleware. scripts/swift.sh starts the Swift
// all-in-one; .ci/run does so and sets BERTH_TEST_SWIFT=127.0.0.1:8080. Without it the Swift and
// S3 cases are skipped (and say so) — CI never runs without it.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <nlohmann/json.hpp>
#include <gtest/gtest.h>

#include "base/digest.h"
#include "blob/local/local_store.h"
#include "blob/open_store.h"
#include "blob/s3/s3_store.h"
#include "blob/swift/swift_store.h"
#include "common/files.h"
#include "snapshot/snapshot.h"

using namespace berth;
using testing::HasSubstr;
namespace fs = std::filesystem;
using namespace berth::testing_files;

namespace {



std::string file_hash(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<std::uint8_t> v{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  return sha256_hex(v);
}

// path → sha256 of every regular file under `root`.
std::map<std::string, std::string> tree_hashes(const fs::path& root) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file()) out[fs::relative(e.path(), root).string()] = file_hash(e.path());
  return out;
}

std::string swift_endpoint() {
  const char* e = std::getenv("BERTH_TEST_SWIFT");
  return e ? e : "";
}

// A store URL of kind `kind` in a container/bucket of its own for this test.
std::string store_url(const std::string& kind, const fs::path& dir, const std::string& extra = "") {
  const std::string unique = fmt::format("t{}x{}", getpid(), ::testing::UnitTest::GetInstance()->random_seed()) +
                             std::to_string(std::hash<std::string>{}(
                                 ::testing::UnitTest::GetInstance()->current_test_info()->name()) % 100000);
  if (kind == "local") return "local:" + (dir / "store").string();
  if (kind == "swift") return fmt::format("swift://test:tester:testing@{}/{}{}", swift_endpoint(), unique, extra);
  return fmt::format("s3://test:tester:testing@{}/{}{}", swift_endpoint(), unique, extra);
}

struct StoreTest : testing::TestWithParam<std::string> {
  fs::path dir = fs::temp_directory_path() /
                 ("berth-store-" + std::to_string(getpid()) + "-" + std::to_string(std::hash<std::string>{}(
                      ::testing::UnitTest::GetInstance()->current_test_info()->name())));
  void SetUp() override {
    if (GetParam() != "local" && swift_endpoint().empty())
      GTEST_SKIP() << "BERTH_TEST_SWIFT is not set: start scripts/swift.sh and set it to 127.0.0.1:8080";
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir);
  }
  std::unique_ptr<blob::BlobStore> open(const std::string& extra = "") {
    auto s = blob::open_store(store_url(GetParam(), dir, extra));
    EXPECT_TRUE(s.ok()) << s.error().message;
    return s.ok() ? std::move(*s) : nullptr;
  }
  // Replace an object's bytes in the store (a bit flipped by a bad disk, say).
  // `at`: the byte to flip (default: the middle one).
  void corrupt(blob::BlobStore& store, const std::string& key, std::size_t at = SIZE_MAX) {
    auto bytes = store.get(key);
    ASSERT_TRUE(bytes.ok()) << bytes.error().message;
    (*bytes)[at == SIZE_MAX ? bytes->size() / 2 : at] ^= 0x55;
    if (auto* l = dynamic_cast<blob::LocalStore*>(&store)) {
      write(l->path_of(key), *bytes);
    } else if (auto* sw = dynamic_cast<blob::SwiftStore*>(&store)) {
      ASSERT_TRUE(sw->remove(key).ok());
      ASSERT_TRUE(sw->put(key, *bytes).ok());
    } else if (auto* s3 = dynamic_cast<blob::S3Store*>(&store)) {
      ASSERT_TRUE(s3->remove(key).ok());
      ASSERT_TRUE(s3->put(key, *bytes).ok());
    }
  }
  // A small "data directory": a few files of random and repetitive content, a subdirectory.
  void make_tree(const fs::path& root) {
    write(root / "ibdata1", random_bytes(3 << 20, 1));
    write(root / "app01" / "orders.ibd", random_bytes(2 << 20, 2));
    write(root / "app01" / "db.opt", {'x', '\n'});
    write(root / "app02" / "empty", {});
    std::vector<std::uint8_t> zeros(1 << 20, 0);
    write(root / "ib_logfile0", zeros);
  }
};

}  // namespace

TEST_P(StoreTest, ObjectsRoundTripAndPutIsPutIfAbsent) {
  auto store = open();
  ASSERT_TRUE(store);
  const auto data = random_bytes(100'000, 7);
  const std::string key = sha256_hex(data);
  auto before = store->exists(key);
  ASSERT_TRUE(before.ok()) << before.error().message;
  EXPECT_FALSE(*before);
  auto put = store->put(key, data);
  ASSERT_TRUE(put.ok()) << put.error().message;
  EXPECT_TRUE(*put);
  auto again = store->put(key, data);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again) << "a second put of the same key writes nothing";
  auto got = store->get(key);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(*got, data);
  auto missing = store->get(std::string(64, 'a'));
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.error().message, HasSubstr("missing"));
}

TEST_P(StoreTest, LargeObjectsAreSegmentedAndReadBackWhole) {
  if (GetParam() == "local") GTEST_SKIP() << "a local store has no object size limit";
  // 1 MiB segments (Swift SLO) or 5 MiB parts (S3 multipart, its minimum part size).
  auto store = open(GetParam() == "swift" ? "?segment=1048576" : "?part=5242880");
  ASSERT_TRUE(store);
  const auto data = random_bytes((11 << 20) + 12345, 9);
  const std::string key = sha256_hex(data);
  auto put = store->put(key, data);
  ASSERT_TRUE(put.ok()) << put.error().message;
  auto got = store->get(key);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->size(), data.size());
  EXPECT_TRUE(*got == data);
}

TEST_P(StoreTest, SnapshotRestoresIdenticalFilesAndNamesACorruptChunk) {
  auto store = open();
  ASSERT_TRUE(store);
  make_tree(dir / "src");
  std::vector<snapshot::Progress> seen;
  snapshot::CreateOptions opts;
  opts.progress = [&](const snapshot::Progress& p) { seen.push_back(p); };
  auto made = snapshot::create_snapshot((dir / "src").string(), *store, opts);
  ASSERT_TRUE(made.ok()) << made.error().message;
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().done_bytes, seen.back().total_bytes);
  EXPECT_EQ(seen.back().total_bytes, made->bytes);

  auto back = snapshot::restore_snapshot(made->manifest_id, *store, (dir / "dst").string());
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(tree_hashes(dir / "src"), tree_hashes(dir / "dst"));

  // Flip a byte of one chunk of app01/orders.ibd in the store: the restore names it and leaves
  // nothing behind.
  auto manifest = store->get(made->manifest_id);
  ASSERT_TRUE(manifest.ok());
  auto j = nlohmann::json::parse(manifest->begin(), manifest->end());
  std::string victim;
  for (const auto& e : j["entries"])
    if (e["path"] == "app01/orders.ibd") victim = e["chunks"][1]["hash"];
  ASSERT_FALSE(victim.empty());
  corrupt(*store, victim);
  auto bad = snapshot::restore_snapshot(made->manifest_id, *store, (dir / "dst2").string());
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error().message, HasSubstr(victim));
  EXPECT_THAT(bad.error().message, HasSubstr("app01/orders.ibd"));
  EXPECT_THAT(bad.error().message, HasSubstr("corrupt"));
  EXPECT_FALSE(fs::exists(dir / "dst2"));
  EXPECT_FALSE(fs::exists(dir / "dst2.partial"));
}

TEST_P(StoreTest, ASecondVersionUploadsOnlyTheChangedChunks) {
  auto store = open();
  ASSERT_TRUE(store);
  make_tree(dir / "src");
  auto v1 = snapshot::create_snapshot((dir / "src").string(), *store);
  ASSERT_TRUE(v1.ok()) << v1.error().message;
  // Change one 16 KiB page in the middle of a table file.
  {
    std::fstream f(dir / "src" / "app01" / "orders.ibd", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1 << 20);
    auto page = random_bytes(16 << 10, 99);
    f.write(reinterpret_cast<const char*>(page.data()), static_cast<long>(page.size()));
  }
  auto v2 = snapshot::create_snapshot((dir / "src").string(), *store);
  ASSERT_TRUE(v2.ok()) << v2.error().message;
  EXPECT_NE(v1->manifest_id, v2->manifest_id);
  EXPECT_GT(v2->new_chunks, 0u);
  EXPECT_LT(v2->uploaded_bytes * 10, v1->uploaded_bytes) << "v2 uploaded " << v2->uploaded_bytes << " of v1's "
                                                         << v1->uploaded_bytes;
  auto back = snapshot::restore_snapshot(v2->manifest_id, *store, (dir / "v2").string());
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(tree_hashes(dir / "src"), tree_hashes(dir / "v2"));
}

// Packs: new chunks stored back to back in larger objects; a second version references the
// first one's chunks in its packs and stores only its own new ones.
TEST_P(StoreTest, PackedSnapshotsDedupAgainstTheirBaseAndNameACorruptChunk) {
  auto store = open();
  ASSERT_TRUE(store);
  make_tree(dir / "src");
  snapshot::CreateOptions packed;
  packed.pack_bytes = 1 << 20;
  auto v1 = snapshot::create_snapshot((dir / "src").string(), *store, packed);
  ASSERT_TRUE(v1.ok()) << v1.error().message;
  auto m1 = store->get(v1->manifest_id);
  ASSERT_TRUE(m1.ok());
  auto j1 = nlohmann::json::parse(m1->begin(), m1->end());
  EXPECT_EQ(j1["format"], 2);
  EXPECT_GE(j1["packs"].size(), 2u);
  EXPECT_LT(j1["packs"].size(), v1->chunks) << "several chunks share a pack";
  {
    std::fstream f(dir / "src" / "app01" / "orders.ibd", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1 << 20);
    auto page = random_bytes(16 << 10, 77);
    f.write(reinterpret_cast<const char*>(page.data()), static_cast<long>(page.size()));
  }
  packed.base_manifests = {v1->manifest_id};
  auto v2 = snapshot::create_snapshot((dir / "src").string(), *store, packed);
  ASSERT_TRUE(v2.ok()) << v2.error().message;
  EXPECT_LT(v2->uploaded_bytes * 10, v1->uploaded_bytes);
  auto back = snapshot::restore_snapshot(v2->manifest_id, *store, (dir / "v2").string());
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(tree_hashes(dir / "src"), tree_hashes(dir / "v2"));

  // Damage one chunk inside a pack: the restore names the chunk, its pack and its file.
  std::string pack, hash;
  std::size_t at = 0;
  for (const auto& e : j1["entries"])
    if (e["path"] == "ibdata1") {
      const auto& c = e["chunks"][1];
      hash = c["hash"];
      pack = j1["packs"][c["p"].get<std::size_t>()];
      at = c["o"].get<std::size_t>() + c["l"].get<std::size_t>() / 2;
    }
  ASSERT_FALSE(pack.empty());
  corrupt(*store, pack, at);
  auto bad = snapshot::restore_snapshot(v1->manifest_id, *store, (dir / "bad").string());
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error().message, HasSubstr("chunk " + hash));
  EXPECT_THAT(bad.error().message, HasSubstr("ibdata1"));
  EXPECT_THAT(bad.error().message, HasSubstr(pack));
  EXPECT_FALSE(fs::exists(dir / "bad"));
}

INSTANTIATE_TEST_SUITE_P(Stores, StoreTest, testing::Values("local", "swift", "s3"),
                         [](const testing::TestParamInfo<std::string>& p) { return p.param; });

// The same snapshot in Swift and in S3 (both through the same Swift) restores to identical files.
TEST(StoresAgree, SwiftAndS3RestoreIdenticalFiles) {
  if (swift_endpoint().empty()) GTEST_SKIP() << "BERTH_TEST_SWIFT is not set";
  fs::path dir = fs::temp_directory_path() / ("berth-agree-" + std::to_string(getpid()));
  fs::remove_all(dir);
  write(dir / "src" / "a", random_bytes(1 << 20, 3));
  write(dir / "src" / "b" / "c", random_bytes(300'000, 4));
  auto sw = blob::open_store(fmt::format("swift://test:tester:testing@{}/agree{}", swift_endpoint(), getpid()));
  auto s3 = blob::open_store(fmt::format("s3://test:tester:testing@{}/agree{}s3", swift_endpoint(), getpid()));
  ASSERT_TRUE(sw.ok() && s3.ok());
  auto a = snapshot::create_snapshot((dir / "src").string(), **sw);
  auto b = snapshot::create_snapshot((dir / "src").string(), **s3);
  ASSERT_TRUE(a.ok()) << a.error().message;
  ASSERT_TRUE(b.ok()) << b.error().message;
  EXPECT_EQ(a->manifest_id, b->manifest_id) << "the manifest id depends only on content";
  ASSERT_TRUE(snapshot::restore_snapshot(a->manifest_id, **sw, (dir / "from-swift").string()).ok());
  ASSERT_TRUE(snapshot::restore_snapshot(b->manifest_id, **s3, (dir / "from-s3").string()).ok());
  EXPECT_EQ(tree_hashes(dir / "from-swift"), tree_hashes(dir / "from-s3"));
  EXPECT_EQ(tree_hashes(dir / "from-swift"), tree_hashes(dir / "src"));
  fs::remove_all(dir);
}

// An interrupted restore (the store went away) resumes: only missing chunks are fetched again.
TEST(Restore, ResumesAfterTheStoreWentAway) {
  fs::path dir = fs::temp_directory_path() / ("berth-resume-" + std::to_string(getpid()));
  fs::remove_all(dir);
  write(dir / "src" / "big", random_bytes(4 << 20, 5));
  blob::LocalStore local((dir / "store").string());
  auto made = snapshot::create_snapshot((dir / "src").string(), local);
  ASSERT_TRUE(made.ok());
  // A store that fails with "unavailable" after 20 reads.
  struct Flaky : blob::BlobStore {
    blob::BlobStore& inner;
    std::atomic<int> reads{0};
    explicit Flaky(blob::BlobStore& s) : inner(s) {}
    Result<bool> exists(const std::string& k) override { return inner.exists(k); }
    Result<bool> put(const std::string& k, std::span<const std::uint8_t> d) override { return inner.put(k, d); }
    Result<std::vector<std::uint8_t>> get(const std::string& k) override {
      if (++reads > 20) return unavailable("connection refused");
      return inner.get(k);
    }
    std::string describe() const override { return "flaky"; }
  } flaky(local);
  snapshot::RestoreOptions one;
  one.parallel = 1;
  auto first = snapshot::restore_snapshot(made->manifest_id, flaky, (dir / "dst").string(), one);
  ASSERT_FALSE(first.ok());
  EXPECT_TRUE(fs::exists(dir / "dst.partial")) << "kept for resuming";
  EXPECT_FALSE(fs::exists(dir / "dst"));
  auto second = snapshot::restore_snapshot(made->manifest_id, local, (dir / "dst").string());
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_LT(second->fetched_chunks, second->chunks);
  EXPECT_GE(second->chunks - second->fetched_chunks, 19u);
  EXPECT_EQ(tree_hashes(dir / "src"), tree_hashes(dir / "dst"));
  EXPECT_FALSE(fs::exists(dir / "dst.partial"));
  fs::remove_all(dir);
}
