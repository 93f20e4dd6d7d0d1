// build/builder.h — apps built from their sources: a git ref resolved to a commit, the commit
// built with the recipe of its build_type, the artifact kept in a store shared by every
// environment.
//
// A build is identified by (repository, commit, build_type, recipe command, artifact path):
// twenty environments on one commit share one build, and a branch that has not moved is not
// rebuilt. Each build runs in a clean clone checked out at the commit, in its own process group,
// with a timeout that kills the whole group, its output in a log file. At most `parallel` builds
// run at once; the rest queue. Finished builds survive daemon restarts: on start the store is
// scanned and builds that did not finish are forgotten (they run again when asked for).
//
// A recipe may build an image instead of a file (`dockerfile` set): after its command (if any)
// the checkout is packed into a build context and handed to an ImageBuilder (the Docker
// runtime's, through the Engine API); the artifact is then the image's tag,
// berth-build:<build id>, shared like files by every environment on the same commit. Images
// are not evicted by the artifact store's LRU (they live in dockerd, not in the store).
//
// Threading: all calls and callbacks happen on the owner's loop (the Executor); git and the
// recipes run as child processes watched through pidfds on the same io_context.
#pragma once

#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include <boost/asio/io_context.hpp>

#include "base/clock.h"
#include "base/identity.h"
#include "base/executor.h"
#include "base/result.h"

namespace berth::build {

struct Request {
  std::string repo;
  std::string commit;
  std::string build_type;
  std::string command;   // run by sh in the checkout; ${build_type} already substituted
  std::string artifact;  // path of the artifact relative to the checkout
  Millis timeout_ms = 10 * 60 * 1000;
  std::string dockerfile;  // set: the build makes an image from the checkout with this Dockerfile
  std::string id() const;  // hash of the identifying fields
};

// Builds images for recipes that make one. Called and answering on the loop.
class ImageBuilder {
 public:
  virtual ~ImageBuilder() = default;
  // Build from `context_tar` (the checkout, packed) with the Dockerfile at `dockerfile` inside
  // it, tagged `tag`, its output appended to `log_path`; `done` gets the image's id.
  virtual void build_image(const std::string& context_tar, const std::string& dockerfile, const std::string& tag,
                           const std::string& log_path, Millis timeout_ms, std::function<void(Result<std::string>)> done) = 0;
};

enum class State { kQueued, kRunning, kSucceeded, kFailed };
std::string_view to_string(State s);

struct Build {
  std::string id;
  Request request;
  State state = State::kQueued;
  Millis queued_at = 0, started_at = 0, finished_at = 0;  // wall
  std::string artifact_path;  // absolute, once succeeded
  std::uint64_t artifact_bytes = 0;
  std::string log_path;
  std::string error;          // failed: the reason and the last lines of the log
  Millis last_used = 0;
};

class Builder {
 public:
  Builder(boost::asio::io_context& io, Executor& executor, const Clock& clock, std::string data_dir, int parallel);
  ~Builder();

  // Resolve `ref` (branch, tag or commit) of `repo` to a commit id with `git ls-remote`.
  // Calls `done` on the loop; errors name the repository and the ref.
  void resolve(const std::string& repo, const std::string& ref, std::function<void(Result<std::string>)> done);

  // The build for `request`: an existing one (any state) or a newly queued one. `on_change` is
  // called on the loop whenever any build changes state.
  const Build& ensure(const Request& request);
  const Build* find(const std::string& id) const;
  std::vector<const Build*> builds() const;
  void set_on_change(std::function<void(const Build&)> fn) { on_change_ = std::move(fn); }
  // Where image recipes are built; without one they fail saying so. Must outlive the Builder.
  void set_image_builder(ImageBuilder* images) { images_ = images; }
  // Run recipes (what a branch's code does at build time) as this user (a root daemon's
  // IdRange::builder()) with its group as the only one; artifacts are then stored as the
  // daemon's, readable by that group, writable by nobody else. Unset: as the daemon's user.
  void set_identity(std::optional<Identity> who) { identity_ = who; }
  // Mark a build's artifact as in use now (LRU), and evict least recently used artifacts that
  // are not in `in_use` until the store is at most `max_bytes`.
  void touch(const std::string& id);
  void evict(std::uint64_t max_bytes, const std::set<std::string>& in_use);
  std::uint64_t started_count() const { return started_; }

 private:
  struct Job;
  std::optional<Identity> identity_;
  std::uint64_t resolves_ = 0;  // names each resolve's output file: two may run in one millisecond
  void pump();
  void run(Build& b);
  Status seal_artifact(const std::filesystem::path& dir) const;
  void build_image(const std::string& id, const std::filesystem::path& work, Millis timeout);
  void finish(const std::string& id, bool ok, const std::string& error);
  void load();
  void save(const Build& b) const;

  boost::asio::io_context& io_;
  Executor& executor_;
  const Clock& clock_;
  std::string dir_;
  int parallel_;
  int running_ = 0;
  std::uint64_t started_ = 0;
  std::map<std::string, Build> builds_;
  std::deque<std::string> queue_;
  std::map<std::string, std::shared_ptr<Job>> jobs_;
  std::function<void(const Build&)> on_change_;
  ImageBuilder* images_ = nullptr;
};

}  // namespace berth::build
