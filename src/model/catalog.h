// model/catalog.h — the fleet as declared in berth.yaml, and each environment resolved from it.
//
// A Catalog is immutable once built. Catalog::parse() validates the whole file — schema, every
// environment's resolved settings, dependency and base-environment graphs, pool capacity — and
// either returns a Catalog or an Error listing every problem, each located as file:line:col and
// saying what would be valid. Nothing here does I/O; the caller reads the file.
//
// Resolution (lowest layer first): built-in → defaults → apps.<A> → for each environment of the
// base chain from the root down: environments.<B> then environments.<B>.apps.<A> → the
// environment itself → its per-app override. Every resolved setting records the layer it came
// from in AppSpec::from, keyed by its dotted path ("tag", "health.interval", "env.LOG_LEVEL").
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <optional>
#include <string>
#include <unordered_map>
#include <string_view>
#include <vector>

#include "base/clock.h"
#include "base/result.h"
#include "model/constraint.h"
#include "model/network.h"

namespace berth::model {

namespace loader {
struct DocumentErrors;
}
struct ResolvedCatalog;

enum class HealthType { kNone, kHttp, kTcp, kExec };
std::string_view to_string(HealthType t);

struct HealthSpec {
  HealthType type = HealthType::kNone;
  std::string port;              // named port, for http and tcp
  std::string path = "/";        // http
  std::vector<int> expect{200};  // http status codes that pass
  std::string command;           // exec: passes on exit status 0
  Millis interval_ms = 2000;     // between probes once ready
  Millis timeout_ms = 1000;
  Millis start_period_ms = 60'000;  // until first ready, failures in this time after start do not count
  Millis start_interval_ms = 100;  // between probes while starting; the first probe is immediate
  int failure_threshold = 3;
  int success_threshold = 1;
};

enum class RestartPolicy { kAlways, kOnFailure, kNever };
std::string_view to_string(RestartPolicy p);

struct RestartSpec {
  RestartPolicy policy = RestartPolicy::kAlways;
  Millis backoff_ms = 200;       // first delay; doubles per consecutive failure
  Millis max_backoff_ms = 10'000;
  bool on_unhealthy = true;      // restart an instance whose health check fails after ready
};

enum class DependencyFailure { kIgnore, kMark, kRestart };
std::string_view to_string(DependencyFailure p);

struct Dependency {
  std::string app;
  bool soft = false;       // soft dependencies never block start
  bool wait_all = false;   // hard: wait for all instances ready, not just one
  bool wait_completed = false;  // the dependency is a job: wait until its instances completed
  DependencyFailure on_failure = DependencyFailure::kMark;
};

// Where an app's code comes from and how it is built (apps.<app>.source).
struct SourceSpec {
  std::string repo;           // anything git understands; relative paths resolved against the catalog's directory
  std::string recipe;         // the recipe chosen for this build_type ("default" when none is named after it)
  std::string command;        // the recipe's command, ${build_type} substituted; may be empty with `dockerfile`
  std::string artifact;       // path of the artifact the command leaves, relative to the checkout
  std::string dockerfile;     // the recipe builds an image from the checkout with this Dockerfile (relative path)
  Millis timeout_ms = 10 * 60 * 1000;
};

// A volume of a container: a named volume of the environment, or a directory of the host.
struct VolumeSpec {
  bool bind = false;    // true: `source` is an absolute host path
  std::string source;   // a volume name (may hold ${ordinal}), or the host path
  std::string target;   // absolute path inside the container
  bool read_only = false;
};

struct ResourceSpec {
  double cpus = 0;                 // 0: no limit
  std::uint64_t memory_bytes = 0;  // 0: no limit
};

// A database the environment gets its own server and copy of (databases.<name>). It runs as an
// app named after it: one instance, stable IP and DNS name, health = an SQL round trip.
struct DatabaseSpec {
  std::string engine = "mariadb";  // one with a profile (db/profile/profile.h): how its server runs
  std::string standard;            // the standard it is a copy of
  int version = 0;                 // 0: the latest when the copy is made
  // How a release of the standard reaches the copy: auto (rolled out after every release),
  // manual (by `berth db rollout`), none (never; the copy stays as it is).
  std::string rollout = "manual";
  std::string user = "berth";      // the account berth adds to every standard at import
  std::string password = "berth";
  std::map<std::string, std::string> options;  // server options, --NAME=VALUE
};

// One app's effective settings in one environment.
struct AppSpec {
  std::string app;
  std::string tag;
  std::string build_type;
  std::string command;  // with ${...} placeholders, substituted per instance by the runtime
  // Containers: `image` set (with ${...} placeholders) runs the app from that image; command,
  // entrypoint and args are then split into words and run without a shell. Unset: a process.
  std::string image;
  bool image_from_build = false;  // the image is what the source's recipe builds (${artifact})
  std::optional<std::vector<std::string>> command_words;  // containers: the command as words (unset: the image's CMD)
  std::optional<std::vector<std::string>> entrypoint;  // containers: instead of the image's ENTRYPOINT
  std::vector<std::string> args;                       // appended to the command (both kinds)
  std::string user;     // containers: instead of the image's USER
  std::string workdir;  // containers: instead of the image's WORKDIR
  std::vector<VolumeSpec> volumes;
  ResourceSpec resources;
  // Where its instances may run in a cluster (runtime/cluster), Marathon's way:
  // [[hostname, UNIQUE], [rack, GROUP_BY, 3]]. On one host: ignored.
  std::vector<Constraint> constraints;
  int instances = 1;
  std::map<std::string, int> ports;
  HealthSpec health;
  RestartSpec restart;
  Millis stop_grace_ms = 5000;
  std::map<std::string, std::string> env;
  // Names in `env` whose values are secret (`{secret: true, value: ...}`): never shown by the
  // API (values, config, diff, documents), only given to the instances.
  std::set<std::string> secrets;
  bool is_secret_setting(std::string_view setting) const {
    return setting.substr(0, 4) == "env." && secrets.count(std::string(setting.substr(4)));
  }
  std::vector<Dependency> depends_on;
  std::optional<SourceSpec> source;  // built from source; the command refers to ${artifact}
  std::optional<DatabaseSpec> database;  // a database server; the command refers to ${datadir}, ${rundir}
  bool job = false;  // kind: job — runs to completion (exit 0: completed), is not health-checked
  // Setting path → layer it came from ("built-in", "defaults", "apps.users",
  // "environments.beta-7", "environments.beta-7.apps.orders").
  std::map<std::string, std::string> from;
  // Every effective setting as display text, same keys as `from`.
  std::map<std::string, std::string> values;

  // Changes when anything that affects the running process changes (command, image, tag,
  // build_type, ports, env, volumes, resources); instance count, health and dependencies are not
  // part of it.
  // Computed once when the catalog is parsed (an AppSpec of a parsed catalog never changes), else
  // on each call.
  std::string fingerprint() const { return fingerprint_.empty() ? compute_fingerprint() : fingerprint_; }
  std::string compute_fingerprint() const;
  bool container() const { return !image.empty(); }
  std::string fingerprint_;  // set by Catalog::parse
};

// An environment's apps, in dependency order: a read-only sequence of AppSpecs. An AppSpec of a
// parsed catalog never changes, so environments that inherit an app without changing any of its
// settings (an environment with nothing of its own, a chain of them) hold the same one: it is
// resolved and stored once.
class AppList {
  using Items = std::vector<std::shared_ptr<const AppSpec>>;

 public:
  class const_iterator {
   public:
    using iterator_category = std::random_access_iterator_tag;
    using value_type = AppSpec;
    using difference_type = std::ptrdiff_t;
    using pointer = const AppSpec*;
    using reference = const AppSpec&;
    const_iterator() = default;
    explicit const_iterator(Items::const_iterator it) : it_(it) {}
    reference operator*() const { return **it_; }
    pointer operator->() const { return it_->get(); }
    reference operator[](difference_type n) const { return *it_[n]; }
    const_iterator& operator++() { ++it_; return *this; }
    const_iterator operator++(int) { auto t = *this; ++it_; return t; }
    const_iterator& operator--() { --it_; return *this; }
    const_iterator operator--(int) { auto t = *this; --it_; return t; }
    const_iterator& operator+=(difference_type n) { it_ += n; return *this; }
    const_iterator& operator-=(difference_type n) { it_ -= n; return *this; }
    friend const_iterator operator+(const_iterator a, difference_type n) { return a += n; }
    friend const_iterator operator+(difference_type n, const_iterator a) { return a += n; }
    friend const_iterator operator-(const_iterator a, difference_type n) { return a -= n; }
    friend difference_type operator-(const const_iterator& a, const const_iterator& b) { return a.it_ - b.it_; }
    friend bool operator==(const const_iterator& a, const const_iterator& b) { return a.it_ == b.it_; }
    friend auto operator<=>(const const_iterator& a, const const_iterator& b) { return a.it_ <=> b.it_; }

   private:
    Items::const_iterator it_;
  };
  using iterator = const_iterator;
  using value_type = AppSpec;
  using size_type = std::size_t;

  const_iterator begin() const { return const_iterator(items_.begin()); }
  const_iterator end() const { return const_iterator(items_.end()); }
  std::size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  const AppSpec& operator[](std::size_t i) const { return *items_[i]; }
  const AppSpec& front() const { return *items_.front(); }
  const AppSpec& back() const { return *items_.back(); }
  void push_back(AppSpec spec) { items_.push_back(std::make_shared<const AppSpec>(std::move(spec))); }
  void push_back(std::shared_ptr<const AppSpec> spec) { items_.push_back(std::move(spec)); }
  void reserve(std::size_t n) { items_.reserve(n); }
  // The i-th app as the catalog holds it: the same object in every environment that shares it.
  const std::shared_ptr<const AppSpec>& shared(std::size_t i) const { return items_[i]; }

 private:
  Items items_;
};

struct Environment {
  std::string name;
  std::string base;                 // empty when none
  // Environments kept as their own documents (EnvDocument) rather than in the fleet document.
  bool own_document = false;
  std::string owner;                // the document's owner (empty for the fleet's environments)
  std::vector<std::string> editors; // users besides the owner who may change it
  Millis expires_at = 0;            // wall; 0: never (`expires:`)
  bool keep = false;                // `keep: true`: never expires
  bool deploy_changed = false;      // `deploy: changed`: a thin environment
  bool follow = false;              // poll branch heads and refresh moved apps
  Millis follow_interval_ms = 30'000;
  AppList apps;                     // every app of the fleet, resolved, in dependency order
  // app → the environment whose instances serve it for this one: the environment itself for
  // the apps it runs; for the apps a thin environment does not run, the first environment up
  // its base chain that runs them.
  std::map<std::string, std::string> served_by;
  const AppSpec* find(std::string_view app) const;
  bool runs(std::string_view app) const;
  // app → its position in `apps`; built when the catalog is parsed (find() scans without it).
  // Every environment of a catalog has the same apps in the same order: they share one index.
  std::shared_ptr<const std::unordered_map<std::string, std::size_t>> app_index;
  int instance_count() const;       // of the apps it runs
};

struct DnsSpec {
  std::string zone = "berth.test";  // lower case, no trailing dot
  Millis ttl_ms = 2000;
  Millis negative_ttl_ms = 2000;
};

// An environment kept as its own versioned document, created and changed one by one through the
// API (berth env ...), never by applying the fleet document. Its YAML has the keys of
// `environments.<name>` in berth.yaml plus `expires`, `keep` and `editors`.
struct EnvDocument {
  std::string name;
  std::string text;
  std::string owner;
  std::int64_t version = 0;      // 1 when created, +1 per change
  Millis updated_at = 0;         // wall
  std::string updated_by;
  // How errors in it are located: "environments/<name>.yaml".
  std::string filename() const { return "environments/" + name + ".yaml"; }
};

class Catalog {
 public:
  // Validates everything; on failure the Error's details list every problem found.
  // `base_dir` resolves relative source repositories (the directory of the catalog file).
  // `documents` are the environments kept as their own documents, resolved like the fleet's own
  // (a document's base may be a fleet environment or another document); errors in one are
  // located in it (environments/<name>.yaml:line:col).
  static Result<Catalog> parse(std::string_view text, const std::string& filename, const std::string& base_dir = "",
                               const std::vector<EnvDocument>& documents = {});

  const std::string& text() const { return text_; }
  const std::string& filename() const { return filename_; }
  const std::string& base_dir() const { return base_dir_; }
  const NetworkSpec& network() const { return network_; }
  const DnsSpec& dns() const { return dns_; }
  const std::vector<Environment>& environments() const { return environments_; }
  const Environment* find(std::string_view env) const;
  std::vector<std::string> environment_names() const;
  const std::vector<EnvDocument>& documents() const { return documents_; }
  const EnvDocument* document(std::string_view env) const;

 private:
  friend Result<ResolvedCatalog> resolve_catalog(std::string_view text, const std::string& filename,
                                                 const std::string& base_dir, const std::vector<EnvDocument>& documents);
  // `lenient` (resolve_catalog): a document's errors are collected there and its environment
  // kept in the catalog for the caller to leave out; the catalog fails only for the fleet's own.
  // Capacity and containers on a loopback pool are then the caller's to check.
  static Result<Catalog> parse_guarded(std::string_view text, const std::string& filename, const std::string& base_dir,
                                       const std::vector<EnvDocument>& documents, loader::DocumentErrors* lenient);
  static Result<Catalog> parse_unguarded(std::string_view text, const std::string& filename, const std::string& base_dir,
                                         const std::vector<EnvDocument>& documents, loader::DocumentErrors* lenient);
  // Hash indexes and fingerprints, once everything is resolved: lookups by name are O(1).
  void index();

  std::unordered_map<std::string, std::size_t> env_index_;  // environment → position
  std::unordered_map<std::string, std::size_t> doc_index_;  // environment document → position
  std::string text_;
  std::string filename_;
  std::string base_dir_;
  NetworkSpec network_;
  DnsSpec dns_;
  std::vector<Environment> environments_;
  std::vector<EnvDocument> documents_;
};

// The fleet document with every environment document that is valid with it; the others are left
// out, each with why (the error's first line and every detail, joined). Fails only when the
// fleet document itself is invalid.
struct ResolvedCatalog {
  Catalog catalog;
  std::map<std::string, std::string> invalid;
};
Result<ResolvedCatalog> resolve_catalog(std::string_view text, const std::string& filename, const std::string& base_dir,
                                        const std::vector<EnvDocument>& documents);

// What a member (not an admin) may set in an environment document: base, deploy, include,
// follow, lifetime and editors, and per app (or for all apps) tag, build_type, instances, env
// values, a database's standard version, and source.repo when it starts with one of
// `allowed_repos` (prefixes). Everything else — commands, images, ports, health, volumes,
// resources, constraints — is the fleet maintainers'. The error lists every key refused, located.
Status check_member_document(const EnvDocument& doc, const std::vector<std::string>& allowed_repos);

// The document's YAML with `key: value` set (dotted: "orders.tag", "tag" for every app,
// "expires"); an empty `value` with `unset` removes it. Keeps the rest of the text's meaning
// (comments are not kept). Errors name the key.
Result<std::string> set_in_document(std::string_view text, const std::string& key, const std::string& value, bool unset);

// What secret env values show as.
inline constexpr std::string_view kSecretMask = "••••";
// The YAML `text` with the value of every `{secret: true, value: ...}` replaced by kSecretMask
// (unchanged when it has none).
std::string mask_secrets(std::string_view text);
// A document written back after it was read masked: each secret whose value is kSecretMask takes
// its value from `previous` (the same path there); an error names one that has none.
Result<std::string> restore_secrets(std::string_view text, std::string_view previous, const std::string& filename);

// Placeholders a command may use; `port.NAME` for each named port.
std::vector<std::string> command_variables();

// A container's image reference with its placeholders substituted; ${tag} becomes a valid
// Docker tag (characters other than [A-Za-z0-9_.-] turn into '-': feature/x → feature-x).
std::string image_reference(std::string_view tmpl, const std::map<std::string, std::string>& vars);

// Substitute ${name} in `tmpl` with the values as they are (no quoting).
std::string substitute_raw(std::string_view tmpl, const std::map<std::string, std::string>& vars);

// Substitute ${name} in `tmpl`; values are shell-quoted. Unknown names are left untouched
// (the catalog validator rejects them before they get here).
std::string substitute(std::string_view tmpl, const std::map<std::string, std::string>& vars);

}  // namespace berth::model
