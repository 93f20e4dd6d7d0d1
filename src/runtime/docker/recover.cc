// DockerRuntime after a daemon restart: its containers re-found by label, adopted or removed;
// and after a broken event stream, what ended meanwhile. Part of runtime/docker/docker_runtime.h.
#include "runtime/docker/docker_runtime.h"

#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <ctime>
#include <filesystem>
#include <mutex>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/text.h"
#include "runtime/docker/internal.h"

namespace berth::runtime::docker {
namespace fs = std::filesystem;
using nlohmann::json;

// ---- recovery ---------------------------------------------------------------------------------

void DockerRuntime::adopt(const InstanceId& id, const Ref& ref, const std::string& name, const std::string& network,
                          const std::map<std::string, std::string>& labels) {
  auto c = std::make_unique<Container>();
  c->id = id;
  c->name = name;
  c->ref = ref;
  c->network = network;
  c->state = Container::State::kRunning;
  c->started = true;
  c->logs_drained = true;
  names_[ref] = name;
  Container& cc = *c;
  containers_[name] = std::move(c);
  if (auto log = labels.find("berth.log"); log != labels.end() && !log->second.empty()) {
    cc.log_path = log->second;
    follow_logs(cc, resume_point(ref));
  }
}

std::string DockerRuntime::resume_point(const Ref& ref) const {
  // The output written before the restart ends at the timestamp kept beside it.
  std::FILE* f = std::fopen(fmt::format("{}/{}.logpos", options_.state_dir, ref).c_str(), "r");
  if (!f) return "0";
  char buf[64] = {};
  std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  std::string ts(buf, n);
  while (!ts.empty() && ts.back() == ' ') ts.pop_back();
  std::string since = since_after(ts);
  return since.empty() ? "0" : since;
}

// After the event stream broke: what ended meanwhile, and the output of containers adopted
// while dockerd did not answer.
void DockerRuntime::resync() {
  json filters = {{"label", json::array({"berth.data=" + options_.data_id})}};
  call({"GET", "/containers/json?all=1&filters=" + percent_encode(filters.dump()), "", "", "application/json", 30'000},
       [this](Result<Response> r) {
         if (!r.ok() || !r->ok()) return;
         json list = json::parse(r->body, nullptr, false);
         if (!list.is_array()) return;
         std::map<std::string, const json*> by_id;
         for (const auto& c : list)
           if (c.is_object() && c.contains("Id") && c["Id"].is_string()) by_id[c["Id"].get<std::string>()] = &c;
         std::vector<std::string> ended;
         for (auto& [name, c] : containers_) {
           if (c->state != Container::State::kRunning) continue;
           auto it = by_id.find(c->ref);
           if (it == by_id.end() || it->second->value("State", "") != "running") {
             ended.push_back(name);
             continue;
           }
           if (!c->log && it->second->contains("Labels") && (*it->second)["Labels"].is_object()) {
             c->log_path = (*it->second)["Labels"].value("berth.log", "");
             if (!c->log_path.empty()) follow_logs(*c, resume_point(c->ref));
           }
         }
         for (const auto& name : ended) begin_exit(name, std::nullopt, false);
       });
}

void DockerRuntime::recover(const std::vector<Record>& records, std::function<void(std::vector<Recovered>)> done) {
  json filters = {{"label", json::array({"berth.data=" + options_.data_id})}};
  call({"GET", "/containers/json?all=1&filters=" + percent_encode(filters.dump()), "", "", "application/json", 60'000},
       [this, records, done = std::move(done)](Result<Response> r) {
         std::vector<Recovered> out;
         struct Seen {
           std::string state, status, name, ip, network;
           std::map<std::string, std::string> labels;
         };
         std::map<std::string, Seen> seen;
         bool listed = r.ok() && r->ok();
         if (listed) {
           json list = json::parse(r->body, nullptr, false);
           if (list.is_array())
             for (const auto& c : list) {
               if (!c.is_object() || !c.contains("Id") || !c["Id"].is_string()) continue;
               Seen s;
               s.state = c.value("State", "");
               s.status = c.value("Status", "");
               if (c.contains("Names") && c["Names"].is_array() && !c["Names"].empty() && c["Names"][0].is_string())
                 s.name = c["Names"][0].get<std::string>().substr(1);
               if (c.contains("Labels") && c["Labels"].is_object())
                 for (const auto& [k, v] : c["Labels"].items())
                   if (v.is_string()) s.labels[k] = v.get<std::string>();
               if (c.contains("NetworkSettings") && c["NetworkSettings"].is_object() &&
                   c["NetworkSettings"].contains("Networks") && c["NetworkSettings"]["Networks"].is_object())
                 for (const auto& [net, v] : c["NetworkSettings"]["Networks"].items()) {
                   s.network = net;
                   if (v.is_object()) s.ip = v.value("IPAddress", "");
                 }
               seen[c["Id"].get<std::string>()] = s;
             }
         }
         std::set<std::string> recorded;
         for (const auto& rec : records) {
           Recovered res{rec.id, rec.ref, false, {}, {}};
           recorded.insert(rec.ref);
           auto it = seen.find(rec.ref);
           if (!listed) {
             // dockerd does not answer: keep it as recorded rather than start a second one.
             res.alive = true;
             res.observed = {"", "container " + short_id(rec.ref) + " (dockerd not answering)", 0};
             adopt(rec.id, rec.ref, container_name(rec.id), "", {});  // resync() finds its log once dockerd answers
           } else if (it != seen.end() && it->second.state == "running" && !died_unknown_.count(rec.ref)) {
             res.alive = true;
             res.observed = {it->second.ip, "container " + short_id(rec.ref), 0};
             adopt(rec.id, rec.ref, it->second.name, it->second.network, it->second.labels);
           } else if (it != seen.end()) {
             // Recorded but not running: how it ended, then it goes.
             int code = -1;
             if (std::sscanf(it->second.status.c_str(), "Exited (%d)", &code) == 1) res.exit = exit_of(code, false);
             else res.exit.description = it->second.status.empty() ? "not running" : it->second.status;
             remove_container(rec.ref, it->second.network, [] {});
           } else {
             res.exit.description = "its container is gone";
           }
           out.push_back(std::move(res));
         }
         // Containers of this data directory that nothing records: created by a daemon that died
         // before recording them. They never ran anything of berth's; remove them.
         for (const auto& [id, s] : seen)
           if (!recorded.count(id)) remove_container(id, s.network, [] {});
         if (!listed)
           for (auto& res : out) res.observed.detail += r.ok() ? ": " + error_message(*r) : ": " + r.error().message;
         done(std::move(out));
       });
}

}  // namespace berth::runtime::docker
