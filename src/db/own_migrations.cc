// db::Manager: an environment's own migrations (berth db migrate), applied to its copy and
// recorded apart from the standard's (Copy::own).
#include <algorithm>
#include <filesystem>

#include <fmt/format.h>

#include "base/files.h"
#include "db/files.h"
#include "db/manager.h"

namespace berth::db {
namespace fs = std::filesystem;

Result<std::shared_ptr<const Job>> Manager::migrate(const std::string& env, const std::string& db, std::vector<Migration> files,
                                                    const ReleaseOptions& options, std::optional<ServerSource> live,
                                                    const Account& account) {
  const std::string k = key(env, db);
  const Copy* c = find_copy(env, db);
  if (!c) return not_found(fmt::format("{} has no copy of {} yet (it is made at the environment's first up)", env, db));
  if (making_copy(env, db) || chowning_.count(k)) return conflict(fmt::format("{}'s copy of {} is being made; wait for it", env, db));
  if (migrating_.count(k)) return conflict(fmt::format("{}'s own migrations of {} are being applied; wait for them", env, db));
  if (drift_reading_.count(k)) return conflict(fmt::format("a drift check reads {}'s copy of {}; try again in a moment", env, db));
  if (auto why = held(env, db)) return conflict(fmt::format("{}'s copy of {} is held by a {}; try again after it", env, db, *why));
  if (const RolloutRow* row = row_of(env, db); row && row->state == RolloutRow::State::kApplying)
    return conflict(fmt::format("a rollout of {} is migrating {}'s copy; try again after it", c->standard, env));
  auto ordered = ordered_migrations("the migrations given", std::move(files));
  if (!ordered.ok()) return ordered.error();
  const bool all_applied = std::all_of(ordered->begin(), ordered->end(), [&](const Migration& m) {
    return std::any_of(c->own.begin(), c->own.end(), [&](const Migration& o) { return o.file == m.file && o.checksum == m.checksum; });
  });
  if (all_applied)
    return conflict(fmt::format("nothing to apply: every migration given is applied to {}'s copy of {} already", env, db));
  // The rules of a release, against what the environment applied before (its checks first).
  auto pending = plan_release(fmt::format("{}'s copy of {}", env, db), c->own, *ordered, options);
  if (!pending.ok()) {
    Error e = pending.error();
    for (std::size_t i = 1; i < e.details.size(); ++i) e.message += "\n  " + e.details[i];
    return e;
  }
  auto job = new_job("migrate", k);
  job->set_phase(fmt::format("applying {} migration(s) through {}", pending->size(), live ? "its server" : "a private server"));
  migrating_[k] = !live;  // (through a private server: held, so that its own server waits)
  const std::string log = fmt::format("{}/logs/{}.log", dir_, job->id);
  run_worker([this, alive = alive_, job, copy = *c, migrations = std::move(*pending), live, account, log]() mutable {
    std::vector<Migration> applied;
    Copy moved = copy;
    Status st = catching([&]() -> Status {
      std::error_code ec;
      fs::create_directories(fs::path(log).parent_path(), ec);
      // Each text kept beside the copy (the engine applies files), named by its checksum.
      for (auto& m : migrations) {
        m.path = fmt::format("{}/own/{}.sql", copy.dir, m.checksum);
        BERTH_TRY(write_file_atomically(m.path, m.sql, 0600));
      }
      // One file at a time, so that each that succeeds is recorded before the next runs.
      Status ran;
      for (auto& m : migrations) {
        if (live) {
          ran = engine_->apply_live(*live, {m}, log);
        } else {
          BERTH_TRY(ensure_mounted(golden_path(copy.standard, copy.version), copy.dir, copy.method));
          Status given = on_private_server(copy, [&] {
            ran = engine_->apply(copy.datadir, {m}, account, log);
            return Status{};
          });
          BERTH_TRY(given);
        }
        if (!ran.ok()) break;
        Migration done = m;
        done.sql.clear(), done.path.clear();
        moved.own.push_back(done);
        applied.push_back(std::move(done));
        BERTH_TRY(save_copy(moved));
      }
      return ran;
    });
    executor_.post([this, alive, job, moved, st, applied = std::move(applied)] {
      if (!*alive) return;
      const std::string copy_key = key(moved.env, moved.db);
      migrating_.erase(copy_key);
      if (auto it = copies_.find(copy_key); it != copies_.end() && it->second.created_at == moved.created_at) it->second.own = moved.own;
      job->migrations = applied;
      job->finished_at = clock_.wall_ms();
      job->error = st.ok() ? "" : st.error().message;
      job->set_phase(st.ok() ? fmt::format("applied {} migration(s)", applied.size())
                             : fmt::format("failed after {} migration(s) applied", applied.size()));
      job->done = true;
      copy_free(moved.env, moved.db);
      if (on_change_) on_change_();
    });
  });
  return std::shared_ptr<const Job>(job);
}

}  // namespace berth::db
