// runtime/process/host_address.h — making an instance's address usable on this host.
//
// A process instance binds its own address. Loopback addresses (127.0.0.0/8) always are; an
// address of a pool that containers share (a Docker bridge subnet) is added to the loopback
// device as a /32 so the process can bind it and containers on the bridge reach it (the host
// answers ARP for its local addresses). Internal to the process runtime. Needs CAP_NET_ADMIN.
// Blocking syscalls of microseconds (a bind, one netlink round trip); any thread.
#pragma once

#include <string>

#include "base/result.h"

namespace berth::runtime::process {

// Whether a socket can bind `ip` here (it is one of this host's addresses, or loopback).
bool address_is_local(const std::string& ip);
// Add `ip`/32 to the loopback device (rtnetlink); ok when it is already there.
Status add_to_loopback(const std::string& ip);

}  // namespace berth::runtime::process
