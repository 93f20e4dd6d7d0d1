// A minimal stub resolver for the demo service: one SRV query over UDP (retried over TCP when
// truncated) to the name server berth passes in BERTH_DNS, returning "ip:port" per target from
// the additional section. Demo code: real services use their platform's resolver.
#pragma once

#include <string>
#include <vector>

namespace demo {

// Addresses (ip:port) behind `_PORT._tcp.NAME`; `error` says why when empty.
std::vector<std::string> resolve_srv(const std::string& server, const std::string& name, std::string& error);

}  // namespace demo
