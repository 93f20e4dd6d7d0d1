// blob/fault/fault_store.h — a BlobStore wrapper that injects faults, for tests.
//
// Wraps another store (not owned; it must outlive the wrapper) and, per operation, can fail the
// Nth call (and every later one, if asked), hold calls at a gate until the test opens it (a
// "slow" store whose slowness the test controls, so nothing sleeps), and store only part of
// what put() is given (a backend that loses data: readers must detect it, not trust it).
// Counts every call. Thread-safe: exists() and get() are called from restore threads at once.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include "blob/blob_store.h"

namespace berth::blob {

class FaultStore final : public BlobStore {
 public:
  enum class Op { kExists, kPut, kGet };

  explicit FaultStore(BlobStore& inner) : inner_(inner) {}

  // The `n`th call of `op` from now (1 = the next) fails with `message`; with `sticky`, every
  // later one too. 0 clears it.
  void fail(Op op, int n, std::string message = "injected fault", bool sticky = false);
  // Calls of `op` from now wait until open(); the wrapper must not be destroyed while calls
  // wait.
  void close(Op op);
  void open(Op op);
  // How many calls of `op` are waiting at its gate now; how many were made in all.
  int waiting(Op op) const;
  int calls(Op op) const;
  // put() stores only the first half of each object's bytes (and says it wrote it).
  void truncate_puts(bool on);

  Result<bool> exists(const std::string& key) override;
  Result<bool> put(const std::string& key, std::span<const std::uint8_t> data) override;
  Result<std::vector<std::uint8_t>> get(const std::string& key) override;
  std::string describe() const override { return inner_.describe() + " (with injected faults)"; }

 private:
  struct Rule {
    int fail_at = 0;  // call number that fails; 0: none
    bool sticky = false;
    std::string message;
    bool closed = false;
    int waiting = 0;
    int calls = 0;
  };
  // Counts the call, waits at the gate, and returns the injected error if this call fails.
  std::optional<Error> enter(Op op);

  BlobStore& inner_;
  mutable std::mutex mu_;
  std::condition_variable opened_;
  Rule rules_[3];
  bool truncate_ = false;
};

}  // namespace berth::blob
