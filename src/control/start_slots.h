// control/start_slots.h — how many instances may be starting at once in each runtime.
//
// Starting an instance costs its host CPU (an exec, a program's start-up, its first health
// checks, every start_interval until it answers): thousands started at once on a small host
// start more slowly in all than a steady stream, their probes of programs not yet listening
// crowding out the programs themselves. A runtime with a limit (Capabilities::max_starting)
// has that many slots; an instance holds one from its launch until it is ready or has stopped
// starting (failed, exited, stopped), and one that finds none waits in line, first come first
// served, for the next free one.
//
// Owned by the control loop; loop thread only. Pure bookkeeping: the loop asks, launches and
// reconciles.
#pragma once

#include <deque>
#include <map>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "net/ipam/ipam.h"

namespace berth::control {

class StartSlots {
 public:
  // `limit` slots for `runtime` (0: no limit, the default).
  void set_limit(const std::string& runtime, int limit) { limits_[runtime] = limit; }
  int limit(const std::string& runtime) const;
  // Slots held in `runtime` (a runtime without a limit keeps no count: 0).
  int starting(const std::string& runtime) const;

  // Takes a slot of `runtime` for `key` if one is free (true), or if it holds one already.
  // Otherwise (false) it is put in line, once.
  bool take(const ipam::LeaseKey& key, const std::string& runtime);
  // `key` no longer starts: its slot, if it held one, is free. True if it held one.
  bool release(const ipam::LeaseKey& key);
  // Those in line for as many slots as are free now, first come first served, out of line:
  // the loop reconciles them (one that still wants to start takes a slot or goes back in line).
  std::vector<ipam::LeaseKey> next_in_line();
  std::size_t in_line() const { return line_set_.size(); }

 private:
  std::map<std::string, int> limits_;
  std::map<std::string, int> starting_;  // slots held, per runtime
  std::unordered_map<ipam::LeaseKey, std::string, ipam::LeaseKeyHash, ipam::LeaseKeyEqual> holders_;  // → runtime
  std::map<std::string, std::deque<ipam::LeaseKey>> line_;  // per runtime, oldest first
  std::unordered_set<ipam::LeaseKey, ipam::LeaseKeyHash, ipam::LeaseKeyEqual> line_set_;
};

}  // namespace berth::control
