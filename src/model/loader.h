// model/loader.h — internal to the model component: what the catalog loader (catalog.cc) and
// the settings reader (settings.cc) share. Not part of the component's interface.
#pragma once

#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "model/catalog.h"

namespace berth::model::loader {

extern const std::vector<std::string> kTopKeys;
extern const std::vector<std::string> kNetworkKeys;
extern const std::vector<std::string> kDnsKeys;
extern const std::vector<std::string> kSettingKeys;
extern const std::vector<std::string> kHealthKeys;
extern const std::vector<std::string> kRestartKeys;
extern const std::vector<std::string> kResourceKeys;
extern const std::vector<std::string> kDependencyKeys;
extern const std::vector<std::string> kSourceKeys;
extern const std::vector<std::string> kRecipeKeys;
extern const std::vector<std::string> kAppKeys;
extern const std::vector<std::string> kEnvKeys;
extern const std::vector<std::string> kEnvAppKeys;       // environments.E.apps.A: settings and source.repo
extern const std::vector<std::string> kEnvDocumentKeys;  // an environment document: kEnvKeys and its lifetime
extern const std::vector<std::string> kDatabaseKeys;

std::string join(const std::vector<std::string>& v, std::string_view sep = ", ");
bool is_dns_label(std::string_view s);

// resolve_catalog's way of reading environment documents: an error found while a document's
// environment is read or resolved is the document's own (it is left out), not the catalog's.
struct DocumentErrors {
  std::map<std::string, std::vector<std::string>> errors;  // document → its errors, in the order found
  std::map<std::string, std::set<std::string>> seen;
  bool fleet_broken = false;          // a fleet environment's base chain is broken by a document
  std::set<std::string> fleet_bases;  // documents some fleet environment is based on
  std::set<std::string> resolved;     // documents whose environments are in the catalog
  std::string pool_at;                // where capacity and container errors are located ("berth.yaml:2:9")
};
// Marks the unknown base in a document's "unknown environment" error, for the caller to name the
// environments there are: "...unknown environment 'x'" kUnknownBase "x" kUnknownBase.
inline constexpr std::string_view kUnknownBase = "\x1d";

// Collects located errors (deduplicated: a bad value in `defaults` is reported once, not once
// per environment and app that inherits it).
struct Ctx {
  std::string file;
  std::vector<std::string> errors;
  std::set<std::string> seen;
  std::string base_dir;  // relative host paths (sources, bind mounts) are resolved against it
  // Environment documents parsed apart from the fleet document: a node in one is located in it.
  std::vector<std::pair<YAML::Node, std::string>> documents;
  // With `lenient`, errors go to the document named `owner` while it is set.
  DocumentErrors* lenient = nullptr;
  std::string owner;

  std::string where(const YAML::Node& n) const;
  void error(const YAML::Node& n, const std::string& msg);
  void add(std::string located);  // an error already located (deduplicated like the others)
};

// A mapping's entries in file order, with duplicate and non-string keys reported.
std::vector<std::pair<YAML::Node, YAML::Node>> entries(Ctx& ctx, const YAML::Node& map);
bool expect_map(Ctx& ctx, const YAML::Node& n, const std::string& what);
void check_keys(Ctx& ctx, const YAML::Node& map, const std::vector<std::string>& allowed, const std::string& where);
// Check the shape of an app-settings layer (defaults, apps.X, environments.E, environments.E.apps.X).
void check_setting_layer(Ctx& ctx, const YAML::Node& layer, const std::vector<std::string>& allowed,
                         const std::string& where);
std::string display(const YAML::Node& n);

// yaml-cpp's Node::operator= writes through to the node referred to (it would overwrite the
// lower layer's value inside the document), so Leaf rebinds with reset() instead.
struct Leaf {
  YAML::Node node;
  std::string layer;
  bool secret = false;  // an env value marked `secret: true` here or in a lower layer
  Leaf() = default;
  Leaf(const YAML::Node& n, std::string l, bool s = false) : node(n), layer(std::move(l)), secret(s) {}
  Leaf(const Leaf& o) : node(o.node), layer(o.layer), secret(o.secret) {}
  Leaf& operator=(const Leaf& o) {
    node.reset(o.node);
    layer = o.layer;
    secret = o.secret;
    return *this;
  }
};
using Flat = std::map<std::string, Leaf>;

// Flatten an app-settings layer into dotted paths. Mappings under health/restart/ports/env are
// merged key by key; every other value (scalars, sequences) replaces what lower layers set.
void flatten(const YAML::Node& layer, const std::string& name, Flat& out);
// Typed, validated settings of one app from its flattened layer stack, with provenance.
void read_settings(Ctx& ctx, const Flat& flat, AppSpec& spec);

// apps.<app>.source as declared (sources.cc); each environment picks its recipe from it.
struct SourceDecl {
  struct Recipe {
    std::string command, artifact, dockerfile;
  };
  std::string repo;  // a relative path already resolved against the catalog's directory
  std::map<std::string, Recipe> recipes;  // build_type or "default" → recipe
  Millis timeout_ms = 10 * 60 * 1000;
  YAML::Node node;
};
SourceDecl read_source(Ctx& ctx, const YAML::Node& src, const std::string& app, const std::string& base_dir);
// The recipe of spec's build_type, as spec.source; an image recipe makes the app run its image.
// `repo`, when its layer is set, is an environment's source.repo instead of the app's.
void apply_source(Ctx& ctx, const SourceDecl& source, const std::string& env, const Flat& flat, AppSpec& spec,
                  const Leaf& repo);
// An environment document's expires, keep and editors.
// `written_at`: when the document was last written (a `ttl:` counts from then).
void read_lifetime(Ctx& ctx, const YAML::Node& doc, Environment& env, Millis written_at);
// A repository as given, resolved against `base_dir` when it is a relative path.
std::string resolve_repo(const std::string& repo, const std::string& base_dir);
// The error of an app that runs as a container when network.pool is loopback (located at the pool).
std::string container_on_loopback(const AppSpec& a, const NetworkSpec& net);
// The error of environments that ask for more addresses than the pool has; `parts`: "NAME COUNT, ...".
std::string pool_too_small(const NetworkSpec& net, std::uint64_t need, const std::string& parts);
// An app without a source must not use ${artifact}.
void check_no_artifact(Ctx& ctx, const Flat& flat, const AppSpec& spec);

}  // namespace berth::model::loader
