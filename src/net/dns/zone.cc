#include "net/dns/zone.h"

#include <algorithm>
#include <charconv>
#include <string_view>

namespace berth::dns {
namespace {

using Section = Writer::Section;

// Up to four labels of the name relative to the apex, rightmost first.
struct Relative {
  std::string_view labels[4];
  int count = 0;
  bool too_deep = false;
};

Relative split_relative(std::string_view rel) {
  Relative r;
  while (!rel.empty()) {
    auto dot = rel.rfind('.');
    std::string_view label = dot == std::string_view::npos ? rel : rel.substr(dot + 1);
    if (r.count == 4) {
      r.too_deep = true;
      break;
    }
    r.labels[r.count++] = label;
    rel = dot == std::string_view::npos ? std::string_view() : rel.substr(0, dot);
  }
  return r;
}

class Answerer {
 public:
  Answerer(const Zone& z, const Query& q, Writer& w) : z_(z), q_(q), w_(w) {}

  void run() {
    std::string_view name = q_.name;
    std::string_view apex = z_.apex;
    bool in_zone = !q_.weird && (name == apex || (name.size() > apex.size() && name.ends_with(apex) &&
                                                  name[name.size() - apex.size() - 1] == '.'));
    if (!in_zone || (q_.qclass != kClassIN && q_.qclass != kClassANY)) return finish(Rcode::kRefused, false);
    std::string_view rel = name == apex ? std::string_view() : name.substr(0, name.size() - apex.size() - 1);
    Relative r = split_relative(rel);
    if (r.too_deep) return nxdomain();
    if (r.count == 0) return apex_answer();
    if (r.count == 1 && r.labels[0] == "ns") {
      if (z_.ns_ip && want(type::kA)) {
        begin(Rcode::kNoError);
        w_.a(Section::kAnswer, name, z_.ttl, z_.ns_ip);
        return;
      }
      return z_.ns_ip ? nodata() : nxdomain();
    }
    std::string env(r.labels[0]);
    if (!z_.envs.contains(env)) return nxdomain();
    if (r.count == 1) return nodata();  // the environment: an empty non-terminal
    const AppRecords* found = z_.find(env, std::string(r.labels[1]));
    if (!found) return nxdomain();
    const AppRecords& rec = *found;
    if (r.count == 2) return app_answer(rec);
    if (r.count == 3) {
      if (r.labels[2] == "_tcp") return rec.ports.empty() ? nxdomain() : nodata();
      unsigned ordinal = 0;
      auto l = r.labels[2];
      auto [p, ec] = std::from_chars(l.data(), l.data() + l.size(), ordinal);
      if (ec != std::errc() || p != l.data() + l.size() || (l.size() > 1 && l[0] == '0') || ordinal >= rec.ips.size() ||
          rec.ips[ordinal] == 0)
        return nxdomain();
      if (!want(type::kA)) return nodata();
      begin(Rcode::kNoError);
      w_.a(Section::kAnswer, name, z_.ttl, rec.ips[ordinal]);
      return;
    }
    // r.count == 4: _port._tcp
    if (r.labels[2] != "_tcp" || r.labels[3].size() < 2 || r.labels[3][0] != '_') return nxdomain();
    std::string_view port_name = r.labels[3].substr(1);
    auto port = std::find_if(rec.ports.begin(), rec.ports.end(), [&](const auto& pr) { return pr.first == port_name; });
    if (port == rec.ports.end()) return nxdomain();
    if (!want(type::kSRV)) return nodata();
    begin(Rcode::kNoError);
    std::string target;
    std::vector<std::pair<std::string, std::uint32_t>> additional;
    for (std::size_t o = 0; o < rec.ips.size(); ++o) {
      if (!rec.ready[o] || rec.ips[o] == 0) continue;
      target = std::to_string(o) + "." + std::string(r.labels[1]) + "." + rec.env + "." + z_.apex;
      w_.srv(Section::kAnswer, name, z_.ttl, 10, 10, port->second, target);
      additional.emplace_back(std::move(target), rec.ips[o]);
    }
    if (additional.empty()) return nodata();
    for (const auto& [t, ip] : additional) w_.a(Section::kAdditional, t, z_.ttl, ip);
  }

  void finish(Rcode rcode, bool aa) { w_.header(q_, rcode, aa), w_.question(q_); }

 private:
  bool want(std::uint16_t t) const { return q_.qtype == t || q_.qtype == type::kANY; }

  void begin(Rcode rcode) { finish(rcode, true); }

  void soa(Section s) {
    std::string mname = "ns." + z_.apex, rname = "hostmaster." + z_.apex;
    w_.soa(s, z_.apex, s == Section::kAnswer ? z_.ttl : z_.negative_ttl, mname, rname, z_.serial, 60, 10, 600,
           z_.negative_ttl);
  }

  void nodata() {
    begin(Rcode::kNoError);
    soa(Section::kAuthority);
  }
  void nxdomain() {
    begin(Rcode::kNxDomain);
    soa(Section::kAuthority);
  }

  void apex_answer() {
    bool any = false;
    begin(Rcode::kNoError);
    if (want(type::kSOA)) {
      soa(Section::kAnswer);
      any = true;
    }
    if (want(type::kNS)) {
      w_.ns(Section::kAnswer, z_.apex, z_.ttl, "ns." + z_.apex);
      if (z_.ns_ip) w_.a(Section::kAdditional, "ns." + z_.apex, z_.ttl, z_.ns_ip);
      any = true;
    }
    if (!any) soa(Section::kAuthority);
  }

  void app_answer(const AppRecords& rec) {
    if (!want(type::kA)) return nodata();
    begin(Rcode::kNoError);
    bool any = false;
    for (std::size_t o = 0; o < rec.ips.size(); ++o)
      if (rec.ready[o] && rec.ips[o]) {
        w_.a(Section::kAnswer, q_.name, z_.ttl, rec.ips[o]);
        any = true;
      }
    if (!any) soa(Section::kAuthority);  // exists, nothing ready: NODATA
  }

  const Zone& z_;
  const Query& q_;
  Writer& w_;
};

}  // namespace

const EnvRecords* EnvTable::find(const std::string& env) const {
  const auto& shard = shards_[shard_of(env)];
  if (!shard) return nullptr;
  auto it = shard->find(env);
  return it == shard->end() ? nullptr : it->second.get();
}

void EnvTable::set(const std::string& env, std::shared_ptr<const EnvRecords> records) {
  auto& shard = shards_[shard_of(env)];
  auto copy = shard ? std::make_shared<Shard>(*shard) : std::make_shared<Shard>();
  (*copy)[env] = std::move(records);
  shard = std::move(copy);
}

void EnvTable::erase(const std::string& env) {
  auto& shard = shards_[shard_of(env)];
  if (!shard || !shard->count(env)) return;
  auto copy = std::make_shared<Shard>(*shard);
  copy->erase(env);
  shard = std::move(copy);
}

const AppRecords* Zone::find(const std::string& env, const std::string& app) const {
  const EnvRecords* e = envs.find(env);
  if (!e) return nullptr;
  if (auto a = e->apps.find(app); a != e->apps.end()) return &a->second;
  auto f = e->fall_through.find(app);
  if (f == e->fall_through.end()) return nullptr;
  const EnvRecords* served = envs.find(f->second);
  if (!served) return nullptr;
  auto a = served->apps.find(app);
  return a == served->apps.end() ? nullptr : &a->second;
}

std::size_t answer(const Zone& zone, const Query& q, std::span<std::uint8_t> out, std::size_t max_size) {
  auto buf = out.first(std::min(out.size(), max_size));
  Writer w(buf);
  Answerer(zone, q, w).run();
  // BADVERS for EDNS versions we do not speak (RFC 6891 6.1.3).
  if (q.edns && q.edns_version > 0) {
    w.header(q, Rcode::kNoError, false);
    w.question(q);
    w.opt(kOurUdpPayload, static_cast<std::uint8_t>(kExtRcodeBadVers >> 4), false);
    return w.overflowed() ? 0 : w.size();
  }
  if (q.edns) w.opt(kOurUdpPayload, 0, q.do_bit);
  if (!w.overflowed()) return w.size();
  // Does not fit: header and question only, TC set, so the client retries over TCP.
  Writer t(buf);
  Answerer(zone, q, t).finish(Rcode::kNoError, true);
  t.set_tc();
  if (q.edns) t.opt(kOurUdpPayload, 0, q.do_bit);
  return t.overflowed() ? 0 : t.size();
}

std::size_t respond(const Zone& zone, std::span<const std::uint8_t> packet, std::span<std::uint8_t> out, bool tcp) {
  Query q;
  switch (parse_query(packet, q)) {
    case Parse::kDrop: return 0;
    case Parse::kFormErr: return error_reply(q, Rcode::kFormErr, out);
    case Parse::kNotImp: return error_reply(q, Rcode::kNotImp, out);
    case Parse::kOk: break;
  }
  std::size_t max = tcp ? 65535 : q.edns ? std::min<std::size_t>(q.udp_payload, kOurUdpPayload) : kMinUdpPayload;
  return answer(zone, q, out, max);
}

}  // namespace berth::dns
