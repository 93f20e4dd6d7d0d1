#include "model/catalog.h"

#include <algorithm>
#include <functional>
#include <set>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "base/text.h"

namespace berth::model {

std::string_view to_string(HealthType t) {
  switch (t) {
    case HealthType::kNone: return "none";
    case HealthType::kHttp: return "http";
    case HealthType::kTcp: return "tcp";
    case HealthType::kExec: return "exec";
  }
  return "?";
}
std::string_view to_string(RestartPolicy p) {
  switch (p) {
    case RestartPolicy::kAlways: return "always";
    case RestartPolicy::kOnFailure: return "on-failure";
    case RestartPolicy::kNever: return "never";
  }
  return "?";
}
std::string_view to_string(DependencyFailure p) {
  switch (p) {
    case DependencyFailure::kIgnore: return "ignore";
    case DependencyFailure::kMark: return "mark";
    case DependencyFailure::kRestart: return "restart";
  }
  return "?";
}

std::string AppSpec::fingerprint() const {
  std::string f = fmt::format("{}\n{}\n{}\n", command, tag, build_type);
  for (const auto& [k, v] : ports) f += fmt::format("port {}={}\n", k, v);
  for (const auto& [k, v] : env) f += fmt::format("env {}={}\n", k, v);
  return fmt::format("{:016x}", std::hash<std::string>{}(f));
}

const AppSpec* Environment::find(std::string_view app) const {
  for (const auto& a : apps)
    if (a.app == app) return &a;
  return nullptr;
}

int Environment::instance_count() const {
  int n = 0;
  for (const auto& a : apps) n += a.instances;
  return n;
}

const Environment* Catalog::find(std::string_view env) const {
  for (const auto& e : environments_)
    if (e.name == env) return &e;
  return nullptr;
}

std::vector<std::string> Catalog::environment_names() const {
  std::vector<std::string> names;
  for (const auto& e : environments_) names.push_back(e.name);
  return names;
}

std::vector<std::string> command_variables() {
  return {"tag", "build_type", "env", "app", "ordinal", "ip"};
}

std::string substitute(std::string_view tmpl, const std::map<std::string, std::string>& vars) {
  std::string out;
  std::size_t i = 0;
  while (i < tmpl.size()) {
    if (tmpl[i] == '$' && i + 1 < tmpl.size() && tmpl[i + 1] == '{') {
      auto close = tmpl.find('}', i + 2);
      if (close != std::string_view::npos) {
        std::string name(tmpl.substr(i + 2, close - i - 2));
        if (auto it = vars.find(name); it != vars.end()) {
          out += shell_quote(it->second);
          i = close + 1;
          continue;
        }
      }
    }
    out += tmpl[i++];
  }
  return out;
}

namespace {

// ---- schema -------------------------------------------------------------------------------

const std::vector<std::string> kTopKeys = {"network", "defaults", "apps", "environments"};
const std::vector<std::string> kNetworkKeys = {"pool", "exclude", "reserve_for"};
const std::vector<std::string> kSettingKeys = {"tag", "build_type", "command", "instances", "ports",
                                               "health", "restart", "stop_grace", "env"};
const std::vector<std::string> kHealthKeys = {"type", "port", "path", "expect", "command", "interval",
                                              "timeout", "start_period", "start_interval",
                                              "failure_threshold", "success_threshold"};
const std::vector<std::string> kRestartKeys = {"policy", "backoff", "max_backoff", "on_unhealthy"};
const std::vector<std::string> kDependencyKeys = {"app", "soft", "wait_for", "on_failure"};

std::vector<std::string> plus(std::vector<std::string> a, std::initializer_list<std::string> b) {
  a.insert(a.end(), b);
  return a;
}
const std::vector<std::string> kAppKeys = plus(kSettingKeys, {"depends_on", "description"});
const std::vector<std::string> kEnvKeys = plus(kSettingKeys, {"base", "apps", "description"});

std::string join(const std::vector<std::string>& v, std::string_view sep = ", ") {
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

struct Ctx {
  std::string file;
  std::vector<std::string> errors;
  std::set<std::string> seen;

  std::string where(const YAML::Node& n) const {
    const auto m = n.Mark();
    if (m.is_null() || m.line < 0) return file;
    return fmt::format("{}:{}:{}", file, m.line + 1, m.column + 1);
  }
  void error(const YAML::Node& n, const std::string& msg) {
    std::string e = where(n) + ": " + msg;
    if (seen.insert(e).second) errors.push_back(std::move(e));
  }
};

// A mapping's entries in file order, with duplicate keys reported.
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

// Check the shape of an app-settings layer (defaults, apps.X, environments.E, environments.E.apps.X).
void check_setting_layer(Ctx& ctx, const YAML::Node& layer, const std::vector<std::string>& allowed,
                         const std::string& where) {
  if (!expect_map(ctx, layer, where)) return;
  check_keys(ctx, layer, allowed, where);
  if (auto h = layer["health"]; h && expect_map(ctx, h, where + ".health"))
    check_keys(ctx, h, kHealthKeys, where + ".health");
  if (auto r = layer["restart"]; r && expect_map(ctx, r, where + ".restart"))
    check_keys(ctx, r, kRestartKeys, where + ".restart");
  for (const char* free_map : {"ports", "env"}) {
    auto m = layer[free_map];
    if (!m || !expect_map(ctx, m, where + "." + free_map)) continue;
    for (const auto& [k, v] : entries(ctx, m))
      if (!v.IsScalar())
        ctx.error(v, fmt::format("{}.{}.{} must be a single value", where, free_map, k.Scalar()));
  }
  for (const char* scalar : {"tag", "build_type", "command", "instances", "stop_grace"})
    if (auto s = layer[scalar]; s && !s.IsScalar())
      ctx.error(s, fmt::format("{}.{} must be a single value", where, scalar));
}

// ---- layering -----------------------------------------------------------------------------

// yaml-cpp's Node::operator= writes through to the node referred to (it would overwrite the
// lower layer's value inside the document), so Leaf rebinds with reset() instead.
struct Leaf {
  YAML::Node node;
  std::string layer;
  Leaf() = default;
  Leaf(const YAML::Node& n, std::string l) : node(n), layer(std::move(l)) {}
  Leaf(const Leaf& o) : node(o.node), layer(o.layer) {}
  Leaf& operator=(const Leaf& o) {
    node.reset(o.node);
    layer = o.layer;
    return *this;
  }
};
using Flat = std::map<std::string, Leaf>;

// Flatten an app-settings layer into dotted paths. Mappings under health/restart/ports/env are
// merged key by key; every other value (scalars, sequences) replaces what lower layers set.
void flatten(const YAML::Node& layer, const std::string& name, Flat& out) {
  if (!layer.IsMap()) return;
  for (auto it = layer.begin(); it != layer.end(); ++it) {
    if (!it->first.IsScalar()) continue;
    const std::string key = it->first.Scalar();
    if (std::find(kSettingKeys.begin(), kSettingKeys.end(), key) == kSettingKeys.end()) continue;
    const YAML::Node v = it->second;  // a copy: it-> returns a proxy that dies with the statement
    if (v.IsMap()) {
      for (auto jt = v.begin(); jt != v.end(); ++jt)
        if (jt->first.IsScalar()) out[key + "." + jt->first.Scalar()] = Leaf{jt->second, name};
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

void read_settings(Ctx& ctx, const Flat& flat, AppSpec& spec) {
  Reader r(ctx, flat, spec);
  spec.tag = r.str("tag", "latest");
  spec.build_type = r.str("build_type", "release");
  spec.instances = static_cast<int>(r.integer("instances", 1, 1, 1000));
  spec.stop_grace_ms = r.duration("stop_grace", 5000);

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
    spec.env[path.substr(4)] = r.str(path, "");
  }

  // Command and its placeholders.
  spec.command = r.str("command", "");
  if (spec.command.empty()) {
    ctx.error(YAML::Node(), fmt::format("app '{}' has no command: set apps.{}.command (or defaults.command)",
                                        spec.app, spec.app));
  } else {
    std::vector<std::string> valid = command_variables();
    for (const auto& [name, port] : spec.ports) valid.push_back("port." + name);
    std::size_t pos = 0;
    while ((pos = spec.command.find("${", pos)) != std::string::npos) {
      auto close = spec.command.find('}', pos);
      std::string name = spec.command.substr(pos + 2, close == std::string::npos ? std::string::npos : close - pos - 2);
      if (close == std::string::npos || std::find(valid.begin(), valid.end(), name) == valid.end()) {
        auto hint = closest(name, valid);
        ctx.error(r.leaf("command")->node,
                  fmt::format("command of app '{}' uses unknown placeholder '${{{}}}'{}; valid: {}", spec.app, name,
                              hint ? fmt::format(" (did you mean '${{{}}}'?)", *hint) : "",
                              join(valid)));
      }
      if (close == std::string::npos) break;
      pos = close + 1;
    }
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

std::vector<Dependency> read_dependencies(Ctx& ctx, const YAML::Node& app_node, const std::string& app,
                                          const std::set<std::string>& apps,
                                          std::map<std::string, YAML::Node>& where) {
  std::vector<Dependency> deps;
  YAML::Node list = app_node.IsMap() ? app_node["depends_on"] : YAML::Node();
  if (!list || list.IsNull()) return deps;
  if (!list.IsSequence()) {
    ctx.error(list, fmt::format("apps.{}.depends_on must be a list of app codes or {{app: ..., soft: ...}} entries", app));
    return deps;
  }
  std::vector<std::string> app_list(apps.begin(), apps.end());
  for (const auto& item : list) {
    Dependency d;
    YAML::Node name_node = item;
    if (item.IsMap()) {
      check_keys(ctx, item, kDependencyKeys, fmt::format("apps.{}.depends_on", app));
      name_node.reset(item["app"]);
      if (!name_node || !name_node.IsScalar()) {
        ctx.error(item, "a depends_on entry needs 'app: <app_code>'");
        continue;
      }
      auto flag = [&](const char* key, const std::vector<std::string>& valid) -> std::string {
        YAML::Node v = item[key];
        if (!v) return "";
        std::string s = v.IsScalar() ? v.Scalar() : "";
        if (std::find(valid.begin(), valid.end(), s) == valid.end()) {
          ctx.error(v, fmt::format("depends_on.{} must be one of {}, not '{}'", key, join(valid, " | "), display(v)));
          return "";
        }
        return s;
      };
      std::string soft = flag("soft", {"true", "false", "yes", "no"});
      d.soft = soft == "true" || soft == "yes";
      d.wait_all = flag("wait_for", {"one", "all"}) == "all";
      std::string pol = flag("on_failure", {"ignore", "mark", "restart"});
      d.on_failure = pol == "ignore" ? DependencyFailure::kIgnore
                   : pol == "restart" ? DependencyFailure::kRestart : DependencyFailure::kMark;
    } else if (!item.IsScalar()) {
      ctx.error(item, "a depends_on entry is an app code or a mapping with 'app'");
      continue;
    }
    d.app = name_node.Scalar();
    if (!apps.count(d.app)) {
      auto hint = closest(d.app, app_list);
      ctx.error(name_node, fmt::format("apps.{}.depends_on: unknown app '{}'{}", app, d.app,
                                       hint ? fmt::format(" (did you mean '{}'?)", *hint) : ""));
      continue;
    }
    if (d.app == app) {
      ctx.error(name_node, fmt::format("dependency cycle: {} → {}", app, app));
      continue;
    }
    where[d.app] = name_node;
    deps.push_back(d);
  }
  return deps;
}

}  // namespace

Result<Catalog> Catalog::parse(std::string_view text, const std::string& filename) {
  // yaml-cpp reports some misuse by exception; nothing may escape the loader.
  try {
    return parse_unguarded(text, filename);
  } catch (const YAML::Exception& e) {
    return invalid(fmt::format("{}:{}:{}: {}", filename, e.mark.line + 1, e.mark.column + 1, e.msg));
  } catch (const std::exception& e) {
    return invalid(fmt::format("{}: {}", filename, e.what()));
  }
}

Result<Catalog> Catalog::parse_unguarded(std::string_view text, const std::string& filename) {
  Ctx ctx{filename, {}, {}};
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    Error err = invalid(fmt::format("{}:{}:{}: YAML syntax error: {}", filename, e.mark.line + 1, e.mark.column + 1, e.msg));
    err.details.push_back(err.message);
    return err;
  }
  Catalog cat;
  cat.text_ = std::string(text);
  cat.filename_ = filename;

  if (!root.IsMap()) {
    Error err = invalid(fmt::format("{}: a catalog is a mapping with keys {}", filename, join(kTopKeys)));
    err.details.push_back(err.message);
    return err;
  }
  check_keys(ctx, root, kTopKeys, "the catalog");

  // network
  if (auto net = root["network"]; net && expect_map(ctx, net, "network")) {
    check_keys(ctx, net, kNetworkKeys, "network");
    if (auto pool = net["pool"]) {
      auto r = pool.IsScalar() && pool.Scalar().find('/') != std::string::npos ? parse_range(pool.Scalar()) : std::nullopt;
      if (!r) ctx.error(pool, fmt::format("network.pool must be an IPv4 prefix like 127.77.0.0/16, not '{}'", display(pool)));
      else { cat.network_.pool = *r; cat.network_.pool_text = pool.Scalar(); }
    }
    if (auto ex = net["exclude"]) {
      if (!ex.IsSequence()) ctx.error(ex, "network.exclude must be a list of addresses, prefixes or ranges");
      else
        for (const auto& item : ex) {
          auto r = item.IsScalar() ? parse_range(item.Scalar()) : std::nullopt;
          if (!r) ctx.error(item, fmt::format("network.exclude: '{}' is not an address (127.77.0.1), prefix "
                                              "(127.77.255.0/24) or range (127.77.0.1-127.77.0.9)", display(item)));
          else cat.network_.exclude.push_back(*r);
        }
    }
    if (auto rf = net["reserve_for"]) {
      auto d = rf.IsScalar() ? parse_duration(rf.Scalar()) : std::nullopt;
      if (!d) ctx.error(rf, fmt::format("network.reserve_for: bad duration '{}'; write e.g. 10m", display(rf)));
      else cat.network_.reserve_for_ms = *d;
    }
  }

  // defaults and apps
  YAML::Node defaults = root["defaults"];
  if (defaults) check_setting_layer(ctx, defaults, kSettingKeys, "defaults");
  YAML::Node apps_node = root["apps"];
  std::set<std::string> app_names;
  std::vector<std::string> app_order;
  if (!apps_node || !apps_node.IsMap() || apps_node.size() == 0) {
    ctx.error(apps_node ? apps_node : root, "the catalog needs 'apps': a mapping of app_code → settings");
  } else {
    for (const auto& [k, v] : entries(ctx, apps_node)) {
      if (!is_dns_label(k.Scalar()))
        ctx.error(k, fmt::format("app code '{}' must be a DNS label: lowercase letters, digits and '-', at most 63", k.Scalar()));
      app_names.insert(k.Scalar());
      app_order.push_back(k.Scalar());
      check_setting_layer(ctx, v, kAppKeys, "apps." + k.Scalar());
    }
  }
  std::vector<std::string> app_list(app_names.begin(), app_names.end());

  // dependencies (a property of the fleet, the same in every environment)
  std::map<std::string, std::vector<Dependency>> deps;
  std::map<std::string, std::map<std::string, YAML::Node>> dep_nodes;
  for (const auto& a : app_order)
    deps[a] = read_dependencies(ctx, apps_node[a], a, app_names, dep_nodes[a]);

  // Hard-dependency cycles, each reported once with its path.
  std::map<std::string, int> color;  // 0 white, 1 on stack, 2 done
  std::vector<std::string> stack;
  std::vector<std::string> topo;
  std::function<void(const std::string&)> visit = [&](const std::string& a) {
    color[a] = 1;
    stack.push_back(a);
    for (const auto& d : deps[a]) {
      if (d.soft) continue;
      if (color[d.app] == 1) {
        auto from = std::find(stack.begin(), stack.end(), d.app);
        std::string path;
        for (auto it = from; it != stack.end(); ++it) path += *it + " → ";
        ctx.error(dep_nodes[a][d.app], "dependency cycle: " + path + d.app);
      } else if (color[d.app] == 0) {
        visit(d.app);
      }
    }
    stack.pop_back();
    color[a] = 2;
    topo.push_back(a);
  };
  for (const auto& a : app_list)
    if (color[a] == 0) visit(a);

  // environments
  YAML::Node envs_node = root["environments"];
  std::map<std::string, YAML::Node> env_nodes;
  std::vector<std::string> env_order;
  if (!envs_node || !envs_node.IsMap() || envs_node.size() == 0) {
    ctx.error(envs_node ? envs_node : root, "the catalog needs 'environments': a mapping of name → settings (at least one)");
  } else {
    for (const auto& [k, v] : entries(ctx, envs_node)) {
      const std::string name = k.Scalar();
      if (!is_dns_label(name))
        ctx.error(k, fmt::format("environment name '{}' must be a DNS label: lowercase letters, digits and '-'", name));
      env_nodes[name] = v;
      env_order.push_back(name);
      check_setting_layer(ctx, v, kEnvKeys, "environments." + name);
      if (auto per_app = v.IsMap() ? v["apps"] : YAML::Node(); per_app && expect_map(ctx, per_app, "environments." + name + ".apps")) {
        for (const auto& [ak, av] : entries(ctx, per_app)) {
          if (!app_names.count(ak.Scalar())) {
            auto hint = closest(ak.Scalar(), app_list);
            ctx.error(ak, fmt::format("environments.{}.apps: unknown app '{}'{}", name, ak.Scalar(),
                                      hint ? fmt::format(" (did you mean '{}'?)", *hint) : ""));
          }
          check_setting_layer(ctx, av, kSettingKeys, fmt::format("environments.{}.apps.{}", name, ak.Scalar()));
        }
      }
    }
  }
  std::vector<std::string> env_names(env_order.begin(), env_order.end());

  // base chains, root first; cycles and unknown bases reported
  std::map<std::string, std::vector<std::string>> chains;
  for (const auto& e : env_order) {
    std::vector<std::string> chain{e};
    std::string cur = e;
    bool broken = false;
    while (true) {
      YAML::Node b = env_nodes[cur].IsMap() ? env_nodes[cur]["base"] : YAML::Node();
      if (!b || b.IsNull()) break;
      std::string base = b.IsScalar() ? b.Scalar() : "";
      if (!env_nodes.count(base)) {
        auto hint = closest(base, env_names);
        ctx.error(b, fmt::format("environments.{}.base: unknown environment '{}'{}; environments: {}", cur, display(b),
                                 hint ? fmt::format(" (did you mean '{}'?)", *hint) : "", join(env_names)));
        broken = true;
        break;
      }
      if (auto it = std::find(chain.begin(), chain.end(), base); it != chain.end()) {
        std::string path;
        for (auto jt = it; jt != chain.end(); ++jt) path += *jt + " → ";
        ctx.error(b, "base environment cycle: " + path + base);
        broken = true;
        break;
      }
      chain.push_back(base);
      cur = base;
    }
    if (broken) continue;
    std::reverse(chain.begin(), chain.end());
    chains[e] = chain;
  }

  // resolve every environment
  for (const auto& e : env_order) {
    if (!chains.count(e)) continue;
    Environment env;
    env.name = e;
    if (chains[e].size() > 1) env.base = chains[e][chains[e].size() - 2];
    for (const auto& a : topo) {
      AppSpec spec;
      spec.app = a;
      Flat flat;
      flatten(defaults, "defaults", flat);
      flatten(apps_node[a], "apps." + a, flat);
      for (const auto& b : chains[e]) {
        flatten(env_nodes[b], "environments." + b, flat);
        if (env_nodes[b].IsMap() && env_nodes[b]["apps"] && env_nodes[b]["apps"].IsMap())
          flatten(env_nodes[b]["apps"][a], fmt::format("environments.{}.apps.{}", b, a), flat);
      }
      read_settings(ctx, flat, spec);
      spec.depends_on = deps[a];
      for (const auto& d : spec.depends_on) {
        std::string key = "depends_on." + d.app;
        spec.from[key] = "apps." + a;
        spec.values[key] = fmt::format("{}{}, on_failure: {}", d.soft ? "soft" : "hard",
                                       d.wait_all ? ", wait_for: all" : "", to_string(d.on_failure));
      }
      env.apps.push_back(std::move(spec));
    }
    cat.environments_.push_back(std::move(env));
  }

  // capacity: every environment may be up at once
  if (ctx.errors.empty()) {
    std::uint64_t need = 0;
    std::string parts;
    for (const auto& env : cat.environments_) {
      need += static_cast<std::uint64_t>(env.instance_count());
      parts += fmt::format("{}{} {}", parts.empty() ? "" : ", ", env.name, env.instance_count());
    }
    if (need > cat.network_.usable_count()) {
      YAML::Node net = root["network"];
      YAML::Node at = net && net.IsMap() && net["pool"] ? net["pool"] : root;
      ctx.error(at, fmt::format("network.pool {} has {} usable addresses (after network, broadcast and excluded) "
                                "but the environments ask for {} instances ({}); use a larger pool",
                                cat.network_.pool_text, cat.network_.usable_count(), need, parts));
    }
  }

  if (!ctx.errors.empty()) {
    Error err = invalid(ctx.errors.size() == 1 ? ctx.errors.front()
                                               : fmt::format("{} errors in {}:\n  {}", ctx.errors.size(), filename,
                                                             join(ctx.errors, "\n  ")));
    err.details = std::move(ctx.errors);
    return err;
  }
  return cat;
}

}  // namespace berth::model
