// DNS wire format and answers: queries captured from dig 9.18, every rcode path, compression,
// EDNS0, truncation, hostile packets.
#include <arpa/inet.h>
#include <strings.h>

#include <map>

#include <gtest/gtest.h>

#include "net/dns/zone.h"

using namespace berth::dns;

namespace {

std::vector<std::uint8_t> hex(const std::string& h) {
  std::vector<std::uint8_t> out;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2) out.push_back(static_cast<std::uint8_t>(std::stoi(h.substr(i, 2), nullptr, 16)));
  return out;
}

// Captured with a UDP listener from `dig @127.0.0.1 -p 5398 ...` (BIND 9.18, Debian 12).
const auto kDigA = hex("4aec0120000100000000000105757365727308626173656c696e650562657274680474657374000001000100002904d000000000000c000a0008b72711f9de2a04d9");  // +cookie
const auto kDigMixedCaseNoEdns = hex("645d0120000100000000000005557345725308426173656c696e6505426572746804546573740000010001");
const auto kDigSrv = hex("718f01200001000000000001055f68747470045f746370066f726465727306626574612d370562657274680474657374000021000100002904d0000000000000");
const auto kDigAaaaNoRec = hex("45f400200001000000000001013005757365727308626173656c696e65056265727468047465737400001c000100002904d0000000000000");

std::uint32_t ip(const char* s) {
  in_addr a{};
  inet_pton(AF_INET, s, &a);
  return ntohl(a.s_addr);
}

// A response decoded by an independent reader (test side), following compression pointers.
struct Rr {
  std::string name;
  std::uint16_t type = 0;
  std::uint32_t ttl = 0;
  std::string data;  // A: dotted; SRV: "port target"; SOA: "mname minimum"; NS: host
};
struct Decoded {
  std::uint16_t id = 0, qd = 0;
  bool qr = false, aa = false, tc = false, rd = false, ra = false;
  int rcode = -1;
  std::string qname;
  std::vector<Rr> an, ns, ar;
  bool opt = false;
  std::uint8_t opt_ext_rcode = 0;
};

std::string read_name(const std::vector<std::uint8_t>& p, std::size_t& at) {
  std::string out;
  std::size_t pos = at;
  bool jumped = false;
  for (int guard = 0; guard < 64; ++guard) {
    std::uint8_t len = p.at(pos);
    if ((len & 0xC0) == 0xC0) {
      if (!jumped) at = pos + 2;
      jumped = true;
      pos = static_cast<std::size_t>((len & 0x3F) << 8 | p.at(pos + 1));
      continue;
    }
    if (len == 0) {
      if (!jumped) at = pos + 1;
      return out;
    }
    if (!out.empty()) out += '.';
    out.append(p.begin() + static_cast<long>(pos + 1), p.begin() + static_cast<long>(pos + 1 + len));
    pos += 1u + len;
  }
  throw std::runtime_error("name loop");
}

Decoded decode(const std::vector<std::uint8_t>& p) {
  Decoded d;
  auto u16 = [&](std::size_t at) { return static_cast<std::uint16_t>(p.at(at) << 8 | p.at(at + 1)); };
  d.id = u16(0);
  d.qr = p[2] & 0x80;
  d.aa = p[2] & 0x04;
  d.tc = p[2] & 0x02;
  d.rd = p[2] & 0x01;
  d.ra = p[3] & 0x80;
  d.rcode = p[3] & 0x0F;
  d.qd = u16(4);
  std::size_t at = 12;
  if (d.qd) {
    d.qname = read_name(p, at);
    at += 4;
  }
  int counts[3] = {u16(6), u16(8), u16(10)};
  std::vector<Rr>* sections[3] = {&d.an, &d.ns, &d.ar};
  for (int s = 0; s < 3; ++s)
    for (int i = 0; i < counts[s]; ++i) {
      Rr r;
      r.name = read_name(p, at);
      r.type = u16(at);
      r.ttl = static_cast<std::uint32_t>(u16(at + 4) << 16 | u16(at + 6));
      std::size_t rdlen = u16(at + 8), rd = at + 10;
      if (r.type == 41) {
        d.opt = true;
        d.opt_ext_rcode = p.at(at + 4);
      } else if (r.type == type::kA) {
        r.data = std::to_string(p[rd]) + "." + std::to_string(p[rd + 1]) + "." + std::to_string(p[rd + 2]) + "." + std::to_string(p[rd + 3]);
      } else if (r.type == type::kSRV) {
        std::size_t t = rd + 6;
        r.data = std::to_string(u16(rd + 4)) + " " + read_name(p, t);
      } else if (r.type == type::kSOA) {
        std::size_t t = rd;
        std::string mname = read_name(p, t);
        read_name(p, t);
        r.data = mname + " " + std::to_string(static_cast<std::uint32_t>(u16(t + 16) << 16 | u16(t + 18)));
      } else if (r.type == type::kNS) {
        std::size_t t = rd;
        r.data = read_name(p, t);
      }
      if (r.type != 41) sections[s]->push_back(r);
      at = rd + rdlen;
    }
  EXPECT_EQ(at, p.size()) << "trailing bytes";
  return d;
}

Zone zone() {
  Zone z;
  z.ttl = 2;
  z.negative_ttl = 5;
  z.ns_ip = ip("127.0.0.1");
  auto base = std::make_shared<EnvRecords>();
  base->apps["users"] = {"baseline", {ip("127.77.0.10"), ip("127.77.0.11")}, {true, false}, {{"http", 8080}}};
  base->apps["orders"] = {"baseline", {ip("127.77.0.12")}, {true}, {{"http", 8080}, {"admin", 9000}}};
  base->apps["idle"] = {"baseline", {ip("127.77.0.13")}, {false}, {{"http", 8080}}};
  AppRecords many{"baseline", {}, {}, {{"http", 80}}};
  for (int i = 0; i < 60; ++i) {
    many.ips.push_back(ip("127.78.0.0") + static_cast<std::uint32_t>(i));
    many.ready.push_back(true);
  }
  base->apps["many"] = many;
  z.envs.set("baseline", base);
  auto beta = std::make_shared<EnvRecords>();
  beta->apps["orders"] = {"beta-7", {ip("127.77.0.20"), ip("127.77.0.21")}, {true, true}, {{"http", 8080}}};
  beta->fall_through["users"] = "baseline";
  beta->fall_through["many"] = "baseline";
  z.envs.set("beta-7", beta);
  return z;
}

std::vector<std::uint8_t> run(const Zone& z, const std::vector<std::uint8_t>& q, bool tcp = false) {
  std::vector<std::uint8_t> out(65535);
  std::size_t n = respond(z, q, out, tcp);
  out.resize(n);
  return out;
}

// A query built by hand: name, type, flags, optional EDNS.
std::vector<std::uint8_t> make_query(const std::string& name, std::uint16_t qtype, int edns_payload = -1,
                                     std::uint8_t edns_version = 0) {
  return berth::dns::build_query(name, qtype, 0x1234, false, edns_payload, edns_version);
}

}  // namespace

TEST(DnsWire, ParsesCapturedDigQueries) {
  Query q;
  ASSERT_EQ(parse_query(kDigA, q), Parse::kOk);
  EXPECT_EQ(q.id, 0x4aec);
  EXPECT_TRUE(q.rd);
  EXPECT_EQ(q.name, "users.baseline.berth.test");
  EXPECT_EQ(q.qtype, type::kA);
  EXPECT_TRUE(q.edns);
  EXPECT_EQ(q.udp_payload, 1232);
  ASSERT_EQ(parse_query(kDigMixedCaseNoEdns, q), Parse::kOk);
  EXPECT_EQ(q.name, "users.baseline.berth.test");  // lower-cased for lookup
  EXPECT_FALSE(q.edns);
  EXPECT_EQ(q.udp_payload, 512);
  ASSERT_EQ(parse_query(kDigAaaaNoRec, q), Parse::kOk);
  EXPECT_FALSE(q.rd);
  EXPECT_EQ(q.qtype, type::kAAAA);
}

TEST(DnsAnswer, ReadyInstancesOnlyWithCaseEchoedAndCompression) {
  auto z = zone();
  auto r = run(z, kDigMixedCaseNoEdns);
  auto d = decode(r);
  EXPECT_EQ(d.id, 0x645d);
  EXPECT_TRUE(d.qr);
  EXPECT_TRUE(d.aa);
  EXPECT_FALSE(d.ra);
  EXPECT_TRUE(d.rd);
  EXPECT_EQ(d.rcode, 0);
  EXPECT_EQ(d.qname, "UsErS.Baseline.Berth.Test");  // the client's own case
  ASSERT_EQ(d.an.size(), 1u);                        // users#1 is not ready
  EXPECT_EQ(d.an[0].data, "127.77.0.10");
  EXPECT_EQ(d.an[0].ttl, 2u);
  EXPECT_FALSE(d.opt);
  // The answer's owner is a pointer to the question name at offset 12.
  std::size_t answer_at = 12 + (kDigMixedCaseNoEdns.size() - 12);
  EXPECT_EQ(r[answer_at], 0xC0);
  EXPECT_EQ(r[answer_at + 1], 0x0C);
}

TEST(DnsAnswer, EdnsQueryGetsOptAndCookieIsIgnored) {
  auto d = decode(run(zone(), kDigA));
  EXPECT_EQ(d.rcode, 0);
  EXPECT_TRUE(d.opt);
  EXPECT_EQ(d.an.size(), 1u);
}

TEST(DnsAnswer, InstanceNameAnswersWhetherReadyOrNot) {
  auto d = decode(run(zone(), make_query("1.users.baseline.berth.test", type::kA)));
  ASSERT_EQ(d.an.size(), 1u);
  EXPECT_EQ(d.an[0].data, "127.77.0.11");
  EXPECT_EQ(decode(run(zone(), make_query("2.users.baseline.berth.test", type::kA))).rcode, 3);
  EXPECT_EQ(decode(run(zone(), make_query("01.users.baseline.berth.test", type::kA))).rcode, 3);
}

TEST(DnsAnswer, NodataWithSoaForAaaaAndForAppWithNothingReady) {
  auto d = decode(run(zone(), kDigAaaaNoRec));
  EXPECT_EQ(d.rcode, 0);
  EXPECT_TRUE(d.an.empty());
  ASSERT_EQ(d.ns.size(), 1u);
  EXPECT_EQ(d.ns[0].type, type::kSOA);
  EXPECT_EQ(d.ns[0].ttl, 5u);  // the negative TTL
  EXPECT_EQ(d.ns[0].data, "ns.berth.test 5");
  auto idle = decode(run(zone(), make_query("idle.baseline.berth.test", type::kA)));
  EXPECT_EQ(idle.rcode, 0);
  EXPECT_TRUE(idle.an.empty());
  EXPECT_EQ(idle.ns.size(), 1u);
  auto env = decode(run(zone(), make_query("baseline.berth.test", type::kA)));
  EXPECT_EQ(env.rcode, 0);  // an environment is an empty non-terminal
}

TEST(DnsAnswer, NxdomainWithSoa) {
  for (const char* n : {"nope.baseline.berth.test", "users.nope.berth.test", "x.y.users.baseline.berth.test",
                        "_http._udp.users.baseline.berth.test", "_ftp._tcp.users.baseline.berth.test",
                        "a.b.c.d.e.baseline.berth.test"}) {
    auto d = decode(run(zone(), make_query(n, type::kA)));
    EXPECT_EQ(d.rcode, 3) << n;
    EXPECT_TRUE(d.aa) << n;
    ASSERT_EQ(d.ns.size(), 1u) << n;
  }
}

TEST(DnsAnswer, RefusesOutsideTheZone) {
  for (const char* n : {"example.com", "test", "xberth.test", "berth.test.evil"}) {
    auto d = decode(run(zone(), make_query(n, type::kA)));
    EXPECT_EQ(d.rcode, 5) << n;
    EXPECT_FALSE(d.aa) << n;
    EXPECT_TRUE(d.an.empty() && d.ns.empty() && d.ar.empty()) << n;
  }
}

TEST(DnsAnswer, SrvWithTargetsAndAdditionals) {
  auto d = decode(run(zone(), kDigSrv));
  ASSERT_EQ(d.an.size(), 2u);
  EXPECT_EQ(d.an[0].data, "8080 0.orders.beta-7.berth.test");
  EXPECT_EQ(d.an[1].data, "8080 1.orders.beta-7.berth.test");
  ASSERT_EQ(d.ar.size(), 2u);
  EXPECT_EQ(d.ar[0].name, "0.orders.beta-7.berth.test");
  EXPECT_EQ(d.ar[0].data, "127.77.0.20");
  auto admin = decode(run(zone(), make_query("_admin._tcp.orders.baseline.berth.test", type::kSRV)));
  ASSERT_EQ(admin.an.size(), 1u);
  EXPECT_EQ(admin.an[0].data, "9000 0.orders.baseline.berth.test");
}

TEST(DnsAnswer, ThinEnvironmentFallsThroughToBase) {
  auto d = decode(run(zone(), make_query("users.beta-7.berth.test", type::kA)));
  ASSERT_EQ(d.an.size(), 1u);
  EXPECT_EQ(d.an[0].data, "127.77.0.10");
  EXPECT_EQ(d.an[0].name, "users.beta-7.berth.test");
  auto srv = decode(run(zone(), make_query("_http._tcp.users.beta-7.berth.test", type::kSRV)));
  ASSERT_EQ(srv.an.size(), 1u);
  EXPECT_EQ(srv.an[0].data, "8080 0.users.baseline.berth.test");  // the real instance's name
}

TEST(DnsAnswer, ApexSoaAndNs) {
  auto soa = decode(run(zone(), make_query("berth.test", type::kSOA)));
  ASSERT_EQ(soa.an.size(), 1u);
  EXPECT_EQ(soa.an[0].type, type::kSOA);
  auto ns = decode(run(zone(), make_query("BERTH.TEST", type::kNS)));
  ASSERT_EQ(ns.an.size(), 1u);
  // Compressed against the question, so in the client's letter case: names compare case-insensitively.
  EXPECT_TRUE(strcasecmp(ns.an[0].data.c_str(), "ns.berth.test") == 0) << ns.an[0].data;
  ASSERT_EQ(ns.ar.size(), 1u);
  EXPECT_EQ(ns.ar[0].data, "127.0.0.1");
}

TEST(DnsAnswer, TruncatesOverUdpAndFitsOverTcp) {
  auto z = zone();
  auto small = decode(run(z, make_query("many.baseline.berth.test", type::kA)));  // 512 bytes, no EDNS
  EXPECT_TRUE(small.tc);
  EXPECT_TRUE(small.an.empty());
  EXPECT_EQ(small.qname, "many.baseline.berth.test");
  auto edns = decode(run(z, make_query("many.baseline.berth.test", type::kA, 4096)));  // capped at 1232
  EXPECT_FALSE(edns.tc);
  EXPECT_EQ(edns.an.size(), 60u);  // 60 × 16 bytes (owner compressed to a pointer) fits in 1232
  auto srv_udp = decode(run(z, make_query("_http._tcp.many.baseline.berth.test", type::kSRV, 1232)));
  EXPECT_TRUE(srv_udp.tc);
  EXPECT_TRUE(srv_udp.opt);
  auto srv_tcp = decode(run(z, make_query("_http._tcp.many.baseline.berth.test", type::kSRV, 1232), true));
  EXPECT_FALSE(srv_tcp.tc);
  EXPECT_EQ(srv_tcp.an.size(), 60u);
  EXPECT_EQ(srv_tcp.ar.size(), 60u);
}

TEST(DnsAnswer, BadEdnsVersion) {
  auto d = decode(run(zone(), make_query("users.baseline.berth.test", type::kA, 1232, 1)));
  EXPECT_TRUE(d.opt);
  EXPECT_EQ(d.opt_ext_rcode, 1);  // BADVERS = 16 = (1 << 4) | 0
  EXPECT_TRUE(d.an.empty());
}

TEST(DnsWire, HostilePackets) {
  auto z = zone();
  std::vector<std::uint8_t> out(512);
  auto rcode_of = [&](std::vector<std::uint8_t> p) -> int {
    std::size_t n = respond(z, p, out, false);
    if (n == 0) return -1;  // dropped
    EXPECT_EQ(n, 12u);
    return out[3] & 0x0F;
  };
  EXPECT_EQ(rcode_of({}), -1);
  EXPECT_EQ(rcode_of({1, 2, 3}), -1);
  auto resp = kDigA;
  resp[2] |= 0x80;  // QR: a response, never answered
  EXPECT_EQ(rcode_of(resp), -1);
  auto two = kDigMixedCaseNoEdns;
  two[5] = 2;  // QDCOUNT 2
  EXPECT_EQ(rcode_of(two), 1);
  auto none = kDigMixedCaseNoEdns;
  none[5] = 0;
  EXPECT_EQ(rcode_of(none), 1);
  auto truncated = kDigMixedCaseNoEdns;
  truncated.resize(truncated.size() - 3);
  EXPECT_EQ(rcode_of(truncated), 1);
  std::vector<std::uint8_t> loop = {0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1};  // points at itself
  EXPECT_EQ(rcode_of(loop), 1);
  std::vector<std::uint8_t> forward = {0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 14, 0, 0, 1, 0, 1};
  EXPECT_EQ(rcode_of(forward), 1);
  std::vector<std::uint8_t> ext_label = {0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x41, 'a', 0, 0, 1, 0, 1};
  EXPECT_EQ(rcode_of(ext_label), 1);
  std::vector<std::uint8_t> long_name = {0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0};
  for (int i = 0; i < 5; ++i) {
    long_name.push_back(63);
    long_name.insert(long_name.end(), 63, 'a');
  }
  long_name.insert(long_name.end(), {0, 0, 1, 0, 1});
  EXPECT_EQ(rcode_of(long_name), 1);  // 320 bytes > 255
  auto notimp = kDigMixedCaseNoEdns;
  notimp[2] = static_cast<std::uint8_t>((notimp[2] & 0x87) | (2 << 3));  // opcode STATUS
  EXPECT_EQ(rcode_of(notimp), 4);
  auto answers = kDigMixedCaseNoEdns;
  answers[7] = 1;  // ANCOUNT in a query
  EXPECT_EQ(rcode_of(answers), 1);
  auto chaos = make_query("users.baseline.berth.test", type::kA);
  chaos[chaos.size() - 1] = 3;  // class CH
  std::vector<std::uint8_t> big(512);
  std::size_t n = respond(z, chaos, big, false);
  ASSERT_GT(n, 12u);
  EXPECT_EQ(big[3] & 0x0F, 5);  // REFUSED
}
