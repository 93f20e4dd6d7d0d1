// snapshot/snapshot.h — directory snapshots as content-defined, compressed, content-addressed
// chunks (the format of docs/formats.md, "Snapshots").
//
// create_snapshot() cuts every regular file into content-defined chunks (a Gear rolling hash,
// FastCDC-style normalized cut points), compresses each with zstd and stores it under the
// SHA-256 of its uncompressed bytes — only if the store lacks it, so versions share chunks and a
// new version uploads only what changed. A manifest lists every entry (path, type, mode, size,
// chunk list) and is stored under the SHA-256 of its own bytes: its id.
//
// restore_snapshot() verifies the manifest against its id and every chunk against its hash as it
// is read; a missing, corrupt or truncated chunk fails the restore naming the chunk and the file.
// It builds into DEST.partial and renames to DEST only when everything is verified, so nothing
// half-made is ever left looking usable. Chunks are fetched, decompressed, verified and written
// by several threads at once (one per core, at most 8), so the store's get() must be thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "blob/blob_store.h"

namespace berth::snapshot {

struct ChunkerParams {
  std::size_t min = 16 << 10;
  std::size_t avg = 64 << 10;  // a power of two
  std::size_t max = 256 << 10;
};

// Length of the chunk that starts at data[0] (≤ data.size()); the cut depends only on content,
// so an insertion moves only the boundaries near it.
std::size_t next_chunk(std::span<const std::uint8_t> data, const ChunkerParams& params);

struct CreateStats {
  std::string manifest_id;
  std::uint64_t files = 0;
  std::uint64_t bytes = 0;            // total size of the files
  std::uint64_t chunks = 0;
  std::uint64_t new_chunks = 0;       // chunks the store did not have
  std::uint64_t uploaded_bytes = 0;   // compressed bytes written (chunks + manifest)
};

// Progress of a long snapshot or restore: bytes of file content handled so far, of the total.
struct Progress {
  std::uint64_t done_bytes = 0;
  std::uint64_t total_bytes = 0;
  std::uint64_t transferred_bytes = 0;  // compressed bytes uploaded or downloaded so far
};
using ProgressFn = std::function<void(const Progress&)>;

struct CreateOptions {
  ChunkerParams params;
  int parallel = 8;     // chunks compressed and uploaded at once
  // 0: every chunk is an object of its own. Otherwise new chunks are stored back to back in packs
  // of about this size (a remote store's per-request cost then counts per pack, not per chunk).
  std::size_t pack_bytes = 0;
  // Snapshots whose chunks this one may reference instead of storing them again (earlier
  // versions): with packs, the store cannot be asked chunk by chunk.
  std::vector<std::string> base_manifests;
  ProgressFn progress;  // called from the calling thread, now and then; may be empty
};

// Chunking and hashing run on the calling thread; the store lookups, compression and uploads of
// new chunks on `parallel` worker threads (so put() must be thread-safe). The manifest is written
// last, only after every chunk it names is stored.
Result<CreateStats> create_snapshot(const std::string& dir, blob::BlobStore& store, const CreateOptions& options = {});

struct RestoreStats {
  std::uint64_t files = 0;
  std::uint64_t bytes = 0;
  std::uint64_t chunks = 0;
  std::uint64_t fetched_chunks = 0;  // fewer than chunks when a partial restore was resumed
};

struct RestoreOptions {
  int parallel = 8;     // objects fetched at once (at least 1)
  ProgressFn progress;  // called from any restore thread, one call at a time; may be empty
};

// Resumable: when a restore fails for lack of the store (unavailable, not corrupt data), DEST.partial
// is kept, and the next restore of the same manifest into DEST re-fetches only the chunks whose
// bytes there do not already match their hash. Corrupt or missing chunks remove DEST.partial.
Result<RestoreStats> restore_snapshot(const std::string& manifest_id, blob::BlobStore& store, const std::string& dest,
                                      const RestoreOptions& options = {});

}  // namespace berth::snapshot
