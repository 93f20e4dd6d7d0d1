#include "build/builder.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/files.h"
#include "base/subprocess.h"
#include "base/text.h"

namespace berth::build {
namespace fs = std::filesystem;
namespace asio = boost::asio;
using nlohmann::json;

std::string_view to_string(State s) {
  switch (s) {
    case State::kQueued: return "queued";
    case State::kRunning: return "building";
    case State::kSucceeded: return "built";
    case State::kFailed: return "build-failed";
  }
  return "?";
}

std::string Request::id() const {
  // FNV-1a 64 over the identifying fields, separated so that no two requests collide by shifting.
  std::uint64_t h = 1469598103934665603ull;
  for (const std::string* f : {&repo, &commit, &build_type, &command, &artifact, &dockerfile}) {
    if (f == &dockerfile && dockerfile.empty()) break;  // file builds keep the ids they always had
    for (unsigned char c : *f) h = (h ^ c) * 1099511628211ull;
    h = (h ^ 0xFF) * 1099511628211ull;
  }
  return fmt::format("{:016x}", h);
}

namespace {

std::string tail_lines(const std::string& path, int n) {
  std::ifstream in(path);
  std::deque<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    lines.push_back(line);
    if (static_cast<int>(lines.size()) > n) lines.pop_front();
  }
  std::string out;
  for (const auto& l : lines) out += (out.empty() ? "" : "\n") + l;
  return out;
}

}  // namespace

// A child process with a timeout, watched through its pidfd.
struct Builder::Job {
  Job(asio::io_context& io) : fd(io) {}
  pid_t pid = -1;
  asio::posix::stream_descriptor fd;
  Executor::TimerId timer = 0;
  bool timed_out = false;
  // The exit handler; re-armed when a wake-up finds the process still running.
  std::function<void(const boost::system::error_code&)> wait;
};

Builder::Builder(asio::io_context& io, Executor& executor, const Clock& clock, std::string data_dir, int parallel)
    : io_(io), executor_(executor), clock_(clock), dir_(std::move(data_dir)), parallel_(std::max(1, parallel)) {
  std::error_code ec;
  fs::create_directories(fs::path(dir_) / "builds", ec);
  fs::create_directories(fs::path(dir_) / "artifacts", ec);
  load();
}

Builder::~Builder() {
  for (auto& [id, job] : jobs_) {
    if (job->pid > 0) ::kill(-job->pid, SIGKILL);
    if (job->timer) executor_.cancel(job->timer);
    // The exit handler holds its job (a cycle, leaked at exit: LeakSanitizer); the wait it armed
    // is cancelled and, never run, freed with the io_context's queue.
    job->wait = nullptr;
    boost::system::error_code ec;
    job->fd.close(ec);
  }
}

void Builder::load() {
  // Only finished builds are kept; anything else was interrupted and will run again.
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fs::path(dir_) / "builds", ec)) {
    // A build the previous daemon ran when it died: its process group still runs (git, the
    // recipe) and would write into the work tree the next run of the build starts afresh.
    if (std::ifstream running(entry.path() / "running"); running) {
      long long pid = 0, pgid = 0;
      unsigned long long ticks = 0;
      char sep = 0;
      if (running >> pid >> sep >> pgid >> sep >> ticks && pid > 0 && pgid > 0 &&
          process_start_ticks(static_cast<pid_t>(pid)) == ticks)
        ::kill(-static_cast<pid_t>(pgid), SIGKILL);
      fs::remove(entry.path() / "running", ec);
    }
    auto info = entry.path() / "build.json";
    std::ifstream in(info);
    auto j = json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.is_object()) continue;
    Build b;
    b.id = j.value("id", "");
    b.request = {j.value("repo", ""), j.value("commit", ""), j.value("build_type", ""), j.value("command", ""),
                 j.value("artifact", ""), j.value("timeout_ms", Millis{600000}), j.value("dockerfile", "")};
    std::string state = j.value("state", "");
    b.state = state == "built" ? State::kSucceeded : State::kFailed;
    if (state != "built" && state != "build-failed") continue;
    b.queued_at = j.value("queued_at", Millis{0});
    b.started_at = j.value("started_at", Millis{0});
    b.finished_at = j.value("finished_at", Millis{0});
    b.artifact_path = j.value("artifact_path", "");
    b.artifact_bytes = j.value("artifact_bytes", std::uint64_t{0});
    b.log_path = j.value("log_path", "");
    b.error = j.value("error", "");
    b.last_used = j.value("last_used", Millis{0});
    // (An image's artifact is a tag in dockerd, not a file here.)
    if (b.state == State::kSucceeded && b.request.dockerfile.empty() && !fs::exists(b.artifact_path)) continue;
    if (b.id.empty() || b.id != b.request.id()) continue;
    builds_[b.id] = b;
  }
}

void Builder::save(const Build& b) const {
  json j = {{"id", b.id}, {"repo", b.request.repo}, {"commit", b.request.commit}, {"build_type", b.request.build_type},
            {"command", b.request.command}, {"artifact", b.request.artifact}, {"timeout_ms", b.request.timeout_ms},
            {"dockerfile", b.request.dockerfile},
            {"state", std::string(to_string(b.state))}, {"queued_at", b.queued_at}, {"started_at", b.started_at},
            {"finished_at", b.finished_at}, {"artifact_path", b.artifact_path}, {"artifact_bytes", b.artifact_bytes},
            {"log_path", b.log_path}, {"error", b.error}, {"last_used", b.last_used}};
  // A build whose record cannot be written is built again after a restart: nothing is lost.
  (void)write_file_atomically((fs::path(dir_) / "builds" / b.id / "build.json").string(), j.dump(2));
}

void Builder::resolve(const std::string& repo, const std::string& ref, std::function<void(Result<std::string>)> done) {
  SpawnOptions o;
  o.command = fmt::format("git ls-remote -- {} {} {}", shell_quote(repo), shell_quote("refs/heads/" + ref),
                          shell_quote("refs/tags/" + ref));
  o.env = base_environment();
  o.env["GIT_TERMINAL_PROMPT"] = "0";
  std::string out_path = (fs::path(dir_) / "builds" / fmt::format("resolve-{}-{}.out", ::getpid(), ++resolves_)).string();
  o.log_path = out_path;
  o.die_with_parent = true;
  auto s = spawn(o);
  if (!s.ok()) return done(s.error());
  auto job = std::make_shared<Job>(io_);
  job->pid = s->pid;
  job->fd.assign(s->pidfd);
  job->timer = executor_.after(30'000, [job] {
    job->timed_out = true;
    ::kill(-job->pid, SIGKILL);
  });
  job->wait = [this, job, repo, ref, out_path, done](const boost::system::error_code&) {
    auto reaped = reap(job->pid);
    if (!reaped) return job->fd.async_wait(asio::posix::stream_descriptor::wait_read, job->wait);  // not yet
    int status = *reaped;
    job->wait = nullptr;  // breaks the job ↔ handler cycle (asio runs its own copy of this handler)
    executor_.cancel(job->timer);
    std::string out;
    {
      std::ifstream in(out_path);
      std::stringstream ss;
      ss << in.rdbuf();
      out = ss.str();
    }
    std::error_code ec;
    fs::remove(out_path, ec);
    if (job->timed_out) return done(unavailable(fmt::format("repository {}: git ls-remote timed out after 30s", repo)));
    if (status != 0) {
      while (!out.empty() && out.back() == '\n') out.pop_back();
      return done(unavailable(fmt::format("repository {} is unreachable: {}", repo, out)));
    }
    // Prefer a branch, then a tag's peeled commit (refs/tags/x^{}), then the tag object.
    std::string branch, tag, peeled;
    std::istringstream lines(out);
    std::string line;
    while (std::getline(lines, line)) {
      auto tab = line.find('\t');
      if (tab == std::string::npos) continue;
      std::string hash = line.substr(0, tab), name = line.substr(tab + 1);
      if (name == "refs/heads/" + ref) branch = hash;
      else if (name == "refs/tags/" + ref + "^{}") peeled = hash;
      else if (name == "refs/tags/" + ref) tag = hash;
    }
    if (!branch.empty()) return done(branch);
    if (!peeled.empty()) return done(peeled);
    if (!tag.empty()) return done(tag);
    bool hex = ref.size() >= 7 && ref.size() <= 40 && ref.find_first_not_of("0123456789abcdef") == std::string::npos;
    if (hex) return done(ref);  // a commit id: checked when the build checks it out
    done(not_found(fmt::format("repository {} has no branch or tag '{}'", repo, ref)));
  };
  job->fd.async_wait(asio::posix::stream_descriptor::wait_read, job->wait);
}

const Build& Builder::ensure(const Request& request) {
  std::string id = request.id();
  if (auto it = builds_.find(id); it != builds_.end()) return it->second;
  Build& b = builds_[id];
  b.id = id;
  b.request = request;
  b.queued_at = clock_.wall_ms();
  b.log_path = (fs::path(dir_) / "builds" / id / "build.log").string();
  queue_.push_back(id);
  executor_.post([this] { pump(); });
  return b;
}

const Build* Builder::find(const std::string& id) const {
  auto it = builds_.find(id);
  return it == builds_.end() ? nullptr : &it->second;
}

std::vector<const Build*> Builder::builds() const {
  std::vector<const Build*> out;
  for (const auto& [id, b] : builds_) out.push_back(&b);
  return out;
}

void Builder::pump() {
  while (running_ < parallel_ && !queue_.empty()) {
    std::string id = queue_.front();
    queue_.pop_front();
    auto it = builds_.find(id);
    if (it == builds_.end() || it->second.state != State::kQueued) continue;
    run(it->second);
  }
}

void Builder::run(Build& b) {
  ++running_;
  ++started_;
  b.state = State::kRunning;
  b.started_at = clock_.wall_ms();
  if (on_change_) on_change_(b);
  fs::path work = fs::path(dir_) / "builds" / b.id / "work";
  std::error_code ec;
  fs::remove_all(work, ec);
  fs::create_directories(work, ec);
  fs::remove(b.log_path, ec);
  SpawnOptions o;
  // A clean clone at the commit, then the recipe, all in one process group. An image recipe
  // then packs the checkout (without .git) as the build context.
  o.command = fmt::format(
      "sh -c 'set -e; echo \"berth: cloning $BERTH_REPO at $BERTH_COMMIT\"; "
      "git clone --quiet --no-checkout -- \"$BERTH_REPO\" src; cd src; git checkout --quiet --detach \"$BERTH_COMMIT\"; "
      "if [ -n \"$BERTH_RECIPE\" ]; then echo \"berth: building ($BERTH_BUILD_TYPE): $BERTH_RECIPE\"; sh -c \"$BERTH_RECIPE\"; fi; "
      "if [ -n \"$BERTH_DOCKERFILE\" ]; then echo \"berth: packing the build context for $BERTH_DOCKERFILE\"; "
      "tar --exclude=./.git -cf ../context.tar .; fi'");
  o.env = base_environment();
  o.env["GIT_TERMINAL_PROMPT"] = "0";
  o.env["BERTH_REPO"] = b.request.repo;
  o.env["BERTH_COMMIT"] = b.request.commit;
  o.env["BERTH_BUILD_TYPE"] = b.request.build_type;
  o.env["BUILD_TYPE"] = b.request.build_type;
  o.env["BERTH_RECIPE"] = b.request.command;
  o.env["BERTH_DOCKERFILE"] = b.request.dockerfile;
  o.cwd = work.string();
  o.log_path = b.log_path;
  if (identity_) {
    // The recipe's user owns only its work tree (and a HOME in it whose git config trusts the
    // repositories it clones, which belong to someone else); the directories above it are the
    // daemon's, entered but not listed by the group.
    const fs::path home = work / ".home";
    fs::create_directories(home, ec);
    Status st = write_file_atomically((home / ".gitconfig").string(), "[safe]\n\tdirectory = *\n");
    for (const fs::path& p : {fs::path(dir_) / "builds", work.parent_path()})
      if (st.ok()) st = open_to_group(p.string(), identity_->gid, 0710);
    if (st.ok()) st = chown_tree(work.string(), *identity_);
    if (!st.ok()) {
      --running_;
      finish(b.id, false, st.error().message);
      return;
    }
    o.identity = identity_;
    o.env["HOME"] = home.string();
  }
  auto s = spawn(o);
  if (!s.ok()) {
    --running_;
    finish(b.id, false, s.error().message);
    return;
  }
  // Recorded while it runs, so that a daemon killed meanwhile has its successor kill the group.
  if (Status rec = write_file_atomically((work.parent_path() / "running").string(),
                                         fmt::format("{}:{}:{}\n", s->pid, s->pid, s->start_ticks));
      !rec.ok())
    fmt::print(stderr, "berth: build {}: {}\n", b.id, rec.error().message);
  auto job = std::make_shared<Job>(io_);
  job->pid = s->pid;
  job->fd.assign(s->pidfd);
  jobs_[b.id] = job;
  std::string id = b.id;
  Millis timeout = b.request.timeout_ms;
  job->timer = executor_.after(timeout, [job] {
    job->timed_out = true;
    ::kill(-job->pid, SIGKILL);  // the whole group: whatever the recipe started goes too
  });
  job->wait = [this, job, id, timeout, work](const boost::system::error_code& woken) {
    if (woken == asio::error::operation_aborted) return;  // the builder is gone
    auto reaped = reap(job->pid);
    if (!reaped) return job->fd.async_wait(asio::posix::stream_descriptor::wait_read, job->wait);  // not yet
    int status = *reaped;
    job->wait = nullptr;
    ::kill(-job->pid, SIGKILL);  // leftovers of the recipe
    std::error_code rec;
    fs::remove(work.parent_path() / "running", rec);
    executor_.cancel(job->timer);
    jobs_.erase(id);
    --running_;
    auto it = builds_.find(id);
    if (it == builds_.end()) return;
    Build& built = it->second;
    if (job->timed_out) {
      finish(id, false, fmt::format("timed out after {}; its process group was killed", format_duration(timeout)));
    } else if (status != 0) {
      finish(id, false, describe_wait_status(status));
    } else if (!built.request.dockerfile.empty()) {
      ++running_;  // the image build keeps this build's slot until it is done
      return build_image(id, work, timeout);
    } else {
      fs::path produced = work / "src" / built.request.artifact;
      std::error_code fec;
      if (!fs::is_regular_file(produced, fec) && !fs::is_directory(produced, fec)) {
        finish(id, false, fmt::format("the recipe succeeded but left no artifact at {}", built.request.artifact));
      } else {
        fs::path dest_dir = fs::path(dir_) / "artifacts" / id;
        fs::remove_all(dest_dir, fec);
        fs::create_directories(dest_dir, fec);
        fs::path dest = dest_dir / produced.filename();
        fs::rename(produced, dest, fec);
        Status sealed = fec ? Status() : seal_artifact(dest_dir);
        if (!sealed.ok()) {
          finish(id, false, "cannot store the artifact: " + sealed.error().message);
        } else if (fec) {
          finish(id, false, fmt::format("cannot store the artifact: {}", fec.message()));
        } else {
          built.artifact_path = dest.string();
          built.artifact_bytes = fs::is_regular_file(dest) ? fs::file_size(dest) : 0;
          fs::remove_all(work, fec);
          finish(id, true, "");
        }
      }
    }
    pump();
  };
  job->fd.async_wait(asio::posix::stream_descriptor::wait_read, job->wait);
}

Status Builder::seal_artifact(const fs::path& dir) const {
  if (!identity_) return {};
  // The daemon's from now on: instances (the group) read and run it; no build can change it.
  const Identity daemon{static_cast<std::uint32_t>(::geteuid()), identity_->gid};
  BERTH_TRY(chown_tree(dir.string(), daemon));
  for (const fs::path& p : {fs::path(dir_) / "artifacts", dir}) BERTH_TRY(open_to_group(p.string(), identity_->gid, 0750));
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0 || S_ISLNK(st.st_mode)) continue;
    // Group gets what the owner has, except writing; others nothing.
    mode_t m = st.st_mode & 07700;
    m |= (st.st_mode & 0500) >> 3;
    if (S_ISDIR(st.st_mode)) m |= 0050;
    ::chmod(it->path().c_str(), m & ~static_cast<mode_t>(06000));
  }
  return {};
}

void Builder::build_image(const std::string& id, const fs::path& work, Millis timeout) {
  Build& b = builds_.at(id);
  if (!images_) {
    --running_;
    finish(id, false, "the recipe builds an image but this daemon has no container runtime (berth serve --docker-host)");
    return pump();
  }
  const std::string tag = "berth-build:" + id;
  images_->build_image((work / "context.tar").string(), b.request.dockerfile, tag, b.log_path, timeout,
                       [this, id, work, tag](Result<std::string> image) {
                         --running_;
                         if (!builds_.count(id)) return pump();
                         std::error_code ec;
                         fs::remove_all(work, ec);
                         if (!image.ok()) {
                           finish(id, false, image.error().message);
                         } else {
                           builds_.at(id).artifact_path = tag;
                           finish(id, true, "");
                         }
                         pump();
                       });
}

void Builder::finish(const std::string& id, bool ok, const std::string& error) {
  Build& b = builds_.at(id);
  b.state = ok ? State::kSucceeded : State::kFailed;
  b.finished_at = clock_.wall_ms();
  b.last_used = b.finished_at;
  if (!ok) {
    std::string tail = tail_lines(b.log_path, 5);
    b.error = error + (tail.empty() ? "" : "\n" + tail);
  }
  save(b);
  if (on_change_) on_change_(b);
}

void Builder::touch(const std::string& id) {
  if (auto it = builds_.find(id); it != builds_.end()) it->second.last_used = clock_.wall_ms();
}

void Builder::evict(std::uint64_t max_bytes, const std::set<std::string>& in_use) {
  std::uint64_t total = 0;
  std::vector<Build*> candidates;
  for (auto& [id, b] : builds_) {
    if (b.state != State::kSucceeded) continue;
    total += b.artifact_bytes;
    if (!in_use.count(id)) candidates.push_back(&b);
  }
  std::sort(candidates.begin(), candidates.end(), [](auto* a, auto* b) { return a->last_used < b->last_used; });
  for (Build* b : candidates) {
    if (total <= max_bytes) break;
    std::error_code ec;
    fs::remove_all(fs::path(dir_) / "artifacts" / b->id, ec);
    fs::remove_all(fs::path(dir_) / "builds" / b->id, ec);
    total -= b->artifact_bytes;
    builds_.erase(b->id);
  }
}

}  // namespace berth::build
