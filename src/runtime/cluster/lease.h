// runtime/cluster/lease.h — the cluster's host leases: how a host cut off from berth and from the
// Swarm stops its instances before their addresses are given to other hosts.
//
// berth fences a lost host through its Engine API when it can. A host cut off by the network
// cannot be reached that way, and its containers keep running; were its link to come back, they
// would answer on addresses berth has given elsewhere. So every host but the first holds a lease:
//   - the table is in the sandbox (on the first host, beside the daemon, on the overlay):
//     `berth-pause serve-leases`. It outlives daemon restarts, so a restarting daemon is not a
//     silent berth to the hosts;
//   - each other host's anchor runs `berth-pause hold-lease`: it renews its host's lease every
//     ttl / 10 (at most every 250 ms) over the overlay. When the table answers REVOKED (berth lost the host), or has not
//     answered for ttl / 2, it kills every running berth container of its host through its
//     dockerd's socket (mounted into it), and says so (REPORT) when it can;
//   - berth, losing a host it could not fence itself, revokes the lease and gives the host's
//     addresses again only once the holder reported, or once the host has been silent for
//     ttl + kLeaseMarginMs (the holder killed at ttl / 2: the rest is for its kills to finish).
//
// Protocol: one request line per TCP connection, one answer line, at most kMaxLine bytes each,
// words separated by one space:
//   RENEW  TOKEN HOST TTL_MS [nodocker]
//                                → OK | REVOKED          (holders, with the lease they hold;
//                                                         `nodocker` when their dockerd's socket
//                                                         refuses connections)
//   REPORT TOKEN HOST WHAT       → OK                    (holders, once revoked: "fenced-N" when
//                                                         every kill was answered, "partial-K-of-N",
//                                                         "nodocker" when dockerd does not answer)
//   REVOKE TOKEN HOST            → OK                    (the daemon: the host is lost)
//   RESTORE TOKEN HOST           → OK                    (the daemon: fenced and back)
//   ASK    TOKEN HOST            → LEASE SILENT_MS UP_MS REVOKED REPORT TTL_MS NODOCKER_MS
//                                  (SILENT_MS -1: never renewed since the table started UP_MS
//                                  ago; REVOKED 0|1; REPORT "-" for none; TTL_MS the longest
//                                  lease its holders said they hold, -1 for none; NODOCKER_MS
//                                  since when every renewal said `nodocker`, -1 when the last
//                                  did not. A table of an older berth answers without it.)
// Anything else → ERR WHY; a wrong token → DENIED. The token (BERTH_LEASE_TOKEN) keeps the
// instances on the overlay from revoking or renewing leases.
//
// This header is plain C++ (no berth library): the static berth-pause is built from it too.
// Threading: values and a table without locks; each user keeps its own.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace berth::lease {

inline constexpr int kPort = 5757;
inline constexpr std::size_t kMaxLine = 512;
inline constexpr std::int64_t kLeaseMarginMs = 1000;

enum class Verb { kRenew, kReport, kRevoke, kRestore, kAsk };

struct Request {
  Verb verb = Verb::kRenew;
  std::string token;
  std::string host;
  std::string what;       // REPORT only
  std::int64_t ttl_ms = 0;  // RENEW only: the lease the holder holds
  bool nodocker = false;    // RENEW only: the holder's dockerd refuses connections
};

// One request line (without its newline); nullopt and `why` when it is not one.
std::optional<Request> parse_request(std::string_view line, std::string* why);
std::string format(const Request& r);  // without the newline

// What ASK answers.
struct Lease {
  std::int64_t silent_ms = -1;  // since the last renewal; -1: none since the table started
  std::int64_t up_ms = 0;       // since the table started
  bool revoked = false;
  std::string report;       // "" for none
  std::int64_t ttl_ms = -1;  // the longest lease a holder of this host said it holds; -1: none
  // Since when its holder has found its dockerd gone (each renewal since said so); -1: the last
  // renewal found it answering, or the table does not know.
  std::int64_t nodocker_ms = -1;
  // Whether the report says every berth container there was killed, or that its dockerd does
  // not answer (then Docker kills them when it restarts, and the Swarm no longer routes their
  // addresses there once its node is removed). A partial kill is not settled.
  bool settled_by_report() const { return report.rfind("fenced-", 0) == 0 || report == "nodocker"; }
};
std::optional<Lease> parse_lease(std::string_view line);

// The sandbox's table. Times are the caller's monotonic milliseconds.
class Table {
 public:
  Table(std::string token, std::int64_t now_ms) : token_(std::move(token)), started_ms_(now_ms) {}
  // The answer line (without its newline) to one request line.
  std::string handle(std::string_view line, std::int64_t now_ms);

 private:
  struct Entry {
    std::optional<std::int64_t> renewed_ms;
    bool revoked = false;
    std::string report;
    std::int64_t ttl_ms = -1;
    std::optional<std::int64_t> nodocker_since_ms;
  };
  std::string token_;
  std::int64_t started_ms_;
  std::map<std::string, Entry> hosts_;
};

// A holder's decisions, apart from its sockets. Times are its monotonic milliseconds.
class Holder {
 public:
  Holder(std::int64_t ttl_ms, std::int64_t now_ms) : ttl_ms_(ttl_ms), ok_ms_(now_ms) {}
  std::int64_t ttl_ms() const { return ttl_ms_; }
  std::int64_t period_ms() const;
  // The table's answer to a renewal: "OK", "REVOKED", or anything else (no answer: "").
  void answered(std::string_view answer, std::int64_t now_ms);
  // Whether berth's containers on the host must be killed now: the lease is revoked, or was
  // not renewed for ttl / 2. (Asked every period: what appears meanwhile is killed too.)
  bool must_kill(std::int64_t now_ms) const;
  // Whether the table should be told what the last kill did (once per revocation).
  bool owes_report() const { return revoked_ && !reported_; }
  void reported() { reported_ = true; }

 private:
  std::int64_t ttl_ms_;
  std::int64_t ok_ms_;
  bool revoked_ = false;
  bool reported_ = false;
};

// Socket helpers both ends use (non-blocking sockets, poll()): each gives up at `deadline_ms`
// (monotonic_ms() time: CLOCK_BOOTTIME, which goes on while the machine is suspended, so a
// holder waking up knows its lease ran out).
std::int64_t monotonic_ms();
bool write_all(int fd, std::string_view data, std::int64_t deadline_ms);
// Reads until `stop` is in what was read (nullptr: until the peer closes), `max` bytes or the deadline.
std::string read_until(int fd, const char* stop, std::size_t max, std::int64_t deadline_ms);
// Connects `fd` (a non-blocking stream socket) to `addr`; false when it could not by the deadline.
bool connect_by(int fd, const void* addr, unsigned addr_len, std::int64_t deadline_ms);
// Sends `line` on `fd` (a non-blocking TCP socket, not yet connected) to ip:port, and gives the
// answer line; "" when none came within `timeout_ms`. Closes `fd`.
std::string exchange(int fd, const std::string& ip, int port, const std::string& line, std::int64_t timeout_ms);

}  // namespace berth::lease
