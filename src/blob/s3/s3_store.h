// blob/s3/s3_store.h — BlobStore in an S3 bucket: path-style URLs, AWS Signature Version 4.
//
// Works against AWS-compatible endpoints including OpenStack Swift's s3api middleware. The
// bucket is created on first write if missing. Objects larger than `part_bytes` are sent as a
// multipart upload (S3 refuses single PUTs over 5 GiB). Requests are retried on transport errors
// and 5xx with doubling backoff. All methods are thread-safe (a connection per thread).
#pragma once

#include <mutex>
#include <string>

#include "blob/blob_store.h"
#include "blob/http/http_client.h"

namespace berth::blob {

struct S3Config {
  std::string endpoint;  // http://127.0.0.1:8080 (scheme, host, port; no path)
  std::string region = "us-east-1";
  std::string access_key;
  std::string secret_key;
  std::string bucket = "berth";
  std::uint64_t part_bytes = 1ull << 30;  // at most 5 GiB; at least 5 MiB except the last part
  http::RetryPolicy retry;
};

class S3Store final : public BlobStore {
 public:
  explicit S3Store(S3Config config);
  Result<bool> exists(const std::string& key) override;
  Result<bool> put(const std::string& key, std::span<const std::uint8_t> data) override;
  Result<std::vector<std::uint8_t>> get(const std::string& key) override;
  std::string describe() const override;
  Status remove(const std::string& key);

  // The Authorization header value for a request (exposed for the SigV4 test vector).
  struct Signed {
    std::string authorization;
    std::string amz_date;
    std::string payload_hash;
  };
  static Signed sign(const S3Config& c, const std::string& method, const std::string& host, const std::string& path,
                     const std::string& query, std::span<const std::uint8_t> body, const std::string& amz_date);

 private:
  Result<http::Response> call(const std::string& method, const std::string& key, const std::string& query,
                              std::span<const std::uint8_t> body);
  Status ensure_bucket();
  Result<bool> put_multipart(const std::string& key, std::span<const std::uint8_t> data);

  S3Config c_;
  std::string host_;  // host[:port] of the endpoint, as signed
  std::mutex mu_;
  bool bucket_ready_ = false;  // guarded by mu_
};

}  // namespace berth::blob
