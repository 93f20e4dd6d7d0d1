// berth-pause: the program of berth's own containers in a cluster (runtime/cluster/cluster_runtime.h).
// Linked statically: its image holds this file alone.
//
//   berth-pause                       holds a network namespace on the overlay; nothing else.
//   berth-pause serve-leases PORT     the same, in the sandbox, and the cluster's lease table on
//                                     PORT (runtime/cluster/lease.h has the protocol).
//   berth-pause hold-lease SERVER:PORT HOST DATA_ID TTL_MS DOCKER_SOCKET
//                                     on every other host: renews HOST's lease; when it is
//                                     revoked, or not renewed for TTL_MS / 2, kills every running
//                                     container labelled berth.data=DATA_ID through DOCKER_SOCKET.
// The lease token is in the environment: BERTH_LEASE_TOKEN. Each mode ends on SIGTERM or SIGINT.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

namespace berth::pause {
int serve_leases(int port, const std::string& token);
int hold_lease(const std::string& server, const std::string& host, const std::string& data_id, long ttl_ms,
               const std::string& docker_socket, const std::string& token);
}  // namespace berth::pause

int main(int argc, char** argv) {
  struct sigaction sa {};
  sa.sa_handler = [](int) { _exit(0); };
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  if (argc == 1) {
    for (;;) pause();
  }
  const char* token = std::getenv("BERTH_LEASE_TOKEN");
  if (!token || std::strlen(token) < 16) {
    std::fprintf(stderr, "berth-pause: BERTH_LEASE_TOKEN (16 characters or more) is not set\n");
    return 2;
  }
  const std::string mode = argv[1];
  if (mode == "serve-leases" && argc == 3) return berth::pause::serve_leases(std::atoi(argv[2]), token);
  if (mode == "hold-lease" && argc == 7)
    return berth::pause::hold_lease(argv[2], argv[3], argv[4], std::atol(argv[5]), argv[6], token);
  std::fprintf(stderr,
               "usage: berth-pause | berth-pause serve-leases PORT | "
               "berth-pause hold-lease SERVER:PORT HOST DATA_ID TTL_MS DOCKER_SOCKET\n");
  return 2;
}
