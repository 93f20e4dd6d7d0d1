// berth-pause's lease modes (runtime/cluster/lease.h): the table's server in the sandbox, and
// the holder in every other host's anchor. Plain sockets and poll(): this is a static program
// with no berth library. Every read is bounded in size and time.
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/cluster/lease.h"

namespace berth::pause {

namespace {

std::int64_t now_ms() { return lease::monotonic_ms(); }

struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

// One request line to the table at `server` ("ip:port"); its answer line, "" when none came.
std::string ask_table(const std::string& server, const std::string& line, std::int64_t timeout_ms) {
  const auto colon = server.rfind(':');
  if (colon == std::string::npos) return "";
  return lease::exchange(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), server.substr(0, colon),
                         std::atoi(server.substr(colon + 1).c_str()), line, timeout_ms);
}

// One Engine API call over the host's socket (HTTP/1.0: the answer ends when dockerd closes).
// The status (0: no answer) and the body, at most 8 MiB.
std::pair<int, std::string> docker_call(const std::string& socket_path, const std::string& method, const std::string& target,
                                        std::int64_t deadline) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof sa.sun_path) return {0, ""};
  std::memcpy(sa.sun_path, socket_path.c_str(), socket_path.size() + 1);
  Fd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.fd < 0 || !lease::connect_by(fd.fd, &sa, sizeof sa, deadline)) return {0, ""};
  const std::string req = method + " " + target + " HTTP/1.0\r\nHost: docker\r\nContent-Length: 0\r\n\r\n";
  if (!lease::write_all(fd.fd, req, deadline)) return {0, ""};
  const std::string resp = lease::read_until(fd.fd, nullptr, 8u << 20, deadline);
  int status = 0;
  if (std::sscanf(resp.c_str(), "HTTP/1.%*d %d", &status) != 1) return {0, ""};
  const auto body = resp.find("\r\n\r\n");
  return {status, body == std::string::npos ? "" : resp.substr(body + 4)};
}

// Whether the host's dockerd is gone: its socket refuses connections (or is not there). A slow or
// busy dockerd is not gone. (After a restart dockerd makes a new socket, which the one mounted
// here is not; but a restarted dockerd kills this container too, and berth makes a new one.)
bool docker_gone(const std::string& socket_path) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof sa.sun_path) return false;
  std::memcpy(sa.sun_path, socket_path.c_str(), socket_path.size() + 1);
  Fd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.fd < 0) return false;
  if (connect(fd.fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) == 0) return false;
  return errno == ECONNREFUSED || errno == ENOENT;
}

// What a kill did: the running berth containers found (-1: dockerd did not answer) and how many
// of them are dead now (killed, or already gone).
struct Killed {
  int found = -1;
  int killed = 0;
  std::string report() const {
    if (found < 0) return "nodocker";
    if (killed == found) return "fenced-" + std::to_string(killed);
    return "partial-" + std::to_string(killed) + "-of-" + std::to_string(found);
  }
};

// Kills every running container labelled berth.data=DATA_ID, within 2 s in all.
Killed kill_berth_containers(const std::string& socket_path, const std::string& data_id) {
  const std::int64_t deadline = now_ms() + 2000;
  std::string filter;
  for (char c : R"({"label":["berth.data=)" + data_id + R"("]})") {
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') filter += c;
    else {
      char hex[4];
      std::snprintf(hex, sizeof hex, "%%%02X", static_cast<unsigned char>(c));
      filter += hex;
    }
  }
  Killed out;
  auto [status, body] = docker_call(socket_path, "GET", "/containers/json?filters=" + filter, deadline);
  if (status != 200) return out;
  nlohmann::json list = nlohmann::json::parse(body, nullptr, false);
  if (!list.is_array()) return out;
  out.found = 0;
  for (const auto& c : list) {
    ++out.found;
    if (!c.is_object() || !c.contains("Id") || !c["Id"].is_string()) continue;
    const std::string id = c["Id"].get<std::string>();
    if (id.empty() || id.find_first_not_of("0123456789abcdef") != std::string::npos) continue;
    auto [st, ignored] = docker_call(socket_path, "POST", "/containers/" + id + "/kill", deadline);
    if (st == 204 || st == 404 || st == 409) ++out.killed;
  }
  return out;
}

}  // namespace

// Many connections at once, each given 500 ms to send its line, at most 8 from one address: a
// slow, silent or flooding peer (any instance on the overlay can connect) delays nobody else's
// renewal. When full, a new connection is closed at once, and the old ones are served.
int serve_leases(int port, const std::string& token) {
  const int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<std::uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_ANY);
  if (lfd < 0 || bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || listen(lfd, 1024) != 0) {
    std::fprintf(stderr, "berth-pause: listening on port %d: %s\n", port, std::strerror(errno));
    return 1;
  }
  lease::Table table(token, now_ms());
  struct Conn {
    int fd;
    std::uint32_t peer;
    std::int64_t deadline;
    std::string got;
  };
  constexpr std::size_t kMaxConns = 1024;
  constexpr int kMaxPerPeer = 8;
  std::vector<Conn> conns;
  std::map<std::uint32_t, int> per_peer;
  for (;;) {
    std::vector<pollfd> fds{{lfd, POLLIN, 0}};
    std::int64_t next = now_ms() + 1000;
    for (const auto& c : conns) {
      fds.push_back({c.fd, POLLIN, 0});
      next = std::min(next, c.deadline);
    }
    poll(fds.data(), fds.size(), static_cast<int>(std::max<std::int64_t>(0, next - now_ms())));
    const std::int64_t now = now_ms();
    // (fds[k + 1] is conns[k]: nothing is added to or taken from conns until this loop is done.)
    for (std::size_t k = 0; k < conns.size(); ++k) {
      Conn& c = conns[k];
      bool done = now >= c.deadline;
      if (fds[k + 1].revents) {
        char buf[lease::kMaxLine + 1];
        const ssize_t n = read(c.fd, buf, sizeof buf);
        if (n > 0) c.got.append(buf, static_cast<std::size_t>(n));
        else if (n == 0 || (errno != EAGAIN && errno != EINTR)) done = true;
      }
      const auto nl = c.got.find('\n');
      if (nl != std::string::npos || c.got.size() > lease::kMaxLine) {
        const std::string answer = nl == std::string::npos ? "ERR line too long" : table.handle(std::string_view(c.got).substr(0, nl), now);
        lease::write_all(c.fd, answer + "\n", now + 50);  // (a line fits the socket's buffer)
        done = true;
      }
      if (done) {
        close(c.fd);
        c.fd = -1;
        if (--per_peer[c.peer] == 0) per_peer.erase(c.peer);
      }
    }
    std::erase_if(conns, [](const Conn& c) { return c.fd < 0; });
    if (!fds[0].revents) continue;
    for (int accepted = 0; accepted < 256; ++accepted) {
      sockaddr_in from{};
      socklen_t len = sizeof from;
      const int cfd = accept4(lfd, reinterpret_cast<sockaddr*>(&from), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (cfd < 0) break;
      const std::uint32_t peer = from.sin_addr.s_addr;
      if (conns.size() >= kMaxConns || per_peer[peer] >= kMaxPerPeer) {
        if (per_peer[peer] == 0) per_peer.erase(peer);
        close(cfd);
        continue;
      }
      ++per_peer[peer];
      conns.push_back({cfd, peer, now + 500, {}});
    }
  }
}

int hold_lease(const std::string& server, const std::string& host, const std::string& data_id, long ttl_ms,
               const std::string& docker_socket, const std::string& token) {
  if (ttl_ms < 200) {
    std::fprintf(stderr, "berth-pause: a lease of %ld ms is too short\n", ttl_ms);
    return 2;
  }
  lease::Holder holder(ttl_ms, now_ms());
  lease::Request renew{lease::Verb::kRenew, token, host, "", ttl_ms};
  bool said_silent = false;
  for (;;) {
    const std::int64_t start = now_ms();
    // Each renewal says whether dockerd is there: berth takes a host whose dockerd is gone for
    // lost without waiting for the Swarm to call it down.
    renew.nodocker = docker_gone(docker_socket);
    const std::string answer = ask_table(server, lease::format(renew), holder.period_ms());
    holder.answered(answer, now_ms());
    if (holder.must_kill(now_ms())) {
      const Killed killed = kill_berth_containers(docker_socket, data_id);
      if (!said_silent || killed.found > 0) {
        std::fprintf(stderr, "berth-pause: the lease of %s is %s: %s\n", host.c_str(),
                     answer == "REVOKED" ? "revoked" : "not renewed", killed.report().c_str());
        said_silent = true;
      }
      if (holder.owes_report()) {
        const lease::Request report{lease::Verb::kReport, token, host, killed.report(), 0};
        // (A partial kill is said, and tried again next period: the report is owed until whole.)
        if (ask_table(server, lease::format(report), holder.period_ms()) == "OK" && killed.report().rfind("partial", 0) != 0)
          holder.reported();
      }
    } else {
      said_silent = false;
    }
    const std::int64_t left = holder.period_ms() - (now_ms() - start);
    if (left > 0) usleep(static_cast<useconds_t>(left * 1000));
  }
}

}  // namespace berth::pause
