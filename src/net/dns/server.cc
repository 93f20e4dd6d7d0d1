#include "net/dns/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <fmt/format.h>

namespace berth::dns {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {
constexpr int kBatch = 64;
constexpr std::size_t kUdpMax = 4096;  // bigger than any query we accept
constexpr int kMaxTcpConnections = 256;
// One client (source address) gets at most this many: a client holding connections open must
// not take TCP fallback away from everyone else.
constexpr int kMaxTcpConnectionsPerClient = 16;
constexpr auto kTcpIdle = std::chrono::seconds(10);
constexpr auto kAcceptBackoff = std::chrono::milliseconds(100);
}  // namespace

// ---- TCP --------------------------------------------------------------------------------------

struct Server::Tcp {
  // Declared before io: the sessions still queued in io are destroyed with it and count down.
  int connections = 0;
  std::map<asio::ip::address, int> per_client;
  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  asio::steady_timer accept_timer{io};
  std::thread thread;
  Server* server = nullptr;

  class Session : public std::enable_shared_from_this<Session> {
   public:
    Session(Tcp& t, tcp::socket s, asio::ip::address client)
        : t_(t), socket_(std::move(s)), timer_(t.io), client_(std::move(client)) {}
    ~Session() {
      --t_.connections;
      if (auto it = t_.per_client.find(client_); it != t_.per_client.end() && --it->second == 0) t_.per_client.erase(it);
    }
    void start() { read_length(); }

   private:
    // The connection is over: without the idle timer's reference the session (and its count
    // against the limits) goes at once, not when the timer would have fired.
    void end() {
      boost::system::error_code ignored;
      timer_.cancel();
      socket_.close(ignored);
    }
    void arm() {
      timer_.expires_after(kTcpIdle);
      timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
        if (!ec) self->socket_.close();
      });
    }
    void read_length() {
      arm();
      asio::async_read(socket_, asio::buffer(len_), [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
        if (ec) return self->end();
        std::size_t n = static_cast<std::size_t>(self->len_[0] << 8 | self->len_[1]);
        if (n < kHeaderSize) return self->end();  // not a DNS message: close
        self->in_.resize(n);
        asio::async_read(self->socket_, asio::buffer(self->in_), [self](boost::system::error_code ec2, std::size_t) {
          if (ec2) return self->end();
          self->serve();
        });
      });
    }
    void serve() {
      out_.resize(2 + 65535);
      auto zone = t_.server->zone_.load();
      std::size_t n = respond(*zone, in_, std::span<std::uint8_t>(out_).subspan(2), true);
      if (n == 0) return read_length();
      out_[0] = static_cast<std::uint8_t>(n >> 8);
      out_[1] = static_cast<std::uint8_t>(n);
      asio::async_write(socket_, asio::buffer(out_.data(), n + 2), [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
        if (ec) return self->end();
        self->read_length();
      });
    }
    Tcp& t_;
    tcp::socket socket_;
    asio::steady_timer timer_;
    asio::ip::address client_;
    std::array<std::uint8_t, 2> len_{};
    std::vector<std::uint8_t> in_, out_;
  };

  void accept() {
    acceptor.async_accept([this](boost::system::error_code ec, tcp::socket s) {
      if (ec == asio::error::operation_aborted) return;
      if (ec) {
        // Out of descriptors or memory: accepting again at once would spin. Pending clients wait
        // in the listen queue meanwhile.
        accept_timer.expires_after(kAcceptBackoff);
        accept_timer.async_wait([this](const boost::system::error_code& te) {
          if (!te) accept();
        });
        return;
      }
      boost::system::error_code pe;
      auto peer = s.remote_endpoint(pe);
      // Over a limit the connection is closed at once (the socket goes out of scope).
      if (!pe && connections < kMaxTcpConnections) {
        int& mine = per_client[peer.address()];
        if (mine < kMaxTcpConnectionsPerClient) {
          ++mine;
          ++connections;
          std::make_shared<Session>(*this, std::move(s), peer.address())->start();
        }
      }
      accept();
    });
  }
};

// ---- server -----------------------------------------------------------------------------------

Result<std::unique_ptr<Server>> Server::start(const std::string& listen, std::shared_ptr<const Zone> zone) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) return invalid(fmt::format("--dns-listen '{}': expected ADDR:PORT", listen));
  std::string host = listen.substr(0, colon);
  char* end = nullptr;
  long port = std::strtol(listen.c_str() + colon + 1, &end, 10);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  if (*end || port < 0 || port > 65535 || inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1)
    return invalid(fmt::format("--dns-listen '{}': expected IPv4ADDR:PORT, e.g. 127.0.0.1:5353", listen));
  sa.sin_port = htons(static_cast<std::uint16_t>(port));

  std::unique_ptr<Server> s(new Server());
  s->zone_.store(std::move(zone));
  s->tcp_ = std::make_unique<Tcp>();
  s->tcp_->server = s.get();
  // UDP and TCP share one port number. With port 0, take a free TCP port first and then the
  // same UDP port; if that UDP port is busy, try again with another.
  const auto address = asio::ip::make_address(host);
  std::string last_error;
  for (int attempt = 0; attempt < (port == 0 ? 20 : 1); ++attempt) {
    boost::system::error_code ec;
    auto& acc = s->tcp_->acceptor;
    if (acc.is_open()) acc.close(ec);
    acc.open(tcp::v4(), ec);
    if (!ec) acc.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acc.bind(tcp::endpoint(address, static_cast<unsigned short>(port)), ec);
    if (!ec) acc.listen(64, ec);
    if (ec) {
      last_error = fmt::format("cannot serve DNS on TCP {}: {}", listen, ec.message());
      continue;
    }
    sa.sin_port = htons(acc.local_endpoint().port());
    if (s->udp_fd_ >= 0) close(s->udp_fd_);
    s->udp_fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s->udp_fd_ < 0) return unavailable(fmt::format("DNS socket: {}", std::strerror(errno)));
    if (bind(s->udp_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      last_error = fmt::format("cannot serve DNS on UDP {}:{}: {}", host, ntohs(sa.sin_port), std::strerror(errno));
      close(s->udp_fd_);
      s->udp_fd_ = -1;
      continue;
    }
    last_error.clear();
    break;
  }
  if (!last_error.empty()) return unavailable(last_error);
  int big = 4 << 20;
  setsockopt(s->udp_fd_, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  setsockopt(s->udp_fd_, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
  timeval tv{0, 100'000};  // wake up to notice stop_
  setsockopt(s->udp_fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  s->address_ = fmt::format("{}:{}", host, ntohs(sa.sin_port));
  s->tcp_->accept();
  s->tcp_->thread = std::thread([t = s->tcp_.get()] { t->io.run(); });
  s->udp_thread_ = std::thread([p = s.get()] { p->udp_loop(); });
  return s;
}

Server::~Server() {
  stop_ = true;
  if (tcp_) {
    tcp_->io.stop();
    if (tcp_->thread.joinable()) tcp_->thread.join();
  }
  if (udp_thread_.joinable()) udp_thread_.join();
  if (udp_fd_ >= 0) close(udp_fd_);
}

void Server::udp_loop() {
  std::vector<std::array<std::uint8_t, kUdpMax>> in(kBatch), out(kBatch);
  std::vector<sockaddr_storage> from(kBatch);
  std::vector<iovec> in_iov(kBatch), out_iov(kBatch);
  std::vector<mmsghdr> in_msgs(kBatch), out_msgs(kBatch);
  for (int i = 0; i < kBatch; ++i) {
    in_iov[static_cast<std::size_t>(i)] = {in[static_cast<std::size_t>(i)].data(), kUdpMax};
  }
  while (!stop_.load(std::memory_order_relaxed)) {
    for (std::size_t i = 0; i < kBatch; ++i) {
      in_msgs[i] = {};
      in_msgs[i].msg_hdr.msg_iov = &in_iov[i];
      in_msgs[i].msg_hdr.msg_iovlen = 1;
      in_msgs[i].msg_hdr.msg_name = &from[i];
      in_msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
    }
    // Block for the first datagram, then take whatever else is already queued.
    int n = recvmmsg(udp_fd_, in_msgs.data(), kBatch, MSG_WAITFORONE, nullptr);
    if (n <= 0) continue;  // timeout (to check stop_) or EINTR
    auto zone = zone_.load();
    unsigned replies = 0;
    for (std::size_t i = 0; i < static_cast<std::size_t>(n); ++i) {
      std::size_t size = respond(*zone, std::span<const std::uint8_t>(in[i].data(), in_msgs[i].msg_len), out[replies], false);
      if (size == 0) continue;
      out_iov[replies] = {out[replies].data(), size};
      out_msgs[replies] = {};
      out_msgs[replies].msg_hdr.msg_iov = &out_iov[replies];
      out_msgs[replies].msg_hdr.msg_iovlen = 1;
      out_msgs[replies].msg_hdr.msg_name = &from[i];
      out_msgs[replies].msg_hdr.msg_namelen = in_msgs[i].msg_hdr.msg_namelen;
      ++replies;
    }
    unsigned sent = 0;
    while (sent < replies) {
      int r = sendmmsg(udp_fd_, out_msgs.data() + sent, replies - sent, 0);
      if (r <= 0) break;  // a reply we cannot send is dropped, as UDP would
      sent += static_cast<unsigned>(r);
    }
  }
}

}  // namespace berth::dns
