#include "engine/engine.h"

#include <array>
#include <atomic>
#include <mutex>
#include <optional>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace berth::engine {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using local = asio::local::stream_protocol;

namespace {

constexpr std::size_t kMaxBody = 32u << 20;
constexpr std::size_t kMaxErrorBody = 64u << 10;

// One request on a connection of its own.
struct Op : std::enable_shared_from_this<Op> {
  explicit Op(asio::io_context& io) : socket(io), timer(io) {}

  local::socket socket;
  asio::steady_timer timer;
  beast::flat_buffer buffer;
  Call call;
  std::function<void(Result<Response>)> done;
  std::function<bool(std::string_view)> on_data;  // streams only
  std::optional<http::response_parser<http::string_body>> parser;
  std::optional<http::response_parser<http::buffer_body>> stream_parser;
  std::array<char, 64 << 10> chunk{};
  unsigned status = 0;
  std::string error_body;
  bool cancelled = false;

  std::string what() const { return fmt::format("{} {}", call.method, call.target.substr(0, call.target.find('?'))); }

  void finish(Result<Response> r) {
    if (!done) return;
    auto cb = std::move(done);
    done = nullptr;
    on_data = nullptr;
    boost::system::error_code ignored;
    timer.cancel();
    socket.close(ignored);
    if (!cancelled) cb(std::move(r));
  }
  void fail(const boost::system::error_code& ec, const char* during) {
    finish(unavailable(fmt::format("Docker Engine API {} ({}): {} {}", what(), during, ec.message(),
                                   ec == asio::error::connection_refused || ec == boost::system::errc::no_such_file_or_directory
                                       ? "(is dockerd running on this socket?)"
                                       : "")));
  }
  void cancel() {
    cancelled = true;
    boost::system::error_code ignored;
    socket.close(ignored);
    timer.cancel();
  }

  template <class Body>
  void send(std::shared_ptr<http::request<Body>> req) {
    http::async_write(socket, *req, [self = shared_from_this(), req](const boost::system::error_code& ec, std::size_t) {
      if (ec) return self->fail(ec, "writing the request");
      if (self->on_data) self->read_stream_header();
      else self->read_response();
    });
  }

  void start(const std::string& path) {
    if (call.timeout_ms > 0) {
      timer.expires_after(std::chrono::milliseconds(call.timeout_ms));
      timer.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
        if (ec) return;
        self->finish(unavailable(fmt::format("Docker Engine API {}: no answer within {} ms", self->what(), self->call.timeout_ms)));
      });
    }
    socket.async_connect(local::endpoint(path), [self = shared_from_this()](const boost::system::error_code& ec) {
      if (ec) return self->fail(ec, "connecting");
      const std::string target = std::string(Engine::kApiVersion) + self->call.target;
      const auto verb = http::string_to_verb(self->call.method);
      if (!self->call.body_file.empty()) {
        auto req = std::make_shared<http::request<http::file_body>>(verb, target, 11);
        beast::error_code fec;
        req->body().open(self->call.body_file.c_str(), beast::file_mode::scan, fec);
        if (fec) return self->finish(unavailable(fmt::format("cannot read {}: {}", self->call.body_file, fec.message())));
        req->set(http::field::host, "docker");
        req->set(http::field::content_type, self->call.content_type);
        req->prepare_payload();
        return self->send(req);
      }
      auto req = std::make_shared<http::request<http::string_body>>(verb, target, 11);
      req->set(http::field::host, "docker");
      if (!self->call.body.empty()) req->set(http::field::content_type, self->call.content_type);
      req->body() = self->call.body;
      req->prepare_payload();
      self->send(req);
    });
  }

  void read_response() {
    parser.emplace();
    parser->body_limit(kMaxBody);
    parser->header_limit(64 << 10);
    http::async_read(socket, buffer, *parser, [self = shared_from_this()](const boost::system::error_code& ec, std::size_t) {
      if (ec) return self->fail(ec, "reading the response");
      auto res = self->parser->release();
      self->finish(Response{res.result_int(), std::move(res.body())});
    });
  }

  void read_stream_header() {
    stream_parser.emplace();
    stream_parser->body_limit(boost::none);  // unbounded in total; handed over in bounded pieces
    stream_parser->header_limit(64 << 10);
    http::async_read_header(socket, buffer, *stream_parser, [self = shared_from_this()](const boost::system::error_code& ec, std::size_t) {
      if (ec) return self->fail(ec, "reading the response header");
      self->status = self->stream_parser->get().result_int();
      if (self->stream_parser->is_done()) return self->finish(Response{self->status, {}});
      self->read_stream_body();
    });
  }

  void read_stream_body() {
    auto& body = stream_parser->get().body();
    body.data = chunk.data();
    body.size = chunk.size();
    http::async_read_some(socket, buffer, *stream_parser, [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
      if (!self->done) return;
      const std::size_t got = self->chunk.size() - self->stream_parser->get().body().size;
      if (ec == http::error::need_buffer) ec = {};
      if (got) {
        std::string_view piece(self->chunk.data(), got);
        if (self->status >= 200 && self->status < 300) {
          if (self->on_data && !self->on_data(piece)) return self->finish(Response{self->status, {}});
        } else if (self->error_body.size() < kMaxErrorBody) {
          self->error_body.append(piece.substr(0, kMaxErrorBody - self->error_body.size()));
        }
      }
      if (ec == http::error::end_of_stream || ec == asio::error::eof) return self->finish(Response{self->status, self->error_body});
      if (ec) return self->fail(ec, "reading the stream");
      if (self->stream_parser->is_done()) return self->finish(Response{self->status, self->error_body});
      self->read_stream_body();
    });
  }
};

// A handle may outlive the Engine (its owner is destroyed after the Engine): it shares the
// io_context, so its Op (whose socket and timer belong to that io_context) never outlives it,
// and its cancel is queued there, to be destroyed unrun with the io_context if the thread is gone.
class Handle final : public StreamHandle {
 public:
  Handle(std::shared_ptr<asio::io_context> io, std::shared_ptr<Op> op) : io_(std::move(io)), op_(std::move(op)) {}
  ~Handle() override {
    asio::post(*io_, [op = op_] { op->cancel(); });
  }

 private:
  std::shared_ptr<asio::io_context> io_;  // declared first: destroyed after op_
  std::shared_ptr<Op> op_;
};

}  // namespace

struct Engine::Impl {
  std::shared_ptr<asio::io_context> io_ptr = std::make_shared<asio::io_context>(1);
  asio::io_context& io = *io_ptr;
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  std::thread thread;
  // Streams whose handle is still held: their callbacks are dropped when the Engine goes.
  std::mutex mu;
  std::vector<std::weak_ptr<Op>> streams;
};

Engine::Engine(std::string path) : path_(std::move(path)), impl_(std::make_unique<Impl>()) {}

Result<std::unique_ptr<Engine>> Engine::open(const std::string& host) {
  std::string path = host;
  if (path.rfind("unix://", 0) == 0) path = path.substr(7);
  if (path.empty() || path.front() != '/')
    return invalid(fmt::format("--docker-host '{}': expected unix:///path/to/docker.sock (the Engine API's unix socket)", host));
  if (path.size() >= sizeof(sockaddr_un::sun_path))
    return invalid(fmt::format("--docker-host '{}': the socket path is longer than a unix socket path can be", host));
  std::unique_ptr<Engine> e(new Engine(path));
  e->impl_->thread = std::thread([impl = e->impl_.get()] {
    // The edge of this thread: a handler's exception must not end the daemon.
    while (true) {
      try {
        impl->io.run();
        return;
      } catch (const std::exception&) {
        // The handler that threw is gone; its request never answers (its timeout does).
      }
    }
  });
  return e;
}

Engine::~Engine() {
  impl_->work.reset();
  impl_->io.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
  // Callbacks not yet run are dropped, here and not when the last handle goes: a callback
  // often holds the owner of its own stream's handle (a log follower, an exec), and that cycle
  // would otherwise keep both, and what they hold, forever.
  std::vector<std::function<void(Result<Response>)>> done;
  std::vector<std::function<bool(std::string_view)>> on_data;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    for (auto& weak : impl_->streams)
      if (auto op = weak.lock()) {
        done.push_back(std::move(op->done));
        on_data.push_back(std::move(op->on_data));
        op->done = nullptr;
        op->on_data = nullptr;
        op->cancel();  // its connection closes now, not when its handle goes
      }
    impl_->streams.clear();
  }
  // `done` and `on_data` go here, outside the lock: what they hold may end other handles.
}

void Engine::request(Call call, std::function<void(Result<Response>)> done) {
  auto op = std::make_shared<Op>(impl_->io);
  op->call = std::move(call);
  op->done = std::move(done);
  asio::post(impl_->io, [op, path = path_] { op->start(path); });
}

std::unique_ptr<StreamHandle> Engine::stream(Call call, std::function<bool(std::string_view)> on_data,
                                             std::function<void(Result<Response>)> done) {
  auto op = std::make_shared<Op>(impl_->io);
  op->call = std::move(call);
  op->on_data = std::move(on_data);
  op->done = std::move(done);
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    std::erase_if(impl_->streams, [](const std::weak_ptr<Op>& w) { return w.expired(); });
    impl_->streams.push_back(op);
  }
  asio::post(impl_->io, [op, path = path_] { op->start(path); });
  return std::make_unique<Handle>(impl_->io_ptr, op);
}

std::string error_message(const Response& r) {
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  if (j.is_object() && j.contains("message") && j["message"].is_string()) return j["message"].get<std::string>();
  std::string text = r.body.substr(0, 500);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text.empty() ? fmt::format("HTTP {}", r.status) : text;
}

}  // namespace berth::engine
