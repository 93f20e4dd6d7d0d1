#include "runtime/runtime.h"

#include <sys/wait.h>

#include <cstring>
#include <fstream>

#include <fmt/format.h>

namespace berth::runtime {

std::string describe(const Exit& e) {
  if (!e.status_known) return "ended";
  if (e.signal) {
    const char* abbrev = sigabbrev_np(e.signal);
    return abbrev ? fmt::format("killed by SIG{}", abbrev) : fmt::format("killed by signal {}", e.signal);
  }
  // Commands run through sh: these two statuses are the shell's own.
  if (e.code == 127) return "exited with status 127: command not found";
  if (e.code == 126) return "exited with status 126: command not executable";
  return fmt::format("exited with status {}", e.code);
}

Exit exit_from_wait_status(int status) {
  Exit e;
  e.status_known = true;
  if (WIFEXITED(status)) {
    e.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    e.signal = WTERMSIG(status);
    e.code = 128 + e.signal;
  } else {
    e.code = status;
  }
  e.description = describe(e);
  return e;
}

namespace {
class FnCancel final : public Cancel {
 public:
  explicit FnCancel(std::function<void()> fn) : fn_(std::move(fn)) {}
  ~FnCancel() override { fn_(); }

 private:
  std::function<void()> fn_;
};
}  // namespace

std::unique_ptr<Cancel> cancel_with(std::function<void()> fn) { return std::make_unique<FnCancel>(std::move(fn)); }

Result<LogChunk> read_log_file(const std::string& log_path, std::int64_t offset, std::size_t max) {
  std::ifstream in(log_path, std::ios::binary | std::ios::ate);
  LogChunk chunk;
  if (!in) {
    chunk.offset = std::max<std::int64_t>(offset, 0);
    return chunk;  // nothing written yet
  }
  const auto size = static_cast<std::int64_t>(in.tellg());
  // An offset past the end: the file was cut (base/log_rotate.h) since the reader's last call;
  // it goes on from the newest `max` bytes.
  if (offset > size) offset = -static_cast<std::int64_t>(max);
  const std::int64_t from = offset < 0 ? std::max<std::int64_t>(0, size + offset) : offset;
  const auto n = static_cast<std::size_t>(std::min<std::int64_t>(size - from, static_cast<std::int64_t>(max)));
  chunk.text.resize(n);
  in.seekg(from);
  in.read(chunk.text.data(), static_cast<std::streamsize>(n));
  chunk.text.resize(static_cast<std::size_t>(in.gcount()));
  chunk.offset = from + static_cast<std::int64_t>(chunk.text.size());
  return chunk;
}

}  // namespace berth::runtime
