// engine/engine.h — an asynchronous client for the Docker Engine API (v1.41) on its
// unix socket, with Boost.Beast.
//
// The Engine owns one I/O thread with its own io_context; every request is a connection of its
// own on it, so a slow call (docker stop waits for the grace period, a build streams for
// minutes) never holds up another, and the caller's thread never blocks. Callbacks run on the
// Engine's I/O thread: a caller that owns state elsewhere posts from there to its own loop.
//
// Input from dockerd is bounded: a response body is at most 32 MiB (more is an error), a
// stream is handed over in pieces of at most 64 KiB as it arrives (the consumer bounds what it
// keeps). Destroying the Engine stops the thread; callbacks not yet run are dropped, and a
// StreamHandle may outlive it.
//
// Shared by the Docker runtime (runtime/docker: containers on one host) and the cluster
// (cluster/swarm: the Swarm's hosts and nodes), each with Engines of its own.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "base/clock.h"
#include "base/result.h"

namespace berth::engine {

struct Response {
  unsigned status = 0;
  std::string body;
  bool ok() const { return status >= 200 && status < 300; }
};

struct Call {
  std::string method = "GET";
  std::string target;            // "/containers/json?all=1"; the API version is prefixed
  std::string body;              // JSON text, or empty
  std::string body_file;         // instead of body: upload this file (a build context)
  std::string content_type = "application/json";
  Millis timeout_ms = 60'000;    // 0: none (streams)
};

// Ends a stream when destroyed (from any thread); its callbacks then stop.
class StreamHandle {
 public:
  virtual ~StreamHandle() = default;
};

class Engine {
 public:
  // `host` is "unix:///path/to/docker.sock" (or the bare path).
  static Result<std::unique_ptr<Engine>> open(const std::string& host);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const std::string& socket_path() const { return path_; }
  // One request. `done` runs on the I/O thread: a Response for any HTTP status, an Error when
  // dockerd could not be reached or answered garbage.
  void request(Call call, std::function<void(Result<Response>)> done);
  // A request whose body arrives over time (events, logs with follow, builds, exec output):
  // `on_data` gets each piece on the I/O thread (return false to stop), `done` once it ends with
  // the HTTP status (and the body, for a status that is not 2xx).
  std::unique_ptr<StreamHandle> stream(Call call, std::function<bool(std::string_view)> on_data,
                                       std::function<void(Result<Response>)> done);
  // "v1.41/": the prefix of every target.
  static constexpr std::string_view kApiVersion = "/v1.41";

 private:
  struct Impl;
  explicit Engine(std::string path);
  std::string path_;
  std::unique_ptr<Impl> impl_;
};

// The "message" of an Engine API error body ({"message": "..."}), or the body itself.
std::string error_message(const Response& response);

}  // namespace berth::engine
