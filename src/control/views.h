// control/views.h — what the control loop shows of its state, and how it publishes it: each
// environment's status and summary (the read model, control/read_model.h) and its DNS records
// (the zone, net/dns/zone.h).
//
// The views are built from the loop's state (ViewInputs: the catalog, the planner, what is
// observed, the leases...) and never change it. The Publisher keeps what changed since the last
// publish — an environment whose names changed (touched: its DNS records and its status), one
// whose status only changed, or everything (a new catalog, a full pass) — marking the thin
// environments that fall through to it too, and rebuilds only those: the zone at the end of each
// pass, the status views at most kStatusPublishMs after a change (a burst of instance events is
// one rebuild per environment), or at once for the one environment an API write concerns.
//
// Ownership: the ControlLoop owns its Publisher, and the inputs it lends outlive each call. Loop
// thread only, except the ReadModel it publishes, which any thread reads.
#pragma once

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>

#include "base/executor.h"
#include "build/builder.h"
#include "control/observed.h"
#include "control/planner.h"
#include "control/read_model.h"
#include "control/status.h"
#include "db/manager.h"
#include "model/catalog.h"
#include "net/dns/zone.h"
#include "net/ipam/ipam.h"

namespace berth::control {

// The read model is published at most this long after a change the reader did not cause (an
// instance started, a probe answered, a pass decided); an API write publishes before its reply.
// Rebuilding an environment's view per instance event was half the loop's time at 1,000
// environments: a burst of events now costs one rebuild per environment.
inline constexpr Millis kStatusPublishMs = 20;
// When a publish itself takes long (hundreds of environments changing at once), the next waits
// this many times as long, so that publishing takes at most about a quarter of the loop's time;
// never more than kStatusPublishMaxMs.
inline constexpr Millis kStatusPublishCostFactor = 3;
inline constexpr Millis kStatusPublishMaxMs = 500;

// What the views are made of: the loop's state, lent for one build.
struct ViewInputs {
  const model::Catalog* catalog = nullptr;  // nullptr: nothing applied yet
  const Planner* planner = nullptr;
  const Observed* observed = nullptr;
  const ipam::Ipam* ipam = nullptr;
  const build::Builder* builder = nullptr;    // may be null
  const db::Manager* databases = nullptr;     // may be null
  // How instances resolve names: berth's name server on the pool's gateway (empty: it does not
  // answer there, `resolver_note` says why); a process runtime that cannot give its instances a
  // resolver of their own says why in `process_resolver_note`.
  std::string resolver;
  std::string resolver_note;
  std::string process_resolver_note;
};

// An environment's status: every app it shows (its own, and the ones it falls through to as the
// serving environment sees them), instance by instance.
Result<EnvStatus> env_status(const ViewInputs& in, const std::string& env);
// The same in a few numbers.
EnvSummary env_summary(const ViewInputs& in, const model::Environment& espec);
// Its names: each app's instances' addresses and readiness, or the environment it falls through to.
std::shared_ptr<const dns::EnvRecords> env_records(const ViewInputs& in, const model::Environment& espec);

class Publisher {
 public:
  // `on_zone` receives each new zone (may be empty); `due` runs on the loop when marked views are
  // due to be published (the loop then calls publish_status, or waits for a pass).
  // `zone_due` runs on the loop when a zone publish put off (see publish_zone) is due.
  Publisher(Executor& executor, const Clock& clock, const Planner& planner,
            std::function<void(std::shared_ptr<const dns::Zone>)> on_zone, std::uint32_t ns_ip, std::function<void()> due,
            std::function<void()> zone_due)
      : executor_(executor),
        clock_(clock),
        planner_(planner),
        on_zone_(std::move(on_zone)),
        ns_ip_(ns_ip),
        due_(std::move(due)),
        zone_due_(std::move(zone_due)) {}
  ~Publisher();

  // What an environment shows changed: its names and status (touched), or its status only. Both
  // mark the thin environments falling through to it and schedule a publish.
  void touched(const std::string& env);
  void status_changed(const std::string& env);
  // Every environment's status may show it (the resolver, a full pass's findings).
  void all_changed();
  // A new catalog: every view and every name, in its order.
  void catalog_changed();
  // Publish the marked views within kStatusPublishMs, or longer after a costly publish (one
  // timer at a time).
  void schedule();
  bool pending() const { return all_dirty_ || !dirty_.empty(); }
  // Whether the published read model shows `env` as of now.
  bool shown(const std::string& env) const { return !all_dirty_ && !dirty_.count(env); }

  // A zone with the marked environments' records rebuilt, if any are marked: at once, unless the
  // last one cost time and was published less than three times that long ago (passes in quick
  // succession while hundreds of environments come up); then when that time is over.
  void publish_zone(const ViewInputs& in);
  // A status snapshot with the marked views rebuilt. With `only`, a write that concerns one
  // environment: its views (and those falling through to it) now, the rest when due.
  void publish_status(const ViewInputs& in, const std::string& only = "");
  const ReadModel& read_model() const { return read_model_; }

 private:
  Executor& executor_;
  const Clock& clock_;
  const Planner& planner_;
  std::function<void(std::shared_ptr<const dns::Zone>)> on_zone_;
  std::uint32_t ns_ip_ = 0;
  std::function<void()> due_;
  std::function<void()> zone_due_;
  Millis zone_next_at_ = 0;  // monotonic: a zone publish before then is put off
  Executor::TimerId zone_timer_ = 0;
  // DNS: per-environment records, rebuilt when their environment is marked.
  dns::EnvTable env_records_;
  std::set<std::string> dns_dirty_;
  bool dns_all_dirty_ = true;
  std::uint32_t zone_serial_ = 0;
  // The read model: the views of the last snapshot, rebuilt when their environment is marked.
  ReadModel read_model_;
  // In the catalog's order (view_index_ maps a name to its place); copied into each snapshot.
  std::vector<std::shared_ptr<const EnvView>> views_;
  std::shared_ptr<const std::unordered_map<std::string, std::size_t>> view_index_;  // of this catalog
  std::set<std::string> dirty_;
  bool all_dirty_ = true;
  Executor::TimerId timer_ = 0;
  std::uint64_t view_generation_ = 0;
  std::uint64_t serial_ = 0;
  Millis last_cost_ms_ = 0;  // of the last publish that rebuilt views
};

}  // namespace berth::control
