// berth-pause: the program of a cluster's sandbox container (runtime/cluster/cluster_runtime.h).
// It holds a network namespace on the overlay for the daemon and does nothing else; it ends on
// SIGTERM or SIGINT. Linked statically: its image holds this file alone.
#include <signal.h>
#include <unistd.h>

int main() {
  struct sigaction sa {};
  sa.sa_handler = [](int) { _exit(0); };
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  for (;;) pause();
}
