#include "snapshot/snapshot.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <condition_variable>
#include <deque>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <zstd.h>

#include "base/digest.h"

namespace berth::snapshot {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// 256 pseudo-random 64-bit values (splitmix64 from a fixed seed): the Gear table. Fixed forever:
// changing it would move every chunk boundary and defeat deduplication against old versions.
constexpr std::array<std::uint64_t, 256> make_gear() {
  std::array<std::uint64_t, 256> g{};
  std::uint64_t x = 0x6265727468636463ull;  // "berthcdc"
  for (auto& v : g) {
    x += 0x9E3779B97F4A7C15ull;
    std::uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    v = z ^ (z >> 31);
  }
  return g;
}
constexpr auto kGear = make_gear();

// Format 1: every chunk an object of its own. Format 2 adds packs (chunks stored back to back in
// larger objects); a reader of 2 reads 1.
constexpr int kFormat = 2;

}  // namespace

std::size_t next_chunk(std::span<const std::uint8_t> data, const ChunkerParams& p) {
  std::size_t n = data.size();
  if (n <= p.min) return n;
  if (n > p.max) n = p.max;
  std::size_t normal = std::min(p.avg, n);
  // Normalized chunking: a harder condition before the average size, an easier one after, so
  // sizes cluster around the average. Masks test the top bits: a 64-byte window.
  const int bits = std::countr_zero(p.avg);
  const std::uint64_t mask_hard = ~std::uint64_t{0} << (64 - (bits + 1));
  const std::uint64_t mask_easy = ~std::uint64_t{0} << (64 - (bits - 1));
  std::uint64_t fp = 0;
  std::size_t i = p.min;
  for (; i < normal; ++i) {
    fp = (fp << 1) + kGear[data[i]];
    if (!(fp & mask_hard)) return i;
  }
  for (; i < n; ++i) {
    fp = (fp << 1) + kGear[data[i]];
    if (!(fp & mask_easy)) return i;
  }
  return n;
}

namespace {
bool all_zero(const std::uint8_t* p, std::size_t n) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w) return false;
  }
  for (; i < n; ++i)
    if (p[i]) return false;
  return true;
}
}  // namespace

namespace {

// New chunks go to a bounded queue; `parallel` workers look each up in the store, compress it
// and upload it. The first error stops everything; the manifest is only written after all
// uploads have finished.
class Uploader {
 public:
  // Where a new chunk went: in pack number `seq` (known once the pack is stored) at `offset`.
  struct PackedAt {
    std::uint64_t seq;
    std::uint64_t offset;
    std::uint64_t length;
  };

  // `pack_bytes` 0: every chunk its own object; otherwise compressed chunks are appended to
  // packs of about that size, each stored under the SHA-256 of its bytes.
  Uploader(blob::BlobStore& store, int parallel, std::size_t pack_bytes) : store_(store), pack_bytes_(pack_bytes) {
    for (int i = 0; i < std::max(parallel, 1); ++i) threads_.emplace_back([this] { work(); });
  }
  ~Uploader() { (void)finish(); }

  // False once a worker failed (the caller stops; finish() tells why).
  bool submit(std::string hash, std::vector<std::uint8_t> bytes) {
    std::unique_lock<std::mutex> lock(mu_);
    space_.wait(lock, [&] { return queued_bytes_ < kMaxQueuedBytes || failed_; });
    if (failed_) return false;
    queued_bytes_ += bytes.size();
    queue_.push_back({std::move(hash), std::move(bytes)});
    ready_.notify_one();
    return true;
  }
  Status finish() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    ready_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
    if (failed_) return error_;
    if (!pack_.empty()) {  // the last, partly filled pack
      std::vector<std::uint8_t> last;
      last.swap(pack_);
      BERTH_TRY(store_pack(pack_seq_, last));
    }
    return {};
  }
  const std::map<std::string, PackedAt>& packed() const { return packed_; }
  const std::map<std::uint64_t, std::string>& pack_keys() const { return pack_keys_; }
  std::uint64_t new_chunks() const { return new_chunks_; }
  std::uint64_t uploaded_bytes() const { return uploaded_; }

 private:
  static constexpr std::size_t kMaxQueuedBytes = 64 << 20;  // chunks read ahead of the uploads
  struct Task {
    std::string hash;
    std::vector<std::uint8_t> bytes;
  };
  void work() {
    std::vector<std::uint8_t> compressed;
    while (true) {
      Task t;
      {
        std::unique_lock<std::mutex> lock(mu_);
        ready_.wait(lock, [&] { return !queue_.empty() || closed_ || failed_; });
        if (failed_ || queue_.empty()) return;
        t = std::move(queue_.front());
        queue_.pop_front();
        queued_bytes_ -= t.bytes.size();
        space_.notify_one();
      }
      Status st = upload(t, compressed);
      if (!st.ok()) {
        std::lock_guard<std::mutex> lock(mu_);
        if (!failed_) error_ = st.error();
        failed_ = true;
        space_.notify_all();
        ready_.notify_all();
        return;
      }
    }
  }
  Status upload(const Task& t, std::vector<std::uint8_t>& compressed) {
    auto there = store_.exists(t.hash);
    if (!there.ok()) return there.error();
    if (*there) return {};
    if (pack_bytes_) return pack(t, compressed);
    compressed.resize(ZSTD_compressBound(t.bytes.size()));
    std::size_t n = ZSTD_compress(compressed.data(), compressed.size(), t.bytes.data(), t.bytes.size(), 3);
    if (ZSTD_isError(n)) return internal(fmt::format("zstd: {}", ZSTD_getErrorName(n)));
    auto wrote = store_.put(t.hash, std::span<const std::uint8_t>(compressed.data(), n));
    if (!wrote.ok()) return wrote.error().wrap("chunk " + t.hash);
    if (*wrote) {
      ++new_chunks_;
      uploaded_ += n;
    }
    return {};
  }

  Status pack(const Task& t, std::vector<std::uint8_t>& compressed) {
    compressed.resize(ZSTD_compressBound(t.bytes.size()));
    std::size_t n = ZSTD_compress(compressed.data(), compressed.size(), t.bytes.data(), t.bytes.size(), 3);
    if (ZSTD_isError(n)) return internal(fmt::format("zstd: {}", ZSTD_getErrorName(n)));
    std::vector<std::uint8_t> full;
    std::uint64_t full_seq = 0;
    {
      std::lock_guard<std::mutex> lock(pack_mu_);
      packed_[t.hash] = {pack_seq_, pack_.size(), n};
      pack_.insert(pack_.end(), compressed.begin(), compressed.begin() + static_cast<long>(n));
      ++new_chunks_;
      if (pack_.size() >= pack_bytes_) {
        full.swap(pack_);
        full_seq = pack_seq_++;
      }
    }
    if (full.empty()) return {};
    return store_pack(full_seq, full);
  }
  Status store_pack(std::uint64_t seq, const std::vector<std::uint8_t>& bytes) {
    const std::string key = sha256_hex(bytes);
    auto wrote = store_.put(key, bytes);
    if (!wrote.ok()) return wrote.error().wrap("pack " + key);
    if (*wrote) uploaded_ += bytes.size();
    std::lock_guard<std::mutex> lock(pack_mu_);
    pack_keys_[seq] = key;
    return {};
  }

  blob::BlobStore& store_;
  const std::size_t pack_bytes_;
  std::mutex pack_mu_;  // guards the four below
  std::vector<std::uint8_t> pack_;
  std::uint64_t pack_seq_ = 0;
  std::map<std::string, PackedAt> packed_;
  std::map<std::uint64_t, std::string> pack_keys_;
  std::mutex mu_;
  std::condition_variable ready_, space_;
  std::deque<Task> queue_;
  std::size_t queued_bytes_ = 0;
  bool closed_ = false;
  std::atomic<bool> failed_{false};
  Error error_;
  std::atomic<std::uint64_t> new_chunks_{0}, uploaded_{0};
  std::vector<std::thread> threads_;
};

// Where a chunk of an earlier snapshot is: an object of its own (pack empty) or a pack range.
struct Location {
  std::string pack;
  std::uint64_t offset = 0, length = 0;
};

struct Writer {
  Uploader& uploader;
  CreateStats& stats;
  std::set<std::string> seen;  // chunks already submitted in this snapshot
  const CreateOptions& options;
  Progress progress;
  std::map<std::string, Location> known;  // chunks of the base snapshots

  Result<std::string> put_chunk(std::span<const std::uint8_t> chunk) {
    std::string hash = sha256_hex(chunk);
    ++stats.chunks;
    progress.done_bytes += chunk.size();
    if (!known.count(hash) && seen.insert(hash).second && !uploader.submit(hash, {chunk.begin(), chunk.end()}))
      return internal("upload stopped");  // finish() has the reason
    if (options.progress && stats.chunks % 64 == 0) {
      progress.transferred_bytes = uploader.uploaded_bytes();
      options.progress(progress);
    }
    return hash;
  }
};

Result<json> chunk_file(const fs::path& path, Writer& w, const ChunkerParams& params) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return unavailable(fmt::format("cannot read {}: {}", path.string(), std::strerror(errno)));
  json chunks = json::array();
  std::vector<std::uint8_t> buf;
  std::size_t start = 0;
  bool eof = false;
  const std::size_t refill = std::max<std::size_t>(params.max * 4, 4 << 20);
  while (true) {
    if (!eof && buf.size() - start < params.max) {
      buf.erase(buf.begin(), buf.begin() + static_cast<long>(start));
      start = 0;
      std::size_t old = buf.size();
      buf.resize(old + refill);
      std::size_t got = 0;
      while (got < refill) {
        ssize_t n = ::read(fd, buf.data() + old + got, refill - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          int err = errno;
          ::close(fd);
          return unavailable(fmt::format("reading {}: {}", path.string(), std::strerror(err)));
        }
        if (n == 0) {
          eof = true;
          break;
        }
        got += static_cast<std::size_t>(n);
      }
      buf.resize(old + got);
    }
    if (start == buf.size()) break;
    std::span<const std::uint8_t> rest(buf.data() + start, buf.size() - start);
    std::size_t cut = next_chunk(rest, params);
    auto hash = w.put_chunk(rest.first(cut));
    if (!hash.ok()) {
      ::close(fd);
      return hash.error().wrap(path.string());
    }
    chunks.push_back({{"hash", *hash}, {"size", cut}});
    start += cut;
  }
  ::close(fd);
  return chunks;
}

}  // namespace

Result<CreateStats> create_snapshot(const std::string& dir, blob::BlobStore& store, const CreateOptions& options) {
  CreateStats stats;
  const ChunkerParams& params = options.params;
  Uploader uploader(store, options.parallel, options.pack_bytes);
  Writer w{uploader, stats, {}, options, {}, {}};
  // Chunks of the base snapshots are referenced where they are, not stored again.
  for (const auto& id : options.base_manifests) {
    auto raw = store.get(id);
    if (!raw.ok()) return raw.error().wrap("base snapshot " + id);
    json base = json::parse(raw->begin(), raw->end(), nullptr, false);
    if (base.is_discarded() || sha256_hex(*raw) != id) return invalid(fmt::format("base snapshot {} is corrupt", id));
    try {
      std::vector<std::string> packs;
      if (base.contains("packs")) packs = base["packs"].get<std::vector<std::string>>();
      for (const auto& e : base.at("entries")) {
        if (!e.contains("chunks")) continue;
        for (const auto& c : e["chunks"]) {
          Location at;
          if (c.contains("p")) {
            const auto p = c["p"].get<std::size_t>();
            if (p >= packs.size()) return invalid(fmt::format("base snapshot {}: pack index {} out of range", id, p));
            at = {packs[p], c.at("o").get<std::uint64_t>(), c.at("l").get<std::uint64_t>()};
          }
          w.known.emplace(c.at("hash").get<std::string>(), at);
        }
      }
    } catch (const json::exception& e) {
      return invalid(fmt::format("base snapshot {} is malformed: {}", id, e.what()));
    }
  }
  json entries = json::array();
  std::error_code ec;
  fs::path root(dir);
  if (!fs::is_directory(root, ec)) return not_found(fmt::format("{} is not a directory", dir));
  std::vector<fs::path> paths;
  for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::none, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
    paths.push_back(it->path());
  if (ec) return unavailable(fmt::format("listing {}: {}", dir, ec.message()));
  std::sort(paths.begin(), paths.end());  // a stable manifest: same tree, same id
  for (const auto& p : paths) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode)) w.progress.total_bytes += static_cast<std::uint64_t>(st.st_size);
  }
  for (const auto& p : paths) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) return unavailable(fmt::format("stat {}: {}", p.string(), std::strerror(errno)));
    std::string rel = p.lexically_relative(root).string();  // not fs::relative: it would resolve symlinks
    json e = {{"path", rel}, {"mode", st.st_mode & 07777}};
    if (S_ISDIR(st.st_mode)) {
      e["type"] = "dir";
    } else if (S_ISLNK(st.st_mode)) {
      e["type"] = "symlink";
      e["target"] = fs::read_symlink(p, ec).string();
    } else if (S_ISREG(st.st_mode)) {
      e["type"] = "file";
      e["size"] = static_cast<std::uint64_t>(st.st_size);
      auto chunks = chunk_file(p, w, params);
      if (!chunks.ok()) {
        Status why = uploader.finish();
        return why.ok() ? chunks.error() : why.error();
      }
      e["chunks"] = std::move(*chunks);
      ++stats.files;
      stats.bytes += static_cast<std::uint64_t>(st.st_size);
    } else {
      continue;  // sockets, fifos, devices: not part of a data directory's content
    }
    entries.push_back(std::move(e));
  }
  BERTH_TRY(uploader.finish());
  stats.new_chunks = uploader.new_chunks();
  stats.uploaded_bytes = uploader.uploaded_bytes();
  if (options.progress) {
    w.progress.transferred_bytes = stats.uploaded_bytes;
    options.progress(w.progress);
  }
  // Chunks in packs get their place: "p" (index into "packs"), "o" (offset), "l" (length).
  std::vector<std::string> packs;
  std::map<std::string, std::size_t> pack_index;
  auto index_of = [&](const std::string& key) {
    auto [it, fresh] = pack_index.emplace(key, packs.size());
    if (fresh) packs.push_back(key);
    return it->second;
  };
  for (auto& e : entries) {
    if (!e.contains("chunks")) continue;
    for (auto& c : e["chunks"]) {
      const std::string hash = c["hash"];
      Location at;
      if (auto k = w.known.find(hash); k != w.known.end()) {
        at = k->second;
      } else if (auto p = uploader.packed().find(hash); p != uploader.packed().end()) {
        at = {uploader.pack_keys().at(p->second.seq), p->second.offset, p->second.length};
      }
      if (at.pack.empty()) continue;
      c["p"] = index_of(at.pack);
      c["o"] = at.offset;
      c["l"] = at.length;
    }
  }
  json manifest = {{"format", packs.empty() ? 1 : 2}, {"files", stats.files}, {"bytes", stats.bytes}, {"entries", entries}};
  if (!packs.empty()) manifest["packs"] = packs;
  std::string text = manifest.dump();
  std::span<const std::uint8_t> bytes(reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
  stats.manifest_id = sha256_hex(bytes);
  auto wrote = store.put(stats.manifest_id, bytes);
  if (!wrote.ok()) return wrote.error();
  if (*wrote) stats.uploaded_bytes += text.size();
  return stats;
}

Result<RestoreStats> restore_snapshot(const std::string& manifest_id, blob::BlobStore& store, const std::string& dest,
                                      const RestoreOptions& options) {
  auto raw = store.get(manifest_id);
  if (!raw.ok()) return raw.error().wrap("manifest " + manifest_id);
  if (sha256_hex(*raw) != manifest_id)
    return invalid(fmt::format("manifest {} in {} is corrupt: its content does not match its id", manifest_id, store.describe()));
  json manifest = json::parse(raw->begin(), raw->end(), nullptr, false);
  if (manifest.is_discarded() || !manifest.is_object() || !manifest.contains("entries") ||
      !manifest["format"].is_number_integer() || manifest["format"].get<int>() < 1 || manifest["format"].get<int>() > kFormat)
    return invalid(fmt::format("manifest {} is not a berth snapshot manifest (formats 1 to {})", manifest_id, kFormat));

  std::error_code ec;
  if (fs::exists(dest, ec)) return conflict(fmt::format("{} already exists; restore into a new directory", dest));
  // DEST.partial holds an unfinished restore; DEST.partial.manifest says of which snapshot. A
  // restore of the same snapshot resumes it, anything else starts over.
  const fs::path partial = dest + ".partial";
  const fs::path marker = dest + ".partial.manifest";
  bool resume = false;
  {
    std::ifstream in(marker);
    std::string id;
    resume = in && std::getline(in, id) && id == manifest_id && fs::is_directory(partial, ec);
  }
  if (!resume) {
    fs::remove_all(partial, ec);
    std::ofstream out(marker, std::ios::trunc);
    out << manifest_id << "\n";
    if (!out.flush()) return unavailable(fmt::format("cannot write {}", marker.string()));
  }
  fs::create_directories(partial, ec);
  if (ec) return unavailable(fmt::format("cannot create {}: {}", partial.string(), ec.message()));
  // Without the store (kUnavailable) the partial restore is kept to be resumed; corrupt or
  // missing data, or a bad manifest, removes it.
  auto fail = [&](Error e) -> Result<RestoreStats> {
    std::error_code ignored;
    if (e.code != ErrorCode::kUnavailable) {
      fs::remove_all(partial, ignored);
      fs::remove(marker, ignored);
    }
    return e;
  };

  RestoreStats stats;
  struct File {
    fs::path path;
    std::string rel;
    unsigned mode;
  };
  struct Task {
    std::size_t file;
    std::uint64_t offset;
    std::string hash;
    std::size_t size;
    std::string object;          // the chunk's own object, or the pack holding it
    std::uint64_t at = 0, length = 0;  // its bytes in a pack (length 0: the whole object)
  };
  std::vector<File> files;
  std::vector<Task> tasks;
  std::vector<std::string> packs;
  std::vector<std::pair<fs::path, unsigned>> dir_modes;
  std::set<std::string> symlinks;
  try {
    if (manifest.contains("packs")) packs = manifest["packs"].get<std::vector<std::string>>();
    for (const auto& e : manifest["entries"]) {
      const std::string rel = e.at("path").get<std::string>();
      if (rel.empty() || rel.front() == '/' || rel.find("..") != std::string::npos)
        return fail(invalid(fmt::format("manifest {}: unsafe path '{}'", manifest_id, rel)));
      const fs::path target = partial / rel;
      const std::string type = e.at("type").get<std::string>();
      // Nothing may be written through a symlink the manifest created (it could point anywhere).
      for (fs::path up = fs::path(rel).parent_path(); !up.empty(); up = up.parent_path())
        if (symlinks.count(up.string()))
          return fail(invalid(fmt::format("manifest {}: '{}' lies beneath the symlink '{}'", manifest_id, rel, up.string())));
      const unsigned mode = e.at("mode").get<unsigned>();
      if (type == "dir") {
        fs::create_directories(target, ec);
        dir_modes.emplace_back(target, mode);
        continue;
      }
      if (type == "symlink") {
        const std::string to = e.at("target").get<std::string>();
        if (to.empty() || to.front() == '/' || to.find("..") != std::string::npos)
          return fail(invalid(fmt::format("manifest {}: symlink '{}' points outside the snapshot ('{}')", manifest_id, rel, to)));
        symlinks.insert(rel);
        fs::remove(target, ec);
        fs::create_symlink(to, target, ec);
        if (ec) return fail(unavailable(fmt::format("symlink {}: {}", rel, ec.message())));
        continue;
      }
      // Files are created here; their chunks are fetched, verified and written in parallel below.
      std::uint64_t offset = 0;
      for (const auto& c : e.at("chunks")) {
        const std::size_t size = c.at("size").get<std::size_t>();
        if (size > (64u << 20)) return fail(invalid(fmt::format("manifest {}: a chunk of {} claims {} bytes", manifest_id, rel, size)));
        Task t{files.size(), offset, c.at("hash").get<std::string>(), size, "", 0, 0};
        t.object = t.hash;
        if (c.contains("p")) {
          const auto p = c["p"].get<std::size_t>();
          if (p >= packs.size()) return fail(invalid(fmt::format("manifest {}: pack index {} out of range", manifest_id, p)));
          t.object = packs[p];
          t.at = c.at("o").get<std::uint64_t>();
          t.length = c.at("l").get<std::uint64_t>();
          if (t.length == 0 || t.length > (64u << 20))
            return fail(invalid(fmt::format("manifest {}: chunk {} has a bad length in its pack", manifest_id, t.hash)));
        }
        tasks.push_back(std::move(t));
        offset += size;
      }
      if (offset != e.at("size").get<std::uint64_t>())
        return fail(invalid(fmt::format("manifest {}: the chunks of {} add up to {} bytes, not {}", manifest_id, rel, offset,
                                        e.at("size").get<std::uint64_t>())));
      // Sized up front: a resumed restore keeps the bytes already there (checked chunk by chunk).
      // All-zero chunks are not written: the files are sparse there.
      int fd = ::open(target.c_str(), O_WRONLY | O_CREAT | (resume ? 0 : O_TRUNC) | O_CLOEXEC, 0600);
      if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(offset)) != 0) {
        int err = errno;
        if (fd >= 0) ::close(fd);
        return fail(unavailable(fmt::format("cannot create {}: {}", target.string(), std::strerror(err))));
      }
      ::close(fd);
      files.push_back({target, rel, mode});
      ++stats.files;
      stats.bytes += offset;
    }
  } catch (const json::exception& e) {
    return fail(invalid(fmt::format("manifest {} is malformed: {}", manifest_id, e.what())));
  }
  // Chunks grouped by the object holding them: each object is fetched once, then each of its
  // chunks decompressed, verified and written. Several objects at once.
  std::vector<std::vector<std::size_t>> groups;
  {
    std::map<std::string, std::size_t> by_object;
    for (std::size_t i = 0; i < tasks.size(); ++i) {
      auto [it, fresh] = by_object.emplace(tasks[i].object, groups.size());
      if (fresh) groups.emplace_back();
      groups[it->second].push_back(i);
    }
  }
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex error_mu, progress_mu;
  Error first_error;
  std::atomic<std::uint64_t> done_bytes{0}, transferred{0}, fetched{0};
  auto report = [&] {
    if (!options.progress) return;
    std::unique_lock<std::mutex> lock(progress_mu, std::try_to_lock);
    if (lock) options.progress({done_bytes.load(), stats.bytes, transferred.load()});
  };
  auto stop_with = [&](Error e) {
    std::lock_guard<std::mutex> lock(error_mu);
    if (!failed.exchange(true)) first_error = std::move(e);
  };
  auto work = [&] {
    std::vector<std::uint8_t> plain;
    std::vector<std::size_t> pending;
    while (!failed) {
      std::size_t g = next++;
      if (g >= groups.size()) return;
      report();
      pending.clear();
      for (std::size_t i : groups[g]) {
        const Task& t = tasks[i];
        if (resume) {  // already there from an interrupted restore?
          plain.resize(t.size);
          int rfd = ::open(files[t.file].path.c_str(), O_RDONLY | O_CLOEXEC);
          ssize_t got = rfd >= 0 ? ::pread(rfd, plain.data(), t.size, static_cast<off_t>(t.offset)) : -1;
          if (rfd >= 0) ::close(rfd);
          if (got == static_cast<ssize_t>(t.size) && sha256_hex(plain) == t.hash) {
            done_bytes += t.size;
            continue;
          }
        }
        pending.push_back(i);
      }
      if (pending.empty()) continue;
      const Task& first = tasks[pending.front()];
      auto blob = store.get(first.object);
      if (!blob.ok()) {
        const std::string in = first.object == first.hash ? "" : " (in pack " + first.object + ")";
        stop_with(Error(blob.error().code, fmt::format("chunk {}{} of file {} cannot be read: {}", first.hash, in,
                                                       files[first.file].rel, blob.error().message)));
        return;
      }
      transferred += blob->size();
      for (std::size_t i : pending) {
        const Task& t = tasks[i];
        const File& f = files[t.file];
        ++fetched;
        const std::string in = t.object == t.hash ? "" : " (in pack " + t.object + ")";
        if (t.length && (t.at > blob->size() || t.length > blob->size() - t.at)) {
          stop_with(invalid(fmt::format("chunk {}{} of file {} is corrupt (its range lies beyond the pack) in {}", t.hash, in,
                                        f.rel, store.describe())));
          return;
        }
        const std::uint8_t* src = blob->data() + t.at;
        const std::size_t src_len = t.length ? t.length : blob->size();
        plain.resize(t.size);
        std::size_t n = ZSTD_decompress(plain.data(), plain.size(), src, src_len);
        if (ZSTD_isError(n) || n != t.size || sha256_hex(std::span<const std::uint8_t>(plain.data(), n)) != t.hash) {
          stop_with(invalid(fmt::format("chunk {}{} of file {} is corrupt ({}) in {}", t.hash, in, f.rel,
                                        ZSTD_isError(n) ? ZSTD_getErrorName(n)
                                        : n != t.size   ? "wrong size"
                                                        : "content does not match its hash",
                                        store.describe())));
          return;
        }
        done_bytes += n;
        if (all_zero(plain.data(), n)) continue;  // a hole in the sparse file already reads as zeros
        int fd = ::open(f.path.c_str(), O_WRONLY | O_CLOEXEC);
        std::size_t off = 0;
        while (fd >= 0 && off < n) {
          ssize_t k = ::pwrite(fd, plain.data() + off, n - off, static_cast<off_t>(t.offset + off));
          if (k < 0 && errno == EINTR) continue;
          if (k <= 0) break;
          off += static_cast<std::size_t>(k);
        }
        int err = errno;
        if (fd >= 0) ::close(fd);
        if (off != n) {
          stop_with(unavailable(fmt::format("writing {}: {}", f.path.string(), std::strerror(err))));
          return;
        }
      }
    }
  };
  const unsigned threads = static_cast<unsigned>(std::clamp(options.parallel, 1, 64));
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; ++i) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (failed) return fail(first_error);
  stats.chunks = tasks.size();
  stats.fetched_chunks = fetched;
  report();
  for (const auto& f : files) ::chmod(f.path.c_str(), f.mode);
  for (auto it = dir_modes.rbegin(); it != dir_modes.rend(); ++it) ::chmod(it->first.c_str(), it->second);
  fs::rename(partial, dest, ec);
  if (ec) return fail(unavailable(fmt::format("cannot move {} into place: {}", partial.string(), ec.message())));
  fs::remove(marker, ec);
  return stats;
}

}  // namespace berth::snapshot
