// berth — the command line: `berth serve` runs the daemon; every other command talks to it.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <cstring>
#include <fmt/format.h>

#include "base/text.h"
#include "cli/cluster_cmd.h"
#include "cli/drift_cmd.h"
#include "cli/migrate_cmd.h"
#include "cli/rollout_cmd.h"
#include "cli/interact.h"
#include "cli/render.h"
#include "client/client.h"
#include "daemon/daemon.h"

using nlohmann::json;
namespace bc = berth::client;

namespace {

using berth::cli::edit_document;
using berth::cli::fail;
using berth::cli::follow;
using berth::cli::follow_job;
using berth::cli::logs_command;
using berth::cli::read_file;
using berth::cli::settings_of;
using berth::percent_encode;

std::optional<std::uint64_t> parse_size(const std::string& text) {
  std::size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (i == 0) return std::nullopt;
  std::uint64_t n = std::stoull(text.substr(0, i));
  std::string unit = text.substr(i);
  if (unit.empty() || unit == "B") return n;
  if (unit == "KiB") return n << 10;
  if (unit == "MiB") return n << 20;
  if (unit == "GiB") return n << 30;
  return std::nullopt;
}

// --sim "start=50ms,ready=200ms,crash=1h,hang=0.01" (every key optional).
std::optional<berth::runtime::SimBehaviour> parse_sim(const std::string& text, std::string* why) {
  berth::runtime::SimBehaviour b;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty()) continue;
    auto eq = item.find('=');
    const std::string key = item.substr(0, eq), value = eq == std::string::npos ? "" : item.substr(eq + 1);
    if (key == "hang") {
      char* end = nullptr;
      b.hang_fraction = std::strtod(value.c_str(), &end);
      if (value.empty() || *end || b.hang_fraction < 0 || b.hang_fraction > 1) {
        *why = fmt::format("hang={}: a fraction from 0 to 1", value);
        return std::nullopt;
      }
      continue;
    }
    berth::Millis* field = key == "start" ? &b.start_latency_ms : key == "ready" ? &b.ready_after_ms
                           : key == "crash" ? &b.mean_time_to_crash_ms : nullptr;
    auto d = berth::parse_duration(value);
    if (!field || !d) {
      *why = fmt::format("'{}': expected start=DURATION, ready=DURATION, crash=DURATION (mean time to crash, 0: never) "
                         "or hang=FRACTION", item);
      return std::nullopt;
    }
    *field = *d;
  }
  return b;
}

berth::Millis parse_timeout(const std::string& text) {
  auto d = berth::parse_duration(text);
  if (!d) throw CLI::ValidationError("--timeout", "'" + text + "' is not a duration; write e.g. 90s, 2m");
  return *d;
}

int env_command(bc::Client& c, CLI::App* cmd, const std::string& name, const std::string& base,
                const std::vector<std::string>& kvs, bool thin, const std::string& ttl, const std::string& against,
                bool keep_data, const std::string& output, const std::string& doc_output) {
  const std::string doc_path = "/v1/environments/" + percent_encode(name) + "/document";
  auto current_version = [&]() -> berth::Result<std::int64_t> {
    auto d = c.get(doc_path);
    if (!d.ok()) return d.error();
    return (*d)["version"].get<std::int64_t>();
  };
  auto print_doc = [&](const json& d) {
    fmt::print("{}: version {} (owner {}{})\n", d["name"].get<std::string>(), d["version"].get<std::int64_t>(),
               d["owner"].get<std::string>(),
               d.contains("expires") && !d["expires"].is_null() ? ", expires " + d["expires"].get<std::string>() : "");
    return 0;
  };
  auto sub = [&](const char* n) { return cmd->get_subcommand(n)->parsed(); };
  if (sub("create")) {
    auto sets = settings_of(kvs);
    if (!sets) return 2;
    json body = {{"name", name}, {"thin", thin}, {"set", *sets}};
    if (!base.empty()) body["base"] = base;
    if (!ttl.empty()) body["ttl"] = ttl;
    auto r = c.post("/v1/environments", body);
    if (!r.ok()) return fail(r.error());
    return print_doc(*r);
  }
  if (sub("set") || sub("unset") || sub("extend")) {
    json body = json::object();
    if (sub("set")) {
      auto sets = settings_of(kvs);
      if (!sets) return 2;
      body["set"] = *sets;
    } else if (sub("unset")) {
      body["unset"] = kvs;
    } else {
      body["extend"] = ttl;
    }
    auto v = current_version();
    if (!v.ok()) return fail(v.error());
    auto r = c.patch(doc_path, body, *v);
    if (!r.ok()) return fail(r.error());
    return print_doc(*r);
  }
  if (sub("edit")) return edit_document(c, name);
  if (sub("get")) {
    auto r = c.get(doc_path);
    if (!r.ok()) return fail(r.error());
    if (doc_output == "json") fmt::print("{}\n", r->dump(2));
    else fmt::print("{}", (*r)["text"].get<std::string>());
    return 0;
  }
  if (sub("ls")) {
    auto r = c.get("/v1/documents");
    if (!r.ok()) return fail(r.error());
    if (output == "json") fmt::print("{}\n", r->dump(2));
    else fmt::print("{}", berth::cli::documents_table(*r));
    return 0;
  }
  if (sub("diff")) {
    auto r = c.get("/v1/environments/" + percent_encode(name) + "/diff" + (against.empty() ? "" : "?against=" + percent_encode(against)));
    if (!r.ok()) return fail(r.error());
    if (output == "json") fmt::print("{}\n", r->dump(2));
    else fmt::print("{}", berth::cli::diff_table(*r));
    return 0;
  }
  if (sub("rm")) {
    auto v = current_version();
    if (!v.ok()) return fail(v.error());
    auto r = c.del(doc_path + (keep_data ? "?keep_data=1" : ""), *v);
    if (!r.ok()) return fail(r.error());
    fmt::print("deleted {}\n", name);
    for (const auto& n : (*r)["notes"]) fmt::print("  {}\n", n.get<std::string>());
    return 0;
  }
  return 2;
}

}  // namespace

namespace {
int run(int argc, char** argv) {
  CLI::App app{"berth — dev and beta environments on demand"};
  app.require_subcommand(1);
  std::string addr_flag;
  app.add_option("--addr", addr_flag, "daemon address ADDR:PORT, or https://HOST:PORT for a daemon with TLS (default "
                                      "$BERTH_ADDR or 127.0.0.1:7700; $BERTH_CACERT: the CA that signed its certificate)");
  std::string token_flag;
  app.add_option("--token", token_flag, "API token (default $BERTH_TOKEN, $BERTH_TOKEN_FILE, $BERTH_DATA_DIR/admin.token, "
                                        "~/.berth/admin.token)");

  berth::daemon::Options serve_opts;
  auto* serve = app.add_subcommand("serve", "run the control plane daemon");
  serve->add_option("--listen", serve_opts.listen, "API address ADDR:PORT")->capture_default_str();
  serve->add_option("--data-dir", serve_opts.data_dir, "state directory (SQLite database, logs)")->required();
  serve->add_option("--build-parallel", serve_opts.build_parallel, "builds at once (0: one per core)")->capture_default_str();
  serve->add_option("--max-starting", serve_opts.max_starting,
                    "process instances starting at once, launched but not yet ready; the rest wait in line "
                    "(0: no limit)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  std::string store_max = "2GiB";
  serve->add_option("--artifact-store-max", store_max, "artifact store size before least recently used artifacts no "
                                                       "instance runs are evicted (e.g. 500MiB, 2GiB)")
      ->capture_default_str();
  serve->add_option("--runtime", serve_opts.runtime, "process: run processes (and containers with --docker-host); "
                                                  "sim: simulate every instance in memory, for benchmarks and tests only")
      ->check(CLI::IsMember({"process", "sim"}))
      ->capture_default_str();
  std::string sim_text;
  serve->add_option("--sim", sim_text, "with --runtime sim: start=50ms,ready=200ms,crash=1h,hang=0.01 (start latency, "
                                       "time to answer health checks, mean time to crash, fraction that hang)");
  std::string log_max = "64MiB";
  serve->add_option("--log-max", log_max, "each instance's log file (and each import's) is cut to its newest half when "
                                          "it grows past this size")
      ->capture_default_str();
  serve->add_flag("--test-clock", serve_opts.test_clock, "for tests: admins may move the daemon's clock forward "
                                                        "(POST /v1/test/clock {\"advance\": \"2h\"})");
  serve->add_option("--dns-listen", serve_opts.dns_listen, "name server address ADDR:PORT (\"\" to disable)")
      ->capture_default_str();
  if (const char* dh = std::getenv("DOCKER_HOST"); dh && std::string(dh).rfind("unix://", 0) == 0) serve_opts.docker_host = dh;
  serve->add_option("--docker-host", serve_opts.docker_host,
                    "run apps that have an image as containers of this dockerd: unix:///path/to/docker.sock "
                    "(default $DOCKER_HOST if it is a unix socket; none: such apps wait)");
  serve->add_option("--cluster-host", serve_opts.cluster_hosts,
                    "run apps that have an image on the hosts of a Docker Swarm, each instance at its own address on "
                    "an overlay network and moved with it when its host is lost (docs/cluster.md): a host's Engine API "
                    "(unix:///path/to/docker.sock), once per host; the first is a manager this daemon runs on");
  std::string heartbeat_text = "1s";
  serve->add_option("--cluster-heartbeat", heartbeat_text,
                    "the Swarm's heartbeat berth sets: how soon a silent host is called down and its instances move")
      ->capture_default_str();
  serve->add_option("--cluster-advertise", serve_opts.cluster_advertise,
                    "with --cluster-host: the first host's address for the Swarm berth creates when it is in none "
                    "(default: what dockerd picks)");
  serve->add_option("--cluster-max-hosts", serve_opts.cluster_max_hosts,
                    "with --cluster-host: how many hosts the overlay has room for (Docker's own endpoints take two "
                    "addresses per host at the pool's end); fixed once the overlay is made")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  serve->add_option("--db-image", serve_opts.db_image,
                    "database servers run in containers from this image (scripts/make-images.sh --mariadb), each on a "
                    "volume filled from its copy; 'none': as processes (default: berth-mariadb:latest with "
                    "--cluster-host, processes on one host)");
  std::string lease_text = "10s";
  serve->add_option("--cluster-lease", lease_text,
                    "with --cluster-host: each host's lease; a host that cannot renew it for half of this kills its "
                    "instances, and a lost host berth cannot reach moves after this plus 1s (docs/cluster.md)")
      ->capture_default_str();
  serve->add_option("--sandbox-image", serve_opts.sandbox_image,
                    "with --cluster-host: the image of berth's own container on the overlay (scripts/make-images.sh "
                    "--sandbox)")
      ->capture_default_str();

  std::string file;
  auto* exec_cmd = app.add_subcommand("exec", "run a command inside a running instance (its container or its process's namespace)");
  std::string exec_env, exec_app, exec_timeout = "30s";
  int exec_ordinal = 0;
  std::vector<std::string> exec_argv;
  exec_cmd->add_option("environment", exec_env)->required();
  exec_cmd->add_option("app", exec_app)->required();
  exec_cmd->add_option("command", exec_argv, "the command and its arguments (after --)")->required();
  exec_cmd->add_option("-i,--instance", exec_ordinal, "instance ordinal")->capture_default_str();
  exec_cmd->add_option("--timeout", exec_timeout, "give up (and report) after this long")->capture_default_str();
  auto* apply = app.add_subcommand("apply", "validate and load the fleet document (berth.yaml), printing its plan");
  apply->add_option("-f,--file", file, "catalog file")->required();
  bool dry_run = false, force = false, move_base_dir = false;
  apply->add_flag("--dry-run", dry_run, "print the plan and change nothing");
  apply->add_flag("--force", force, "apply even if environment documents become invalid (they are left out until fixed)");
  apply->add_flag("--move-base-dir", move_base_dir, "resolve relative source repositories against this file's directory "
                                                    "from now on");

  std::string env, app_code, output = "table", timeout_text = "120s";
  bool no_wait = false, quiet = false, follow_events = false;
  auto* up = app.add_subcommand("up", "bring an environment up and wait until it is ready");
  up->add_option("environment", env)->required();
  up->add_option("--timeout", timeout_text, "give up after this long")->capture_default_str();
  up->add_flag("--no-wait", no_wait, "return once the request is accepted");
  up->add_flag("-q,--quiet", quiet, "print nothing but errors");

  auto* down = app.add_subcommand("down", "stop an environment");
  down->add_option("environment", env)->required();
  down->add_flag("--force", force, "even if thin environments that are up fall through to it");
  down->add_option("--timeout", timeout_text, "give up waiting after this long")->capture_default_str();
  down->add_flag("--no-wait", no_wait, "return once the request is accepted");
  down->add_flag("-q,--quiet", quiet, "print nothing but errors");

  auto* restart = app.add_subcommand("restart", "replace an app's instances (or every app's) one at a time, each "
                                                "health-gated; returns when all are ready again");
  restart->add_option("environment", env)->required();
  restart->add_option("app", app_code, "only this app");
  restart->add_option("--timeout", timeout_text, "give up waiting after this long")->capture_default_str();
  restart->add_flag("-q,--quiet", quiet, "print nothing but errors");

  auto* refresh = app.add_subcommand("refresh", "rebuild apps whose branch moved and replace their instances one at a time");
  refresh->add_option("environment", env)->required();
  refresh->add_option("--timeout", timeout_text, "give up waiting after this long")->capture_default_str();
  refresh->add_flag("-q,--quiet", quiet, "print nothing but errors");

  auto* build_cmd = app.add_subcommand("build", "builds of apps built from source");
  build_cmd->require_subcommand(1);
  auto* build_logs = build_cmd->add_subcommand("logs", "print the log of an app's current build");
  build_logs->add_option("app", app_code)->required();
  std::string build_env = "baseline";
  build_logs->add_option("-e,--env", build_env, "environment whose build of the app to show")->capture_default_str();
  bool follow_log = false;
  build_logs->add_flag("-f,--follow", follow_log, "keep printing until the build ends");

  auto* logs = app.add_subcommand("logs", "print instances' output (stdout and stderr): one instance alone, or "
                                          "every instance of the apps named (all it runs without) merged, each line "
                                          "prefixed with app#ordinal");
  logs->add_option("environment", env)->required();
  std::vector<std::string> log_apps;
  logs->add_option("apps", log_apps, "apps (default: every app the environment runs)");
  int ordinal = -1;
  logs->add_option("-i,--instance", ordinal, "only this instance ordinal (one app): its output unprefixed");
  int tail_lines = -1;
  logs->add_option("--tail", tail_lines, "only the last N lines of each instance first");
  bool follow_logs = false;
  logs->add_flag("-f,--follow", follow_logs, "keep printing new output");

  auto* status = app.add_subcommand("status", "show an environment's apps and instances (all environments without one)");
  status->add_option("environment", env);
  status->add_option("-o,--output", output, "table (120 columns), wide (DNS names, ports, pids) or json")
      ->check(CLI::IsMember({"table", "wide", "json"}));

  auto* config = app.add_subcommand("config", "show every effective setting and the layer it came from");
  config->add_option("environment", env)->required();
  config->add_option("app", app_code);
  config->add_option("-o,--output", output, "table or json")->check(CLI::IsMember({"table", "json"}));

  auto* events = app.add_subcommand("events", "list what happened in an environment, oldest first");
  events->add_option("environment", env)->required();
  events->add_option("-o,--output", output, "table or json")->check(CLI::IsMember({"table", "json"}));
  events->add_flag("-f,--follow", follow_events, "keep printing new events");

  serve->add_option("--blob-store", serve_opts.blob_store,
                    "where database snapshots go: DIR, swift://USER:KEY@HOST:PORT/CONTAINER or "
                    "s3://ACCESS:SECRET@HOST:PORT/BUCKET (default DATA-DIR/blobs)");
  serve->add_option("--db-dir", serve_opts.db_dir,
                    "goldens and copies of standard databases; put it on XFS (reflink=1) or btrfs for instant copies "
                    "(default DATA-DIR/db)");
  bool no_overlay = false;
  serve->add_flag("--db-no-overlay", no_overlay, "never make database copies with overlayfs");
  serve->add_option("--instance-ids", serve_opts.instance_ids,
                    "root only: user ids for instances, FIRST-LAST; FIRST is their group and the builds' user, each "
                    "environment runs as one more (\"off\": instances run as root)")
      ->capture_default_str();

  auto* db_cmd = app.add_subcommand("db", "standard databases: import versions, list them, reset an environment's copy");
  db_cmd->require_subcommand(1);
  auto* db_import = db_cmd->add_subcommand("import", "import the next version of a standard");
  std::string standard, from_server, from_datadir, from_dump, db_user = "root", db_password;
  db_import->add_option("standard", standard)->required();
  auto* fs_opt = db_import->add_option("--from-server", from_server, "a running server: HOST:PORT or a socket path (copied "
                                                                      "with mariadb-backup, not stopped)");
  auto* fd_opt = db_import->add_option("--from-datadir", from_datadir, "a stopped server's data directory");
  auto* fdump_opt = db_import->add_option("--from-dump", from_dump, "an SQL dump (loaded into a fresh server once)");
  fs_opt->excludes(fd_opt)->excludes(fdump_opt);
  fd_opt->excludes(fdump_opt);
  db_import->add_option("--user", db_user, "account for --from-server")->capture_default_str();
  db_import->add_option("--password", db_password, "its password");
  db_import->add_flag("-q,--quiet", quiet, "print nothing but errors");
  auto* db_release = db_cmd->add_subcommand("release", "release SQL migrations (V7__x.sql, R__x.sql) as the next version of a "
                                                        "standard, rehearsed on a copy of the last one first");
  std::string release_from, release_path;
  bool out_of_order = false;
  db_release->add_option("standard", standard)->required();
  db_release->add_option("--from", release_from, "DIR (on the daemon's host, under an --import-dir) or REPO@REF (a git "
                                                 "repository: such a path, or an https:// or ssh:// URL)")->required();
  db_release->add_option("--path", release_path, "with REPO@REF: the migrations' directory in the repository");
  db_release->add_flag("--out-of-order", out_of_order, "release versions below the last released one, or after a gap");
  db_release->add_flag("-q,--quiet", quiet, "print nothing but errors");
  berth::cli::RolloutCommand rollout_cmd;
  berth::cli::add_rollout_command(*db_cmd, rollout_cmd);
  berth::cli::DriftCommand drift_cmd;
  berth::cli::add_drift_command(*db_cmd, drift_cmd);
  berth::cli::MigrateCommand migrate_cmd;
  berth::cli::add_migrate_command(*db_cmd, migrate_cmd);
  auto* db_versions = db_cmd->add_subcommand("versions", "list the versions of a standard (all standards without one)");
  db_versions->add_option("standard", standard);
  db_versions->add_option("-o,--output", output, "table or json")->check(CLI::IsMember({"table", "json"}));
  auto* db_clone = db_cmd->add_subcommand("clone", "give an environment a fresh copy of its database DB[@VERSION]");
  std::string db_name;
  db_clone->add_option("database", db_name, "the database as named in the catalog, optionally @VERSION")->required();
  db_clone->add_option("-e,--env", env, "environment")->required();
  db_clone->add_option("--timeout", timeout_text, "give up waiting after this long")->capture_default_str();
  db_clone->add_flag("-q,--quiet", quiet, "print nothing but errors");
  auto* db_rm = db_cmd->add_subcommand("rm", "forget a version of a standard (and its golden on this host)");
  db_rm->add_option("version", standard, "STANDARD@VERSION")->required();

  serve->add_option("--member-repo", serve_opts.member_repos,
                    "a source.repo prefix members may use in their environments (repeatable)");
  serve->add_option("--tls-cert", serve_opts.tls_cert, "serve the API over HTTPS with this PEM certificate (chain)");
  serve->add_option("--tls-key", serve_opts.tls_key, "the certificate's PEM private key");
  serve->add_option("--import-dir", serve_opts.import_dirs,
                    "a directory standards may be imported from with --from-dump/--from-datadir (repeatable)");

  auto* env_cmd = app.add_subcommand("env", "environments of your own: create, change, inspect, remove");
  env_cmd->require_subcommand(1);
  std::string base, ttl, against;
  std::vector<std::string> kvs;
  bool thin = false, keep_data = false;
  auto* env_create = env_cmd->add_subcommand("create", "create an environment as its own document");
  env_create->add_option("name", env)->required();
  env_create->add_option("--base", base, "the environment it inherits from (e.g. baseline)");
  env_create->add_option("--set", kvs, "APP.KEY=VALUE, e.g. orders.tag=feature/x (repeatable)");
  env_create->add_flag("--thin", thin, "run only the apps it changes; the rest fall through to its base");
  env_create->add_option("--ttl", ttl, "expire after this long, e.g. 3d (taken down, deleted a day later)");
  auto* env_set = env_cmd->add_subcommand("set", "set APP.KEY=VALUE (or KEY=VALUE for the environment)");
  env_set->add_option("name", env)->required();
  env_set->add_option("settings", kvs, "APP.KEY=VALUE ...")->required();
  auto* env_unset = env_cmd->add_subcommand("unset", "remove settings, so they come from the base again");
  env_unset->add_option("name", env)->required();
  env_unset->add_option("keys", kvs, "APP.KEY ...")->required();
  auto* env_extend = env_cmd->add_subcommand("extend", "push the expiry back");
  env_extend->add_option("name", env)->required();
  env_extend->add_option("duration", ttl, "e.g. 2d")->required();
  auto* env_edit = env_cmd->add_subcommand("edit", "edit the environment's YAML in $EDITOR; validated on save");
  env_edit->add_option("name", env)->required();
  auto* env_get = env_cmd->add_subcommand("get", "print the environment's document");
  env_get->add_option("name", env)->required();
  std::string doc_output = "yaml";
  env_get->add_option("-o,--output", doc_output, "yaml or json")->check(CLI::IsMember({"yaml", "json"}));
  auto* env_ls = env_cmd->add_subcommand("ls", "list the environments kept as their own documents");
  env_ls->add_option("-o,--output", output, "table or json")->check(CLI::IsMember({"table", "json"}));
  auto* env_diff = env_cmd->add_subcommand("diff", "every effective setting that differs from its base (or --against)");
  env_diff->add_option("name", env)->required();
  env_diff->add_option("--against", against, "compare with this environment instead");
  env_diff->add_option("-o,--output", output, "table or json")->check(CLI::IsMember({"table", "json"}));
  auto* env_rm = env_cmd->add_subcommand("rm", "take the environment down and delete it (and its database copies)");
  env_rm->add_option("name", env)->required();
  env_rm->add_flag("--keep-data", keep_data, "keep its database copies");

  auto* token_cmd = app.add_subcommand("token", "API tokens (admins)");
  token_cmd->require_subcommand(1);
  std::string token_user, token_role = "member", token_id;
  auto* token_create = token_cmd->add_subcommand("create", "issue a token; prints it alone on stdout, once");
  token_create->add_option("--user", token_user, "whose token")->required();
  token_create->add_option("--role", token_role, "admin, member or viewer")
      ->check(CLI::IsMember({"admin", "member", "viewer"}))
      ->capture_default_str();
  auto* token_ls = token_cmd->add_subcommand("ls", "list tokens (never their secrets)");
  auto* token_revoke = token_cmd->add_subcommand("revoke", "revoke a token by its id");
  token_revoke->add_option("id", token_id)->required();
  berth::cli::ClusterCommands cluster_cmds;
  berth::cli::add_cluster_commands(app, cluster_cmds);
  auto* export_cmd = app.add_subcommand("export", "write an environment for another platform");
  export_cmd->require_subcommand(1);
  std::string export_env, export_out;
  auto* export_k8s = export_cmd->add_subcommand("k8s", "Kubernetes manifests: a StatefulSet and a headless Service per "
                                                        "app, dependencies as init containers (docs/kubernetes.md)");
  export_k8s->add_option("env", export_env, "the environment")->required();
  export_k8s->add_option("-o,--output", export_out, "write the manifests to this file (default: stdout)");
  auto* whoami = app.add_subcommand("whoami", "the user and role of your token");

  auto* audit = app.add_subcommand("audit", "who changed what, and when");
  std::string audit_user, since;
  audit->add_option("--env", env, "only this environment");
  audit->add_option("--user", audit_user, "only this user");
  audit->add_option("--since", since, "a time (2026-12-01T09:00:00Z) or a duration ago (2h)");
  audit->add_option("-o,--output", output, "table or json")->check(CLI::IsMember({"table", "json"}));

  try {
    app.parse(argc, argv);
  } catch (const CLI::RequiredError& e) {
    // "A subcommand is required" for `berth restart`: say what is unknown.
    bool known = false;
    for (const auto* sc : app.get_subcommands([](CLI::App*) { return true; }))
      if (argc > 1 && sc->get_name() == argv[1]) known = true;
    if (argc > 1 && argv[1][0] != '-' && !known) {
      fmt::print(stderr, "berth: unknown command '{}'; see berth --help\n", argv[1]);
      return 2;
    }
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  serve_opts.db_overlay = !no_overlay;

  if (serve->parsed()) {
    auto bytes = parse_size(store_max);
    if (!bytes) {
      fmt::print(stderr, "berth serve: --artifact-store-max '{}': write a size like 500MiB or 2GiB\n", store_max);
      return 2;
    }
    serve_opts.artifact_max_bytes = *bytes;
    auto log_bytes = parse_size(log_max);
    if (!log_bytes || *log_bytes < (2u << 20)) {
      fmt::print(stderr, "berth serve: --log-max '{}': write a size of at least 2MiB, like 64MiB or 1GiB\n", log_max);
      return 2;
    }
    serve_opts.log_max_bytes = *log_bytes;
    std::string why;
    auto sim = parse_sim(sim_text, &why);
    if (!sim) {
      fmt::print(stderr, "berth serve: --sim: {}\n", why);
      return 2;
    }
    serve_opts.sim = *sim;
    auto heartbeat = berth::parse_duration(heartbeat_text);
    if (!heartbeat || *heartbeat < 100) {
      fmt::print(stderr, "berth serve: --cluster-heartbeat '{}': write a duration of at least 100ms, like 1s\n", heartbeat_text);
      return 2;
    }
    serve_opts.cluster_heartbeat_ms = *heartbeat;
    auto lease = berth::parse_duration(lease_text);
    if (!lease || *lease < 1000) {
      fmt::print(stderr, "berth serve: --cluster-lease '{}': write a duration of at least 1s, like 10s\n", lease_text);
      return 2;
    }
    serve_opts.cluster_lease_ms = *lease;
    return berth::daemon::run(serve_opts);
  }

  bc::Client c(bc::default_address(addr_flag), bc::default_token(token_flag));
  try {
    if (apply->parsed()) {
      std::ifstream in(file);
      if (!in) {
        fmt::print(stderr, "berth: cannot read {}: {}\n", file, std::strerror(errno));
        return 1;
      }
      std::stringstream ss;
      ss << in.rdbuf();
      std::string base_dir = std::filesystem::absolute(file).parent_path().string();
      auto r = c.put("/v1/catalog", {{"filename", file}, {"text", ss.str()}, {"base_dir", base_dir}, {"dry_run", dry_run},
                                     {"force", force}, {"move_base_dir", move_base_dir}});
      if (!r.ok()) return fail(r.error());
      if (dry_run) {
        fmt::print("plan for {} (nothing changed; fleet version {}):\n{}", file, (*r)["version"].get<std::int64_t>(),
                   berth::cli::plan_text(*r));
        return 0;
      }
      fmt::print("applied {} (version {}):", file, (*r)["version"].get<std::int64_t>());
      for (const auto& e : (*r)["environments"])
        fmt::print(" {} ({} apps, {} instances)", e["name"].get<std::string>(), e["apps"].get<int>(), e["instances"].get<int>());
      fmt::print("\n{}", berth::cli::plan_text(*r));
      return 0;
    }
    if (up->parsed()) {
      berth::Millis timeout = parse_timeout(timeout_text);
      auto r = c.post("/v1/environments/" + percent_encode(env) + "/up");
      if (!r.ok()) return fail(r.error());
      if (no_wait) return 0;
      return follow(c, env, (*r)["events_after"].get<std::int64_t>(), timeout, quiet,
                    // Ready, and no update pending: an apply just before must not leave the old build serving.
                    [](const json& s) { return s["ready"].get<bool>() && !s["updating"].get<bool>(); }, "up");
    }
    if (down->parsed()) {
      berth::Millis timeout = parse_timeout(timeout_text);
      auto r = c.post("/v1/environments/" + percent_encode(env) + "/down" + (force ? "?force=1" : ""));
      if (!r.ok()) return fail(r.error());
      if (no_wait) return 0;
      return follow(c, env, (*r)["events_after"].get<std::int64_t>(), timeout, quiet, [&env](const json& s) {
        for (const auto& a : s["apps"]) {
          if (a["runs_in"] != env) continue;  // served by a base environment: not ours to stop
          for (const auto& i : a["instances"])
            if (i["state"] != "stopped") return false;
        }
        return true;
      }, "down");
    }
    if (restart->parsed()) {
      berth::Millis timeout = parse_timeout(timeout_text);
      auto r = c.post("/v1/environments/" + percent_encode(env) + "/restart" +
                      (app_code.empty() ? "" : "?app=" + percent_encode(app_code)));
      if (!r.ok()) return fail(r.error());
      // Done once no replacement is pending (the daemon counts asked-for ones as updating) and
      // everything is ready.
      return follow(c, env, (*r)["events_after"].get<std::int64_t>(), timeout, quiet, [](const json& s) {
        return s["ready"].get<bool>() && !s["updating"].get<bool>();
      }, "restart");
    }
    if (refresh->parsed()) {
      berth::Millis timeout = parse_timeout(timeout_text);
      auto r = c.post("/v1/environments/" + percent_encode(env) + "/refresh");
      if (!r.ok()) return fail(r.error());
      // Refreshed when nothing is being built or replaced any more and everything is ready.
      return follow(c, env, (*r)["events_after"].get<std::int64_t>(), timeout, quiet, [](const json& s) {
        if (!s["ready"].get<bool>() || s["updating"].get<bool>()) return false;
        for (const auto& a : s["apps"])
          if (a.contains("build") && (a["build"]["state"] == "resolving" || a["build"]["resolving"] == true)) return false;
        return true;
      }, "refresh");
    }
    if (exec_cmd->parsed()) {
      if (!exec_argv.empty() && exec_argv.front() == "--") exec_argv.erase(exec_argv.begin());
      auto r = c.post(fmt::format("/v1/environments/{}/apps/{}/instances/{}/exec", percent_encode(exec_env), percent_encode(exec_app),
                                  exec_ordinal),
                      {{"command", exec_argv}, {"timeout", exec_timeout}});
      if (!r.ok()) return fail(r.error());
      fmt::print("{}", (*r)["output"].get<std::string>());
      if ((*r)["truncated"].get<bool>()) fmt::print(stderr, "berth: output truncated at 1 MiB\n");
      if ((*r)["timed_out"].get<bool>()) {
        fmt::print(stderr, "berth: {} did not finish within {}\n", exec_argv.front(), exec_timeout);
        return 124;
      }
      if ((*r)["exit_code"].is_null()) return 1;
      return (*r)["exit_code"].get<int>();
    }
    if (logs->parsed()) return logs_command(c, env, log_apps, ordinal, tail_lines, follow_logs);
    if (build_logs->parsed()) {
      auto s = c.get("/v1/environments/" + percent_encode(build_env));
      if (!s.ok()) return fail(s.error());
      std::string id;
      for (const auto& a : (*s)["apps"])
        if (a["app"] == app_code && a.contains("build")) id = a["build"]["id"].get<std::string>();
      if (id.empty()) {
        fmt::print(stderr, "berth: app '{}' in {} has no build (no source, or its tag is not resolved yet)\n", app_code, build_env);
        return 1;
      }
      std::int64_t offset = 0;
      while (true) {
        auto r = c.get(fmt::format("/v1/builds/{}/log?offset={}", id, offset));
        if (!r.ok()) return fail(r.error());
        fmt::print("{}", (*r)["text"].get<std::string>());
        std::fflush(stdout);
        offset = (*r)["offset"].get<std::int64_t>();
        if (!follow_log || (*r)["done"].get<bool>()) {
          if ((*r)["text"].get<std::string>().empty() || !follow_log) break;
          continue;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));  // a display refresh, not a wait for state
      }
      return 0;
    }
    if (db_import->parsed()) {
      json body;
      if (!from_server.empty()) body = {{"from", "server"}, {"address", from_server}, {"user", db_user}, {"password", db_password}};
      else if (!from_datadir.empty()) body = {{"from", "datadir"}, {"path", std::filesystem::absolute(from_datadir).string()}};
      else if (!from_dump.empty()) body = {{"from", "dump"}, {"path", std::filesystem::absolute(from_dump).string()}};
      else {
        fmt::print(stderr, "berth db import: say where from: --from-server, --from-datadir or --from-dump\n");
        return 2;
      }
      auto r = c.post("/v1/standards/" + percent_encode(standard) + "/import", body);
      if (!r.ok()) return fail(r.error());
      return follow_job(c, (*r)["id"].get<std::string>(), quiet);
    }
    if (db_release->parsed()) {
      // REPO@REF: the ref after the last '@' (a URL's user@host comes before its path).
      std::string from = release_from, ref;
      if (auto at = from.rfind('@'); at != std::string::npos && from.find('/', at) == std::string::npos) {
        ref = from.substr(at + 1);
        from = from.substr(0, at);
      }
      const bool url = from.starts_with("https://") || from.starts_with("ssh://");
      json body = {{"from", url ? from : std::filesystem::absolute(from).lexically_normal().string()},
                   {"out_of_order", out_of_order}};
      if (!ref.empty()) body["ref"] = ref;
      if (!release_path.empty()) body["path"] = release_path;
      auto r = c.post("/v1/standards/" + percent_encode(standard) + "/release", body);
      if (!r.ok()) return fail(r.error());
      return follow_job(c, (*r)["id"].get<std::string>(), quiet);
    }
    if (db_versions->parsed()) {
      auto r = standard.empty() ? c.get("/v1/standards") : c.get("/v1/standards/" + percent_encode(standard));
      if (!r.ok()) return fail(r.error());
      if (output == "json") fmt::print("{}\n", r->dump(2));
      else fmt::print("{}", berth::cli::versions_table(*r));
      return 0;
    }
    if (db_clone->parsed()) {
      berth::Millis timeout = parse_timeout(timeout_text);
      std::string name = db_name, version;
      if (auto at = db_name.find('@'); at != std::string::npos) {
        name = db_name.substr(0, at);
        version = "?version=" + percent_encode(db_name.substr(at + 1));
      }
      auto r = c.post(fmt::format("/v1/environments/{}/databases/{}/reset{}", percent_encode(env), percent_encode(name), version));
      if (!r.ok()) return fail(r.error());
      // Done when the server runs on the new copy and is ready.
      return follow(c, env, (*r)["events_after"].get<std::int64_t>(), timeout, quiet, [&name](const json& s) {
        if (s["updating"].get<bool>()) return false;
        for (const auto& a : s["apps"])
          if (a["app"] == name) return a["state"] == "ready" && a.contains("database") && !a["database"]["version"].is_null();
        return false;
      }, "clone");
    }
    if (db_rm->parsed()) {
      auto at = standard.find('@');
      if (at == std::string::npos) {
        fmt::print(stderr, "berth db rm: name the version: STANDARD@VERSION (see berth db versions)\n");
        return 2;
      }
      auto r = c.del(fmt::format("/v1/standards/{}/versions/{}", percent_encode(standard.substr(0, at)), percent_encode(standard.substr(at + 1))));
      if (!r.ok()) return fail(r.error());
      fmt::print("removed {}\n", standard);
      return 0;
    }
    if (env_cmd->parsed()) return env_command(c, env_cmd, env, base, kvs, thin, ttl, against, keep_data, output, doc_output);
    if (token_create->parsed()) {
      auto r = c.post("/v1/tokens", {{"user", token_user}, {"role", token_role}});
      if (!r.ok()) return fail(r.error());
      fmt::print("{}\n", (*r)["token"].get<std::string>());
      fmt::print(stderr, "token {} for {} ({}); it is shown only now\n", (*r)["id"].get<std::string>(), token_user, token_role);
      return 0;
    }
    if (token_ls->parsed()) {
      auto r = c.get("/v1/tokens");
      if (!r.ok()) return fail(r.error());
      fmt::print("{}", berth::cli::tokens_table(*r));
      return 0;
    }
    if (token_revoke->parsed()) {
      auto r = c.del("/v1/tokens/" + percent_encode(token_id));
      if (!r.ok()) return fail(r.error());
      fmt::print("revoked token {} of {}\n", token_id, (*r)["user"].get<std::string>());
      return 0;
    }
    if (export_k8s->parsed()) {
      auto r = c.get("/v1/environments/" + percent_encode(export_env) + "/export/k8s");
      if (!r.ok()) return fail(r.error());
      const std::string yaml = (*r)["yaml"].get<std::string>();
      if (export_out.empty()) {
        fmt::print("{}", yaml);
      } else {
        std::ofstream f(export_out, std::ios::binary | std::ios::trunc);
        f << yaml;
        if (!f.flush()) return fail(berth::unavailable("cannot write " + export_out));
      }
      // What the manifests cannot do, on stderr: the YAML on stdout stays clean for kubectl.
      for (const auto& n : (*r)["notes"]) fmt::print(stderr, "note: {}\n", n.get<std::string>());
      return 0;
    }
    if (auto code = berth::cli::run_cluster_command(c, cluster_cmds)) return *code;
    if (auto code = berth::cli::run_rollout_command(c, rollout_cmd)) return *code;
    if (auto code = berth::cli::run_drift_command(c, drift_cmd)) return *code;
    if (auto code = berth::cli::run_migrate_command(c, migrate_cmd)) return *code;
    if (whoami->parsed()) {
      auto r = c.get("/v1/whoami");
      if (!r.ok()) return fail(r.error());
      fmt::print("{} ({}, token {})\n", (*r)["user"].get<std::string>(), (*r)["role"].get<std::string>(),
                 (*r)["token"].get<std::string>());
      return 0;
    }
    if (audit->parsed()) {
      std::string q = "?limit=100000";
      if (!env.empty()) q += "&env=" + percent_encode(env);
      if (!audit_user.empty()) q += "&user=" + percent_encode(audit_user);
      if (!since.empty()) q += "&since=" + percent_encode(since);
      auto r = c.get("/v1/audit" + q);
      if (!r.ok()) return fail(r.error());
      if (output == "json") fmt::print("{}\n", r->dump(2));
      else fmt::print("{}", berth::cli::audit_table(*r));
      return 0;
    }
    if (status->parsed()) {
      auto r = env.empty() ? c.get("/v1/environments") : c.get("/v1/environments/" + percent_encode(env));
      if (!r.ok()) return fail(r.error());
      if (output == "json") {
        fmt::print("{}\n", r->dump(2));
      } else if (env.empty()) {
        for (const auto& s : *r) fmt::print("{}\n", berth::cli::status_table(s, output == "wide"));
      } else {
        fmt::print("{}", berth::cli::status_table(*r, output == "wide"));
      }
      return 0;
    }
    if (config->parsed()) {
      std::string target = "/v1/environments/" + percent_encode(env) + "/config";
      if (!app_code.empty()) target += "?app=" + percent_encode(app_code);
      auto r = c.get(target);
      if (!r.ok()) return fail(r.error());
      if (output == "json") fmt::print("{}\n", r->dump(2));
      else fmt::print("{}", berth::cli::config_table(*r));
      return 0;
    }
    if (events->parsed()) {
      std::int64_t after = 0;
      json all = json::array();
      // What is stored, page by page; then, with -f, the stream from the last one on.
      while (true) {
        auto r = c.get(fmt::format("/v1/environments/{}/events?after={}", percent_encode(env), after));
        if (!r.ok()) return fail(r.error());
        for (const auto& e : *r) {
          after = e["id"].get<std::int64_t>();
          if (output == "json") all.push_back(e);
          else fmt::print("{}\n", berth::cli::event_line(e));
        }
        if (r->empty()) break;
      }
      if (output == "json") fmt::print("{}\n", all.dump(2));
      if (!follow_events) return 0;
      std::fflush(stdout);
      auto st = c.stream(fmt::format("/v1/events/stream?env={}&after={}", percent_encode(env), after), [&](const json* e) {
        if (e) fmt::print("{}\n", output == "json" ? e->dump() : berth::cli::event_line(*e));
        std::fflush(stdout);
        return true;
      }, 60'000);
      if (!st.ok()) return fail(st.error());
      return 0;
    }
  } catch (const CLI::ValidationError& e) {
    fmt::print(stderr, "berth: {}\n", e.what());
    return 2;
  }
  return 0;
}
}  // namespace

// The edge: a library exception (JSON, filesystem, allocation) ends the command with its text and
// status 1, never with std::terminate's abort.
int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "berth: unexpected error: {}\n", e.what());
    return 1;
  }
}
