#include "db/mariadb/mariadb_engine.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include <fmt/format.h>

#include "base/files.h"
#include "base/subprocess.h"
#include "base/text.h"

namespace berth::db {
namespace fs = std::filesystem;

namespace {

// A server on `dir` reachable only through a socket in a temporary directory; stopped cleanly
// (mariadb-admin shutdown) by stop().
class PrivateServer {
 public:
  // `skip_grants`: no login checks until the first FLUSH PRIVILEGES (whatever accounts the
  // copied server has, root over the socket may not be one of them).
  Status start(const std::string& dir, const std::string& log, bool skip_grants) {
    run_dir_ = fs::temp_directory_path() / fmt::format("berth-mdb-{}-{}", getpid(), counter_++);
    std::error_code ec;
    fs::remove_all(run_dir_, ec);
    fs::create_directories(run_dir_, ec);
    sock_ = (run_dir_ / "s.sock").string();
    SpawnOptions o;
    o.command = fmt::format(
        "mariadbd --no-defaults --user=root --datadir={} --socket={} --pid-file={} --skip-networking --skip-log-bin "
        "--innodb-buffer-pool-load-at-startup=OFF --innodb-buffer-pool-dump-at-shutdown=OFF{}",
        shell_quote(dir), shell_quote(sock_), shell_quote((run_dir_ / "pid").string()), skip_grants ? " --skip-grant-tables" : "");
    o.env = base_environment();
    o.log_path = log;
    auto s = spawn(o);
    if (!s.ok()) return s.error().wrap("starting a private mariadbd");
    pid_ = s->pid;
    ::close(s->pidfd);
    // Wait until it answers (polling is fine here: a worker thread, not the loop).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(10);
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return unavailable(fmt::format("mariadbd on {} {} before it answered (log {})", dir, describe_wait_status(status), log));
      }
      if (run_logged(client() + " -e 'SELECT 1'", run_dir_.string() + "/ping.log", "ping").ok()) return {};
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return unavailable(fmt::format("mariadbd on {} did not answer within 10 minutes (log {})", dir, log));
  }
  // What client() logs in as from now on (root over the socket until then).
  void log_in_as(const Account& account) {
    login_ = fmt::format("-u{} -p{}", shell_quote(account.user), shell_quote(account.password));
  }
  // How a client logs in to it: as connection options, and as the mariadb command line.
  std::string connection() const { return fmt::format("{} -S {}", login_, shell_quote(sock_)); }
  std::string client() const { return "mariadb --no-defaults " + connection(); }
  // SIGTERM is mariadbd's clean shutdown: the data directory is left needing no recovery.
  Status stop(const std::string& log) {
    if (pid_ < 0) return {};
    ::kill(pid_, SIGTERM);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    std::error_code ec;
    fs::remove_all(run_dir_, ec);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {};
    return unavailable(fmt::format("mariadbd did not shut down cleanly: {} (log {})", describe_wait_status(status), log));
  }
  ~PrivateServer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

 private:
  static inline std::atomic<int> counter_{0};
  fs::path run_dir_;
  std::string sock_;
  std::string login_ = "-uroot";
  pid_t pid_ = -1;
};

// The client's error for a failed file ("ERROR 1146 (42S02) at line 2: Table 'x.y' doesn't
// exist"), said with the file, the line and that line's text; empty when the output has none.
std::string migration_error(const Migration& m, const std::string& output) {
  const auto at = output.find("ERROR ");
  if (at == std::string::npos) return "";
  std::string line = output.substr(at, output.find('\n', at) - at);
  const auto where = line.find(" at line ");
  if (where == std::string::npos) return fmt::format("{}: {}", m.file, line);
  const std::string code = line.substr(0, where);
  const auto colon = line.find(": ", where);
  const long n = std::strtol(line.c_str() + where + 9, nullptr, 10);
  const std::string why = colon == std::string::npos ? "" : line.substr(colon + 2);
  std::string text;
  std::size_t start = 0;
  for (long k = 1; k < n && start != std::string::npos; ++k) {
    start = m.sql.find('\n', start);
    if (start != std::string::npos) ++start;
  }
  if (start != std::string::npos && start < m.sql.size()) {
    text = m.sql.substr(start, m.sql.find('\n', start) - start);
    if (text.size() > 200) text = text.substr(0, 200) + "...";
  }
  return fmt::format("{} failed at line {}{}: {}: {}", m.file, n, text.empty() ? "" : " (" + text + ")", code, why);
}

// Run while the server skips its grant tables: loads them, then makes sure `account` exists with
// every privilege, from anywhere and over the socket (an anonymous ''@'localhost' would take a
// socket login for itself otherwise).
std::string account_sql(const Account& account) {
  return fmt::format(
      "FLUSH PRIVILEGES; CREATE USER IF NOT EXISTS '{0}'@'%' IDENTIFIED BY '{1}'; ALTER USER '{0}'@'%' IDENTIFIED BY '{1}'; "
      "GRANT ALL PRIVILEGES ON *.* TO '{0}'@'%' WITH GRANT OPTION; CREATE USER IF NOT EXISTS '{0}'@'localhost' IDENTIFIED BY "
      "'{1}'; ALTER USER '{0}'@'localhost' IDENTIFIED BY '{1}'; GRANT ALL PRIVILEGES ON *.* TO '{0}'@'localhost' WITH GRANT "
      "OPTION; FLUSH PRIVILEGES;",
      account.user, account.password);
}

std::string connection_args(const ServerSource& s) {
  std::string args = fmt::format("--user={}", shell_quote(s.user));
  if (!s.password.empty()) args += " --password=" + shell_quote(s.password);
  if (s.address.starts_with("/")) return args + " --socket=" + shell_quote(s.address);
  auto colon = s.address.rfind(':');
  return args + fmt::format(" --host={} --port={} --protocol=TCP", shell_quote(s.address.substr(0, colon)),
                            shell_quote(colon == std::string::npos ? "3306" : s.address.substr(colon + 1)));
}

std::atomic<int> dump_counter{0};

// Each file through `client` (the `mariadb` command line of a server), in order, until one fails.
Status apply_files(const std::string& client, const std::vector<Migration>& migrations, const std::string& log) {
  for (const auto& m : migrations) {
    // Each file's output apart, to find the client's error in it, then added to the log.
    const std::string out = log + ".migration";
    std::error_code ec;
    fs::remove(out, ec);
    Status applied = run_logged(fmt::format("{} --batch < {}", client, shell_quote(m.path)), out, "applying " + m.file);
    std::string text;
    {
      std::ifstream in(out, std::ios::binary);
      // (Bounded: the client's output of one file, read for its error line.)
      text.resize(1 << 20);
      in.read(text.data(), static_cast<std::streamsize>(text.size()));
      text.resize(static_cast<std::size_t>(in.gcount()));
    }
    std::ofstream(log, std::ios::app) << text;
    fs::remove(out, ec);
    if (!applied.ok()) {
      if (std::string why = migration_error(m, text); !why.empty()) return invalid(why);
      return applied;
    }
  }
  return {};
}

// The schema of the server `args` (the mariadb client's and mariadb-dump's connection
// options) logs in to: the databases it has but its own listed, then dumped without data.
Result<Schema> dump_schema(const std::string& args, const std::string& log) {
  const fs::path out = fs::temp_directory_path() / fmt::format("berth-schema-{}-{}", getpid(), dump_counter++);
  struct Gone {
    fs::path p;
    ~Gone() {
      std::error_code ec;
      fs::remove(p, ec);
    }
  } gone{out};
  BERTH_TRY(run_logged(fmt::format("mariadb --no-defaults {} --batch --skip-column-names -e {} > {}", args,
                                   shell_quote("SELECT schema_name FROM information_schema.schemata WHERE schema_name NOT IN "
                                               "('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY 1"),
                                   shell_quote(out.string())),
                       log, "listing the databases"));
  auto listed = read_file_bounded(out.string(), 1 << 20);
  if (!listed.ok()) return listed.error();
  std::string names;
  for (std::size_t at = 0; at < listed->size();) {
    const std::size_t nl = std::min(listed->find('\n', at), listed->size());
    if (nl > at) names += " " + shell_quote(std::string_view(*listed).substr(at, nl - at));
    at = nl + 1;
  }
  if (names.empty()) return Schema{};
  BERTH_TRY(run_logged(fmt::format("mariadb-dump --no-defaults {} --no-data --skip-comments --compact --routines --triggers "
                                   "--events --skip-dump-date --databases{} > {}",
                                   args, names, shell_quote(out.string())),
                       log, "mariadb-dump --no-data"));
  auto dump = read_file_bounded(out.string(), kMaxSchemaDumpBytes);
  if (!dump.ok()) return dump.error();
  return parse_schema_dump(*dump);
}

}  // namespace

Status MariadbEngine::copy_running(const ServerSource& source, const std::string& dir, const std::string& log) {
  // mariadb-backup copies the files while the server runs and records the redo log written
  // meanwhile; --prepare applies it, leaving a consistent data directory.
  BERTH_TRY(run_logged(fmt::format("mariadb-backup --no-defaults --backup {} --target-dir={} --parallel=4", connection_args(source),
                            shell_quote(dir)),
                log, "mariadb-backup --backup"));
  BERTH_TRY(run_logged(fmt::format("mariadb-backup --no-defaults --prepare --target-dir={}", shell_quote(dir)), log,
                "mariadb-backup --prepare"));
  return {};
}

Status MariadbEngine::copy_datadir(const std::string& from, const std::string& dir, const std::string& log) {
  std::error_code ec;
  if (!fs::is_directory(fs::path(from) / "mysql", ec) || !fs::exists(fs::path(from) / "ibdata1", ec))
    return invalid(fmt::format("{} is not a MariaDB data directory (it has no mysql/ and ibdata1)", from));
  return run_logged(fmt::format("cp -a --reflink=auto {} {}", shell_quote(from), shell_quote(dir)), log, "copying " + from);
}

Status MariadbEngine::load_dump(const std::string& dump, const std::string& dir, const std::string& log) {
  if (!fs::exists(dump)) return not_found(fmt::format("SQL dump {} does not exist", dump));
  BERTH_TRY(run_logged(fmt::format("mariadb-install-db --no-defaults --user=root --datadir={} --auth-root-authentication-method=socket "
                            "--skip-test-db",
                            shell_quote(dir)),
                log, "mariadb-install-db"));
  PrivateServer server;
  BERTH_TRY(server.start(dir, log, false));
  Status loaded = run_logged(fmt::format("{} < {}", server.client(), shell_quote(dump)), log, "loading " + dump);
  Status stopped = server.stop(log);
  if (!loaded.ok()) return loaded;
  return stopped;
}

Status MariadbEngine::seal(const std::string& dir, const Account& account, const std::string& log) {
  PrivateServer server;
  BERTH_TRY(server.start(dir, log, true));
  Status made = run_logged(fmt::format("{} -e {}", server.client(), shell_quote(account_sql(account))), log,
                           "creating account " + account.user);
  Status stopped = server.stop(log);
  if (!made.ok()) return made;
  return stopped;
}

Status MariadbEngine::apply(const std::string& dir, const std::vector<Migration>& migrations, const Account& account,
                            const std::string& log) {
  // Grants skipped at first, to make sure of the account the files run as (a standard sealed by
  // an older berth may lack its socket login); then every file as that account.
  PrivateServer server;
  BERTH_TRY(server.start(dir, log, true));
  Status applied = run_logged(fmt::format("{} -e {}", server.client(), shell_quote(account_sql(account))), log,
                              "creating account " + account.user);
  server.log_in_as(account);
  if (applied.ok()) applied = apply_files(server.client(), migrations, log);
  Status stopped = server.stop(log);
  if (!applied.ok()) return applied;
  return stopped;
}

Status MariadbEngine::apply_live(const ServerSource& server, const std::vector<Migration>& migrations, const std::string& log) {
  return apply_files("mariadb --no-defaults " + connection_args(server), migrations, log);
}

Result<Schema> MariadbEngine::schema(const ServerSource& server, const std::string& log) {
  return dump_schema(connection_args(server), log);
}

Result<Schema> MariadbEngine::schema_of(const std::string& dir, const std::string& log) {
  // Grants skipped: whatever accounts the copy has, root reads every database.
  PrivateServer server;
  BERTH_TRY(server.start(dir, log, true));
  Result<Schema> schema = dump_schema(server.connection(), log);
  Status stopped = server.stop(log);
  if (!schema.ok()) return schema;
  if (!stopped.ok()) return stopped.error();
  return schema;
}

}  // namespace berth::db
