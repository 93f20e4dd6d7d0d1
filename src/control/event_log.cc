#include "control/event_log.h"

#include <vector>

namespace berth::control {

void EventLog::emit(const std::string& env, const std::string& type, const std::string& app, int ordinal,
                    const std::string& ip, const std::string& message) {
  store::Event e{++last_id_, clock_.wall_ms(), env, type, app, ordinal, ip, message};
  if (on_emit_) on_emit_(e);  // the daemon's log: at once
  pending_.push_back({std::move(e), false});
}

void EventLog::write() {
  std::vector<Pending*> batch;
  for (auto& p : pending_)
    if (!p.written) batch.push_back(&p);
  if (batch.empty()) return;
  std::vector<std::string> refused(batch.size());  // why each one was not stored ("" if it was)
  const Status committed = store_.transaction([&]() -> Status {
    for (std::size_t i = 0; i < batch.size(); ++i)
      if (auto r = store_.append_event(batch[i]->event); !r.ok()) refused[i] = r.error().message;
    return {};
  });
  for (std::size_t i = 0; i < batch.size(); ++i) {
    // An event that cannot be stored must not stop the loop; it is still logged and delivered.
    if (refused[i].empty() && !committed.ok()) refused[i] = committed.error().message;
    if (!refused[i].empty()) batch[i]->event.message += " [not stored: " + refused[i] + "]";
    batch[i]->written = true;
  }
}

void EventLog::deliver(const std::function<bool(const std::string& env)>& shown) {
  if (pending_.empty()) return;
  write();
  if (subscribers_.empty()) {  // written, and nobody to deliver them to
    pending_.clear();
    return;
  }
  std::deque<Pending> ready;
  if (!shown) {
    ready.swap(pending_);  // every view is published: all of them
  } else {
    std::deque<Pending> waiting;
    for (auto& p : pending_) (p.event.env.empty() || shown(p.event.env) ? ready : waiting).push_back(std::move(p));
    pending_ = std::move(waiting);
  }
  for (const auto& p : ready) {
    // Subscribers may unsubscribe (or subscribe) from inside their call: iterate over a copy.
    auto subscribers = subscribers_;
    for (const auto& [id, fn] : subscribers)
      if (subscribers_.count(id)) fn(p.event);
  }
}

EventLog::Subscription EventLog::subscribe(std::function<void(const store::Event&)> fn) {
  const Subscription id = ++last_subscription_;
  subscribers_.emplace(id, std::move(fn));
  return id;
}

}  // namespace berth::control
