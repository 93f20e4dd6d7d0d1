// The name server with real clients: dig (BIND 9.18) and c-ares, against the real daemon.
#include <ares.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <sys/select.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <fstream>
#include <set>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/files.h"
#include "harness.h"

using namespace berth::it;
using nlohmann::json;
using testing::HasSubstr;

namespace {

std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  pclose(p);
  return out;
}

std::string dig(Daemon& d, const std::string& args) {
  return run("dig @" + d.dns_ip() + " -p " + d.dns_port() + " +time=2 +tries=1 " + args + " 2>&1");
}

std::set<std::string> lines(const std::string& s) {
  std::set<std::string> out;
  std::size_t i = 0;
  while (i < s.size()) {
    auto nl = s.find('\n', i);
    if (nl == std::string::npos) nl = s.size();
    if (nl > i) out.insert(s.substr(i, nl - i));
    i = nl + 1;
  }
  return out;
}

// Resolve with c-ares pointed at the daemon's name server; returns the IPv4 addresses.
std::set<std::string> cares_lookup(Daemon& d, const std::string& name) {
  std::set<std::string> out;
  ares_channel channel;
  ares_options opts{};
  opts.timeout = 2000;
  opts.tries = 1;
  if (ares_init_options(&channel, &opts, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES) != ARES_SUCCESS) return out;
  ares_set_servers_ports_csv(channel, d.dns_address().c_str());
  struct Ctx {
    std::set<std::string>* out;
    int status = -1;
  } ctx{&out};
  ares_addrinfo_hints hints{};
  hints.ai_family = AF_INET;
  ares_getaddrinfo(channel, name.c_str(), nullptr, &hints,
                   [](void* arg, int status, int, ares_addrinfo* res) {
                     auto* c = static_cast<Ctx*>(arg);
                     c->status = status;
                     if (status != ARES_SUCCESS) return;
                     for (auto* n = res->nodes; n; n = n->ai_next) {
                       char buf[INET_ADDRSTRLEN];
                       auto* sin = reinterpret_cast<sockaddr_in*>(n->ai_addr);
                       inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf);
                       c->out->insert(buf);
                     }
                     ares_freeaddrinfo(res);
                   },
                   &ctx);
  while (ctx.status == -1) {
    fd_set r, w;
    FD_ZERO(&r);
    FD_ZERO(&w);
    int nfds = ares_fds(channel, &r, &w);
    if (nfds == 0) break;
    timeval tv{}, *tvp = ares_timeout(channel, nullptr, &tv);
    select(nfds, &r, &w, nullptr, tvp);
    ares_process(channel, &r, &w);
  }
  ares_destroy(channel);
  return out;
}

void post(const std::string& ip, int port, const std::string& target) {
  namespace beast = boost::beast;
  boost::asio::io_context io;
  beast::tcp_stream s(io);
  s.expires_after(std::chrono::seconds(5));
  s.connect({boost::asio::ip::make_address(ip), static_cast<unsigned short>(port)});
  beast::http::request<beast::http::empty_body> req(beast::http::verb::post, target, 11);
  req.set(beast::http::field::host, ip);
  beast::http::write(s, req);
  beast::flat_buffer buf;
  beast::http::response<beast::http::string_body> res;
  beast::http::read(s, buf, res);
}

class CaresEnv : public testing::Environment {
 public:
  void SetUp() override { ares_library_init(ARES_LIB_INIT_ALL); }
  void TearDown() override { ares_library_cleanup(); }
};
const auto* const kCares = testing::AddGlobalTestEnvironment(new CaresEnv);

}  // namespace

TEST(Dns, NamesFollowInstancesAsTheyBecomeReadyFailAndRestart) {
  Daemon d("dns-follow");
  // Fast health checks so an instance's failure shows within a second.
  std::string catalog = replaced(example_catalog("127.91"), "    interval: 2s", "    interval: 100ms");
  ASSERT_EQ(d.apply(catalog).exit_code, 0);
  ASSERT_EQ(d.cli({"up", "baseline", "-q"}).exit_code, 0);
  auto s = d.status("baseline");
  std::string u0 = app_of(s, "users")["instances"][0]["ip"], u1 = app_of(s, "users")["instances"][1]["ip"];

  // A multi-instance app answers with all ready instances, to dig and to c-ares.
  EXPECT_EQ(lines(dig(d, "users.baseline.berth.test +short")), (std::set<std::string>{u0, u1}));
  EXPECT_EQ(cares_lookup(d, "users.baseline.berth.test"), (std::set<std::string>{u0, u1}));
  // Instance names and SRV with the targets' addresses in the additional section.
  EXPECT_EQ(lines(dig(d, "1.users.baseline.berth.test +short")), std::set<std::string>{u1});
  auto srv = dig(d, "_http._tcp.users.baseline.berth.test SRV");
  EXPECT_THAT(srv, HasSubstr("8080 0.users.baseline.berth.test."));
  EXPECT_THAT(srv, HasSubstr("ADDITIONAL: 3"));  // two A records and OPT
  EXPECT_THAT(srv, HasSubstr("0.users.baseline.berth.test. 2\tIN\tA\t" + u0));
  EXPECT_THAT(srv, HasSubstr("flags: qr aa rd;"));

  // users#1 starts failing its health check: it leaves the answers, is restarted, comes back.
  post(u1, 8080, "/fail");
  ASSERT_TRUE(wait_until([&] { return cares_lookup(d, "users.baseline.berth.test") == std::set<std::string>{u0}; },
                         std::chrono::seconds(20)));
  EXPECT_EQ(lines(dig(d, "1.users.baseline.berth.test +short")), std::set<std::string>{u1});  // still its name
  ASSERT_TRUE(wait_until([&] { return cares_lookup(d, "users.baseline.berth.test") == std::set<std::string>{u0, u1}; },
                         std::chrono::seconds(20)));
  std::vector<std::string> types;
  for (const auto& e : d.events("baseline"))
    if (e["app"] == "users" && e["ordinal"] == 1) types.push_back(e["type"]);
  EXPECT_THAT(types, testing::IsSupersetOf({"unhealthy", "restarting", "stopped", "ready"}));

  // Down: the app still exists (NODATA, not NXDOMAIN), with nothing ready.
  ASSERT_EQ(d.cli({"down", "baseline", "-q"}).exit_code, 0);
  auto down = dig(d, "users.baseline.berth.test");
  EXPECT_THAT(down, HasSubstr("status: NOERROR"));
  EXPECT_THAT(down, HasSubstr("ANSWER: 0"));
  EXPECT_THAT(down, HasSubstr("berth.test.\t\t2\tIN\tSOA\tns.berth.test. hostmaster.berth.test."));
}

TEST(Dns, ThinEnvironmentFallsThroughToItsBase) {
  Daemon d("dns-thin");
  ASSERT_EQ(d.apply(example_catalog("127.92")).exit_code, 0);
  ASSERT_EQ(d.cli({"up", "baseline", "-q"}).exit_code, 0);
  ASSERT_EQ(d.cli({"up", "beta-7", "-q"}).exit_code, 0);
  auto base = d.status("baseline"), beta = d.status("beta-7");
  std::set<std::string> base_users, beta_orders;
  for (const auto& i : app_of(base, "users")["instances"]) base_users.insert(i["ip"].get<std::string>());
  for (const auto& i : app_of(beta, "orders")["instances"]) beta_orders.insert(i["ip"].get<std::string>());
  EXPECT_EQ(cares_lookup(d, "users.beta-7.berth.test"), base_users);
  EXPECT_EQ(cares_lookup(d, "orders.beta-7.berth.test"), beta_orders);
  EXPECT_NE(cares_lookup(d, "orders.baseline.berth.test"), beta_orders);
  EXPECT_THAT(dig(d, "_http._tcp.payments.beta-7.berth.test SRV +short"), HasSubstr("0.payments.baseline.berth.test."));
  // Instances are told where the name server is and what their search domain is.
  bool found = false;
  for (const auto& p : d.processes())
    if (p.env == "beta-7" && p.app == "orders") {
      const std::string env = berth::testing_files::read_proc("/proc/" + std::to_string(p.pid) + "/environ");
      EXPECT_THAT(env, HasSubstr("BERTH_DNS=" + d.dns_address()));
      EXPECT_THAT(env, HasSubstr("BERTH_DOMAIN=beta-7.berth.test"));
      found = true;
    }
  EXPECT_TRUE(found);
}

TEST(Dns, RefusesRecursionAndAnswersNxdomainInsideTheZone) {
  Daemon d("dns-edges");
  ASSERT_EQ(d.apply(example_catalog("127.93")).exit_code, 0);
  auto out = dig(d, "example.com");
  EXPECT_THAT(out, HasSubstr("status: REFUSED"));
  EXPECT_THAT(out, HasSubstr("flags: qr rd;"));  // no aa, no ra
  EXPECT_THAT(dig(d, "nope.baseline.berth.test"), HasSubstr("status: NXDOMAIN"));
  EXPECT_THAT(dig(d, "users.baseline.berth.test AAAA"), HasSubstr("status: NOERROR"));
  EXPECT_THAT(dig(d, "berth.test SOA +short"), HasSubstr("ns.berth.test. hostmaster.berth.test."));
}

TEST(Dns, TruncatedOverUdpRetriedOverTcp) {
  Daemon d("dns-tcp");
  std::string catalog = R"(network: {pool: 127.94.0.0/24}
apps:
  wide:
    command: sleep 300
    instances: 40
environments:
  dev: {}
)";
  ASSERT_EQ(d.apply(catalog).exit_code, 0);
  ASSERT_EQ(d.cli({"up", "dev", "-q", "--timeout", "30s"}).exit_code, 0);
  // 40 addresses need 640+ bytes: over a 512-byte UDP answer, so dig gets TC and asks over TCP.
  auto out = dig(d, "wide.dev.berth.test +noedns +ignore");
  EXPECT_THAT(out, HasSubstr("flags: qr aa tc rd;"));
  auto retried = dig(d, "wide.dev.berth.test +noedns");
  EXPECT_THAT(retried, HasSubstr("Truncated, retrying in TCP mode"));
  EXPECT_THAT(retried, HasSubstr("ANSWER: 40"));
  EXPECT_EQ(lines(dig(d, "wide.dev.berth.test +tcp +short")).size(), 40u);
}
