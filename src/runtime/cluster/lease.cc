#include "runtime/cluster/lease.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <vector>

namespace berth::lease {

namespace {

// Words of printable ASCII without spaces, separated by single spaces.
std::optional<std::vector<std::string_view>> words(std::string_view line, std::string* why) {
  if (line.size() > kMaxLine) {
    *why = "line longer than " + std::to_string(kMaxLine) + " bytes";
    return std::nullopt;
  }
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= line.size(); ++i) {
    if (i < line.size() && line[i] != ' ') {
      const unsigned char c = static_cast<unsigned char>(line[i]);
      if (c < 0x21 || c > 0x7e) {
        *why = "a byte that is not printable ASCII at column " + std::to_string(i + 1);
        return std::nullopt;
      }
      continue;
    }
    if (i == start) {
      *why = "an empty word at column " + std::to_string(i + 1);
      return std::nullopt;
    }
    out.push_back(line.substr(start, i - start));
    start = i + 1;
  }
  return out;
}

std::optional<std::int64_t> integer(std::string_view s) {
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace

std::optional<Request> parse_request(std::string_view line, std::string* why) {
  auto w = words(line, why);
  if (!w) return std::nullopt;
  static const std::pair<std::string_view, Verb> verbs[] = {
      {"RENEW", Verb::kRenew}, {"REPORT", Verb::kReport}, {"REVOKE", Verb::kRevoke},
      {"RESTORE", Verb::kRestore}, {"ASK", Verb::kAsk}};
  auto it = std::find_if(std::begin(verbs), std::end(verbs), [&](const auto& v) { return !w->empty() && v.first == (*w)[0]; });
  if (it == std::end(verbs)) {
    *why = "unknown verb; expected RENEW, REPORT, REVOKE, RESTORE or ASK";
    return std::nullopt;
  }
  const std::size_t want = it->second == Verb::kReport || it->second == Verb::kRenew ? 4 : 3;
  const bool flagged = it->second == Verb::kRenew && w->size() == 5;  // RENEW's optional `nodocker`
  if (w->size() != want && !flagged) {
    *why = std::string(it->first) + " takes " + std::to_string(want - 1) + " words" +
           (it->second == Verb::kRenew ? " (and `nodocker`)" : "");
    return std::nullopt;
  }
  if (flagged && (*w)[4] != "nodocker") {
    *why = "RENEW's fifth word can only be `nodocker`";
    return std::nullopt;
  }
  Request r;
  r.verb = it->second;
  r.token = (*w)[1];
  r.host = (*w)[2];
  if (r.verb == Verb::kReport) r.what = (*w)[3];
  if (r.verb == Verb::kRenew) {
    auto ttl = integer((*w)[3]);
    if (!ttl || *ttl <= 0 || *ttl > 86'400'000) {
      *why = "RENEW's lease must be milliseconds, 1 to 86400000";
      return std::nullopt;
    }
    r.ttl_ms = *ttl;
    r.nodocker = flagged;
  }
  return r;
}

std::string format(const Request& r) {
  static const char* names[] = {"RENEW", "REPORT", "REVOKE", "RESTORE", "ASK"};
  std::string out = std::string(names[static_cast<int>(r.verb)]) + " " + r.token + " " + r.host;
  if (r.verb == Verb::kReport) out += " " + r.what;
  if (r.verb == Verb::kRenew) out += " " + std::to_string(r.ttl_ms) + (r.nodocker ? " nodocker" : "");
  return out;
}

std::optional<Lease> parse_lease(std::string_view line) {
  std::string why;
  auto w = words(line, &why);
  if (!w || (w->size() != 6 && w->size() != 7) || (*w)[0] != "LEASE") return std::nullopt;
  auto silent = integer((*w)[1]);
  auto up = integer((*w)[2]);
  auto ttl = integer((*w)[5]);
  auto nodocker = w->size() == 7 ? integer((*w)[6]) : std::optional<std::int64_t>(-1);
  if (!silent || !up || !ttl || !nodocker || *silent < -1 || *up < 0 || *ttl < -1 || *nodocker < -1 ||
      ((*w)[3] != "0" && (*w)[3] != "1"))
    return std::nullopt;
  Lease l;
  l.silent_ms = *silent;
  l.up_ms = *up;
  l.revoked = (*w)[3] == "1";
  l.report = (*w)[4] == "-" ? "" : std::string((*w)[4]);
  l.ttl_ms = *ttl;
  l.nodocker_ms = *nodocker;
  return l;
}

std::string Table::handle(std::string_view line, std::int64_t now_ms) {
  std::string why;
  auto r = parse_request(line, &why);
  if (!r) return "ERR " + why;
  if (r->token != token_) return "DENIED";
  // Hosts are few and named by berth; a table of more than this is an abuse.
  if (!hosts_.count(r->host) && hosts_.size() >= 4096) return "ERR too many hosts";
  Entry& e = hosts_[r->host];
  switch (r->verb) {
    case Verb::kRenew:
      e.ttl_ms = std::max(e.ttl_ms, r->ttl_ms);
      if (!r->nodocker) e.nodocker_since_ms.reset();
      else if (!e.nodocker_since_ms) e.nodocker_since_ms = now_ms;
      if (e.revoked) return "REVOKED";
      e.renewed_ms = now_ms;
      return "OK";
    case Verb::kReport:
      if (e.revoked) e.report = r->what;
      return "OK";
    case Verb::kRevoke:
      e.revoked = true;
      e.report.clear();
      return "OK";
    case Verb::kRestore:
      e.revoked = false;
      e.report.clear();
      return "OK";
    case Verb::kAsk:
      return "LEASE " + std::to_string(e.renewed_ms ? now_ms - *e.renewed_ms : -1) + " " +
             std::to_string(now_ms - started_ms_) + " " + (e.revoked ? "1" : "0") + " " +
             (e.report.empty() ? "-" : e.report) + " " + std::to_string(e.ttl_ms) + " " +
             std::to_string(e.nodocker_since_ms ? now_ms - *e.nodocker_since_ms : -1);
  }
  return "ERR";
}

std::int64_t Holder::period_ms() const { return std::clamp<std::int64_t>(ttl_ms_ / 10, 50, 250); }

void Holder::answered(std::string_view answer, std::int64_t now_ms) {
  if (answer == "OK") {
    ok_ms_ = now_ms;
    revoked_ = reported_ = false;
  } else if (answer == "REVOKED") {
    revoked_ = true;
  }
}

bool Holder::must_kill(std::int64_t now_ms) const { return revoked_ || now_ms - ok_ms_ > ttl_ms_ / 2; }

std::int64_t monotonic_ms() {
  timespec ts{};
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

namespace {

// Waits until `fd` is ready for `events` or the deadline passes.
bool ready(int fd, short events, std::int64_t deadline_ms) {
  for (;;) {
    const std::int64_t left = deadline_ms - monotonic_ms();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    const int n = poll(&p, 1, static_cast<int>(left));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
}

}  // namespace

bool write_all(int fd, std::string_view data, std::int64_t deadline_ms) {
  std::size_t off = 0;
  while (off < data.size()) {
    if (!ready(fd, POLLOUT, deadline_ms)) return false;
    const ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

std::string read_until(int fd, const char* stop, std::size_t max, std::int64_t deadline_ms) {
  std::string out;
  char buf[4096];
  while (out.size() < max && (!stop || out.find(stop) == std::string::npos)) {
    if (!ready(fd, POLLIN, deadline_ms)) break;
    const ssize_t n = ::read(fd, buf, std::min(sizeof buf, max - out.size()));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

bool connect_by(int fd, const void* addr, unsigned addr_len, std::int64_t deadline_ms) {
  if (::connect(fd, static_cast<const sockaddr*>(addr), addr_len) == 0) return true;
  if (errno != EINPROGRESS || !ready(fd, POLLOUT, deadline_ms)) return false;
  int err = 0;
  socklen_t len = sizeof err;
  return getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
}

std::string exchange(int fd, const std::string& ip, int port, const std::string& line, std::int64_t timeout_ms) {
  const std::int64_t deadline = monotonic_ms() + timeout_ms;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<std::uint16_t>(port));
  std::string answer;
  if (fd >= 0 && inet_pton(AF_INET, ip.c_str(), &sa.sin_addr) == 1 && connect_by(fd, &sa, sizeof sa, deadline) &&
      write_all(fd, line + "\n", deadline))
    answer = read_until(fd, "\n", kMaxLine + 1, deadline);
  if (fd >= 0) ::close(fd);
  const auto nl = answer.find('\n');
  return nl == std::string::npos ? "" : answer.substr(0, nl);
}

}  // namespace berth::lease
