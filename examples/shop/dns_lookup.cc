#include "dns_lookup.h"

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <random>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include "net/dns/wire.h"

namespace demo {
namespace asio = boost::asio;

namespace {


struct Reader {
  const std::vector<std::uint8_t>& p;
  bool ok = true;
  std::uint16_t u16(std::size_t at) {
    if (at + 2 > p.size()) { ok = false; return 0; }
    return static_cast<std::uint16_t>(p[at] << 8 | p[at + 1]);
  }
  // Name at `at` (following pointers); returns the offset after it.
  std::size_t name(std::size_t at, std::string& out) {
    std::size_t end = 0;
    int jumps = 0;
    out.clear();
    while (ok) {
      if (at >= p.size()) { ok = false; break; }
      std::uint8_t len = p[at];
      if ((len & 0xC0) == 0xC0) {
        if (!end) end = at + 2;
        if (++jumps > 16 || at + 1 >= p.size()) { ok = false; break; }
        at = static_cast<std::size_t>((len & 0x3F) << 8 | p[at + 1]);
        continue;
      }
      if (len == 0) { if (!end) end = at + 1; break; }
      if (at + 1 + len > p.size()) { ok = false; break; }
      if (!out.empty()) out += '.';
      out.append(p.begin() + static_cast<long>(at + 1), p.begin() + static_cast<long>(at + 1 + len));
      at += 1u + len;
    }
    return end;
  }
};

}  // namespace

std::vector<std::string> resolve_srv(const std::string& server, const std::string& name, std::string& error) {
  auto colon = server.rfind(':');
  asio::io_context io;
  std::uint16_t id = static_cast<std::uint16_t>(std::random_device{}());
  auto q = berth::dns::build_query(name, berth::dns::type::kSRV, id, true);
  std::vector<std::uint8_t> resp(65535);
  std::size_t n = 0;
  try {
    asio::ip::udp::endpoint ep(asio::ip::make_address(server.substr(0, colon)),
                               static_cast<unsigned short>(std::stoi(server.substr(colon + 1))));
    asio::ip::udp::socket s(io, asio::ip::udp::v4());
    s.send_to(asio::buffer(q), ep);
    timeval tv{1, 0};
    setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    n = s.receive(asio::buffer(resp));
    if (n >= 3 && (resp[2] & 0x02)) {  // truncated: ask again over TCP
      boost::beast::tcp_stream t(io);
      t.expires_after(std::chrono::seconds(2));
      t.connect(asio::ip::tcp::endpoint(ep.address(), ep.port()));
      std::array<std::uint8_t, 2> len = {static_cast<std::uint8_t>(q.size() >> 8), static_cast<std::uint8_t>(q.size())};
      asio::write(t, std::array<asio::const_buffer, 2>{asio::buffer(len), asio::buffer(q)});
      asio::read(t, asio::buffer(len));
      n = static_cast<std::size_t>(len[0] << 8 | len[1]);
      asio::read(t, asio::buffer(resp.data(), n));
    }
  } catch (const std::exception& e) {
    error = "DNS " + server + ": " + e.what();
    return {};
  }
  resp.resize(n);
  Reader r{resp};
  if (r.u16(0) != id || n < 12) { error = "DNS: bad response"; return {}; }
  int rcode = resp[3] & 0x0F;
  if (rcode != 0) { error = rcode == 3 ? "DNS: " + name + " does not exist" : "DNS: rcode " + std::to_string(rcode); return {}; }
  std::uint16_t an = r.u16(6), ns = r.u16(8), ar = r.u16(10);
  std::string owner;
  std::size_t at = r.name(12, owner) + 4;
  std::map<std::string, std::uint16_t> ports;   // target → port
  std::map<std::string, std::string> addrs;     // target → ip
  for (int i = 0; i < an + ns + ar && r.ok; ++i) {
    at = r.name(at, owner);
    std::uint16_t type = r.u16(at), rdlen = r.u16(at + 8);
    std::size_t rdata = at + 10;
    if (rdata + rdlen > resp.size()) break;
    if (type == 33 && i < an) {
      std::string target;
      r.name(rdata + 6, target);
      ports[target] = r.u16(rdata + 4);
    } else if (type == 1 && rdlen == 4) {
      addrs[owner] = std::to_string(resp[rdata]) + "." + std::to_string(resp[rdata + 1]) + "." +
                     std::to_string(resp[rdata + 2]) + "." + std::to_string(resp[rdata + 3]);
    }
    at = rdata + rdlen;
  }
  std::vector<std::string> out;
  for (const auto& [target, port] : ports)
    if (addrs.count(target)) out.push_back(addrs[target] + ":" + std::to_string(port));
  if (out.empty()) error = "DNS: no ready instance of " + name;
  return out;
}

}  // namespace demo
