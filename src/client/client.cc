#include "client/client.h"

#include <poll.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/write.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include <fstream>

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

struct Client::Conn {
  asio::io_context io;
  std::optional<beast::tcp_stream> stream;
};

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
  auto colon = address_.rfind(':');
  if (colon == std::string::npos) return invalid(fmt::format("daemon address '{}': expected ADDR:PORT", address_));
  std::string host = address_.substr(0, colon), port = address_.substr(colon + 1);
  for (int attempt = 0; attempt < 2; ++attempt) {
    try {
      if (!conn_->stream) {
        tcp::resolver resolver(conn_->io);
        conn_->stream.emplace(conn_->io);
        conn_->stream->connect(resolver.resolve(host, port));
      }
      http::request<http::string_body> req(http::string_to_verb(method), target, 11);
      req.set(http::field::host, address_);
      req.set(http::field::content_type, "application/json");
      if (!token_.empty()) req.set(http::field::authorization, "Bearer " + token_);
      if (if_match > 0) req.set(http::field::if_match, fmt::format("\"{}\"", if_match));
      req.keep_alive(true);
      req.body() = body;
      req.prepare_payload();
      http::write(*conn_->stream, req);
      beast::flat_buffer buffer;
      http::response_parser<http::string_body> parser;
      parser.body_limit(64 * 1024 * 1024);
      http::read(*conn_->stream, buffer, parser);
      auto res = parser.release();
      if (!res.keep_alive()) conn_->stream.reset();
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
      conn_->stream.reset();
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
  auto colon = address_.rfind(':');
  if (colon == std::string::npos) return invalid(fmt::format("daemon address '{}': expected ADDR:PORT", address_));
  try {
    asio::io_context io;
    tcp::resolver resolver(io);
    tcp::socket sock(io);
    asio::connect(sock, resolver.resolve(address_.substr(0, colon), address_.substr(colon + 1)));
    std::string req = fmt::format("GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nConnection: close\r\n",
                                  target, address_);
    if (!token_.empty()) req += "Authorization: Bearer " + token_ + "\r\n";
    req += "\r\n";
    asio::write(sock, asio::buffer(req));
    std::string buf;
    bool headers_done = false;
    int status = 0;
    char chunk[16384];
    while (true) {
      pollfd p{sock.native_handle(), POLLIN, 0};
      int n = ::poll(&p, 1, static_cast<int>(tick_ms));
      if (n == 0) {
        if (!on(nullptr)) return {};
        continue;
      }
      boost::system::error_code ec;
      std::size_t got = sock.read_some(asio::buffer(chunk), ec);
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
