// berth-demo-svc — the example fleet's service. An HTTP server that:
//   GET  /healthcheck  503 while warming up, then 200 (500 after POST /fail, until POST /recover)
//   GET  /             calls every app in BERTH_DEPS (or --calls) and returns the JSON call chain
//   POST /crash        exits with status 3 at once
// It learns who and where it is from berth's environment (BERTH_ENV, BERTH_APP, BERTH_IP,
// BERTH_PORT_HTTP, BERTH_TAG, BERTH_BUILD_TYPE). It finds a dependency by name, one of two ways:
//   --resolver system (DEMO_RESOLVER=system): like any ordinary program, http://<app>:8080/ with
//     the system resolver (getaddrinfo), which berth points at its name server with the
//     environment's search domain;
//   --resolver berth (the default): the SRV record _http._tcp.<app>.<BERTH_DOMAIN> at the name
//     server BERTH_DNS; without BERTH_DNS, the addresses in BERTH_DEP_<APP>_HTTP.
// Either way, in a thin environment a dependency it does not run is found in the base one.
// SIGTERM ends it at once (also as a container's PID 1, which has no default signal actions).
#include <netdb.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "dns_lookup.h"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using nlohmann::json;

namespace {

std::string env_or(const char* name, const std::string& def) {
  const char* v = std::getenv(name);
  return v && *v ? v : def;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep))
    if (!item.empty()) out.push_back(item);
  return out;
}

std::string upper(std::string s) {
  for (auto& c : s) c = c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

struct Config {
  std::string ip = env_or("BERTH_IP", "127.0.0.1");
  std::string port = env_or("BERTH_PORT_HTTP", "8080");
  std::string app = env_or("BERTH_APP", "demo");
  std::string env = env_or("BERTH_ENV", "none");
  std::string instance = env_or("BERTH_INSTANCE", "0");
  std::string tag = env_or("BERTH_TAG", "dev");
  std::string build_type = env_or("BERTH_BUILD_TYPE", "release");
  std::string version = env_or("DEMO_VERSION", "");
  std::vector<std::string> calls = split(env_or("BERTH_DEPS", ""), ',');
  int warmup_ms = std::atoi(env_or("DEMO_WARMUP_MS", "300").c_str());
  std::string resolver = env_or("DEMO_RESOLVER", "berth");  // berth | system
  std::string dep_port = env_or("DEMO_DEP_PORT", "8080");
};

Config cfg;
std::atomic<bool> failing{false};
std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();

json call(const std::string& dep) {
  json result = {{"app", dep}};
  std::vector<std::string> addrs;
  std::string last_error;
  if (cfg.resolver == "system") {
    // What any program does: the name alone, through the system resolver.
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    int rc = getaddrinfo(dep.c_str(), cfg.dep_port.c_str(), &hints, &res);
    if (rc != 0) last_error = "getaddrinfo(" + dep + "): " + gai_strerror(rc);
    for (auto* p = res; p; p = p->ai_next) {
      char host[NI_MAXHOST];
      if (getnameinfo(p->ai_addr, p->ai_addrlen, host, sizeof host, nullptr, 0, NI_NUMERICHOST) == 0)
        addrs.push_back(std::string(host) + ":" + cfg.dep_port);
    }
    if (res) freeaddrinfo(res);
    result["resolved"] = dep + " (system resolver)";
  } else if (std::string dns = env_or("BERTH_DNS", ""); !dns.empty()) {
    std::string name = "_http._tcp." + dep + "." + env_or("BERTH_DOMAIN", "");
    addrs = demo::resolve_srv(dns, name, last_error);
    result["resolved"] = name;
  } else {
    addrs = split(env_or(("BERTH_DEP_" + upper(dep) + "_HTTP").c_str(), ""), ',');
    if (addrs.empty()) last_error = "no address for " + dep + " (BERTH_DEP_" + upper(dep) + "_HTTP unset)";
  }
  for (const auto& addr : addrs) {  // first instance that answers
    auto colon = addr.rfind(':');
    try {
      asio::io_context io;
      beast::tcp_stream stream(io);
      stream.expires_after(std::chrono::seconds(2));
      stream.connect(tcp::endpoint(asio::ip::make_address(addr.substr(0, colon)),
                                   static_cast<unsigned short>(std::stoi(addr.substr(colon + 1)))));
      http::request<http::empty_body> req(http::verb::get, "/", 11);
      req.set(http::field::host, addr);
      http::write(stream, req);
      beast::flat_buffer buf;
      http::response<http::string_body> res;
      http::read(stream, buf, res);
      auto body = json::parse(res.body(), nullptr, false);
      if (!body.is_discarded()) {
        if (result.contains("resolved")) body["resolved"] = result["resolved"];
        return body;
      }
      last_error = addr + ": response is not JSON";
    } catch (const std::exception& e) {
      last_error = addr + ": " + e.what();
    }
  }
  result["error"] = last_error;
  return result;
}

http::response<http::string_body> handle(const http::request<http::string_body>& req) {
  http::response<http::string_body> res(http::status::ok, req.version());
  res.set(http::field::content_type, "application/json");
  std::string target(req.target());
  auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
  if (target == "/healthcheck") {
    if (failing) { res.result(http::status::internal_server_error); res.body() = R"({"status":"failing"})"; }
    else if (elapsed < cfg.warmup_ms) { res.result(http::status::service_unavailable); res.body() = R"({"status":"warming up"})"; }
    else res.body() = R"({"status":"ok"})";
  } else if (target == "/fail" && req.method() == http::verb::post) {
    failing = true;
    res.body() = R"({"failing":true})";
  } else if (target == "/recover" && req.method() == http::verb::post) {
    failing = false;
    res.body() = R"({"failing":false})";
  } else if (target == "/crash" && req.method() == http::verb::post) {
    std::cerr << "crash requested" << std::endl;
    std::_Exit(3);
  } else if (target == "/") {
    json chain = {{"app", cfg.app}, {"env", cfg.env}, {"ip", cfg.ip}, {"instance", std::stoi(cfg.instance)},
                  {"tag", cfg.tag}, {"build_type", cfg.build_type}};
    if (!cfg.version.empty()) chain["version"] = cfg.version;
    json calls = json::array();
    for (const auto& d : cfg.calls) calls.push_back(call(d));
    chain["calls"] = calls;
    res.body() = chain.dump();
  } else {
    res.result(http::status::not_found);
    res.body() = R"({"error":"not found"})";
  }
  res.prepare_payload();
  return res;
}

// A connection whose request calls the dependencies (GET /: blocking calls, up to 2 s each) is
// served from then on by a thread of its own, synchronously.
void serve_blocking(tcp::socket socket, beast::flat_buffer buf, http::request<http::string_body> req) {
  beast::error_code ec;
  while (true) {
    auto res = handle(req);
    res.keep_alive(req.keep_alive());
    http::write(socket, res, ec);
    if (ec || !req.keep_alive()) break;
    req = {};
    http::read(socket, buf, req, ec);
    if (ec) break;
  }
  socket.shutdown(tcp::socket::shutdown_send, ec);
}

// Every other request (health checks above all: a platform sends thousands) is answered on the
// one thread that accepts: no thread is created per connection.
class Session : public std::enable_shared_from_this<Session> {
 public:
  explicit Session(tcp::socket socket) : socket_(std::move(socket)) {}

  void read() {
    req_ = {};
    http::async_read(socket_, buf_, req_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return self->close();
      if (self->req_.target() == "/") {
        // (The socket leaves this thread's io_context for good: the thread only blocks on it.)
        std::thread(serve_blocking, std::move(self->socket_), std::move(self->buf_), std::move(self->req_)).detach();
        return;
      }
      self->res_ = handle(self->req_);
      self->res_.keep_alive(self->req_.keep_alive());
      http::async_write(self->socket_, self->res_, [self](beast::error_code wec, std::size_t) {
        if (wec || !self->res_.keep_alive()) return self->close();
        self->read();
      });
    });
  }

 private:
  void close() {
    beast::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_send, ec);
  }

  tcp::socket socket_;
  beast::flat_buffer buf_;
  http::request<http::string_body> req_;
  http::response<http::string_body> res_;
};

void accept(tcp::acceptor& acceptor, asio::steady_timer& pause) {
  acceptor.async_accept([&](beast::error_code ec, tcp::socket socket) {
    if (!ec) {
      std::make_shared<Session>(std::move(socket))->read();
      return accept(acceptor, pause);
    }
    // Out of descriptors, say: try again a little later rather than spin.
    pause.expires_after(std::chrono::milliseconds(50));
    pause.async_wait([&](beast::error_code) { accept(acceptor, pause); });
  });
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--listen") {
      auto colon = value.rfind(':');
      cfg.ip = value.substr(0, colon);
      cfg.port = value.substr(colon + 1);
    } else if (flag == "--warmup-ms") cfg.warmup_ms = std::atoi(value.c_str());
    else if (flag == "--version") cfg.version = value;
    else if (flag == "--calls") cfg.calls = split(value, ',');
    else if (flag == "--resolver" && (value == "system" || value == "berth")) cfg.resolver = value;
    else {
      std::cerr << "usage: berth-demo-svc [--listen IP:PORT] [--warmup-ms N] [--version V] [--calls a,b] "
                   "[--resolver system|berth]\n";
      return 2;
    }
  }
  for (int sig : {SIGTERM, SIGINT}) signal(sig, [](int) { std::_Exit(0); });
  try {
    asio::io_context io(1);
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address(cfg.ip), static_cast<unsigned short>(std::stoi(cfg.port))));
    std::cerr << cfg.app << "#" << cfg.instance << " in " << cfg.env << " listening on " << cfg.ip << ":" << cfg.port
              << " (warm-up " << cfg.warmup_ms << " ms)" << std::endl;
    asio::steady_timer pause(io);
    accept(acceptor, pause);
    io.run();
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "berth-demo-svc: " << e.what() << std::endl;
    return 1;
  }
}
