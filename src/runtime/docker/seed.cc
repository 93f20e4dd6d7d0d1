// DockerRuntime: volumes filled from an archive on the daemon's host before their container is
// made (Mount::seed: a database server's copy on a cluster's host). Part of
// runtime/docker/docker_runtime.h.
//
// The Engine API writes into a volume only through a container it is mounted in, so each fill
// goes through a helper container that never runs (no network, labelled berth.data like every
// container of berth's, so a restarted daemon's recover() removes one left behind):
//   1. GET  /containers/<helper>/archive?path=<target>/.berth-seeded — there: the volume is
//      complete, used as it is (the server's data of an earlier start on this host);
//   2. PUT  /containers/<helper>/archive?path=<target> with the archive, streamed from its file;
//      its last entry is .berth-seeded, so a fill cut short (a daemon killed, dockerd gone) is
//      done again next time, over what it left;
//   3. the helper is removed, and so are this instance's volumes of earlier seeds on this host
//      (a copy reset or replaced has another volume name); one in use stays.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/text.h"
#include "runtime/docker/docker_runtime.h"
#include "runtime/docker/internal.h"

namespace berth::runtime::docker {
using nlohmann::json;

namespace {
constexpr std::string_view kSeededMarker = ".berth-seeded";  // (db/clone.h archive_copy writes it last)
constexpr Millis kFillTimeoutMs = 3'600'000;                  // a big copy over a slow link
}  // namespace

void DockerRuntime::seed_volume(const std::string& name, std::size_t index) {
  Container& c = *containers_.at(name);
  const Mount& m = c.spec.mounts[index];
  const std::string volume = volume_name(m.source);
  json body = {{"Image", std::get<ImageWorkload>(c.spec.workload).image},
               {"Entrypoint", json::array({"berth-seed-helper-never-runs"})},
               {"Labels", {{"berth.data", options_.data_id}, {"berth.seed", volume}}},
               {"HostConfig",
                {{"NetworkMode", "none"},
                 {"Mounts", json::array({{{"Type", "volume"}, {"Source", volume}, {"Target", m.target}}})}}}};
  call({"POST", "/containers/create", body.dump(), "", "application/json", 60'000},
       [this, name, index, volume](Result<Response> r) {
         json created = r.ok() ? json::parse(r->body, nullptr, false) : json();
         if (!containers_.count(name)) {
           if (created.is_object() && created.contains("Id") && created["Id"].is_string()) drop_helper(created["Id"].get<std::string>());
           return;
         }
         if (!r.ok()) return fail_launch(name, r.error().wrap("filling volume " + volume));
         if (!r->ok() || !created.is_object() || !created.contains("Id") || !created["Id"].is_string())
           return fail_launch(name, unavailable(fmt::format("filling volume {}: creating its helper container: {}", volume,
                                                            error_message(*r))));
         const std::string helper = created["Id"].get<std::string>();
         const std::string target = containers_.at(name)->spec.mounts[index].target;
         call({"GET", fmt::format("/containers/{}/archive?path={}", helper, percent_encode(target + "/" + std::string(kSeededMarker))),
               "", "", "application/json", 60'000},
              [this, name, index, volume, helper](Result<Response> marker) {
                if (!containers_.count(name)) return drop_helper(helper);
                if (marker.ok() && marker->ok()) {  // complete: this host has the instance's data
                  drop_helper(helper);
                  // (Filled for a launch that never started: still a fresh fill.)
                  if (fresh_volumes_.count(volume)) containers_.at(name)->seeded = true;
                  return make_volumes(name, index + 1);
                }
                if (!marker.ok() || marker->status != 404) {
                  drop_helper(helper);
                  return fail_launch(name, unavailable(fmt::format("filling volume {}: {}", volume,
                                                                   marker.ok() ? error_message(*marker)
                                                                               : marker.error().message)));
                }
                fill_volume(name, index, helper);
              });
       });
}

void DockerRuntime::fill_volume(const std::string& name, std::size_t index, const std::string& helper) {
  Container& c = *containers_.at(name);
  const Mount& m = c.spec.mounts[index];
  const std::string volume = volume_name(m.source);
  call({"PUT", fmt::format("/containers/{}/archive?path={}", helper, percent_encode(m.target)), "", m.seed,
        "application/x-tar", kFillTimeoutMs},
       [this, name, index, volume, helper](Result<Response> r) {
         drop_helper(helper);
         auto it = containers_.find(name);
         if (it == containers_.end()) return;
         if (!r.ok() || !r->ok())
           return fail_launch(name, unavailable(fmt::format("filling volume {} from {}: {}", volume,
                                                            it->second->spec.mounts[index].seed,
                                                            r.ok() ? error_message(*r) : r.error().message)));
         it->second->seeded = true;
         fresh_volumes_.insert(volume);
         drop_older_seeds(it->second->id, volume);
         make_volumes(name, index + 1);
       });
}

void DockerRuntime::drop_helper(const std::string& helper) {
  call({"DELETE", "/containers/" + helper + "?force=1", "", "", "application/json", 60'000}, [](Result<Response>) {});
}

void DockerRuntime::drop_older_seeds(const InstanceId& id, const std::string& keep) {
  json filters = {{"label", json::array({"berth.data=" + options_.data_id, "berth.env=" + id.env, "berth.app=" + id.app,
                                         "berth.seeded=1"})}};
  call({"GET", "/volumes?filters=" + percent_encode(filters.dump()), "", "", "application/json", 30'000},
       [this, keep](Result<Response> r) {
         if (!r.ok() || !r->ok()) return;  // only disk is owed: the next fill tries again
         json list = json::parse(r->body, nullptr, false);
         if (!list.is_object() || !list.contains("Volumes") || !list["Volumes"].is_array()) return;
         for (const auto& v : list["Volumes"]) {
           if (!v.is_object() || !v.contains("Name") || !v["Name"].is_string()) continue;
           const std::string volume = v["Name"].get<std::string>();
           if (volume != keep)
             call({"DELETE", "/volumes/" + percent_encode(volume), "", "", "application/json", 60'000}, [](Result<Response>) {});
         }
       });
}

}  // namespace berth::runtime::docker
