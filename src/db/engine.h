// db/engine.h — what berth needs from a database engine to make standards and copies of them.
//
// The calls are blocking and run on worker threads of db::Manager; each writes what its tools
// print to `log`. How a server is run on a copy (command line, health check, the apps' URL) is
// the engine's profile (db/profile/profile.h), which the catalog and the loop use; this
// interface covers making the data directory of a standard, changing it (a release's
// migrations) and reading its schema. Implementations: db/mariadb.
#pragma once

#include <string>

#include "base/result.h"
#include "db/migrations.h"
#include "db/schema.h"

namespace berth::db {

// A running server to copy from: host:port (TCP) or a unix socket path, and an account that
// may take a backup.
struct ServerSource {
  std::string address;  // "127.0.0.1:3306" or "/run/mysqld/mysqld.sock"
  std::string user = "root";
  std::string password;
};

// The account every standard carries, so berth's health check and the apps can log in.
struct Account {
  std::string user = "berth";
  std::string password = "berth";
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual std::string name() const = 0;
  // A consistent physical copy of a running server into `dir` (new), ready to start on, without
  // stopping the source.
  virtual Status copy_running(const ServerSource& source, const std::string& dir, const std::string& log) = 0;
  // A copy in `dir` (new) of a stopped server's data directory `from`; refuses a directory that
  // is not one of this engine's.
  virtual Status copy_datadir(const std::string& from, const std::string& dir, const std::string& log) = 0;
  // An empty data directory in `dir` (new) with an SQL dump loaded into it.
  virtual Status load_dump(const std::string& dump, const std::string& dir, const std::string& log) = 0;
  // Start a private server on `dir` (no network), make sure `account` exists with every
  // privilege, shut it down cleanly. Every standard is sealed before it is snapshotted, so any
  // copy starts without crash recovery and accepts the account.
  virtual Status seal(const std::string& dir, const Account& account, const std::string& log) = 0;
  // Apply `migrations` (their files, Migration::path), in order, to the stopped server's data
  // directory `dir` (a sealed one: `account` logs in) through a private server, stopped cleanly
  // after. The first file that fails stops it: the error names the file, the line and the
  // server's error. `dir` then has what ran before the failure: the caller throws it away.
  virtual Status apply(const std::string& dir, const std::vector<Migration>& migrations, const Account& account,
                       const std::string& log) = 0;
  // Apply `migrations` (their files), in order, through the running server at `server` (an
  // environment's copy: it keeps serving meanwhile), as the account given there. Errors as
  // apply()'s; what ran before a failure stays applied (a rollout puts the copy back).
  virtual Status apply_live(const ServerSource& server, const std::vector<Migration>& migrations, const std::string& log) = 0;
  // The schema (db/schema.h) of every database of the running server at `server` but the
  // server's own (mysql, sys, ...), read as the account given there.
  virtual Result<Schema> schema(const ServerSource& server, const std::string& log) = 0;
  // The same of the stopped server's data directory `dir`, through a private server stopped
  // cleanly after. It writes to `dir`: give it a copy, never a golden.
  virtual Result<Schema> schema_of(const std::string& dir, const std::string& log) = 0;
};

}  // namespace berth::db
