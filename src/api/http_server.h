// api/http_server.h — HTTP/1.1 transport for the API (Boost.Beast).
//
// Accepts connections (plain HTTP, or HTTPS with a certificate and key), reads one request at
// a time per connection (keep-alive), hands it to Api::handle() on the same thread, writes the
// response; event streams stay open. Bodies are capped at 8 MiB, TLS handshakes at 10 s.
// Threads: everything runs on the thread that runs `io` (berth serve: a thread of its own, so
// the Api must be made with Options::loop_executor; tests may use the loop's io_context and an
// Api without). The server must be destroyed while `io` is not running.
#pragma once

#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>

#include "api/handlers.h"
#include "base/result.h"

namespace berth::api {

// PEM files for HTTPS; both empty: plain HTTP.
struct TlsFiles {
  std::string cert, key;
};

class HttpServer {
 public:
  // `listen` is "ADDR:PORT"; port 0 picks a free one (see port()).
  static Result<std::unique_ptr<HttpServer>> create(boost::asio::io_context& io, const std::string& listen, Api& api,
                                                    const TlsFiles& tls = {});
  ~HttpServer();
  unsigned short port() const;

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Split "ADDR:PORT"; error names the bad part.
Result<std::pair<std::string, unsigned short>> parse_listen(const std::string& text, const std::string& flag);

}  // namespace berth::api
