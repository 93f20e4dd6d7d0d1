#include "base/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <thread>

#include <fmt/format.h>

namespace berth {

Result<std::unique_ptr<Netns>> Netns::of_process(int pid) {
  const std::string path = fmt::format("/proc/{}/ns/net", pid);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return unavailable(fmt::format("opening {}: {}", path, std::strerror(errno)));
  const int home = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (home < 0) {
    const int e = errno;
    ::close(fd);
    return unavailable(fmt::format("opening /proc/thread-self/ns/net: {}", std::strerror(e)));
  }
  return std::unique_ptr<Netns>(new Netns(fd, home, fmt::format("the network namespace of process {}", pid)));
}

Netns::~Netns() {
  ::close(fd_);
  ::close(home_);
}

Result<int> Netns::socket(int domain, int type, int protocol) const {
  if (::setns(fd_, CLONE_NEWNET) != 0)
    return unavailable(fmt::format("entering {}: {}", description_, std::strerror(errno)));
  const int s = ::socket(domain, type | SOCK_CLOEXEC, protocol);
  const int e = errno;
  if (::setns(home_, CLONE_NEWNET) != 0) {
    std::fprintf(stderr, "berth: could not return a thread to its network namespace: %s\n", std::strerror(errno));
    std::abort();
  }
  if (s < 0) {
    Error err = unavailable(fmt::format("a socket in {}: {}", description_, std::strerror(e)));
    if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) err.code = ErrorCode::kExhausted;
    return err;
  }
  return s;
}

Status Netns::run_in(const std::function<void()>& fn) const {
  Status st;
  std::thread t([&] {
    if (::setns(fd_, CLONE_NEWNET) != 0) {
      st = unavailable(fmt::format("entering {}: {}", description_, std::strerror(errno)));
      return;
    }
    try {
      fn();
    } catch (const std::exception& e) {
      st = internal(fmt::format("in {}: {}", description_, e.what()));
    }
  });
  t.join();
  return st;
}

}  // namespace berth
