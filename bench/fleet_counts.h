// bench/fleet_counts.h — what a benchmark reads of a fleet's progress: every environment's
// summary (GET /v1/environments?summary=1, a page of 1,000 at a time), added up. Header-only;
// any thread with its own Client.
#pragma once

#include <string>

#include "client/client.h"

namespace bench {

struct FleetCounts {
  int envs_ready = 0;
  int running = 0;  // instances launched and not stopped, ready or not
  int ready = 0;    // instances ready
};

// The counts, or why the API did not answer (`error`, when given).
inline bool fleet_counts(berth::client::Client& c, FleetCounts* out, std::string* error = nullptr) {
  FleetCounts n;
  std::string after;
  for (;;) {
    auto r = c.get("/v1/environments?summary=1&limit=1000" + (after.empty() ? "" : "&after=" + after));
    if (!r.ok()) {
      if (error) *error = r.error().message;
      return false;
    }
    for (const auto& e : (*r)["environments"]) {
      n.envs_ready += e["ready"].get<bool>() ? 1 : 0;
      n.running += e["running_instances"].get<int>();
      n.ready += e["ready_instances"].get<int>();
    }
    if ((*r)["next"].is_null()) break;
    after = (*r)["next"];
  }
  *out = n;
  return true;
}

}  // namespace bench
