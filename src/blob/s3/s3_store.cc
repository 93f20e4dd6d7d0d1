#include "blob/s3/s3_store.h"

#include <ctime>
#include <map>

#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "base/digest.h"

namespace berth::blob {

namespace {

std::string hex(const unsigned char* p, unsigned n) {
  std::string out;
  out.reserve(n * 2);
  for (unsigned i = 0; i < n; ++i) out += fmt::format("{:02x}", p[i]);
  return out;
}

std::string hmac(std::string_view key, std::string_view msg) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(msg.data()),
       msg.size(), md, &len);
  return {reinterpret_cast<const char*>(md), len};
}

std::span<const std::uint8_t> bytes_of(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

bool valid_key(const std::string& key) { return !key.empty() && key.size() <= 1024 && key.front() != '/'; }

// The text between <tag> and </tag>, the first occurrence.
std::string xml_value(const std::string& xml, const std::string& tag) {
  auto a = xml.find("<" + tag + ">");
  if (a == std::string::npos) return {};
  a += tag.size() + 2;
  auto b = xml.find("</" + tag + ">", a);
  return b == std::string::npos ? std::string() : xml.substr(a, b - a);
}

}  // namespace

S3Store::S3Store(S3Config config) : c_(std::move(config)) {
  std::string_view e = c_.endpoint;
  if (auto p = e.find("://"); p != std::string_view::npos) e.remove_prefix(p + 3);
  host_ = std::string(e.substr(0, e.find('/')));
}

std::string S3Store::describe() const { return fmt::format("s3 store {} bucket {}", c_.endpoint, c_.bucket); }

S3Store::Signed S3Store::sign(const S3Config& c, const std::string& method, const std::string& host,
                              const std::string& path, const std::string& query, std::span<const std::uint8_t> body,
                              const std::string& amz_date) {
  Signed s;
  s.amz_date = amz_date;
  s.payload_hash = sha256_hex(body);
  const std::string date = amz_date.substr(0, 8);
  // Canonical query: parameters sorted by name, each name=value (already encoded by the caller).
  std::map<std::string, std::string> params;
  for (std::size_t i = 0; i < query.size();) {
    std::size_t amp = query.find('&', i);
    std::string kv = query.substr(i, amp == std::string::npos ? std::string::npos : amp - i);
    auto eq = kv.find('=');
    params[kv.substr(0, eq)] = eq == std::string::npos ? "" : kv.substr(eq + 1);
    if (amp == std::string::npos) break;
    i = amp + 1;
  }
  std::string canonical_query;
  for (const auto& [k, v] : params) canonical_query += (canonical_query.empty() ? "" : "&") + k + "=" + v;
  const std::string signed_headers = "host;x-amz-content-sha256;x-amz-date";
  const std::string canonical = fmt::format("{}\n{}\n{}\nhost:{}\nx-amz-content-sha256:{}\nx-amz-date:{}\n\n{}\n{}", method,
                                            path, canonical_query, host, s.payload_hash, amz_date, signed_headers,
                                            s.payload_hash);
  const std::string scope = fmt::format("{}/{}/s3/aws4_request", date, c.region);
  const std::string to_sign = fmt::format("AWS4-HMAC-SHA256\n{}\n{}\n{}", amz_date, scope, sha256_hex(bytes_of(canonical)));
  std::string key = hmac("AWS4" + c.secret_key, date);
  key = hmac(key, c.region);
  key = hmac(key, "s3");
  key = hmac(key, "aws4_request");
  const std::string sig = hmac(key, to_sign);
  s.authorization = fmt::format("AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={}, Signature={}", c.access_key, scope,
                                signed_headers, hex(reinterpret_cast<const unsigned char*>(sig.data()),
                                                    static_cast<unsigned>(sig.size())));
  return s;
}

Result<http::Response> S3Store::call(const std::string& method, const std::string& key, const std::string& query,
                                     std::span<const std::uint8_t> body) {
  const std::string path = "/" + http::uri_encode(c_.bucket, false) + (key.empty() ? "" : "/" + http::uri_encode(key, true));
  auto r = http::with_retries(c_.retry, [&]() -> Result<http::Response> {
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&now, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    Signed s = sign(c_, method, host_, path, query, body, stamp);
    return http::perform({method, c_.endpoint + path + (query.empty() ? "" : "?" + query),
                          {{"Authorization", s.authorization},
                           {"x-amz-date", s.amz_date},
                           {"x-amz-content-sha256", s.payload_hash}},
                          body});
  });
  if (!r.ok()) return r.error().wrap(describe());
  if (r->status == 403)
    return unavailable(fmt::format("{}: {} {} refused (HTTP 403): {}", describe(), method, path, xml_value(r->text(), "Code")));
  return r;
}

Status S3Store::ensure_bucket() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (bucket_ready_) return {};
  }
  auto r = call("PUT", "", "", {});
  if (!r.ok()) return r.error();
  // 409 BucketAlreadyOwnedByYou (or BucketAlreadyExists from some servers) means it is there.
  if (r->status != 200 && r->status != 409)
    return unavailable(fmt::format("{}: cannot create bucket: HTTP {} {}", describe(), r->status, xml_value(r->text(), "Code")));
  std::lock_guard<std::mutex> lock(mu_);
  bucket_ready_ = true;
  return {};
}

Result<bool> S3Store::exists(const std::string& key) {
  if (!valid_key(key)) return invalid(fmt::format("bad object key '{}'", key));
  auto r = call("HEAD", key, "", {});
  if (!r.ok()) return r.error();
  if (r->status == 404) return false;
  if (r->status == 200) return true;
  return unavailable(fmt::format("{}: HEAD {}: HTTP {}", describe(), key, r->status));
}

Result<bool> S3Store::put(const std::string& key, std::span<const std::uint8_t> data) {
  if (!valid_key(key)) return invalid(fmt::format("bad object key '{}'", key));
  BERTH_TRY(ensure_bucket());
  auto there = exists(key);
  if (!there.ok()) return there.error();
  if (*there) return false;
  if (data.size() > c_.part_bytes) return put_multipart(key, data);
  auto r = call("PUT", key, "", data);
  if (!r.ok()) return r.error();
  if (r->status != 200)
    return unavailable(fmt::format("{}: PUT {}: HTTP {} {}", describe(), key, r->status, xml_value(r->text(), "Code")));
  return true;
}

Result<bool> S3Store::put_multipart(const std::string& key, std::span<const std::uint8_t> data) {
  auto init = call("POST", key, "uploads=", {});
  if (!init.ok()) return init.error();
  const std::string upload_id = xml_value(init->text(), "UploadId");
  if (init->status != 200 || upload_id.empty())
    return unavailable(fmt::format("{}: starting a multipart upload of {}: HTTP {}", describe(), key, init->status));
  const std::string id_q = "uploadId=" + http::uri_encode(upload_id, false);
  std::string complete = "<CompleteMultipartUpload>";
  for (std::uint64_t off = 0, n = 1; off < data.size(); off += c_.part_bytes, ++n) {
    auto part = data.subspan(off, std::min<std::uint64_t>(c_.part_bytes, data.size() - off));
    auto r = call("PUT", key, fmt::format("partNumber={}&{}", n, id_q), part);
    if (!r.ok() || r->status != 200) {
      (void)call("DELETE", key, id_q, {});
      if (!r.ok()) return r.error();
      return unavailable(fmt::format("{}: part {} of {}: HTTP {}", describe(), n, key, r->status));
    }
    complete += fmt::format("<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>", n, r->header("etag"));
  }
  complete += "</CompleteMultipartUpload>";
  auto r = call("POST", key, id_q, bytes_of(complete));
  if (!r.ok()) return r.error();
  if (r->status != 200 || r->text().find("<Error>") != std::string::npos)
    return unavailable(fmt::format("{}: completing the multipart upload of {}: HTTP {} {}", describe(), key, r->status,
                                   xml_value(r->text(), "Code")));
  return true;
}

Result<std::vector<std::uint8_t>> S3Store::get(const std::string& key) {
  if (!valid_key(key)) return invalid(fmt::format("bad object key '{}'", key));
  auto r = call("GET", key, "", {});
  return http::object_body(std::move(r), describe(), key);
}

Status S3Store::remove(const std::string& key) {
  if (!valid_key(key)) return invalid(fmt::format("bad object key '{}'", key));
  auto r = call("DELETE", key, "", {});
  if (!r.ok()) return r.error();
  if (r->status != 204 && r->status != 200 && r->status != 404)
    return unavailable(fmt::format("{}: DELETE {}: HTTP {}", describe(), key, r->status));
  return {};
}

}  // namespace berth::blob
