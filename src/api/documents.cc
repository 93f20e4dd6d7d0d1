// The API's routes for environments kept as their own documents (create, read, write with
// If-Match, set/unset one key, delete, diff), tokens, the caller and the audit log. Part of
// api::Api (api/handlers.h); loop thread only.
#include <charconv>
#include <set>

#include <fmt/format.h>

#include "api/handlers.h"
#include "api/util.h"
#include "base/text.h"
#include "k8s/k8s.h"

namespace berth::api {
using nlohmann::json;
using namespace detail;

namespace {

// If-Match: "3" (or W/"3", or 3) → 3; "" → 0 (none sent); anything else → an error.
Result<std::int64_t> if_match(const std::string& header) {
  std::string_view v = header;
  if (v.empty()) return 0;
  if (v.substr(0, 2) == "W/") v.remove_prefix(2);
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  std::int64_t n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || p != v.data() + v.size() || n < 1)
    return invalid(fmt::format("If-Match '{}': expected the document's version as its ETag gave it, e.g. \"3\"",
                               header.substr(0, 64)));
  return n;
}

std::string etag(std::int64_t version) { return fmt::format("\"{}\"", version); }

json document_json(const control::DocumentStatus& d, const model::Environment* e, bool with_text) {
  json j = {{"name", d.doc.name},
            {"owner", d.doc.owner},
            {"version", d.doc.version},
            {"updated_at", nullable_time(d.doc.updated_at)},
            {"updated_by", d.doc.updated_by},
            {"error", d.error.empty() ? json(nullptr) : json(d.error)}};
  if (e) {
    j["base"] = e->base.empty() ? json(nullptr) : json(e->base);
    j["thin"] = e->deploy_changed;
    j["editors"] = e->editors;
    j["expires"] = e->keep ? json(nullptr) : nullable_time(e->expires_at);
    j["keep"] = e->keep;
  }
  if (with_text) j["text"] = model::mask_secrets(d.doc.text);
  return j;
}

json token_json(const store::TokenRecord& t) {
  return {{"id", t.id}, {"user", t.user}, {"role", t.role}, {"created_at", nullable_time(t.created_at)},
          {"created_by", t.created_by}, {"revoked_at", nullable_time(t.revoked_at)}};
}

json plan_notes(const std::vector<std::string>& notes) { return notes; }

// A JSON object body, or an error saying which shape was expected.
Result<json> object_body(const std::string& text, std::string_view shape) {
  json body = json::parse(text, nullptr, false);
  if (body.is_discarded() || !body.is_object()) return invalid(fmt::format("request body: expected {}", shape));
  return body;
}

// {"orders.tag": "x", ...} → pairs; every value a string (numbers and booleans are written as
// they read).
Result<std::vector<std::pair<std::string, std::string>>> settings_field(const json& body, const char* field) {
  std::vector<std::pair<std::string, std::string>> out;
  if (!body.contains(field)) return out;
  if (!body[field].is_object())
    return invalid(fmt::format("request body: '{}' must be an object of APP.KEY: value, e.g. {{\"orders.tag\": "
                               "\"feature/x\"}}", field));
  for (const auto& [k, v] : body[field].items()) {
    if (v.is_string()) out.emplace_back(k, v.get<std::string>());
    else if (v.is_number() || v.is_boolean()) out.emplace_back(k, v.dump());
    else return invalid(fmt::format("request body: {}.{} must be a string, number or boolean", field, k));
  }
  if (out.size() > 1000) return invalid(fmt::format("request body: '{}' has more than 1000 settings", field));
  return out;
}

// The body's "set" written into `text`, one key at a time.
Status apply_sets(const json& body, std::string& text) {
  auto sets = settings_field(body, "set");
  if (!sets.ok()) return sets.error();
  for (const auto& [k, v] : *sets) {
    auto next = model::set_in_document(text, k, v, false);
    if (!next.ok()) return next.error();
    text = *next;
  }
  return {};
}

}  // namespace

std::optional<Response> Api::route_documents(const Request& req, const auth::Principal& who) {
  const Target t = parse_target(req.target);
  const std::vector<std::string>& parts = t.parts;
  const std::string_view query = t.query;
  auto is = [&](std::string_view method, std::initializer_list<std::string_view> pattern) {
    return matches(req.method, parts, method, pattern);
  };
  const model::Catalog* cat = loop_.catalog();
  auto find_doc = [&](const std::string& name) -> std::optional<control::DocumentStatus> {
    for (auto& d : loop_.documents())
      if (d.doc.name == name) return d;
    return std::nullopt;
  };
  auto env_of = [&](const std::string& name) { return cat ? cat->find(name) : nullptr; };
  // Validates what a member may set (admins may set anything), then writes.
  auto write = [&](const std::string& name, const std::string& text, std::int64_t based_on) -> Response {
    if (who.role != auth::Role::kAdmin) {
      model::EnvDocument probe;
      probe.name = name;
      probe.text = text;
      if (auto st = model::check_member_document(probe, options_.member_repos); !st.ok()) return error_response(st.error());
    }
    auto doc = loop_.put_document({name, text, based_on, who.user});
    if (!doc.ok()) return error_response(doc.error());
    auto d = find_doc(name);
    Response r = ok(document_json(*d, env_of(name), true), based_on == 0 ? 201 : 200);
    r.etag = etag(doc->version);
    return r;
  };
  // `ttl` (from now) and `extend` (from the current expiry, or now if past) become `expires`.
  auto lifetime = [&](const json& body, std::string& text, const model::Environment* e) -> Status {
    for (const char* f : {"ttl", "extend"}) {
      if (!body.contains(f)) continue;
      auto d = body[f].is_string() ? parse_duration(body[f].get<std::string>()) : std::nullopt;
      if (!d || *d <= 0 || *d > 366LL * 86'400'000)
        return invalid(fmt::format("request body: '{}' must be a duration up to 366d, e.g. \"3d\" or \"12h\"", f));
      Millis now = loop_.now_wall_ms();
      Millis from = std::string(f) == "extend" && e && e->expires_at > now ? e->expires_at : now;
      auto without_ttl = model::set_in_document(text, "ttl", "", true);  // expires replaces it
      if (!without_ttl.ok()) return without_ttl.error();
      auto next = model::set_in_document(*without_ttl, "expires", rfc3339_ms(from + *d), false);
      if (!next.ok()) return next.error();
      text = *next;
    }
    return {};
  };

  if (is("GET", {"v1", "whoami"}))
    return ok({{"user", who.user}, {"role", std::string(auth::to_string(who.role))}, {"token", who.token_id}});

  if (is("GET", {"v1", "documents"})) {
    json list = json::array();
    for (const auto& d : loop_.documents()) list.push_back(document_json(d, env_of(d.doc.name), false));
    return ok(list);
  }

  // berth env create NAME --base B [--thin] [--set K=V ...] [--ttl D]
  if (is("POST", {"v1", "environments"})) {
    auto body = object_body(req.body, "{\"name\": ..., \"base\": ..., \"thin\": false, \"set\": {\"orders.tag\": ...}, "
                                      "\"ttl\": \"3d\"}");
    if (!body.ok()) return error_response(body.error());
    if (!body->contains("name") || !(*body)["name"].is_string())
      return error_response(invalid("request body: 'name' (the new environment's name) must be a string"));
    if (body->contains("base") && !(*body)["base"].is_string())
      return error_response(invalid("request body: 'base' must be the name of an environment"));
    if (body->contains("thin") && !(*body)["thin"].is_boolean())
      return error_response(invalid("request body: 'thin' must be true or false"));
    const std::string name = (*body)["name"];
    std::string text;
    if (body->contains("base")) text = fmt::format("base: {}\n", json((*body)["base"]).dump());
    if (body->value("thin", false)) text += "deploy: changed\n";
    if (auto st = apply_sets(*body, text); !st.ok()) return error_response(st.error());
    if (auto st = lifetime(*body, text, nullptr); !st.ok()) return error_response(st.error());
    return write(name, text, 0);
  }

  if (parts.size() == 4 && parts[0] == "v1" && parts[1] == "environments" && parts[3] == "document") {
    const std::string& name = parts[2];
    if (req.method == "GET") {
      auto d = find_doc(name);
      if (!d)
        return error_response(not_found(env_of(name) ? fmt::format("environment '{}' is part of the fleet document, "
                                                                   "not a document of its own (GET /v1/catalog)", name)
                                                     : fmt::format("no environment document '{}'", name)));
      Response r = ok(document_json(*d, env_of(name), true));
      r.etag = etag(d->doc.version);
      return r;
    }
    auto version = if_match(req.if_match);
    if (!version.ok()) return error_response(version.error());
    if (req.method == "PUT") {
      auto body = object_body(req.body, "{\"text\": \"the environment's YAML\"}");
      if (!body.ok()) return error_response(body.error());
      if (!body->contains("text") || !(*body)["text"].is_string())
        return error_response(invalid("request body: 'text' (the environment's YAML) must be a string"));
      // Read masked, written back: the secrets it did not change keep their values.
      auto d = find_doc(name);
      auto text = model::restore_secrets((*body)["text"].get<std::string>(), d ? d->doc.text : "",
                                         model::EnvDocument{name, "", "", 0, 0, ""}.filename());
      if (!text.ok()) return error_response(text.error());
      return write(name, *text, *version);
    }
    if (req.method == "PATCH") {
      auto body = object_body(req.body, "{\"set\": {\"orders.tag\": ...}, \"unset\": [\"orders.build_type\"], "
                                        "\"ttl\": \"3d\", \"extend\": \"2d\"}");
      if (!body.ok()) return error_response(body.error());
      auto d = find_doc(name);
      if (!d) return error_response(not_found(fmt::format("no environment document '{}'", name)));
      if (*version == 0)
        return error_response(invalid("PATCH needs If-Match with the version it was based on (the ETag of GET "
                                      "/v1/environments/NAME/document)"));
      std::string text = d->doc.text;
      if (auto st = apply_sets(*body, text); !st.ok()) return error_response(st.error());
      if (body->contains("unset")) {
        if (!(*body)["unset"].is_array()) return error_response(invalid("request body: 'unset' must be a list of keys"));
        for (const auto& k : (*body)["unset"]) {
          if (!k.is_string()) return error_response(invalid("request body: every key of 'unset' must be a string"));
          auto next = model::set_in_document(text, k.get<std::string>(), "", true);
          if (!next.ok()) return error_response(next.error());
          text = *next;
        }
      }
      if (auto st = lifetime(*body, text, env_of(name)); !st.ok()) return error_response(st.error());
      return write(name, text, *version);
    }
    if (req.method == "DELETE") {
      auto notes = loop_.delete_document(name, *version, who.user, flag_param(query, "keep_data"));
      if (!notes.ok()) return error_response(notes.error());
      return ok({{"environment", name}, {"deleted", true}, {"notes", plan_notes(*notes)}});
    }
    return std::nullopt;
  }

  // Every effective setting that differs from another environment (its base by default).
  if (is("GET", {"v1", "environments", "*", "diff"})) {
    const model::Environment* e = env_of(parts[2]);
    if (!e) return error_response(not_found(fmt::format("no environment '{}'", parts[2])));
    std::string against = query_param(query, "against");
    if (against.empty()) against = e->base;
    if (against.empty())
      return error_response(invalid(fmt::format("environment '{}' has no base; say which to compare with: ?against=ENV",
                                                parts[2])));
    const model::Environment* o = env_of(against);
    if (!o) return error_response(not_found(fmt::format("no environment '{}' to compare with", against)));
    json diffs = json::array();
    for (const auto& a : e->apps) {
      const model::AppSpec* b = o->find(a.app);
      auto value = [](const model::AppSpec* s, const std::string& k) {
        if (!s || !s->values.count(k)) return json(nullptr);
        return s->is_secret_setting(k) ? json(std::string(model::kSecretMask)) : json(s->values.at(k));
      };
      auto from = [](const model::AppSpec* s, const std::string& k) {
        return s && s->from.count(k) ? json(s->from.at(k)) : json(nullptr);
      };
      std::set<std::string> keys;
      for (const auto& [k, v] : a.values) keys.insert(k);
      if (b)
        for (const auto& [k, v] : b->values) keys.insert(k);
      for (const auto& k : keys)
        if (value(&a, k) != value(b, k))
          diffs.push_back({{"app", a.app}, {"setting", k}, {"value", value(&a, k)}, {"from", from(&a, k)},
                           {"against_value", value(b, k)}, {"against_from", from(b, k)}});
      if (e->runs(a.app) != o->runs(a.app))
        diffs.push_back({{"app", a.app}, {"setting", "runs"}, {"value", e->runs(a.app)},
                         {"from", e->runs(a.app) ? e->name : e->served_by.count(a.app) ? e->served_by.at(a.app) : ""},
                         {"against_value", o->runs(a.app)}, {"against_from", o->name}});
    }
    return ok({{"environment", e->name}, {"against", against}, {"differences", diffs}});
  }

  // ---- an environment as Kubernetes manifests, on paper (k8s/k8s.h) ----
  if (parts.size() == 5 && parts[0] == "v1" && parts[1] == "environments" && parts[3] == "export" && parts[4] == "k8s" &&
      req.method == "GET") {
    const auto* catalog = loop_.catalog();
    if (!catalog) return error_response(not_found("no catalog has been applied"));
    std::map<std::string, std::string> ips;
    if (auto st = loop_.status(parts[2]); st.ok())
      for (const auto& a : st->apps)
        for (const auto& i : a.instances)
          if (!i.ip.empty()) ips[fmt::format("{}/{}", a.app, i.ordinal)] = i.ip;
    auto exported = k8s::manifests(*catalog, parts[2], ips);
    if (!exported.ok()) return error_response(exported.error());
    return ok({{"environment", parts[2]}, {"yaml", exported->yaml}, {"notes", exported->notes}});
  }

  // ---- tokens (admins; authorize() checked) ----
  if (is("GET", {"v1", "tokens"})) {
    json list = json::array();
    for (const auto& r : tokens_.list()) list.push_back(token_json(r));
    return ok(list);
  }
  if (is("POST", {"v1", "tokens"})) {
    auto body = object_body(req.body, "{\"user\": \"anna\", \"role\": \"admin\" | \"member\" | \"viewer\"}");
    if (!body.ok()) return error_response(body.error());
    if (!body->contains("user") || !(*body)["user"].is_string())
      return error_response(invalid("request body: 'user' must be a user name"));
    const std::string role_text = body->contains("role") && (*body)["role"].is_string() ? (*body)["role"] : "";
    auto role = auth::parse_role(role_text);
    if (!role) return error_response(invalid(fmt::format("request body: 'role' must be admin, member or viewer, not '{}'",
                                                         role_text.substr(0, 64))));
    auto issued = tokens_.issue((*body)["user"], *role, who.user);
    if (!issued.ok()) return error_response(issued.error());
    (void)loop_.audit(who.user, "token.create", issued->record.id, "",
                      fmt::format("for {} as {}", issued->record.user, issued->record.role));
    json j = token_json(issued->record);
    j["token"] = issued->secret;
    return ok(j, 201);
  }
  if (is("DELETE", {"v1", "tokens", "*"})) {
    auto r = tokens_.revoke(parts[2]);
    if (!r.ok()) return error_response(r.error());
    (void)loop_.audit(who.user, "token.revoke", r->id, "", fmt::format("of {}", r->user));
    return ok(token_json(*r));
  }

  if (is("GET", {"v1", "audit"})) {
    store::AuditQuery q;
    q.env = query_param(query, "env");
    q.user = query_param(query, "user");
    if (std::string since = query_param(query, "since"); !since.empty()) {
      if (auto at = parse_rfc3339(since)) q.since = *at;
      else if (auto ago = parse_duration(since)) q.since = loop_.now_wall_ms() - *ago;
      else
        return error_response(invalid(fmt::format("query parameter since: '{}' is neither a time like "
                                                  "2026-12-01T09:00:00Z nor a duration like 2h", since.substr(0, 64))));
    }
    auto limit = int_param(query, "limit", 1000, 100000);
    if (!limit.ok()) return error_response(limit.error());
    q.limit = static_cast<int>(*limit);
    auto log = loop_.audit_log(q);
    if (!log.ok()) return error_response(log.error());
    json list = json::array();
    for (const auto& e : *log)
      list.push_back({{"id", e.id}, {"time", rfc3339_ms(e.time)}, {"user", e.user}, {"action", e.action},
                      {"target", e.target}, {"environment", e.env.empty() ? json(nullptr) : json(e.env)},
                      {"before_version", e.before_version ? json(e.before_version) : json(nullptr)},
                      {"after_version", e.after_version ? json(e.after_version) : json(nullptr)},
                      {"detail", e.detail}});
    return ok(list);
  }
  return std::nullopt;
}

}  // namespace berth::api
