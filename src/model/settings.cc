// The catalog loader's schema, shared helpers and the settings reader: layers flattened into
// dotted paths with provenance, then read into typed AppSpec fields with located errors.
#include <algorithm>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "base/text.h"
#include "model/loader.h"

namespace berth::model::loader {
namespace fs = std::filesystem;

// ---- schema -------------------------------------------------------------------------------

const std::vector<std::string> kTopKeys = {"network", "dns", "defaults", "apps", "databases", "environments"};
const std::vector<std::string> kDatabaseKeys = {"engine", "standard", "rollout", "port", "options", "user", "password",
                                                "description"};
const std::vector<std::string> kNetworkKeys = {"pool", "exclude", "reserve_for"};
const std::vector<std::string> kDnsKeys = {"zone", "ttl", "negative_ttl"};
const std::vector<std::string> kSettingKeys = {"tag", "build_type", "command", "instances", "ports",
                                               "health", "restart", "stop_grace", "env", "standard", "rollout",
                                               "image", "entrypoint", "args", "user", "workdir", "volumes",
                                               "resources", "constraints"};
const std::vector<std::string> kResourceKeys = {"cpus", "memory"};
const std::vector<std::string> kHealthKeys = {"type", "port", "path", "expect", "command", "interval",
                                              "timeout", "start_period", "start_interval",
                                              "failure_threshold", "success_threshold"};
const std::vector<std::string> kRestartKeys = {"policy", "backoff", "max_backoff", "on_unhealthy"};
const std::vector<std::string> kDependencyKeys = {"app", "soft", "wait_for", "on_failure"};
const std::vector<std::string> kSourceKeys = {"repo", "recipes", "timeout"};
const std::vector<std::string> kRecipeKeys = {"command", "artifact", "image"};

static std::vector<std::string> plus(std::vector<std::string> a, std::initializer_list<std::string> b) {
  a.insert(a.end(), b);
  return a;
}
const std::vector<std::string> kAppKeys = plus(kSettingKeys, {"depends_on", "description", "source", "kind"});
const std::vector<std::string> kEnvKeys = plus(kSettingKeys, {"base", "apps", "description", "deploy", "include", "follow",
                                                              "follow_interval"});
const std::vector<std::string> kEnvAppKeys = plus(kSettingKeys, {"source"});
const std::vector<std::string> kEnvDocumentKeys = plus(kEnvKeys, {"expires", "ttl", "keep", "editors"});

std::string join(const std::vector<std::string>& v, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) out += sep;
    out += v[i];
  }
  return out;
}

bool is_dns_label(std::string_view s) {
  if (s.empty() || s.size() > 63 || s.front() == '-' || s.back() == '-') return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

namespace {
bool contains(const YAML::Node& tree, const YAML::Node& n, int depth = 0) {
  if (tree.is(n)) return true;
  if (depth > 64 || !(tree.IsMap() || tree.IsSequence())) return false;
  for (auto it = tree.begin(); it != tree.end(); ++it) {
    if (tree.IsMap()) {
      if (contains(it->first, n, depth + 1) || contains(it->second, n, depth + 1)) return true;
    } else if (contains(*it, n, depth + 1)) {
      return true;
    }
  }
  return false;
}
}  // namespace

std::string Ctx::where(const YAML::Node& n) const {
  std::string in = file;
  // Only on the way to an error: which document holds the node (a walk of each).
  for (const auto& [root, name] : documents)
    if (contains(root, n)) {
      in = name;
      break;
    }
  const auto m = n.Mark();
  if (m.is_null() || m.line < 0) return in;
  return fmt::format("{}:{}:{}", in, m.line + 1, m.column + 1);
}

void Ctx::error(const YAML::Node& n, const std::string& msg) { add(where(n) + ": " + msg); }

void Ctx::add(std::string located) {
  if (lenient && !owner.empty()) {
    if (lenient->seen[owner].insert(located).second) lenient->errors[owner].push_back(std::move(located));
  } else if (seen.insert(located).second) {
    errors.push_back(std::move(located));
  }
}

std::vector<std::pair<YAML::Node, YAML::Node>> entries(Ctx& ctx, const YAML::Node& map) {
  std::vector<std::pair<YAML::Node, YAML::Node>> out;
  std::set<std::string> keys;
  for (auto it = map.begin(); it != map.end(); ++it) {
    if (!it->first.IsScalar()) {
      ctx.error(it->first, "keys must be plain strings");
      continue;
    }
    if (!keys.insert(it->first.Scalar()).second) {
      ctx.error(it->first, fmt::format("duplicate key '{}'", it->first.Scalar()));
      continue;
    }
    out.emplace_back(it->first, it->second);
  }
  return out;
}

bool expect_map(Ctx& ctx, const YAML::Node& n, const std::string& what) {
  if (n.IsMap()) return true;
  if (n.IsNull()) return false;  // an empty section is fine
  ctx.error(n, fmt::format("{} must be a mapping (key: value)", what));
  return false;
}

void check_keys(Ctx& ctx, const YAML::Node& map, const std::vector<std::string>& allowed,
                const std::string& where) {
  if (!map.IsMap()) return;
  for (const auto& [k, v] : entries(ctx, map)) {
    const std::string& key = k.Scalar();
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
    auto hint = closest(key, allowed);
    ctx.error(k, fmt::format("unknown key '{}' in {}{}; valid keys: {}", key, where,
                             hint ? fmt::format(" (did you mean '{}'?)", *hint) : "", join(allowed)));
  }
}

void check_setting_layer(Ctx& ctx, const YAML::Node& layer, const std::vector<std::string>& allowed,
                         const std::string& where) {
  if (!expect_map(ctx, layer, where)) return;
  check_keys(ctx, layer, allowed, where);
  if (auto h = layer["health"]; h && expect_map(ctx, h, where + ".health"))
    check_keys(ctx, h, kHealthKeys, where + ".health");
  if (auto r = layer["restart"]; r && expect_map(ctx, r, where + ".restart"))
    check_keys(ctx, r, kRestartKeys, where + ".restart");
  if (auto r = layer["resources"]; r && expect_map(ctx, r, where + ".resources"))
    check_keys(ctx, r, kResourceKeys, where + ".resources");
  if (auto src = layer["source"];
      src && &allowed == &kEnvAppKeys &&
      expect_map(ctx, src, where + ".source")) {
    check_keys(ctx, src, {"repo"}, where + ".source");
    if (auto r = src["repo"]; r && (!r.IsScalar() || r.Scalar().empty()))
      ctx.error(r, fmt::format("{}.source.repo must be a git repository (URL or path)", where));
  }
  for (const char* free_map : {"ports", "env"}) {
    auto m = layer[free_map];
    if (!m || !expect_map(ctx, m, where + "." + free_map)) continue;
    for (const auto& [k, v] : entries(ctx, m)) {
      if (v.IsScalar()) continue;
      if (std::string(free_map) == "env" && v.IsMap()) {  // {secret: true, value: ...} or {secret: true, file: ...}
        check_keys(ctx, v, {"secret", "value", "file"}, fmt::format("{}.env.{}", where, k.Scalar()));
        const YAML::Node sec = v["secret"], val = v["value"], file = v["file"];
        if (sec && !(sec.IsScalar() && (sec.Scalar() == "true" || sec.Scalar() == "false")))
          ctx.error(sec, fmt::format("{}.env.{}.secret must be true or false", where, k.Scalar()));
        if (file && val)
          ctx.error(file, fmt::format("{}.env.{}: value or file, not both", where, k.Scalar()));
        else if (file && (!file.IsScalar() || file.Scalar().empty()))
          ctx.error(file, fmt::format("{}.env.{}.file must be a path (absolute, or relative to this file)", where, k.Scalar()));
        else if (file && !(sec && sec.IsScalar() && sec.Scalar() == "true"))
          ctx.error(file, fmt::format("{}.env.{}: a value read from a file is a secret: add secret: true", where, k.Scalar()));
        else if (!file && (!val || !val.IsScalar()))
          ctx.error(val ? val : v, fmt::format("{}.env.{}.value must be a single value", where, k.Scalar()));
        continue;
      }
      ctx.error(v, fmt::format("{}.{}.{} must be a single value{}", where, free_map, k.Scalar(),
                               std::string(free_map) == "env" ? ", or {secret: true, value: ...}" : ""));
    }
  }
  for (const char* scalar : {"tag", "build_type", "instances", "stop_grace", "standard", "rollout", "image", "user", "workdir"})
    if (auto s = layer[scalar]; s && !s.IsScalar())
      ctx.error(s, fmt::format("{}.{} must be a single value", where, scalar));
  if (auto c = layer["constraints"]; c && !c.IsNull()) {
    bool ok = c.IsSequence();
    for (const auto& item : c) {
      bool words = item.IsSequence();
      for (const auto& w : item) words = words && w.IsScalar();
      ok = ok && words;
    }
    if (!ok)
      ctx.error(c, fmt::format("{}.constraints must be a list of [field, OPERATOR] or [field, OPERATOR, value] lists, "
                               "like [[hostname, UNIQUE], [rack, GROUP_BY, 3]]",
                               where));
  }
  for (const char* words : {"command", "entrypoint", "args", "volumes"}) {
    auto w = layer[words];
    if (!w || w.IsScalar() || w.IsNull()) continue;
    bool ok = w.IsSequence();
    for (const auto& item : w) ok = ok && item.IsScalar();
    if (!ok) ctx.error(w, fmt::format("{}.{} must be a string or a list of strings", where, words));
  }
}

// A secret kept out of the documents: `{secret: true, file: PATH}` (PATH relative to the fleet
// document), read whenever the catalog is resolved — at most 64 KiB, one trailing newline
// dropped. The error names the place and the path, never the content.
std::string read_secret_file(Ctx& ctx, const YAML::Node& file, const std::string& setting) {
  if (!file || !file.IsScalar()) return "";
  fs::path p = file.Scalar();
  if (p.is_relative()) p = fs::path(ctx.base_dir) / p;
  constexpr std::size_t kMax = 64 << 10;
  std::ifstream in(p, std::ios::binary);
  if (!in) {
    ctx.error(file, fmt::format("{}: cannot read the secrets file {}", setting, p.string()));
    return "";
  }
  std::string text(kMax + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) {
    ctx.error(file, fmt::format("{}: cannot read the secrets file {}", setting, p.string()));
    return "";
  }
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > kMax) {
    ctx.error(file, fmt::format("{}: the secrets file {} is larger than 64 KiB", setting, p.string()));
    return "";
  }
  if (!text.empty() && text.back() == '\n') text.pop_back();
  if (!text.empty() && text.back() == '\r') text.pop_back();
  return text;
}

// ---- layering -----------------------------------------------------------------------------



void flatten(const YAML::Node& layer, const std::string& name, Flat& out) {
  if (!layer.IsMap()) return;
  for (auto it = layer.begin(); it != layer.end(); ++it) {
    if (!it->first.IsScalar()) continue;
    const std::string key = it->first.Scalar();
    if (std::find(kSettingKeys.begin(), kSettingKeys.end(), key) == kSettingKeys.end()) continue;
    const YAML::Node v = it->second;  // a copy: it-> returns a proxy that dies with the statement
    if (v.IsMap()) {
      for (auto jt = v.begin(); jt != v.end(); ++jt) {
        if (!jt->first.IsScalar()) continue;
        const std::string path = key + "." + jt->first.Scalar();
        const YAML::Node value = jt->second;
        // Once secret, a value stays secret in the layers above, whatever they write.
        const bool was_secret = out.count(path) && out.at(path).secret;
        if (key == "env" && value.IsMap() && value["file"] && !value["value"])
          out[path] = Leaf{value, name, true};  // {secret: true, file: ...}: read when the app is resolved
        else if (key == "env" && value.IsMap())
          out[path] = Leaf{value["value"] ? value["value"] : YAML::Node(YAML::NodeType::Null), name,
                           was_secret || (value["secret"] && value["secret"].IsScalar() &&
                                          value["secret"].Scalar() == "true")};
        else
          out[path] = Leaf{value, name, was_secret};
      }
    } else {
      out[key] = Leaf{v, name};
    }
  }
}

std::string display(const YAML::Node& n) {
  if (n.IsScalar()) return n.Scalar();
  if (n.IsNull()) return "";
  YAML::Emitter e;
  e.SetSeqFormat(YAML::Flow);
  e.SetMapFormat(YAML::Flow);
  e << n;
  return e.c_str();
}

namespace {

// Reads typed settings from a flattened stack, reporting located errors.
class Reader {
 public:
  Reader(Ctx& ctx, const Flat& flat, AppSpec& spec) : ctx_(ctx), flat_(flat), spec_(spec) {}

  const Leaf* leaf(const std::string& path) {
    auto it = flat_.find(path);
    return it == flat_.end() ? nullptr : &it->second;
  }

  void record(const std::string& path, const std::string& value) {
    const Leaf* l = leaf(path);
    spec_.from[path] = l ? l->layer : "built-in";
    spec_.values[path] = value;
  }

  std::string str(const std::string& path, std::string def) {
    if (const Leaf* l = leaf(path)) {
      if (l->node.IsScalar()) def = l->node.Scalar();
      else if (!l->node.IsNull()) ctx_.error(l->node, fmt::format("{} must be a single value", path));
    }
    record(path, def);
    return def;
  }

  long integer(const std::string& path, long def, long min, long max) {
    if (const Leaf* l = leaf(path)) {
      const std::string s = l->node.IsScalar() ? l->node.Scalar() : "";
      char* end = nullptr;
      long v = s.empty() ? 0 : std::strtol(s.c_str(), &end, 10);
      if (s.empty() || *end != '\0' || v < min || v > max)
        ctx_.error(l->node, fmt::format("{} must be an integer from {} to {}, not '{}'", path, min, max,
                                        display(l->node)));
      else
        def = v;
    }
    record(path, std::to_string(def));
    return def;
  }

  Millis duration(const std::string& path, Millis def) {
    if (const Leaf* l = leaf(path)) {
      const std::string s = l->node.IsScalar() ? l->node.Scalar() : "";
      auto d = parse_duration(s);
      if (!d)
        ctx_.error(l->node, fmt::format("{}: bad duration '{}'; write a number with a unit: 250ms, 2s, "
                                        "1.5s, 5m, 1h",
                                        path, display(l->node)));
      else
        def = *d;
    }
    record(path, format_duration(def));
    return def;
  }

  bool boolean(const std::string& path, bool def) {
    if (const Leaf* l = leaf(path)) {
      const std::string s = l->node.IsScalar() ? l->node.Scalar() : "";
      if (s == "true" || s == "yes" || s == "on") def = true;
      else if (s == "false" || s == "no" || s == "off") def = false;
      else ctx_.error(l->node, fmt::format("{} must be true or false, not '{}'", path, display(l->node)));
    }
    record(path, def ? "true" : "false");
    return def;
  }

  // A command line: a string split into words like sh does (no expansion), or a list of words.
  std::optional<std::vector<std::string>> words(const std::string& path) {
    const Leaf* l = leaf(path);
    if (!l || l->node.IsNull()) return std::nullopt;
    std::vector<std::string> out;
    if (l->node.IsScalar()) {
      std::string why;
      auto split = split_words(l->node.Scalar(), &why);
      if (!split) {
        ctx_.error(l->node, fmt::format("{}: '{}' cannot be split into words: {}", path, l->node.Scalar(), why));
        return std::nullopt;
      }
      out = std::move(*split);
    } else if (l->node.IsSequence()) {
      for (const auto& item : l->node)
        if (item.IsScalar()) out.push_back(item.Scalar());
    } else {
      return std::nullopt;  // reported by check_setting_layer
    }
    spec_.from[path] = l->layer;
    spec_.values[path] = display(l->node);
    return out;
  }

  std::string choice(const std::string& path, std::string def, const std::vector<std::string>& valid) {
    std::string v = str(path, def);
    if (std::find(valid.begin(), valid.end(), v) == valid.end()) {
      const Leaf* l = leaf(path);
      auto hint = closest(v, valid);
      ctx_.error(l ? l->node : YAML::Node(), fmt::format("{} must be one of {}, not '{}'{}", path, join(valid, " | "),
                                                         v, hint ? fmt::format(" (did you mean '{}'?)", *hint) : ""));
      return def;
    }
    return v;
  }

 private:
  Ctx& ctx_;
  const Flat& flat_;
  AppSpec& spec_;
};

// Every ${name} in `text` must be one of `valid`.
void check_placeholders(Ctx& ctx, const YAML::Node& node, const std::string& what, const std::string& text,
                        const std::vector<std::string>& valid) {
  std::size_t pos = 0;
  while ((pos = text.find("${", pos)) != std::string::npos) {
    auto close = text.find('}', pos);
    std::string name = text.substr(pos + 2, close == std::string::npos ? std::string::npos : close - pos - 2);
    if (close == std::string::npos || std::find(valid.begin(), valid.end(), name) == valid.end()) {
      auto hint = closest(name, valid);
      ctx.error(node, fmt::format("{} uses unknown placeholder '${{{}}}'{}; valid: {}", what, name,
                                  hint ? fmt::format(" (did you mean '${{{}}}'?)", *hint) : "", join(valid)));
    }
    if (close == std::string::npos) break;
    pos = close + 1;
  }
}

// "NAME:/path[:ro]" or "/host/path:/path[:ro]" (a relative host path is relative to the catalog).
std::optional<VolumeSpec> parse_volume(const std::string& text, const std::string& base_dir, std::string& why) {
  std::vector<std::string> parts;
  for (std::size_t i = 0;;) {
    auto j = text.find(':', i);
    parts.push_back(text.substr(i, j == std::string::npos ? std::string::npos : j - i));
    if (j == std::string::npos) break;
    i = j + 1;
  }
  VolumeSpec v;
  if (parts.size() == 3) {
    if (parts[2] != "ro" && parts[2] != "rw") {
      why = fmt::format("the mode is ro or rw, not '{}'", parts[2]);
      return std::nullopt;
    }
    v.read_only = parts[2] == "ro";
  } else if (parts.size() != 2) {
    why = "write SOURCE:TARGET or SOURCE:TARGET:ro";
    return std::nullopt;
  }
  v.source = parts[0];
  v.target = parts[1];
  if (v.target.empty() || v.target.front() != '/') {
    why = fmt::format("the target '{}' must be an absolute path in the container", v.target);
    return std::nullopt;
  }
  if (v.source.rfind('/', 0) == 0 || v.source.rfind("./", 0) == 0 || v.source.rfind("../", 0) == 0) {
    v.bind = true;
    if (v.source.front() != '/') v.source = (base_dir.empty() ? std::string(".") : base_dir) + "/" + v.source;
    return v;
  }
  std::string name = substitute_raw(v.source, {{"ordinal", "0"}});
  bool ok = !name.empty() && name.size() <= 64 && std::isalnum(static_cast<unsigned char>(name.front()));
  for (char c : name)
    ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-');
  if (!ok) {
    why = fmt::format("'{}' is neither a host path (/..., ./...) nor a volume name (letters, digits, _ . -, "
                      "${{ordinal}} allowed)", v.source);
    return std::nullopt;
  }
  return v;
}

}  // namespace

void read_settings(Ctx& ctx, const Flat& flat, AppSpec& spec) {
  Reader r(ctx, flat, spec);
  spec.tag = r.str("tag", "latest");
  spec.build_type = r.str("build_type", "release");
  spec.instances = static_cast<int>(r.integer("instances", 1, 1, 1000));
  spec.stop_grace_ms = r.duration("stop_grace", 5000);

  // The standard a database is a copy of: NAME or NAME@VERSION.
  const std::string standard = r.str("standard", "");
  if (spec.database) {
    auto at = standard.find('@');
    std::string name = standard.substr(0, at);
    int version = 0;
    bool ok = is_dns_label(name);
    if (at != std::string::npos) {
      const std::string v = standard.substr(at + 1);
      char* end = nullptr;
      long n = v.empty() ? 0 : std::strtol(v.c_str(), &end, 10);
      ok = ok && !v.empty() && *end == '\0' && n >= 1 && n <= 1'000'000;
      version = static_cast<int>(n);
    }
    if (!ok) {
      const Leaf* l = r.leaf("standard");
      ctx.error(l ? l->node : YAML::Node(),
                fmt::format("database '{}': standard '{}' must be NAME or NAME@VERSION (a standard imported with "
                            "`berth db import NAME`; VERSION a number from 1), e.g. shop or shop@2",
                            spec.app, standard));
    }
    spec.database->standard = name;
    spec.database->version = version;
    // How a release of its standard reaches this copy (berth db rollout).
    spec.database->rollout = r.choice("rollout", "manual", {"auto", "manual", "none"});
  } else if (!standard.empty()) {
    ctx.error(r.leaf("standard")->node,
              fmt::format("'standard' is a setting of databases; '{}' is an app (declare databases under 'databases:')",
                          spec.app));
  } else {
    // Not settings apps have (an environment's `rollout: none` is for its databases).
    spec.from.erase("standard");
    spec.values.erase("standard");
    spec.from.erase("rollout");
    spec.values.erase("rollout");
  }

  // Ports: name → number, numbers unique within the app.
  std::map<int, std::string> by_number;
  for (const auto& [path, leaf] : flat) {
    if (path.rfind("ports.", 0) != 0) continue;
    std::string name = path.substr(6);
    if (!is_dns_label(name)) {
      ctx.error(leaf.node, fmt::format("port name '{}' must be lowercase letters, digits and '-'", name));
      continue;
    }
    int port = static_cast<int>(r.integer(path, 0, 1, 65535));
    spec.ports[name] = port;  // also when invalid (0): one mistake should give one error
    if (port == 0) continue;
    if (auto [it, fresh] = by_number.emplace(port, name); !fresh)
      ctx.error(leaf.node, fmt::format("duplicate port {}: ports.{} and ports.{} of app '{}' both use it", port,
                                       it->second, name, spec.app));
    spec.ports[name] = port;
  }

  for (const auto& [path, leaf] : flat) {
    if (path.rfind("env.", 0) != 0) continue;
    if (leaf.node.IsMap()) {
      spec.env[path.substr(4)] = read_secret_file(ctx, leaf.node["file"], path);
      spec.secrets.insert(path.substr(4));
      r.record(path, spec.env[path.substr(4)]);
      continue;
    }
    spec.env[path.substr(4)] = r.str(path, "");
    if (leaf.secret) spec.secrets.insert(path.substr(4));
  }

  // What runs: a command for sh, or a container from an image.
  std::vector<std::string> valid = command_variables();
  valid.push_back("artifact");  // apps with a source; checked by the loader
  if (spec.database) {
    valid.push_back("datadir");  // the environment's copy of the standard
    valid.push_back("rundir");   // sockets and pid files of the server
  }
  for (const auto& [name, port] : spec.ports) valid.push_back("port." + name);
  auto node_of = [&](const char* path) { return r.leaf(path) ? r.leaf(path)->node : YAML::Node(); };
  spec.image = r.str("image", "");
  if (spec.image.empty()) {
    spec.from.erase("image");
    spec.values.erase("image");
  }
  if (spec.container()) {
    if (spec.database)
      ctx.error(node_of("image"), fmt::format("database '{}' takes no image: its server runs on its copy as a process, or "
                                              "in a container from the daemon's --db-image (a cluster's default)",
                                              spec.app));
    check_placeholders(ctx, node_of("image"), fmt::format("image of app '{}'", spec.app), spec.image, command_variables());
    spec.command_words = r.words("command");
    spec.entrypoint = r.words("entrypoint");
    if (spec.command_words) {
      spec.command = spec.values["command"];
      for (const auto& w : *spec.command_words)
        check_placeholders(ctx, node_of("command"), fmt::format("command of app '{}'", spec.app), w, valid);
    }
    if (spec.entrypoint)
      for (const auto& w : *spec.entrypoint)
        check_placeholders(ctx, node_of("entrypoint"), fmt::format("entrypoint of app '{}'", spec.app), w, valid);
    spec.user = r.str("user", "");
    spec.workdir = r.str("workdir", "");
    if (spec.user.empty()) spec.from.erase("user"), spec.values.erase("user");
    if (spec.workdir.empty()) spec.from.erase("workdir"), spec.values.erase("workdir");
    if (!spec.workdir.empty() && spec.workdir.front() != '/')
      ctx.error(node_of("workdir"), fmt::format("workdir of app '{}' must be an absolute path, not '{}'", spec.app, spec.workdir));
    if (const Leaf* l = r.leaf("volumes"); l && !l->node.IsNull()) {
      YAML::Node list;
      list.reset(l->node);
      if (l->node.IsScalar()) {
        YAML::Node one;
        one.push_back(l->node);
        list.reset(one);
      }
      std::string shown;
      for (const auto& item : list) {
        if (!item.IsScalar()) continue;
        std::string why;
        auto v = parse_volume(item.Scalar(), ctx.base_dir, why);
        if (!v) ctx.error(item, fmt::format("volumes of app '{}': '{}': {}", spec.app, item.Scalar(), why));
        else spec.volumes.push_back(*v);
        shown += (shown.empty() ? "" : ", ") + item.Scalar();
      }
      r.record("volumes", "[" + shown + "]");
    }
  } else {
    if (const Leaf* l = r.leaf("command"); l && l->node.IsSequence())
      ctx.error(l->node, fmt::format("command of app '{}' is a list, but the app runs as a process: its command is one "
                                     "line for sh (lists are for containers: set image)", spec.app));
    spec.command = r.str("command", "");
    if (spec.command.empty())
      ctx.error(YAML::Node(), fmt::format("app '{}' has no command: set apps.{}.command (or defaults.command), or "
                                          "apps.{}.image to run it from an image", spec.app, spec.app, spec.app));
    else
      check_placeholders(ctx, node_of("command"), fmt::format("command of app '{}'", spec.app), spec.command, valid);
    // Processes run as the environment's own unprivileged user; `user:` names another host
    // account, or root (the daemon's user).
    spec.user = r.str("user", "");
    if (spec.user.empty()) spec.from.erase("user"), spec.values.erase("user");
    for (const char* key : {"entrypoint", "workdir", "volumes"})
      if (const Leaf* l = r.leaf(key); l && !l->node.IsNull())
        ctx.error(l->node, fmt::format("{} of app '{}' is a setting of containers, but the app runs as a process; set "
                                       "apps.{}.image to run it from an image", key, spec.app, spec.app));
  }
  if (auto args = r.words("args")) {
    spec.args = *args;
    for (const auto& w : spec.args)
      check_placeholders(ctx, node_of("args"), fmt::format("args of app '{}'", spec.app), w, valid);
  }

  // Resources (containers enforce them; processes run in the daemon's cgroup).
  if (const Leaf* l = r.leaf("resources.cpus")) {
    char* end = nullptr;
    const std::string text = l->node.IsScalar() ? l->node.Scalar() : "";
    double cpus = text.empty() ? -1 : std::strtod(text.c_str(), &end);
    if (text.empty() || *end || cpus <= 0 || cpus > 1024)
      ctx.error(l->node, fmt::format("resources.cpus of app '{}' must be a number of cores above 0 (0.5, 2), not '{}'",
                                     spec.app, display(l->node)));
    else
      spec.resources.cpus = cpus;
    r.record("resources.cpus", text);
  }
  if (const Leaf* l = r.leaf("resources.memory")) {
    const std::string text = l->node.IsScalar() ? l->node.Scalar() : "";
    auto bytes = parse_bytes(text);
    if (!bytes || *bytes < (4u << 20))
      ctx.error(l->node, fmt::format("resources.memory of app '{}' must be a size of at least 4M (256M, 1.5G), not '{}'",
                                     spec.app, display(l->node)));
    else
      spec.resources.memory_bytes = *bytes;
    r.record("resources.memory", text);
  }

  // Placement in a cluster.
  if (const Leaf* l = r.leaf("constraints"); l && l->node.IsSequence()) {
    std::string shown;
    for (const auto& item : l->node) {
      if (!item.IsSequence()) continue;
      std::vector<std::string> words;
      for (const auto& w : item)
        if (w.IsScalar()) words.push_back(w.Scalar());
      auto c = parse_constraint(words);
      if (!c.ok()) ctx.error(item, fmt::format("constraints of app '{}': {}", spec.app, c.error().message));
      else spec.constraints.push_back(std::move(*c));
      shown += fmt::format("{}[{}]", shown.empty() ? "" : ", ", fmt::join(words, ", "));
    }
    r.record("constraints", "[" + shown + "]");
  }

  // Health.
  auto& h = spec.health;
  std::string type = r.choice("health.type", "none", {"none", "http", "tcp", "exec"});
  h.type = type == "http" ? HealthType::kHttp : type == "tcp" ? HealthType::kTcp
         : type == "exec" ? HealthType::kExec : HealthType::kNone;
  if (h.type != HealthType::kNone) {
    h.interval_ms = r.duration("health.interval", h.interval_ms);
    h.timeout_ms = r.duration("health.timeout", h.timeout_ms);
    h.start_period_ms = r.duration("health.start_period", h.start_period_ms);
    h.start_interval_ms = r.duration("health.start_interval", h.start_interval_ms);
    h.failure_threshold = static_cast<int>(r.integer("health.failure_threshold", h.failure_threshold, 1, 100));
    h.success_threshold = static_cast<int>(r.integer("health.success_threshold", h.success_threshold, 1, 100));
    if (h.interval_ms <= 0 || h.start_interval_ms <= 0 || h.timeout_ms <= 0)
      ctx.error(r.leaf("health.interval") ? r.leaf("health.interval")->node : YAML::Node(),
                fmt::format("health intervals and timeout of app '{}' must be above zero", spec.app));
  }
  if (h.type == HealthType::kHttp || h.type == HealthType::kTcp) {
    std::string def_port = spec.ports.size() == 1 ? spec.ports.begin()->first : "";
    h.port = r.str("health.port", def_port);
    if (!spec.ports.count(h.port)) {
      std::vector<std::string> names;
      for (const auto& [n, p] : spec.ports) names.push_back(n);
      const Leaf* l = r.leaf("health.port");
      auto hint = closest(h.port, names);
      ctx.error(l ? l->node : YAML::Node(),
                fmt::format("health.port of app '{}' must name one of its ports ({}), not '{}'{}", spec.app,
                            names.empty() ? "it has none" : join(names), h.port,
                            hint ? fmt::format(" (did you mean '{}'?)", *hint) : ""));
    }
  }
  if (h.type == HealthType::kHttp) {
    h.path = r.str("health.path", "/");
    if (h.path.empty() || h.path.front() != '/')
      ctx.error(r.leaf("health.path") ? r.leaf("health.path")->node : YAML::Node(),
                fmt::format("health.path must start with '/', not '{}'", h.path));
    if (const Leaf* l = r.leaf("health.expect")) {
      h.expect.clear();
      YAML::Node seq;
      seq.reset(l->node);
      if (l->node.IsScalar()) {
        YAML::Node one;
        one.push_back(l->node);
        seq.reset(one);
      }
      for (const auto& item : seq) {
        std::string s = item.IsScalar() ? item.Scalar() : "";
        char* end = nullptr;
        long code = s.empty() ? 0 : std::strtol(s.c_str(), &end, 10);
        if (s.empty() || *end || code < 100 || code > 599)
          ctx.error(item, fmt::format("health.expect entries must be HTTP status codes 100-599, not '{}'", display(item)));
        else
          h.expect.push_back(static_cast<int>(code));
      }
      if (h.expect.empty()) ctx.error(l->node, "health.expect must list at least one status code");
    }
    std::string shown;
    for (int c : h.expect) shown += (shown.empty() ? "" : ", ") + std::to_string(c);
    r.record("health.expect", "[" + shown + "]");
  }
  if (h.type == HealthType::kExec) {
    h.command = r.str("health.command", "");
    if (h.command.empty()) ctx.error(YAML::Node(), fmt::format("app '{}': health.type exec needs health.command", spec.app));
  }

  // Restart.
  auto& rs = spec.restart;
  std::string policy = r.choice("restart.policy", "always", {"always", "on-failure", "never"});
  rs.policy = policy == "never" ? RestartPolicy::kNever
            : policy == "on-failure" ? RestartPolicy::kOnFailure : RestartPolicy::kAlways;
  rs.backoff_ms = r.duration("restart.backoff", rs.backoff_ms);
  rs.max_backoff_ms = r.duration("restart.max_backoff", rs.max_backoff_ms);
  rs.on_unhealthy = r.boolean("restart.on_unhealthy", rs.on_unhealthy);
}

}  // namespace berth::model::loader
