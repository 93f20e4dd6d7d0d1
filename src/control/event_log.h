// control/event_log.h — what happened, as events: numbered when emitted, written to the state
// store in batches, delivered to subscribers once the read model shows what they say.
//
// An event is numbered at once (ids keep growing across daemon restarts: the log starts after
// the last stored one) and handed to `on_emit` (the daemon's log). It is written with the others
// of its burst in one transaction — at the next publish of the read model, or before anyone
// reads the stored events — instead of one commit each; a daemon killed in between loses only
// events nobody saw. A subscriber gets an event only once it is written and its environment's
// view is published, so a client that reads the status when an event arrives sees the change.
// An event that cannot be stored is still delivered, marked "[not stored: why]".
//
// Ownership: the ControlLoop owns its EventLog; loop thread only. Subscribers' functions run on
// the loop and must not block; they may subscribe or unsubscribe from inside.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>

#include "base/clock.h"
#include "store/store.h"

namespace berth::control {

class EventLog {
 public:
  using Subscription = std::uint64_t;
  // `store` and `clock` must outlive it; `on_emit` may be empty.
  EventLog(store::StateStore& store, const Clock& clock, std::function<void(const store::Event&)> on_emit)
      : store_(store), clock_(clock), on_emit_(std::move(on_emit)) {}

  // Numbering goes on after `id` (the newest stored event).
  void start_after(std::int64_t id) { last_id_ = id; }
  // Id of the newest event emitted (stored or about to be).
  std::int64_t last_id() const { return last_id_; }
  void emit(const std::string& env, const std::string& type, const std::string& app, int ordinal, const std::string& ip,
            const std::string& message);
  bool undelivered() const { return !pending_.empty(); }

  // The unwritten events, in one transaction.
  void write();
  // Writes, then delivers (in order) every event whose environment `shown` says the read model
  // shows as of now; events of no environment are always shown. The rest wait for the next call.
  void deliver(const std::function<bool(const std::string& env)>& shown);

  Subscription subscribe(std::function<void(const store::Event&)> fn);
  void unsubscribe(Subscription id) { subscribers_.erase(id); }

 private:
  struct Pending {
    store::Event event;
    bool written = false;
  };
  store::StateStore& store_;
  const Clock& clock_;
  std::function<void(const store::Event&)> on_emit_;
  std::int64_t last_id_ = 0;
  std::deque<Pending> pending_;  // emitted and not yet delivered, oldest first
  std::map<Subscription, std::function<void(const store::Event&)>> subscribers_;
  Subscription last_subscription_ = 0;
};

}  // namespace berth::control
