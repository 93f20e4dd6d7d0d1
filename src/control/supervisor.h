// control/supervisor.h — the life of one instance, as a pure state machine.
//
// A Supervisor is told what happens to its instance — the loop launched it, the runtime created,
// started, failed or lost it, a health probe answered, a backoff ran out, a daemon restart found
// it recorded — and with each input the (injected) time. It changes its State and returns a
// Step: what its owner must do about it (events to emit, the record to write, a timer to arm, a
// probe to schedule, a stop to ask of the runtime, a reconcile to schedule). It never calls a
// runtime, a store or an executor itself, so every rule of an instance's life — restart policy
// and backoff, readiness, health failures, jobs, adoption after a daemon restart — is
// unit-tested with plain numbers (tests/unit/supervisor_test.cc), like health::Tracker.
//
// Ownership: the ControlLoop owns one Supervisor per instance it knows (control/loop.h) and is
// the only caller; loop thread only. The reconciler (control/reconciler.h) reads State.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/result.h"
#include "health/prober.h"
#include "health/tracker.h"
#include "model/catalog.h"
#include "net/ipam/ipam.h"
#include "runtime/runtime.h"

namespace berth::control {

// kRecovering: recorded before a daemon restart, its runtime not yet asked; kLaunching: a launch
// in flight (created or not yet); kCompleted: a job (kind: job) that exited 0 with the settings
// it has now.
enum class Phase { kStopped, kWaiting, kRecovering, kLaunching, kStarting, kReady, kUnhealthy, kBackoff, kFailed, kStopping,
                   kCompleted };

// An instance ready this long has its crash count (and so its restart backoff) reset.
inline constexpr Millis kStableAfterMs = 10'000;
// An instance that could not be launched for want of the daemon's own descriptors or processes
// (ErrorCode::kExhausted) is launched again this long after.
inline constexpr Millis kLimitRetryMs = 5'000;
// What the instances table holds, runtime "", for a job that completed.
inline constexpr const char* kCompletedRef = "completed";
// berth restart is kept with the instance's record until it is replaced: the recorded
// fingerprint is prefixed with this, so a daemon killed after acknowledging the restart still
// replaces the instance when it adopts it.
inline constexpr std::string_view kRestartMark = "restart!";

// Both readings of the injected clock at one moment.
struct Now {
  Millis mono = 0;
  Millis wall = 0;
};

// What the owner must do after an input. Plain values; everything defaults to "nothing".
struct Step {
  struct Event {
    Event(std::string t, std::string m, bool app = false) : type(std::move(t)), message(std::move(m)), whole_app(app) {}
    std::string type;
    std::string message;
    bool whole_app = false;  // about the app (ordinal -1), not this instance
  };
  std::vector<Event> events;
  // The instance's record in the state store: erase it (nothing of it runs), write when it
  // became ready or stopped being ready (State::ready_at), or record the job as completed.
  enum class Write { kNone, kErase, kReadiness, kCompleted };
  Write write = Write::kNone;
  Millis backoff = -1;         // ≥ 0: arm its backoff timer for this long, then backoff_elapsed()
  bool probe = false;          // schedule its next probe, at State::tracker->next_probe_at()
  bool stop = false;           // ask its runtime to stop it (the app's stop grace)
  bool cancel = false;         // cancel its probe in flight and its timers
  bool reconcile = false;      // reconcile its environment
  bool names = false;          // what DNS shows of it may have changed (and so its status)
  bool shown = false;          // what its status shows changed
  bool database_ready = false; // a database's server became ready (the copy's golden may follow)
};

class Supervisor {
 public:
  struct State {
    ipam::LeaseKey key;
    std::string ip;
    Phase phase = Phase::kStopped;
    std::string runtime_name;   // the runtime it was launched in
    runtime::Ref ref;           // set once created (or as recorded before a restart)
    std::uint64_t launch = 0;   // the launch in flight; 0 when none
    std::string launch_what;    // what the launch runs, for the "starting" event
    int pid = 0;                // its main process on this host, when known
    std::string detail;         // "pid 4711", "container 3fa2c1d0e9ab"
    std::string fingerprint;    // settings hash, then ":" and the build or database copy it runs
    std::string build_id;       // the build (or copy) it runs
    std::optional<health::Tracker> tracker;
    int restarts = 0;
    int crashes = 0;            // consecutive, reset once stable
    bool started_before = false;
    Millis started_mono = 0;
    Millis ready_at = 0;        // wall; 0 when not ready
    Millis ready_mono = 0;      // monotonic, for the backoff reset
    bool degraded = false;            // a dependency with policy mark failed
    bool replacing = false;           // stopped to be replaced with new settings; done once ready again
    bool restart_requested = false;   // berth restart: replaced in the rolling replacement
    bool backoff_after_stop = false;  // stopped for failing its health check: restart with backoff
    std::string message;
    std::string last_probe;
    bool probe_trouble = false;  // the last probe was inconclusive (the daemon's own error), announced
    bool at_limit = false;       // its last launch hit the daemon's own limit (kExhausted): it waits, announced
    // Something of it exists in its runtime (or may: a launch in flight).
    bool exists() const { return launch != 0 || !ref.empty(); }
    // Counts as ready for whoever depends on it.
    bool serving() const { return (phase == Phase::kReady && exists()) || phase == Phase::kCompleted; }
  };

  Supervisor() = default;
  explicit Supervisor(ipam::LeaseKey key) { s_.key = std::move(key); }
  const State& state() const { return s_; }
  // The fingerprint its record keeps: marked (kRestartMark) while a restart is requested.
  std::string recorded_fingerprint() const { return s_.restart_requested ? restart_marked(s_.fingerprint) : s_.fingerprint; }
  static std::string restart_marked(const std::string& fingerprint) { return std::string(kRestartMark) + fingerprint; }

  // ---- what the loop decides ----
  // A record of the previous daemon: kept as recorded (kRecovering, or kCompleted for a job that
  // had completed) until its runtime answers.
  struct Recorded {
    std::string ip, runtime, ref, fingerprint;
    int restarts = 0;
    Millis ready_at = 0;
  };
  void recorded(const Recorded& r);
  // Its runtime is not one this daemon has: it stays recorded (it may run), never started twice.
  Step unrecoverable(const std::string& why);
  // Waits to start: `why` (a dependency, a build, an address); `announce` once per app.
  Step wait(const std::string& why, bool announce);
  void set_ip(std::string ip) { s_.ip = std::move(ip); }
  // Launched in `runtime` as `launch`, running `fingerprint` (settings:build).
  struct Launch {
    std::uint64_t id = 0;
    std::string runtime, what, fingerprint, build_id;
    bool container = false;
  };
  Step launching(const Launch& l, Now now);
  // Asked to stop (why, for its message); true when its runtime must be asked (a launch not yet
  // created is refused at on_created instead; a recovering one is stopped once it answers).
  Step stop(const std::string& why);
  // Stopped to be replaced (new settings, a new build, berth restart), health-gated.
  Step replace(const std::string& why);
  // Its replacement is ready: the next one may go.
  void replaced() { s_.replacing = false; }
  // berth restart: a running one is replaced in the rolling replacement, one that is backing
  // off, failed or completed starts again at once.
  Step restart();
  // A completed job runs again (its settings changed, the next up, berth restart).
  Step rerun();
  void mark_degraded(bool on) { s_.degraded = on; }

  // ---- what its runtime says ----
  // Created: true when it may run (its record is then written by the owner).
  Status created(std::uint64_t launch) const;
  void record_written(const runtime::Ref& ref) { s_.ref = ref; }
  Step started(const runtime::Observed& observed, bool observed_ip, const model::AppSpec* spec, Now now);
  Step failed(const runtime::Ref& ref, const Error& error, const model::AppSpec* spec, Now now);
  Step exited(const runtime::Exit& exit, const model::AppSpec* spec, Now now);
  Step recovered(const runtime::Recovered& r, const model::AppSpec* spec, Now now);

  // ---- health and timers ----
  // Whether a probe result is still wanted (it runs, is checked, is not being stopped).
  bool probing() const { return !s_.ref.empty() && s_.tracker && s_.phase != Phase::kStopping; }
  Step probed(const health::ProbeResult& r, const model::AppSpec& spec, Now now);
  Step backoff_elapsed();

 private:
  Step ready(const std::string& detail, const model::AppSpec* spec, Now now);
  // Backs off before the next start: the next delay of its crash count, or none.
  Millis back_off(const model::RestartSpec& restart, bool immediately);

  State s_;
  // Before the launch in flight, to undo its count when the daemon's own limit refused it.
  int restarts_before_launch_ = 0;
  bool started_before_launch_ = false;
};

// What an instance's state is called in the status and the API.
std::string public_state(const Supervisor::State& s);

}  // namespace berth::control
