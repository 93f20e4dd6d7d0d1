#include "api/http_server.h"

#include <array>
#include <chrono>
#include <deque>
#include <optional>
#include <type_traits>
#include <utility>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <fmt/format.h>

namespace berth::api {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

Result<std::pair<std::string, unsigned short>> parse_listen(const std::string& text, const std::string& flag) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos)
    return invalid(fmt::format("{} '{}': expected ADDR:PORT, e.g. 127.0.0.1:7700", flag, text));
  std::string host = text.substr(0, colon);
  std::string port_text = text.substr(colon + 1);
  char* end = nullptr;
  long port = std::strtol(port_text.c_str(), &end, 10);
  if (port_text.empty() || *end || port < 0 || port > 65535)
    return invalid(fmt::format("{} '{}': port must be 0-65535, not '{}'", flag, text, port_text));
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  if (ec) return invalid(fmt::format("{} '{}': '{}' is not an IP address", flag, text, host));
  return std::make_pair(host, static_cast<unsigned short>(port));
}

namespace {

// One connection: plain TCP (Stream = beast::tcp_stream) or TLS (beast::ssl_stream of one).
constexpr std::uint64_t kMaxBody = 8 * 1024 * 1024;
constexpr std::uint32_t kMaxHeader = 64 * 1024;
constexpr auto kIdle = std::chrono::seconds(60);
constexpr std::size_t kMaxConnections = 512;  // beyond this, new connections are closed at once

template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;
  using std::enable_shared_from_this<Session<Stream>>::shared_from_this;

 public:
  Session(tcp::socket socket, Api& api, std::shared_ptr<std::size_t> live) requires(!kTls)
      : stream_(std::move(socket)), api_(api), live_(std::move(live)) { ++*live_; }
  Session(tcp::socket socket, asio::ssl::context& tls, Api& api, std::shared_ptr<std::size_t> live) requires(kTls)
      : stream_(std::move(socket), tls), api_(api), live_(std::move(live)) { ++*live_; }
  ~Session() { --*live_; }
  void run() {
    if constexpr (kTls) {
      // The handshake is an untrusted peer's input too: bounded in time.
      beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(10));
      stream_.async_handshake(asio::ssl::stream_base::server, [self = shared_from_this()](beast::error_code ec) {
        if (ec) return self->close();
        beast::get_lowest_layer(self->stream_).expires_never();
        self->read();
      });
    } else {
      read();
    }
  }

 private:
  void read() {
    parser_.emplace();
    parser_->body_limit(kMaxBody);
    parser_->header_limit(kMaxHeader);
    // A connection that sends nothing (or too slowly) is closed: idle clients must not hold
    // the daemon's descriptors. The handler's time does not count.
    beast::get_lowest_layer(stream_).expires_after(kIdle);
    http::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return self->refuse(ec);
      beast::get_lowest_layer(self->stream_).expires_never();
      self->serve();
    });
  }

  // A request that could not be read: say why when it was the request's fault, then close.
  void refuse(const beast::error_code& ec) {
    int status = 0;
    std::string why;
    if (ec == http::error::body_limit) status = 413, why = fmt::format("request body larger than {} bytes", kMaxBody);
    else if (ec == http::error::header_limit) status = 431, why = fmt::format("request headers larger than {} bytes", kMaxHeader);
    else if (ec.category() == beast::error_code(http::error::bad_method).category() && ec != http::error::end_of_stream &&
             ec != http::error::partial_message)
      status = 400, why = "malformed HTTP request: " + ec.message();
    if (!status) return close();
    const std::string body = nlohmann::json{{"error", why}, {"code", status == 400 ? "invalid" : "too_large"}}.dump();
    auto text = std::make_shared<std::string>(fmt::format(
        "HTTP/1.1 {} {}\r\nServer: berth\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        status, status == 413 ? "Payload Too Large" : status == 431 ? "Request Header Fields Too Large" : "Bad Request",
        body.size(), body));
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(5));
    asio::async_write(stream_, asio::buffer(*text), [self = shared_from_this(), text](beast::error_code, std::size_t) {
      self->close();
    });
  }

  void serve() {
    auto req = parser_->release();
    auto header = [&](http::field f) { return std::string(req[f]); };
    Request r{std::string(req.method_string()), std::string(req.target()), std::move(req.body()),
              header(http::field::authorization), header(http::field::if_match), header(http::field::origin),
              header(http::field::host), header(http::field::content_type), header(http::field::accept_encoding)};
    // The next request on this connection is read once this one is answered (maybe later).
    api_.handle(r, [self = shared_from_this(), version = req.version(), keep_alive = req.keep_alive()](Response out) {
      if (out.stream) return self->start_stream(std::move(out.stream));
      auto res = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(out.status), version);
      res->set(http::field::server, "berth");
      res->set(http::field::content_type, out.content_type.empty() ? "application/json" : out.content_type);
      res->set(http::field::cache_control, out.cache_control.empty() ? "no-store" : out.cache_control);
      res->set("X-Content-Type-Options", "nosniff");
      if (out.content_type.rfind("text/html", 0) == 0) {
        // The page runs only its own scripts and talks only to this daemon; no framing.
        res->set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'");
        res->set("X-Frame-Options", "DENY");
      }
      if (!out.etag.empty()) res->set(http::field::etag, out.etag);
      if (!out.content_encoding.empty()) res->set(http::field::content_encoding, out.content_encoding);
      if (!out.content_encoding.empty() || out.body.size() >= 1024) res->set(http::field::vary, "Accept-Encoding");
      res->keep_alive(keep_alive);
      res->body() = std::move(out.body);
      res->prepare_payload();
      http::async_write(self->stream_, *res, [self, res](beast::error_code ec, std::size_t) {
        if (ec || !res->keep_alive()) return self->close();
        self->read();
      });
    });
  }

  void close() {
    beast::error_code ec;
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_both, ec);
  }

  // ---- server-sent events: headers, then frames until either side closes ----
  void start_stream(std::function<std::function<void()>(Response::Send)> open) {
    beast::get_lowest_layer(stream_).expires_never();
    push("HTTP/1.1 200 OK\r\nServer: berth\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
         "Connection: close\r\n\r\n");
    std::weak_ptr<Session> weak = shared_from_this();
    on_close_ = open([weak](const std::string& frame) {
      auto self = weak.lock();
      return self && self->push(frame);
    });
    // The client closing (or sending anything) ends the stream.
    stream_.async_read_some(asio::buffer(sink_), [self = shared_from_this()](beast::error_code, std::size_t) {
      self->end_stream();
    });
    heartbeat();
  }
  // A comment every 15 s keeps proxies from closing an idle stream and finds dead peers.
  void heartbeat() {
    if (ended_) return;
    timer_.expires_after(std::chrono::seconds(15));
    timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || self->ended_) return;
      self->push(": keep-alive\n\n");
      self->heartbeat();
    });
  }
  bool push(const std::string& data) {
    if (ended_) return false;
    // A client that does not read is not buffered for without end.
    if (queued_bytes_ + data.size() > (4u << 20)) {
      end_stream();
      return false;
    }
    queue_.push_back(data);
    queued_bytes_ += data.size();
    if (!writing_) write_next();
    return true;
  }
  void write_next() {
    if (queue_.empty() || ended_) {
      writing_ = false;
      return;
    }
    writing_ = true;
    asio::async_write(stream_, asio::buffer(queue_.front()), [self = shared_from_this()](beast::error_code ec, std::size_t) {
      self->queued_bytes_ -= self->queue_.front().size();
      self->queue_.pop_front();
      if (ec) return self->end_stream();
      self->write_next();
    });
  }
  void end_stream() {
    if (ended_) return;
    ended_ = true;
    timer_.cancel();
    if (on_close_) std::exchange(on_close_, nullptr)();
    close();
  }

  Stream stream_;
  beast::flat_buffer buffer_;
  // Streaming state (the transport's thread, like everything here).
  std::deque<std::string> queue_;
  std::size_t queued_bytes_ = 0;
  bool writing_ = false, ended_ = false;
  std::function<void()> on_close_;
  std::array<char, 256> sink_{};
  asio::steady_timer timer_{stream_.get_executor()};
  std::optional<http::request_parser<http::string_body>> parser_;
  Api& api_;
  std::shared_ptr<std::size_t> live_;  // sessions alive (the server's count)
};

}  // namespace

struct HttpServer::Impl {
  Impl(asio::io_context& io, Api& a) : acceptor(io), retry(io), api(a) {}
  void accept() {
    acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (ec) {
        // Out of descriptors (or another accept error): wait a little instead of spinning.
        retry.expires_after(std::chrono::milliseconds(100));
        retry.async_wait([this](beast::error_code wec) {
          if (!wec) accept();
        });
        return;
      }
      if (*live >= kMaxConnections) {
        beast::error_code ignored;
        socket.close(ignored);  // at the cap: the next connection waits for one to end
      } else if (tls) {
        std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(std::move(socket), *tls, api, live)->run();
      } else {
        std::make_shared<Session<beast::tcp_stream>>(std::move(socket), api, live)->run();
      }
      accept();
    });
  }
  tcp::acceptor acceptor;
  asio::steady_timer retry;
  std::shared_ptr<std::size_t> live = std::make_shared<std::size_t>(0);
  Api& api;
  std::optional<asio::ssl::context> tls;
};

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpServer::~HttpServer() {
  beast::error_code ec;
  impl_->acceptor.close(ec);
}

unsigned short HttpServer::port() const { return impl_->acceptor.local_endpoint().port(); }

Result<std::unique_ptr<HttpServer>> HttpServer::create(asio::io_context& io, const std::string& listen, Api& api,
                                                       const TlsFiles& tls) {
  auto addr = parse_listen(listen, "--listen");
  if (!addr.ok()) return addr.error();
  auto impl = std::make_unique<Impl>(io, api);
  if (!tls.cert.empty() || !tls.key.empty()) {
    if (tls.cert.empty() || tls.key.empty()) return invalid("TLS needs both --tls-cert and --tls-key");
    impl->tls.emplace(asio::ssl::context::tls_server);
    auto& ctx = *impl->tls;
    ctx.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                    asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1 |
                    asio::ssl::context::single_dh_use);
    beast::error_code tls_ec;
    ctx.use_certificate_chain_file(tls.cert, tls_ec);
    if (tls_ec) return invalid(fmt::format("--tls-cert {}: {} (a PEM certificate chain)", tls.cert, tls_ec.message()));
    ctx.use_private_key_file(tls.key, asio::ssl::context::pem, tls_ec);
    if (tls_ec) return invalid(fmt::format("--tls-key {}: {} (the PEM private key of the certificate)", tls.key,
                                           tls_ec.message()));
  }
  beast::error_code ec;
  tcp::endpoint ep(asio::ip::make_address(addr->first), addr->second);
  impl->acceptor.open(ep.protocol(), ec);
  if (!ec) impl->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(ep, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return unavailable(fmt::format("cannot listen on {}: {}", listen, ec.message()));
  impl->accept();
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

}  // namespace berth::api
