#include "api/handlers.h"

#include <atomic>
#include <filesystem>

#include <charconv>
#include <fstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "api/util.h"
#include "ui/assets.h"
#include "base/gzip.h"
#include "base/text.h"

namespace berth::api {
using nlohmann::json;

using namespace detail;

Response error_response(const Error& e) {
  json j = {{"error", e.message}};
  if (!e.details.empty()) j["details"] = e.details;
  Response r;
  r.status = http_status(e.code);
  r.body = dump(j);
  return r;
}

json to_json(const store::Event& e) {
  return {{"id", e.id}, {"time", rfc3339_ms(e.time)}, {"type", e.type},
          {"app", e.app.empty() ? json(nullptr) : json(e.app)},
          {"ordinal", e.ordinal < 0 ? json(nullptr) : json(e.ordinal)},
          {"ip", e.ip.empty() ? json(nullptr) : json(e.ip)}, {"message", e.message}};
}

namespace {

bool is_write(const std::string& method) { return method != "GET" && method != "HEAD"; }

}  // namespace

Result<auth::Principal> Api::admit(const Request& req) const {
  // DNS rebinding: a page on evil.example resolving to 127.0.0.1 still sends its own Host.
  if (!options_.allowed_hosts.empty() &&
      std::find(options_.allowed_hosts.begin(), options_.allowed_hosts.end(), req.host) == options_.allowed_hosts.end())
    return forbidden(fmt::format("Host '{}' is not this daemon's address ({}); requests through other names are refused",
                                 req.host.substr(0, 256), fmt::join(options_.allowed_hosts, ", ")));
  // Browsers say where a request comes from: only the daemon's own pages may call it.
  if (!req.origin.empty()) {
    bool same = false;
    for (const auto& h : options_.allowed_hosts)
      if (req.origin == "http://" + h || req.origin == "https://" + h) same = true;
    if (options_.allowed_hosts.empty() && !req.host.empty())
      same = req.origin == "http://" + req.host || req.origin == "https://" + req.host;
    if (!same)
      return forbidden(fmt::format("cross-origin request from '{}' refused: only the daemon's own web pages may call "
                                   "the API", req.origin.substr(0, 256)));
  }
  // A form or a text/plain fetch can be sent cross-origin without asking: writes must be JSON.
  if (is_write(req.method) && !req.body.empty() && req.content_type.rfind("application/json", 0) != 0)
    return invalid(fmt::format("{} with a body needs Content-Type: application/json (got '{}')", req.method,
                               req.content_type.substr(0, 128)));
  return tokens_.authenticate(req.authorization);
}

Result<std::string> Api::importable(const std::string& path) const {
  std::error_code ec;
  const auto real = std::filesystem::weakly_canonical(path, ec).string();
  for (const auto& d : options_.import_dirs) {
    const auto dir = std::filesystem::weakly_canonical(d, ec).string();
    if (!dir.empty() && (real == dir || real.rfind(dir + "/", 0) == 0)) return real;
  }
  return forbidden(fmt::format("imports and releases read only from the directories the daemon was started with "
                               "(--import-dir): {}",
                               options_.import_dirs.empty() ? "none configured" : fmt::format("{}", fmt::join(options_.import_dirs, ", "))));
}

Status Api::may_change(const auth::Principal& who, const std::string& env, std::string_view what) const {
  if (who.role == auth::Role::kAdmin) return {};
  if (const auto* c = loop_.catalog())
    if (const auto* e = c->find(env)) return auth::may_change(who, env, e->own_document, e->owner, e->editors, what);
  for (const auto& d : loop_.documents())  // left out of the catalog, but still its owner's
    if (d.doc.name == env) {
      auto st = auth::may_change(who, env, true, d.doc.owner, {}, what);
      return st;
    }
  return auth::require(who, auth::Role::kMember, what);  // the route says it does not exist
}

Status Api::authorize(const auth::Principal& who, const Request& req) const {
  const Target t = parse_target(req.target);
  const auto& p = t.parts;
  const std::string what = fmt::format("{} {}", req.method, req.target.substr(0, req.target.find('?')).substr(0, 200));
  if (p.size() >= 2 && p[0] == "v1" && (p[1] == "tokens")) return auth::require(who, auth::Role::kAdmin, what);
  if (!is_write(req.method)) return {};
  if (p.size() == 2 && p[0] == "v1" && p[1] == "environments" && req.method == "POST")
    return auth::require(who, auth::Role::kMember, what);
  if (p.size() >= 4 && p[0] == "v1" && p[1] == "environments") {
    // Creating a document: any member; everything else on an environment: its owner or editors.
    if (p.size() == 4 && p[3] == "document" && req.method == "PUT" && req.if_match.empty())
      return auth::require(who, auth::Role::kMember, what);
    const bool env_write = (p.size() == 4 && (p[3] == "up" || p[3] == "down" || p[3] == "refresh" || p[3] == "restart" ||
                                              p[3] == "document" || p[3] == "drift")) ||
                           (p.size() == 6 && p[3] == "databases" && (p[5] == "reset" || p[5] == "migrate"));
    if (env_write) return may_change(who, p[2], what);
    // exec runs a command inside an instance as the instance's user: the environment's own
    // unprivileged uid for processes, but the image's user (possibly root, without
    // capabilities) in a container, and root where an app says `user: root` — admins only.
  }
  // Everything else that writes (the fleet document, standards, reconcile): admins.
  return auth::require(who, auth::Role::kAdmin, what);
}

namespace {

Response failure(const Request& req, const std::exception& e) {
  return error_response(internal(fmt::format("internal error handling {} {}: {}", req.method, req.target, e.what())));
}

// An event stream whose frames come from the loop and whose end comes from the transport.
struct StreamBridge {
  std::atomic<bool> closed{false};
  std::function<void()> close;  // what the route returned; the loop's thread only
};

}  // namespace

void Api::handle(const Request& req, Reply reply) {
  // The edge: nothing a request does may throw into the transport.
  auth::Principal who;
  try {
    if (req.method == "GET" && req.target == "/v1/health") return reply(ok({{"status", "ok"}}));
    // The web UI's static files: public (the API behind them is not).
    if (req.method == "GET" && req.target.rfind("/v1/", 0) != 0) {
      const std::string path = req.target.substr(0, req.target.find('?'));
      const ui::Asset* a = ui::find_asset(path);
      if (!a) return reply(error_response(not_found(fmt::format("no page {} (the web UI is at /)", path.substr(0, 200)))));
      Response r;
      r.content_type = std::string(a->content_type);
      if (a->data.size() >= 1024 && accepts_gzip(req.accept_encoding)) {
        auto [it, fresh] = assets_gz_.try_emplace(path);
        if (fresh)
          if (auto z = gzip(a->data); z.ok()) it->second = std::move(z.value());
        if (!it->second.empty() && it->second.size() < a->data.size()) {
          r.body = it->second;
          r.content_encoding = "gzip";
        }
      }
      if (r.content_encoding.empty()) r.body = std::string(a->data);
      // Vite names assets by their content: cached for good; the page itself never.
      r.cache_control = path.rfind("/assets/", 0) == 0 ? "public, max-age=31536000, immutable" : "no-store";
      return reply(std::move(r));
    }
    auto admitted = admit(req);
    if (!admitted.ok()) return reply(error_response(admitted.error()));
    who = std::move(admitted.value());
    // Reads are for every role (authorize() lets them all through): answered here.
    if (is_status_read(req)) {
      if (!threaded()) loop_.publish_status();
      return reply(route_status(req));
    }
  } catch (const std::exception& e) {
    if (reply) reply(failure(req, e));
    return;
  }
  if (!threaded()) return on_loop(req, who, std::move(reply));
  options_.loop_executor->post([this, req, who, reply = to_transport(std::move(reply))]() mutable {
    on_loop(req, who, std::move(reply));
  });
}

void Api::on_loop(const Request& req, const auth::Principal& who, Reply reply) {
  try {
    if (auto st = authorize(who, req); !st.ok()) return reply(error_response(st.error()));
    if (route_async(req, who, reply)) return;
  } catch (const std::exception& e) {
    if (reply) reply(failure(req, e));
    return;
  }
  Response out;
  try {
    out = route(req, who);
    // What the request changed is in the next read, the client's own included.
    loop_.publish_status(environment_action(req));
  } catch (const std::exception& e) {
    out = failure(req, e);
  }
  reply(std::move(out));
}

Api::Reply Api::to_transport(Reply reply) const {
  return [post = options_.to_transport, loop = options_.loop_executor, reply = std::move(reply)](Response out) {
    if (out.stream) {
      // The transport opens and ends the stream on its thread; the route's side of it (a
      // subscription to the loop's events) lives on the loop, its frames cross back.
      out.stream = [open = std::move(out.stream), post, loop](Response::Send send) -> std::function<void()> {
        auto bridge = std::make_shared<StreamBridge>();
        Response::Send across = [bridge, post, send](const std::string& frame) {
          if (bridge->closed) return false;
          post([send, frame] { send(frame); });
          return true;
        };
        loop->post([bridge, open, across] {
          if (!bridge->closed) bridge->close = open(across);
        });
        return [bridge, loop] {
          bridge->closed = true;
          loop->post([bridge] {
            if (bridge->close) std::exchange(bridge->close, nullptr)();
          });
        };
      };
    }
    post([reply, out = std::move(out)]() mutable { reply(std::move(out)); });
  };
}

namespace {

// {"command": ["sh", "-c", "..."], "timeout": "10s"}
Result<std::pair<std::vector<std::string>, Millis>> exec_body(const std::string& text) {
  json body = json::parse(text, nullptr, false);
  const char* shape = "request body: expected {\"command\": [\"word\", ...], \"timeout\": \"10s\"}";
  if (body.is_discarded() || !body.is_object() || !body.contains("command") || !body["command"].is_array())
    return invalid(shape);
  std::vector<std::string> argv;
  for (const auto& w : body["command"]) {
    if (!w.is_string()) return invalid("request body: every word of 'command' must be a string");
    argv.push_back(w.get<std::string>());
  }
  if (argv.empty() || argv.front().empty()) return invalid("request body: 'command' needs at least a program name");
  if (argv.size() > 4096) return invalid("request body: 'command' has more than 4096 words");
  Millis timeout = 30'000;
  if (body.contains("timeout")) {
    auto t = body["timeout"].is_string() ? parse_duration(body["timeout"].get<std::string>()) : std::nullopt;
    if (!t || *t <= 0 || *t > 3'600'000)
      return invalid("request body: 'timeout' must be a duration from 1ms to 1h, e.g. \"30s\"");
    timeout = *t;
  }
  return std::make_pair(std::move(argv), timeout);
}

Result<int> ordinal_param(const std::string& text) {
  int n = -1;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || p != text.data() + text.size())
    return invalid(fmt::format("instance ordinal '{}' is not a number", text));
  return n;
}

}  // namespace

void Api::answer_apply(const std::string& filename, Result<control::Plan> plan, const Reply& reply) {
  if (!plan.ok()) return reply(error_response(plan.error()));
  json envs = json::array();
  if (plan->applied)
    for (const auto& e : loop_.catalog()->environments())
      envs.push_back({{"name", e.name}, {"apps", e.apps.size()}, {"instances", e.instance_count()},
                      {"document", e.own_document}});
  json changed = json::array();
  for (const auto& c : plan->changed)
    changed.push_back({{"environment", c.env}, {"app", c.app}, {"settings", c.settings}, {"replaced", c.replaced}});
  loop_.publish_status();  // what the apply changed is in the next read
  reply(ok({{"applied", plan->applied ? json(filename) : json(nullptr)}, {"version", plan->version},
            {"environments", envs},
            {"plan", {{"added", plan->added}, {"removed", plan->removed}, {"changed", changed},
                      {"replaced", plan->replaced}, {"invalidated", plan->invalidated}, {"notes", plan->notes}}}}));
}

bool Api::route_async(const Request& req, const auth::Principal& who, Reply& reply) {
  const Target t = parse_target(req.target);  // not a structured binding: lambdas capture these
  const std::vector<std::string>& parts = t.parts;
  const std::string_view query = t.query;
  auto fail = [&](const Error& e) {
    reply(error_response(e));
    return true;
  };
  if (req.method == "PUT" && parts.size() == 2 && parts[0] == "v1" && parts[1] == "catalog") {
    // Validated on the loop's worker: the loop answers other requests meanwhile.
    json body = json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object())
      return fail(invalid("request body: expected a JSON object {\"filename\": ..., \"text\": ...}"));
    if (!body.contains("text") || !body["text"].is_string())
      return fail(invalid("request body: field 'text' (the catalog's YAML) must be a string"));
    control::ControlLoop::FleetApply apply;
    apply.text = body["text"].get<std::string>();
    apply.filename = "berth.yaml";
    apply.user = who.user;
    if (body.contains("filename")) {
      if (!body["filename"].is_string()) return fail(invalid("request body: field 'filename' must be a string"));
      apply.filename = body["filename"].get<std::string>();
    }
    if (body.contains("base_dir")) {
      if (!body["base_dir"].is_string()) return fail(invalid("request body: field 'base_dir' must be a string"));
      apply.base_dir = body["base_dir"].get<std::string>();
    }
    for (const char* f : {"dry_run", "force", "move_base_dir"})
      if (body.contains(f) && !body[f].is_boolean())
        return fail(invalid(fmt::format("request body: field '{}' must be true or false", f)));
    if (body.contains("based_on")) {
      if (!body["based_on"].is_number_integer() || body["based_on"].get<std::int64_t>() < 0)
        return fail(invalid("request body: field 'based_on' must be the fleet version the change was made from"));
      apply.based_on = body["based_on"].get<std::int64_t>();
    }
    apply.dry_run = body.value("dry_run", false);
    apply.force = body.value("force", false);
    apply.move_base_dir = body.value("move_base_dir", false);
    const std::string filename = apply.filename;
    loop_.apply_fleet_async(std::move(apply), [this, req, filename, reply = std::move(reply)](Result<control::Plan> plan) {
      try {
        answer_apply(filename, std::move(plan), reply);
      } catch (const std::exception& e) {
        reply(failure(req, e));
      }
    });
    return true;
  }
  if (parts.size() >= 2 && parts[0] == "v1" && parts[1] == "cluster") return route_cluster(req, who, reply);
  const bool instance_path = parts.size() == 8 && parts[0] == "v1" && parts[1] == "environments" && parts[3] == "apps" &&
                             parts[5] == "instances";
  if (!instance_path) return false;
  if (req.method == "POST" && parts[7] == "exec") {
    auto n = ordinal_param(parts[6]);
    if (!n.ok()) return fail(n.error());
    auto body = exec_body(req.body);
    if (!body.ok()) return fail(body.error());
    (void)loop_.audit(who.user, "instance.exec", fmt::format("{}/{}/{}", parts[4], *n, body->first.front()), parts[2],
                      "");
    loop_.exec(parts[2], parts[4], *n, std::move(body->first), body->second,
               [reply = std::move(reply)](Result<runtime::ExecResult> r) {
                 if (!r.ok()) return reply(error_response(r.error()));
                 reply(ok({{"exit_code", r->exit.status_known ? json(r->exit.code) : json(nullptr)},
                           {"signal", r->exit.signal ? json(r->exit.signal) : json(nullptr)},
                           {"description", r->timed_out ? std::string("timed out") : r->exit.description},
                           {"timed_out", r->timed_out}, {"output", r->output}, {"truncated", r->truncated}}));
               });
    return true;
  }
  if (req.method == "GET" && parts[7] == "log") {
    auto n = ordinal_param(parts[6]);
    if (!n.ok()) return fail(n.error());
    auto offset = int_param(query, "offset", -1, std::numeric_limits<std::int64_t>::max());
    if (!offset.ok()) return fail(offset.error());
    // No offset: the last 64 KiB, like tail.
    const std::int64_t from = query_param(query, "offset").empty() ? -(64 << 10) : *offset;
    loop_.logs(parts[2], parts[4], *n, from, 1 << 20, [reply = std::move(reply)](Result<runtime::LogChunk> r) {
      if (!r.ok()) return reply(error_response(r.error()));
      reply(ok({{"text", r->text}, {"offset", r->offset}}));
    });
    return true;
  }
  return false;
}

Response Api::route(const Request& req, const auth::Principal& who) {
  const Target t = parse_target(req.target);  // not a structured binding: lambdas capture these
  const std::vector<std::string>& parts = t.parts;
  const std::string_view query = t.query;
  auto route = [&](std::string_view method, std::initializer_list<std::string_view> pattern) {
    return matches(req.method, parts, method, pattern);
  };

  if (route("GET", {"v1", "health"})) return ok({{"status", "ok"}});
  if (auto r = route_documents(req, who)) return std::move(*r);
  if (auto r = route_rollouts(req, who)) return std::move(*r);
  if (auto r = route_drift(req, who)) return std::move(*r);


  // ---- standard databases ----
  if (parts.size() >= 2 && parts[0] == "v1" && (parts[1] == "standards" || parts[1] == "jobs" ||
                                                (parts.size() == 6 && parts[3] == "databases"))) {
    db::Manager* dbm = loop_.databases();
    if (!dbm) return error_response(unavailable("this daemon has no database manager"));
    auto version_json = [](const db::Version& v) {
      json migrations = json::array();
      for (const auto& m : v.migrations) migrations.push_back(db::to_json(m));
      return json{{"standard", v.standard}, {"version", v.version}, {"engine", v.engine}, {"manifest", v.manifest_id},
                  {"source", v.source}, {"bytes", v.bytes}, {"files", v.files}, {"chunks", v.chunks},
                  {"new_chunks", v.new_chunks}, {"uploaded_bytes", v.uploaded_bytes},
                  {"created_at", nullable_time(v.created_at)}, {"import_ms", v.import_ms}, {"migrations", migrations}};
    };
    auto job_json = [&](const db::Job& j) {
      json out = {{"id", j.id}, {"kind", j.kind}, {"target", j.target}, {"done", j.done.load()},
                  {"phase", j.get_phase()}, {"done_bytes", j.done_bytes.load()}, {"total_bytes", j.total_bytes.load()},
                  {"started_at", nullable_time(j.started_at)}, {"finished_at", nullable_time(j.finished_at)},
                  {"error", j.error.empty() ? json(nullptr) : json(j.error)}};
      if (j.done && j.version) out["version"] = version_json(*j.version);
      if (j.kind == "migrate") {
        json applied = json::array();
        for (const auto& m : j.migrations) applied.push_back(db::to_json(m));
        out["migrations"] = applied;
      }
      return out;
    };
    if (route("GET", {"v1", "standards"})) {
      json list = json::array();
      for (const auto& s : dbm->standards()) {
        json vs = json::array();
        for (const auto& v : dbm->versions(s)) vs.push_back(version_json(v));
        list.push_back({{"standard", s}, {"versions", vs}});
      }
      return ok({{"store", dbm->store().describe()}, {"standards", list}});
    }
    if (route("GET", {"v1", "standards", "*"})) {
      auto vs = dbm->versions(parts[2]);
      if (vs.empty()) return error_response(not_found(fmt::format("no standard '{}' (none imported)", parts[2])));
      json list = json::array();
      for (const auto& v : vs) list.push_back(version_json(v));
      return ok({{"standard", parts[2]}, {"versions", list}});
    }
    if (route("POST", {"v1", "standards", "*", "import"})) {
      json body = json::parse(req.body, nullptr, false);
      const char* shape = "request body: expected {\"from\": \"server\", \"address\": \"HOST:PORT or /socket\", "
                          "\"user\": ..., \"password\": ...} or {\"from\": \"datadir\" | \"dump\", \"path\": ...}";
      if (body.is_discarded() || !body.is_object() || !body.contains("from") || !body["from"].is_string())
        return error_response(invalid(shape));
      for (const char* f : {"address", "user", "password", "path"})
        if (body.contains(f) && !body[f].is_string())
          return error_response(invalid(fmt::format("request body: field '{}' must be a string", f)));
      db::ImportSource src;
      const std::string from = body["from"];
      if (from == "server") {
        src.kind = db::ImportSource::Kind::kServer;
        src.server.address = body.value("address", "");
        src.server.user = body.value("user", "root");
        src.server.password = body.value("password", "");
        if (src.server.address.empty()) return error_response(invalid("request body: 'address' is required with from: server"));
      } else if (from == "datadir" || from == "dump") {
        src.kind = from == "dump" ? db::ImportSource::Kind::kDump : db::ImportSource::Kind::kDatadir;
        src.path = body.value("path", "");
        if (src.path.empty() || src.path.front() != '/')
          return error_response(invalid(fmt::format("request body: 'path' must be an absolute path with from: {}", from)));
      } else {
        return error_response(invalid(fmt::format("request body: 'from' must be server, datadir or dump, not '{}'", from)));
      }
      if (src.kind != db::ImportSource::Kind::kServer) {
        if (auto allowed = importable(src.path); !allowed.ok()) return error_response(allowed.error());
        else src.path = *allowed;
      }
      auto job = dbm->import(parts[2], src);
      if (!job.ok()) return error_response(job.error());
      (void)loop_.audit(who.user, "standard.import", parts[2], "", "from " + from);
      return ok(job_json(**job), 202);
    }
    if (route("POST", {"v1", "standards", "*", "release"})) {
      json body = json::parse(req.body, nullptr, false);
      const char* shape = "request body: expected {\"from\": \"/migrations/dir\" or a repository, \"ref\": \"branch, tag or "
                          "commit\" (with a repository), \"path\": \"its subdirectory\", \"out_of_order\": false}";
      if (body.is_discarded() || !body.is_object() || !body.contains("from") || !body["from"].is_string())
        return error_response(invalid(shape));
      for (const char* f : {"ref", "path"})
        if (body.contains(f) && !body[f].is_string())
          return error_response(invalid(fmt::format("request body: field '{}' must be a string", f)));
      if (body.contains("out_of_order") && !body["out_of_order"].is_boolean())
        return error_response(invalid("request body: field 'out_of_order' must be true or false"));
      db::ReleaseSource src;
      src.path = body["from"];
      src.ref = body.value("ref", "");
      src.subdir = body.value("path", "");
      src.options.out_of_order = body.value("out_of_order", false);
      if (!src.subdir.empty() && (src.subdir.front() == '/' || src.subdir.find("..") != std::string::npos || src.ref.empty()))
        return error_response(invalid(fmt::format(
            "request body: 'path' '{}' is a relative path inside the repository, without '..', and needs a 'ref'", src.subdir)));
      if (!src.ref.empty() && (src.ref.front() == '-' || src.ref.find_first_of(" \t\n") != std::string::npos))
        return error_response(invalid(fmt::format("request body: 'ref' '{}' is not a branch, tag or commit", src.ref)));
      const bool url = src.path.starts_with("https://") || src.path.starts_with("ssh://");
      if (!url) {
        if (src.path.empty() || src.path.front() != '/')
          return error_response(invalid("request body: 'from' must be an absolute path, or an https:// or ssh:// repository"));
        if (auto allowed = importable(src.path); !allowed.ok()) return error_response(allowed.error());
        else src.path = *allowed;
      } else if (src.ref.empty()) {
        return error_response(invalid("request body: a repository needs a 'ref' (the branch the DBAs release to)"));
      }
      auto job = dbm->release(parts[2], src);
      if (!job.ok()) return error_response(job.error());
      (void)loop_.audit(who.user, "standard.release", parts[2], "",
                        "from " + src.path + (src.ref.empty() ? "" : "@" + src.ref));
      return ok(job_json(**job), 202);
    }
    if (route("DELETE", {"v1", "standards", "*", "versions", "*"})) {
      int n = 0;
      auto [p, ec] = std::from_chars(parts[4].data(), parts[4].data() + parts[4].size(), n);
      if (ec != std::errc() || p != parts[4].data() + parts[4].size() || n < 1)
        return error_response(invalid(fmt::format("version '{}' must be a number from 1", parts[4])));
      if (auto st = dbm->remove(parts[2], n); !st.ok()) return error_response(st.error());
      (void)loop_.audit(who.user, "standard.remove", fmt::format("{}@{}", parts[2], n), "", "");
      return ok({{"standard", parts[2]}, {"removed", n}});
    }
    if (route("GET", {"v1", "jobs", "*"})) {
      auto j = dbm->job(parts[2]);
      if (!j) return error_response(not_found(fmt::format("no job '{}'", parts[2])));
      return ok(job_json(*j));
    }
    if (route("POST", {"v1", "environments", "*", "databases", "*", "migrate"})) {
      // The files themselves, not a path: the daemon reads nothing of a developer's on its host.
      const char* expected = "request body: expected {\"files\": [{\"file\": \"V1__name.sql\", \"sql\": \"...\"}, ...], \"out_of_order\": false}";
      json body = json::parse(req.body, nullptr, false);
      if (body.is_discarded() || !body.is_object() || !body.contains("files") || !body["files"].is_array() ||
          body["files"].size() > 10'000)
        return error_response(invalid(expected));
      db::ReleaseOptions o;
      if (body.contains("out_of_order")) {
        if (!body["out_of_order"].is_boolean()) return error_response(invalid("request body: field 'out_of_order' must be true or false"));
        o.out_of_order = body["out_of_order"].get<bool>();
      }
      std::vector<db::Migration> files;
      for (std::size_t i = 0; i < body["files"].size(); ++i) {
        const json& f = body["files"][i];
        if (!f.is_object() || !f.contains("file") || !f["file"].is_string() || !f.contains("sql") || !f["sql"].is_string())
          return error_response(invalid(fmt::format("request body: files[{}]: expected {{\"file\": \"V1__name.sql\", \"sql\": \"...\"}}", i)));
        const std::string name = f["file"].get<std::string>();
        if (name.find('/') != std::string::npos) return error_response(invalid(fmt::format("request body: files[{}]: '{}' is a file name, not a path", i, name)));
        auto m = db::migration_from_text(name, f["sql"].get<std::string>());
        if (!m.ok()) return error_response(m.error().wrap(fmt::format("request body: files[{}]", i)));
        if (*m) files.push_back(std::move(**m));
      }
      if (files.empty()) return error_response(invalid("request body: no .sql file among the files given"));
      const std::size_t n = files.size();
      auto job = loop_.migrate_database(parts[2], parts[4], std::move(files), o);
      if (!job.ok()) return error_response(job.error());
      (void)loop_.audit(who.user, "db.migrate", parts[4], parts[2], fmt::format("{} file(s) given; job {}", n, (*job)->id));
      return ok(job_json(**job), 202);
    }
    if (route("POST", {"v1", "environments", "*", "databases", "*", "reset"})) {
      auto v = int_param(query, "version", 0, 1'000'000);
      if (!v.ok()) return error_response(v.error());
      auto before = loop_.last_event_id();
      if (!before.ok()) return error_response(before.error());
      if (auto st = loop_.reset_database(parts[2], parts[4], static_cast<int>(*v)); !st.ok()) return error_response(st.error());
      (void)loop_.audit(who.user, "db.reset", parts[4], parts[2], *v ? fmt::format("version {}", *v) : "latest version");
      return ok({{"environment", parts[2]}, {"database", parts[4]}, {"reset", true}, {"events_after", *before}}, 202);
    }
  }

  if (options_.advance_clock && route("POST", {"v1", "test", "clock"})) {
    json body = json::parse(req.body, nullptr, false);
    auto by = body.is_object() && body.contains("advance") && body["advance"].is_string()
                  ? parse_duration(body["advance"].get<std::string>())
                  : std::nullopt;
    if (!by || *by < 0) return error_response(invalid("request body: expected {\"advance\": \"2h\"} (a duration ≥ 0)"));
    options_.advance_clock(*by);
    loop_.clock_moved();
    (void)loop_.audit(who.user, "test.clock", "clock", "", "advanced " + format_duration(*by));
    return ok({{"advanced_ms", *by}});
  }

  if (route("POST", {"v1", "reconcile"})) {
    const auto before = loop_.last_pass();  // the last scheduled pass, before this full one
    std::int64_t micros = loop_.reconcile_now();
    return ok({{"reconcile_us", micros}, {"passes", loop_.reconcile_count()},
               {"last_pass", {{"us", before.micros}, {"environments", before.envs}, {"full", before.full}}}});
  }

  if (route("GET", {"v1", "catalog"})) {
    const auto* c = loop_.catalog();
    if (!c) return error_response(not_found("no catalog applied yet"));
    return ok({{"filename", c->filename()}, {"text", model::mask_secrets(c->text())}});
  }

  if (route("POST", {"v1", "environments", "*", "up"})) {
    auto before = loop_.last_event_id();
    if (!before.ok()) return error_response(before.error());
    if (auto st = loop_.up(parts[2]); !st.ok()) return error_response(st.error());
    (void)loop_.audit(who.user, "env.up", parts[2], parts[2], "");
    return ok({{"environment", parts[2]}, {"up", true}, {"events_after", *before}}, 202);
  }

  if (route("POST", {"v1", "environments", "*", "down"})) {
    auto before = loop_.last_event_id();
    if (!before.ok()) return error_response(before.error());
    const bool force = flag_param(query, "force");
    if (auto st = loop_.down(parts[2], force); !st.ok()) return error_response(st.error());
    (void)loop_.audit(who.user, "env.down", parts[2], parts[2], force ? "forced" : "");
    return ok({{"environment", parts[2]}, {"up", false}, {"events_after", *before}}, 202);
  }

  if (route("POST", {"v1", "environments", "*", "restart"})) {
    auto before = loop_.last_event_id();
    if (!before.ok()) return error_response(before.error());
    const std::string app = query_param(query, "app");
    if (auto st = loop_.restart(parts[2], app, who.user); !st.ok()) return error_response(st.error());
    (void)loop_.audit(who.user, "env.restart", app.empty() ? parts[2] : app, parts[2], "");
    return ok({{"environment", parts[2]}, {"events_after", *before}}, 202);
  }

  if (route("POST", {"v1", "environments", "*", "refresh"})) {
    auto before = loop_.last_event_id();
    if (!before.ok()) return error_response(before.error());
    if (auto st = loop_.refresh(parts[2]); !st.ok()) return error_response(st.error());
    (void)loop_.audit(who.user, "env.refresh", parts[2], parts[2], "");
    return ok({{"environment", parts[2]}, {"events_after", *before}}, 202);
  }

  if (route("GET", {"v1", "builds"})) {
    json list = json::array();
    if (const auto* b = loop_.builder())
      for (const auto* x : b->builds())
        list.push_back({{"id", x->id}, {"repo", x->request.repo}, {"commit", x->request.commit},
                        {"build_type", x->request.build_type}, {"command", x->request.command},
                        {"state", std::string(build::to_string(x->state))},
                        {"queued_at", rfc3339_ms(x->queued_at)},
                        {"started_at", x->started_at ? json(rfc3339_ms(x->started_at)) : json(nullptr)},
                        {"duration_ms", x->finished_at ? json(x->finished_at - x->started_at) : json(nullptr)},
                        {"artifact", x->artifact_path}, {"artifact_bytes", x->artifact_bytes}, {"error", x->error}});
    return ok(list);
  }

  if (route("GET", {"v1", "builds", "*", "log"})) {
    const auto* b = loop_.builder() ? loop_.builder()->find(parts[2]) : nullptr;
    if (!b) return error_response(not_found(fmt::format("no build '{}'", parts[2])));
    auto offset = int_param(query, "offset", 0, std::numeric_limits<std::int64_t>::max());
    if (!offset.ok()) return error_response(offset.error());
    std::ifstream in(b->log_path, std::ios::binary);
    std::string text;
    if (in) {
      in.seekg(*offset);
      text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      if (text.size() > (1u << 20)) text.resize(1u << 20);
    }
    bool done = b->state == build::State::kSucceeded || b->state == build::State::kFailed;
    return ok({{"text", text}, {"offset", *offset + static_cast<std::int64_t>(text.size())}, {"done", done},
               {"state", std::string(build::to_string(b->state))}});
  }

  // Events as they happen: text/event-stream, one `id:` and `data:` (the event object) each;
  // with `after`, first the stored ones after it (so a client that reconnects misses none).
  if (route("GET", {"v1", "events", "stream"})) {
    const std::string env = query_param(query, "env");
    auto after = int_param(query, "after", 0, std::numeric_limits<std::int64_t>::max());
    if (!after.ok()) return error_response(after.error());
    if (!env.empty() && loop_.catalog() && !loop_.catalog()->find(env))
      if (auto known = loop_.events(env, 0, 1); !known.ok() || known->empty())
        return error_response(not_found(fmt::format("no environment '{}'", env)));
    Response r;
    r.stream = [this, env, after = *after](Response::Send send) -> std::function<void()> {
      auto frame = [](const store::Event& e) { return fmt::format("id: {}\ndata: {}\n\n", e.id, dump(to_json(e))); };
      std::int64_t last = after;
      if (!env.empty() && after > 0)
        while (true) {
          auto backlog = loop_.events(env, last, 1000);
          if (!backlog.ok() || backlog->empty()) break;
          for (const auto& e : *backlog) {
            if (!send(frame(e))) return [] {};
            last = e.id;
          }
        }
      auto sub = loop_.subscribe([send, env, last, frame](const store::Event& e) {
        if ((env.empty() || e.env == env) && e.id > last) send(frame(e));
      });
      return [this, sub] { loop_.unsubscribe(sub); };
    };
    return r;
  }

  if (route("GET", {"v1", "environments", "*", "events"})) {
    auto after = int_param(query, "after", 0, std::numeric_limits<std::int64_t>::max());
    if (!after.ok()) return error_response(after.error());
    auto limit = int_param(query, "limit", 1000, 100000);
    if (!limit.ok()) return error_response(limit.error());
    auto events = loop_.events(parts[2], *after, static_cast<int>(*limit));
    if (!events.ok()) return error_response(events.error());
    // An environment that is not in the catalog and never was: say so (a deleted one keeps its
    // history).
    if (events->empty() && *after == 0 && loop_.catalog() && !loop_.catalog()->find(parts[2])) {
      std::vector<std::string> names;
      for (const auto& e : loop_.catalog()->environments()) names.push_back(e.name);
      auto hint = closest(parts[2], names);
      return error_response(not_found(fmt::format("no environment '{}'{}", parts[2],
                                                  hint ? fmt::format(" (did you mean '{}'?)", *hint) : "")));
    }
    json list = json::array();
    for (const auto& e : *events) list.push_back(to_json(e));
    return ok(list);
  }

  if (route("GET", {"v1", "environments", "*", "config"})) {
    const auto* c = loop_.catalog();
    if (!c) return error_response(not_found("no catalog applied yet"));
    const auto* env = c->find(parts[2]);
    if (!env) return error_response(not_found(fmt::format("no environment '{}'", parts[2])));
    std::string only = query_param(query, "app");
    auto status = loop_.status(env->name);
    json apps = json::array();
    for (const auto& a : env->apps) {
      if (!only.empty() && a.app != only) continue;
      json settings = json::array();
      for (const auto& [k, v] : a.values)
        settings.push_back({{"setting", k}, {"value", a.is_secret_setting(k) ? std::string(model::kSecretMask) : v},
                            {"from", a.from.at(k)}});
      // For apps built from source, what the tag resolved to and the build: facts of the run,
      // not settings, so their "from" says where they come from.
      if (status.ok())
        for (const auto& st : status->apps)
          if (st.app == a.app && !st.build_state.empty()) {
            settings.push_back({{"setting", "commit"},
                                {"value", st.commit.empty() ? "(resolving)" : st.tag + " → " + st.commit.substr(0, 7)},
                                {"from", "git ls-remote of source.repo"}});
            settings.push_back({{"setting", "build"},
                                {"value", st.build_ms ? fmt::format("{} in {}", st.build_state, format_duration(st.build_ms))
                                                      : st.build_state},
                                {"from", "build " + st.build_id}});
          }
      apps.push_back({{"app", a.app}, {"settings", settings}});
    }
    if (!only.empty() && apps.empty()) {
      std::vector<std::string> names;
      for (const auto& a : env->apps) names.push_back(a.app);
      auto hint = closest(only, names);
      return error_response(not_found(fmt::format("no app '{}' in environment '{}'{}", only, parts[2],
                                                  hint ? fmt::format(" (did you mean '{}'?)", *hint) : "")));
    }
    return ok({{"environment", env->name}, {"base", env->base.empty() ? json(nullptr) : json(env->base)}, {"apps", apps}});
  }

  return error_response(not_found(fmt::format("no route {} {}", req.method, req.target.substr(0, req.target.find('?')))));
}

}  // namespace berth::api
