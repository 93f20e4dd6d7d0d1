#include "cluster/cluster.h"

#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace berth::cluster {

namespace {

using nlohmann::json;

// Reading a document dockerd sent: every field checked for its type, a wrong one named by its
// path ("node 2: Status.State"), an absent optional one left at its default.
class Reader {
 public:
  Reader(const json& doc, std::string where) : doc_(doc), where_(std::move(where)) {}

  // The value at a dotted path, or nullptr when a part of it is absent or null.
  const json* at(std::string_view path) const {
    const json* v = &doc_;
    while (!path.empty()) {
      const auto dot = path.find('.');
      const std::string key(path.substr(0, dot));
      if (!v->is_object()) return nullptr;
      auto it = v->find(key);
      if (it == v->end() || it->is_null()) return nullptr;
      v = &*it;
      path = dot == std::string_view::npos ? std::string_view() : path.substr(dot + 1);
    }
    return v;
  }

  bool str(std::string_view path, std::string* out, bool required = false) {
    const json* v = at(path);
    if (!v) return !required || fail(path, "is missing");
    if (!v->is_string()) return fail(path, "is not a string");
    *out = v->get<std::string>();
    return true;
  }
  template <typename Int>
  bool integer(std::string_view path, Int* out) {
    const json* v = at(path);
    if (!v) return true;
    if (!v->is_number_integer()) return fail(path, "is not an integer");
    if (v->is_number_unsigned()) {
      const auto u = v->get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(std::numeric_limits<Int>::max())) return fail(path, "is out of range");
      *out = static_cast<Int>(u);
    } else {
      const auto i = v->get<std::int64_t>();
      if (i < static_cast<std::int64_t>(std::numeric_limits<Int>::min()) ||
          (i > 0 && static_cast<std::uint64_t>(i) > static_cast<std::uint64_t>(std::numeric_limits<Int>::max())))
        return fail(path, "is out of range");
      *out = static_cast<Int>(i);
    }
    return true;
  }
  bool boolean(std::string_view path, bool* out) {
    const json* v = at(path);
    if (!v) return true;
    if (!v->is_boolean()) return fail(path, "is not a boolean");
    *out = v->get<bool>();
    return true;
  }
  bool labels(std::string_view path, std::map<std::string, std::string>* out) {
    const json* v = at(path);
    if (!v) return true;
    if (!v->is_object()) return fail(path, "is not an object");
    for (const auto& [k, val] : v->items()) {
      if (!val.is_string()) return fail(fmt::format("{}.{}", path, k), "is not a string");
      (*out)[k] = val.get<std::string>();
    }
    return true;
  }

  bool ok() const { return error_.empty(); }
  Error error() const { return invalid(error_); }

 private:
  bool fail(std::string_view path, std::string_view what) {
    if (error_.empty()) error_ = fmt::format("{}: {} {}", where_, path, what);
    return false;
  }

  const json& doc_;
  std::string where_;
  std::string error_;
};

Result<json> parse_json(std::string_view text, std::string_view what) {
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return invalid(fmt::format("{}: the answer is not JSON", what));
  return doc;
}

}  // namespace

Result<std::vector<Node>> parse_nodes(std::string_view text) {
  auto doc = parse_json(text, "GET /nodes");
  if (!doc.ok()) return doc.error();
  if (!doc->is_array()) return invalid("GET /nodes: the answer is not a list of nodes");
  std::vector<Node> nodes;
  nodes.reserve(doc->size());
  for (std::size_t i = 0; i < doc->size(); ++i) {
    Reader r((*doc)[i], fmt::format("GET /nodes: node {}", i + 1));
    Node n;
    r.str("ID", &n.id, true) && r.integer("Version.Index", &n.version) && r.str("Spec.Role", &n.role) &&
        r.str("Spec.Availability", &n.availability) && r.labels("Spec.Labels", &n.labels) &&
        r.str("Description.Hostname", &n.hostname) && r.integer("Description.Resources.NanoCPUs", &n.nano_cpus) &&
        r.integer("Description.Resources.MemoryBytes", &n.memory_bytes) &&
        r.str("Description.Engine.EngineVersion", &n.engine_version) && r.str("Status.State", &n.state, true) &&
        r.str("Status.Message", &n.message) && r.str("Status.Addr", &n.addr) && r.boolean("ManagerStatus.Leader", &n.leader);
    if (!r.ok()) return r.error();
    if (n.id.empty()) return invalid(fmt::format("GET /nodes: node {}: ID is empty", i + 1));
    nodes.push_back(std::move(n));
  }
  return nodes;
}

Result<LocalInfo> parse_info(std::string_view text) {
  auto doc = parse_json(text, "GET /info");
  if (!doc.ok()) return doc.error();
  if (!doc->is_object()) return invalid("GET /info: the answer is not an object");
  Reader r(*doc, "GET /info");
  LocalInfo info;
  r.str("Name", &info.hostname) && r.str("ServerVersion", &info.engine_version) && r.integer("NCPU", &info.cpus) &&
      r.integer("MemTotal", &info.memory_bytes) && r.str("Swarm.LocalNodeState", &info.swarm_state) &&
      r.str("Swarm.NodeID", &info.node_id) && r.str("Swarm.NodeAddr", &info.node_addr) &&
      r.boolean("Swarm.ControlAvailable", &info.manager) && r.str("Swarm.Cluster.ID", &info.cluster_id);
  if (!r.ok()) return r.error();
  if (const json* managers = r.at("Swarm.RemoteManagers")) {
    if (!managers->is_array()) return invalid("GET /info: Swarm.RemoteManagers is not a list");
    for (std::size_t i = 0; i < managers->size(); ++i) {
      Reader m((*managers)[i], fmt::format("GET /info: Swarm.RemoteManagers[{}]", i));
      std::string addr;
      if (!m.str("Addr", &addr, true)) return m.error();
      info.managers.push_back(std::move(addr));
    }
  }
  if (info.swarm_state.empty()) info.swarm_state = "inactive";
  return info;
}

Result<SwarmInfo> parse_swarm(std::string_view text) {
  auto doc = parse_json(text, "GET /swarm");
  if (!doc.ok()) return doc.error();
  if (!doc->is_object()) return invalid("GET /swarm: the answer is not an object");
  Reader r(*doc, "GET /swarm");
  SwarmInfo s;
  std::int64_t heartbeat_ns = 0;
  r.str("ID", &s.id, true) && r.integer("Version.Index", &s.version) && r.str("JoinTokens.Worker", &s.worker_token) &&
      r.str("JoinTokens.Manager", &s.manager_token) && r.integer("Spec.Dispatcher.HeartbeatPeriod", &heartbeat_ns);
  if (!r.ok()) return r.error();
  s.heartbeat_ms = heartbeat_ns / 1'000'000;
  return s;
}

}  // namespace berth::cluster
