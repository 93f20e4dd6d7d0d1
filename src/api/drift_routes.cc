// Drift checks (db/drift.h): POST /v1/drift checks every environment's copies (admins),
// POST /v1/environments/ENV/drift one environment's (its owner and editors: authorize());
// GET /v1/drift[?env=ENV] shows the latest check, copy by copy, with each difference. Answered
// on the loop.
#include <fmt/format.h>

#include "api/handlers.h"
#include "api/util.h"

namespace berth::api {
using nlohmann::json;
using namespace detail;

namespace {

json drift_json(const db::DriftCheck& c, std::string_view env) {
  json rows = json::array();
  for (const auto& r : c.rows) {
    if (!env.empty() && r.env != env) continue;
    json diffs = json::array();
    for (const auto& d : r.differences)
      diffs.push_back({{"object", d.object}, {"kind", d.kind}, {"what", std::string(db::to_string(d.what))},
                       {"only_standard", d.only_expected}, {"only_copy", d.only_actual}});
    rows.push_back({{"environment", r.env}, {"database", r.db}, {"standard", r.standard}, {"version", r.version},
                    {"state", std::string(db::to_string(r.state))}, {"error", r.error.empty() ? json(nullptr) : json(r.error)},
                    {"live", r.live}, {"checked_at", nullable_time(r.checked_at)}, {"ms", r.took_ms},
                    {"drift", r.state == db::DriftResult::State::kChecked ? json(r.differences.size()) : json(nullptr)},
                    {"differences", diffs}});
  }
  return {{"id", c.id}, {"state", c.done ? "done" : "running"}, {"started_at", nullable_time(c.started_at)},
          {"finished_at", nullable_time(c.finished_at)}, {"rows", rows}};
}

}  // namespace

std::optional<Response> Api::route_drift(const Request& req, const auth::Principal& who) {
  const Target t = parse_target(req.target);
  const std::vector<std::string>& p = t.parts;
  const bool fleet = p.size() == 2 && p[0] == "v1" && p[1] == "drift";
  const bool one = p.size() == 4 && p[0] == "v1" && p[1] == "environments" && p[3] == "drift";
  if (!fleet && !one) return std::nullopt;
  db::Manager* dbm = loop_.databases();
  if (!dbm) return error_response(unavailable("this daemon has no database manager"));
  if (fleet && req.method == "GET") {
    const db::DriftCheck* c = dbm->drift_check();
    if (!c) return error_response(not_found("no drift check since the daemon started (berth db drift)"));
    return ok(drift_json(*c, query_param(t.query, "env")));
  }
  if (req.method != "POST")
    return error_response(invalid(fmt::format("{} {}: use POST (GET /v1/drift shows the latest check)", req.method,
                                              fleet ? "/v1/drift" : "/v1/environments/ENV/drift")));
  const std::string env = one ? p[2] : "";
  auto c = loop_.check_database_drift(env);
  if (!c.ok()) return error_response(c.error());
  (void)loop_.audit(who.user, "drift.check", env.empty() ? "*" : env, env, fmt::format("check {}", (*c)->id));
  return ok(drift_json(**c, env), 202);
}

}  // namespace berth::api
