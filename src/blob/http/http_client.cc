#include "blob/http/http_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <mutex>
#include <thread>

#include <fmt/format.h>

namespace berth::blob::http {

namespace {

struct Global {
  Global() { curl_global_init(CURL_GLOBAL_DEFAULT); }
};

struct Handle {
  CURL* curl = nullptr;
  Handle() {
    static Global global;  // curl_global_init once, thread-safe by static initialization
    curl = curl_easy_init();
  }
  ~Handle() {
    if (curl) curl_easy_cleanup(curl);
  }
};

struct Upload {
  std::span<const std::uint8_t> data;
  std::size_t offset = 0;
};

std::size_t on_read(char* buf, std::size_t size, std::size_t n, void* user) {
  auto* u = static_cast<Upload*>(user);
  std::size_t k = std::min(size * n, u->data.size() - u->offset);
  std::memcpy(buf, u->data.data() + u->offset, k);
  u->offset += k;
  return k;
}

std::size_t on_write(char* data, std::size_t size, std::size_t n, void* user) {
  auto* body = static_cast<std::vector<std::uint8_t>*>(user);
  body->insert(body->end(), data, data + size * n);
  return size * n;
}

std::size_t on_header(char* data, std::size_t size, std::size_t n, void* user) {
  auto* headers = static_cast<std::map<std::string, std::string>*>(user);
  std::string_view line(data, size * n);
  if (line.starts_with("HTTP/")) headers->clear();  // a new response (after 100 Continue, redirects)
  auto colon = line.find(':');
  if (colon != std::string_view::npos) {
    std::string name(line.substr(0, colon));
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) value.remove_suffix(1);
    (*headers)[name] = std::string(value);
  }
  return size * n;
}

}  // namespace

Result<Response> perform(const Request& request) {
  thread_local Handle handle;
  CURL* c = handle.curl;
  if (!c) return internal("curl_easy_init failed");
  curl_easy_reset(c);
  Response response;
  Upload upload{request.body, 0};
  curl_slist* headers = nullptr;
  for (const auto& [k, v] : request.headers) headers = curl_slist_append(headers, (k + ": " + v).c_str());
  headers = curl_slist_append(headers, "Expect:");  // no 100-continue round trip
  curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(request.timeout.count()));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10'000L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &response.body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &response.headers);
  if (request.method == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (request.method == "PUT" || request.method == "POST") {
    if (request.method == "PUT") curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    else curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(c, CURLOPT_READDATA, &upload);
    if (request.method == "PUT")
      curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
    else
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
  } else if (request.method != "GET") {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  }
  CURLcode rc = curl_easy_perform(c);
  curl_slist_free_all(headers);
  if (rc != CURLE_OK)
    return unavailable(fmt::format("{} {}: {}", request.method, request.url, curl_easy_strerror(rc)));
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response.status);
  return response;
}

Result<Response> with_retries(const RetryPolicy& policy, const std::function<Result<Response>()>& attempt) {
  auto delay = policy.first_delay;
  for (int i = 1;; ++i) {
    Result<Response> r = attempt();
    bool retry = !r.ok() ? r.error().code == ErrorCode::kUnavailable : r->status >= 500;
    if (!retry || i >= policy.attempts) return r;
    std::this_thread::sleep_for(delay);
    delay *= 2;
  }
}

Result<std::vector<std::uint8_t>> object_body(Result<Response> r, const std::string& store, const std::string& key) {
  if (!r.ok()) return r.error();
  if (r->status == 404) return not_found(fmt::format("{}: object {} is missing", store, key));
  if (r->status != 200) return unavailable(fmt::format("{}: GET {}: HTTP {}", store, key, r->status));
  const std::string length = r->header("content-length");
  if (!length.empty() && length != std::to_string(r->body.size()))
    return unavailable(fmt::format("{}: object {} truncated: {} of {} bytes", store, key, r->body.size(), length));
  return std::move(r->body);
}

std::string uri_encode(std::string_view s, bool keep_slash) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/'))
      out += static_cast<char>(c);
    else
      out += fmt::format("%{:02X}", c);
  }
  return out;
}

}  // namespace berth::blob::http
