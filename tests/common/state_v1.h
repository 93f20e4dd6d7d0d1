// tests/common/state_v1.h — the state.db schema the first berth wrote (user_version 1), for the
// tests that check a data directory of that version migrates.
#pragma once

namespace berth::testing_state {

inline constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE catalog (id INTEGER PRIMARY KEY CHECK (id = 1), text TEXT NOT NULL, filename TEXT NOT NULL,
  applied_at INTEGER NOT NULL, base_dir TEXT NOT NULL DEFAULT '');
CREATE TABLE environments_up (env TEXT PRIMARY KEY, since INTEGER NOT NULL);
CREATE TABLE leases (env TEXT NOT NULL, app TEXT NOT NULL, ordinal INTEGER NOT NULL, ip INTEGER NOT NULL UNIQUE,
  released_at INTEGER NOT NULL, PRIMARY KEY (env, app, ordinal));
CREATE TABLE instances (env TEXT NOT NULL, app TEXT NOT NULL, ordinal INTEGER NOT NULL, pid INTEGER NOT NULL,
  pgid INTEGER NOT NULL, start_ticks INTEGER NOT NULL, fingerprint TEXT NOT NULL, restarts INTEGER NOT NULL,
  started_at INTEGER NOT NULL, PRIMARY KEY (env, app, ordinal));
CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, env TEXT NOT NULL,
  type TEXT NOT NULL, app TEXT NOT NULL, ordinal INTEGER NOT NULL, ip TEXT NOT NULL, message TEXT NOT NULL);
CREATE INDEX events_env ON events (env, id);
PRAGMA user_version = 1;
)sql";

}  // namespace berth::testing_state
