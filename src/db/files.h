// db/files.h — small helpers db::Manager's files share (manager.cc, rollout.cc); internal to db/.
//
// Threading: functions of their arguments; any thread.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>

#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "base/result.h"

namespace berth::db {

// A JSON file written to a temporary name and renamed: a crash leaves the old or the new one.
Status write_json(const std::filesystem::path& path, const nlohmann::json& j);
// The file's JSON; nullopt when it is missing or not JSON.
std::optional<nlohmann::json> read_json(const std::filesystem::path& path);
// Runs a worker's work, turning a library exception into its failure.
Status catching(const std::function<Status()>& work);
Millis steady_ms();

}  // namespace berth::db
