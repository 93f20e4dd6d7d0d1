// base/netns.h — sockets made in another network namespace: how the daemon reaches a network
// it is not part of (a Docker overlay, through a container of its own on it: runtime/cluster).
//
// A socket belongs to the network namespace it was made in, whichever thread uses it later. So
// the daemon need not move into the overlay: it switches the calling thread into the namespace
// for the one socket() call and back (setns(2), which needs CAP_SYS_ADMIN), and from then on
// the socket is an ordinary descriptor for asio. run_in() runs a function on a short-lived
// thread of its own that stays in the namespace, for code that makes its sockets itself (the
// name server's start).
//
// Ownership: a Netns owns its two descriptors (the namespace's and the calling thread's own,
// to come back to). Threading: socket() on the thread that made the Netns (it returns that
// thread to the namespace it was in then); run_in() from any thread.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "base/result.h"

namespace berth {

class Netns {
 public:
  // The network namespace of process `pid` (/proc/PID/ns/net), held open: it stays valid even
  // if that process ends.
  static Result<std::unique_ptr<Netns>> of_process(int pid);
  ~Netns();
  Netns(const Netns&) = delete;
  Netns& operator=(const Netns&) = delete;

  // socket(domain, type | SOCK_CLOEXEC, protocol) made in the namespace. The thread is back in
  // its own namespace when this returns (the process is aborted if it cannot be: a thread left
  // in the wrong namespace would send where nothing may go).
  Result<int> socket(int domain, int type, int protocol = 0) const;
  // Runs `fn` on a new thread that has entered the namespace, and waits for it.
  Status run_in(const std::function<void()>& fn) const;
  const std::string& description() const { return description_; }

 private:
  Netns(int fd, int home, std::string description) : fd_(fd), home_(home), description_(std::move(description)) {}
  int fd_ = -1;
  int home_ = -1;
  std::string description_;
};

}  // namespace berth
