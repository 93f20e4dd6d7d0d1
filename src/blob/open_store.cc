#include "blob/open_store.h"

#include <cctype>
#include <cstdlib>
#include <map>

#include <fmt/format.h>

#include "blob/local/local_store.h"
#include "blob/s3/s3_store.h"
#include "blob/swift/swift_store.h"

namespace berth::blob {

namespace {

constexpr const char* kForms =
    "valid forms: /DIR, local:/DIR, swift://USER:KEY@HOST:PORT/CONTAINER[?auth=PATH&segment=BYTES], "
    "s3://ACCESS:SECRET@HOST:PORT/BUCKET[?region=REGION&part=BYTES]";

std::string decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

struct Parts {
  std::string user, secret, hostport, name;
  std::map<std::string, std::string> query;
};

Result<Parts> split(const std::string& url, std::string_view rest) {
  Parts p;
  auto bad = [&](const std::string& what) { return invalid(fmt::format("store URL '{}': {}; {}", url, what, kForms)); };
  if (auto q = rest.find('?'); q != std::string_view::npos) {
    std::string_view qs = rest.substr(q + 1);
    rest = rest.substr(0, q);
    while (!qs.empty()) {
      auto amp = qs.find('&');
      std::string_view kv = qs.substr(0, amp);
      auto eq = kv.find('=');
      if (eq == std::string_view::npos) return bad(fmt::format("query parameter '{}' has no value", kv));
      p.query[std::string(kv.substr(0, eq))] = decode(kv.substr(eq + 1));
      if (amp == std::string_view::npos) break;
      qs.remove_prefix(amp + 1);
    }
  }
  auto at = rest.rfind('@');
  if (at == std::string_view::npos) return bad("no credentials (USER:SECRET@) before the host");
  std::string_view cred = rest.substr(0, at);
  rest.remove_prefix(at + 1);
  auto colon = cred.rfind(':');
  p.user = decode(cred.substr(0, colon));
  if (colon != std::string_view::npos) p.secret = decode(cred.substr(colon + 1));
  if (p.secret.empty()) {
    const char* env = std::getenv("BERTH_STORE_SECRET");
    if (!env || !*env) return bad("no secret after the user, and BERTH_STORE_SECRET is not set");
    p.secret = env;
  }
  if (p.user.empty()) return bad("empty user");
  auto slash = rest.find('/');
  if (slash == std::string_view::npos || slash + 1 == rest.size()) return bad("no container or bucket after the host");
  p.hostport = std::string(rest.substr(0, slash));
  p.name = decode(rest.substr(slash + 1));
  if (p.hostport.empty()) return bad("empty host");
  if (p.name.find('/') != std::string::npos) return bad(fmt::format("container or bucket '{}' contains '/'", p.name));
  return p;
}

Result<std::uint64_t> size_param(const std::string& url, const Parts& p, const std::string& key, std::uint64_t def,
                                 std::uint64_t min) {
  auto it = p.query.find(key);
  if (it == p.query.end()) return def;
  char* end = nullptr;
  unsigned long long v = std::strtoull(it->second.c_str(), &end, 10);
  if (it->second.empty() || *end || v < min || v > (5ull << 30))
    return invalid(fmt::format("store URL '{}': {}={} must be a byte count from {} to {} (5 GiB)", url, key, it->second,
                               min, 5ull << 30));
  return v;
}

Status no_unknown(const std::string& url, const Parts& p, std::initializer_list<const char*> known) {
  for (const auto& [k, v] : p.query) {
    bool ok = false;
    for (const char* n : known) ok = ok || k == n;
    if (!ok) return invalid(fmt::format("store URL '{}': unknown parameter '{}'; {}", url, k, kForms));
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<BlobStore>> open_store(const std::string& url) {
  if (url.starts_with("/")) return std::unique_ptr<BlobStore>(std::make_unique<LocalStore>(url));
  if (url.starts_with("local:")) {
    std::string dir = url.substr(6);
    if (!dir.starts_with("/")) return invalid(fmt::format("store URL '{}': the directory must be absolute; {}", url, kForms));
    return std::unique_ptr<BlobStore>(std::make_unique<LocalStore>(dir));
  }
  if (url.starts_with("swift://")) {
    auto p = split(url, std::string_view(url).substr(8));
    if (!p.ok()) return p.error();
    BERTH_TRY(no_unknown(url, *p, {"auth", "segment"}));
    SwiftConfig c;
    std::string auth = p->query.count("auth") ? p->query["auth"] : "/auth/v1.0";
    c.auth_url = "http://" + p->hostport + (auth.starts_with("/") ? "" : "/") + auth;
    c.user = p->user;
    c.key = p->secret;
    c.container = p->name;
    auto seg = size_param(url, *p, "segment", c.segment_bytes, 1);
    if (!seg.ok()) return seg.error();
    c.segment_bytes = *seg;
    return std::unique_ptr<BlobStore>(std::make_unique<SwiftStore>(std::move(c)));
  }
  if (url.starts_with("s3://")) {
    auto p = split(url, std::string_view(url).substr(5));
    if (!p.ok()) return p.error();
    BERTH_TRY(no_unknown(url, *p, {"region", "part"}));
    S3Config c;
    c.endpoint = "http://" + p->hostport;
    if (p->query.count("region")) c.region = p->query["region"];
    c.access_key = p->user;
    c.secret_key = p->secret;
    c.bucket = p->name;
    auto part = size_param(url, *p, "part", c.part_bytes, 5ull << 20);
    if (!part.ok()) return part.error();
    c.part_bytes = *part;
    return std::unique_ptr<BlobStore>(std::make_unique<S3Store>(std::move(c)));
  }
  return invalid(fmt::format("store URL '{}': unknown kind; {}", url, kForms));
}

}  // namespace berth::blob
