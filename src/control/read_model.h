// control/read_model.h — the status read model: an immutable snapshot of every environment's
// status, published by the control loop when something it shows changed, read from any thread.
//
// Like the DNS zone (net/dns/zone.h): readers never walk the loop's live state. The loop builds
// an EnvView for each environment whose status changed (and every one after a catalog change or
// a full pass), then publishes a new StatusSnapshot that shares the unchanged views with the one
// before. A snapshot and its views never change once published, so a reader may keep one as long
// as it likes and cache what it derives from a view under the view's `generation`.
//
// Ownership: the ControlLoop owns its ReadModel; publish() is called on the loop's thread,
// current() on any thread (a mutex guards the one pointer swapped).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "control/status.h"

namespace berth::control {

// One environment as shown: its status and its summary, as of the same moment.
struct EnvView {
  std::uint64_t generation = 0;  // unique among every view the loop builds (a reader's cache key)
  EnvStatus status;
  EnvSummary summary;
};

struct StatusSnapshot {
  std::uint64_t serial = 0;  // grows with every publish
  bool has_catalog = false;  // false: nothing applied yet (and `envs` is empty)
  std::vector<std::shared_ptr<const EnvView>> envs;  // in catalog order
  // name → index in `envs`; shared by the snapshots of one catalog.
  std::shared_ptr<const std::unordered_map<std::string, std::size_t>> index;

  const EnvView* find(std::string_view name) const;
  // At most `limit` environments after the one named `after` ("" or unknown: from the first;
  // limit 0: all of them). `next` is the name to continue after, empty on the last page (it may
  // be the string `after` came from).
  std::vector<const EnvView*> page(std::string after, std::size_t limit, std::string* next) const;
  // Every environment's name, in catalog order (for "did you mean" hints).
  std::vector<std::string> names() const;
};

class ReadModel {
 public:
  std::shared_ptr<const StatusSnapshot> current() const;
  void publish(std::shared_ptr<const StatusSnapshot> snapshot);

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const StatusSnapshot> current_ = std::make_shared<const StatusSnapshot>();
};

}  // namespace berth::control
