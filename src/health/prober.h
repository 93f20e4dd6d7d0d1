// health/prober.h — running one health probe.
//
// A Prober performs a single check (HTTP GET on a named port, TCP connect, or a command) with a
// timeout and reports the outcome with a short human description ("GET /healthcheck → 200",
// "connection refused", "exit status 1"). The control loop owns scheduling (health/tracker.h);
// a Prober only probes. AsioProber runs on the loop's io_context; tests use their own fakes.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>

#include "base/clock.h"
#include "model/catalog.h"

namespace berth::health {

struct ProbeTarget {
  model::HealthSpec spec;
  std::string ip;
  int port = 0;                                // resolved from spec.port
  std::map<std::string, std::string> env;      // for exec probes
};

struct ProbeResult {
  bool ok = false;
  std::string detail;
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
  explicit AsioProber(boost::asio::io_context& io) : io_(io) {}
  std::unique_ptr<ProbeHandle> probe(const ProbeTarget& target, std::function<void(ProbeResult)> done) override;

 private:
  boost::asio::io_context& io_;
};

}  // namespace berth::health
