// bench/bench_daemon.h — start `berth serve` for a benchmark: scratch data directory, ephemeral
// API and DNS ports (read back from api.addr / dns.addr), the demo service on PATH. Owns the
// directory: stopping the daemon removes it. The daemon gets SIGTERM if the bench dies first.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

struct BenchDaemon {
  pid_t pid = -1;
  std::string api;  // ADDR:PORT
  std::string dns;  // ADDR:PORT
  std::string token;  // the admin token the daemon issued at its first start

  std::string dir;

  // `bin`: the daemon binary (another build's, to compare).
  explicit BenchDaemon(const std::string& data_dir, std::vector<std::string> extra = {}, std::string bin = BERTH_BIN)
      : dir(data_dir) {
    const pid_t bench = getpid();
    pid = fork();
    if (pid == 0) {
      // A bench that dies (Ctrl-C, or `| head` closing its output) takes its daemon along, not
      // leaving 30,000 simulated instances to skew the next run's figures.
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != bench) _exit(127);
      int fd = ::open((dir + "/daemon.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      std::string path = std::string(DEMO_SVC_DIR) + ":" + std::getenv("PATH");
      setenv("PATH", path.c_str(), 1);
      std::vector<std::string> args{bin, "serve", "--data-dir", dir, "--listen", "127.0.0.1:0", "--dns-listen",
                                    "127.0.0.1:0"};
      args.insert(args.end(), extra.begin(), extra.end());
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(bin.c_str(), argv.data());
      _exit(127);
    }
    while (!std::filesystem::exists(dir + "/api.addr")) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::ifstream(dir + "/api.addr") >> api;
    std::ifstream(dir + "/dns.addr") >> dns;
    std::ifstream(dir + "/admin.token") >> token;
  }
  ~BenchDaemon() {
    kill(pid, SIGTERM);
    waitpid(pid, nullptr, 0);
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};
