// daemon/daemon.h — `berth serve`: the only place where concrete implementations are wired
// together (SQLite store, process and Docker runtimes, asio prober, builder, database manager,
// name servers, control loop, HTTP API).
#pragma once

#include "runtime/sim/sim_runtime.h"
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace berth::daemon {

struct Options {
  std::string listen = "127.0.0.1:7700";
  std::string data_dir;     // required
  std::string dns_listen = "127.0.0.1:5353";  // the name server; empty: none
  int build_parallel = 0;                     // builds at once; 0: number of cores
  // Process instances starting at once (launched, not yet ready); the rest wait in line. 0: no
  // limit. (16 on 2 cores made berth_fleet_bench's 6,000 slower: each start took 2 s there.)
  int max_starting = 0;
  std::uint64_t artifact_max_bytes = 2ull << 30;
  std::string blob_store;   // store URL for database snapshots (blob/open_store.h); empty: <data-dir>/blobs
  std::string db_dir;       // goldens and copies of standard databases; empty: <data-dir>/db
  bool db_overlay = true;   // let copies use overlayfs when reflinks are not possible
  std::string docker_host;  // unix:///path/docker.sock: apps with an image run there; empty: they wait
  // Apps with an image run on the hosts of a Docker Swarm instead (runtime/cluster): their
  // Engine API endpoints, the first a manager this daemon runs on. Empty: one host (docker_host).
  std::vector<std::string> cluster_hosts;
  Millis cluster_heartbeat_ms = 1000;  // the Swarm dispatcher's heartbeat berth sets
  std::string cluster_advertise;       // the first host's address in a Swarm berth creates ("": dockerd picks)
  int cluster_max_hosts = 6;           // hosts the overlay has room for (Docker's own addresses: two per host)
  Millis cluster_lease_ms = 10'000;    // the hosts' leases (runtime/cluster/lease.h)
  std::string sandbox_image = "berth-pause:latest";
  // Database servers run in containers from this image (scripts/make-images.sh --mariadb), on a
  // volume filled from their copy: what a cluster needs, as its overlay does not reach the
  // daemon's host. Unset: berth-mariadb:latest with cluster_hosts, processes on one host;
  // "none": processes.
  std::optional<std::string> db_image;
  std::vector<std::string> member_repos;  // source.repo prefixes members may use
  std::vector<std::string> import_dirs;   // directories standards may be imported from
  std::string tls_cert, tls_key;          // PEM files: the API over HTTPS; empty: plain HTTP
  // A root daemon runs instances and builds as these ids (base/identity.h); "off": as root.
  // Ignored (instances run as the daemon's user) when the daemon is not root.
  std::string instance_ids = "900000-999999";
  // Each log file under <data-dir>/logs (instances) and <db-dir>/logs (imports) is kept under
  // this size (base/log_rotate.h), checked every 10 s.
  std::uint64_t log_max_bytes = 64ull << 20;
  // "process" (with Docker when docker_host is set), or "sim": for benchmarks and tests only,
  // every instance is simulated in memory (runtime/sim) and answers its checks as `sim` says.
  std::string runtime = "process";
  runtime::SimBehaviour sim;
  // For integration tests: the clock may be moved forward through the API (POST /v1/test/clock).
  bool test_clock = false;
};

// The data directory is made private (0700, and everything the daemon writes there 0600; with
// instance ids, 0710 with their group, which may enter it to reach artifacts and database
// copies but list nothing and read nothing else); at
// the first start an admin token is issued and written to <data-dir>/admin.token (0600), which
// the CLI on this host reads.
// Runs until SIGTERM or SIGINT. Instances keep running when the daemon exits; the next daemon
// on the same data directory adopts them. Returns the process exit status.
int run(const Options& options);

}  // namespace berth::daemon
