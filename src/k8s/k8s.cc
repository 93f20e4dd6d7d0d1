#include "k8s/k8s.h"

#include <cctype>
#include <cmath>
#include <cstdint>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

namespace berth::k8s {

namespace {

// Kubernetes object names: lower case, digits and '-' (RFC 1123 labels), at most 63.
std::string dns_label(std::string_view s) {
  std::string out;
  for (char c : s) {
    const char l = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out += (std::isalnum(static_cast<unsigned char>(l)) || l == '-') ? l : '-';
  }
  while (!out.empty() && out.front() == '-') out.erase(out.begin());
  while (!out.empty() && out.back() == '-') out.pop_back();
  if (out.size() > 63) out.resize(63);
  return out.empty() ? "x" : out;
}

std::string quantity_cpu(double cpus) { return fmt::format("{}m", static_cast<std::int64_t>(std::llround(cpus * 1000))); }
std::string quantity_memory(std::uint64_t bytes) { return fmt::format("{}Mi", (bytes + (1 << 20) - 1) >> 20); }
std::int64_t seconds_up(Millis ms) { return (ms + 999) / 1000; }

// The shell test an init container repeats until a dependency passes it (busybox's wget and nc).
std::string wait_check(const model::AppSpec& dep) {
  const std::string host = dep.app;
  auto port_of = [&](const std::string& name) {
    auto it = dep.ports.find(name);
    if (it != dep.ports.end()) return it->second;
    return dep.ports.empty() ? 0 : dep.ports.begin()->second;
  };
  switch (dep.health.type) {
    case model::HealthType::kHttp:
      return fmt::format("wget -q -T 1 -O /dev/null http://{}:{}{}", host, port_of(dep.health.port), dep.health.path);
    case model::HealthType::kTcp: return fmt::format("nc -z -w 1 {} {}", host, port_of(dep.health.port));
    case model::HealthType::kExec:
    case model::HealthType::kNone: break;
  }
  return fmt::format("nslookup {}", host);  // its Service has a ready address
}

void metadata(YAML::Emitter& y, const std::string& name, const std::string& ns, const std::string& env,
              const std::string& app) {
  y << YAML::Key << "metadata" << YAML::Value << YAML::BeginMap;
  y << YAML::Key << "name" << YAML::Value << name;
  if (!ns.empty()) y << YAML::Key << "namespace" << YAML::Value << ns;
  y << YAML::Key << "labels" << YAML::Value << YAML::BeginMap;
  y << YAML::Key << "berth.env" << YAML::Value << dns_label(env);
  if (!app.empty()) y << YAML::Key << "app.kubernetes.io/name" << YAML::Value << dns_label(app);
  y << YAML::EndMap << YAML::EndMap;
}

void probe(YAML::Emitter& y, const model::AppSpec& a) {
  const auto& h = a.health;
  if (h.type == model::HealthType::kNone) return;
  y << YAML::Key << "readinessProbe" << YAML::Value << YAML::BeginMap;
  auto port = [&] {
    auto it = a.ports.find(h.port);
    return it != a.ports.end() ? it->second : a.ports.empty() ? 0 : a.ports.begin()->second;
  };
  if (h.type == model::HealthType::kHttp) {
    y << YAML::Key << "httpGet" << YAML::Value << YAML::BeginMap << YAML::Key << "path" << YAML::Value << h.path
      << YAML::Key << "port" << YAML::Value << port() << YAML::EndMap;
  } else if (h.type == model::HealthType::kTcp) {
    y << YAML::Key << "tcpSocket" << YAML::Value << YAML::BeginMap << YAML::Key << "port" << YAML::Value << port()
      << YAML::EndMap;
  } else {
    y << YAML::Key << "exec" << YAML::Value << YAML::BeginMap << YAML::Key << "command" << YAML::Value << YAML::Flow
      << YAML::BeginSeq << "/bin/sh" << "-c" << h.command << YAML::EndSeq << YAML::EndMap;
  }
  y << YAML::Key << "periodSeconds" << YAML::Value << std::max<std::int64_t>(1, seconds_up(h.interval_ms));
  y << YAML::Key << "timeoutSeconds" << YAML::Value << std::max<std::int64_t>(1, seconds_up(h.timeout_ms));
  y << YAML::Key << "failureThreshold" << YAML::Value << h.failure_threshold;
  y << YAML::Key << "successThreshold" << YAML::Value << h.success_threshold;
  y << YAML::EndMap;
}

}  // namespace

Result<Export> manifests(const model::Catalog& catalog, const std::string& env, const std::map<std::string, std::string>& ips) {
  const model::Environment* e = catalog.find(env);
  if (!e) return not_found(fmt::format("no environment '{}' in the catalog", env));
  Export out;
  const std::string ns = "berth-" + dns_label(env);
  YAML::Emitter y;
  y << YAML::BeginDoc << YAML::BeginMap;
  y << YAML::Key << "apiVersion" << YAML::Value << "v1" << YAML::Key << "kind" << YAML::Value << "Namespace";
  metadata(y, ns, "", env, "");
  y << YAML::EndMap;
  out.notes.push_back(fmt::format(
      "names: berth serves {{app}} and {{app}}-{{n}} in {}.{} through the instances' own resolver; here they are "
      "Services of namespace {} ({{app}}, {{app}}-{{n}}.{{app}}), found by the same short names from pods in it",
      env, catalog.dns().zone, ns));

  for (const auto& a : e->apps) {
    if (!e->runs(a.app)) {
      out.notes.push_back(fmt::format("{}: this thin environment uses {}'s instances; export that environment for it", a.app,
                                      e->served_by.count(a.app) ? e->served_by.at(a.app) : "its base"));
      continue;
    }
    if (!a.container()) {
      out.notes.push_back(fmt::format("{}: runs as a process on berth's host{}; Kubernetes runs images only", a.app,
                                      a.database ? " (a database server with its own copy of a standard)" : ""));
      continue;
    }
    const std::string name = dns_label(a.app);
    std::map<std::string, std::string> vars = {{"tag", a.tag}, {"build_type", a.build_type}, {"env", env}, {"app", a.app},
                                               {"ordinal", "$(BERTH_INSTANCE)"}, {"ip", "$(POD_IP)"}};
    for (const auto& [p, n] : a.ports) vars["port." + p] = std::to_string(n);

    // The headless Service: a DNS name per ready instance.
    y << YAML::BeginDoc << YAML::BeginMap;
    y << YAML::Key << "apiVersion" << YAML::Value << "v1" << YAML::Key << "kind" << YAML::Value << "Service";
    metadata(y, name, ns, env, a.app);
    y << YAML::Key << "spec" << YAML::Value << YAML::BeginMap;
    y << YAML::Key << "clusterIP" << YAML::Value << "None";
    y << YAML::Key << "selector" << YAML::Value << YAML::BeginMap << YAML::Key << "app.kubernetes.io/name" << YAML::Value
      << name << YAML::EndMap;
    if (!a.ports.empty()) {
      y << YAML::Key << "ports" << YAML::Value << YAML::BeginSeq;
      for (const auto& [p, n] : a.ports)
        y << YAML::BeginMap << YAML::Key << "name" << YAML::Value << dns_label(p) << YAML::Key << "port" << YAML::Value << n
          << YAML::EndMap;
      y << YAML::EndSeq;
    }
    y << YAML::EndMap << YAML::EndMap;

    // The StatefulSet: a stable name per ordinal.
    y << YAML::BeginDoc << YAML::BeginMap;
    y << YAML::Key << "apiVersion" << YAML::Value << "apps/v1" << YAML::Key << "kind" << YAML::Value << "StatefulSet";
    metadata(y, name, ns, env, a.app);
    y << YAML::Key << "spec" << YAML::Value << YAML::BeginMap;
    y << YAML::Key << "serviceName" << YAML::Value << name;
    y << YAML::Key << "replicas" << YAML::Value << a.instances;
    y << YAML::Key << "podManagementPolicy" << YAML::Value << "Parallel";  // berth starts an app's instances at once
    y << YAML::Key << "selector" << YAML::Value << YAML::BeginMap << YAML::Key << "matchLabels" << YAML::Value
      << YAML::BeginMap << YAML::Key << "app.kubernetes.io/name" << YAML::Value << name << YAML::EndMap << YAML::EndMap;
    y << YAML::Key << "template" << YAML::Value << YAML::BeginMap;
    y << YAML::Key << "metadata" << YAML::Value << YAML::BeginMap;
    y << YAML::Key << "labels" << YAML::Value << YAML::BeginMap << YAML::Key << "app.kubernetes.io/name" << YAML::Value << name
      << YAML::Key << "berth.env" << YAML::Value << dns_label(env) << YAML::EndMap;
    if (auto ip = ips.find(a.app + "/0"); ip != ips.end() && a.instances == 1) {
      y << YAML::Key << "annotations" << YAML::Value << YAML::BeginMap << YAML::Key << "cni.projectcalico.org/ipAddrs"
        << YAML::Value << fmt::format("[\"{}\"]", ip->second) << YAML::EndMap;
    } else if (a.instances > 1) {
      out.notes.push_back(fmt::format("{}: its {} instances keep their names, not their addresses: Calico fixes one "
                                      "address per pod, never per replica of a StatefulSet",
                                      a.app, a.instances));
    }
    y << YAML::EndMap;  // template.metadata
    y << YAML::Key << "spec" << YAML::Value << YAML::BeginMap;
    y << YAML::Key << "terminationGracePeriodSeconds" << YAML::Value << seconds_up(a.stop_grace_ms);
    // Dependency gating: the pod's containers start once every hard dependency passes its check.
    std::vector<const model::AppSpec*> waits;
    for (const auto& d : a.depends_on) {
      if (d.soft) continue;
      if (const auto* dep = e->find(d.app)) waits.push_back(dep);
      if (d.on_failure != model::DependencyFailure::kIgnore)
        out.notes.push_back(fmt::format("{}: when {} fails later, berth applies on_failure: {}; init containers only "
                                        "gate the start",
                                        a.app, d.app, model::to_string(d.on_failure)));
    }
    if (!waits.empty()) {
      y << YAML::Key << "initContainers" << YAML::Value << YAML::BeginSeq;
      for (const auto* dep : waits)
        y << YAML::BeginMap << YAML::Key << "name" << YAML::Value << "wait-for-" + dns_label(dep->app) << YAML::Key << "image"
          << YAML::Value << "busybox:1.36" << YAML::Key << "command" << YAML::Value << YAML::Flow << YAML::BeginSeq << "sh"
          << "-c" << fmt::format("until {}; do sleep 1; done", wait_check(*dep)) << YAML::EndSeq << YAML::EndMap;
      y << YAML::EndSeq;
    }
    y << YAML::Key << "containers" << YAML::Value << YAML::BeginSeq << YAML::BeginMap;
    y << YAML::Key << "name" << YAML::Value << name;
    y << YAML::Key << "image" << YAML::Value << model::image_reference(a.image, vars);
    if (a.entrypoint) {
      y << YAML::Key << "command" << YAML::Value << YAML::Flow << YAML::BeginSeq;
      for (const auto& w : *a.entrypoint) y << model::substitute_raw(w, vars);
      y << YAML::EndSeq;
    }
    std::vector<std::string> args;
    if (a.command_words)
      for (const auto& w : *a.command_words) args.push_back(model::substitute_raw(w, vars));
    for (const auto& w : a.args) args.push_back(model::substitute_raw(w, vars));
    if (!args.empty()) {
      y << YAML::Key << "args" << YAML::Value << YAML::Flow << YAML::BeginSeq;
      for (const auto& w : args) y << w;
      y << YAML::EndSeq;
    }
    if (!a.workdir.empty()) y << YAML::Key << "workingDir" << YAML::Value << a.workdir;
    y << YAML::Key << "env" << YAML::Value << YAML::BeginSeq;
    y << YAML::BeginMap << YAML::Key << "name" << YAML::Value << "POD_IP" << YAML::Key << "valueFrom" << YAML::Value
      << YAML::BeginMap << YAML::Key << "fieldRef" << YAML::Value << YAML::BeginMap << YAML::Key << "fieldPath" << YAML::Value
      << "status.podIP" << YAML::EndMap << YAML::EndMap << YAML::EndMap;
    y << YAML::BeginMap << YAML::Key << "name" << YAML::Value << "BERTH_INSTANCE" << YAML::Key << "valueFrom" << YAML::Value
      << YAML::BeginMap << YAML::Key << "fieldRef" << YAML::Value << YAML::BeginMap << YAML::Key << "fieldPath" << YAML::Value
      << "metadata.labels['apps.kubernetes.io/pod-index']" << YAML::EndMap << YAML::EndMap << YAML::EndMap;
    std::map<std::string, std::string> plain = {{"BERTH_ENV", env}, {"BERTH_APP", a.app}, {"BERTH_IP", "$(POD_IP)"}};
    for (const auto& [k, v] : a.env) plain[k] = v;
    for (const auto& [k, v] : plain) {
      if (a.secrets.count(k)) {
        y << YAML::BeginMap << YAML::Key << "name" << YAML::Value << k << YAML::Key << "valueFrom" << YAML::Value
          << YAML::BeginMap << YAML::Key << "secretKeyRef" << YAML::Value << YAML::BeginMap << YAML::Key << "name"
          << YAML::Value << name + "-secrets" << YAML::Key << "key" << YAML::Value << k << YAML::EndMap << YAML::EndMap
          << YAML::EndMap;
        continue;
      }
      y << YAML::BeginMap << YAML::Key << "name" << YAML::Value << k << YAML::Key << "value" << YAML::Value << v
        << YAML::EndMap;
    }
    y << YAML::EndSeq;
    if (!a.secrets.empty())
      out.notes.push_back(fmt::format("{}: its secret values are not written; create Secret {}-secrets with keys {}", a.app,
                                      name, fmt::format("{}", fmt::join(a.secrets, ", "))));
    if (!a.ports.empty()) {
      y << YAML::Key << "ports" << YAML::Value << YAML::BeginSeq;
      for (const auto& [p, n] : a.ports)
        y << YAML::BeginMap << YAML::Key << "name" << YAML::Value << dns_label(p) << YAML::Key << "containerPort"
          << YAML::Value << n << YAML::EndMap;
      y << YAML::EndSeq;
    }
    probe(y, a);
    if (a.resources.cpus > 0 || a.resources.memory_bytes > 0) {
      y << YAML::Key << "resources" << YAML::Value << YAML::BeginMap << YAML::Key << "limits" << YAML::Value << YAML::BeginMap;
      if (a.resources.cpus > 0) y << YAML::Key << "cpu" << YAML::Value << quantity_cpu(a.resources.cpus);
      if (a.resources.memory_bytes > 0) y << YAML::Key << "memory" << YAML::Value << quantity_memory(a.resources.memory_bytes);
      y << YAML::EndMap << YAML::EndMap;
    }
    std::vector<std::pair<std::string, const model::VolumeSpec*>> claims, host_paths;
    for (const auto& v : a.volumes)
      (v.bind ? host_paths : claims).emplace_back(dns_label(v.bind ? "host-" + v.target : v.source), &v);
    if (!a.volumes.empty()) {
      y << YAML::Key << "volumeMounts" << YAML::Value << YAML::BeginSeq;
      for (const auto* list : {&claims, &host_paths})
        for (const auto& [vname, v] : *list)
          y << YAML::BeginMap << YAML::Key << "name" << YAML::Value << vname << YAML::Key << "mountPath" << YAML::Value
            << v->target << YAML::Key << "readOnly" << YAML::Value << v->read_only << YAML::EndMap;
      y << YAML::EndSeq;
    }
    y << YAML::EndMap << YAML::EndSeq;  // the container, containers
    if (!host_paths.empty()) {
      y << YAML::Key << "volumes" << YAML::Value << YAML::BeginSeq;
      for (const auto& [vname, v] : host_paths)
        y << YAML::BeginMap << YAML::Key << "name" << YAML::Value << vname << YAML::Key << "hostPath" << YAML::Value
          << YAML::BeginMap << YAML::Key << "path" << YAML::Value << v->source << YAML::EndMap << YAML::EndMap;
      y << YAML::EndSeq;
      out.notes.push_back(fmt::format("{}: bind mounts became hostPath volumes: the directories must exist on every node", a.app));
    }
    y << YAML::EndMap;  // template.spec
    y << YAML::EndMap;  // template
    if (!claims.empty()) {
      y << YAML::Key << "volumeClaimTemplates" << YAML::Value << YAML::BeginSeq;
      for (const auto& [vname, v] : claims)
        y << YAML::BeginMap << YAML::Key << "metadata" << YAML::Value << YAML::BeginMap << YAML::Key << "name" << YAML::Value
          << vname << YAML::EndMap << YAML::Key << "spec" << YAML::Value << YAML::BeginMap << YAML::Key << "accessModes"
          << YAML::Value << YAML::Flow << YAML::BeginSeq << "ReadWriteOnce" << YAML::EndSeq << YAML::Key << "resources"
          << YAML::Value << YAML::BeginMap << YAML::Key << "requests" << YAML::Value << YAML::BeginMap << YAML::Key
          << "storage" << YAML::Value << "1Gi" << YAML::EndMap << YAML::EndMap << YAML::EndMap << YAML::EndMap;
      y << YAML::EndSeq;
      out.notes.push_back(fmt::format("{}: named volumes became claims of 1Gi each (berth's volumes have no size)", a.app));
    }
    y << YAML::EndMap << YAML::EndMap;  // spec, the StatefulSet
    if (!a.constraints.empty())
      out.notes.push_back(fmt::format("{}: its placement constraints are not translated (write affinity rules)", a.app));
  }
  if (!y.good()) return internal(fmt::format("writing the manifests: {}", y.GetLastError()));
  out.yaml = std::string(y.c_str()) + "\n";
  return out;
}

}  // namespace berth::k8s
