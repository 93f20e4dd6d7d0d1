// k8s/k8s.h — an environment written as Kubernetes manifests (`berth export k8s ENV`), on paper.
//
// No Kubernetes server runs where berth is built and tested, so the manifests are checked for
// their shape only (tests/unit/k8s_test.cc). Each container app the environment runs becomes a
// headless Service (stable DNS names per instance: app-0.app.NAMESPACE.svc) and a StatefulSet
// (stable pod names, one per ordinal), with:
//   - dependency gating as init containers that wait for each hard dependency's check;
//   - a single-instance app's berth address as Calico's `cni.projectcalico.org/ipAddrs`
//     annotation (Calico fixes one address per pod, never per replica: projectcalico/calico#5197);
//   - readiness probes from the health checks, limits from `resources`, named volumes as volume
//     claim templates, bind mounts as hostPath volumes, secret env values as references to a
//     Secret the user creates (their values are never written out).
// What does not translate (processes, databases, berth's DNS names, restart policies, fixed
// addresses of replicas...) comes back as notes; docs/kubernetes.md says it point by point.
//
// Pure functions of the catalog: any thread.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "base/result.h"
#include "model/catalog.h"

namespace berth::k8s {

struct Export {
  std::string yaml;                // a Namespace, then a Service and a StatefulSet per app: one multi-document stream
  std::vector<std::string> notes;  // what berth does for this environment that the manifests cannot
};

// The environment `env` of `catalog`. `ips`: "app/ordinal" → the address berth gave that
// instance (from its leases), used for single-instance apps.
Result<Export> manifests(const model::Catalog& catalog, const std::string& env, const std::map<std::string, std::string>& ips);

}  // namespace berth::k8s
