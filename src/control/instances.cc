// The life of an instance: launch (recorded before it runs), stop, exit and restart with
// backoff, recovery after a daemon restart, health probing and readiness, exec and logs. Part of
// ControlLoop (control/loop.h); runs on its loop, and is the loop's runtime::Listener.
#include "control/loop.h"

#include <algorithm>

#include <fmt/format.h>

#include "base/text.h"

namespace berth::control {

// ---- instances --------------------------------------------------------------------------------

void ControlLoop::start(Supervisor& sup, const model::AppSpec& spec, const model::Environment& espec,
                        const Artifact& artifact, const std::string& fingerprint) {
  if (runtime::Runtime* rt = fx_.runtime_for(spec, nullptr); rt && !slots_.take(sup.state().key, rt->name())) {
    const std::string& name = rt->name();
    return apply(sup, sup.wait(fmt::format("waiting for a start slot: {} instances are starting in the {} runtime, at "
                                           "most {} at once; {} in line",
                                           slots_.starting(name), name, slots_.limit(name), slots_.in_line()),
                               false));
  }
  auto launched = fx_.launch(sup.state(), spec, espec, *catalog_, artifact, fingerprint);
  if (!launched.ok()) return apply(sup, sup.wait(launched.error().message, false));
  apply(sup, sup.launching(*launched, now()));
}

void ControlLoop::start_next_in_line() {
  for (const auto& key : slots_.next_in_line()) schedule_reconcile(key.env, key.app);
}

void ControlLoop::apply(Supervisor& sup, Step step) {
  const auto& s = sup.state();
  const ipam::LeaseKey key = s.key;  // (a copy: emit and timers outlive nothing, but be plain)
  // A start slot is held from the launch until the instance is ready or no longer starting.
  if (s.phase != Phase::kLaunching && s.phase != Phase::kStarting && slots_.release(key)) start_next_in_line();
  for (const auto& e : step.events) emit(key.env, e.type, key.app, e.whole_app ? -1 : key.ordinal, s.ip, e.message);
  if (step.cancel) fx_.cancel(key);
  if (step.stop) {
    const auto* spec = spec_of(key);
    fx_.stop(s, spec ? spec->stop_grace_ms : 5000);
  }
  switch (step.write) {
    case Step::Write::kNone: break;
    case Step::Write::kErase: record_writes_.push_back({key, true, 0}); break;
    case Step::Write::kReadiness: record_writes_.push_back({key, false, s.ready_at}); break;
    case Step::Write::kCompleted: {
      // Remembered at once: a job run again after a daemon restart would do its work twice.
      const Status written = d_.store->transaction([&]() -> Status {
        BERTH_TRY(write_records());
        return d_.store->put_instance({key, "", kCompletedRef, s.fingerprint, s.restarts, d_.clock->wall_ms()});
      });
      if (!written.ok()) emit(key.env, "error", key.app, key.ordinal, s.ip, written.error().message);
      break;
    }
  }
  if (!record_writes_.empty()) publisher_.schedule();  // (written with the next batch of events)
  if (step.backoff >= 0) fx_.backoff(key, step.backoff);
  if (step.probe) fx_.schedule_probe(s);
  if (step.names) publisher_.touched(key.env);
  else if (step.shown) publisher_.status_changed(key.env);
  if (step.database_ready && d_.databases) {
    // Where it answers and as whom: a rollout waiting for it migrates through it.
    const model::AppSpec* spec = spec_of(key);
    if (spec && spec->database && spec->ports.count("sql") && !s.ip.empty())
      d_.databases->server_ready(key.env, key.app,
                                 {fmt::format("{}:{}", s.ip, spec->ports.at("sql")), spec->database->user, spec->database->password});
    else
      d_.databases->server_ready(key.env, key.app);
  }
  if (step.reconcile) schedule_reconcile(key.env, key.app);
}

void ControlLoop::on_created(const runtime::InstanceId& id, std::uint64_t launch, const runtime::Ref& ref,
                             std::function<void(Status)> recorded) {
  created_.push_back({{id.env, id.app, id.ordinal}, launch, ref, std::move(recorded)});
  if (record_posted_) return;
  record_posted_ = true;
  // After the work already queued: the instances created meanwhile share one transaction.
  d_.executor->post(guarded([this] {
    record_posted_ = false;
    record_created();
  }));
}

void ControlLoop::record_created() {
  std::vector<Created> batch;
  batch.swap(created_);
  if (batch.empty()) return;
  std::vector<Status> outcome(batch.size());
  // Each record is stored with the instance's address before it may run: after a failed pass
  // commit the address may not be, and a daemon restarted then would give it to another.
  const Status written = d_.store->transaction([&]() -> Status {
    BERTH_TRY(ipam_.resync());
    BERTH_TRY(write_records());
    const Millis now_wall = d_.clock->wall_ms();
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const Supervisor* sup = find(batch[i].key);
      outcome[i] = sup ? sup->created(batch[i].launch) : conflict("this launch is no longer wanted");
      if (!outcome[i].ok()) continue;
      const auto& s = sup->state();
      outcome[i] = d_.store->put_instance({s.key, s.runtime_name, batch[i].ref, sup->recorded_fingerprint(), s.restarts, now_wall});
    }
    return {};
  });
  if (!written.ok()) {
    ipam_.suspect();
    retry_store();
  }
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const Status st = written.ok() ? outcome[i] : written;
    if (st.ok())
      if (Supervisor* sup = find(batch[i].key)) sup->record_written(batch[i].ref);
    batch[i].recorded(st);  // (the runtime may answer on_started or on_failed before it returns)
  }
}

void ControlLoop::on_started(const runtime::InstanceId& id, std::uint64_t launch, const runtime::Ref& ref,
                             const runtime::Observed& observed) {
  Supervisor* sup = find(id);
  if (!sup || sup->state().launch != launch || sup->state().ref != ref) return;
  runtime::Runtime* rt = fx_.runtime_named(sup->state().runtime_name);
  const bool observed_ip = rt && !rt->capabilities().fixed_ip;
  const model::AppSpec* spec = spec_of(sup->state().key);
  if (observed.seeded && spec && spec->database && d_.databases)
    if (const db::Copy* c = d_.databases->find_copy(id.env, id.app); c && c->seed_served)
      // Its volume stayed on the host it ran on (lost, drained or removed): this server runs on
      // a fresh fill of the copy.
      emit(id.env, "db-copy-lost", id.app, id.ordinal, sup->state().ip,
           fmt::format("its data stayed on the host it ran on (lost, drained or removed); this server runs on a fresh "
                       "copy of {}@{} ({}): what was written to the environment's copy since it was made is gone",
                       c->standard, c->version, observed.detail));
  apply(*sup, sup->started(observed, observed_ip, spec, now()));
}

void ControlLoop::on_failed(const runtime::InstanceId& id, std::uint64_t launch, const runtime::Ref& ref,
                            const Error& error) {
  Supervisor* sup = find(id);
  if (!sup || sup->state().launch != launch) return;
  apply(*sup, sup->failed(ref, error, spec_of(sup->state().key), now()));
}

void ControlLoop::on_recovered(const std::vector<runtime::Recovered>& recovered) {
  for (const auto& rec : recovered) {
    Supervisor* sup = find(rec.id);
    if (!sup || sup->state().ref != rec.ref || sup->state().phase != Phase::kRecovering) continue;
    apply(*sup, sup->recovered(rec, spec_of(sup->state().key), now()));
  }
  schedule_reconcile();
}

void ControlLoop::on_exited(const runtime::InstanceId& id, const runtime::Ref& ref, const runtime::Exit& exit) {
  Supervisor* sup = find(id);
  if (!sup || ref.empty() || sup->state().ref != ref) return;
  apply(*sup, sup->exited(exit, spec_of(sup->state().key), now()));
}

// ---- health -----------------------------------------------------------------------------------

void ControlLoop::run_probe(const ipam::LeaseKey& key) {
  Supervisor* sup = find(key);
  const model::AppSpec* spec = spec_of(key);
  if (sup && spec && sup->probing()) fx_.probe(sup->state(), *spec);
}

void ControlLoop::on_probe(const ipam::LeaseKey& key, const health::ProbeResult& r) {
  Supervisor* sup = find(key);
  const model::AppSpec* spec = spec_of(key);
  if (!sup || !spec || !sup->probing()) return;
  fx_.probe_done(key);
  const bool was_ready = sup->state().phase == Phase::kReady;
  apply(*sup, sup->probed(r, *spec, now()));
  // Runtimes that move instances one at a time (a cluster's drain) wait for this.
  if (!was_ready && sup->state().phase == Phase::kReady)
    if (runtime::Runtime* rt = fx_.runtime_for(*spec, nullptr))
      rt->instance_ready({key.env, key.app, key.ordinal}, sup->state().ref);
}

// ---- exec and logs ----------------------------------------------------------------------------

void ControlLoop::exec(const std::string& env, const std::string& app, int ordinal, std::vector<std::string> argv,
                       Millis timeout_ms, std::function<void(Result<runtime::ExecResult>)> done) {
  BERTH_ASSERT_LOOP(*d_.executor);
  auto path = log_path(env, app, ordinal);  // the same checks: a known app this environment runs
  if (!path.ok()) return done(path.error());
  if (argv.empty()) return done(invalid("exec needs a command"));
  const Supervisor* sup = find(ipam::LeaseKey{env, app, ordinal});
  const Supervisor::State* inst = sup ? &sup->state() : nullptr;
  const bool running = inst && !inst->ref.empty() &&
                       (inst->phase == Phase::kStarting || inst->phase == Phase::kReady || inst->phase == Phase::kUnhealthy);
  if (!running)
    return done(conflict(fmt::format("{} #{} in {} is not running{}", app, ordinal, env,
                                     inst && !inst->message.empty() ? " (" + inst->message + ")" : "")));
  fx_.exec(*inst, std::move(argv), timeout_ms, std::move(done));
}

void ControlLoop::logs(const std::string& env, const std::string& app, int ordinal, std::int64_t offset, std::size_t max,
                       std::function<void(Result<runtime::LogChunk>)> done) {
  BERTH_ASSERT_LOOP(*d_.executor);
  auto path = log_path(env, app, ordinal);
  if (!path.ok()) return done(path.error());
  const Supervisor* sup = find(ipam::LeaseKey{env, app, ordinal});
  runtime::Runtime* rt = sup && !sup->state().runtime_name.empty() ? fx_.runtime_named(sup->state().runtime_name) : nullptr;
  if (!rt)
    if (const auto* spec = spec_of({env, app, ordinal})) rt = fx_.runtime_for(*spec, nullptr);
  if (!rt) rt = fx_.runtime_named("process");
  if (!rt) return done(unavailable("no runtime to read logs from"));
  rt->logs({env, app, ordinal}, *path, offset, max, std::move(done));
}

Result<std::string> ControlLoop::log_path(const std::string& env, const std::string& app, int ordinal) const {
  if (!catalog_) return not_found("no catalog applied yet");
  const auto* espec = catalog_->find(env);
  if (!espec) return not_found(fmt::format("no environment '{}'", env));
  const auto* aspec = espec->find(app);
  if (!aspec) return not_found(fmt::format("no app '{}' in environment '{}'", app, env));
  const std::string& where = espec->served_by.at(app);
  if (where != env)
    return not_found(fmt::format("{} does not run {}: it falls through to {} (ask for the logs there)", env, app, where));
  if (ordinal < 0 || ordinal >= aspec->instances)
    return not_found(fmt::format("{} in {} has instances 0..{}, not {}", app, env, aspec->instances - 1, ordinal));
  // Names are DNS labels (validated by the catalog), so the path cannot leave the logs folder.
  return fmt::format("{}/logs/{}/{}.{}.log", d_.data_dir, env, app, ordinal);
}

// ---- lookup and events ------------------------------------------------------------------------

const model::AppSpec* ControlLoop::spec_of(const ipam::LeaseKey& key) const {
  // (The app as its environment defines it, whether it runs it or falls through.)
  if (!catalog_) return nullptr;
  const auto* env = catalog_->find(key.env);
  return env ? env->find(key.app) : nullptr;
}

void ControlLoop::set_resolver(const std::string& ip, const std::string& note) {
  BERTH_ASSERT_LOOP(*d_.executor);
  fx_.set_resolver(ip, note);
  publisher_.all_changed();  // the environments' notes say how their instances resolve names
}

void ControlLoop::emit(const std::string& env, const std::string& type, const std::string& app, int ordinal,
                       const std::string& ip, const std::string& message) {
  // Whatever is worth an event changed what the environment's status shows.
  if (!env.empty()) publisher_.status_changed(env);
  events_.emit(env, type, app, ordinal, ip, message);
  // Written with the others of this burst (one commit instead of one per event), then delivered.
  publisher_.schedule();
}

ControlLoop::Subscription ControlLoop::subscribe(std::function<void(const store::Event&)> fn) {
  BERTH_ASSERT_LOOP(*d_.executor);
  return events_.subscribe(std::move(fn));
}

void ControlLoop::unsubscribe(Subscription id) {
  BERTH_ASSERT_LOOP(*d_.executor);
  events_.unsubscribe(id);
}

}  // namespace berth::control
