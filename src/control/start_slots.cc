#include "control/start_slots.h"

namespace berth::control {

int StartSlots::limit(const std::string& runtime) const {
  auto it = limits_.find(runtime);
  return it == limits_.end() ? 0 : it->second;
}

int StartSlots::starting(const std::string& runtime) const {
  auto it = starting_.find(runtime);
  return it == starting_.end() ? 0 : it->second;
}

bool StartSlots::take(const ipam::LeaseKey& key, const std::string& runtime) {
  const int max = limit(runtime);
  if (max <= 0) return true;  // no limit: nothing to count (every launch passes here)
  if (holders_.count(key)) return true;
  if (starting(runtime) >= max) {
    if (line_set_.insert(key).second) line_[runtime].push_back(key);
    return false;
  }
  holders_.emplace(key, runtime);
  ++starting_[runtime];
  return true;
}

bool StartSlots::release(const ipam::LeaseKey& key) {
  auto it = holders_.find(key);
  if (it == holders_.end()) return false;
  --starting_[it->second];
  holders_.erase(it);
  return true;
}

std::vector<ipam::LeaseKey> StartSlots::next_in_line() {
  std::vector<ipam::LeaseKey> out;
  for (auto& [runtime, line] : line_) {
    int free = limit(runtime) - starting(runtime);
    while (free-- > 0 && !line.empty()) {
      line_set_.erase(line.front());
      out.push_back(std::move(line.front()));
      line.pop_front();
    }
  }
  return out;
}

}  // namespace berth::control
