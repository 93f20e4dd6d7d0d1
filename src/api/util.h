// api/util.h — helpers the API's route files share (handlers.cc, documents.cc): splitting a
// target, query parameters, JSON answers. Internal to the api component; any thread.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/handlers.h"
#include "base/result.h"

namespace berth::api::detail {

int http_status(ErrorCode c);
// Request text echoed back (names in errors) may be invalid UTF-8: replaced, never thrown.
std::string dump(const nlohmann::json& j);
Response ok(const nlohmann::json& j, int status = 200);

// "/v1/x/y?a=1" → {{"v1", "x", "y"}, "a=1"}
struct Target {
  std::vector<std::string> parts;
  std::string_view query;
};
Target parse_target(std::string_view target);
// `method` and `parts` match: same method, same length, each part equal or "*" in `pattern`.
bool matches(const std::string& method, const std::vector<std::string>& parts, std::string_view want_method,
             std::initializer_list<std::string_view> pattern);
std::string query_param(std::string_view query, std::string_view name);
Result<std::int64_t> int_param(std::string_view query, std::string_view name, std::int64_t def, std::int64_t max);
bool flag_param(std::string_view query, std::string_view name);  // name=1|true|yes
nlohmann::json nullable_time(Millis t);

}  // namespace berth::api::detail
