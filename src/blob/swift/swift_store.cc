#include "blob/swift/swift_store.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <openssl/evp.h>

namespace berth::blob {

namespace {

std::string md5_hex(std::span<const std::uint8_t> data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_md5(), nullptr);
  std::string out;
  for (unsigned i = 0; i < len; ++i) out += fmt::format("{:02x}", md[i]);
  return out;
}

bool valid_key(const std::string& key) {
  return !key.empty() && key.size() <= 512 && key.find_first_of("?#") == std::string::npos && key.front() != '/';
}

}  // namespace

std::string SwiftStore::describe() const { return fmt::format("swift store {} container {}", c_.auth_url, c_.container); }

Result<SwiftStore::Session> SwiftStore::session(bool renew) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!renew && !session_.token.empty()) return session_;
  auto r = http::with_retries(c_.retry, [&] {
    return http::perform({"GET", c_.auth_url, {{"X-Auth-User", c_.user}, {"X-Auth-Key", c_.key}}, {}});
  });
  if (!r.ok()) return r.error().wrap(describe() + ": authenticating");
  if (r->status != 200 && r->status != 204)
    return unavailable(fmt::format("{}: authentication as {} refused: HTTP {}", describe(), c_.user, r->status));
  Session s{r->header("x-storage-url"), r->header("x-auth-token")};
  if (s.storage_url.empty() || s.token.empty())
    return unavailable(fmt::format("{}: the auth answer lacks X-Storage-Url or X-Auth-Token", describe()));
  session_ = s;
  return s;
}

Result<http::Response> SwiftStore::call(const std::string& method, const std::string& path,
                                        std::span<const std::uint8_t> body,
                                        std::vector<std::pair<std::string, std::string>> headers) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto s = session(attempt > 0);
    if (!s.ok()) return s.error();
    auto h = headers;
    h.emplace_back("X-Auth-Token", s->token);
    const std::string url = s->storage_url + "/" + path;
    auto r = http::with_retries(c_.retry, [&] { return http::perform({method, url, h, body}); });
    if (!r.ok()) return r.error().wrap(describe());
    if (r->status != 401) return r;
  }
  return unavailable(fmt::format("{}: the token was refused twice (HTTP 401)", describe()));
}

Status SwiftStore::ensure_containers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (containers_ready_) return {};
  }
  for (const std::string& name : {c_.container, c_.container + "_segments"}) {
    auto r = call("PUT", http::uri_encode(name, false), {});
    if (!r.ok()) return r.error();
    if (r->status != 201 && r->status != 202 && r->status != 204)
      return unavailable(fmt::format("{}: cannot create container {}: HTTP {}", describe(), name, r->status));
  }
  std::lock_guard<std::mutex> lock(mu_);
  containers_ready_ = true;
  return {};
}

Result<bool> SwiftStore::exists(const std::string& key) {
  if (!valid_key(key)) return invalid(fmt::format("bad object key '{}'", key));
  auto r = call("HEAD", http::uri_encode(c_.container, false) + "/" + http::uri_encode(key, true), {});
  if (!r.ok()) return r.error();
  if (r->status == 404) return false;
  if (r->status >= 200 && r->status < 300) return true;
  return unavailable(fmt::format("{}: HEAD {}: HTTP {}", describe(), key, r->status));
}

Result<bool> SwiftStore::put(const std::string& key, std::span<const std::uint8_t> data) {
  if (!valid_key(key)) return invalid(fmt::format("bad object key '{}'", key));
  BERTH_TRY(ensure_containers());
  auto there = exists(key);
  if (!there.ok()) return there.error();
  if (*there) return false;
  if (data.size() > c_.segment_bytes) return put_large(key, data);
  auto r = call("PUT", http::uri_encode(c_.container, false) + "/" + http::uri_encode(key, true), data,
                {{"If-None-Match", "*"}, {"ETag", md5_hex(data)}, {"Content-Type", "application/octet-stream"}});
  if (!r.ok()) return r.error();
  if (r->status == 412) return false;  // written meanwhile by someone else
  if (r->status != 201) return unavailable(fmt::format("{}: PUT {}: HTTP {} {}", describe(), key, r->status, r->text().substr(0, 200)));
  return true;
}

Result<bool> SwiftStore::put_large(const std::string& key, std::span<const std::uint8_t> data) {
  nlohmann::json manifest = nlohmann::json::array();
  const std::string seg_container = c_.container + "_segments";
  for (std::uint64_t off = 0, i = 0; off < data.size(); off += c_.segment_bytes, ++i) {
    auto part = data.subspan(off, std::min<std::uint64_t>(c_.segment_bytes, data.size() - off));
    const std::string name = fmt::format("{}/{:08d}", key, i);
    const std::string etag = md5_hex(part);
    auto r = call("PUT", http::uri_encode(seg_container, false) + "/" + http::uri_encode(name, true), part, {{"ETag", etag}});
    if (!r.ok()) return r.error();
    if (r->status != 201)
      return unavailable(fmt::format("{}: PUT segment {} of {}: HTTP {}", describe(), i, key, r->status));
    manifest.push_back({{"path", "/" + seg_container + "/" + name}, {"etag", etag}, {"size_bytes", part.size()}});
  }
  const std::string text = manifest.dump();
  auto r = call("PUT", http::uri_encode(c_.container, false) + "/" + http::uri_encode(key, true) + "?multipart-manifest=put",
                std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()),
                {{"Content-Type", "application/json"}});
  if (!r.ok()) return r.error();
  if (r->status != 201)
    return unavailable(fmt::format("{}: PUT large-object manifest of {}: HTTP {} {}", describe(), key, r->status, r->text().substr(0, 200)));
  return true;
}

Result<std::vector<std::uint8_t>> SwiftStore::get(const std::string& key) {
  if (!valid_key(key)) return invalid(fmt::format("bad object key '{}'", key));
  auto r = call("GET", http::uri_encode(c_.container, false) + "/" + http::uri_encode(key, true), {});
  return http::object_body(std::move(r), describe(), key);
}

Status SwiftStore::remove(const std::string& key) {
  if (!valid_key(key)) return invalid(fmt::format("bad object key '{}'", key));
  const std::string path = http::uri_encode(c_.container, false) + "/" + http::uri_encode(key, true);
  auto head = call("HEAD", path, {});
  if (!head.ok()) return head.error();
  if (head->status == 404) return {};
  const bool large = head->header("x-static-large-object") == "True" || head->header("x-static-large-object") == "true";
  auto r = call("DELETE", large ? path + "?multipart-manifest=delete" : path, {});
  if (!r.ok()) return r.error();
  if (r->status >= 300 && r->status != 404) return unavailable(fmt::format("{}: DELETE {}: HTTP {}", describe(), key, r->status));
  return {};
}

}  // namespace berth::blob
