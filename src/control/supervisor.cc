#include "control/supervisor.h"

#include <algorithm>

#include <fmt/format.h>

#include "base/text.h"

namespace berth::control {

namespace {

// `b` after `a`: events in order, flags combined, the later write and backoff win.
void then(Step& a, Step b) {
  for (auto& e : b.events) a.events.push_back(std::move(e));
  if (b.write != Step::Write::kNone) a.write = b.write;
  if (b.backoff >= 0) a.backoff = b.backoff;
  a.probe |= b.probe;
  a.stop |= b.stop;
  a.cancel |= b.cancel;
  a.reconcile |= b.reconcile;
  a.names |= b.names;
  a.shown |= b.shown;
  a.database_ready |= b.database_ready;
}

// Its probes' spread once ready (health/tracker.h): from its name, the same in every run.
std::uint64_t probe_seed(const ipam::LeaseKey& key) {
  return health::Tracker::seed_of(fmt::format("{}/{}/{}", key.env, key.app, key.ordinal));
}

}  // namespace

std::string public_state(const Supervisor::State& s) {
  switch (s.phase) {
    case Phase::kWaiting: return "waiting";
    case Phase::kRecovering:
    case Phase::kLaunching:
    case Phase::kStarting: return "starting";
    case Phase::kReady: return s.degraded ? "degraded" : "ready";
    case Phase::kBackoff: return s.at_limit ? "waiting" : "failed";
    case Phase::kUnhealthy:
    case Phase::kFailed: return "failed";
    case Phase::kStopping: return s.exists() ? "stopping" : "stopped";
    case Phase::kStopped: return s.exists() ? "starting" : "stopped";
    case Phase::kCompleted: return "completed";
  }
  return "stopped";
}

// ---- what the loop decides --------------------------------------------------------------------

void Supervisor::recorded(const Recorded& r) {
  s_.ip = r.ip;
  s_.runtime_name = r.runtime;
  s_.ref = r.ref;
  s_.fingerprint = r.fingerprint;
  if (s_.fingerprint.starts_with(kRestartMark)) {
    s_.fingerprint.erase(0, kRestartMark.size());
    s_.restart_requested = true;
  }
  // The fingerprint is the settings' hash, then ":" and the build or database copy it runs.
  if (auto colon = r.fingerprint.find(':'); colon != std::string::npos) s_.build_id = r.fingerprint.substr(colon + 1);
  s_.restarts = r.restarts;
  s_.ready_at = r.ready_at;
  s_.started_before = true;
  if (r.runtime.empty() && r.ref == kCompletedRef) {
    // A job that had completed: nothing runs; it stays done while its settings do not change.
    s_.ref.clear();
    s_.phase = Phase::kCompleted;
    s_.message = "completed before the daemon restarted";
    return;
  }
  s_.phase = Phase::kRecovering;
  s_.message = "recovering after a daemon restart";
}

Step Supervisor::unrecoverable(const std::string& why) {
  s_.message = why;
  Step st;
  st.events.push_back({"error", why});
  return st;
}

Step Supervisor::wait(const std::string& why, bool announce) {
  Step st;
  const bool first = s_.phase != Phase::kWaiting;
  if (!first && s_.message == why) return st;
  s_.phase = Phase::kWaiting;
  s_.message = why;
  st.shown = true;
  if (first && announce) st.events.push_back({"waiting", why, true});
  return st;
}

Step Supervisor::launching(const Launch& l, Now now) {
  restarts_before_launch_ = s_.restarts;
  started_before_launch_ = s_.started_before;
  if (s_.started_before) ++s_.restarts;
  s_.started_before = true;
  s_.launch = l.id;
  s_.launch_what = l.what;
  s_.runtime_name = l.runtime;
  s_.fingerprint = l.fingerprint;
  s_.build_id = l.build_id;
  s_.phase = Phase::kLaunching;
  s_.degraded = false;
  s_.ready_at = 0;
  s_.pid = 0;
  s_.detail.clear();
  s_.last_probe.clear();
  s_.message = l.container ? "creating its container" : "starting its process";
  s_.started_mono = now.mono;
  Step st;
  st.names = true;
  return st;
}

Step Supervisor::stop(const std::string& why) {
  Step st;
  if (!s_.exists() || s_.phase == Phase::kStopping || s_.phase == Phase::kRecovering) return st;
  st.cancel = true;
  st.names = true;
  s_.phase = Phase::kStopping;
  s_.message = "stopping: " + why;
  st.stop = !s_.ref.empty();  // a launch not yet created is refused at on_created
  return st;
}

Step Supervisor::replace(const std::string& why) {
  s_.replacing = true;
  s_.restart_requested = false;
  Step st;
  st.events.push_back({"restarting", why});
  then(st, stop(why));
  return st;
}

Step Supervisor::restart() {
  Step st;
  if (s_.exists()) {
    s_.restart_requested = true;
    st.shown = true;
  } else if (s_.phase == Phase::kBackoff || s_.phase == Phase::kFailed || s_.phase == Phase::kCompleted) {
    st.cancel = true;
    if (s_.phase == Phase::kCompleted) st.write = Step::Write::kErase;
    s_.phase = Phase::kStopped;
    st.shown = true;
  }
  return st;
}

Step Supervisor::rerun() {
  Step st;
  if (s_.phase != Phase::kCompleted) return st;
  s_.phase = Phase::kStopped;
  s_.message.clear();
  st.write = Step::Write::kErase;
  st.shown = true;
  return st;
}

// ---- what its runtime says --------------------------------------------------------------------

Status Supervisor::created(std::uint64_t launch) const {
  if (s_.launch != launch) return conflict("this launch is no longer wanted");
  if (s_.phase == Phase::kStopping) return conflict("stopped before it started");
  return {};
}

Step Supervisor::started(const runtime::Observed& observed, bool observed_ip, const model::AppSpec* spec, Now now) {
  Step st;
  st.names = true;
  s_.launch = 0;
  s_.at_limit = false;
  s_.pid = observed.pid;
  s_.detail = observed.detail;
  if (observed_ip && !observed.ip.empty()) s_.ip = observed.ip;
  // A stop asked for meanwhile went to the runtime already (the ref was known); its exit follows.
  if (s_.phase == Phase::kStopping) return st;
  s_.phase = Phase::kStarting;
  s_.started_mono = now.mono;
  s_.message = "started " + observed.detail;
  st.events.push_back({"starting", fmt::format("{}: {}", observed.detail, s_.launch_what)});
  if (!spec) return st;
  if (spec->job) {  // not health-checked: done when it exits 0
    s_.message = "running (a job: completed when it exits with status 0)";
    return st;
  }
  if (spec->health.type == model::HealthType::kNone) {
    then(st, ready("no health check: ready once started", spec, now));
    return st;
  }
  s_.tracker.emplace(spec->health, s_.started_mono, probe_seed(s_.key));
  st.probe = true;
  return st;
}

Step Supervisor::failed(const runtime::Ref& ref, const Error& error, const model::AppSpec* spec, Now now) {
  (void)now;
  Step st;
  st.names = true;
  st.reconcile = true;
  s_.launch = 0;
  if (!ref.empty() && s_.ref == ref) {
    st.write = Step::Write::kErase;
    s_.ref.clear();
  }
  if (s_.phase == Phase::kStopping) {
    s_.phase = Phase::kStopped;
    s_.message = "stopped before it started";
    st.events.push_back({"stopped", s_.message});
    return st;
  }
  if (error.code == ErrorCode::kExhausted && spec) {
    // The daemon's own limit (open files, processes), not the instance's doing: it waits, with
    // the reason (which limit, how to raise it) said once rather than a start-failed event per
    // attempt, and is launched again in kLimitRetryMs; neither a restart nor a crash is counted.
    s_.restarts = restarts_before_launch_;
    s_.started_before = started_before_launch_;
    if (!s_.at_limit) st.events.push_back({"waiting", error.message});
    s_.at_limit = true;
    s_.phase = Phase::kBackoff;
    st.backoff = kLimitRetryMs;
    s_.message = fmt::format("waiting: {}; trying again in {}", error.message, format_duration(kLimitRetryMs));
    return st;
  }
  s_.at_limit = false;
  st.events.push_back({"start-failed", error.message});
  if (!spec) {
    s_.phase = Phase::kStopped;
    s_.message = "could not start: " + error.message;
    return st;
  }
  st.backoff = back_off(spec->restart, false);
  s_.message = fmt::format("could not start: {}; trying again in {}", error.message, format_duration(st.backoff));
  return st;
}

Step Supervisor::exited(const runtime::Exit& exit, const model::AppSpec* spec, Now now) {
  Step st;
  st.write = Step::Write::kErase;
  st.names = true;
  st.cancel = true;
  st.reconcile = true;
  s_.ref.clear();
  s_.launch = 0;
  s_.pid = 0;
  s_.tracker.reset();
  const bool was_ready = s_.phase == Phase::kReady;
  if (s_.phase == Phase::kStopping) {
    s_.phase = Phase::kStopped;
    s_.message = "stopped (" + exit.description + ")";
    st.events.push_back({"stopped", exit.description});
    if (s_.backoff_after_stop && spec) {
      // Stopped for failing its health check: restarts back off like crashes do.
      s_.backoff_after_stop = false;
      st.backoff = back_off(spec->restart, false);
      s_.message = fmt::format("unhealthy; restarting in {}", format_duration(st.backoff));
    }
    return st;
  }
  st.events.push_back({"exited", exit.description});
  if (spec && spec->job && exit.success()) {
    s_.phase = Phase::kCompleted;
    s_.crashes = 0;
    s_.message = fmt::format("completed in {}", format_duration(now.mono - s_.started_mono));
    // Remembered across daemon restarts: a completed job is not run again until its settings
    // change, berth restart, or the next up.
    st.write = Step::Write::kCompleted;
    st.events.push_back({"completed", s_.message});
    return st;
  }
  if (spec && exit.host_lost) {
    // Not the instance's doing: back at once, on another host, whatever the policy says.
    s_.phase = Phase::kBackoff;
    s_.message = fmt::format("{}; re-created on another host", exit.description);
    st.backoff = 0;
    st.events.push_back({"moving", exit.description});
    return st;
  }
  const auto policy = spec ? spec->restart.policy : model::RestartPolicy::kNever;
  const bool restart = policy == model::RestartPolicy::kAlways || (policy == model::RestartPolicy::kOnFailure && !exit.success());
  if (!restart) {
    s_.phase = Phase::kFailed;
    s_.message = fmt::format("{}; restart policy {}: not restarted", exit.description, model::to_string(policy));
    return st;
  }
  // A crash after a stable run (ready for kStableAfterMs) restarts at once; any other crash, the
  // first one included, backs off exponentially from restart.backoff.
  const bool stable = was_ready && now.mono - s_.ready_mono >= kStableAfterMs;
  if (stable) s_.crashes = 0;
  st.backoff = back_off(spec->restart, stable);
  s_.message = fmt::format("{}; restarting in {}", exit.description, format_duration(st.backoff));
  st.events.push_back({"restarting", fmt::format("in {} (attempt {})", format_duration(st.backoff), s_.crashes)});
  return st;
}

Step Supervisor::recovered(const runtime::Recovered& r, const model::AppSpec* spec, Now now) {
  Step st;
  st.names = true;
  if (!r.alive) {
    st.write = Step::Write::kErase;
    s_.ref.clear();
    s_.ready_at = 0;
    s_.phase = Phase::kStopped;
    s_.message = fmt::format("gone while the daemon was down ({})", r.exit.description);
    st.events.push_back({"exited", s_.message});
    return st;
  }
  s_.phase = Phase::kStarting;
  s_.pid = r.observed.pid;
  s_.detail = r.observed.detail;
  s_.started_mono = now.mono;
  s_.message = fmt::format("adopted {} after a daemon restart", r.observed.detail);
  st.events.push_back({"adopted", s_.message});
  if (!spec) return st;
  if (spec->health.type == model::HealthType::kNone) {
    then(st, ready("no health check: ready once adopted", spec, now));
    return st;
  }
  s_.tracker.emplace(spec->health, s_.started_mono, probe_seed(s_.key));
  if (s_.ready_at != 0) {
    // Ready when the previous daemon died: it stays ready (and answers in DNS) while it is
    // probed again at once; failures count against failure_threshold as for any ready one.
    s_.tracker->assume_ready(now.mono);
    s_.phase = Phase::kReady;
    s_.ready_mono = now.mono - std::max<Millis>(0, now.wall - s_.ready_at);
    s_.message += " (ready)";
    st.database_ready = spec->database.has_value();
  }
  st.probe = true;
  return st;
}

// ---- health and timers ------------------------------------------------------------------------

Step Supervisor::probed(const health::ProbeResult& r, const model::AppSpec& spec, Now now) {
  Step st;
  if (s_.last_probe != r.detail) {
    s_.last_probe = r.detail;
    st.shown = true;
  }
  if (r.inconclusive) {
    // The daemon's own trouble is never the instance's health failure: said once, then it
    // probes again as scheduled.
    if (!s_.probe_trouble) st.events.push_back({"probe-error", r.detail});
    s_.probe_trouble = true;
    s_.tracker->skip(now.mono);
    st.probe = true;
    return st;
  }
  s_.probe_trouble = false;
  const auto change = s_.tracker->record(r.ok, now.mono);
  if (change == health::Tracker::Change::kBecameReady) {
    then(st, ready(r.detail, &spec, now));
  } else if (change == health::Tracker::Change::kBecameUnhealthy) {
    st.names = true;
    st.reconcile = true;
    s_.phase = Phase::kUnhealthy;
    s_.ready_at = 0;
    st.write = Step::Write::kReadiness;
    s_.message = "unhealthy: " + r.detail;
    st.events.push_back({"unhealthy", r.detail});
    if (spec.restart.on_unhealthy && spec.restart.policy != model::RestartPolicy::kNever) {
      st.events.push_back({"restarting", "health check failing: " + r.detail});
      then(st, stop("unhealthy"));
      s_.backoff_after_stop = true;
    }
  } else if (s_.phase == Phase::kStarting) {
    s_.message = "starting: " + r.detail;
  }
  if (s_.phase != Phase::kStopping) st.probe = true;
  return st;
}

Step Supervisor::backoff_elapsed() {
  Step st;
  if (s_.phase == Phase::kBackoff) s_.phase = Phase::kStopped;
  st.reconcile = true;
  return st;
}

Step Supervisor::ready(const std::string& detail, const model::AppSpec* spec, Now now) {
  Step st;
  st.names = true;
  st.reconcile = true;
  s_.phase = Phase::kReady;
  s_.ready_at = now.wall;
  s_.ready_mono = now.mono;
  if (!s_.ref.empty()) st.write = Step::Write::kReadiness;
  const Millis took = now.mono - s_.started_mono;
  s_.message = fmt::format("ready in {}", format_duration(took));
  st.events.push_back({"ready", fmt::format("{} (after {})", detail, format_duration(took))});
  st.database_ready = spec && spec->database;
  return st;
}

Millis Supervisor::back_off(const model::RestartSpec& restart, bool immediately) {
  const Millis delay = immediately ? 0 : std::min(restart.max_backoff_ms, restart.backoff_ms << std::min(s_.crashes, 20));
  ++s_.crashes;
  s_.phase = Phase::kBackoff;
  return delay;
}

}  // namespace berth::control
