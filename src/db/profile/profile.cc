#include "db/profile/profile.h"

#include <algorithm>

namespace berth::db {

namespace {

const std::vector<ServerProfile>& profiles() {
  static const std::vector<ServerProfile> all = {mariadb_profile()};
  return all;
}

}  // namespace

const ServerProfile* server_profile(std::string_view engine) {
  for (const auto& p : profiles())
    if (p.engine == engine) return &p;
  return nullptr;
}

std::vector<std::string> server_profile_names() {
  std::vector<std::string> names;
  for (const auto& p : profiles()) names.push_back(p.engine);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace berth::db
