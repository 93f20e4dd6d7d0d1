// health/prober.h — running one health probe.
//
// A Prober performs a single check from the daemon (HTTP GET on a named port, or TCP connect)
// with a timeout and reports the outcome with a short human description ("GET /healthcheck →
// 200", "connection refused"). Exec checks run inside the instance, through its runtime
// (runtime::Runtime::exec). The control loop owns scheduling (health/tracker.h); a Prober only
// probes. AsioProber runs on the loop's io_context and reads at most one status line of a
// bounded length; its timeout counts only time that thread was free to run the probe (time it
// was blocked, seen as its timer firing late, moves the deadline: asio_prober.cc). Tests use
// their own fakes.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>

#include "base/clock.h"
#include "base/result.h"
#include "model/catalog.h"

namespace berth::health {

struct ProbeTarget {
  model::HealthSpec spec;
  std::string ip;
  int port = 0;  // resolved from spec.port
};

struct ProbeResult {
  bool ok = false;
  std::string detail;
  // The daemon could not probe at all (its own descriptors or memory ran out): says nothing
  // about the instance, so it counts neither way.
  bool inconclusive = false;
};

// Cancels the probe when destroyed; the callback then never runs.
class ProbeHandle {
 public:
  virtual ~ProbeHandle() = default;
};

class Prober {
 public:
  virtual ~Prober() = default;
  virtual std::unique_ptr<ProbeHandle> probe(const ProbeTarget& target,
                                             std::function<void(ProbeResult)> done) = 0;
};

class AsioProber final : public Prober {
 public:
  // Makes a TCP socket (a descriptor) for a probe: in another network namespace, say
  // (base/netns.h), when instances live on a network the daemon is not part of.
  using SocketOpener = std::function<Result<int>()>;

  explicit AsioProber(boost::asio::io_context& io) : io_(io) {}
  std::unique_ptr<ProbeHandle> probe(const ProbeTarget& target, std::function<void(ProbeResult)> done) override;
  // From now on probes connect from sockets `open` makes (nullptr: the daemon's own). Loop thread.
  void set_socket_opener(SocketOpener open) { open_ = std::move(open); }

 private:
  boost::asio::io_context& io_;
  SocketOpener open_;
};

}  // namespace berth::health
