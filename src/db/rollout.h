// db/rollout.h — a standard's new version carried to the environments' copies of it.
//
// A rollout (db::Manager::rollout) takes each copy in turn (`parallel` at once, the canary
// environments first) through:
//   1. its server stopped (the loop stops it and keeps it stopped while the copy is held);
//   2. a snapshot of its data directory beside it (reflink where the filesystem has it, else a
//      copy, which the row says; none with `unsafe_no_snapshot`);
//   3. its server started again, and the migrations between the copy's version and the new one
//      applied through it (the environment serves meanwhile); an environment that is down gets
//      them through a private server instead;
//   4. applied: the copy records the version and the migrations, the snapshot goes. A failed
//      file instead stops the server again and puts the snapshot back (restored), with the
//      file, its line and the server's error; the environment's apps are told by an event.
// A failure stops the rollout (rows not started stay pending) unless `continue_on_error`; a
// failed canary stops it always.
//
// Crash safety: each step is written to the copy's journal (copies/<env>/<db>/rollout.json)
// before it starts, and the rollout to rollouts/<standard>.json at each change of a row. A
// daemon killed mid-rollout finds, at its start, each copy it was at: before the migrations
// ran, the copy is as it was (its snapshot is dropped); after they started, it is put back
// to its snapshot first. Either way the row is pending again and the rollout goes on: no copy
// is left between two versions.
//
// Values only; db::Manager owns rollouts on its loop.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "base/clock.h"
#include "db/engine.h"

namespace berth::db {

struct RolloutOptions {
  int parallel = 2;                 // copies migrated at once
  std::vector<std::string> canary;  // environments migrated first; the rest only if all succeed
  bool continue_on_error = false;   // a failed copy does not stop the others from starting
  bool unsafe_no_snapshot = false;  // no snapshot: a failed copy is left as the failure left it
};

// A copy a rollout may take: the loop names it, knowing the catalog.
struct RolloutTarget {
  std::string env, db;
  bool serving = false;  // its environment is up: the migrations go through its running server
  Account account;       // what apps log in as (the catalog's user and password)
  std::string skip;      // not "": left alone, for this reason ("pinned to shop@3", "rollout: none")
};

struct RolloutRow {
  enum class State { kPending, kApplying, kApplied, kFailed, kRestored, kSkipped };
  // Where a row in kApplying is (not saved: a restart finds it again from the copy's journal).
  enum class Step { kNone, kWaitDown, kSnapshot, kWaitReady, kApply, kWaitDownRestore, kRestore };
  std::string env, db;
  int from = 0, to = 0;
  State state = State::kPending;
  std::string phase;  // kApplying: what now; kSkipped: why; kApplied: the snapshot's method
  std::string error;  // kFailed, kRestored: the file, its line and the server's error
  Millis started_at = 0, finished_at = 0;  // wall
  bool serving = false, canary = false;
  Account account;
  Step step = Step::kNone;
  bool snapshot = false;  // a snapshot exists (or is being made)
  bool retry = false;     // put back after a daemon restart: pending again once restored
};

struct Rollout {
  enum class State { kRunning, kDone, kStopped };
  std::string standard;
  int to = 0;
  RolloutOptions options;
  State state = State::kRunning;
  Millis started_at = 0, finished_at = 0;
  std::vector<RolloutRow> rows;
};

std::string_view to_string(RolloutRow::State s);
std::string_view to_string(Rollout::State s);

}  // namespace berth::db
