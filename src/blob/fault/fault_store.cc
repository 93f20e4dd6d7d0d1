#include "blob/fault/fault_store.h"

#include <fmt/format.h>

namespace berth::blob {

void FaultStore::fail(Op op, int n, std::string message, bool sticky) {
  std::lock_guard<std::mutex> lock(mu_);
  Rule& r = rules_[static_cast<int>(op)];
  r.fail_at = n > 0 ? r.calls + n : 0;
  r.sticky = sticky;
  r.message = std::move(message);
}

void FaultStore::close(Op op) {
  std::lock_guard<std::mutex> lock(mu_);
  rules_[static_cast<int>(op)].closed = true;
}

void FaultStore::open(Op op) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    rules_[static_cast<int>(op)].closed = false;
  }
  opened_.notify_all();
}

int FaultStore::waiting(Op op) const {
  std::lock_guard<std::mutex> lock(mu_);
  return rules_[static_cast<int>(op)].waiting;
}

int FaultStore::calls(Op op) const {
  std::lock_guard<std::mutex> lock(mu_);
  return rules_[static_cast<int>(op)].calls;
}

void FaultStore::truncate_puts(bool on) {
  std::lock_guard<std::mutex> lock(mu_);
  truncate_ = on;
}

std::optional<Error> FaultStore::enter(Op op) {
  std::unique_lock<std::mutex> lock(mu_);
  Rule& r = rules_[static_cast<int>(op)];
  const int call = ++r.calls;
  ++r.waiting;
  opened_.wait(lock, [&] { return !r.closed; });
  --r.waiting;
  if (r.fail_at != 0 && (call == r.fail_at || (r.sticky && call > r.fail_at)))
    return unavailable(fmt::format("{}: {}", inner_.describe(), r.message));
  return std::nullopt;
}

Result<bool> FaultStore::exists(const std::string& key) {
  if (auto e = enter(Op::kExists)) return *e;
  return inner_.exists(key);
}

Result<bool> FaultStore::put(const std::string& key, std::span<const std::uint8_t> data) {
  if (auto e = enter(Op::kPut)) return *e;
  bool truncate;
  {
    std::lock_guard<std::mutex> lock(mu_);
    truncate = truncate_;
  }
  return inner_.put(key, truncate ? data.first(data.size() / 2) : data);
}

Result<std::vector<std::uint8_t>> FaultStore::get(const std::string& key) {
  if (auto e = enter(Op::kGet)) return *e;
  return inner_.get(key);
}

}  // namespace berth::blob
