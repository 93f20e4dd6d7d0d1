// The daemon's HTTP/TCP prober (health/asio_prober.cc) against hostile health endpoints served on
// 127.0.0.1 by the test itself, on one io_context run by the test (no threads, no sleeps); and
// against a server on a thread of its own while the prober's thread is blocked on purpose.
#include <sys/socket.h>

#include <chrono>
#include <optional>
#include <thread>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "health/prober.h"

using namespace berth;
using testing::HasSubstr;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

// Accepts one connection, reads the request head, then sends `answer` (and keeps the
// connection open afterwards when `hold` is set).
class Endpoint {
 public:
  Endpoint(asio::io_context& io, std::string answer, bool hold)
      : acceptor_(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)), socket_(io), answer_(std::move(answer)),
        hold_(hold) {
    acceptor_.async_accept(socket_, [this](const boost::system::error_code& ec) {
      if (ec) return;
      asio::async_read_until(socket_, request_, "\r\n\r\n", [this](const boost::system::error_code& re, std::size_t) {
        if (re) return;
        asio::async_write(socket_, asio::buffer(answer_), [this](const boost::system::error_code&, std::size_t) {
          if (!hold_) socket_.close();
        });
      });
    });
  }
  int port() const { return acceptor_.local_endpoint().port(); }

 private:
  tcp::acceptor acceptor_;
  tcp::socket socket_;
  asio::streambuf request_;
  std::string answer_;
  bool hold_;
};

// A server on a thread of its own: accepts one connection and at once writes `answer` (nothing
// when empty: it never answers), without waiting for the request; then holds the connection
// until the prober closes it.
class ServerThread {
 public:
  explicit ServerThread(std::string answer)
      : acceptor_(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)), answer_(std::move(answer)) {
    thread_ = std::thread([this] {
      tcp::socket s(io_);
      boost::system::error_code ec;
      acceptor_.accept(s, ec);
      if (ec) return;
      if (!answer_.empty()) asio::write(s, asio::buffer(answer_), ec);
      char buf[512];
      while (!ec) s.read_some(asio::buffer(buf), ec);
    });
  }
  ~ServerThread() {
    // A connection ends when the prober closes it; an accept still waiting (a test that failed
    // before connecting) ends here.
    ::shutdown(acceptor_.native_handle(), SHUT_RDWR);
    thread_.join();
  }
  int port() const { return acceptor_.local_endpoint().port(); }

 private:
  asio::io_context io_;
  tcp::acceptor acceptor_;
  std::string answer_;
  std::thread thread_;
};

// Probes `port` with `timeout_ms`, having blocked the prober's thread for `block_ms` right after
// the probe began (as the daemon's loop is, forking a thousand instances).
health::ProbeResult probe_blocked(int port, Millis timeout_ms, Millis block_ms) {
  asio::io_context io;
  health::AsioProber prober(io);
  health::ProbeTarget t;
  t.spec.type = model::HealthType::kHttp;
  t.spec.path = "/healthcheck";
  t.spec.expect = {200};
  t.spec.timeout_ms = timeout_ms;
  t.ip = "127.0.0.1";
  t.port = port;
  std::optional<health::ProbeResult> result;
  auto handle = prober.probe(t, [&](health::ProbeResult r) { result = std::move(r); });
  asio::post(io, [block_ms] { std::this_thread::sleep_for(std::chrono::milliseconds(block_ms)); });
  while (!result && io.run_one() > 0) {
  }
  EXPECT_TRUE(result.has_value());
  return result.value_or(health::ProbeResult{});
}

health::ProbeResult probe_http(asio::io_context& io, int port) {
  health::AsioProber prober(io);
  health::ProbeTarget t;
  t.spec.type = model::HealthType::kHttp;
  t.spec.path = "/healthcheck";
  t.spec.expect = {200};
  t.spec.timeout_ms = 30'000;  // never reached: each answer below ends the probe by itself
  t.ip = "127.0.0.1";
  t.port = port;
  std::optional<health::ProbeResult> result;
  auto handle = prober.probe(t, [&](health::ProbeResult r) { result = std::move(r); });
  while (!result && io.run_one() > 0) {
  }
  EXPECT_TRUE(result.has_value());
  return result.value_or(health::ProbeResult{});
}

}  // namespace

TEST(AsioProber, AnAnswerWithoutALineEndIsRefusedAfterABoundedRead) {
  // 8 MiB without CRLF, the connection held open: before, the buffer grew without bound (and the
  // probe then only ended at its timeout). The status line is read from at most 4 KiB.
  asio::io_context io;
  Endpoint endpoint(io, std::string(8 << 20, 'x'), true);
  auto r = probe_http(io, endpoint.port());
  EXPECT_FALSE(r.ok);
  EXPECT_FALSE(r.inconclusive);
  EXPECT_THAT(r.detail, HasSubstr("GET /healthcheck → no HTTP status line in the first 4 KiB"));
}

TEST(AsioProber, StatusLineDecidesAndGarbageIsNotHttp) {
  asio::io_context io;
  Endpoint ok(io, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false);
  EXPECT_EQ(probe_http(io, ok.port()).detail, "GET /healthcheck → 200");
  Endpoint down(io, "HTTP/1.0 503 Service Unavailable\r\n\r\n", false);
  auto r = probe_http(io, down.port());
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.detail, "GET /healthcheck → 503");
  Endpoint garbage(io, "SSH-2.0-OpenSSH_9.2\r\n", false);
  EXPECT_EQ(probe_http(io, garbage.port()).detail, "GET /healthcheck → not an HTTP response");
  Endpoint silent(io, "", false);
  EXPECT_EQ(probe_http(io, silent.port()).detail, "GET /healthcheck → connection closed without a response");
}

TEST(AsioProber, TimeItsThreadWasBlockedDoesNotCountAgainstTheInstance) {
  // The instance answers at once, but the thread that probes it is blocked for three times the
  // timeout before it can even send the request (the answer is in the socket buffer by then).
  // That time was berth's, not the instance's: the probe passes. (It timed out before.)
  ServerThread server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  auto r = probe_blocked(server.port(), 200, 600);
  EXPECT_TRUE(r.ok) << r.detail;
  EXPECT_EQ(r.detail, "GET /healthcheck → 200");
}

TEST(AsioProber, AnInstanceThatNeverAnswersStillTimesOutAfterItsThreadWasBlocked) {
  ServerThread server("");
  auto r = probe_blocked(server.port(), 200, 600);
  EXPECT_FALSE(r.ok);
  EXPECT_FALSE(r.inconclusive);
  EXPECT_THAT(r.detail, HasSubstr("GET /healthcheck → timed out after 200ms"));
  EXPECT_THAT(r.detail, HasSubstr("berth was busy"));  // (the block is said)
}

TEST(AsioProber, AnInstanceThatNeverAnswersTimesOut) {
  ServerThread server("");
  auto r = probe_blocked(server.port(), 200, 0);
  EXPECT_FALSE(r.ok);
  EXPECT_THAT(r.detail, HasSubstr("GET /healthcheck → timed out after 200ms"));
}
