// db::Manager's rollouts (db/rollout.h): a standard's new version carried to the copies.
#include <algorithm>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/digest.h"
#include "base/text.h"
#include "db/files.h"
#include "db/manager.h"

namespace berth::db {
namespace fs = std::filesystem;
using nlohmann::json;

std::string_view to_string(RolloutRow::State s) {
  switch (s) {
    case RolloutRow::State::kPending: return "pending";
    case RolloutRow::State::kApplying: return "applying";
    case RolloutRow::State::kApplied: return "applied";
    case RolloutRow::State::kFailed: return "failed";
    case RolloutRow::State::kRestored: return "restored";
    case RolloutRow::State::kSkipped: return "skipped";
  }
  return "?";
}

std::string_view to_string(Rollout::State s) {
  switch (s) {
    case Rollout::State::kRunning: return "running";
    case Rollout::State::kDone: return "done";
    case Rollout::State::kStopped: return "stopped";
  }
  return "?";
}

namespace {

RolloutRow::State row_state(const std::string& s) {
  for (auto st : {RolloutRow::State::kPending, RolloutRow::State::kApplying, RolloutRow::State::kApplied,
                  RolloutRow::State::kFailed, RolloutRow::State::kRestored, RolloutRow::State::kSkipped})
    if (to_string(st) == s) return st;
  return RolloutRow::State::kFailed;
}

json saved(const Rollout& r) {
  json rows = json::array();
  for (const auto& w : r.rows)
    rows.push_back({{"env", w.env}, {"db", w.db}, {"from", w.from}, {"to", w.to}, {"state", std::string(to_string(w.state))},
                    {"phase", w.phase}, {"error", w.error}, {"started_at", w.started_at}, {"finished_at", w.finished_at},
                    {"serving", w.serving}, {"canary", w.canary}, {"user", w.account.user}, {"password", w.account.password}});
  return {{"standard", r.standard}, {"to", r.to}, {"state", std::string(to_string(r.state))},
          {"started_at", r.started_at}, {"finished_at", r.finished_at}, {"parallel", r.options.parallel},
          {"canary", r.options.canary}, {"continue_on_error", r.options.continue_on_error},
          {"unsafe_no_snapshot", r.options.unsafe_no_snapshot}, {"rows", rows}};
}

std::optional<Rollout> rollout_from(const json& j) {
  try {
    Rollout r;
    r.standard = j.at("standard");
    r.to = j.at("to");
    const std::string state = j.at("state");
    r.state = state == "running" ? Rollout::State::kRunning : state == "done" ? Rollout::State::kDone : Rollout::State::kStopped;
    r.started_at = j.value("started_at", 0ll);
    r.finished_at = j.value("finished_at", 0ll);
    r.options.parallel = j.value("parallel", 2);
    r.options.canary = j.value("canary", std::vector<std::string>{});
    r.options.continue_on_error = j.value("continue_on_error", false);
    r.options.unsafe_no_snapshot = j.value("unsafe_no_snapshot", false);
    for (const auto& w : j.at("rows")) {
      RolloutRow row;
      row.env = w.at("env");
      row.db = w.at("db");
      row.from = w.at("from");
      row.to = w.at("to");
      row.state = row_state(w.at("state"));
      row.phase = w.value("phase", "");
      row.error = w.value("error", "");
      row.started_at = w.value("started_at", 0ll);
      row.finished_at = w.value("finished_at", 0ll);
      row.serving = w.value("serving", false);
      row.canary = w.value("canary", false);
      row.account = {w.value("user", "berth"), w.value("password", "berth")};
      r.rows.push_back(std::move(row));
    }
    return r;
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

// The copy's journal: the step of a rollout it is at (db/rollout.h).
fs::path journal_of(const Copy& c) { return fs::path(c.dir) / "rollout.json"; }
std::string snapshot_of(const Copy& c) { return c.dir + "/snap"; }

Status write_journal(const Copy& c, int to, const std::string& step) {
  return write_json(journal_of(c), {{"to", to}, {"step", step}});
}

void drop_journal(const Copy& c) {
  std::error_code ec;
  fs::remove(journal_of(c), ec);
}

}  // namespace

std::string Manager::rollout_path(const std::string& standard) const { return fmt::format("{}/rollouts/{}.json", dir_, standard); }

std::string Manager::saved_migration(const std::string& standard, const Migration& m) const {
  return fmt::format("{}/standards/{}/migrations/{}.sql", dir_, standard, m.checksum);
}

Status Manager::save_rollout(const Rollout& r) const { return write_json(rollout_path(r.standard), saved(r)); }

const Rollout* Manager::rollout_of(const std::string& standard) const {
  auto it = rollouts_.find(standard);
  return it == rollouts_.end() ? nullptr : &it->second;
}

const RolloutRow* Manager::row_of(const std::string& env, const std::string& db) const {
  for (const auto& [s, r] : rollouts_)
    if (r.state == Rollout::State::kRunning)
      for (const auto& row : r.rows)
        if (row.env == env && row.db == db && row.state == RolloutRow::State::kApplying) return &row;
  return nullptr;
}

RolloutRow* Manager::row_of(const std::string& env, const std::string& db) {
  return const_cast<RolloutRow*>(static_cast<const Manager*>(this)->row_of(env, db));
}

int Manager::pending_migrations(const std::string& standard, int from) const {
  auto vs = versions_.find(standard);
  if (vs == versions_.end()) return 0;
  int n = 0;
  for (auto it = vs->second.upper_bound(from); it != vs->second.end() && !it->second.migrations.empty(); ++it)
    n += static_cast<int>(it->second.migrations.size());
  return n;
}

Result<std::vector<Migration>> Manager::migrations_between(const std::string& standard, int from, int to) const {
  std::vector<Migration> out;
  const auto& vs = versions_.at(standard);
  for (int v = from + 1; v <= to; ++v) {
    auto it = vs.find(v);
    if (it == vs.end()) return not_found(fmt::format("version {} of {} was removed: the copy cannot be migrated past it", v, standard));
    if (it->second.migrations.empty())
      return conflict(fmt::format("version {} of {} is an import, not a release: a copy gets it only when made again "
                                  "(berth db clone DB --env ENV)",
                                  v, standard));
    for (Migration m : it->second.migrations) {
      m.path = saved_migration(standard, m);
      out.push_back(std::move(m));
    }
  }
  return out;
}

Result<const Rollout*> Manager::rollout(const std::string& standard, int to, const RolloutOptions& options,
                                        const std::vector<RolloutTarget>& targets) {
  auto vs = versions_.find(standard);
  if (vs == versions_.end() || vs->second.empty()) return not_found(fmt::format("standard '{}' has no versions", standard));
  if (auto r = rollouts_.find(standard); r != rollouts_.end() && r->second.state == Rollout::State::kRunning)
    return conflict(fmt::format("a rollout of {} to version {} is running; wait for it (berth db rollout {} --show)", standard,
                                r->second.to, standard));
  if (importing_.count(standard))
    return conflict(fmt::format("version {} of standard '{}' is being made; wait for it", importing_[standard], standard));
  if (!to) to = vs->second.rbegin()->first;
  if (!vs->second.count(to))
    return not_found(fmt::format("standard '{}' has no version {} (latest is {})", standard, to, vs->second.rbegin()->first));
  if (options.parallel < 1 || options.parallel > 64)
    return invalid(fmt::format("parallel: {} is not between 1 and 64", options.parallel));
  for (const auto& e : options.canary)
    if (std::none_of(targets.begin(), targets.end(), [&](const RolloutTarget& t) { return t.env == e; }))
      return invalid(fmt::format("canary '{}': no environment of that name has a copy of {}", e, standard));
  Rollout r;
  r.standard = standard;
  r.to = to;
  r.options = options;
  r.started_at = clock_.wall_ms();
  for (const auto& t : targets) {
    RolloutRow row;
    row.env = t.env;
    row.db = t.db;
    row.to = to;
    row.serving = t.serving;
    row.account = t.account;
    row.canary = std::count(options.canary.begin(), options.canary.end(), t.env) > 0;
    const Copy* c = find_copy(t.env, t.db);
    row.from = c ? c->at() : 0;
    std::string skip = t.skip;
    if (skip.empty() && (!c || c->standard != standard)) skip = fmt::format("it has no copy of {}", standard);
    if (skip.empty() && c->at() >= to) skip = fmt::format("at version {} already", c->at());
    if (skip.empty() && making_copy(t.env, t.db)) skip = "its copy is being made";
    if (skip.empty())
      if (auto m = migrations_between(standard, c->at(), to); !m.ok()) skip = m.error().message;
    if (!skip.empty()) {
      row.state = RolloutRow::State::kSkipped;
      row.phase = skip;
    }
    r.rows.push_back(std::move(row));
  }
  BERTH_TRY(save_rollout(r));
  Rollout& slot = rollouts_[standard] = std::move(r);
  start_rows(slot);
  if (on_change_) on_change_();
  return &slot;
}

void Manager::start_rows(Rollout& r) {
  if (r.state != Rollout::State::kRunning) return;
  int active = 0;
  bool failed = false, canary_failed = false, canary_left = false, pending = false;
  for (const auto& row : r.rows) {
    const bool bad = row.state == RolloutRow::State::kFailed || row.state == RolloutRow::State::kRestored;
    active += row.state == RolloutRow::State::kApplying;
    failed |= bad;
    canary_failed |= bad && row.canary;
    canary_left |= row.canary && (row.state == RolloutRow::State::kPending || row.state == RolloutRow::State::kApplying);
    pending |= row.state == RolloutRow::State::kPending;
  }
  const bool stop = canary_failed || (failed && !r.options.continue_on_error);
  bool waiting = false;  // a copy busy with a drift check or its own migrations: started once it is free (copy_free())
  if (!stop)
    for (auto& row : r.rows) {
      if (active >= r.options.parallel) break;
      if (row.state != RolloutRow::State::kPending || (canary_left && !row.canary)) continue;
      if (drift_reading_.count(key(row.env, row.db)) || migrating_.count(key(row.env, row.db))) {
        waiting = true;
        continue;
      }
      start_row(r, row);
      ++active;
    }
  if (active || waiting) return;
  pending = std::any_of(r.rows.begin(), r.rows.end(), [](const RolloutRow& w) { return w.state == RolloutRow::State::kPending; });
  r.state = pending ? Rollout::State::kStopped : Rollout::State::kDone;
  r.finished_at = clock_.wall_ms();
  for (auto& row : r.rows)
    if (row.state == RolloutRow::State::kPending)
      row.phase = canary_failed ? "not started: a canary failed" : "not started: the rollout stopped at the first failure";
  if (Status st = save_rollout(r); !st.ok()) fmt::print(stderr, "berth: rollout of {}: {}\n", r.standard, st.error().message);
}

void Manager::start_row(Rollout& r, RolloutRow& row) {
  row.state = RolloutRow::State::kApplying;
  row.started_at = clock_.wall_ms();
  row.error.clear();
  row.step = RolloutRow::Step::kWaitDown;
  row.snapshot = false;
  row.phase = r.options.unsafe_no_snapshot ? "stopping its server" : "stopping its server for a snapshot";
  (void)save_rollout(r);
}

namespace {

// Why a row's copy must have its server down now: while it is snapshotted or put back, and while
// a private server migrates it (its environment is down). nullopt: it may run.
std::optional<std::string> hold_of(const RolloutRow& row) {
  if (row.state != RolloutRow::State::kApplying) return std::nullopt;
  switch (row.step) {
    case RolloutRow::Step::kWaitDown:
    case RolloutRow::Step::kSnapshot:
    case RolloutRow::Step::kWaitDownRestore:
    case RolloutRow::Step::kRestore: break;
    case RolloutRow::Step::kApply:
      if (row.serving) return std::nullopt;
      break;
    case RolloutRow::Step::kNone:
    case RolloutRow::Step::kWaitReady: return std::nullopt;
  }
  return "rollout to version " + std::to_string(row.to) + ": " + row.phase;
}

}  // namespace

std::optional<std::string> Manager::held(const std::string& env, const std::string& db) const {
  const RolloutRow* row = row_of(env, db);
  if (auto why = row ? hold_of(*row) : std::nullopt) return why;
  if (drift_reading_.count(key(env, db))) return std::string("drift check reading its schema through a private server");
  if (auto m = migrating_.find(key(env, db)); m != migrating_.end() && m->second)
    return std::string("migration of the environment's own (berth db migrate) through a private server");
  return std::nullopt;
}

std::vector<std::pair<std::string, std::string>> Manager::holds() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [s, r] : rollouts_)
    if (r.state == Rollout::State::kRunning)
      for (const auto& row : r.rows)
        if (hold_of(row)) out.emplace_back(row.env, row.db);
  return out;
}

void Manager::server_down(const std::string& env, const std::string& db) {
  RolloutRow* row = row_of(env, db);
  auto c = copies_.find(key(env, db));
  if (!row || c == copies_.end()) return;
  Rollout& r = rollouts_.at(c->second.standard);
  const Copy copy = c->second;
  if (row->step == RolloutRow::Step::kWaitDown) {
    if (r.options.unsafe_no_snapshot) {
      if (Status st = write_journal(copy, row->to, "apply"); !st.ok()) return finish_row(r, *row, RolloutRow::State::kFailed, st.error().message);
      row->phase = "no snapshot (--unsafe-no-snapshot)";
      if (row->serving) {
        row->step = RolloutRow::Step::kWaitReady;
        if (on_change_) on_change_();
      } else {
        apply_row(r, *row, std::nullopt);
      }
      return;
    }
    if (Status st = write_journal(copy, row->to, "snapshot"); !st.ok())
      return finish_row(r, *row, RolloutRow::State::kFailed, st.error().message);
    row->step = RolloutRow::Step::kSnapshot;
    row->snapshot = true;
    row->phase = "snapshotting its data directory";
    CloneOptions own = clone_options_;
    own.allow_overlay = false;  // a snapshot must not change when the copy does
    run_worker([this, alive = alive_, copy, own, standard = r.standard, to = row->to] {
      const Millis t0 = steady_ms();
      Result<CloneMethod> made = not_found("");
      Status st = catching([&]() -> Status {
        // An overlay copy of an environment that is down is not mounted after a reboot.
        BERTH_TRY(ensure_mounted(golden_path(copy.standard, copy.version), copy.dir, copy.method));
        (void)remove_copy(snapshot_of(copy));
        made = clone_tree(copy.datadir, snapshot_of(copy), own);
        if (!made.ok()) return made.error();
        return write_journal(copy, to, "apply");
      });
      if (!st.ok()) {  // nothing changed: no snapshot, no journal (removed here, not on the loop)
        (void)remove_copy(snapshot_of(copy));
        drop_journal(copy);
      }
      const Millis took = steady_ms() - t0;
      executor_.post([this, alive, copy, st, made, took, standard] {
        if (!*alive) return;
        RolloutRow* w = row_of(copy.env, copy.db);
        if (!w || w->step != RolloutRow::Step::kSnapshot) return;
        Rollout& ro = rollouts_.at(standard);
        if (!st.ok()) {
          w->snapshot = false;
          return finish_row(ro, *w, RolloutRow::State::kFailed, "no snapshot, nothing changed: " + st.error().message);
        }
        w->phase = *made == CloneMethod::kReflink
                       ? fmt::format("snapshot by reflink in {}", format_duration(took))
                       : fmt::format("snapshot by copying every byte in {} (no reflink on this filesystem)", format_duration(took));
        if (w->serving) {
          w->step = RolloutRow::Step::kWaitReady;  // no longer held: the loop starts the server
          (void)save_rollout(ro);
          if (on_change_) on_change_();
        } else {
          apply_row(ro, *w, std::nullopt);
        }
      });
    });
    return;
  }
  if (row->step != RolloutRow::Step::kWaitDownRestore) return;
  if (Status st = write_journal(copy, row->to, "restore"); !st.ok())
    return finish_row(r, *row, RolloutRow::State::kFailed, row->error + "; cannot put the snapshot back: " + st.error().message);
  row->step = RolloutRow::Step::kRestore;
  row->phase = "putting the snapshot back";
  run_worker([this, alive = alive_, copy, standard = r.standard] {
    Copy back = copy;
    Status st = catching([&]() -> Status {
      const std::string snap = snapshot_of(back) + "/data";
      std::error_code ec;
      // (A restart after the snapshot was moved into place finds it done.)
      if (fs::exists(snap, ec) || !fs::exists(back.datadir, ec)) BERTH_TRY(put_back(back.dir, snap));
      if (back.method == CloneMethod::kOverlay) back.method = CloneMethod::kCopy;
      if (back.owner) BERTH_TRY(give_to(back, *back.owner));
      BERTH_TRY(save_copy(back));
      (void)remove_copy(snapshot_of(back));
      drop_journal(back);
      return {};
    });
    executor_.post([this, alive, back, st, standard] {
      if (!*alive) return;
      RolloutRow* w = row_of(back.env, back.db);
      if (!w || w->step != RolloutRow::Step::kRestore) return;
      Rollout& ro = rollouts_.at(standard);
      if (!st.ok()) return finish_row(ro, *w, RolloutRow::State::kFailed, w->error + "; putting the snapshot back failed: " + st.error().message);
      copies_[key(back.env, back.db)] = back;
      if (w->retry) {
        // Put back after a daemon restart: applied again from the start.
        w->retry = false;
        w->state = RolloutRow::State::kPending;
        w->step = RolloutRow::Step::kNone;
        w->phase = "put back to its snapshot after the daemon stopped mid-migration; to be applied again";
        w->error.clear();
        (void)save_rollout(ro);
        start_rows(ro);
        if (on_change_) on_change_();
        return;
      }
      finish_row(ro, *w, RolloutRow::State::kRestored, w->error);
    });
  });
}

void Manager::server_ready(const std::string& env, const std::string& db, const ServerSource& server) {
  server_ready(env, db);
  RolloutRow* row = row_of(env, db);
  auto c = copies_.find(key(env, db));
  if (!row || c == copies_.end() || row->step != RolloutRow::Step::kWaitReady) return;
  apply_row(rollouts_.at(c->second.standard), *row, server);
}

void Manager::apply_row(Rollout& r, RolloutRow& row, std::optional<ServerSource> server) {
  const Copy copy = copies_.at(key(row.env, row.db));
  auto planned = migrations_between(r.standard, copy.at(), row.to);
  if (!planned.ok()) return row_applied(r, row, planned.error(), {});
  row.step = RolloutRow::Step::kApply;
  row.phase = fmt::format("{}; applying {} migration(s) through {}", row.phase, planned->size(),
                          server ? "its server" : "a private server");
  (void)save_rollout(r);
  const std::string log = fmt::format("{}/logs/rollout-{}@{}-{}-{}.log", dir_, r.standard, row.to, row.env, row.db);
  run_worker([this, alive = alive_, copy, migrations = std::move(*planned), server, account = row.account, log,
              standard = r.standard, to = row.to]() mutable {
    Copy moved = copy;
    Status st = catching([&]() -> Status {
      std::error_code ec;
      fs::create_directories(fs::path(log).parent_path(), ec);
      // The texts kept at release, checked against what the version recorded.
      for (auto& m : migrations) {
        std::ifstream in(m.path, std::ios::binary);
        if (!in) return not_found(fmt::format("the text of {} (released in version {}) is not kept at {}", m.file, m.released_in, m.path));
        m.sql.assign(std::istreambuf_iterator<char>(in), {});
        if (sha256_hex(m.sql) != m.checksum)
          return conflict(fmt::format("the kept text of {} has checksum {}, not the released {}", m.file, sha256_hex(m.sql), m.checksum));
      }
      if (server) {
        BERTH_TRY(engine_->apply_live(*server, migrations, log));
      } else {
        BERTH_TRY(on_private_server(copy, [&] { return engine_->apply(copy.datadir, migrations, account, log); }));
      }
      moved.at_version = to;
      for (auto m : migrations) {
        m.sql.clear(), m.path.clear();
        moved.applied.push_back(std::move(m));
      }
      // Recorded before the journal goes: a restart in between finds the copy at `to`.
      BERTH_TRY(save_copy(moved));
      drop_journal(moved);
      (void)remove_copy(snapshot_of(moved));
      return {};
    });
    executor_.post([this, alive, moved, st, standard, n = migrations.size()] {
      if (!*alive) return;
      RolloutRow* w = row_of(moved.env, moved.db);
      if (!w || w->step != RolloutRow::Step::kApply) return;
      Rollout& ro = rollouts_.at(standard);
      if (st.ok()) copies_[key(moved.env, moved.db)] = moved;
      row_applied(ro, *w, st, std::vector<Migration>(n));
    });
  });
}

void Manager::row_applied(Rollout& r, RolloutRow& row, Status st, std::vector<Migration> applied) {
  if (st.ok()) {
    finish_row(r, row, RolloutRow::State::kApplied, "");
    if (on_event_)
      on_event_(row.env, "db-rolled-out", row.db,
                fmt::format("{} {} → {}: {} migration(s) applied", r.standard, row.from, row.to, applied.size()));
    return;
  }
  row.error = st.error().message;
  if (!row.snapshot) {
    const Copy* c = find_copy(row.env, row.db);
    if (c) drop_journal(*c);
    finish_row(r, row, RolloutRow::State::kFailed, row.error + (r.options.unsafe_no_snapshot ? " (no snapshot: the copy is left as the failure left it)" : ""));
    return;
  }
  // Put back: the server stops again (the loop sees the copy held), then the snapshot returns.
  row.step = RolloutRow::Step::kWaitDownRestore;
  row.phase = "stopping its server to put the snapshot back";
  (void)save_rollout(r);
  if (on_change_) on_change_();
}

void Manager::finish_row(Rollout& r, RolloutRow& row, RolloutRow::State state, const std::string& error) {
  row.state = state;
  row.error = error;
  row.step = RolloutRow::Step::kNone;
  row.finished_at = clock_.wall_ms();
  if (state != RolloutRow::State::kApplied) {
    row.phase = state == RolloutRow::State::kRestored ? "put back to its snapshot: as it was before the rollout" : "";
    if (on_event_)
      on_event_(row.env, "db-rollout-failed", row.db,
                fmt::format("{} {} → {}: {}{}", r.standard, row.from, row.to, error,
                            state == RolloutRow::State::kRestored ? " (put back to its snapshot)" : ""));
  }
  (void)save_rollout(r);
  start_rows(r);
  if (on_change_) on_change_();
}

void Manager::load_rollouts() {
  std::error_code ec;
  for (const auto& f : fs::directory_iterator(fs::path(dir_) / "rollouts", ec)) {
    auto j = read_json(f.path());
    if (!j) continue;
    auto r = rollout_from(*j);
    if (!r) continue;
    Rollout& ro = rollouts_[r->standard] = std::move(*r);
    if (ro.state != Rollout::State::kRunning) continue;
    // A daemon that stopped mid-rollout: each copy it was at is found again from its journal.
    for (auto& row : ro.rows) {
      if (row.state != RolloutRow::State::kApplying) continue;
      auto c = copies_.find(key(row.env, row.db));
      if (c == copies_.end()) {
        row.state = RolloutRow::State::kFailed;
        row.error = "its copy is gone";
        continue;
      }
      const Copy& copy = c->second;
      auto journal = read_json(journal_of(copy));
      const std::string step = journal ? journal->value("step", "") : "";
      if (copy.at() >= row.to) {  // applied and recorded; the journal had not gone yet
        drop_journal(copy);
        (void)remove_copy(snapshot_of(copy));
        row.state = RolloutRow::State::kApplied;
        row.finished_at = clock_.wall_ms();
      } else if (step.empty() || step == "snapshot") {  // nothing applied yet
        drop_journal(copy);
        (void)remove_copy(snapshot_of(copy));
        row.state = RolloutRow::State::kPending;
        row.phase = "interrupted by a daemon restart before its migrations; to be applied";
      } else if (fs::exists(snapshot_of(copy) + "/data", ec) || step == "restore") {
        row.step = RolloutRow::Step::kWaitDownRestore;
        row.snapshot = true;
        row.retry = true;
        row.phase = "the daemon stopped while its migrations ran: putting its snapshot back";
      } else {
        drop_journal(copy);
        row.state = RolloutRow::State::kFailed;
        row.error = "the daemon stopped while its migrations ran and it has no snapshot (--unsafe-no-snapshot): it may be "
                    "between versions";
      }
    }
    start_rows(ro);
  }
}

void Manager::copy_free(const std::string& env, const std::string& db) {
  const Copy* c = find_copy(env, db);
  if (!c) return;
  auto r = rollouts_.find(c->standard);
  if (r != rollouts_.end() && r->second.state == Rollout::State::kRunning) start_rows(r->second);
}

}  // namespace berth::db
