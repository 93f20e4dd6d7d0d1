// db/profile/profile.h — how a server of each database engine runs on an environment's copy,
// and how the apps reach it: what the catalog (model/) and the control loop need of an engine,
// without its tools (db/<engine>/ has those: import, copies, migrations).
//
// The catalog makes the app that serves `databases.NAME` from its engine's profile (command,
// port, health check, stop grace); the loop gives the apps that depend on it BERTH_DB_NAME_HOST,
// _PORT, _USER, _PASSWORD and _URL (the profile's). An engine is one file here (mariadb.cc) and
// one line of the table in profile.cc.
//
// Threading: immutable values, built once; any thread.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace berth::db {

struct ServerProfile {
  std::string engine;  // as the catalog names it: databases.NAME.engine
  int port = 0;        // the server's default port (its port named "sql")
  // The server's command line on a copy: ${datadir} (the copy), ${ip}, ${port.sql} and ${rundir}
  // (a private directory for its socket and pid file) substituted per instance; `flags` are the
  // catalog's options already made flags (option_flag()), appended.
  std::function<std::string(const std::string& flags)> command;
  // One option of the catalog's `options` (a lowercase word and its value) as the server's
  // command-line flag, shell-quoted.
  std::function<std::string(const std::string& name, const std::string& value)> option_flag;
  // The health check (an exec check: $BERTH_IP and $BERTH_PORT_SQL are the instance's), as `user`.
  std::function<std::string(const std::string& user, const std::string& password)> health_command;
  // What apps connect to.
  std::function<std::string(const std::string& user, const std::string& password, const std::string& host, int port)> url;
  std::string start_period = "10m";  // crash recovery of a big copy can take a while
  std::string interval = "5s";
  std::string stop_grace = "2m";     // a clean shutdown
  // Words of `command` a server in a container goes without (it runs as the container's user).
  std::vector<std::string> not_in_containers;
};

// The profile of `engine`; null when berth has none of that name.
const ServerProfile* server_profile(std::string_view engine);
// Every engine's name, sorted (for errors that say what would be valid).
std::vector<std::string> server_profile_names();

// Each engine's profile (db/profile/<engine>.cc).
ServerProfile mariadb_profile();

}  // namespace berth::db
