#include "net/dns/wire.h"

#include <algorithm>

namespace berth::dns {
namespace {

std::uint16_t rd16(std::span<const std::uint8_t> p, std::size_t at) {
  return static_cast<std::uint16_t>((p[at] << 8) | p[at + 1]);
}

char lower(std::uint8_t c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c); }

// Reads a (possibly compressed) name starting at `pos`. On success sets `end` to the offset
// just after the name in the original position (pointers do not move it further).
bool read_name(std::span<const std::uint8_t> p, std::size_t pos, std::size_t& end, Query* q) {
  std::size_t wire_len = 0;
  int jumps = 0;
  bool jumped = false;
  std::string name;
  bool weird = false;
  std::uint8_t labels = 0;
  while (true) {
    if (pos >= p.size()) return false;
    std::uint8_t len = p[pos];
    if ((len & 0xC0) == 0xC0) {  // compression pointer
      if (pos + 1 >= p.size()) return false;
      std::size_t target = static_cast<std::size_t>(((len & 0x3F) << 8) | p[pos + 1]);
      if (target >= pos || ++jumps > 16) return false;  // only backwards: no loops
      if (!jumped) end = pos + 2;
      jumped = true;
      pos = target;
      continue;
    }
    if ((len & 0xC0) != 0) return false;  // 0x40 / 0x80: extended label types, not supported
    wire_len += 1u + len;
    if (wire_len > kMaxNameWire) return false;
    if (len == 0) {
      if (!jumped) end = pos + 1;
      break;
    }
    if (pos + 1 + len > p.size()) return false;
    if (!name.empty()) name += '.';
    for (std::size_t i = 0; i < len; ++i) {
      std::uint8_t c = p[pos + 1 + i];
      if (c == '.' || c < 0x21 || c > 0x7E) weird = true;
      name += lower(c);
    }
    ++labels;
    pos += 1u + len;
  }
  if (q) {
    q->name = std::move(name);
    q->weird = weird;
    q->label_count = labels;
  }
  return true;
}

}  // namespace

Parse parse_query(std::span<const std::uint8_t> p, Query& q) {
  if (p.size() < kHeaderSize) return Parse::kDrop;
  q.id = rd16(p, 0);
  const std::uint8_t flags1 = p[2];
  if (flags1 & 0x80) return Parse::kDrop;  // QR: a response, never answer it (reflection loops)
  q.opcode = static_cast<std::uint8_t>((flags1 >> 3) & 0x0F);
  q.rd = flags1 & 0x01;
  q.cd = p[3] & 0x10;
  if (q.opcode != 0) return Parse::kNotImp;
  const std::uint16_t qdcount = rd16(p, 4), ancount = rd16(p, 6), nscount = rd16(p, 8), arcount = rd16(p, 10);
  if (qdcount != 1 || ancount != 0 || nscount != 0 || arcount > 1) return Parse::kFormErr;

  std::size_t end = 0;
  if (!read_name(p, kHeaderSize, end, &q)) return Parse::kFormErr;
  if (end + 4 > p.size()) return Parse::kFormErr;
  q.qtype = rd16(p, end);
  q.qclass = rd16(p, end + 2);
  q.question = p.subspan(kHeaderSize, end + 4 - kHeaderSize);
  std::size_t pos = end + 4;

  q.edns = false;
  q.udp_payload = kMinUdpPayload;
  q.do_bit = false;
  q.edns_version = 0;
  if (arcount == 1) {
    // The only additional record a query may carry here is OPT (RFC 6891 6.1.1), with root owner.
    std::size_t rr_end = 0;
    if (!read_name(p, pos, rr_end, nullptr)) return Parse::kFormErr;
    if (rr_end + 10 > p.size()) return Parse::kFormErr;
    const std::uint16_t rtype = rd16(p, rr_end), rdlen = rd16(p, rr_end + 8);
    if (rr_end + 10 + rdlen > p.size()) return Parse::kFormErr;
    if (rtype != type::kOPT || rr_end != pos + 1) return Parse::kFormErr;
    q.edns = true;
    q.udp_payload = std::max<std::uint16_t>(kMinUdpPayload, rd16(p, rr_end + 2));
    q.edns_version = p[rr_end + 5];
    q.do_bit = p[rr_end + 6] & 0x80;
  }
  return Parse::kOk;
}

// ---- Writer ---------------------------------------------------------------------------------

void Writer::put8(std::uint8_t v) {
  if (size_ + 1 > buf_.size()) { overflow_ = true; return; }
  buf_[size_++] = v;
}
void Writer::put16(std::uint16_t v) {
  if (size_ + 2 > buf_.size()) { overflow_ = true; return; }
  buf_[size_++] = static_cast<std::uint8_t>(v >> 8);
  buf_[size_++] = static_cast<std::uint8_t>(v);
}
void Writer::put32(std::uint32_t v) {
  put16(static_cast<std::uint16_t>(v >> 16));
  put16(static_cast<std::uint16_t>(v));
}

void Writer::header(const Query& q, Rcode rcode, bool aa) {
  size_ = 0;
  overflow_ = false;
  written_.clear();
  put16(q.id);
  put8(static_cast<std::uint8_t>(0x80 | (q.opcode << 3) | (aa ? 0x04 : 0) | (q.rd ? 0x01 : 0)));
  put8(static_cast<std::uint8_t>((q.cd ? 0x10 : 0) | static_cast<std::uint8_t>(rcode)));
  put16(0);
  put16(0);
  put16(0);
  put16(0);
}

void Writer::question(const Query& q) {
  if (size_ != kHeaderSize || q.question.empty()) return;
  if (size_ + q.question.size() > buf_.size()) { overflow_ = true; return; }
  std::copy(q.question.begin(), q.question.end(), buf_.begin() + static_cast<std::ptrdiff_t>(size_));
  size_ += q.question.size();
  buf_[5] = 1;  // QDCOUNT
  if (!q.weird) {
    // Register every suffix of QNAME: label boundaries are at the same offsets in any case.
    std::size_t off = kHeaderSize;
    std::string_view n = q.name;
    while (!n.empty() && off < 0x3FFF) {
      written_.push_back({std::string(n), static_cast<std::uint16_t>(off)});
      auto dot = n.find('.');
      std::size_t label = dot == std::string_view::npos ? n.size() : dot;
      off += 1 + label;
      n = dot == std::string_view::npos ? std::string_view() : n.substr(dot + 1);
    }
  }
}

void Writer::name(std::string_view n) {
  while (!n.empty()) {
    for (const auto& w : written_)
      if (w.suffix == n) {
        put16(static_cast<std::uint16_t>(0xC000 | w.offset));
        return;
      }
    if (size_ < 0x3FFF) written_.push_back({std::string(n), static_cast<std::uint16_t>(size_)});
    auto dot = n.find('.');
    std::string_view label = n.substr(0, dot);
    put8(static_cast<std::uint8_t>(std::min(label.size(), kMaxLabel)));
    for (std::size_t i = 0; i < label.size() && i < kMaxLabel; ++i) put8(static_cast<std::uint8_t>(label[i]));
    n = dot == std::string_view::npos ? std::string_view() : n.substr(dot + 1);
  }
  put8(0);
}

std::size_t Writer::rr_start(Section s, std::string_view owner, std::uint16_t rtype, std::uint32_t ttl) {
  name(owner);
  put16(rtype);
  put16(kClassIN);
  put32(ttl);
  std::size_t at = size_;
  put16(0);
  if (!overflow_) {
    std::size_t count_at = s == Section::kAnswer ? 6 : s == Section::kAuthority ? 8 : 10;
    std::uint16_t c = static_cast<std::uint16_t>((buf_[count_at] << 8 | buf_[count_at + 1]) + 1);
    buf_[count_at] = static_cast<std::uint8_t>(c >> 8);
    buf_[count_at + 1] = static_cast<std::uint8_t>(c);
  }
  return at;
}

void Writer::rr_end(std::size_t at) {
  if (overflow_) return;
  std::size_t len = size_ - at - 2;
  buf_[at] = static_cast<std::uint8_t>(len >> 8);
  buf_[at + 1] = static_cast<std::uint8_t>(len);
}

void Writer::a(Section s, std::string_view owner, std::uint32_t ttl, std::uint32_t ipv4) {
  auto at = rr_start(s, owner, type::kA, ttl);
  put32(ipv4);
  rr_end(at);
}

void Writer::ns(Section s, std::string_view owner, std::uint32_t ttl, std::string_view host) {
  auto at = rr_start(s, owner, type::kNS, ttl);
  name(host);
  rr_end(at);
}

void Writer::soa(Section s, std::string_view owner, std::uint32_t ttl, std::string_view mname, std::string_view rname,
                 std::uint32_t serial, std::uint32_t refresh, std::uint32_t retry, std::uint32_t expire,
                 std::uint32_t minimum) {
  auto at = rr_start(s, owner, type::kSOA, ttl);
  name(mname);
  name(rname);
  put32(serial);
  put32(refresh);
  put32(retry);
  put32(expire);
  put32(minimum);
  rr_end(at);
}

void Writer::srv(Section s, std::string_view owner, std::uint32_t ttl, std::uint16_t priority, std::uint16_t weight,
                 std::uint16_t port, std::string_view target) {
  auto at = rr_start(s, owner, type::kSRV, ttl);
  put16(priority);
  put16(weight);
  put16(port);
  // RFC 2782 says SRV targets are not compressed; RFC 3597 lets readers accept it, but be strict.
  // Written in full, but later names may point into it.
  auto saved = std::move(written_);
  written_.clear();
  name(target);
  for (auto& w : written_) saved.push_back(std::move(w));
  written_ = std::move(saved);
  rr_end(at);
}

void Writer::opt(std::uint16_t udp_payload, std::uint8_t ext_rcode_high, bool do_bit) {
  put8(0);  // root
  put16(type::kOPT);
  put16(udp_payload);
  put8(ext_rcode_high);
  put8(0);  // version 0
  put16(do_bit ? 0x8000 : 0);
  put16(0);  // no options
  if (!overflow_) {
    std::uint16_t c = static_cast<std::uint16_t>((buf_[10] << 8 | buf_[11]) + 1);
    buf_[10] = static_cast<std::uint8_t>(c >> 8);
    buf_[11] = static_cast<std::uint8_t>(c);
  }
}

std::size_t error_reply(const Query& q, Rcode rcode, std::span<std::uint8_t> buf) {
  Writer w(buf);
  w.header(q, rcode, false);
  return w.overflowed() ? 0 : w.size();
}

std::vector<std::uint8_t> build_query(std::string_view name, std::uint16_t qtype, std::uint16_t id, bool rd,
                                      int edns_payload, std::uint8_t edns_version) {
  std::vector<std::uint8_t> q = {static_cast<std::uint8_t>(id >> 8), static_cast<std::uint8_t>(id),
                                 static_cast<std::uint8_t>(rd ? 0x01 : 0), 0, 0, 1, 0, 0, 0, 0, 0,
                                 static_cast<std::uint8_t>(edns_payload >= 0)};
  std::size_t i = 0;
  while (i < name.size()) {
    auto dot = name.find('.', i);
    if (dot == std::string_view::npos) dot = name.size();
    q.push_back(static_cast<std::uint8_t>(dot - i));
    q.insert(q.end(), name.begin() + static_cast<long>(i), name.begin() + static_cast<long>(dot));
    i = dot + 1;
  }
  q.insert(q.end(), {0, static_cast<std::uint8_t>(qtype >> 8), static_cast<std::uint8_t>(qtype), 0, kClassIN});
  if (edns_payload >= 0)
    q.insert(q.end(), {0, 0, type::kOPT, static_cast<std::uint8_t>(edns_payload >> 8), static_cast<std::uint8_t>(edns_payload),
                       0, edns_version, 0, 0, 0, 0});
  return q;
}

}  // namespace berth::dns
