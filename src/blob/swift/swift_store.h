// blob/swift/swift_store.h — BlobStore in an OpenStack Swift container (v1 auth / tempauth).
//
// The token comes from GET <auth_url> with X-Auth-User/X-Auth-Key and is renewed when Swift
// answers 401. put() is put-if-absent (If-None-Match: *). Objects larger than `segment_bytes`
// (Swift refuses single objects over 5 GiB) are uploaded as segments to "<container>_segments"
// and joined by a Static Large Object manifest, so get() returns the whole object either way.
// Every request is retried on transport errors and 5xx with doubling backoff. All methods are
// thread-safe (each thread has its own connection); the token is shared under a mutex.
#pragma once

#include <mutex>
#include <string>

#include "blob/blob_store.h"
#include "blob/http/http_client.h"

namespace berth::blob {

struct SwiftConfig {
  std::string auth_url;   // http://127.0.0.1:8080/auth/v1.0
  std::string user;       // account:user, e.g. test:tester
  std::string key;
  std::string container = "berth";
  std::uint64_t segment_bytes = 1ull << 30;  // at most 5 GiB
  http::RetryPolicy retry;
};

class SwiftStore final : public BlobStore {
 public:
  explicit SwiftStore(SwiftConfig config) : c_(std::move(config)) {}
  Result<bool> exists(const std::string& key) override;
  Result<bool> put(const std::string& key, std::span<const std::uint8_t> data) override;
  Result<std::vector<std::uint8_t>> get(const std::string& key) override;
  std::string describe() const override;

  // Remove an object (and the segments of a large one); for tests and `berth db rm`.
  Status remove(const std::string& key);

 private:
  struct Session {
    std::string storage_url;
    std::string token;
  };
  Result<Session> session(bool renew);
  // One request against <storage_url>/<path>, authenticated, re-authenticating once on 401.
  Result<http::Response> call(const std::string& method, const std::string& path, std::span<const std::uint8_t> body,
                              std::vector<std::pair<std::string, std::string>> headers = {});
  Status ensure_containers();
  Result<bool> put_large(const std::string& key, std::span<const std::uint8_t> data);

  SwiftConfig c_;
  std::mutex mu_;
  Session session_;  // guarded by mu_
  bool containers_ready_ = false;  // guarded by mu_
};

}  // namespace berth::blob
