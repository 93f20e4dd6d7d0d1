#include "runtime/process/host_address.h"

#include <arpa/inet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace berth::runtime::process {

bool address_is_local(const std::string& ip) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  if (inet_pton(AF_INET, ip.c_str(), &sa.sin_addr) != 1) return false;
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  bool ok = bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
  close(fd);
  return ok;
}

Status add_to_loopback(const std::string& ip) {
  in_addr addr{};
  if (inet_pton(AF_INET, ip.c_str(), &addr) != 1) return invalid(fmt::format("'{}' is not an IPv4 address", ip));
  const unsigned index = if_nametoindex("lo");
  if (index == 0) return unavailable("no loopback device");
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) return unavailable(fmt::format("netlink: {}", std::strerror(errno)));

  // RTM_NEWADDR with IFA_LOCAL and IFA_ADDRESS, asking for an acknowledgement.
  struct {
    nlmsghdr nh;
    ifaddrmsg ifa;
    char attrs[64];
  } req{};
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(ifaddrmsg));
  req.nh.nlmsg_type = RTM_NEWADDR;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK;
  req.nh.nlmsg_seq = 1;
  req.ifa.ifa_family = AF_INET;
  req.ifa.ifa_prefixlen = 32;
  req.ifa.ifa_scope = RT_SCOPE_UNIVERSE;
  req.ifa.ifa_index = index;
  for (unsigned short type : {IFA_LOCAL, IFA_ADDRESS}) {
    auto* rta = reinterpret_cast<rtattr*>(reinterpret_cast<char*>(&req) + NLMSG_ALIGN(req.nh.nlmsg_len));
    rta->rta_type = type;
    rta->rta_len = RTA_LENGTH(sizeof addr);
    std::memcpy(RTA_DATA(rta), &addr, sizeof addr);
    req.nh.nlmsg_len = NLMSG_ALIGN(req.nh.nlmsg_len) + RTA_ALIGN(rta->rta_len);
  }
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(fd, &req, req.nh.nlmsg_len, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0) {
    int err = errno;
    close(fd);
    return unavailable(fmt::format("netlink: adding {} to lo: {}", ip, std::strerror(err)));
  }
  char buf[1024];
  ssize_t n = recv(fd, buf, sizeof buf, 0);
  int err = n < 0 ? errno : 0;
  close(fd);
  if (n < 0) return unavailable(fmt::format("netlink: adding {} to lo: {}", ip, std::strerror(err)));
  auto* nh = reinterpret_cast<nlmsghdr*>(buf);
  if (n < static_cast<ssize_t>(sizeof(nlmsghdr)) || !NLMSG_OK(nh, static_cast<unsigned>(n)) || nh->nlmsg_type != NLMSG_ERROR)
    return unavailable(fmt::format("netlink: adding {} to lo: unexpected answer", ip));
  if (nh->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) return unavailable("netlink: short answer");
  const int code = -reinterpret_cast<nlmsgerr*>(NLMSG_DATA(nh))->error;
  if (code == 0 || code == EEXIST) return {};
  return unavailable(fmt::format("adding address {} to the loopback device: {}{}", ip, std::strerror(code),
                                 code == EPERM ? " (needs root or CAP_NET_ADMIN)" : ""));
}

}  // namespace berth::runtime::process
