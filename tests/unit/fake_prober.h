// A health prober for unit tests: probes pass for the addresses marked healthy, and the answer
// comes back through the executor like a real one's. Loop thread only.
#pragma once

#include <functional>
#include <memory>
#include <set>
#include <string>

#include "base/executor.h"
#include "health/prober.h"

namespace berth::testing_support {

class FakeProber : public health::Prober {
 public:
  explicit FakeProber(Executor& ex) : ex_(ex) {}
  std::unique_ptr<health::ProbeHandle> probe(const health::ProbeTarget& t, std::function<void(health::ProbeResult)> done) override {
    bool ok = healthy.count(t.ip) > 0;
    ++probes;
    if (daemon_out_of_descriptors) {
      ex_.post([done] { done({false, "berth could not probe: Too many open files", true}); });
      return std::make_unique<health::ProbeHandle>();
    }
    ex_.post([done, ok] { done({ok, ok ? "GET /healthcheck → 200" : "GET /healthcheck → connection refused"}); });
    return std::make_unique<health::ProbeHandle>();
  }
  std::set<std::string> healthy;
  int probes = 0;
  bool daemon_out_of_descriptors = false;  // every probe inconclusive, as when the daemon hits EMFILE

 private:
  Executor& ex_;
};

}  // namespace berth::testing_support
