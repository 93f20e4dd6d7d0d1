// A standard's rollouts (db/rollout.h): GET shows the latest as a table of its copies, POST
// starts one. Read by anyone; started by admins (authorize() gave every write under
// /v1/standards to admins). Answered on the loop.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "api/handlers.h"
#include "api/util.h"

namespace berth::api {
using nlohmann::json;
using namespace detail;

namespace {

json rollout_json(const db::Rollout& r) {
  json rows = json::array();
  for (const auto& w : r.rows)
    rows.push_back({{"environment", w.env}, {"database", w.db}, {"from", w.from}, {"to", w.to},
                    {"state", std::string(db::to_string(w.state))}, {"phase", w.phase},
                    {"error", w.error.empty() ? json(nullptr) : json(w.error)}, {"canary", w.canary},
                    {"started_at", nullable_time(w.started_at)}, {"finished_at", nullable_time(w.finished_at)},
                    {"ms", w.started_at && w.finished_at ? json(w.finished_at - w.started_at) : json(nullptr)}});
  return {{"standard", r.standard}, {"to", r.to}, {"state", std::string(db::to_string(r.state))},
          {"started_at", nullable_time(r.started_at)}, {"finished_at", nullable_time(r.finished_at)},
          {"parallel", r.options.parallel}, {"canary", r.options.canary},
          {"continue_on_error", r.options.continue_on_error}, {"unsafe_no_snapshot", r.options.unsafe_no_snapshot},
          {"rows", rows}};
}

}  // namespace

std::optional<Response> Api::route_rollouts(const Request& req, const auth::Principal& who) {
  const Target t = parse_target(req.target);
  const std::vector<std::string>& parts = t.parts;
  if (parts.size() != 4 || parts[0] != "v1" || parts[1] != "standards" || parts[3] != "rollout") return std::nullopt;
  db::Manager* dbm = loop_.databases();
  if (!dbm) return error_response(unavailable("this daemon has no database manager"));
  const std::string& standard = parts[2];
  if (req.method == "GET") {
    const db::Rollout* r = dbm->rollout_of(standard);
    if (!r) return error_response(not_found(fmt::format("standard '{}' has had no rollout (berth db rollout {})", standard, standard)));
    return ok(rollout_json(*r));
  }
  if (req.method != "POST") return error_response(invalid(fmt::format("{} /v1/standards/NAME/rollout: use GET or POST", req.method)));
  json body = req.body.empty() ? json::object() : json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object())
    return error_response(invalid("request body: expected {\"version\": N (default: the latest), \"parallel\": 2, \"canary\": "
                                  "[\"env\", ...], \"continue_on_error\": false, \"unsafe_no_snapshot\": false}"));
  db::RolloutOptions o;
  int version = 0;
  for (const auto& [field, target, low, high] :
       {std::tuple{"version", &version, 1, 1'000'000}, std::tuple{"parallel", &o.parallel, 1, 64}})
    if (body.contains(field)) {
      if (!body[field].is_number_integer() || body[field].get<std::int64_t>() < low || body[field].get<std::int64_t>() > high)
        return error_response(invalid(fmt::format("request body: field '{}' must be a whole number from {} to {}", field, low, high)));
      *target = body[field].get<int>();
    }
  for (const auto& [field, target] : {std::pair{"continue_on_error", &o.continue_on_error}, std::pair{"unsafe_no_snapshot", &o.unsafe_no_snapshot}})
    if (body.contains(field)) {
      if (!body[field].is_boolean()) return error_response(invalid(fmt::format("request body: field '{}' must be true or false", field)));
      *target = body[field].get<bool>();
    }
  if (body.contains("canary")) {
    bool good = body["canary"].is_array() && body["canary"].size() <= 1000;
    if (good)
      for (const auto& e : body["canary"]) good = good && e.is_string();
    if (!good) return error_response(invalid("request body: field 'canary' must be a list of environment names"));
    o.canary = body["canary"].get<std::vector<std::string>>();
  }
  auto r = loop_.rollout_database(standard, version, o);
  if (!r.ok()) return error_response(r.error());
  (void)loop_.audit(who.user, "standard.rollout", fmt::format("{}@{}", standard, (*r)->to), "",
                    fmt::format("parallel {}{}{}{}", o.parallel, o.canary.empty() ? "" : ", canary " + fmt::format("{}", fmt::join(o.canary, ",")),
                                o.continue_on_error ? ", continue on error" : "", o.unsafe_no_snapshot ? ", no snapshot" : ""));
  return ok(rollout_json(**r), 202);
}

}  // namespace berth::api
