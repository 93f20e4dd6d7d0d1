// db/drift.h — whether each environment's copy still has the schema of the version it claims
// to be at (berth db drift).
//
// A drift check (db::Manager::check_drift) reads, for each copy it is given, the schema of its
// databases (db/schema.h, normalized) and compares it with the schema of the golden of the
// version the copy is at (Copy::at()), object by object:
//   - a copy whose environment serves is read through its running server;
//   - a copy whose environment is down is read through a private server on its data directory;
//     the copy is held meanwhile (db::Manager::held), so an `up` waits the second it takes;
//   - a golden's schema is read once, through a private server on a throwaway clone of it (a
//     golden is never written), and kept as standards/<name>/<version>.schema.json.
// Each copy's last result is kept beside it (copies/<env>/<db>/drift.json) and shown by
// `berth status`; a check runs one copy after the other on a worker thread.
//
// Values only; db::Manager owns checks on its loop.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "base/clock.h"
#include "db/engine.h"
#include "db/schema.h"

namespace berth::db {

// A copy to check: the loop names it, knowing whether its server runs.
struct DriftTarget {
  std::string env, db;
  // Its server answers here (the environment serves); nullopt: no server runs on it.
  std::optional<ServerSource> live;
  std::string skip;  // not "": not read, for this reason ("its server is starting")
};

// A copy's last check.
struct DriftResult {
  std::string env, db, standard;
  int version = 0;  // the version it claims, whose golden it was compared with
  enum class State { kPending, kChecking, kChecked, kFailed, kSkipped } state = State::kPending;
  std::vector<SchemaDifference> differences;  // kChecked: empty when it has no drift
  std::string error;                          // kFailed: why; kSkipped: why not
  bool live = false;                          // read through its running server
  Millis checked_at = 0;                      // wall
  Millis took_ms = 0;
};

struct DriftCheck {
  int id = 0;  // counts the daemon's checks (1, 2, ...)
  bool done = false;
  Millis started_at = 0, finished_at = 0;  // wall
  std::vector<DriftResult> rows;
};

std::string_view to_string(DriftResult::State s);
std::string_view to_string(SchemaDifference::What w);

}  // namespace berth::db
