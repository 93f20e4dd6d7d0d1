// engine/stream.h — reading what dockerd streams: multiplexed output, JSON lines,
// container events. Pure parsers over untrusted input (dockerd, and whatever runs in the
// containers writing their output); fuzzed (fuzz/docker_fuzz.cc). No I/O, no shared state: a
// Demux or Lines object belongs to whoever feeds it (the Engine's thread), the functions are
// callable from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"

namespace berth::engine {

// The multiplexed stream of a container without a TTY (logs, attach, exec): frames of an 8-byte
// header [stream: 0 stdin, 1 stdout, 2 stderr][0 0 0][payload size, big-endian u32] and the
// payload. Fed in pieces of any size; hands payload pieces out as they arrive, buffering only
// a header, so a frame's announced size costs nothing until its bytes come.
class Demux {
 public:
  // `out(stream, piece)`. Error: a header that is not one of a multiplexed stream.
  Status feed(std::string_view data, const std::function<void(int stream, std::string_view piece)>& out);

 private:
  unsigned char header_[8] = {};
  std::size_t have_ = 0;      // header bytes so far
  std::uint32_t left_ = 0;    // payload bytes still to come in the current frame
  int stream_ = 0;
};

// Splits a byte stream into lines ('\n', a trailing '\r' dropped). A line longer than
// `max_line` is handed out in pieces of that length (`complete` false for all but the last).
class Lines {
 public:
  explicit Lines(std::size_t max_line = 1 << 20) : max_(max_line) {}
  void feed(std::string_view data, const std::function<void(std::string_view line, bool complete)>& out);
  // What is left without a newline at the end of the stream.
  void finish(const std::function<void(std::string_view line, bool complete)>& out);

 private:
  std::size_t max_;
  std::string partial_;
};

// "2026-12-02T05:20:53.488428753Z text" (logs with timestamps=1) → {"2026-…Z", "text"};
// a line without that prefix → {"", line}.
std::pair<std::string_view, std::string_view> split_timestamp(std::string_view line);

// One container event of GET /events.
struct ContainerEvent {
  std::string action;  // die, oom, start, destroy, …
  std::string id;      // the container's id
  std::optional<int> exit_code;  // die: its exit code
  std::map<std::string, std::string> attributes;  // labels and the like
};
// Parses one line of the events stream; nullopt when it is not a container event.
std::optional<ContainerEvent> parse_container_event(std::string_view line);

// One line of POST /build's progress: text to log, an error, or the built image's id.
struct BuildMessage {
  std::string text;
  std::string error;
  std::string image_id;
};
BuildMessage parse_build_message(std::string_view line);

}  // namespace berth::engine
