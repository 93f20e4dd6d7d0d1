// net/dns/wire.h — DNS wire format (RFC 1035, 2782, 6891) for an authoritative server.
//
// Everything read here comes from the network and is treated as hostile: every length is
// checked against what remains before it is used, compression pointers must point backwards and
// are followed at most 16 times, names are at most 255 bytes and labels 63. parse_query() never
// reads outside [data, data+size) and never allocates more than a name's worth.
//
// Writer builds responses into a caller-owned buffer with name compression (RFC 1035 4.1.4).
// Pure code: no sockets, no clocks.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace berth::dns {

namespace type {
inline constexpr std::uint16_t kA = 1, kNS = 2, kCNAME = 5, kSOA = 6, kAAAA = 28, kSRV = 33, kOPT = 41,
                               kANY = 255;
}
inline constexpr std::uint16_t kClassIN = 1, kClassANY = 255;

enum class Rcode : std::uint8_t { kNoError = 0, kFormErr = 1, kServFail = 2, kNxDomain = 3, kNotImp = 4, kRefused = 5 };
inline constexpr std::uint16_t kExtRcodeBadVers = 16;

inline constexpr std::size_t kHeaderSize = 12;
inline constexpr std::size_t kMaxNameWire = 255;
inline constexpr std::size_t kMaxLabel = 63;
inline constexpr std::uint16_t kMinUdpPayload = 512;
inline constexpr std::uint16_t kOurUdpPayload = 1232;  // DNS flag day 2020: no IP fragmentation

struct Query {
  std::uint16_t id = 0;
  std::uint8_t opcode = 0;
  bool rd = false;
  bool cd = false;
  // The question exactly as received (QNAME + QTYPE + QCLASS), echoed back unchanged, so the
  // client sees its own letter case; always starts at offset 12 of the query.
  std::span<const std::uint8_t> question;
  std::uint16_t qtype = 0;
  std::uint16_t qclass = 0;
  // QNAME lower-cased, labels joined by '.', no trailing dot ("" is the root). `weird` when a
  // label holds a '.' or a byte outside printable ASCII: such a name is in no zone of ours.
  std::string name;
  bool weird = false;
  std::uint8_t label_count = 0;
  bool edns = false;
  std::uint8_t edns_version = 0;
  std::uint16_t udp_payload = kMinUdpPayload;  // what the client accepts over UDP
  bool do_bit = false;
};

enum class Parse {
  kOk,
  kDrop,     // not worth an answer: shorter than a header, or a response (QR=1)
  kFormErr,  // answer FORMERR (header only, QDCOUNT 0)
  kNotImp,   // opcode other than QUERY: answer NOTIMP
};

// Parses a query; on kFormErr/kNotImp `out.id`, `out.opcode` and `out.rd` are set for the reply.
Parse parse_query(std::span<const std::uint8_t> packet, Query& out);

// A response under construction in a fixed buffer. Any write that does not fit sets
// overflowed() and is dropped; the caller then truncates (TC) and starts over.
class Writer {
 public:
  explicit Writer(std::span<std::uint8_t> buf) : buf_(buf) {}

  // Header: QR=1, AA as given, RA=0, RD copied. Counts are patched as records are added.
  void header(const Query& q, Rcode rcode, bool aa);
  void set_tc() { if (size_ >= 3) buf_[2] |= 0x02; }
  // Echo the question (copied bytes; registers QNAME at offset 12 for compression).
  void question(const Query& q);

  enum class Section { kAnswer, kAuthority, kAdditional };
  // A record with an owner name given in presentation form ("0.users.beta-7.berth.test"),
  // compressed against names already written.
  void a(Section s, std::string_view owner, std::uint32_t ttl, std::uint32_t ipv4);
  void ns(Section s, std::string_view owner, std::uint32_t ttl, std::string_view host);
  void soa(Section s, std::string_view owner, std::uint32_t ttl, std::string_view mname, std::string_view rname,
           std::uint32_t serial, std::uint32_t refresh, std::uint32_t retry, std::uint32_t expire,
           std::uint32_t minimum);
  void srv(Section s, std::string_view owner, std::uint32_t ttl, std::uint16_t priority, std::uint16_t weight,
           std::uint16_t port, std::string_view target);
  // OPT pseudo-record (EDNS0) in the additional section.
  void opt(std::uint16_t udp_payload, std::uint8_t ext_rcode_high, bool do_bit);

  std::size_t size() const { return size_; }
  bool overflowed() const { return overflow_; }
  std::span<const std::uint8_t> bytes() const { return buf_.first(size_); }

 private:
  void put8(std::uint8_t v);
  void put16(std::uint16_t v);
  void put32(std::uint32_t v);
  void name(std::string_view n);  // presentation form, lower case, compressed
  // Owner name, TYPE, CLASS, TTL, and a 2-byte RDLENGTH placeholder; returns its offset.
  std::size_t rr_start(Section s, std::string_view owner, std::uint16_t type, std::uint32_t ttl);
  void rr_end(std::size_t rdlength_at);

  std::span<std::uint8_t> buf_;
  std::size_t size_ = 0;
  bool overflow_ = false;
  // Suffixes already written: lower-cased presentation suffix → offset. Few per message.
  struct Written {
    std::string suffix;
    std::uint16_t offset;
  };
  std::vector<Written> written_;
};

// A query for `name` (dotted, no trailing dot) and `qtype`, class IN, with `id` and the RD flag;
// with an OPT record advertising `edns_payload` when it is ≥ 0. For clients: tests, benchmarks,
// the example service.
std::vector<std::uint8_t> build_query(std::string_view name, std::uint16_t qtype, std::uint16_t id, bool rd = false,
                                      int edns_payload = -1, std::uint8_t edns_version = 0);

// Header-only reply (FORMERR, NOTIMP) into `buf`; returns its size (12) or 0 if buf is too small.
std::size_t error_reply(const Query& q, Rcode rcode, std::span<std::uint8_t> buf);

}  // namespace berth::dns
