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
#include <openssl/evp.h>
#include <zstd.h>

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

constexpr int kFormat = 1;

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

std::string sha256_hex(std::span<const std::uint8_t> data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  std::string out;
  out.reserve(len * 2);
  for (unsigned i = 0; i < len; ++i) out += fmt::format("{:02x}", md[i]);
  return out;
}

namespace {

// New chunks go to a bounded queue; `parallel` workers look each up in the store, compress it
// and upload it. The first error stops everything; the manifest is only written after all
// uploads have finished.
class Uploader {
 public:
  Uploader(blob::BlobStore& store, int parallel) : store_(store) {
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
    return {};
  }
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

  blob::BlobStore& store_;
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

struct Writer {
  Uploader& uploader;
  CreateStats& stats;
  std::set<std::string> seen;  // chunks already submitted in this snapshot
  const CreateOptions& options;
  Progress progress;

  Result<std::string> put_chunk(std::span<const std::uint8_t> chunk) {
    std::string hash = sha256_hex(chunk);
    ++stats.chunks;
    progress.done_bytes += chunk.size();
    if (seen.insert(hash).second && !uploader.submit(hash, {chunk.begin(), chunk.end()}))
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
  Uploader uploader(store, options.parallel);
  Writer w{uploader, stats, {}, options, {}};
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
  json manifest = {{"format", kFormat}, {"files", stats.files}, {"bytes", stats.bytes}, {"entries", entries}};
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
  if (manifest.is_discarded() || manifest.value("format", 0) != kFormat || !manifest.contains("entries"))
    return invalid(fmt::format("manifest {} is not a berth snapshot manifest (format {})", manifest_id, kFormat));

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
  };
  std::vector<File> files;
  std::vector<Task> tasks;
  std::vector<std::pair<fs::path, unsigned>> dir_modes;
  std::set<std::string> symlinks;
  try {
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
        tasks.push_back({files.size(), offset, c.at("hash").get<std::string>(), size});
        offset += size;
      }
      if (offset != e.at("size").get<std::uint64_t>())
        return fail(invalid(fmt::format("manifest {}: the chunks of {} add up to {} bytes, not {}", manifest_id, rel, offset,
                                        e.at("size").get<std::uint64_t>())));
      // Sized up front: a resumed restore keeps the bytes already there (checked chunk by chunk).
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
  // Fetch, decompress, verify and write every chunk, several at once.
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex error_mu, progress_mu;
  Error first_error;
  std::atomic<std::uint64_t> done_bytes{0}, transferred{0}, fetched{0};
  std::atomic<std::size_t> finished_tasks{0};
  auto report = [&] {
    if (!options.progress) return;
    std::unique_lock<std::mutex> lock(progress_mu, std::try_to_lock);
    if (lock) options.progress({done_bytes.load(), stats.bytes, transferred.load()});
  };
  auto work = [&] {
    std::vector<std::uint8_t> plain;
    while (!failed) {
      std::size_t i = next++;
      if (i >= tasks.size()) return;
      const Task& t = tasks[i];
      const File& f = files[t.file];
      auto stop_with = [&](Error e) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (!failed.exchange(true)) first_error = std::move(e);
      };
      if (++finished_tasks % 64 == 0) report();
      if (resume) {  // already there from an interrupted restore?
        plain.resize(t.size);
        int rfd = ::open(f.path.c_str(), O_RDONLY | O_CLOEXEC);
        ssize_t got = rfd >= 0 ? ::pread(rfd, plain.data(), t.size, static_cast<off_t>(t.offset)) : -1;
        if (rfd >= 0) ::close(rfd);
        if (got == static_cast<ssize_t>(t.size) && sha256_hex(plain) == t.hash) {
          done_bytes += t.size;
          continue;
        }
      }
      auto blob = store.get(t.hash);
      ++fetched;
      if (blob.ok()) transferred += blob->size();
      if (!blob.ok()) {
        stop_with(Error(blob.error().code, fmt::format("chunk {} of file {} cannot be read: {}", t.hash, f.rel, blob.error().message)));
        return;
      }
      plain.resize(t.size);
      std::size_t n = ZSTD_decompress(plain.data(), plain.size(), blob->data(), blob->size());
      if (ZSTD_isError(n) || n != t.size || sha256_hex(std::span<const std::uint8_t>(plain.data(), n)) != t.hash) {
        stop_with(invalid(fmt::format("chunk {} of file {} is corrupt ({}) in {}", t.hash, f.rel,
                                      ZSTD_isError(n) ? ZSTD_getErrorName(n)
                                      : n != t.size   ? "wrong size"
                                                      : "content does not match its hash",
                                      store.describe())));
        return;
      }
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
      done_bytes += n;
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
