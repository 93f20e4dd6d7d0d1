// The cluster's routes (berth serve --cluster-host): read by anyone, changed by admins
// (authorize() gave every write to admins).
#include <fmt/format.h>

#include "api/handlers.h"
#include "api/util.h"

namespace berth::api {
using nlohmann::json;
using namespace detail;

bool Api::route_cluster(const Request& req, const auth::Principal& who, Reply& reply) {
  const Target t = parse_target(req.target);
  const std::vector<std::string>& parts = t.parts;
  const std::string_view query = t.query;
  auto fail = [&](const Error& e) {
    reply(error_response(e));
    return true;
  };
  if (!options_.cluster_hosts) return fail(not_found("this daemon runs no cluster (berth serve --cluster-host)"));
  if (req.method == "GET" && parts.size() == 2) {
    reply(ok({{"hosts", options_.cluster_hosts()}}));
    return true;
  }
  if (req.method == "POST" && parts.size() == 5 && parts[2] == "hosts" && (parts[4] == "drain" || parts[4] == "undrain")) {
    const bool drain = parts[4] == "drain";
    (void)loop_.audit(who.user, drain ? "cluster.drain" : "cluster.undrain", parts[3], "", "");
    options_.cluster_drain(parts[3], drain, [this, reply = std::move(reply)](Status st) {
      if (!st.ok()) return reply(error_response(st.error()));
      reply(ok({{"hosts", options_.cluster_hosts()}}));
    });
    return true;
  }
  if (req.method == "POST" && parts.size() == 3 && parts[2] == "hosts") {
    json body = json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object())
      return fail(invalid("request body: expected a JSON object {\"endpoint\": ..., \"advertise\": ..., \"labels\": {...}}"));
    Options::ClusterHost host;
    if (!body.contains("endpoint") || !body["endpoint"].is_string() || body["endpoint"].get<std::string>().empty())
      return fail(invalid("request body: field 'endpoint' (the host's Engine API, like unix:///run/host-2/docker.sock) "
                          "must be a non-empty string"));
    host.endpoint = body["endpoint"].get<std::string>();
    if (body.contains("advertise")) {
      if (!body["advertise"].is_string()) return fail(invalid("request body: field 'advertise' must be a string (an address)"));
      host.advertise = body["advertise"].get<std::string>();
    }
    if (body.contains("labels")) {
      if (!body["labels"].is_object()) return fail(invalid("request body: field 'labels' must be an object of strings"));
      for (const auto& [k, v] : body["labels"].items()) {
        if (!v.is_string()) return fail(invalid(fmt::format("request body: labels.{}: must be a string", k)));
        host.labels[k] = v.get<std::string>();
      }
    }
    (void)loop_.audit(who.user, "cluster.add", host.endpoint, "", "");
    options_.cluster_add(std::move(host), [this, reply = std::move(reply)](Result<json> added) {
      if (!added.ok()) return reply(error_response(added.error()));
      Response r = ok({{"host", *added}, {"hosts", options_.cluster_hosts()}});
      r.status = 201;
      reply(std::move(r));
    });
    return true;
  }
  if (req.method == "DELETE" && parts.size() == 4 && parts[2] == "hosts") {
    const std::string force_text = query_param(query, "force");
    const bool force = force_text == "1" || force_text == "true";
    (void)loop_.audit(who.user, force ? "cluster.remove-forced" : "cluster.remove", parts[3], "", "");
    options_.cluster_remove(parts[3], force, [this, reply = std::move(reply)](Status st) {
      if (!st.ok()) return reply(error_response(st.error()));
      Response r = ok({{"hosts", options_.cluster_hosts()}});
      r.status = 202;
      reply(std::move(r));
    });
    return true;
  }
  return fail(not_found(fmt::format("{} {}: the cluster's routes are GET /v1/cluster, POST /v1/cluster/hosts, "
                                    "DELETE /v1/cluster/hosts/HOST[?force=1] and POST /v1/cluster/hosts/HOST/drain|undrain",
                                    req.method, req.target.substr(0, 200))));
}

}  // namespace berth::api
