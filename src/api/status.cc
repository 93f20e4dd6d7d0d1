// Status routes, answered from the control loop's read model (control/read_model.h): GET
// /v1/environments (all, a page, or the summary form) and GET /v1/environments/NAME. A view is
// rendered to JSON once; its text is kept under the view's generation and reused until the loop
// publishes a newer view of that environment.
#include <fmt/format.h>

#include "api/handlers.h"
#include "api/util.h"
#include "base/gzip.h"
#include "base/text.h"

namespace berth::api {
using nlohmann::json;
using namespace detail;

namespace {

// The summary form of an environment (GET /v1/environments?summary=1): counts, no instances.
json summary_json(const control::EnvSummary& s) {
  return {{"environment", s.env}, {"base", s.base.empty() ? json(nullptr) : json(s.base)}, {"up", s.up},
          {"ready", s.ready}, {"updating", s.updating}, {"apps", s.apps}, {"instances", s.instances},
          {"running_instances", s.running_instances}, {"ready_instances", s.ready_instances}};
}

}  // namespace

json to_json(const control::EnvStatus& s) {
  json apps = json::array();
  for (const auto& a : s.apps) {
    json instances = json::array();
    for (const auto& i : a.instances)
      instances.push_back({{"ordinal", i.ordinal}, {"ip", i.ip}, {"dns", i.dns}, {"state", i.state},
                           {"runtime", i.runtime}, {"detail", i.detail.empty() ? json(nullptr) : json(i.detail)},
                           {"pid", i.pid ? json(i.pid) : json(nullptr)}, {"restarts", i.restarts},
                           {"ready_at", nullable_time(i.ready_at)}, {"message", i.message}, {"health", i.health}});
    json deps = json::array();
    for (const auto& d : a.depends_on) deps.push_back({{"app", d.app}, {"soft", d.soft}});
    json app = {{"app", a.app}, {"runs_in", a.runs_in}, {"tag", a.tag}, {"build_type", a.build_type}, {"from", a.from ? json(*a.from) : json::object()},
                {"depends_on", deps}, {"ports", a.ports},
                {"state", a.state}, {"message", a.message}, {"waiting_for", a.waiting_for}, {"instances", instances}};
    if (!a.build_state.empty())
      app["build"] = {{"commit", a.commit.empty() ? json(nullptr) : json(a.commit)}, {"id", a.build_id},
                      {"state", a.build_state}, {"duration_ms", a.build_ms ? json(a.build_ms) : json(nullptr)},
                      {"error", a.build_error}, {"resolving", a.resolving}};
    if (!a.standard.empty())
      app["database"] = {{"standard", a.standard},
                         {"version", a.copy_version ? json(a.copy_version) : json(nullptr)},
                         {"pending_migrations", a.copy_pending},
                         {"own_migrations", a.copy_own},
                         {"drift", a.copy_drift >= 0 ? json(a.copy_drift) : json(nullptr)},
                         {"drift_checked_at", nullable_time(a.copy_drift_checked_at)},
                         {"copy_method", a.copy_method.empty() ? json(nullptr) : json(a.copy_method)},
                         {"copy_ms", a.copy_version ? json(a.copy_ms) : json(nullptr)},
                         {"datadir", a.datadir.empty() ? json(nullptr) : json(a.datadir)}};
    apps.push_back(std::move(app));
  }
  return {{"environment", s.env}, {"base", s.base.empty() ? json(nullptr) : json(s.base)}, {"up", s.up},
          {"ready", s.ready}, {"updating", s.updating}, {"notes", s.notes}, {"apps", apps}};
}


bool Api::is_status_read(const Request& req) {
  if (req.method != "GET") return false;
  const Target t = parse_target(req.target);
  return (t.parts.size() == 2 || t.parts.size() == 3) && t.parts[0] == "v1" && t.parts[1] == "environments";
}

std::string Api::environment_action(const Request& req) {
  if (req.method != "POST") return "";
  const Target t = parse_target(req.target);
  if (t.parts.size() != 4 || t.parts[0] != "v1" || t.parts[1] != "environments") return "";
  const std::string& action = t.parts[3];
  return action == "up" || action == "down" || action == "restart" || action == "refresh" ? t.parts[2] : "";
}

const std::string& Api::rendered(const control::EnvView& view, bool summary, bool gz) {
  Rendered& r = rendered_[view.status.env];
  if (r.generation != view.generation) r = {view.generation, "", "", ""};
  std::string& text = summary ? r.summary : r.body;
  if (text.empty()) text = summary ? dump(summary_json(view.summary)) : dump(to_json(view.status));
  if (!gz || summary) return text;
  if (r.body_gz.empty())
    if (auto z = gzip(text); z.ok()) r.body_gz = std::move(z.value());
  return r.body_gz;
}

Response Api::route_status(const Request& req) {
  const Target t = parse_target(req.target);
  const std::string_view query = t.query;
  const auto snap = loop_.read_model().current();
  // Views of environments no longer in the catalog: forgotten once they are many.
  if (rendered_.size() > snap->envs.size() + 64)
    std::erase_if(rendered_, [&](const auto& kv) { return snap->find(kv.first) == nullptr; });

  if (t.parts.size() == 3) {
    if (!snap->has_catalog) return error_response(not_found("no catalog applied yet: run `berth apply -f berth.yaml` first"));
    const control::EnvView* v = snap->find(t.parts[2]);
    if (!v) {
      auto hint = closest(t.parts[2], snap->names());
      return error_response(not_found(fmt::format("no environment '{}'{}", t.parts[2],
                                                  hint ? fmt::format(" (did you mean '{}'?)", *hint) : "")));
    }
    // An environment's status is about 1 KB per app, mostly the same provenance again and again:
    // gzipped (once per view) to a fifteenth for whoever accepts it, which is every browser.
    Response r;
    if (accepts_gzip(req.accept_encoding))
      if (const std::string& zipped = rendered(*v, false, true); !zipped.empty()) {
        r.body = zipped;
        r.content_encoding = "gzip";
        return r;
      }
    r.body = rendered(*v);
    return r;
  }

  // Without `limit`: every environment, as a list. With it: a page and where to go on.
  const bool summary = flag_param(query, "summary");
  const bool paged = !query_param(query, "limit").empty();
  auto limit = int_param(query, "limit", 1, 1000);
  if (!limit.ok()) return error_response(limit.error());
  if (*limit < 1) return error_response(invalid("limit must be from 1 to 1000"));
  std::string next;
  const auto page = snap->page(query_param(query, "after"), paged ? static_cast<std::size_t>(*limit) : 0, &next);
  // The list is the views' texts joined: nothing rendered again.
  std::string list = "[";
  for (const auto* v : page) {
    if (list.size() > 1) list += ',';
    list += rendered(*v, summary);
  }
  list += ']';
  Response r;
  r.body = paged ? fmt::format(R"({{"environments":{},"next":{}}})", list, next.empty() ? "null" : dump(json(next)))
                 : std::move(list);
  return r;
}

}  // namespace berth::api
