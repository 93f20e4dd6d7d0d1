// cli/interact.cc — what the CLI does with a running daemon beyond one request.
#include "cli/interact.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "base/text.h"
#include "cli/render.h"

namespace berth::cli {

using nlohmann::json;
namespace bc = berth::client;

int fail(const berth::Error& e) {
  fmt::print(stderr, "berth: {}\n", e.message);
  // Multi-error messages already list their details.
  if (e.details.size() > 1 && e.message.find('\n') == std::string::npos)
    for (const auto& d : e.details) fmt::print(stderr, "  {}\n", d);
  return 1;
}

namespace {

berth::Millis now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

// Follow the environment's event stream until `done(status)` holds, printing events as they
// happen; the status is checked after each event, and each second without one.
int follow(bc::Client& c, const std::string& env, std::int64_t after, berth::Millis timeout_ms, bool quiet,
           const std::function<bool(const json&)>& done, const std::string& what) {
  const berth::Millis deadline = now_ms() + timeout_ms;
  std::string last_summary;
  int rc = -1;
  auto check = [&]() {
    auto status = c.get("/v1/environments/" + percent_encode(env));
    if (!status.ok()) {
      rc = fail(status.error());
      return false;
    }
    const std::string summary = berth::cli::progress_summary(*status);
    if (done(*status)) {
      // Down: say so, not "0/8 apps ready" as if that were a failure.
      if (!quiet) fmt::print("{}: {}\n", env, what == "down" ? "down; every instance it runs is stopped" : summary);
      rc = 0;
      return false;
    }
    if (!quiet && summary != last_summary) fmt::print("  … {}\n", summary);
    last_summary = summary;
    if (now_ms() > deadline) {
      fmt::print(stderr, "berth: {} {} timed out after {}: {}\n", what, env, berth::format_duration(timeout_ms), summary);
      for (const auto& cause : berth::cli::root_causes(*status)) fmt::print(stderr, "  root cause: {}\n", cause);
      rc = 1;
      return false;
    }
    return true;
  };
  if (!check()) return rc;
  berth::Status st = c.stream(fmt::format("/v1/events/stream?env={}&after={}", percent_encode(env), after), [&](const json* e) {
    if (e && !quiet) fmt::print("{}\n", berth::cli::event_line(*e));
    std::fflush(stdout);
    return check();
  }, 1000);
  if (!st.ok()) return fail(st.error());
  return rc < 0 ? 1 : rc;
}

// Poll a database job, showing its phase, bytes, rate and ETA on one line, until it ends.
int follow_job(bc::Client& c, const std::string& id, bool quiet) {
  const bool tty = ::isatty(STDOUT_FILENO);
  auto t0 = std::chrono::steady_clock::now();  // start of the current phase: rates are per phase
  std::uint64_t done0 = 0;                    // bytes done when it started
  std::string last_phase;
  while (true) {
    auto r = c.get("/v1/jobs/" + percent_encode(id));
    if (!r.ok()) return fail(r.error());
    const json& j = *r;
    if (j["phase"] != last_phase) {
      t0 = std::chrono::steady_clock::now();
      done0 = j["done_bytes"].get<std::uint64_t>();
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!quiet) {
      const std::string phase = j["phase"];
      const auto done = j["done_bytes"].get<std::uint64_t>(), total = j["total_bytes"].get<std::uint64_t>();
      std::string line = phase;
      if (total > 0) {
        const double rate = secs > 0.2 ? static_cast<double>(done - std::min(done, done0)) / secs : 0;
        line += fmt::format("  {} / {}", berth::format_bytes(done), berth::format_bytes(total));
        if (rate > 0) line += fmt::format("  {}/s", berth::format_bytes(static_cast<std::uint64_t>(rate)));
        if (rate > 0 && done < total) line += fmt::format("  ETA {:.0f}s", (total - done) / rate);
      }
      if (tty) fmt::print("\r\033[K{}", line);
      else if (phase != last_phase) fmt::print("{}\n", line);
      std::fflush(stdout);
      last_phase = phase;
    }
    if (j["done"].get<bool>()) {
      if (tty && !quiet) fmt::print("\n");
      if (!quiet && j.contains("migrations"))  // (a migrate job: what ran, also before a failure)
        for (const auto& m : j["migrations"]) fmt::print("applied {}\n", m["file"].get<std::string>());
      if (!j["error"].is_null()) {
        fmt::print(stderr, "berth: {} failed: {}\n", j["target"].get<std::string>(), j["error"].get<std::string>());
        return 1;
      }
      if (!quiet && j.contains("version")) {
        const json& v = j["version"];
        fmt::print("{}@{}: {} in {} files, {} chunks; {} new chunks, {} uploaded to the store; {:.1f}s\n",
                   v["standard"].get<std::string>(), v["version"].get<int>(), berth::format_bytes(v["bytes"]),
                   v["files"].get<std::uint64_t>(), v["chunks"].get<std::uint64_t>(), v["new_chunks"].get<std::uint64_t>(),
                   berth::format_bytes(v["uploaded_bytes"]), v["import_ms"].get<double>() / 1000);
      }
      return 0;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));  // a display refresh, not a wait for state
  }
}

namespace {

struct LogSource {
  std::string label, target;
  std::int64_t offset = -1;
  std::string partial;  // a line not yet ended
};
int logs_of(bc::Client& c, std::vector<LogSource> sources, bool prefix, int tail_lines, bool follow);

}  // namespace

// `berth logs`: one instance as it is, or many merged line by line with a prefix (like
// compose). Following polls each instance's log from its offset; the interval is a display
// refresh, not a wait for state.
int logs_command(bc::Client& c, const std::string& env, const std::vector<std::string>& apps_asked, int ordinal,
                 int tail_lines, bool follow) {
  using Source = LogSource;
  std::vector<Source> sources;
  auto source = [&](const std::string& app, int n) {
    Source src;
    src.label = fmt::format("{}#{}", app, n);
    src.target = fmt::format("/v1/environments/{}/apps/{}/instances/{}/log", percent_encode(env), percent_encode(app), n);
    return src;
  };
  if (ordinal >= 0 && apps_asked.size() == 1) return logs_of(c, {source(apps_asked.front(), ordinal)}, false, tail_lines, follow);
  auto status = c.get("/v1/environments/" + percent_encode(env));
  if (!status.ok()) return fail(status.error());
  const std::set<std::string> wanted(apps_asked.begin(), apps_asked.end());
  std::set<std::string> missing = wanted;
  for (const auto& a : (*status)["apps"]) {
    const std::string name = a["app"];
    if (!wanted.empty() && !wanted.count(name)) continue;
    if (wanted.empty() && a["runs_in"] != env) continue;  // served by the base: its logs are there
    for (const auto& i : a["instances"]) {
      const int n = i["ordinal"];
      if (ordinal >= 0 && n != ordinal) continue;
      sources.push_back(source(name, n));
    }
    missing.erase(name);
  }
  if (!missing.empty()) {
    fmt::print(stderr, "berth: no app '{}' in environment '{}'\n", *missing.begin(), env);
    return 1;
  }
  return logs_of(c, std::move(sources), true, tail_lines, follow);
}

namespace {

int logs_of(bc::Client& c, std::vector<LogSource> sources, bool prefix, int tail_lines, bool follow) {
  using Source = LogSource;
  std::size_t width = 0;
  for (const auto& src : sources) width = std::max(width, src.label.size());
  auto emit = [&](Source& src, const std::string& text, bool first) {
    std::string all = src.partial + text;
    std::vector<std::string> lines;
    std::size_t i = 0;
    for (std::size_t nl; (nl = all.find('\n', i)) != std::string::npos; i = nl + 1) lines.push_back(all.substr(i, nl - i));
    src.partial = all.substr(i);
    std::size_t from = 0;
    if (first && tail_lines >= 0 && lines.size() > static_cast<std::size_t>(tail_lines)) from = lines.size() - tail_lines;
    for (std::size_t k = from; k < lines.size(); ++k) {
      if (prefix) fmt::print("{:<{}} | {}\n", src.label, width, lines[k]);
      else fmt::print("{}\n", lines[k]);
    }
  };
  for (auto& src : sources) {
    auto r = c.get(src.target);
    if (!r.ok()) return fail(r.error());
    src.offset = (*r)["offset"].get<std::int64_t>();
    emit(src, (*r)["text"].get<std::string>(), true);
  }
  std::fflush(stdout);
  while (follow) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // a display refresh, not a wait for state
    for (auto& src : sources) {
      auto r = c.get(fmt::format("{}?offset={}", src.target, src.offset));
      if (!r.ok()) continue;  // an instance between restarts: its log comes back
      src.offset = (*r)["offset"].get<std::int64_t>();
      emit(src, (*r)["text"].get<std::string>(), false);
    }
    std::fflush(stdout);
  }
  for (auto& src : sources)
    if (!src.partial.empty()) emit(src, "\n", false);
  return 0;
}

}  // namespace

// "orders.tag=feature/x" → {"orders.tag": "feature/x"}
std::optional<json> settings_of(const std::vector<std::string>& kvs) {
  json out = json::object();
  for (const auto& kv : kvs) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      fmt::print(stderr, "berth: '{}': write APP.KEY=VALUE, e.g. orders.tag=feature/x\n", kv);
      return std::nullopt;
    }
    out[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// `berth env edit`: the document in $VISUAL/$EDITOR; on save it is validated by the daemon and,
// when refused, reopened with the errors on top as comments. Saved unchanged: nothing is sent.
int edit_document(bc::Client& c, const std::string& name) {
  auto doc = c.get("/v1/environments/" + percent_encode(name) + "/document");
  if (!doc.ok()) return fail(doc.error());
  std::int64_t version = (*doc)["version"].get<std::int64_t>();
  const std::string original = (*doc)["text"].get<std::string>();
  char path[] = "/tmp/berth-env-XXXXXX.yaml";
  int fd = ::mkstemps(path, 5);
  if (fd < 0) return fail(berth::unavailable(fmt::format("cannot make a temporary file: {}", std::strerror(errno))));
  ::close(fd);
  const char* ed = std::getenv("VISUAL");
  if (!ed || !*ed) ed = std::getenv("EDITOR");
  const std::string editor = ed && *ed ? ed : "vi";
  std::string header, text = original;
  int rc = 1;
  while (true) {
    { std::ofstream(path, std::ios::binary | std::ios::trunc) << header << text; }
    if (std::system(fmt::format("{} '{}'", editor, path).c_str()) != 0) {
      fmt::print(stderr, "berth: the editor ({}) failed; nothing was changed\n", editor);
      break;
    }
    std::string edited = read_file(path);
    // Drop the error comments we put on top.
    while (edited.rfind("# berth: ", 0) == 0) edited.erase(0, edited.find('\n') == std::string::npos ? edited.size() : edited.find('\n') + 1);
    if (edited == original) {
      fmt::print("{}: no change\n", name);
      rc = 0;
      break;
    }
    if (!header.empty() && edited == text) {
      fmt::print(stderr, "berth: saved unchanged after the errors; nothing was changed\n");
      break;
    }
    auto r = c.put("/v1/environments/" + percent_encode(name) + "/document", {{"text", edited}}, version);
    if (r.ok()) {
      fmt::print("{}: version {}\n", name, (*r)["version"].get<std::int64_t>());
      rc = 0;
      break;
    }
    if (r.error().code != berth::ErrorCode::kInvalid && r.error().code != berth::ErrorCode::kForbidden) {
      fail(r.error());
      break;
    }
    header.clear();
    std::vector<std::string> lines = r.error().details.empty() ? std::vector<std::string>{r.error().message} : r.error().details;
    for (const auto& l : lines)
      for (std::size_t i = 0; i < l.size();) {
        auto j = l.find('\n', i);
        if (j == std::string::npos) j = l.size();
        header += "# berth: " + l.substr(i, j - i) + "\n";
        i = j + 1;
      }
    fmt::print(stderr, "berth: {}\n", r.error().message);
    text = edited;
  }
  std::remove(path);
  return rc;
}


}  // namespace berth::cli
