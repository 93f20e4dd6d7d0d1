// tests/integration/harness.h — run the real `berth` binary against real processes.
//
// A Daemon is `berth serve` on a fresh data directory and an ephemeral API port. Tests talk to
// it through the same client the CLI uses, or run the CLI itself. Nothing here sleeps to wait
// for state: wait_until() polls a condition against a deadline.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/client.h"

namespace berth::it {

struct CliResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds timeout = std::chrono::seconds(30));

std::string read_file(const std::string& path);
// The example catalog with its addresses (pool and exclusions) moved from 127.77.x.x to
// `prefix`.x.x (e.g. "127.81"), so tests running in parallel never share addresses.
std::string example_catalog(const std::string& prefix);
// `text` with the first `from` replaced by `to`; fails the test if `from` is absent.
std::string replaced(std::string text, const std::string& from, const std::string& to);

class Daemon {
 public:
  // `name` names the test's data directory under the temp dir.
  // `extra` are additional `berth serve` arguments; `prepare` runs on the fresh data directory
  // before the daemon starts (to put an older state.db there, say).
  explicit Daemon(const std::string& name, std::vector<std::string> extra = {},
                  const std::function<void(const std::string& dir)>& prepare = {});
  ~Daemon();  // brings every environment down, stops the daemon, kills any leftover instance

  void start();
  void kill9();       // SIGKILL the daemon only; its instances keep running
  pid_t pid() const { return pid_; }
  const std::string& data_dir() const { return dir_; }
  const std::string& address() const { return addr_; }
  const std::string& dns_address() const { return dns_addr_; }  // the daemon's name server
  std::string dns_ip() const { return dns_addr_.substr(0, dns_addr_.rfind(':')); }
  std::string dns_port() const { return dns_addr_.substr(dns_addr_.rfind(':') + 1); }
  client::Client& api() { return *client_; }

  // The CLI with the admin token; cli_as() with another (e.g. a member's from `token create`).
  CliResult cli(const std::vector<std::string>& args);
  CliResult cli_as(const std::string& token, const std::vector<std::string>& args);
  const std::string& admin_token() const { return admin_token_; }
  // Apply catalog text through the CLI (written to a file in the data dir).
  CliResult apply(const std::string& text, const std::string& file_name = "berth.yaml");
  nlohmann::json status(const std::string& env);
  nlohmann::json events(const std::string& env);
  // pids of the live instances' main processes started by this daemon (found by BERTH_HOME in
  // /proc/*/environ; process group leaders writing to their log, so neither their children nor
  // exec health checks or `berth exec` commands), with their BERTH_APP, BERTH_INSTANCE and BERTH_ENV.
  struct Proc {
    pid_t pid;
    std::string env, app, instance, ip;
  };
  std::vector<Proc> processes() const;

 private:
  std::string dir_;
  std::string addr_;
  std::string dns_addr_;
  std::string admin_token_;
  std::vector<std::string> extra_;
  pid_t pid_ = -1;
  std::unique_ptr<client::Client> client_;
};

// status JSON helpers
const nlohmann::json& app_of(const nlohmann::json& status, const std::string& app);
int pid_of(const nlohmann::json& status, const std::string& app, int ordinal);

}  // namespace berth::it
