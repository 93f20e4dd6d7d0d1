// cluster/placement.h — which host an instance runs on: berth's own placement over the hosts the
// Swarm reports, honouring resource requests and constraints like Marathon's.
//
// A constraint is [field, OPERATOR, value?], the field being `hostname` (or `host`) or one of the
// hosts' labels (`rack`):
//   UNIQUE          every instance of the app on a different value of the field;
//   CLUSTER value   all on hosts whose field is `value`;
//   IS value        the same as CLUSTER value (Marathon 1.5's name for it);
//   GROUP_BY [n]    spread evenly over the field's values (n: how many values to expect; when
//                   fewer are schedulable, the instances wait rather than crowd the others);
//   MAX_PER n       at most n instances per value of the field;
//   LIKE regex      only on hosts whose field matches (the whole value);
//   UNLIKE regex    only on hosts whose field does not match.
// A host without the field's label satisfies no constraint on it but UNLIKE.
//
// Among the hosts that pass (schedulable: ready and active; enough CPU and memory left of what
// they report once the instances already placed there are counted; every constraint), the
// instance goes where its app has the fewest instances, then where the fewest CPUs and memory
// are taken (as a share of the host's), then where the fewest instances are still starting (a
// host sets up its containers' overlay endpoints one after another: many moved at once start
// sooner spread out), then where the fewest instances run, then to the first by name: the same inputs give the same
// host, so a restarted daemon decides as the one before.
//
// Pure values and functions: any thread. Parsing a constraint names what is wrong and what would
// be valid; the catalog locates it in its file.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "base/result.h"
#include "model/constraint.h"

namespace berth::cluster {

using model::Constraint;
using model::parse_constraint;

// A host as placement sees it.
struct HostSlot {
  std::string name;  // its hostname, as the Swarm reports it
  std::map<std::string, std::string> labels;
  bool schedulable = true;  // ready and active (not down, drained or paused)
  std::string why_not;      // when not schedulable: what the Swarm says ("down", "drain")
  std::int64_t nano_cpus = 0;     // what it has
  std::int64_t memory_bytes = 0;
};

// An instance already on a host.
struct Placed {
  std::string host;
  std::string app;  // the app's key, one per environment and app: "beta-7/orders"
  int ordinal = 0;
  std::int64_t nano_cpus = 0;  // what it asked for (0: no request)
  std::int64_t memory_bytes = 0;
  bool starting = false;  // launched there and not yet running
};

// The instance to place.
struct Request {
  std::string app;  // as in Placed
  int ordinal = 0;
  std::int64_t nano_cpus = 0;
  std::int64_t memory_bytes = 0;
  std::vector<Constraint> constraints;
  // The host it keeps to when that host can take it: where its data is (a database's volume).
  // Empty: none.
  std::string prefer;
};

// The host for `request`, or an error (ErrorCode::kExhausted) saying for each host why not.
// `placed` must not hold the request's own instance.
Result<std::string> place(const Request& request, const std::vector<HostSlot>& hosts, const std::vector<Placed>& placed);

}  // namespace berth::cluster
