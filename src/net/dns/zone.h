// net/dns/zone.h — what berth's name server knows, and how it answers.
//
// A Zone is an immutable snapshot built by the control loop from instance state and published
// to the server threads (net/dns/server.h), which only read it. answer() is a pure function of
// (zone, query) → response bytes.
//
// Names, for zone Z (default berth.test), environment E, app A, ordinal N, port P:
//   A.E.Z            A    the addresses of A's ready instances where A runs for E (E itself, or
//                         for an app a thin environment does not run, its base environment)
//                         no ready instance → NODATA with SOA (the name exists)
//   N.A.E.Z          A    instance N's stable address, ready or not: it is the instance's
//                         identity, so a client can connect and retry while it starts
//   _P._tcp.A.E.Z    SRV  one per ready instance: target N.A.E'.Z (E' where it runs), port P,
//                         with the targets' A records in the additional section
//   Z                SOA, NS (ns.Z, with an A record when the server has an IPv4 address)
// Everything else under Z is NXDOMAIN; names outside Z are REFUSED (no recursion).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "net/dns/wire.h"

namespace berth::dns {

struct AppRecords {
  std::string env;                  // environment whose instances these are
  std::vector<std::uint32_t> ips;   // by ordinal; 0 = no address
  std::vector<bool> ready;          // by ordinal
  std::vector<std::pair<std::string, std::uint16_t>> ports;  // name → number
};

// One environment's names: the apps it runs, and for the apps it does not run (a thin
// environment), the environment that serves them. Rebuilt only when that environment changes.
struct EnvRecords {
  std::unordered_map<std::string, AppRecords> apps;
  std::unordered_map<std::string, std::string> fall_through;  // app → serving environment
};

// Every environment's records, by name, in shards: a copy shares every shard, and set() copies
// only the one it changes, so a zone that differs from the last in a few environments costs a
// few small copies, not one entry per environment (1,000 environments at every reconcile pass).
class EnvTable {
 public:
  static constexpr std::size_t kShards = 64;
  const EnvRecords* find(const std::string& env) const;
  bool contains(const std::string& env) const { return find(env) != nullptr; }
  void set(const std::string& env, std::shared_ptr<const EnvRecords> records);
  void erase(const std::string& env);
  void clear() { shards_ = {}; }

 private:
  using Shard = std::unordered_map<std::string, std::shared_ptr<const EnvRecords>>;
  static std::size_t shard_of(const std::string& env) { return std::hash<std::string>{}(env) % kShards; }
  std::array<std::shared_ptr<const Shard>, kShards> shards_;
};

struct Zone {
  std::string apex = "berth.test";  // lower case, no trailing dot
  std::uint32_t ttl = 2;            // seconds, positive answers
  std::uint32_t negative_ttl = 2;   // seconds, NODATA/NXDOMAIN (SOA minimum)
  std::uint32_t serial = 1;
  std::uint32_t ns_ip = 0;          // address of ns.<apex>, 0 if none
  EnvTable envs;

  // The records answering for `app` in `env` (following fall-through), or nullptr.
  const AppRecords* find(const std::string& env, const std::string& app) const;
};

// Writes the response to `q` into `out`. `max_size` is the largest response the transport
// carries (UDP: the client's EDNS payload or 512; TCP: 65535); a larger answer is truncated to
// header + question (+ OPT) with TC set. Returns the response size.
std::size_t answer(const Zone& zone, const Query& q, std::span<std::uint8_t> out, std::size_t max_size);

// Handles one raw packet end to end: parse, answer or error reply. Returns the response size,
// 0 when the packet must be dropped.
std::size_t respond(const Zone& zone, std::span<const std::uint8_t> packet, std::span<std::uint8_t> out, bool tcp);

}  // namespace berth::dns
