// runtime/docker/internal.h — what the Docker runtime's files share: its per-container state and
// small helpers. Internal to runtime/docker; not part of its interface.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "runtime/docker/docker_runtime.h"
#include "engine/stream.h"

namespace berth::runtime::docker {

// Parsers of what dockerd streams (engine/stream.h).
using engine::BuildMessage;
using engine::ContainerEvent;
using engine::Demux;
using engine::Lines;
using engine::parse_build_message;
using engine::parse_container_event;
using engine::split_timestamp;

std::string short_id(const std::string& id);
// "2026-12-02T05:20:53.488428753Z" → "1764652853.488428754": the Engine's `since` takes Unix
// time, and one nanosecond later leaves out the line that was last written.
std::string since_after(std::string_view rfc3339);
// A container's exit code as the shell would report it: above 128 it was killed by a signal.
Exit exit_of(std::optional<int> code, bool oom);

struct DockerRuntime::Container {
  enum class State { kCreating, kCreated, kStarting, kRunning, kExiting };
  InstanceSpec spec;  // kept for the launch steps; empty for an adopted container
  InstanceId id;
  std::uint64_t launch = 0;
  std::string name;
  Ref ref;
  std::string network;  // the Docker network's name
  std::string log_path;
  State state = State::kCreating;
  bool stop_requested = false;
  Millis grace_ms = 5000;
  bool died = false;                // a die event came
  std::optional<int> exit_code;
  bool exit_known = false;
  bool oom = false;
  bool started = false;             // its start succeeded (or it was adopted running)
  bool seeded = false;              // a volume of it was filled from its Mount::seed (seed.cc)
  bool reported = false;            // on_exited sent (or the launch failed)
  bool logs_drained = false;
  Executor::TimerId drain_timer = 0;
  std::shared_ptr<LogFollower> log;
};

struct DockerRuntime::NetworkState {
  bool ready = false;
  bool working = false;
  Status status;
  Network network;
  std::vector<std::function<void(Status)>> waiters;
};

// Appends a container's output to its log file; lives on the Engine's thread.
struct DockerRuntime::LogFollower : std::enable_shared_from_this<LogFollower> {
  std::string log_path, pos_path;
  int fd = -1, pos_fd = -1;
  Demux demux;
  Lines lines[3];
  bool continuing[3] = {false, false, false};
  std::string last_ts;
  std::unique_ptr<StreamHandle> stream;
  ~LogFollower() {
    if (fd >= 0) close(fd);
    if (pos_fd >= 0) close(pos_fd);
  }
  // Returns false (stop) when the stream is not what it should be.
  bool take(std::string_view piece) {
    std::string out;
    Status st = demux.feed(piece, [&](int s, std::string_view p) {
      lines[s].feed(p, [&](std::string_view line, bool complete) {
        std::string_view text = line;
        if (!continuing[s]) {
          auto [ts, rest] = split_timestamp(line);
          if (!ts.empty()) last_ts = ts;
          text = rest;
        }
        out.append(text);
        if (complete) out += '\n';
        continuing[s] = !complete;
      });
    });
    write_out(out);
    return st.ok();
  }
  void write_out(const std::string& out) {
    if (out.empty() || fd < 0) return;
    for (std::size_t off = 0; off < out.size();) {
      ssize_t n = ::write(fd, out.data() + off, out.size() - off);
      if (n <= 0) break;  // a full disk loses output, not the daemon
      off += static_cast<std::size_t>(n);
    }
    if (pos_fd >= 0 && !last_ts.empty()) {
      std::string padded = last_ts;
      padded.resize(40, ' ');
      if (::pwrite(pos_fd, padded.data(), padded.size(), 0) < 0) {
        // Only a resume after a daemon restart would repeat some lines.
      }
    }
  }
  void finish() {
    std::string out;
    for (int s = 0; s < 3; ++s)
      lines[s].finish([&](std::string_view line, bool) {
        out.append(continuing[s] ? line : split_timestamp(line).second);
        out += '\n';
      });
    write_out(out);
  }
};

}  // namespace berth::runtime::docker
