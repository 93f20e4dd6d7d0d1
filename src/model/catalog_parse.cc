// model/catalog_parse.cc — Catalog::parse: the fleet's YAML and the environment documents
// checked and resolved into a Catalog, every error located (file:line:col) and all of them
// reported at once. Each section of the catalog has a reader below; parse_unguarded puts them
// in order and layers the settings, environment over base over the app's own over defaults.
#include "model/catalog.h"

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <unordered_map>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include "base/text.h"
#include "db/profile/profile.h"
#include "model/loader.h"

namespace berth::model {

using namespace loader;

namespace loader {

std::string container_on_loopback(const AppSpec& a, const NetworkSpec& net) {
  return fmt::format("app '{}' runs as a container (image {}) but network.pool {} is loopback, which containers "
                     "cannot reach; use a private range such as 10.77.0.0/16 (berth makes it a Docker bridge network)",
                     a.app, a.image_from_build ? "built from source" : a.image, net.pool_text);
}

std::string pool_too_small(const NetworkSpec& net, std::uint64_t need, const std::string& parts) {
  return fmt::format("network.pool {} has {} usable addresses (after network, broadcast and excluded) "
                     "but the environments ask for {} instances ({}); use a larger pool",
                     net.pool_text, net.usable_count(), need, parts);
}

}  // namespace loader

namespace {

// node[key], undefined when there is none, without yaml-cpp's exception for a scalar (and const:
// a non-const lookup of a missing key adds it to the mapping).
YAML::Node child(const YAML::Node& node, const char* key) {
  return node.IsScalar() ? YAML::Node(YAML::NodeType::Undefined) : node[key];
}

std::vector<Dependency> read_dependencies(Ctx& ctx, const YAML::Node& app_node, const std::string& app,
                                          const std::set<std::string>& apps, const std::vector<std::string>& app_list,
                                          std::map<std::string, YAML::Node>& where) {
  std::vector<Dependency> deps;
  YAML::Node list = app_node.IsMap() ? app_node["depends_on"] : YAML::Node();
  if (!list || list.IsNull()) return deps;
  if (!list.IsSequence()) {
    ctx.error(list, fmt::format("apps.{}.depends_on must be a list of app codes or {{app: ..., soft: ...}} entries", app));
    return deps;
  }
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
      const std::string wait = flag("wait_for", {"one", "all", "completed"});
      d.wait_all = wait == "all";
      d.wait_completed = wait == "completed";
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

// network: the pool of addresses, what is never handed out, how long a freed one is kept.
void read_network(Ctx& ctx, const YAML::Node& root, NetworkSpec& network) {
  if (auto net = child(root, "network"); net && expect_map(ctx, net, "network")) {
    check_keys(ctx, net, kNetworkKeys, "network");
    if (auto pool = net["pool"]) {
      auto r = pool.IsScalar() && pool.Scalar().find('/') != std::string::npos ? parse_range(pool.Scalar()) : std::nullopt;
      if (!r) ctx.error(pool, fmt::format("network.pool must be an IPv4 prefix like 127.77.0.0/16, not '{}'", display(pool)));
      else { network.pool = *r; network.pool_text = pool.Scalar(); }
    }
    if (auto ex = net["exclude"]) {
      if (!ex.IsSequence()) ctx.error(ex, "network.exclude must be a list of addresses, prefixes or ranges");
      else
        for (const auto& item : ex) {
          auto r = item.IsScalar() ? parse_range(item.Scalar()) : std::nullopt;
          if (!r) ctx.error(item, fmt::format("network.exclude: '{}' is not an address (127.77.0.1), prefix "
                                              "(127.77.255.0/24) or range (127.77.0.1-127.77.0.9)", display(item)));
          else network.exclude.push_back(*r);
        }
    }
    if (auto rf = net["reserve_for"]) {
      auto d = rf.IsScalar() ? parse_duration(rf.Scalar()) : std::nullopt;
      if (!d) ctx.error(rf, fmt::format("network.reserve_for: bad duration '{}'; write e.g. 10m", display(rf)));
      else network.reserve_for_ms = *d;
    }
  }
}

// dns: the zone instances are named in and its TTLs.
void read_dns(Ctx& ctx, const YAML::Node& root, DnsSpec& dns_spec) {
  if (auto dns = child(root, "dns"); dns && expect_map(ctx, dns, "dns")) {
    check_keys(ctx, dns, kDnsKeys, "dns");
    if (auto z = dns["zone"]) {
      std::string zone = z.IsScalar() ? z.Scalar() : "";
      while (!zone.empty() && zone.back() == '.') zone.pop_back();
      for (auto& c : zone) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      bool ok = !zone.empty() && zone.size() <= 200;
      for (std::size_t i = 0, j; ok && i <= zone.size(); i = j + 1) {
        j = zone.find('.', i);
        if (j == std::string::npos) j = zone.size();
        ok = is_dns_label(zone.substr(i, j - i));
      }
      if (!ok) ctx.error(z, fmt::format("dns.zone '{}' must be a domain name of DNS labels, e.g. berth.test.", display(z)));
      else dns_spec.zone = zone;
    }
    for (auto [key, field] : {std::pair{"ttl", &dns_spec.ttl_ms}, std::pair{"negative_ttl", &dns_spec.negative_ttl_ms}}) {
      if (auto t = dns[key]) {
        auto d = t.IsScalar() ? parse_duration(t.Scalar()) : std::nullopt;
        if (!d || *d % 1000 != 0 || *d > 86'400'000)
          ctx.error(t, fmt::format("dns.{}: '{}' must be whole seconds up to a day, e.g. 2s", key, display(t)));
        else *field = *d;
      }
    }
  }
}

// databases.<name>: the database's settings, and the settings layer of the app that serves
// it (synthesized from the engine's way of running a server on a copy); none when it is not a
// mapping (said in ctx).
std::optional<std::pair<YAML::Node, DatabaseSpec>> read_database(Ctx& ctx, const YAML::Node& k, const YAML::Node& v) {
  const std::string where = "databases." + k.Scalar();
  if (!expect_map(ctx, v, where)) {
    if (v.IsNull()) ctx.error(k, fmt::format("{} needs at least 'standard: NAME'", where));
    return std::nullopt;
  }
  check_keys(ctx, v, kDatabaseKeys, where);
  DatabaseSpec d;
  const db::ServerProfile* profile = db::server_profile(d.engine);
  if (auto e = v["engine"]) {
    d.engine = e.IsScalar() ? e.Scalar() : "";
    profile = db::server_profile(d.engine);
    if (!profile)
      ctx.error(e, fmt::format("{}.engine must be {}, not '{}'", where, fmt::join(db::server_profile_names(), " or "), display(e)));
  }
  for (auto [key, field] : {std::pair{"user", &d.user}, std::pair{"password", &d.password}}) {
    if (auto n = v[key]) {
      if (!n.IsScalar() || n.Scalar().empty() || n.Scalar().find_first_of("'\"\\ ") != std::string::npos)
        ctx.error(n, fmt::format("{}.{} must be a non-empty word without quotes, backslashes or spaces", where, key));
      else *field = n.Scalar();
    }
  }
  if (!v["standard"]) ctx.error(k, fmt::format("{} needs 'standard: NAME' (or NAME@VERSION)", where));
  int port = profile ? profile->port : 0;
  if (auto p = v["port"]) {
    char* end = nullptr;
    long n = p.IsScalar() ? std::strtol(p.Scalar().c_str(), &end, 10) : 0;
    if (!p.IsScalar() || *end || n < 1 || n > 65535) ctx.error(p, fmt::format("{}.port must be 1-65535, not '{}'", where, display(p)));
    else port = static_cast<int>(n);
  }
  std::string options;
  if (auto o = v["options"]; o && expect_map(ctx, o, where + ".options")) {
    for (const auto& [ok, ov] : entries(ctx, o)) {
      const std::string opt = ok.Scalar();
      bool good = !opt.empty() && opt.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_-") == std::string::npos;
      if (!good || !ov.IsScalar()) {
        ctx.error(ok, fmt::format("{}.options.{}: option names are lowercase words (innodb_buffer_pool_size) with "
                                  "one value each", where, opt));
        continue;
      }
      d.options[opt] = ov.Scalar();
      if (profile) options += " " + profile->option_flag(opt, ov.Scalar());
    }
  }
  if (!profile) return std::nullopt;  // (said above)
  // The app that serves it: as its engine runs a server on a copy (db/profile/profile.h).
  YAML::Node synth(YAML::NodeType::Map);
  synth["command"] = profile->command(options);
  synth["ports"]["sql"] = port;
  synth["health"]["type"] = "exec";
  synth["health"]["command"] = profile->health_command(d.user, d.password);
  synth["health"]["start_period"] = profile->start_period;
  synth["health"]["interval"] = profile->interval;
  synth["stop_grace"] = profile->stop_grace;
  if (auto st = v["standard"]) synth["standard"] = st;
  if (auto ro = v["rollout"]) synth["rollout"] = ro;
  return std::make_pair(synth, d);
}

// Hard-dependency cycles, each reported once with its path; the apps in an order that lists
// every one after its dependencies. A depth-first walk without recursion: dependency chains
// may be thousands long.
std::vector<std::string> dependency_order(Ctx& ctx, const std::vector<std::string>& app_list,
                                          std::map<std::string, std::vector<Dependency>>& deps,
                                          std::map<std::string, std::map<std::string, YAML::Node>>& dep_nodes) {
  std::map<std::string, int> color;  // 0 white, 1 on stack, 2 done
  std::vector<std::string> stack;
  std::vector<std::string> topo;  // every app after its dependencies
  for (const auto& a0 : app_list) {
    if (color[a0] != 0) continue;
    std::vector<std::size_t> next{0};  // per app on `stack`: its next dependency to look at
    color[a0] = 1;
    stack.push_back(a0);
    while (!stack.empty()) {
      const std::string a = stack.back();
      const auto& ds = deps[a];
      if (next.back() == ds.size()) {
        stack.pop_back();
        next.pop_back();
        color[a] = 2;
        topo.push_back(a);
        continue;
      }
      const Dependency& d = ds[next.back()++];
      if (d.soft) continue;
      if (color[d.app] == 1) {
        auto from = std::find(stack.begin(), stack.end(), d.app);
        std::string path;
        for (auto it = from; it != stack.end(); ++it) path += *it + " → ";
        ctx.error(dep_nodes[a][d.app], "dependency cycle: " + path + d.app);
      } else if (color[d.app] == 0) {
        color[d.app] = 1;
        stack.push_back(d.app);
        next.push_back(0);
      }
    }
  }
  return topo;
}

// An environment as declared: in the fleet's file or as its own document.
struct EnvDecl {
  std::string name;
  YAML::Node node;
  std::unordered_map<std::string, YAML::Node> apps;  // environments.<E>.apps.<A>
  bool sets = false;  // its own layer has a setting (applies to every app)
  int parent = -1;    // its base (set by link_bases)
};

enum BaseChain : char { kUnseen, kOnPath, kGood, kBroken };

// Whose errors the environment declared at `i` are: a document's own (its name), or the
// fleet's (empty) for the first `fleet_envs`, those of the fleet's file.
std::string owner_of(const std::vector<EnvDecl>& decls, std::size_t fleet_envs, std::size_t i) {
  return i < fleet_envs ? std::string() : decls[i].name;
}

// Base chains: each environment's base looked up once (EnvDecl::parent); an unknown base, or a
// cycle, breaks the chain of every environment above it (reported once, at the `base:` to
// blame). Per environment: kGood or kBroken. Those from fleet_envs on are documents, whose
// errors are their own; `lenient` leaves an unknown base of a document for resolve_catalog.
std::vector<char> link_bases(Ctx& ctx, std::vector<EnvDecl>& decls,
                             const std::unordered_map<std::string, std::size_t>& decl_at, std::size_t fleet_envs,
                             bool lenient, const std::vector<std::string>& env_names) {
  std::vector<char> state(decls.size(), kUnseen);
  std::vector<YAML::Node> base_nodes(decls.size());
  for (std::size_t i = 0; i < decls.size(); ++i) {
    std::vector<std::size_t> path;
    std::size_t cur = i;
    char end = kGood;
    while (true) {
      if (state[cur] == kGood || state[cur] == kBroken) {
        end = state[cur];
        break;
      }
      if (state[cur] == kOnPath) {
        // A cycle: from `cur` along the path back to it. Reported once, at the `base:` of the
        // member that comes first in the file, the path starting at the environment it names.
        const std::vector<std::size_t> cycle(std::find(path.begin(), path.end(), cur), path.end());
        const std::size_t blame = std::min_element(cycle.begin(), cycle.end()) - cycle.begin();
        std::string names;
        for (std::size_t j = 1; j <= cycle.size(); ++j) names += decls[cycle[(blame + j) % cycle.size()]].name + " → ";
        ctx.owner = owner_of(decls, fleet_envs, cycle[blame]);
        ctx.error(base_nodes[cycle[blame]], "base environment cycle: " + names + decls[cycle[(blame + 1) % cycle.size()]].name);
        ctx.owner.clear();
        end = kBroken;
        break;
      }
      state[cur] = kOnPath;
      path.push_back(cur);
      const YAML::Node& node = decls[cur].node;
      const YAML::Node b = node.IsMap() ? node["base"] : YAML::Node();
      if (!b || b.IsNull()) break;
      base_nodes[cur].reset(b);
      std::string base = b.IsScalar() ? b.Scalar() : "";
      auto it = decl_at.find(base);
      if (it == decl_at.end()) {
        ctx.owner = owner_of(decls, fleet_envs, cur);
        if (lenient && cur >= fleet_envs) {
          // The environments there are depend on which documents are left out: resolve_catalog
          // names them (and the closest) in place of kUnknownBase BASE kUnknownBase.
          ctx.error(b, fmt::format("environments.{}.base: unknown environment '{}'{}{}{}", decls[cur].name, display(b),
                                   kUnknownBase, base, kUnknownBase));
        } else {
          auto hint = closest(base, env_names);
          ctx.error(b, fmt::format("environments.{}.base: unknown environment '{}'{}; environments: {}", decls[cur].name,
                                   display(b), hint ? fmt::format(" (did you mean '{}'?)", *hint) : "", join(env_names)));
        }
        ctx.owner.clear();
        end = kBroken;
        break;
      }
      decls[cur].parent = static_cast<int>(it->second);
      cur = it->second;
    }
    for (std::size_t p : path) state[p] = end;
  }
  return state;
}

// Thin environments (deploy: changed): which apps each runs, and which environment serves each
// of the others (Environment::served_by; a full environment serves all its own). Reads each
// environment's deploy, follow and follow_interval.
void serve_environments(Ctx& ctx, std::vector<Environment>& envs, const std::vector<EnvDecl>& decls,
                        const std::unordered_map<std::string, std::size_t>& decl_at, std::size_t fleet_envs,
                        const std::map<std::string, std::vector<Dependency>>& deps, const std::set<std::string>& app_names,
                        const std::vector<std::string>& app_list) {
  std::unordered_map<std::string, Environment*> by_name;
  for (auto& env : envs) by_name[env.name] = &env;
  std::map<std::string, std::vector<std::string>> dependents;  // app → apps that depend on it
  for (const auto& [a, ds] : deps)
    for (const auto& d : ds) dependents[d.app].push_back(a);
  std::unordered_map<const Environment*, char> served;  // 1: being served (waits for its base), 2: done
  // An environment's own settings; true when it is thin and so needs its base served first.
  auto settle = [&](Environment& env) -> bool {
    const std::size_t at = decl_at.at(env.name);
    const YAML::Node& node = decls[at].node;
    ctx.owner = owner_of(decls, fleet_envs, at);
    const YAML::Node deploy = node.IsMap() ? node["deploy"] : YAML::Node();
    std::string mode = deploy && deploy.IsScalar() ? deploy.Scalar() : "all";
    if (mode != "all" && mode != "changed") {
      ctx.error(deploy, fmt::format("environments.{}.deploy must be all | changed, not '{}'", env.name, display(deploy)));
      mode = "all";
    }
    Environment* base = env.base.empty() ? nullptr : by_name[env.base];
    if (mode == "changed" && !base) {
      ctx.error(deploy, fmt::format("environments.{}: deploy: changed needs a base environment to fall through to", env.name));
      mode = "all";
    }
    env.deploy_changed = mode == "changed";
    if (const YAML::Node f = child(node, "follow")) {
      std::string v = f.IsScalar() ? f.Scalar() : "";
      if (v != "true" && v != "false") ctx.error(f, fmt::format("environments.{}.follow must be true or false", env.name));
      env.follow = v == "true";
    }
    if (const YAML::Node fi = child(node, "follow_interval")) {
      auto d = fi.IsScalar() ? parse_duration(fi.Scalar()) : std::nullopt;
      if (!d || *d < 1000) ctx.error(fi, fmt::format("environments.{}.follow_interval: '{}' must be a duration of at least 1s", env.name, display(fi)));
      else env.follow_interval_ms = *d;
    }
    ctx.owner.clear();
    if (!env.deploy_changed) {
      for (const auto& a : env.apps) env.served_by[a.app] = env.name;
      return false;
    }
    return true;
  };
  // A thin environment, once its base is served: what it runs, and who serves the rest.
  auto fall_through = [&](Environment& env) {
    const std::size_t at = decl_at.at(env.name);
    const YAML::Node& node = decls[at].node;
    ctx.owner = owner_of(decls, fleet_envs, at);
    Environment* base = by_name[env.base];
    std::set<std::string> run;
    for (std::size_t j = 0; j < env.apps.size(); ++j) {
      const AppSpec& a = env.apps[j];
      const AppSpec* b = base->find(a.app);
      if (!b || (b != &a && b->values != a.values)) run.insert(a.app);
    }
    if (const YAML::Node inc = node["include"]) {
      if (!inc.IsSequence()) ctx.error(inc, fmt::format("environments.{}.include must be a list of app codes", env.name));
      else
        for (const auto& item : inc) {
          std::string app = item.IsScalar() ? item.Scalar() : "";
          if (!app_names.count(app)) {
            auto hint = closest(app, app_list);
            ctx.error(item, fmt::format("environments.{}.include: unknown app '{}'{}", env.name, display(item),
                                        hint ? fmt::format(" (did you mean '{}'?)", *hint) : ""));
          } else {
            run.insert(app);
          }
        }
    }
    // Whoever calls a changed app must run here too, or a call reaching a baseline caller
    // would stay in the baseline.
    std::vector<std::string> todo(run.begin(), run.end());
    while (!todo.empty()) {
      std::string a = todo.back();
      todo.pop_back();
      for (const auto& caller : dependents[a])
        if (run.insert(caller).second) todo.push_back(caller);
    }
    for (const auto& a : env.apps)
      env.served_by[a.app] = run.count(a.app) ? env.name : base->served_by[a.app];
    ctx.owner.clear();
  };
  // Each environment after its base (without recursion: chains may be thousands long); the
  // errors come in the order a recursive walk from each environment in file order gives.
  for (auto& env : envs) {
    std::vector<Environment*> waiting;  // thin, their bases being served first
    for (Environment* cur = &env; cur && !served.count(cur);) {
      served[cur] = 1;
      if (!settle(*cur)) {
        served[cur] = 2;
        break;
      }
      waiting.push_back(cur);
      cur = by_name[cur->base];
    }
    for (auto it = waiting.rbegin(); it != waiting.rend(); ++it) {
      fall_through(**it);
      served[*it] = 2;
    }
  }
}

// The pool against what runs in it: containers cannot reach loopback addresses (their pool
// must be one a bridge network can have), and every environment may be up at once.
void check_pool(Ctx& ctx, const YAML::Node& pool_node, const NetworkSpec& network, const std::vector<Environment>& envs) {
  // containers cannot reach loopback addresses: their pool must be one a bridge network can have
  auto first_container = [&]() -> const AppSpec* {
    for (const auto& env : envs)
      for (const auto& a : env.apps)
        if (a.container() && env.runs(a.app)) return &a;
    return nullptr;
  };
  if (const AppSpec* a = network.loopback() ? first_container() : nullptr)
    ctx.error(pool_node, container_on_loopback(*a, network));

  // capacity: every environment may be up at once
  if (ctx.errors.empty()) {
    std::uint64_t need = 0;
    std::string parts;
    for (const auto& env : envs) {
      need += static_cast<std::uint64_t>(env.instance_count());
      parts += fmt::format("{}{} {}", parts.empty() ? "" : ", ", env.name, env.instance_count());
    }
    if (need > network.usable_count()) ctx.error(pool_node, pool_too_small(network, need, parts));
  }
}

}  // namespace

Result<Catalog> Catalog::parse(std::string_view text, const std::string& filename, const std::string& base_dir,
                               const std::vector<EnvDocument>& documents) {
  return parse_guarded(text, filename, base_dir, documents, nullptr);
}

Result<Catalog> Catalog::parse_guarded(std::string_view text, const std::string& filename, const std::string& base_dir,
                                       const std::vector<EnvDocument>& documents, DocumentErrors* lenient) {
  // yaml-cpp reports some misuse by exception; nothing may escape the loader.
  try {
    return parse_unguarded(text, filename, base_dir, documents, lenient);
  } catch (const YAML::Exception& e) {
    return invalid(fmt::format("{}:{}:{}: {}", filename, e.mark.line + 1, e.mark.column + 1, e.msg));
  } catch (const std::exception& e) {
    return invalid(fmt::format("{}: {}", filename, e.what()));
  }
}

Result<Catalog> Catalog::parse_unguarded(std::string_view text, const std::string& filename, const std::string& base_dir,
                                         const std::vector<EnvDocument>& documents, DocumentErrors* lenient) {
  Ctx ctx{filename, {}, {}, base_dir, {}, lenient, {}};
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
  cat.base_dir_ = base_dir;
  cat.documents_ = documents;
  for (std::size_t i = 0; i < cat.documents_.size(); ++i) cat.doc_index_.emplace(cat.documents_[i].name, i);
  // Environment documents: each its own YAML text, its errors located in it.
  std::vector<std::pair<std::string, YAML::Node>> doc_roots;
  for (const auto& d : documents) {
    YAML::Node droot;
    try {
      droot = YAML::Load(d.text);
    } catch (const YAML::Exception& e) {
      ctx.owner = d.name;
      ctx.add(fmt::format("{}:{}:{}: YAML syntax error: {}", d.filename(), e.mark.line + 1, e.mark.column + 1, e.msg));
      ctx.owner.clear();
      continue;
    }
    if (droot.IsNull()) droot = YAML::Node(YAML::NodeType::Map);  // an empty document: all from its base
    ctx.documents.emplace_back(droot, d.filename());
    doc_roots.emplace_back(d.name, droot);
  }

  if (!root.IsMap()) {
    Error err = invalid(fmt::format("{}: a catalog is a mapping with keys {}", filename, join(kTopKeys)));
    err.details.push_back(err.message);
    return err;
  }
  check_keys(ctx, root, kTopKeys, "the catalog");

  read_network(ctx, root, cat.network_);

  read_dns(ctx, root, cat.dns_);

  // defaults and apps
  YAML::Node defaults = root["defaults"];
  if (defaults) check_setting_layer(ctx, defaults, kSettingKeys, "defaults");
  YAML::Node apps_node = root["apps"];
  std::set<std::string> app_names;
  std::vector<std::string> app_order;
  // apps.<A> by name: a YAML mapping is searched key by key (and a non-const lookup of a missing
  // key adds it), so nothing below looks an app up in the document.
  std::unordered_map<std::string, YAML::Node> app_nodes;
  if (!apps_node && root["databases"]) {
    // A catalog of databases alone is fine.
  } else if (!apps_node || !apps_node.IsMap() || apps_node.size() == 0) {
    ctx.error(apps_node ? apps_node : root, "the catalog needs 'apps': a mapping of app_code → settings");
  } else {
    for (const auto& [k, v] : entries(ctx, apps_node)) {
      if (!is_dns_label(k.Scalar()))
        ctx.error(k, fmt::format("app code '{}' must be a DNS label: lowercase letters, digits and '-', at most 63", k.Scalar()));
      app_names.insert(k.Scalar());
      app_order.push_back(k.Scalar());
      app_nodes.emplace(k.Scalar(), v);
      check_setting_layer(ctx, v, kAppKeys, "apps." + k.Scalar());
    }
  }

  // databases: each runs as an app of the same name, its settings layer synthesized from the
  // engine's way of running a server on a copy (a database's own layer is "databases.<name>").
  std::map<std::string, YAML::Node> db_nodes;
  std::map<std::string, DatabaseSpec> db_specs;
  if (auto dbs = root["databases"]; dbs && expect_map(ctx, dbs, "databases")) {
    for (const auto& [k, v] : entries(ctx, dbs)) {
      const std::string name = k.Scalar();
      if (!is_dns_label(name))
        ctx.error(k, fmt::format("database name '{}' must be a DNS label: lowercase letters, digits and '-', at most 63", name));
      if (app_names.count(name)) {
        ctx.error(k, fmt::format("database '{}' has the name of an app; apps and databases share one namespace", name));
        continue;
      }
      auto db = read_database(ctx, k, v);
      if (!db) continue;
      db_nodes[name] = std::move(db->first);
      db_specs[name] = std::move(db->second);
      app_names.insert(name);
      app_order.push_back(name);
    }
  }
  std::vector<std::string> app_list(app_names.begin(), app_names.end());
  auto app_node = [&](const std::string& a) {
    auto it = app_nodes.find(a);
    return it == app_nodes.end() ? YAML::Node() : it->second;
  };

  // dependencies (a property of the fleet, the same in every environment)
  std::map<std::string, std::vector<Dependency>> deps;
  std::map<std::string, std::map<std::string, YAML::Node>> dep_nodes;
  for (const auto& a : app_order)
    deps[a] = db_nodes.count(a) ? std::vector<Dependency>{}
                                : read_dependencies(ctx, app_node(a), a, app_names, app_list, dep_nodes[a]);

  // kind (a property of the app): a service runs until stopped; a job runs to completion.
  std::set<std::string> jobs;
  for (const auto& a : app_order) {
    const YAML::Node n = app_node(a);
    const YAML::Node k = n.IsMap() ? n["kind"] : YAML::Node();
    if (!k || k.IsNull()) continue;
    const std::string v = k.IsScalar() ? k.Scalar() : "";
    if (v == "job") jobs.insert(a);
    else if (v != "service")
      ctx.error(k, fmt::format("apps.{}.kind must be service (runs until stopped) or job (runs to completion), not '{}'", a,
                               display(k)));
  }
  for (const auto& a : app_order)
    for (const auto& d : deps[a])
      if (d.wait_completed && !jobs.count(d.app))
        ctx.error(dep_nodes[a][d.app], fmt::format("apps.{}.depends_on {}: wait_for: completed needs {} to be kind: job", a,
                                                   d.app, d.app));

  // sources (a property of the app, like its dependencies)
  std::map<std::string, SourceDecl> sources;
  for (const auto& a : app_order) {
    if (db_nodes.count(a)) continue;
    const YAML::Node n = app_node(a);
    YAML::Node src = n.IsMap() ? n["source"] : YAML::Node();
    if (src && expect_map(ctx, src, "apps." + a + ".source")) sources[a] = read_source(ctx, src, a, base_dir);
  }

  const std::vector<std::string> topo = dependency_order(ctx, app_list, deps, dep_nodes);

  // environments: the fleet's, then the documents'
  std::vector<EnvDecl> decls;  // in file order (the fleet's, then the documents'); names are unique
  std::unordered_map<std::string, std::size_t> decl_at;
  // One environment's mapping: whether it sets anything for every app, and its per-app layers.
  auto declare = [&](const std::string& name, const YAML::Node& v, const std::string& where) {
    decl_at.emplace(name, decls.size());
    EnvDecl& d = decls.emplace_back();
    d.name = name;
    d.node.reset(v);
    if (v.IsMap())
      for (auto it = v.begin(); it != v.end(); ++it)
        if (it->first.IsScalar() &&
            std::find(kSettingKeys.begin(), kSettingKeys.end(), it->first.Scalar()) != kSettingKeys.end())
          d.sets = true;
    if (auto per_app = v.IsMap() ? v["apps"] : YAML::Node(); per_app && expect_map(ctx, per_app, where + ".apps")) {
      for (const auto& [ak, av] : entries(ctx, per_app)) {
        if (!app_names.count(ak.Scalar())) {
          auto hint = closest(ak.Scalar(), app_list);
          ctx.error(ak, fmt::format("{}.apps: unknown app '{}'{}", where, ak.Scalar(),
                                    hint ? fmt::format(" (did you mean '{}'?)", *hint) : ""));
        }
        check_setting_layer(ctx, av, kEnvAppKeys, fmt::format("{}.apps.{}", where, ak.Scalar()));
        d.apps.emplace(ak.Scalar(), av);
      }
    }
  };
  YAML::Node envs_node = root["environments"];
  if (!envs_node || !envs_node.IsMap() || envs_node.size() == 0) {
    ctx.error(envs_node ? envs_node : root, "the catalog needs 'environments': a mapping of name → settings (at least one)");
  } else {
    for (const auto& [k, v] : entries(ctx, envs_node)) {
      const std::string name = k.Scalar();
      if (!is_dns_label(name))
        ctx.error(k, fmt::format("environment name '{}' must be a DNS label: lowercase letters, digits and '-'", name));
      check_setting_layer(ctx, v, kEnvKeys, "environments." + name);
      declare(name, v, "environments." + name);
    }
  }
  const std::size_t fleet_envs = decls.size();
  for (const auto& [name, v] : doc_roots) {
    ctx.owner = name;
    YAML::Node at = v;
    if (!is_dns_label(name))
      ctx.error(at, fmt::format("environment name '{}' must be a DNS label: lowercase letters, digits and '-'", name));
    if (decl_at.count(name)) {
      ctx.error(at, fmt::format("environment '{}' is defined in {} and as its own document; names are unique",
                                name, filename));
    } else {
      check_setting_layer(ctx, v, kEnvDocumentKeys, "environment " + name);
      declare(name, v, name);
    }
    ctx.owner.clear();
  }
  std::vector<std::string> env_names;
  for (const auto& d : decls) env_names.push_back(d.name);

  const std::vector<char> state = link_bases(ctx, decls, decl_at, fleet_envs, lenient != nullptr, env_names);

  // Resolution, bases first: an environment's layers are applied to what its base resolved.
  std::vector<std::size_t> order;  // good environments, every one after its base
  {
    std::vector<char> placed(decls.size(), 0);
    for (std::size_t i = 0; i < decls.size(); ++i) {
      if (state[i] != kGood) continue;
      std::vector<std::size_t> up;
      for (int cur = static_cast<int>(i); cur >= 0 && !placed[cur]; cur = decls[cur].parent) {
        placed[cur] = 1;
        up.push_back(static_cast<std::size_t>(cur));
      }
      order.insert(order.end(), up.rbegin(), up.rend());
    }
  }
  std::vector<int> open_children(decls.size(), 0);  // bases wait for their environments
  for (std::size_t i : order)
    if (decls[i].parent >= 0) ++open_children[decls[i].parent];

  // An app's flattened layers up to an environment, and the source.repo an environment sets.
  struct Stack {
    Flat flat;
    Leaf repo;
  };
  using StackPtr = std::shared_ptr<const Stack>;
  using SpecPtr = std::shared_ptr<const AppSpec>;
  const std::size_t n_apps = topo.size();
  // Errors found while resolving an app are kept with its AppSpec and reported, in file order,
  // for every environment that has it (those naming the environment carry kEnvMark instead).
  const std::string kEnvMark = "\x1e" "env" "\x1e";
  std::unordered_map<const AppSpec*, std::vector<std::string>> spec_errors;

  auto resolve = [&](const std::string& a, const Stack& st) -> SpecPtr {
    std::vector<std::string> errors;
    std::set<std::string> seen;
    std::swap(ctx.errors, errors);
    std::swap(ctx.seen, seen);
    AppSpec spec;
    spec.app = a;
    if (auto db = db_specs.find(a); db != db_specs.end()) spec.database = db->second;
    const Flat& flat = st.flat;
    read_settings(ctx, flat, spec);
    spec.depends_on = deps[a];
    spec.job = jobs.count(a) > 0;
    if (spec.job) {  // part of what the instance is: a change of kind replaces it
      spec.values["kind"] = "job";
      spec.from["kind"] = "apps." + a;
    }
    // An environment may build an app from another repository (a developer's fork).
    if (auto src = sources.find(a); src != sources.end()) apply_source(ctx, src->second, kEnvMark, flat, spec, st.repo);
    else if (!st.repo.layer.empty()) ctx.error(st.repo.node, fmt::format("source.repo of app '{}': the app is not built from source "
                                                                         "(apps.{}.source is not set)", a, a));
    else check_no_artifact(ctx, flat, spec);
    if (spec.container() && !spec.image_from_build && spec.image.empty())
      ctx.error(flat.at("image").node, fmt::format("image of app '{}' is empty", a));
    for (const auto& d : spec.depends_on) {
      std::string key = "depends_on." + d.app;
      spec.from[key] = "apps." + a;
      spec.values[key] = fmt::format("{}{}, on_failure: {}", d.soft ? "soft" : "hard",
                                     d.wait_all ? ", wait_for: all" : d.wait_completed ? ", wait_for: completed" : "",
                                     to_string(d.on_failure));
    }
    spec.fingerprint_ = spec.compute_fingerprint();
    auto out = std::make_shared<const AppSpec>(std::move(spec));
    std::swap(ctx.errors, errors);
    std::swap(ctx.seen, seen);
    if (!errors.empty()) spec_errors.emplace(out.get(), std::move(errors));
    return out;
  };

  // Below every environment: defaults, then the app's own layer (a database's synthesized one).
  std::vector<StackPtr> root_stacks(n_apps);
  std::vector<SpecPtr> root_specs(n_apps);  // resolved when an environment inherits it unchanged
  for (std::size_t k = 0; k < n_apps; ++k) {
    const std::string& a = topo[k];
    auto st = std::make_shared<Stack>();
    flatten(defaults, "defaults", st->flat);
    if (auto db = db_nodes.find(a); db != db_nodes.end()) flatten(db->second, "databases." + a, st->flat);
    else flatten(app_node(a), "apps." + a, st->flat);
    root_stacks[k] = std::move(st);
  }
  std::vector<std::vector<StackPtr>> stacks(decls.size());  // while environments based on it wait
  std::vector<std::vector<SpecPtr>> specs(decls.size());
  for (std::size_t i : order) {
    const EnvDecl& d = decls[i];
    const int p = d.parent;
    const std::string layer = "environments." + d.name;
    stacks[i].resize(n_apps);
    specs[i].resize(n_apps);
    for (std::size_t k = 0; k < n_apps; ++k) {
      const std::string& a = topo[k];
      const StackPtr& below = p >= 0 ? stacks[p][k] : root_stacks[k];
      auto over = d.apps.find(a);
      if (!d.sets && over == d.apps.end()) {  // nothing of its own: the app as its base has it
        stacks[i][k] = below;
        if (p >= 0) {
          specs[i][k] = specs[p][k];
        } else {
          if (!root_specs[k]) root_specs[k] = resolve(a, *below);
          specs[i][k] = root_specs[k];
        }
        continue;
      }
      auto st = std::make_shared<Stack>(*below);
      flatten(d.node, layer, st->flat);
      if (over != d.apps.end()) {
        const std::string app_layer = fmt::format("environments.{}.apps.{}", d.name, a);
        flatten(over->second, app_layer, st->flat);
        const YAML::Node& per_app = over->second;
        const YAML::Node src = per_app.IsMap() ? per_app["source"] : YAML::Node();
        if (src && src.IsMap() && src["repo"]) st->repo = Leaf(src["repo"], app_layer);
      }
      specs[i][k] = resolve(a, *st);
      stacks[i][k] = std::move(st);
    }
    // What nothing waits for any more is dropped: a chain holds two environments' stacks at once.
    if (p >= 0 && --open_children[p] == 0) stacks[p].clear();
    if (open_children[i] == 0) stacks[i].clear();
  }
  root_stacks.clear();

  // Every environment, in file order, with its errors in that order.
  for (std::size_t i = 0; i < decls.size(); ++i) {
    if (state[i] != kGood) continue;
    ctx.owner = owner_of(decls, fleet_envs, i);
    Environment env;
    env.name = decls[i].name;
    if (decls[i].parent >= 0) env.base = decls[decls[i].parent].name;
    if (const EnvDocument* doc = i >= fleet_envs ? cat.document(env.name) : nullptr) {
      env.own_document = true;
      env.owner = doc->owner;
      read_lifetime(ctx, decls[i].node, env, doc->updated_at);
    }
    env.apps.reserve(n_apps);
    for (std::size_t k = 0; k < n_apps; ++k) {
      const SpecPtr& spec = specs[i][k];
      if (auto errs = spec_errors.find(spec.get()); errs != spec_errors.end())
        for (std::string e : errs->second) {
          for (auto at = e.find(kEnvMark); at != std::string::npos; at = e.find(kEnvMark, at + env.name.size()))
            e.replace(at, kEnvMark.size(), env.name);
          ctx.add(std::move(e));
        }
      env.apps.push_back(spec);
    }
    cat.environments_.push_back(std::move(env));
    ctx.owner.clear();
  }
  specs.clear();

  serve_environments(ctx, cat.environments_, decls, decl_at, fleet_envs, deps, app_names, app_list);

  YAML::Node net = root["network"];
  const YAML::Node pool_node = net && net.IsMap() && net["pool"] ? net["pool"] : root;
  if (lenient) {
    // Capacity and containers are resolve_catalog's to check, one document after another; and
    // whether the fleet's environments stand without the documents left out.
    lenient->pool_at = ctx.where(pool_node);
    for (std::size_t i = 0; i < fleet_envs; ++i)
      if (state[i] != kGood) lenient->fleet_broken = true;
    std::vector<char> under_fleet(decls.size(), 0);  // a fleet environment is based on it
    for (auto it = order.rbegin(); it != order.rend(); ++it)
      if (const int p = decls[*it].parent; p >= 0 && (*it < fleet_envs || under_fleet[*it])) under_fleet[p] = 1;
    for (std::size_t i = fleet_envs; i < decls.size(); ++i) {
      if (under_fleet[i]) lenient->fleet_bases.insert(decls[i].name);
      if (state[i] == kGood) lenient->resolved.insert(decls[i].name);
    }
  } else {
    check_pool(ctx, pool_node, cat.network_, cat.environments_);
  }

  if (!ctx.errors.empty()) {
    Error err = invalid(ctx.errors.size() == 1 ? ctx.errors.front()
                                               : fmt::format("{} errors in {}:\n  {}", ctx.errors.size(), filename,
                                                             join(ctx.errors, "\n  ")));
    err.details = std::move(ctx.errors);
    return err;
  }
  cat.index();
  return cat;
}

}  // namespace berth::model