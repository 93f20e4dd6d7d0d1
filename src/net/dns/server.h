// net/dns/server.h — the authoritative name server: UDP and TCP on one address.
//
// Threads: one UDP thread (recvmmsg/sendmmsg in batches of up to 64) and one TCP thread (asio;
// RFC 7766 length-prefixed messages, several per connection, idle connections closed after
// 10 s, at most 256 at once and 16 per client address; accept errors back off 100 ms). Neither owns berth state: they read the latest Zone snapshot,
// which the control loop replaces with publish() — an atomic pointer swap, visible to the next
// batch of queries. The Server owns its threads and sockets; destroying it stops and joins them.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "base/result.h"
#include "net/dns/zone.h"

namespace berth::dns {

class Server {
 public:
  // `listen` is "ADDR:PORT" (port 0: any free port, the same for UDP and TCP).
  static Result<std::unique_ptr<Server>> start(const std::string& listen, std::shared_ptr<const Zone> zone);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  void publish(std::shared_ptr<const Zone> zone) { zone_.store(std::move(zone)); }
  std::shared_ptr<const Zone> zone() const { return zone_.load(); }
  const std::string& address() const { return address_; }  // ADDR:PORT actually bound

 private:
  Server() = default;
  void udp_loop();
  struct Tcp;

  std::atomic<std::shared_ptr<const Zone>> zone_;
  std::atomic<bool> stop_{false};
  int udp_fd_ = -1;
  std::string address_;
  std::unique_ptr<Tcp> tcp_;
  std::thread udp_thread_;
};

}  // namespace berth::dns
