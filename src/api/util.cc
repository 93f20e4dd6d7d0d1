// Helpers the API's route files share: targets, query parameters, JSON answers.
#include "api/util.h"

#include <charconv>

#include <fmt/format.h>

#include "base/text.h"

namespace berth::api::detail {
using nlohmann::json;

int http_status(ErrorCode c) {
  switch (c) {
    case ErrorCode::kInvalid: return 400;
    case ErrorCode::kNotFound: return 404;
    case ErrorCode::kConflict: return 409;
    case ErrorCode::kUnavailable: return 503;
    case ErrorCode::kInternal: return 500;
    case ErrorCode::kUnauthenticated: return 401;
    case ErrorCode::kForbidden: return 403;
    case ErrorCode::kExhausted: return 503;
  }
  return 500;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

Response ok(const json& j, int status) {
  Response r;
  r.status = status;
  r.body = dump(j);
  return r;
}

namespace {
std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> parts;
  std::size_t i = 0;
  while (i < path.size()) {
    auto j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    if (j > i) parts.emplace_back(path.substr(i, j - i));
    i = j + 1;
  }
  return parts;
}
}  // namespace

Target parse_target(std::string_view target) {
  std::string_view query;
  if (auto q = target.find('?'); q != std::string_view::npos) {
    query = target.substr(q + 1);
    target = target.substr(0, q);
  }
  return {split_path(target), query};
}

bool matches(const std::string& method, const std::vector<std::string>& parts, std::string_view want_method,
             std::initializer_list<std::string_view> pattern) {
  if (method != want_method || parts.size() != pattern.size()) return false;
  std::size_t i = 0;
  for (auto p : pattern) {
    if (p != "*" && p != parts[i]) return false;
    ++i;
  }
  return true;
}

std::string query_param(std::string_view query, std::string_view name) {
  std::size_t i = 0;
  while (i < query.size()) {
    auto amp = query.find('&', i);
    if (amp == std::string_view::npos) amp = query.size();
    auto kv = query.substr(i, amp - i);
    auto eq = kv.find('=');
    if (kv.substr(0, eq) == name) return eq == std::string_view::npos ? "" : std::string(kv.substr(eq + 1));
    i = amp + 1;
  }
  return "";
}

Result<std::int64_t> int_param(std::string_view query, std::string_view name, std::int64_t def, std::int64_t max) {
  std::string v = query_param(query, name);
  if (v.empty()) return def;
  std::int64_t n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || p != v.data() + v.size() || n < 0 || n > max)
    return invalid(fmt::format("query parameter {}: expected an integer from 0 to {}, got '{}'", name, max, v));
  return n;
}

bool flag_param(std::string_view query, std::string_view name) {
  std::string v = query_param(query, name);
  return v == "1" || v == "true" || v == "yes";
}

json nullable_time(Millis t) { return t ? json(rfc3339_ms(t)) : json(nullptr); }


}  // namespace berth::api::detail
