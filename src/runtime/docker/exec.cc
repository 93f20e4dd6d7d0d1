// DockerRuntime: commands inside containers (Engine API exec) and image builds. Part of
// runtime/docker/docker_runtime.h.
#include "runtime/docker/docker_runtime.h"

#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <ctime>
#include <filesystem>
#include <mutex>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/text.h"
#include "runtime/docker/internal.h"

namespace berth::runtime::docker {
namespace fs = std::filesystem;
using nlohmann::json;

// ---- exec -------------------------------------------------------------------------------------

struct DockerRuntime::ExecOp {
  std::mutex mu;  // output is filled on the Engine's thread, read on the loop
  ExecResult result;
  Demux demux;
  std::size_t max = 0;
  std::unique_ptr<StreamHandle> stream;
  bool finished = false;  // loop thread
  Executor::TimerId timer = 0;
  std::function<void(Result<ExecResult>)> done;
};

std::unique_ptr<Cancel> DockerRuntime::exec(const Ref& ref, const ExecRequest& req,
                                            std::function<void(Result<ExecResult>)> done) {
  BERTH_ASSERT_LOOP(loop_);
  auto op = std::make_shared<ExecOp>();
  op->max = req.max_output;
  op->done = std::move(done);
  auto finish = [this, op](Result<ExecResult> r) {
    if (op->finished) return;
    op->finished = true;
    if (op->timer) loop_.cancel(op->timer);
    op->stream.reset();
    if (auto cb = std::move(op->done)) cb(std::move(r));
  };
  op->timer = loop_.after(req.timeout_ms, [op, finish] {
    op->timer = 0;
    ExecResult r;
    {
      std::lock_guard<std::mutex> lock(op->mu);
      r = op->result;
    }
    r.timed_out = true;
    r.exit.description = "timed out";
    finish(std::move(r));
  });
  json env = json::array();
  for (const auto& [k, v] : req.env) env.push_back(k + "=" + v);
  json body = {{"AttachStdout", true}, {"AttachStderr", true}, {"Cmd", req.argv}, {"Env", env}};
  call({"POST", "/containers/" + ref + "/exec", body.dump(), "", "application/json", 30'000},
       [this, op, finish, ref](Result<Response> r) {
         if (op->finished) return;
         if (!r.ok()) return finish(r.error());
         if (r->status == 404) return finish(not_found("the container is gone"));
         if (r->status == 409) return finish(conflict("the container is not running"));
         if (!r->ok()) return finish(unavailable("exec: " + error_message(*r)));
         json j = json::parse(r->body, nullptr, false);
         const std::string exec_id = j.is_object() ? j.value("Id", "") : "";
         if (exec_id.empty()) return finish(unavailable("exec: the Engine answered without an id"));
         json start = {{"Detach", false}, {"Tty", false}};
         op->stream = engine_->stream(
             {"POST", "/exec/" + exec_id + "/start", start.dump(), "", "application/json", 0},
             [op](std::string_view piece) {
               std::lock_guard<std::mutex> lock(op->mu);
               Status st = op->demux.feed(piece, [&](int, std::string_view p) {
                 const std::size_t room = op->max > op->result.output.size() ? op->max - op->result.output.size() : 0;
                 if (p.size() > room) op->result.truncated = true;
                 op->result.output.append(p.substr(0, room));
               });
               return st.ok();
             },
             [this, op, finish, exec_id, alive = std::weak_ptr<bool>(alive_)](Result<Response> end) {
               if (!alive.lock()) return;
               // The command is done: its exit code.
               call({"GET", "/exec/" + exec_id + "/json", "", "", "application/json", 30'000},
                    [op, finish, end](Result<Response> inspected) {
                      if (op->finished) return;
                      if (!end.ok()) return finish(end.error());
                      if (!inspected.ok()) return finish(inspected.error());
                      json info = json::parse(inspected->body, nullptr, false);
                      ExecResult res;
                      {
                        std::lock_guard<std::mutex> lock(op->mu);
                        res = op->result;
                      }
                      std::optional<int> code;
                      if (info.is_object() && info.contains("ExitCode") && info["ExitCode"].is_number_integer())
                        code = info["ExitCode"].get<int>();
                      res.exit = exit_of(code, false);
                      finish(std::move(res));
                    });
             });
       });
  return cancel_with([op] {
    op->finished = true;
    op->done = nullptr;
    op->stream.reset();
  });
}

// ---- images -----------------------------------------------------------------------------------

void DockerRuntime::build_image(const std::string& context_tar, const std::string& dockerfile, const std::string& tag,
                                const std::string& log_path, Millis timeout_ms, std::function<void(Result<std::string>)> done) {
  struct Build {
    int fd = -1;
    Lines lines{1 << 20};
    std::string error, image_id;
    ~Build() {
      if (fd >= 0) close(fd);
    }
  };
  auto b = std::make_shared<Build>();
  b->fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  const std::string target = fmt::format("/build?t={}&dockerfile={}&rm=1&forcerm=1", percent_encode(tag), percent_encode(dockerfile));
  const std::uint64_t build = ++next_build_;
  builds_[build] = engine_->stream(
      {"POST", target, "", context_tar, "application/x-tar", timeout_ms},
      [b](std::string_view piece) {
        b->lines.feed(piece, [&](std::string_view line, bool complete) {
          if (!complete) return;
          BuildMessage m = parse_build_message(line);
          std::string text = m.text;
          if (!m.error.empty()) {
            b->error = m.error;
            text += "error: " + m.error + "\n";
          }
          if (!m.image_id.empty()) b->image_id = m.image_id;
          if (b->fd >= 0 && !text.empty() && ::write(b->fd, text.data(), text.size()) < 0) {
            // the build goes on without its log
          }
        });
        return true;
      },
      [this, b, tag, build, done = std::move(done), alive = std::weak_ptr<bool>(alive_)](Result<Response> r) mutable {
        if (!alive.lock()) return;
        loop_.post([this, b, tag, build, r = std::move(r), done = std::move(done), alive]() mutable {
          if (!alive.lock()) return;
          builds_.erase(build);
          if (!r.ok()) return done(r.error().wrap("docker build"));
          if (!r->ok()) return done(unavailable("docker build: " + error_message(*r)));
          if (!b->error.empty()) return done(unavailable("docker build: " + b->error));
          done(b->image_id.empty() ? tag : b->image_id);
        });
      });
}

}  // namespace berth::runtime::docker
