#include "runtime/sim/sim_runtime.h"

#include <algorithm>

#include <fmt/format.h>

namespace berth::runtime {

void SimRuntime::prepare_network(const Network& network, std::function<void(Status)> done) {
  networks_.push_back(network);
  post([done = std::move(done)] { done({}); });
}

void SimRuntime::launch(const InstanceSpec& spec) {
  BERTH_ASSERT_LOOP(executor_);
  launched_.push_back(spec.id.app + "#" + std::to_string(spec.id.ordinal));
  if (auto f = failing_.find(spec.id.app); f != failing_.end()) {
    post([this, id = spec.id, launch = spec.launch, message = f->second] {
      if (listener_) listener_->on_failed(id, launch, "", unavailable(message));
    });
    return;
  }
  Ref ref = fmt::format("sim-{}", ++next_);
  instances_[ref] = {spec, ref, false, false};
  post([this, ref, id = spec.id, launch = spec.launch, ip = spec.ip] {
    Status st = listener_ ? listener_->on_created(id, launch, ref) : internal("no listener");
    auto it = instances_.find(ref);
    if (it == instances_.end()) return;
    if (!st.ok()) {
      instances_.erase(it);
      if (listener_) listener_->on_failed(id, launch, ref, st.error());
      return;
    }
    if (it->second.stopping) {  // stopped between create and start: it never runs
      instances_.erase(it);
      if (listener_) listener_->on_exited(id, ref, Exit{true, 0, 0, "stopped before it started"});
      return;
    }
    it->second.started = true;
    if (listener_) listener_->on_started(id, launch, ref, {ip, ref, 0});
  });
}

void SimRuntime::recover(const std::vector<Record>& records, std::function<void(std::vector<Recovered>)> done) {
  std::vector<Recovered> out;
  std::set<Ref> known;
  for (const auto& r : records) {
    Recovered rec{r.id, r.ref, false, {}, {}};
    if (auto it = instances_.find(r.ref); it != instances_.end() && it->second.started) {
      rec.alive = true;
      rec.observed = {it->second.spec.ip, r.ref, 0};
    } else {
      rec.exit.description = "gone";
    }
    known.insert(r.ref);
    out.push_back(std::move(rec));
  }
  // What it has no record of is destroyed, as a real runtime does with leftovers.
  for (auto it = instances_.begin(); it != instances_.end();)
    it = known.count(it->first) ? std::next(it) : instances_.erase(it);
  post([done = std::move(done), out = std::move(out)]() mutable { done(std::move(out)); });
}

void SimRuntime::stop(const Ref& ref, Millis) {
  BERTH_ASSERT_LOOP(executor_);
  auto it = instances_.find(ref);
  if (it == instances_.end() || it->second.stopping) return;
  it->second.stopping = true;
  if (it->second.started) exit(ref, 143, 15);
}

void SimRuntime::exit(const Ref& ref, int code, int signal) {
  auto it = instances_.find(ref);
  if (it == instances_.end() || !it->second.started) return;
  InstanceId id = it->second.spec.id;
  instances_.erase(it);
  Exit e{true, code, signal, ""};
  e.description = describe(e);
  post([this, id, ref, e] {
    if (listener_) listener_->on_exited(id, ref, e);
  });
}

Ref SimRuntime::ref_of(const std::string& env, const std::string& app, int ordinal) const {
  for (const auto& [ref, i] : instances_)
    if (i.started && i.spec.id.env == env && i.spec.id.app == app && i.spec.id.ordinal == ordinal) return ref;
  return "";
}

int SimRuntime::running(const std::string& app) const {
  return static_cast<int>(std::count_if(instances_.begin(), instances_.end(),
                                        [&](const auto& kv) { return kv.second.started && kv.second.spec.id.app == app; }));
}

void SimRuntime::fail_launches(const std::string& app, const std::string& message) {
  if (message.empty()) failing_.erase(app);
  else failing_[app] = message;
}

std::unique_ptr<Cancel> SimRuntime::exec(const Ref& ref, const ExecRequest& request,
                                         std::function<void(Result<ExecResult>)> done) {
  auto alive = std::make_shared<bool>(true);
  Result<ExecResult> result = not_found("the instance is not running");
  if (auto it = instances_.find(ref); it != instances_.end() && it->second.started) {
    ExecResult r;
    r.exit = {true, 0, 0, "exited with status 0"};
    if (exec_) r = exec_(it->second, request);
    result = r;
  }
  post([alive, done = std::move(done), result = std::move(result)]() mutable {
    if (*alive) done(std::move(result));
  });
  return cancel_with([alive] { *alive = false; });
}

void SimRuntime::logs(const InstanceId&, const std::string& log_path, std::int64_t offset, std::size_t max,
                      std::function<void(Result<LogChunk>)> done) {
  post([done = std::move(done), chunk = read_log_file(log_path, offset, max)]() mutable { done(std::move(chunk)); });
}

}  // namespace berth::runtime
