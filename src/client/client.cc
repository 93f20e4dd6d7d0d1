#include "client/client.h"

#include <poll.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/write.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <fmt/format.h>

#include <fstream>
#include <optional>

#include "base/gzip.h"

namespace berth::client {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

std::string default_address(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("BERTH_ADDR"); env && *env) return env;
  return "127.0.0.1:7700";
}

namespace {
std::string first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return "";
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  return line.size() <= 512 ? line : "";
}
}  // namespace

std::string default_token(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* t = std::getenv("BERTH_TOKEN"); t && *t) return t;
  if (const char* f = std::getenv("BERTH_TOKEN_FILE"); f && *f) return first_line(f);
  if (const char* d = std::getenv("BERTH_DATA_DIR"); d && *d) return first_line(std::string(d) + "/admin.token");
  if (const char* h = std::getenv("HOME"); h && *h) return first_line(std::string(h) + "/.berth/admin.token");
  return "";
}

// One connection to the daemon: plain TCP, or TLS (an https:// address) verified against
// $BERTH_CACERT or the system's CAs and the host name.
struct Client::Conn {
  asio::io_context io;
  std::optional<asio::ssl::context> tls_ctx;
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls;

  bool open() const { return plain || tls; }
  void reset() {
    plain.reset();
    tls.reset();
  }
  // Throws boost::system::system_error, like the operations below.
  void connect(const Endpoint& ep) {
    reset();
    tcp::resolver resolver(io);
    auto addrs = resolver.resolve(ep.host, ep.port);
    if (!ep.tls) {
      plain.emplace(io);
      plain->connect(addrs);
      return;
    }
    if (!tls_ctx) {
      tls_ctx.emplace(asio::ssl::context::tls_client);
      tls_ctx->set_verify_mode(asio::ssl::verify_peer);
      if (const char* ca = std::getenv("BERTH_CACERT"); ca && *ca) tls_ctx->load_verify_file(ca);
      else tls_ctx->set_default_verify_paths();
    }
    tls.emplace(io, *tls_ctx);
    if (!SSL_set_tlsext_host_name(tls->native_handle(), ep.host.c_str()))
      throw boost::system::system_error(static_cast<int>(::ERR_get_error()), asio::error::get_ssl_category());
    tls->set_verify_callback(asio::ssl::host_name_verification(ep.host));
    beast::get_lowest_layer(*tls).connect(addrs);
    tls->handshake(asio::ssl::stream_base::client);
  }
  template <class F>
  auto with(F&& f) {
    if (tls) return f(*tls);
    return f(*plain);
  }
  int fd() { return tls ? beast::get_lowest_layer(*tls).socket().native_handle() : plain->socket().native_handle(); }
  // Decrypted bytes waiting: a poll() on the socket would not see them.
  bool pending() { return tls && SSL_pending(tls->native_handle()) > 0; }
};

Result<Client::Endpoint> Client::endpoint() const {
  std::string rest = address_;
  Endpoint ep;
  if (rest.rfind("https://", 0) == 0) {
    ep.tls = true;
    rest = rest.substr(8);
  } else if (rest.rfind("http://", 0) == 0) {
    rest = rest.substr(7);
  }
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  auto colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == rest.size())
    return invalid(fmt::format("daemon address '{}': expected ADDR:PORT or https://HOST:PORT", address_));
  ep.host = rest.substr(0, colon);
  ep.port = rest.substr(colon + 1);
  ep.host_port = rest;
  return ep;
}

Client::Client(std::string address, std::string token)
    : address_(std::move(address)), token_(std::move(token)), conn_(std::make_unique<Conn>()) {}
Client::~Client() = default;

Result<nlohmann::json> Client::get(const std::string& target) { return call("GET", target, ""); }
Result<nlohmann::json> Client::post(const std::string& target, const nlohmann::json& body) { return call("POST", target, body.dump()); }
Result<nlohmann::json> Client::del(const std::string& target) { return call("DELETE", target, ""); }

Result<nlohmann::json> Client::put(const std::string& target, const nlohmann::json& body) { return call("PUT", target, body.dump()); }
Result<nlohmann::json> Client::put(const std::string& target, const nlohmann::json& body, std::int64_t if_match) {
  return call("PUT", target, body.dump(), if_match);
}
Result<nlohmann::json> Client::patch(const std::string& target, const nlohmann::json& body, std::int64_t if_match) {
  return call("PATCH", target, body.dump(), if_match);
}
Result<nlohmann::json> Client::del(const std::string& target, std::int64_t if_match) {
  return call("DELETE", target, "", if_match);
}

Result<nlohmann::json> Client::call(const std::string& method, const std::string& target, const std::string& body,
                                    std::int64_t if_match) {
  auto ep = endpoint();
  if (!ep.ok()) return ep.error();
  for (int attempt = 0; attempt < 2; ++attempt) {
    try {
      if (!conn_->open()) conn_->connect(*ep);
      http::request<http::string_body> req(http::string_to_verb(method), target, 11);
      req.set(http::field::host, ep->host_port);
      req.set(http::field::content_type, "application/json");
      if (!token_.empty()) req.set(http::field::authorization, "Bearer " + token_);
      req.set(http::field::accept_encoding, "gzip");
      if (if_match > 0) req.set(http::field::if_match, fmt::format("\"{}\"", if_match));
      req.keep_alive(true);
      req.body() = body;
      req.prepare_payload();
      conn_->with([&](auto& stream) { http::write(stream, req); });
      beast::flat_buffer buffer;
      http::response_parser<http::string_body> parser;
      constexpr std::size_t kMaxBody = 64 * 1024 * 1024;
      parser.body_limit(kMaxBody);
      conn_->with([&](auto& stream) { http::read(stream, buffer, parser); });
      auto res = parser.release();
      if (!res.keep_alive()) conn_->reset();
      if (beast::iequals(res[http::field::content_encoding], "gzip")) {
        auto inflated = gunzip(res.body(), kMaxBody);
        if (!inflated.ok()) return unavailable(fmt::format("the daemon's answer to {} {}: {}", method, target, inflated.error().message));
        res.body() = std::move(inflated.value());
      }
      auto j = nlohmann::json::parse(res.body(), nullptr, false);
      int status = static_cast<int>(res.result_int());
      if (status >= 200 && status < 300) {
        if (j.is_discarded()) return internal("daemon sent a response that is not JSON");
        return j;
      }
      Error e(status == 400 ? ErrorCode::kInvalid : status == 404 ? ErrorCode::kNotFound
              : status == 409 ? ErrorCode::kConflict : status == 401 ? ErrorCode::kUnauthenticated
              : status == 403 ? ErrorCode::kForbidden : ErrorCode::kUnavailable,
              j.is_object() && j.contains("error") ? j["error"].get<std::string>() : fmt::format("HTTP {}", status));
      if (j.is_object() && j.contains("details"))
        for (const auto& d : j["details"]) e.details.push_back(d.get<std::string>());
      return e;
    } catch (const boost::system::system_error& e) {
      conn_->reset();
      // A kept-alive connection the daemon closed: retry once on a fresh one.
      if (attempt == 0 && e.code() != asio::error::connection_refused) continue;
      return unavailable(fmt::format("cannot reach the berth daemon at {}: {} (is `berth serve` running? "
                                     "set --addr or BERTH_ADDR)", address_, e.code().message()));
    }
  }
  return unavailable(fmt::format("cannot reach the berth daemon at {}", address_));
}

Status Client::stream(const std::string& target, const std::function<bool(const nlohmann::json*)>& on,
                      std::int64_t tick_ms) {
  auto ep = endpoint();
  if (!ep.ok()) return ep.error();
  try {
    Conn conn;  // a connection of its own: the stream holds it until the end
    conn.connect(*ep);
    std::string req = fmt::format("GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nConnection: close\r\n",
                                  target, ep->host_port);
    if (!token_.empty()) req += "Authorization: Bearer " + token_ + "\r\n";
    req += "\r\n";
    conn.with([&](auto& s) { asio::write(s, asio::buffer(req)); });
    std::string buf;
    bool headers_done = false;
    int status = 0;
    char chunk[16384];
    while (true) {
      pollfd p{conn.fd(), POLLIN, 0};
      int n = conn.pending() ? 1 : ::poll(&p, 1, static_cast<int>(tick_ms));
      if (n == 0) {
        if (!on(nullptr)) return {};
        continue;
      }
      boost::system::error_code ec;
      std::size_t got = conn.with([&](auto& s) { return s.read_some(asio::buffer(chunk), ec); });
      if (ec) {
        if (!headers_done || status != 200) {
          auto j = nlohmann::json::parse(buf.substr(std::min(buf.size(), buf.find("\r\n\r\n") + 4)), nullptr, false);
          std::string msg = j.is_object() && j.contains("error") ? j["error"].get<std::string>() : fmt::format("HTTP {}", status);
          return Error(status == 401 ? ErrorCode::kUnauthenticated : status == 403 ? ErrorCode::kForbidden
                       : status == 404 ? ErrorCode::kNotFound : status == 400 ? ErrorCode::kInvalid
                                                                               : ErrorCode::kUnavailable, msg);
        }
        return unavailable(fmt::format("the event stream from {} ended: {}", address_, ec.message()));
      }
      buf.append(chunk, got);
      if (buf.size() > (8u << 20)) return unavailable("the event stream sent a frame over 8 MiB");
      if (!headers_done) {
        auto end = buf.find("\r\n\r\n");
        if (end == std::string::npos) continue;
        if (buf.rfind("HTTP/1.", 0) == 0 && buf.size() > 12) status = std::atoi(buf.c_str() + 9);
        if (status != 200) continue;  // the error body follows; read it until the daemon closes
        headers_done = true;
        buf.erase(0, end + 4);
      }
      for (auto end = buf.find("\n\n"); end != std::string::npos; end = buf.find("\n\n")) {
        const std::string frame = buf.substr(0, end);
        buf.erase(0, end + 2);
        for (std::size_t i = 0; i < frame.size();) {
          auto nl = frame.find('\n', i);
          if (nl == std::string::npos) nl = frame.size();
          std::string_view line(frame.data() + i, nl - i);
          if (line.rfind("data: ", 0) == 0) {
            auto j = nlohmann::json::parse(line.substr(6), nullptr, false);
            if (!j.is_discarded() && !on(&j)) return {};
          }
          i = nl + 1;
        }
      }
    }
  } catch (const boost::system::system_error& e) {
    return unavailable(fmt::format("cannot reach the berth daemon at {}: {} (is `berth serve` running? set --addr or "
                                   "BERTH_ADDR)", address_, e.code().message()));
  }
}

}  // namespace berth::client
