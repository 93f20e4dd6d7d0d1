#include "daemon/daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <mutex>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "api/handlers.h"
#include "api/http_server.h"
#include "base/asio_executor.h"
#include "base/files.h"
#include "base/identity.h"
#include "base/log_rotate.h"
#include "base/subprocess.h"
#include "base/text.h"
#include "blob/open_store.h"
#include "build/builder.h"
#include "db/manager.h"
#include "db/mariadb/mariadb_engine.h"
#include "control/loop.h"
#include "health/prober.h"
#include "model/network.h"
#include "net/dns/server.h"
#include "runtime/cluster/cluster_runtime.h"
#include "runtime/docker/docker_runtime.h"
#include "runtime/process/process_runtime.h"
#include "store/sqlite/sqlite_store.h"
#include "auth/auth.h"

namespace berth::daemon {
namespace fs = std::filesystem;

namespace {

// --runtime sim: an HTTP or TCP check passes when the simulated instance at the address answers
// (runtime/sim); the answer comes on the loop, like a real probe's.
class SimProber final : public health::Prober {
 public:
  SimProber(Executor& executor, std::vector<const runtime::SimRuntime*> sims) : executor_(executor), sims_(std::move(sims)) {}
  std::unique_ptr<health::ProbeHandle> probe(const health::ProbeTarget& target,
                                             std::function<void(health::ProbeResult)> done) override {
    auto live = std::make_shared<bool>(true);
    executor_.post([this, live, ip = target.ip, done = std::move(done)] {
      if (!*live) return;
      bool ok = false;
      for (const auto* sim : sims_) ok = ok || sim->answers(ip);
      done({ok, ok ? "simulated: answers" : "simulated: no answer", false});
    });
    return std::make_unique<Handle>(std::move(live));
  }

 private:
  struct Handle final : health::ProbeHandle {
    explicit Handle(std::shared_ptr<bool> l) : live(std::move(l)) {}
    ~Handle() override { *live = false; }
    std::shared_ptr<bool> live;
  };
  Executor& executor_;
  std::vector<const runtime::SimRuntime*> sims_;
};

// The daemon's log of events, on stderr: the lines of one turn of the loop go out in one write
// (bring-up at fleet scale emits four lines per instance; one write each was a tenth of the
// loop's time). Loop thread only; lines are flushed at the end of the turn, at 64 KiB, and when
// it is destroyed.
class EventEcho {
 public:
  explicit EventEcho(Executor& executor) : executor_(executor) {}
  ~EventEcho() { flush(); }
  EventEcho(const EventEcho&) = delete;
  EventEcho& operator=(const EventEcho&) = delete;

  void add(const store::Event& e) {
    fmt::format_to(std::back_inserter(buffer_), "{} {} {} {}{} {} {}\n", rfc3339_ms(e.time), e.env.empty() ? "-" : e.env,
                   e.type, e.app.empty() ? "-" : e.app, e.ordinal >= 0 ? fmt::format("#{}", e.ordinal) : "", e.ip, e.message);
    if (buffer_.size() >= kFlushBytes) flush();
    else if (!flush_posted_) {
      flush_posted_ = true;
      executor_.post([this] { flush(); });
    }
  }
  void flush() {
    flush_posted_ = false;
    std::size_t done = 0;
    while (done < buffer_.size()) {
      const ssize_t n = ::write(STDERR_FILENO, buffer_.data() + done, buffer_.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // nowhere to log to: the events are in the store all the same
      done += static_cast<std::size_t>(n);
    }
    buffer_.clear();
  }

 private:
  static constexpr std::size_t kFlushBytes = 64 * 1024;
  Executor& executor_;
  std::string buffer_;
  bool flush_posted_ = false;
};

// One daemon per data directory: an flock held for the daemon's life.
Result<int> lock_data_dir(const fs::path& dir) {
  std::string path = (dir / "daemon.lock").string();
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return unavailable(fmt::format("cannot open {}: {}", path, std::strerror(errno)));
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {};
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    return conflict(fmt::format("another berth daemon (pid {}) already uses data directory {}",
                                n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "?", dir.string()));
  }
  std::string pid = std::to_string(getpid());
  if (ftruncate(fd, 0) != 0 || pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    // The pid in the lock file is informational only.
  }
  return fd;
}

// This data directory's id: in the names and labels of what berth creates in shared places
// (Docker containers, networks, volumes), so two daemons on one dockerd never touch each
// other's. Made once, kept in <data-dir>/id.
Result<std::string> data_id(const fs::path& dir) {
  const std::string path = (dir / "id").string();
  if (std::FILE* f = std::fopen(path.c_str(), "r")) {
    char buf[32] = {};
    std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    std::string id(buf, n);
    while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
    if (id.size() == 8 && id.find_first_not_of("0123456789abcdef") == std::string::npos) return id;
    return invalid(fmt::format("{} holds '{}', not a data directory id (8 hex digits)", path, id));
  }
  unsigned char bytes[4];
  std::FILE* r = std::fopen("/dev/urandom", "r");
  if (!r || std::fread(bytes, 1, sizeof bytes, r) != sizeof bytes) {
    if (r) std::fclose(r);
    return unavailable("cannot read /dev/urandom");
  }
  std::fclose(r);
  std::string id = fmt::format("{:02x}{:02x}{:02x}{:02x}", bytes[0], bytes[1], bytes[2], bytes[3]);
  BERTH_TRY(write_file_atomically(path, id + "\n"));
  return id;
}

// Image recipes are built by the Docker runtime.
class DockerImages final : public build::ImageBuilder {
 public:
  explicit DockerImages(runtime::docker::DockerRuntime& docker) : docker_(docker) {}
  void build_image(const std::string& context_tar, const std::string& dockerfile, const std::string& tag,
                   const std::string& log_path, Millis timeout_ms, std::function<void(Result<std::string>)> done) override {
    docker_.build_image(context_tar, dockerfile, tag, log_path, timeout_ms, std::move(done));
  }

 private:
  runtime::docker::DockerRuntime& docker_;
};

// At the first start (no admin token yet): one for "admin", its secret in <data-dir>/admin.token
// (0600, created so before anything is written to it) for the CLI on this host.
Status first_admin_token(auth::Tokens& tokens, const std::string& data_dir) {
  if (tokens.any_valid_admin()) return {};
  auto issued = tokens.issue("admin", auth::Role::kAdmin, "berth serve");
  if (!issued.ok()) return issued.error();
  const std::string path = (fs::path(data_dir) / "admin.token").string();
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return unavailable(fmt::format("cannot write {}: {}", tmp, std::strerror(errno)));
  const std::string text = issued->secret + "\n";
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!written || ::rename(tmp.c_str(), path.c_str()) != 0)
    return unavailable(fmt::format("cannot write {}: {}", path, std::strerror(errno)));
  fmt::print(stderr, "berth serve: issued the first admin token ({}), in {}\n", issued->record.id, path);
  return {};
}

// Runs an io_context on a thread of its own until destroyed (the API's transport). A library
// exception escaping a handler is reported and the thread goes on serving.
class TransportThread {
 public:
  explicit TransportThread(boost::asio::io_context& io)
      : io_(io), work_(boost::asio::make_work_guard(io)), thread_([this] { run(); }) {}
  ~TransportThread() {
    io_.stop();
    thread_.join();
  }
  TransportThread(const TransportThread&) = delete;
  TransportThread& operator=(const TransportThread&) = delete;

 private:
  void run() {
    for (;;) {
      try {
        io_.run();
        return;
      } catch (const std::exception& e) {
        fmt::print(stderr, "berth serve: API transport: unexpected error: {}\n", e.what());
      }
    }
  }
  boost::asio::io_context& io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::thread thread_;
};

}  // namespace

int run(const Options& o) {
  if (o.data_dir.empty()) {
    fmt::print(stderr, "berth serve: --data-dir is required\n");
    return 2;
  }
  std::error_code ec;
  fs::create_directories(o.data_dir, ec);
  if (ec) {
    fmt::print(stderr, "berth serve: cannot create data directory {}: {}\n", o.data_dir, ec.message());
    return 1;
  }
  const std::string data_dir = fs::absolute(o.data_dir).string();
  // Who instances run as: never root unless an app says so.
  std::optional<IdRange> ids;
  if (::geteuid() == 0 && o.instance_ids != "off") {
    std::string why;
    ids = parse_id_range(o.instance_ids, &why);
    if (!ids) {
      fmt::print(stderr, "berth serve: --instance-ids: {}\n", why);
      return 2;
    }
  }
  // Private to the daemon's user: state.db, logs and tokens are inside, and whatever the daemon
  // creates is its own (umask 077). The instances' group may only enter it (0710), to reach the
  // artifacts and database copies opened to it.
  ::umask(077);
  const bool opened = ids && ::chown(data_dir.c_str(), static_cast<uid_t>(-1), ids->group()) == 0;
  fs::permissions(data_dir, opened ? fs::perms::owner_all | fs::perms::group_exec : fs::perms::owner_all,
                  fs::perm_options::replace, ec);
  if (ec || (ids && !opened)) {
    fmt::print(stderr, "berth serve: cannot make data directory {} private ({}): {}\n", data_dir, ids ? "0710" : "0700",
               ec ? ec.message() : std::strerror(errno));
    return 1;
  }
  auto lock = lock_data_dir(data_dir);
  if (!lock.ok()) {
    fmt::print(stderr, "berth serve: {}\n", lock.error().message);
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  // Every process instance holds a pidfd, every probe a socket for a moment, every API client a
  // connection: the common soft limit of 1,024 descriptors is reached near 1,000 instances.
  {
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
      lim.rlim_cur = lim.rlim_max;
      (void)::setrlimit(RLIMIT_NOFILE, &lim);
    }
    if (::getrlimit(RLIMIT_NOFILE, &lim) == 0) {
      const unsigned long long limit = lim.rlim_cur, reserve = descriptor_reserve(limit), floor = 64;
      fmt::print(stderr, "berth serve: open files limit {} (about {} process instances, a descriptor each; {} kept for API "
                         "connections, health probes and the state store)\n",
                 limit, limit > reserve + floor ? limit - reserve - floor : 0, reserve);
    }
  }

  auto store = store::SqliteStore::open((fs::path(data_dir) / "state.db").string());
  if (!store.ok()) {
    fmt::print(stderr, "berth serve: {}\n", store.error().message);
    return 1;
  }
  // The API's transport (api/http_server.h) runs on a thread and io_context of its own; that
  // io_context outlives the loop's, whose queued work may still hold a reply for one of its
  // connections.
  boost::asio::io_context api_io(1);
  boost::asio::io_context io(1);
  OffsetClock clock;  // moves only with --test-clock
  AsioExecutor executor(io);
  runtime::ProcessRuntime processes(io, executor, data_dir + "/run", o.max_starting);
  // Runtimes prepare a network in this order: a Docker bridge network first gives the pool's
  // gateway its address.
  std::vector<runtime::Runtime*> runtimes;
  std::unique_ptr<runtime::docker::DockerRuntime> docker;  // one host's containers; in a cluster, its image builds
  std::unique_ptr<runtime::cluster::ClusterRuntime> cluster;
  const std::string docker_host = o.cluster_hosts.empty() ? o.docker_host : o.cluster_hosts.front();
  if (!docker_host.empty()) {
    auto id = data_id(data_dir);
    if (!id.ok()) {
      fmt::print(stderr, "berth serve: {}\n", id.error().message);
      return 1;
    }
    auto d = runtime::docker::DockerRuntime::create(executor, {docker_host, *id, data_dir + "/run/docker"});
    if (!d.ok()) {
      fmt::print(stderr, "berth serve: {}\n", d.error().message);
      return 1;
    }
    docker = std::move(d.value());
    if (!o.cluster_hosts.empty()) {
      runtime::cluster::ClusterOptions co;
      co.hosts = o.cluster_hosts;
      co.data_id = *id;
      co.state_dir = data_dir + "/run/cluster";
      co.heartbeat_ms = o.cluster_heartbeat_ms;
      co.sandbox_image = o.sandbox_image;
      co.advertise = o.cluster_advertise;
      co.lease_ms = o.cluster_lease_ms;
      // Docker's own addresses on the overlay: a load balancer endpoint and an anchor (or the
      // sandbox) per host, with room to spare; fixed once the overlay is made.
      const std::size_t room = std::max<std::size_t>(o.cluster_hosts.size(), static_cast<std::size_t>(std::max(1, o.cluster_max_hosts)));
      co.fence = std::max<int>(16, static_cast<int>(std::bit_ceil(2 * room + 4)));
      auto c = runtime::cluster::ClusterRuntime::create(executor, clock, co);
      if (!c.ok()) {
        fmt::print(stderr, "berth serve: --cluster-host: {}\n", c.error().message);
        return 1;
      }
      cluster = std::move(c.value());
      runtimes.push_back(cluster.get());
    } else {
      runtimes.push_back(docker.get());
    }
  }
  health::AsioProber asio_prober(io);
  health::Prober* prober = &asio_prober;
  // --runtime sim: nothing runs; instances and their health answers are simulated.
  std::vector<std::unique_ptr<runtime::SimRuntime>> sims;
  std::unique_ptr<SimProber> sim_prober;
  if (o.runtime == "sim") {
    runtimes.clear();
    runtime::SimBehaviour behaviour = o.sim;
    behaviour.keep_specs = false;  // (no test inspects this daemon's launches)
    for (const char* name : {"docker", "process"}) {
      sims.push_back(std::make_unique<runtime::SimRuntime>(executor, name, behaviour, &clock));
      runtimes.push_back(sims.back().get());
    }
    sim_prober = std::make_unique<SimProber>(executor, std::vector<const runtime::SimRuntime*>{sims[0].get(), sims[1].get()});
    prober = sim_prober.get();
    fmt::print(stderr, "berth serve: --runtime sim: instances are simulated (start {}, ready after {}, mean time to "
                       "crash {}, {}% hang); for benchmarks and tests only\n",
               format_duration(o.sim.start_latency_ms), format_duration(o.sim.ready_after_ms),
               o.sim.mean_time_to_crash_ms ? format_duration(o.sim.mean_time_to_crash_ms) : "never",
               o.sim.hang_fraction * 100);
  } else {
    runtimes.push_back(&processes);
  }

  // The name server, on its own threads; the loop publishes zone snapshots to it. A second one
  // answers on port 53 of the pool's gateway once its network is there: the instances' resolver.
  std::unique_ptr<dns::Server> dns_server;
  std::unique_ptr<dns::Server> gateway_dns;
  std::shared_ptr<const dns::Zone> latest_zone = std::make_shared<dns::Zone>();
  std::uint32_t dns_ip = 0;
  if (!o.dns_listen.empty()) {
    auto server = dns::Server::start(o.dns_listen, std::make_shared<dns::Zone>());
    if (!server.ok()) {
      fmt::print(stderr, "berth serve: {}\n", server.error().message);
      return 1;
    }
    dns_server = std::move(server.value());
    if (auto ip = model::parse_ipv4(o.dns_listen.substr(0, o.dns_listen.rfind(':')))) dns_ip = *ip;
  }

  build::Builder builder(io, executor, clock, data_dir,
                         o.build_parallel > 0 ? o.build_parallel : static_cast<int>(std::thread::hardware_concurrency()));
  if (ids) builder.set_identity(ids->builder());
  std::optional<DockerImages> images;
  if (docker) {
    images.emplace(*docker);
    builder.set_image_builder(&*images);
  }

  // Standard databases: snapshots in the blob store, goldens and copies under the db directory.
  auto blobs = blob::open_store(o.blob_store.empty() ? "local:" + data_dir + "/blobs" : o.blob_store);
  if (!blobs.ok()) {
    fmt::print(stderr, "berth serve: --blob-store: {}\n", blobs.error().message);
    return 1;
  }
  const std::string db_dir = o.db_dir.empty() ? data_dir + "/db" : fs::absolute(o.db_dir).string();
  db::CloneOptions clone_options;
  clone_options.allow_overlay = o.db_overlay;
  db::Manager databases(executor, clock, db_dir, **blobs, std::make_unique<db::MariadbEngine>(), clone_options);

  control::Deps deps;
  deps.databases = &databases;
  deps.db_image = o.db_image.value_or(o.cluster_hosts.empty() ? "none" : "berth-mariadb:latest");
  if (deps.db_image == "none") deps.db_image.clear();
  if (!deps.db_image.empty())
    fmt::print(stderr, "berth serve: database servers run in containers from {}\n", deps.db_image);
  deps.clock = &clock;
  deps.executor = &executor;
  deps.runtimes = runtimes;
  if (cluster) deps.reserved_pool_tail = cluster->fence();
  deps.prober = prober;
  Worker worker("catalog");  // validates fleet documents off the loop (outlives the loop: declared first)
  deps.worker = &worker;
  deps.store = store->get();
  deps.data_dir = data_dir;
  deps.builder = &builder;
  deps.artifact_max_bytes = o.artifact_max_bytes;
  deps.instance_ids = ids;
  if (dns_server) {
    deps.dns_address = dns_server->address();
    deps.dns_ns_ip = dns_ip;
  }
  deps.on_zone = [&](std::shared_ptr<const dns::Zone> zone) {
    latest_zone = zone;
    if (dns_server) dns_server->publish(zone);
    if (gateway_dns) gateway_dns->publish(zone);
  };
  EventEcho echo(executor);
  deps.on_event = [&echo](const store::Event& e) { echo.add(e); };
  std::function<void(const runtime::Network&)> network_ready;  // set once the loop exists
  deps.on_network_ready = [&](const runtime::Network& net) {
    if (network_ready) network_ready(net);
    else executor.post([&, net] { if (network_ready) network_ready(net); });
  };
  auto loop = control::ControlLoop::create(deps);
  if (!loop.ok()) {
    fmt::print(stderr, "berth serve: {}\n", loop.error().message);
    return 1;
  }
  databases.set_on_change([l = loop->get()] { l->poke(); });
  databases.set_on_event([l = loop->get()](const std::string& env, const std::string& type, const std::string& db,
                                           const std::string& message) { l->database_event(env, type, db, message); });
  // A release reaches the copies whose catalog says `rollout: auto` at once.
  databases.set_on_released([l = loop->get()](const std::string& standard, int version) {
    auto r = l->rollout_database(standard, version, {}, true);
    if (!r.ok()) l->database_event("", "error", "", fmt::format("rollout of {}@{}: {}", standard, version, r.error().message));
  });
  // Instances resolve names through berth's name server on their pool's gateway, port 53.
  auto* loop_ptr = loop->get();
  // The instances' name server at `ip`:53, in `netns` when given (a cluster's overlay): at most
  // one at a time, moved when the address changes; the loop passes its address to instances.
  auto serve_instances_dns = [&, loop_ptr](const std::string& ip, const Netns* netns) {
    const std::string listen = ip + ":53";
    if (gateway_dns && gateway_dns->address() == listen) return;
    gateway_dns.reset();
    Result<std::unique_ptr<dns::Server>> server = internal("not started");
    if (!netns) server = dns::Server::start(listen, latest_zone);
    else if (Status entered = netns->run_in([&] { server = dns::Server::start(listen, latest_zone); }); !entered.ok())
      server = entered.error();
    if (!server.ok()) {
      fmt::print(stderr, "berth serve: {}; instances will not resolve short names through their system resolver\n",
                 server.error().message);
      loop_ptr->set_resolver("", server.error().message);
      return;
    }
    gateway_dns = std::move(server.value());
    loop_ptr->set_resolver(ip, "");
    if (Status st = write_file_atomically((fs::path(data_dir) / "resolver.addr").string(), listen); !st.ok())
      fmt::print(stderr, "berth serve: {}\n", st.error().message);
    fmt::print(stderr, "berth serve: instances' resolver: DNS on {}{}\n", listen, netns ? " (the cluster's overlay)" : "");
  };
  // On one host: on the pool's gateway, once its network is there.
  network_ready = [&](const runtime::Network& net) { serve_instances_dns(net.gateway, nullptr); };
  if (cluster) {
    // Instances are on the Swarm's overlay, which the daemon is not on: its probes connect from,
    // and the instances' name server listens in, the network namespace of berth's sandbox
    // container there (runtime/cluster), at the sandbox's address.
    network_ready = nullptr;
    cluster->set_on_gateway([&](const Netns& netns, const std::string& ip) {
      asio_prober.set_socket_opener([c = cluster.get()]() -> Result<int> {
        const Netns* sandbox = c->gateway();
        if (!sandbox) return unavailable("the cluster's sandbox is not up");
        return sandbox->socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK);
      });
      serve_instances_dns(ip, &netns);
    });
  }
  auto tokens = auth::Tokens::load(**store, clock);
  if (!tokens.ok()) {
    fmt::print(stderr, "berth serve: {}\n", tokens.error().message);
    return 1;
  }
  if (Status st = first_admin_token(**tokens, data_dir); !st.ok()) {
    fmt::print(stderr, "berth serve: {}\n", st.error().message);
    return 1;
  }
  api::Options api_options;
  if (o.test_clock) {
    api_options.advance_clock = [&clock](Millis ms) { clock.advance(ms); };
    fmt::print(stderr, "berth serve: --test-clock: admins may move this daemon's clock forward (POST /v1/test/clock)\n");
  }
  api_options.member_repos = o.member_repos;
  for (const auto& d : o.import_dirs) api_options.import_dirs.push_back(fs::absolute(d).string());
  if (cluster) {
    auto host_json = [](const runtime::cluster::HostView& h) {
      nlohmann::json instances = nlohmann::json::array();
      for (const auto& id : h.instances) instances.push_back(fmt::format("{}/{}#{}", id.env, id.app, id.ordinal));
      return nlohmann::json{{"host", h.hostname},
                            {"endpoint", h.endpoint},
                            {"state", h.state},
                            {"leaving", h.leaving},
                            {"swarm", {{"node", h.node.id}, {"state", h.node.state}, {"availability", h.node.availability},
                                       {"role", h.node.role}, {"leader", h.node.leader}, {"addr", h.node.addr},
                                       {"message", h.node.message}, {"engine", h.node.engine_version}}},
                            {"nano_cpus", h.node.nano_cpus},
                            {"memory_bytes", h.node.memory_bytes},
                            {"labels", h.node.labels},
                            {"instances", instances}};
    };
    api_options.cluster_hosts = [c = cluster.get(), host_json] {
      nlohmann::json hosts = nlohmann::json::array();
      for (const auto& h : c->hosts()) hosts.push_back(host_json(h));
      return hosts;
    };
    api_options.cluster_add = [c = cluster.get(), host_json](api::Options::ClusterHost host,
                                                             std::function<void(Result<nlohmann::json>)> done) {
      c->add_host({std::move(host.endpoint), std::move(host.advertise), std::move(host.labels)},
                  [host_json, done = std::move(done)](Result<runtime::cluster::HostView> added) {
                    if (!added.ok()) return done(added.error());
                    done(host_json(*added));
                  });
    };
    api_options.cluster_remove = [c = cluster.get()](const std::string& host, bool force, std::function<void(Status)> done) {
      c->remove_host(host, force, std::move(done));
    };
    api_options.cluster_drain = [c = cluster.get()](const std::string& host, bool drain, std::function<void(Status)> done) {
      c->drain(host, drain, std::move(done));
    };
  }
  api_options.loop_executor = &executor;
  api_options.to_transport = [&api_io](std::function<void()> fn) { boost::asio::post(api_io, std::move(fn)); };
  api::Api api(**loop, **tokens, api_options);
  auto server = api::HttpServer::create(api_io, o.listen, api, {o.tls_cert, o.tls_key});
  if (!server.ok()) {
    fmt::print(stderr, "berth serve: {}\n", server.error().message);
    return 1;
  }
  {
    // Requests must name this daemon: a web page reaching it through another name (DNS
    // rebinding) is refused. Listening on every address, any name is accepted.
    const std::string host = o.listen.substr(0, o.listen.rfind(':'));
    const auto port = (*server)->port();
    if (host != "0.0.0.0" && host != "::" && host != "[::]") {
      std::vector<std::string> hosts{fmt::format("{}:{}", host, port)};
      if (host == "127.0.0.1" || host == "::1") hosts.push_back(fmt::format("localhost:{}", port));
      api.set_allowed_hosts(std::move(hosts));
    }
  }
  // The first read model before the first request; then the transport's thread answers.
  (*loop)->publish_status();
  TransportThread transport(api_io);
  // Logs stay bounded: a thread of its own (it reads and cuts files; it shares no state).
  std::jthread log_keeper([dirs = std::vector<std::string>{(fs::path(data_dir) / "logs").string(), db_dir + "/logs"},
                           max = o.log_max_bytes](std::stop_token stop) {
    std::mutex mu;
    std::condition_variable_any wake;
    while (!stop.stop_requested()) {
      try {
        for (const auto& d : dirs) {
          auto r = rotate_logs(d, max);
          if (r.rotated)
            fmt::print(stderr, "berth serve: cut {} log file(s) under {} past {} ({} freed{})\n", r.rotated, d,
                       format_bytes(max), format_bytes(r.freed),
                       r.copied ? fmt::format("; {} by copy and truncate, which may lose lines", r.copied) : "");
        }
      } catch (const std::exception& e) {
        fmt::print(stderr, "berth serve: cutting logs: {}\n", e.what());
      }
      std::unique_lock<std::mutex> held(mu);
      wake.wait_for(held, stop, std::chrono::seconds(10), [] { return false; });
    }
  });
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code&, int sig) {
    fmt::print(stderr, "berth serve: {} received; exiting (instances keep running and are adopted on the next start)\n",
               sig == SIGINT ? "SIGINT" : "SIGTERM");
    io.stop();
  });
  // The addresses actually bound (useful with port 0), for scripts and tests:
  // <data-dir>/api.addr, api.url and dns.addr, each written atomically. api.addr comes last:
  // scripts and tests wait for it, and then read the others.
  auto write_atomically = [&](const char* name, const std::string& text) {
    if (Status st = write_file_atomically((fs::path(data_dir) / name).string(), text); !st.ok())
      fmt::print(stderr, "berth serve: {}\n", st.error().message);
  };
  const std::string bound = fmt::format("{}:{}", o.listen.substr(0, o.listen.rfind(':')), (*server)->port());
  if (dns_server) write_atomically("dns.addr", dns_server->address());
  write_atomically("api.url", fmt::format("{}://{}", o.tls_cert.empty() ? "http" : "https", bound));
  write_atomically("api.addr", bound);
  if (ids)
    fmt::print(stderr, "berth serve: instances run as uids {}-{} (one per environment), group {}\n", ids->first + 1, ids->last,
               ids->group());
  else
    fmt::print(stderr, "berth serve: instances run as this daemon's user ({})\n",
               ::geteuid() == 0 ? "root: --instance-ids off" : std::to_string(::geteuid()));
  fmt::print(stderr, "berth serve: API on {}://{}, DNS on {}, data in {}\n", o.tls_cert.empty() ? "http" : "https", bound,
             dns_server ? dns_server->address() : "(off)", data_dir);
  io.run();
  return 0;
}

}  // namespace berth::daemon
