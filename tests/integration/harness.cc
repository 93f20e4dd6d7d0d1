#include <sys/mount.h>
#include "harness.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "common/files.h"

namespace berth::it {
namespace fs = std::filesystem;
using nlohmann::json;

bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (cond()) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // poll interval, not a wait for state
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string example_catalog(const std::string& prefix) {
  std::string text = read_file(std::string(SOURCE_DIR) + "/examples/shop/berth.yaml");
  for (auto at = text.find("127.77."); at != std::string::npos; at = text.find("127.77.", at))
    text.replace(at, 6, prefix);
  return text;
}

std::string replaced(std::string text, const std::string& from, const std::string& to) {
  auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << "'" << from << "' not in the text";
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

// Remove a data directory, first unmounting what berth mounted inside it (overlay copies of
// databases stay mounted while the daemon is down: they are the environments' data).
static void remove_tree(const std::string& dir) {
  std::ifstream mounts("/proc/mounts");
  std::vector<std::string> inside;
  for (std::string dev, point, rest; mounts >> dev >> point && std::getline(mounts, rest);)
    if (point.rfind(dir + "/", 0) == 0) inside.push_back(point);
  for (auto it = inside.rbegin(); it != inside.rend(); ++it) ::umount2(it->c_str(), MNT_DETACH);
  std::error_code ec;
  fs::remove_all(dir, ec);
}

Daemon::Daemon(const std::string& name, std::vector<std::string> extra, const std::function<void(const std::string&)>& prepare)
    : extra_(std::move(extra)) {
  dir_ = (fs::temp_directory_path() / fmt::format("berth-it-{}-{}", name, getpid())).string();
  remove_tree(dir_);
  fs::create_directories(dir_);
  // The example fleet's orders app is built from a git repository next to the catalog.
  std::string make = std::string(SOURCE_DIR) + "/scripts/make-example-repos.sh " + dir_ + "/repos >/dev/null";
  if (std::system(make.c_str()) != 0) ADD_FAILURE() << "make-example-repos.sh failed";
  if (prepare) prepare(dir_);
  start();
}

void Daemon::start() {
  fs::remove(fs::path(dir_) / "api.addr");
  pid_ = fork();
  if (pid_ == 0) {
    std::string log = dir_ + "/daemon.log";
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    std::string path = std::string(DEMO_SVC_DIR) + ":" + (getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
    setenv("PATH", path.c_str(), 1);
    std::vector<const char*> argv = {BERTH_BIN, "serve", "--data-dir", dir_.c_str(), "--listen", "127.0.0.1:0",
                                     "--dns-listen", "127.0.0.1:0", "--import-dir", dir_.c_str()};
    for (const auto& a : extra_) argv.push_back(a.c_str());
    argv.push_back(nullptr);
    execv(BERTH_BIN, const_cast<char* const*>(argv.data()));
    _exit(127);
  }
  std::string addr_file = dir_ + "/api.addr";
  bool up = wait_until([&] { return fs::exists(addr_file); }, std::chrono::seconds(10));
  if (!up) ADD_FAILURE() << "daemon did not start: " << read_file(dir_ + "/daemon.log");
  addr_ = read_file(addr_file);
  dns_addr_ = read_file(dir_ + "/dns.addr");
  admin_token_ = read_file(dir_ + "/admin.token");
  while (!admin_token_.empty() && admin_token_.back() == '\n') admin_token_.pop_back();
  client_ = std::make_unique<client::Client>(addr_, admin_token_);
}

void Daemon::kill9() {
  ::kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

Daemon::~Daemon() {
  // A failed test shows what the daemon said last (CI keeps no data directories).
  if (testing::Test::HasFailure()) {
    std::string log = read_file(dir_ + "/daemon.log");
    constexpr std::size_t kTail = 6000;
    if (log.size() > kTail) log = "[...]" + log.substr(log.size() - kTail);
    int status = 0;
    const bool exited = pid_ > 0 && waitpid(pid_, &status, WNOHANG) == pid_;
    std::string state = pid_ <= 0 ? "was stopped by the test" : "still runs";
    if (exited)
      state = WIFSIGNALED(status) ? fmt::format("died of signal {}", WTERMSIG(status))
                                  : fmt::format("exited with status {}", WEXITSTATUS(status));
    fmt::print(stderr, "--- the daemon (pid {}) {}; the end of {}/daemon.log:\n{}\n---\n", pid_, state, dir_, log);
    if (exited) pid_ = -1;
  }
  if (pid_ > 0) {
    if (auto envs = client_->get("/v1/environments"); envs.ok())
      for (const auto& e : *envs)
        if (e["up"].get<bool>()) cli({"down", e["environment"].get<std::string>(), "-q", "--force", "--timeout", "20s"});
    ::kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
  }
  // Safety net: nothing this test started may outlive it.
  for (const auto& p : processes()) ::kill(-p.pid, SIGKILL);
  if (!testing::Test::HasFailure()) remove_tree(dir_);
}

CliResult Daemon::cli(const std::vector<std::string>& args) { return cli_as(admin_token_, args); }

CliResult Daemon::cli_as(const std::string& token, const std::vector<std::string>& args) {
  // Each call has files of its own: tests run CLIs from several threads at once.
  static std::atomic<unsigned> calls{0};
  const unsigned call = calls.fetch_add(1);
  const std::string out_file = fmt::format("{}/cli-{}.out", dir_, call);
  const std::string err_file = fmt::format("{}/cli-{}.err", dir_, call);
  // Everything the child needs is built before fork(): between fork and exec a child of a
  // threaded process may only make async-signal-safe calls (no setenv, no allocation).
  std::vector<std::string> env_strings{"BERTH_ADDR=" + addr_, "BERTH_TOKEN=" + token};
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view kv(*e);
    if (!kv.starts_with("BERTH_ADDR=") && !kv.starts_with("BERTH_TOKEN=")) env_strings.emplace_back(kv);
  }
  std::vector<char*> envp;
  for (auto& kv : env_strings) envp.push_back(kv.data());
  envp.push_back(nullptr);
  std::vector<char*> argv{const_cast<char*>(BERTH_BIN)};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    int out = ::open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int err = ::open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0 || err < 0) _exit(126);
    dup2(out, 1);
    dup2(err, 2);
    execve(BERTH_BIN, argv.data(), envp.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  CliResult result{WIFEXITED(status) ? WEXITSTATUS(status) : 128, read_file(out_file), read_file(err_file)};
  std::error_code ignored;
  fs::remove(out_file, ignored);
  fs::remove(err_file, ignored);
  return result;
}

CliResult Daemon::apply(const std::string& text, const std::string& file_name) {
  std::string path = dir_ + "/" + file_name;
  std::ofstream(path) << text;
  return cli({"apply", "-f", path});
}

json Daemon::status(const std::string& env) {
  auto r = client_->get("/v1/environments/" + env);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? *r : json::object();
}

json Daemon::events(const std::string& env) {
  auto r = client_->get("/v1/environments/" + env + "/events?limit=100000");
  EXPECT_TRUE(r.ok());
  return r.ok() ? *r : json::array();
}

std::vector<Daemon::Proc> Daemon::processes() const {
  std::vector<Proc> out;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string env = berth::testing_files::read_proc(entry.path() / "environ");
    std::map<std::string, std::string> vars;
    std::size_t i = 0;
    while (i < env.size()) {
      auto end = env.find('\0', i);
      if (end == std::string::npos) end = env.size();
      auto kv = env.substr(i, end - i);
      auto eq = kv.find('=');
      if (eq != std::string::npos) vars[kv.substr(0, eq)] = kv.substr(eq + 1);
      i = end + 1;
    }
    if (vars["BERTH_HOME"] != dir_) continue;
    // Only instance main processes (group leaders), not probes or children of instances.
    if (getpgid(std::stoi(name)) != std::stoi(name)) continue;
    // Nor a command run inside an instance (an exec health check, berth exec): it has the
    // instance's environment and a process group of its own too, but its output goes to a pipe
    // the daemon reads, where an instance's goes to its log file.
    std::error_code ec;
    const std::string stdout_to = fs::read_symlink(entry.path() / "fd" / "1", ec).string();
    if (ec || stdout_to.starts_with("pipe:")) continue;
    // Nor a shell still waiting at its gate (base/subprocess.h): nothing of the instance runs
    // yet, and it exits without running anything if its daemon dies before recording it.
    const std::string cmdline = berth::testing_files::read_proc(entry.path() / "cmdline");
    if (cmdline.find("berth_gate") != std::string::npos) continue;
    const std::string line = berth::testing_files::read_proc(entry.path() / "stat");
    if (line.empty() || line.find(") Z") != std::string::npos) continue;  // gone, or a zombie
    out.push_back({std::stoi(name), vars["BERTH_ENV"], vars["BERTH_APP"], vars["BERTH_INSTANCE"], vars["BERTH_IP"]});
  }
  return out;
}

const json& app_of(const json& status, const std::string& app) {
  for (const auto& a : status["apps"])
    if (a["app"] == app) return a;
  static const json none = json::object();
  return none;
}

int pid_of(const json& status, const std::string& app, int ordinal) {
  const auto& a = app_of(status, app);
  if (!a.contains("instances")) return 0;
  const auto& i = a["instances"][static_cast<std::size_t>(ordinal)];
  return i["pid"].is_null() ? 0 : i["pid"].get<int>();
}

}  // namespace berth::it
