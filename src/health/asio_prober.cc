#include <signal.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <fmt/format.h>

#include "base/text.h"
#include "health/prober.h"

namespace berth::health {
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

using SteadyClock = std::chrono::steady_clock;

// A probe's timeout counts only time its thread could run it. The timer ticks every kTick (or
// less, up to the deadline); a tick that fires more than kLate after it was due shows that the
// thread was blocked or busy meanwhile (forking a thousand instances, building views), and that
// lag is added to the deadline. A late tick never ends a probe: it is followed by one due at
// once, which runs after whatever I/O completed meanwhile, so an answer that was already in the
// socket buffer is read before the probe can time out. Blocked time shorter than kLate, or
// before the last tick and not reaching it, is counted: the instance gets at least
// timeout - kTick of the thread's time. A probe of an instance that never answers still ends,
// once the thread has been free for `timeout` in all.
constexpr auto kTick = std::chrono::milliseconds(100);
constexpr auto kLate = std::chrono::milliseconds(5);

// State of one probe in flight. Shared by the async handlers; `finish` runs the callback once.
struct Probe : std::enable_shared_from_this<Probe> {
  explicit Probe(asio::io_context& io) : socket(io), timer(io) {}

  tcp::socket socket;
  asio::steady_timer timer;
  Millis timeout = 0;
  SteadyClock::time_point deadline;  // moved later by the time the thread was found blocked
  SteadyClock::duration blocked{};   // by how much
  asio::streambuf buffer{4096};  // a status line longer than this is not an HTTP answer
  std::string request;
  std::function<void(ProbeResult)> done;
  std::string what;  // "GET /healthcheck", "TCP 127.77.0.3:8080", "exec"

  void finish(bool ok, const std::string& detail, bool inconclusive = false) {
    if (!done) return;
    auto cb = std::move(done);
    done = nullptr;
    boost::system::error_code ignored;
    timer.cancel();
    socket.close(ignored);
    cb({ok, detail, inconclusive});
  }
  // A failure of the daemon's own, not of the instance: no socket could be made.
  void finish_error(const boost::system::error_code& e);
  void cancel() {
    done = nullptr;
    boost::system::error_code ignored;
    timer.cancel();
    socket.close(ignored);
  }
  // The next tick, due at `due`.
  void tick(SteadyClock::time_point due) {
    timer.expires_at(due);
    timer.async_wait([p = shared_from_this(), due](const boost::system::error_code& ec) {
      if (ec || !p->done) return;
      const auto now = SteadyClock::now();
      if (now - due > kLate) {
        p->deadline += now - due;
        p->blocked += now - due;
        return p->tick(now);
      }
      if (now >= p->deadline) {
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(p->blocked).count();
        return p->finish(false, fmt::format("{} → timed out after {}{}", p->what, format_duration(p->timeout),
                                            ms > 0 ? fmt::format(" (not counting {} berth was busy)", format_duration(ms))
                                                   : ""));
      }
      p->tick(std::min(p->deadline, now + kTick));
    });
  }
};

class Handle final : public ProbeHandle {
 public:
  explicit Handle(std::shared_ptr<Probe> p) : p_(std::move(p)) {}
  ~Handle() override { p_->cancel(); }

 private:
  std::shared_ptr<Probe> p_;
};

std::string describe(const boost::system::error_code& ec) {
  if (ec == asio::error::connection_refused) return "connection refused";
  if (ec == asio::error::eof) return "connection closed without a response";
  return ec.message();
}

bool daemon_side(const boost::system::error_code& e) {
  return e == asio::error::no_descriptors || e == asio::error::no_buffer_space || e == asio::error::no_memory ||
         e == boost::system::errc::too_many_files_open_in_system;
}

void Probe::finish_error(const boost::system::error_code& e) {
  if (daemon_side(e)) return finish(false, fmt::format("berth could not probe: {}", e.message()), true);
  finish(false, fmt::format("{} → {}", what, describe(e)));
}

void start_http(const std::shared_ptr<Probe>& p, const ProbeTarget& t) {
  p->what = fmt::format("GET {}", t.spec.path);
  p->request = fmt::format("GET {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: berth-health\r\nConnection: close\r\n\r\n",
                           t.spec.path, t.ip, t.port);
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(t.ip, ec);
  if (ec) return p->finish(false, fmt::format("{} → bad address {}", p->what, t.ip));
  auto expect = t.spec.expect;
  p->socket.async_connect(tcp::endpoint(addr, static_cast<unsigned short>(t.port)), [p, expect](const boost::system::error_code& e) {
    if (e) return p->finish_error(e);
    asio::async_write(p->socket, asio::buffer(p->request), [p, expect](const boost::system::error_code& we, std::size_t) {
      if (we) return p->finish(false, fmt::format("{} → {}", p->what, describe(we)));
      asio::async_read_until(p->socket, p->buffer, "\r\n", [p, expect](const boost::system::error_code& re, std::size_t n) {
        if (re == asio::error::not_found)  // the buffer's bound reached without a line end
          return p->finish(false, fmt::format("{} → no HTTP status line in the first {} KiB", p->what,
                                              p->buffer.max_size() / 1024));
        if (re && n == 0) return p->finish(false, fmt::format("{} → {}", p->what, describe(re)));
        std::string line(asio::buffers_begin(p->buffer.data()), asio::buffers_begin(p->buffer.data()) + static_cast<long>(n));
        // "HTTP/1.1 200 OK\r\n"
        int code = 0;
        if (line.rfind("HTTP/", 0) == 0) {
          auto sp = line.find(' ');
          if (sp != std::string::npos) code = std::atoi(line.c_str() + sp + 1);
        }
        if (code == 0) return p->finish(false, fmt::format("{} → not an HTTP response", p->what));
        bool ok = std::find(expect.begin(), expect.end(), code) != expect.end();
        p->finish(ok, fmt::format("{} → {}", p->what, code));
      });
    });
  });
}

void start_tcp(const std::shared_ptr<Probe>& p, const ProbeTarget& t) {
  p->what = fmt::format("TCP {}:{}", t.ip, t.port);
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(t.ip, ec);
  if (ec) return p->finish(false, fmt::format("{} → bad address", p->what));
  p->socket.async_connect(tcp::endpoint(addr, static_cast<unsigned short>(t.port)), [p](const boost::system::error_code& e) {
    if (e) return p->finish_error(e);
    p->finish(true, fmt::format("{} → connected", p->what));
  });
}

}  // namespace

std::unique_ptr<ProbeHandle> AsioProber::probe(const ProbeTarget& target, std::function<void(ProbeResult)> done) {
  auto p = std::make_shared<Probe>(io_);
  p->done = std::move(done);
  p->timeout = target.spec.timeout_ms;
  const auto now = SteadyClock::now();
  p->deadline = now + std::chrono::milliseconds(target.spec.timeout_ms);
  p->tick(std::min(p->deadline, now + kTick));
  if (open_ && (target.spec.type == model::HealthType::kHttp || target.spec.type == model::HealthType::kTcp)) {
    auto fd = open_();
    if (!fd.ok()) {
      p->finish(false, fmt::format("berth could not probe: {}", fd.error().message), true);
      return std::make_unique<Handle>(p);
    }
    boost::system::error_code ec;
    p->socket.assign(tcp::v4(), *fd, ec);
    if (ec) {
      ::close(*fd);
      p->finish(false, fmt::format("berth could not probe: {}", ec.message()), true);
      return std::make_unique<Handle>(p);
    }
  }
  switch (target.spec.type) {
    case model::HealthType::kHttp: start_http(p, target); break;
    case model::HealthType::kTcp: start_tcp(p, target); break;
    case model::HealthType::kExec: p->finish(false, "exec checks run inside the instance, not from the daemon"); break;
    case model::HealthType::kNone: p->finish(true, "no health check"); break;
  }
  return std::make_unique<Handle>(p);
}

}  // namespace berth::health
