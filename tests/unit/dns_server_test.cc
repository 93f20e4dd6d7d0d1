// The name server's TCP side (net/dns/server.cc) on 127.0.0.1 with plain blocking sockets: a
// client that holds connections open cannot take TCP away from other clients. Reads have a 10 s
// receive timeout as their deadline; nothing sleeps.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "net/dns/server.h"

using namespace berth;

namespace {

std::uint32_t ip(const char* s) {
  in_addr a{};
  inet_pton(AF_INET, s, &a);
  return ntohl(a.s_addr);
}

std::shared_ptr<const dns::Zone> zone() {
  auto z = std::make_shared<dns::Zone>();
  auto env = std::make_shared<dns::EnvRecords>();
  env->apps["users"] = {"baseline", {ip("127.77.0.10")}, {true}, {{"http", 8080}}};
  z->envs.set("baseline", env);
  return z;
}

// users.baseline.berth.test A, id 0x645d, no EDNS (captured from dig).
const std::uint8_t kQuery[] = {0x64, 0x5d, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 'u',
                               's',  'e',  'r',  's',  0x08, 'b',  'a',  's',  'e',  'l',  'i',  'n',  'e',  0x05,
                               'b',  'e',  'r',  't',  'h',  0x04, 't',  'e',  's',  't',  0x00, 0x00, 0x01, 0x00, 0x01};

// A TCP connection to `server` from `source`; -1 if it could not connect.
int connect_from(const std::string& source, const std::string& server) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in src{};
  src.sin_family = AF_INET;
  inet_pton(AF_INET, source.c_str(), &src.sin_addr);
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  auto colon = server.rfind(':');
  inet_pton(AF_INET, server.substr(0, colon).c_str(), &dst.sin_addr);
  dst.sin_port = htons(static_cast<std::uint16_t>(std::stoi(server.substr(colon + 1))));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Sends the query and reads the answer's length prefix: true if the server answered, false if
// it closed the connection (or reset it) instead.
bool answered(int fd) {
  std::uint8_t msg[2 + sizeof kQuery] = {0, static_cast<std::uint8_t>(sizeof kQuery)};
  std::copy(std::begin(kQuery), std::end(kQuery), msg + 2);
  if (::send(fd, msg, sizeof msg, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof msg)) return false;
  std::uint8_t len[2];
  return ::recv(fd, len, 2, MSG_WAITALL) == 2;
}

}  // namespace

TEST(DnsServerTcp, OneClientHoldingConnectionsLeavesTcpToOthers) {
  auto server = dns::Server::start("127.0.0.1:0", zone());
  ASSERT_TRUE(server.ok()) << server.error().message;
  const std::string at = (*server)->address();
  std::vector<int> held;
  for (int i = 0; i < 16; ++i) {
    int fd = connect_from("127.0.0.1", at);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(answered(fd)) << "connection " << i << " of the client's 16";
    held.push_back(fd);
  }
  int over = connect_from("127.0.0.1", at);
  ASSERT_GE(over, 0);  // the kernel completes the handshake; the server then closes it
  EXPECT_FALSE(answered(over)) << "a 17th connection of one client was served";
  ::close(over);

  int other = connect_from("127.0.0.2", at);
  ASSERT_GE(other, 0);
  EXPECT_TRUE(answered(other)) << "another client was refused while one held 16 connections";
  ::close(other);

  // The client's count goes down when it closes one: a new one is served again (once the
  // server has seen the close; its order against the new accept is not fixed, so retry).
  ::close(held.back());
  held.pop_back();
  bool served = false;
  for (int attempt = 0; attempt < 1000 && !served; ++attempt) {
    int fd = connect_from("127.0.0.1", at);
    ASSERT_GE(fd, 0);
    served = answered(fd);
    ::close(fd);
  }
  EXPECT_TRUE(served);
  for (int fd : held) ::close(fd);
}
