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
  if (behaviour_.keep_specs) launched_.push_back(spec.id.app + "#" + std::to_string(spec.id.ordinal));
  if (auto f = failing_.find(spec.id.app); f != failing_.end()) {
    post([this, id = spec.id, launch = spec.launch, error = f->second] {
      if (listener_) listener_->on_failed(id, launch, "", error);
    });
    return;
  }
  Ref ref = fmt::format("sim-{}", ++next_);
  if (behaviour_.keep_specs) {
    instances_[ref] = Instance{spec, ref};
  } else {
    InstanceSpec lean;
    lean.id = spec.id;
    lean.launch = spec.launch;
    lean.ip = spec.ip;
    instances_[ref] = Instance{std::move(lean), ref};
  }
  post([this, ref, id = spec.id, launch = spec.launch] {
    if (!listener_) {  // nobody to record it: it never runs
      instances_.erase(ref);
      return;
    }
    listener_->on_created(id, launch, ref, [this, ref, id, launch](Status st) {
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
      it->second.recorded = true;
      if (behaviour_.start_latency_ms > 0)
        it->second.timer = executor_.after(behaviour_.start_latency_ms, [this, ref] { start(ref); });
      else
        start(ref);
    });
  });
}

void SimRuntime::start(const Ref& ref) {
  auto it = instances_.find(ref);
  if (it == instances_.end() || it->second.started) return;
  Instance& inst = it->second;
  inst.timer = 0;
  inst.started = true;
  inst.started_at = now();
  inst.hung = behaviour_.hang_fraction > 0 && std::bernoulli_distribution(behaviour_.hang_fraction)(random_);
  by_ip_[inst.spec.ip] = &inst;
  if (behaviour_.mean_time_to_crash_ms > 0) {
    std::exponential_distribution<double> crash(1.0 / static_cast<double>(behaviour_.mean_time_to_crash_ms));
    inst.timer = executor_.after(static_cast<Millis>(crash(random_)) + 1, [this, ref] {
      if (auto i = instances_.find(ref); i != instances_.end()) i->second.timer = 0;
      exit(ref, 1);
    });
  }
  if (listener_) listener_->on_started(inst.spec.id, inst.spec.launch, ref, {inst.spec.ip, ref, 0});
}

bool SimRuntime::answers(const std::string& ip) const {
  auto r = by_ip_.find(ip);
  if (r == by_ip_.end()) return false;
  const Instance& i = *r->second;
  return i.started && !i.hung && !i.stopping && now() - i.started_at >= behaviour_.ready_after_ms;
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
  for (auto it = instances_.begin(); it != instances_.end();) {
    if (known.count(it->first)) {
      ++it;
      continue;
    }
    forget_address(it->second);
    it = instances_.erase(it);
  }
  post([done = std::move(done), out = std::move(out)]() mutable { done(std::move(out)); });
}

void SimRuntime::stop(const Ref& ref, Millis grace_ms) {
  BERTH_ASSERT_LOOP(executor_);
  auto it = instances_.find(ref);
  if (it == instances_.end() || it->second.stopping) return;
  Instance& inst = it->second;
  inst.stopping = true;
  if (inst.timer) executor_.cancel(inst.timer);
  inst.timer = 0;
  if (!inst.started) {
    // Created, still starting: it never runs (or the pending create answer sees `stopping`).
    if (inst.recorded) {  // its start is pending on the latency timer
      InstanceId id = inst.spec.id;
      Ref gone = ref;  // `ref` may be the erased entry's own key
      instances_.erase(it);
      post([this, id, gone] {
        if (listener_) listener_->on_exited(id, gone, Exit{true, 0, 0, "stopped before it started"});
      });
    }
    return;
  }
  if (inst.hung) {  // ignores SIGTERM: killed after the grace
    inst.timer = executor_.after(grace_ms, [this, ref] { exit(ref, 137, 9); });
    return;
  }
  exit(ref, 143, 15);
}

void SimRuntime::exit(const Ref& ref, int code, int signal) {
  auto it = instances_.find(ref);
  if (it == instances_.end() || !it->second.started) return;
  InstanceId id = it->second.spec.id;
  if (it->second.timer) executor_.cancel(it->second.timer);
  forget_address(it->second);
  Ref gone = ref;  // `ref` may be the erased entry's own key
  instances_.erase(it);
  Exit e{true, code, signal, ""};
  e.description = describe(e);
  post([this, id, gone, e] {
    if (listener_) listener_->on_exited(id, gone, e);
  });
}

void SimRuntime::forget_address(const Instance& inst) {
  if (auto b = by_ip_.find(inst.spec.ip); b != by_ip_.end() && b->second == &inst) by_ip_.erase(b);
}

void SimRuntime::hang(const Ref& ref) {
  if (auto it = instances_.find(ref); it != instances_.end() && it->second.started) it->second.hung = true;
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
  else failing_[app] = unavailable(message);
}

void SimRuntime::fail_launches(const std::string& app, Error error) { failing_[app] = std::move(error); }

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
