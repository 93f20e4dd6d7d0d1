// blob/http/http_client.h — the one HTTP client the remote blob stores share (libcurl).
//
// perform() runs one request synchronously on the calling thread. Each thread keeps its own curl
// handle, so connections are reused (keep-alive) and several threads may call at once — the
// stores' parallel uploads and restores do. Transport failures (refused, reset, timeout) come
// back as ErrorCode::kUnavailable; any HTTP status is a successful Response for the caller to
// judge. with_retries() retries a request on transport errors and 5xx with doubling backoff.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"

namespace berth::blob::http {

struct Request {
  std::string method = "GET";  // GET, HEAD, PUT, POST, DELETE
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::span<const std::uint8_t> body;
  std::chrono::milliseconds timeout{120'000};
};

struct Response {
  long status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::vector<std::uint8_t> body;
  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
  std::string text() const { return {body.begin(), body.end()}; }
};

Result<Response> perform(const Request& request);

struct RetryPolicy {
  int attempts = 5;
  std::chrono::milliseconds first_delay{100};  // doubles after each failed attempt
};

// Calls `attempt` until it returns a response below 500 or attempts run out; the last result is
// returned either way. The delays are real sleeps of the calling (worker) thread.
Result<Response> with_retries(const RetryPolicy& policy, const std::function<Result<Response>()>& attempt);

// The object a GET of `key` answered with: 404 → kNotFound ("missing"), any other status but 200
// → kUnavailable, a body shorter than its Content-Length → kUnavailable ("truncated"). `store`
// names the store in messages.
Result<std::vector<std::uint8_t>> object_body(Result<Response> response, const std::string& store, const std::string& key);

// Percent-encoding of RFC 3986 (unreserved characters kept); `keep_slash` for URL paths.
std::string uri_encode(std::string_view s, bool keep_slash);

}  // namespace berth::blob::http
