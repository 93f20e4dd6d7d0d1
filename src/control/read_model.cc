#include "control/read_model.h"

#include <utility>

namespace berth::control {

const EnvView* StatusSnapshot::find(std::string_view name) const {
  if (!index) return nullptr;
  auto it = index->find(std::string(name));
  return it == index->end() ? nullptr : envs[it->second].get();
}

std::vector<const EnvView*> StatusSnapshot::page(std::string after, std::size_t limit, std::string* next) const {
  std::vector<const EnvView*> out;
  next->clear();
  if (limit == 0) limit = envs.size();
  std::size_t from = 0;
  if (!after.empty() && index)
    if (auto it = index->find(after); it != index->end()) from = it->second + 1;
  for (std::size_t i = from; i < envs.size() && out.size() < limit; ++i) out.push_back(envs[i].get());
  if (from + out.size() < envs.size() && !out.empty()) *next = out.back()->status.env;
  return out;
}

std::vector<std::string> StatusSnapshot::names() const {
  std::vector<std::string> out;
  out.reserve(envs.size());
  for (const auto& v : envs) out.push_back(v->status.env);
  return out;
}

std::shared_ptr<const StatusSnapshot> ReadModel::current() const {
  std::lock_guard<std::mutex> held(mu_);
  return current_;
}

void ReadModel::publish(std::shared_ptr<const StatusSnapshot> snapshot) {
  std::shared_ptr<const StatusSnapshot> old;
  {
    std::lock_guard<std::mutex> held(mu_);
    old = std::exchange(current_, std::move(snapshot));
  }
  // `old` (and views only it held) freed here, outside the lock.
}

}  // namespace berth::control
