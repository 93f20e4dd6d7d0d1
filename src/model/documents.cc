// Environment documents: their lifetime keys, what a member may set in one, and editing one key
// at a time (berth env set / unset). Part of the model component (model/catalog.h).
#include <algorithm>
#include <functional>
#include <optional>
#include <set>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "base/text.h"
#include "model/loader.h"

namespace berth::model {

using namespace loader;

namespace {

bool is_user_name(std::string_view s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
  });
}

// Keys of an environment document that hold no app settings.
const std::vector<std::string> kEnvMetaKeys = {"base", "deploy", "include", "follow", "follow_interval", "description",
                                               "expires", "ttl", "keep", "editors", "apps"};
// App settings a member may set, for all apps of the environment or per app.
const std::vector<std::string> kMemberSettings = {"tag", "build_type", "instances", "env", "standard"};

bool one_of(const std::vector<std::string>& v, std::string_view s) { return std::find(v.begin(), v.end(), s) != v.end(); }

}  // namespace

namespace loader {

void read_lifetime(Ctx& ctx, const YAML::Node& doc, Environment& env, Millis written_at) {
  if (!doc.IsMap()) return;
  const std::string where = "environment " + env.name;
  if (const YAML::Node t = doc["ttl"]; t && !t.IsNull()) {
    auto d = t.IsScalar() ? parse_duration(t.Scalar()) : std::nullopt;
    if (!d || *d <= 0) ctx.error(t, fmt::format("{}: ttl '{}' must be a duration like 3d or 12h", where, display(t)));
    else if (doc["expires"] && !doc["expires"].IsNull())
      ctx.error(t, fmt::format("{}: set ttl or expires, not both", where));
    else env.expires_at = written_at + *d;  // from its last change: each write extends it
  }
  if (const YAML::Node e = doc["expires"]; e && !e.IsNull()) {
    auto t = e.IsScalar() ? parse_rfc3339(e.Scalar()) : std::nullopt;
    if (!t) ctx.error(e, fmt::format("{}: expires '{}' must be a UTC time like 2026-12-05T10:00:00Z", where, display(e)));
    else env.expires_at = *t;
  }
  if (const YAML::Node k = doc["keep"]; k && !k.IsNull()) {
    std::string v = k.IsScalar() ? k.Scalar() : "";
    if (v != "true" && v != "false") ctx.error(k, fmt::format("{}: keep must be true or false, not '{}'", where, display(k)));
    env.keep = v == "true";
  }
  if (const YAML::Node ed = doc["editors"]; ed && !ed.IsNull()) {
    if (!ed.IsSequence()) {
      ctx.error(ed, fmt::format("{}: editors must be a list of user names", where));
      return;
    }
    for (const auto& u : ed) {
      if (!u.IsScalar() || !is_user_name(u.Scalar()))
        ctx.error(u, fmt::format("{}: editors: '{}' is not a user name (lowercase letters, digits, '-', '_', '.')", where,
                                 display(u)));
      else env.editors.push_back(u.Scalar());
    }
  }
}

}  // namespace loader

namespace {
std::string why(const Error& e) {
  if (e.details.size() <= 1) return e.message;
  std::string out;
  for (const auto& d : e.details) out += (out.empty() ? "" : "\n") + d;
  return out;
}
}  // namespace

namespace {

// The documents bases first (a document whose base is left out is left out too), and each one's
// base as its text names it.
struct BaseOrder {
  std::vector<const EnvDocument*> order;
  std::map<std::string, std::string> base;
};
BaseOrder base_order(const std::vector<EnvDocument>& documents) {
  BaseOrder out;
  std::map<std::string, const EnvDocument*> by_name;
  for (const auto& d : documents) by_name[d.name] = &d;
  for (const auto& d : documents) {
    std::string base;
    try {
      YAML::Node n = YAML::Load(d.text);
      if (n.IsMap() && n["base"] && n["base"].IsScalar()) base = n["base"].Scalar();
    } catch (const YAML::Exception&) {
    }
    out.base[d.name] = base;
  }
  std::set<std::string> placed;
  std::function<void(const EnvDocument&, int)> place = [&](const EnvDocument& d, int depth) {
    if (placed.count(d.name) || depth > 64) return;
    placed.insert(d.name);
    if (auto b = by_name.find(out.base[d.name]); b != by_name.end()) place(*b->second, depth + 1);
    out.order.push_back(&d);
  };
  for (const auto& d : documents) place(d, 0);
  return out;
}

// A document's "unknown environment" error names the environments there are when it is added to
// the fleet and the documents kept before it (and the closest of them).
void name_environments(std::string& error, const std::vector<std::string>& names, const std::string& doc) {
  const auto at = error.find(kUnknownBase);
  if (at == std::string::npos) return;
  const auto end = error.find(kUnknownBase, at + 1);
  if (end == std::string::npos) return;
  std::vector<std::string> all = names;
  all.push_back(doc);
  const std::string base = error.substr(at + 1, end - at - 1);
  auto hint = closest(base, all);
  error.replace(at, end + 1 - at, fmt::format("{}; environments: {}", hint ? fmt::format(" (did you mean '{}'?)", *hint) : "",
                                              join(all)));
}

std::string joined(const std::vector<std::string>& errors) {
  std::string out;
  for (const auto& e : errors) out += (out.empty() ? "" : "\n") + e;
  return out;
}

}  // namespace

Result<ResolvedCatalog> resolve_catalog(std::string_view text, const std::string& filename, const std::string& base_dir,
                                        const std::vector<EnvDocument>& documents) {
  // One parse in which each document's errors are its own; then, only when some document has
  // errors or the pool cannot hold them all, one document after another (bases first) as adding
  // them one at a time to the fleet would: left out with its errors, because its base is, or
  // because it would run a container on a loopback pool or overflow the pool.
  DocumentErrors found;
  auto all = Catalog::parse_guarded(text, filename, base_dir, documents, &found);
  if (all.ok() && !found.fleet_broken) {
    Catalog& cat = all.value();
    const NetworkSpec& net = cat.network();
    auto first_container = [&](const Environment& e) -> const AppSpec* {
      if (net.loopback())
        for (const auto& a : e.apps)
          if (a.container() && e.runs(a.app)) return &a;
      return nullptr;
    };
    std::uint64_t need = 0;
    bool containers = false;
    for (const auto& e : cat.environments()) {
      need += static_cast<std::uint64_t>(e.instance_count());
      containers = containers || first_container(e);
    }
    if (found.errors.empty() && !containers && need <= net.usable_count()) return ResolvedCatalog{std::move(cat), {}};
    const BaseOrder bo = base_order(documents);
    bool unsure = false;  // what only adding them one at a time can tell (a fleet that needs a document)
    need = 0;
    std::string parts;               // "NAME COUNT, ..." of what the pool holds
    std::vector<std::string> names;  // the environments there are: the fleet's, the documents kept
    auto document_env = [&](const std::string& name) { return found.resolved.count(name) ? cat.find(name) : nullptr; };
    for (const auto& e : cat.environments()) {
      if (document_env(e.name)) continue;
      names.push_back(e.name);
      unsure = unsure || first_container(e);
      need += static_cast<std::uint64_t>(e.instance_count());
      parts += fmt::format("{}{} {}", parts.empty() ? "" : ", ", e.name, e.instance_count());
    }
    unsure = unsure || need > net.usable_count();
    std::map<std::string, std::string> left_out;
    std::vector<const EnvDocument*> kept;
    std::set<std::string> kept_names;
    std::set<std::string> doc_names;
    for (const auto& d : documents) doc_names.insert(d.name);
    for (const EnvDocument* d : bo.order) {
      if (unsure) break;
      const std::string& base = bo.base.at(d->name);
      const Environment* e = document_env(d->name);
      if (left_out.count(base)) {
        left_out[d->name] = fmt::format("its base environment '{}' is invalid", base);
      } else if (doc_names.count(base) && base != d->name && !kept_names.count(base)) {
        unsure = true;  // its base is not decided yet (bases in a cycle, or deeper than the order goes)
      } else if (auto errs = found.errors.find(d->name); errs != found.errors.end()) {
        std::vector<std::string> why = errs->second;
        for (auto& w : why) name_environments(w, names, d->name);
        if (const AppSpec* a = e ? first_container(*e) : nullptr)
          why.push_back(found.pool_at + ": " + container_on_loopback(*a, net));
        left_out[d->name] = joined(why);
      } else if (!e) {
        unsure = true;  // left out of the parse without an error of its own (a cycle blamed on another)
      } else if (const AppSpec* a = first_container(*e)) {
        left_out[d->name] = found.pool_at + ": " + container_on_loopback(*a, net);
      } else if (const auto n = static_cast<std::uint64_t>(e->instance_count()); need + n > net.usable_count()) {
        left_out[d->name] = found.pool_at + ": " + pool_too_small(net, need + n, fmt::format("{}{}{} {}", parts,
                                                                                             parts.empty() ? "" : ", ",
                                                                                             d->name, n));
      } else {
        need += n;
        parts += fmt::format("{}{} {}", parts.empty() ? "" : ", ", d->name, n);
        kept.push_back(d);
        kept_names.insert(d->name);
        names.push_back(d->name);
      }
    }
    for (const auto& name : found.fleet_bases) unsure = unsure || left_out.count(name);
    if (!unsure) {
      // The fleet's environments, then the documents kept in that order: what parsing the fleet
      // with them gives.
      std::map<std::string, Environment*> by_name;
      for (auto& e : cat.environments_)
        if (found.resolved.count(e.name)) by_name[e.name] = &e;
      std::vector<Environment> envs;
      envs.reserve(cat.environments_.size());
      for (auto& e : cat.environments_)
        if (!found.resolved.count(e.name)) envs.push_back(std::move(e));
      std::vector<EnvDocument> docs;
      for (const EnvDocument* d : kept) {
        envs.push_back(std::move(*by_name.at(d->name)));
        docs.push_back(*d);
      }
      cat.environments_ = std::move(envs);
      cat.documents_ = std::move(docs);
      cat.index();
      return ResolvedCatalog{std::move(cat), std::move(left_out)};
    }
  }

  // What one parse could not tell: the fleet alone, then the documents added one at a time.
  if (!all.ok())  // the fleet's own errors: does it stand alone?
    if (auto fleet = Catalog::parse(text, filename, base_dir); !fleet.ok()) return fleet.error();
  all = Catalog::parse(text, filename, base_dir, documents);
  if (all.ok()) return ResolvedCatalog{std::move(all.value()), {}};
  auto fleet = Catalog::parse(text, filename, base_dir);
  if (!fleet.ok()) return fleet.error();
  std::map<std::string, std::string> invalid;
  const BaseOrder bo = base_order(documents);
  const std::vector<const EnvDocument*>& order = bo.order;
  auto base_of = [&](const EnvDocument& d) { return bo.base.at(d.name); };
  // First guess: the documents the errors are located in (and those based on them); then each
  // remaining document added one at a time only if that guess was not enough.
  std::set<std::string> suspect;
  for (const auto& e : all.error().details)
    for (const auto& d : documents)
      if (e.rfind(d.filename() + ":", 0) == 0 || e.rfind(d.filename() + " ", 0) == 0) suspect.insert(d.name);
  auto attempt = [&](const std::vector<EnvDocument>& docs) { return Catalog::parse(text, filename, base_dir, docs); };
  std::vector<EnvDocument> kept;
  for (const auto* d : order) {
    std::string base = base_of(*d);
    if (invalid.count(base)) {
      invalid[d->name] = fmt::format("its base environment '{}' is invalid", base);
    } else if (suspect.count(d->name)) {
      std::vector<EnvDocument> with = kept;
      with.push_back(*d);
      auto r = attempt(with);
      if (r.ok()) kept.push_back(*d);
      else invalid[d->name] = why(r.error());
    } else {
      kept.push_back(*d);
    }
  }
  auto r = attempt(kept);
  if (r.ok()) return ResolvedCatalog{std::move(r.value()), std::move(invalid)};
  // The errors were not where they were reported: one at a time, from scratch.
  kept.clear();
  invalid.clear();
  std::optional<Catalog> last;
  for (const auto* d : order) {
    std::string base = base_of(*d);
    if (invalid.count(base)) {
      invalid[d->name] = fmt::format("its base environment '{}' is invalid", base);
      continue;
    }
    std::vector<EnvDocument> with = kept;
    with.push_back(*d);
    auto one = attempt(with);
    if (one.ok()) {
      kept.push_back(*d);
      last = std::move(one.value());
    } else {
      invalid[d->name] = why(one.error());
    }
  }
  if (!last) last = std::move(fleet.value());
  return ResolvedCatalog{std::move(*last), std::move(invalid)};
}

namespace {
void each_secret(YAML::Node node, std::vector<std::string>& path,
                 const std::function<void(const std::vector<std::string>&, YAML::Node)>& fn, int depth = 0);
}  // namespace

Status check_member_document(const EnvDocument& doc, const std::vector<std::string>& allowed_repos) {
  Ctx ctx{doc.filename(), {}, {}, "", {}, nullptr, {}};
  YAML::Node root;
  try {
    root = YAML::Load(doc.text);
  } catch (const YAML::Exception& e) {
    return invalid(fmt::format("{}:{}:{}: YAML syntax error: {}", doc.filename(), e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  if (!root.IsMap()) return {};  // the loader reports the shape
  const std::string admins = "is set by the fleet's maintainers (admins) in berth.yaml";
  auto check_settings = [&](const YAML::Node& layer, const std::string& where, bool per_app) {
    if (!layer.IsMap()) return;
    for (auto it = layer.begin(); it != layer.end(); ++it) {
      if (!it->first.IsScalar()) continue;
      const std::string key = it->first.Scalar();
      if ((!per_app && one_of(kEnvMetaKeys, key)) || one_of(kMemberSettings, key)) continue;
      if (per_app && key == "source") {
        const YAML::Node repo = it->second.IsMap() ? it->second["repo"] : YAML::Node();
        if (!repo || !repo.IsScalar()) continue;  // the loader reports it
        bool ok = std::any_of(allowed_repos.begin(), allowed_repos.end(),
                              [&](const std::string& p) { return !p.empty() && repo.Scalar().rfind(p, 0) == 0; });
        if (!ok)
          ctx.error(repo, fmt::format("{}.source.repo '{}' is not under a repository prefix members may use ({}); ask an "
                                      "admin", where, repo.Scalar(), allowed_repos.empty() ? "none configured"
                                                                                           : join(allowed_repos)));
        continue;
      }
      ctx.error(it->first, fmt::format("{}.{} {}; members may set {}", where, key, admins, join(kMemberSettings)));
    }
  };
  // A secret read from a file is read by the daemon: never a member's path.
  std::vector<std::string> at;
  each_secret(root, at, [&](const std::vector<std::string>& where, YAML::Node entry) {
    if (const YAML::Node f = entry["file"])
      ctx.error(f, fmt::format("{}.file: secrets read from files {}; write {{secret: true, value: ...}}", join(where, "."),
                               admins));
  });
  check_settings(root, "environment " + doc.name, false);
  if (const YAML::Node apps = root["apps"]; apps && apps.IsMap())
    for (auto it = apps.begin(); it != apps.end(); ++it)
      if (it->first.IsScalar()) check_settings(it->second, doc.name + ".apps." + it->first.Scalar(), true);
  if (ctx.errors.empty()) return {};
  Error err = forbidden(ctx.errors.size() == 1 ? ctx.errors.front()
                                               : fmt::format("{} settings a member may not set:\n  {}", ctx.errors.size(),
                                                             join(ctx.errors, "\n  ")));
  err.details = std::move(ctx.errors);
  return err;
}

Result<std::string> set_in_document(std::string_view text, const std::string& key, const std::string& value, bool unset) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return invalid(fmt::format("the document is not valid YAML ({}:{}: {}); fix it with berth env edit", e.mark.line + 1,
                               e.mark.column + 1, e.msg));
  }
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) return invalid("the document is not a mapping; fix it with berth env edit");
  std::vector<std::string> path;
  for (std::size_t i = 0; i <= key.size();) {
    auto j = key.find('.', i);
    if (j == std::string::npos) j = key.size();
    path.push_back(key.substr(i, j - i));
    i = j + 1;
  }
  if (std::any_of(path.begin(), path.end(), [](const std::string& p) { return p.empty(); }))
    return invalid(fmt::format("'{}': write APP.KEY (orders.tag, orders.env.LOG_LEVEL) or KEY for the whole environment "
                               "(base, expires, tag)", key));
  // APP.KEY... unless the first word is a key of the environment itself.
  if (!one_of(kEnvMetaKeys, path[0]) && !one_of(kSettingKeys, path[0])) path.insert(path.begin(), "apps");
  else if (path.size() > 1 && path[0] != "env" && path[0] != "ports" && path[0] != "health" && path[0] != "restart" &&
           path[0] != "resources")
    return invalid(fmt::format("'{}': {} is a single value of the environment", key, path[0]));
  // Walk down, making mappings on the way (copies of nodes refer to the document's nodes).
  std::vector<YAML::Node> chain{root};
  for (std::size_t i = 0; i + 1 < path.size(); ++i) {
    YAML::Node next = chain.back()[path[i]];
    if (!next || next.IsNull()) {
      if (unset) return std::string(text);  // nothing there to remove
      chain.back()[path[i]] = YAML::Node(YAML::NodeType::Map);
      next.reset(chain.back()[path[i]]);  // operator= would write through
    } else if (!next.IsMap()) {
      return invalid(fmt::format("'{}': {} holds a single value, not keys", key, path[i]));
    }
    chain.push_back(next);
  }
  const std::string& leaf = path.back();
  if (unset) {
    chain.back().remove(leaf);
    // Drop mappings left empty.
    for (std::size_t i = chain.size() - 1; i > 0 && chain[i].size() == 0; --i) chain[i - 1].remove(path[i - 1]);
  } else if (leaf == "editors" || leaf == "include") {
    YAML::Node list(YAML::NodeType::Sequence);
    for (std::size_t i = 0; i <= value.size();) {
      auto j = value.find(',', i);
      if (j == std::string::npos) j = value.size();
      if (j > i) list.push_back(value.substr(i, j - i));
      i = j + 1;
    }
    chain.back()[leaf] = list;
  } else {
    chain.back()[leaf] = value;
  }
  YAML::Emitter out;
  out << root;
  std::string s = out.c_str();
  if (s == "{}") s.clear();
  return s.empty() ? s : s + "\n";
}

}  // namespace berth::model

namespace berth::model {

namespace {

// Calls `fn(path, entry)` for every `env` entry written as {secret: true, value: ...}, `path`
// being the keys down to it.
void each_secret(YAML::Node node, std::vector<std::string>& path,
                 const std::function<void(const std::vector<std::string>&, YAML::Node)>& fn, int depth) {
  if (!node.IsMap() || depth > 32) return;
  for (auto it = node.begin(); it != node.end(); ++it) {
    if (!it->first.IsScalar()) continue;
    const std::string key = it->first.Scalar();
    YAML::Node value = it->second;
    path.push_back(key);
    if (key == "env" && value.IsMap()) {
      for (auto jt = value.begin(); jt != value.end(); ++jt) {
        YAML::Node entry = jt->second;
        if (!jt->first.IsScalar() || !entry.IsMap()) continue;
        const YAML::Node sec = entry["secret"];
        if (sec && sec.IsScalar() && sec.Scalar() == "true") {
          path.push_back(jt->first.Scalar());
          fn(path, entry);
          path.pop_back();
        }
      }
    } else {
      each_secret(value, path, fn, depth + 1);
    }
    path.pop_back();
  }
}

std::string emit(const YAML::Node& root) {
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

}  // namespace

std::string mask_secrets(std::string_view text) {
  if (text.find("secret") == std::string_view::npos) return std::string(text);
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception&) {
    return std::string(text);  // stored documents parse; a fleet that does not was never applied
  }
  bool any = false;
  std::vector<std::string> path;
  each_secret(root, path, [&](const std::vector<std::string>&, YAML::Node entry) {
    if (entry["file"] && !entry["value"]) return;  // a path, not the secret: shown as it is
    entry["value"] = std::string(kSecretMask);
    any = true;
  });
  return any ? emit(root) : std::string(text);
}

Result<std::string> restore_secrets(std::string_view text, std::string_view previous, const std::string& filename) {
  if (text.find(kSecretMask) == std::string_view::npos) return std::string(text);
  YAML::Node root, before;
  try {
    root = YAML::Load(std::string(text));
    before = YAML::Load(std::string(previous));
  } catch (const YAML::Exception&) {
    return std::string(text);  // the loader reports the syntax error with its place
  }
  std::optional<Error> missing;
  bool any = false;
  std::vector<std::string> path;
  each_secret(root, path, [&](const std::vector<std::string>& at, YAML::Node entry) {
    const YAML::Node v = entry["value"];
    if (!v || !v.IsScalar() || v.Scalar() != kSecretMask) return;
    YAML::Node old = before;
    for (const auto& k : at) old.reset(old.IsMap() ? old[k] : YAML::Node());
    const YAML::Node old_value = old.IsMap() ? old["value"] : YAML::Node();
    if (!old_value || !old_value.IsScalar()) {
      if (!missing) {
        std::string dotted;
        for (const auto& k : at) dotted += (dotted.empty() ? "" : ".") + k;
        missing = invalid(fmt::format("{}:{}:{}: {} is the mask of a secret berth shows, but there is no stored value to "
                                      "keep; write the value itself", filename, v.Mark().line + 1, v.Mark().column + 1,
                                      dotted));
      }
      return;
    }
    entry["value"] = old_value.Scalar();
    any = true;
  });
  if (missing) return *missing;
  return any ? emit(root) : std::string(text);
}

}  // namespace berth::model
