// A team on one daemon: tokens and roles, environments as their own documents written by two
// users at once, refusals (401/403/409) with their reasons, the audit log, the fleet plan, and
// the private data directory — the real daemon and CLI.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <thread>
#include <algorithm>
#include <chrono>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "harness.h"

using namespace berth::it;
using nlohmann::json;
using testing::HasSubstr;

namespace {

namespace http = boost::beast::http;

// One raw request with the headers given (the client library always sends the right ones).
std::pair<int, std::string> raw(const std::string& addr, const std::string& method, const std::string& target,
                                const std::map<std::string, std::string>& headers, const std::string& body = "") {
  boost::asio::io_context io;
  boost::asio::ip::tcp::resolver resolver(io);
  boost::beast::tcp_stream stream(io);
  auto colon = addr.rfind(':');
  stream.connect(resolver.resolve(addr.substr(0, colon), addr.substr(colon + 1)));
  http::request<http::string_body> req(http::string_to_verb(method), target, 11);
  req.set(http::field::host, addr);
  for (const auto& [k, v] : headers) req.set(k, v);
  req.body() = body;
  req.prepare_payload();
  http::write(stream, req);
  boost::beast::flat_buffer buf;
  http::response<http::string_body> res;
  http::read(stream, buf, res);
  return {static_cast<int>(res.result_int()), res.body()};
}

std::string token_for(Daemon& d, const std::string& user, const std::string& role) {
  auto r = d.cli({"token", "create", "--user", user, "--role", role});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::string t = r.out;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  EXPECT_EQ(t.find('\n'), std::string::npos) << "token create prints the token alone: " << r.out;
  return t;
}

}  // namespace

TEST(Team, TokensRolesAndAPrivateDataDirectory) {
  Daemon d("team-auth");
  struct stat st {};
  ASSERT_EQ(::stat(d.data_dir().c_str(), &st), 0);
  // Private; a root daemon lets its instances' group enter it (not list it).
  if (::geteuid() == 0) {
    EXPECT_EQ(st.st_mode & 0777, 0710u);
    EXPECT_EQ(st.st_gid, 900000u);
  } else {
    EXPECT_EQ(st.st_mode & 0777, 0700u);
  }
  for (const char* f : {"admin.token", "state.db", "api.url"}) {
    ASSERT_EQ(::stat((d.data_dir() + "/" + f).c_str(), &st), 0) << f;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << f;
  }
  ASSERT_EQ(d.apply(example_catalog("127.111")).exit_code, 0);

  // No token, a wrong one, a revoked one: 401 with how to get one.
  auto none = raw(d.address(), "GET", "/v1/environments", {});
  EXPECT_EQ(none.first, 401);
  EXPECT_THAT(none.second, HasSubstr("Authorization: Bearer"));
  EXPECT_EQ(raw(d.address(), "GET", "/v1/environments", {{"Authorization", "Bearer berth_nope"}}).first, 401);
  EXPECT_EQ(raw(d.address(), "GET", "/v1/health", {}).first, 200);  // for load balancers and probes

  const std::string viewer = token_for(d, "vic", "viewer");
  const std::string member = token_for(d, "anna", "member");
  auto who = d.cli_as(member, {"whoami"});
  EXPECT_THAT(who.out, HasSubstr("anna (member"));
  // Viewers read, and are refused every write with the reason.
  EXPECT_EQ(d.cli_as(viewer, {"status", "baseline"}).exit_code, 0);
  auto up = d.cli_as(viewer, {"up", "baseline"});
  EXPECT_NE(up.exit_code, 0);
  EXPECT_THAT(up.err, HasSubstr("vic is a viewer"));
  // Members may not change the fleet document, its environments, or tokens.
  const std::string fleet = d.data_dir() + "/berth.yaml";
  auto apply = d.cli_as(member, {"apply", "-f", fleet});
  EXPECT_NE(apply.exit_code, 0);
  EXPECT_THAT(apply.err, HasSubstr("needs the admin role"));
  auto down = d.cli_as(member, {"down", "baseline"});
  EXPECT_NE(down.exit_code, 0);
  EXPECT_THAT(down.err, HasSubstr("belongs to the fleet document"));
  EXPECT_NE(d.cli_as(member, {"token", "create", "--user", "eve", "--role", "admin"}).exit_code, 0);

  // A browser page elsewhere can neither send a cross-origin request nor a text/plain one, nor
  // reach the daemon through another host name.
  const std::map<std::string, std::string> auth = {{"Authorization", "Bearer " + d.admin_token()}};
  auto cross = auth;
  cross["Origin"] = "http://evil.example";
  EXPECT_EQ(raw(d.address(), "POST", "/v1/environments/baseline/down", cross).first, 403);
  auto plain = auth;
  plain["Content-Type"] = "text/plain";
  EXPECT_EQ(raw(d.address(), "POST", "/v1/environments/baseline/down", plain, "x").first, 400);
  auto rebound = auth;
  rebound["Host"] = "evil.example:" + d.address().substr(d.address().rfind(':') + 1);
  EXPECT_EQ(raw(d.address(), "GET", "/v1/environments", rebound).first, 403);

  // Revoked: refused from then on.
  auto ls = d.cli({"token", "ls"});
  EXPECT_THAT(ls.out, HasSubstr("vic"));
  auto tokens = d.api().get("/v1/tokens");
  ASSERT_TRUE(tokens.ok());
  std::string vic_id;
  for (const auto& t : *tokens)
    if (t["user"] == "vic") vic_id = t["id"];
  ASSERT_EQ(d.cli({"token", "revoke", vic_id}).exit_code, 0);
  auto revoked = d.cli_as(viewer, {"status", "baseline"});
  EXPECT_NE(revoked.exit_code, 0);
  EXPECT_THAT(revoked.err, HasSubstr("was revoked"));
  EXPECT_THAT(ls.out, testing::Not(HasSubstr(viewer)));  // secrets are never listed
}

TEST(Team, EnvironmentsOfTheirOwnWrittenByTwoUsersAtOnce) {
  Daemon d("team-docs");
  ASSERT_EQ(d.apply(example_catalog("127.112")).exit_code, 0);
  const std::string anna = token_for(d, "anna", "member");
  const std::string ben = token_for(d, "ben", "member");

  // Two creations at once: both land.
  CliResult ra, rb;
  std::thread ta([&] { ra = d.cli_as(anna, {"env", "create", "dev-anna", "--base", "baseline", "--thin", "--set",
                                            "orders.tag=feature/new-pay", "--set", "orders.build_type=debug", "--ttl", "3d"}); });
  std::thread tb([&] { rb = d.cli_as(ben, {"env", "create", "dev-ben", "--base", "baseline"}); });
  ta.join();
  tb.join();
  ASSERT_EQ(ra.exit_code, 0) << ra.err;
  ASSERT_EQ(rb.exit_code, 0) << rb.err;
  EXPECT_THAT(ra.out, HasSubstr("dev-anna: version 1 (owner anna, expires "));
  auto ls = d.cli({"env", "ls"});
  EXPECT_THAT(ls.out, HasSubstr("dev-anna"));
  EXPECT_THAT(ls.out, HasSubstr("dev-ben"));
  EXPECT_THAT(ls.out, HasSubstr("thin"));

  // The diff names each changed setting with its layer.
  auto diff = d.cli_as(ben, {"env", "diff", "dev-anna"});
  ASSERT_EQ(diff.exit_code, 0) << diff.err;
  EXPECT_THAT(diff.out, HasSubstr("feature/new-pay"));
  EXPECT_THAT(diff.out, HasSubstr("build_type"));

  // A member cannot change another's environment, nor set what admins own.
  auto theirs = d.cli_as(ben, {"env", "set", "dev-anna", "orders.tag=main"});
  EXPECT_NE(theirs.exit_code, 0);
  EXPECT_THAT(theirs.err, HasSubstr("belongs to anna"));
  auto command = d.cli_as(anna, {"env", "set", "dev-anna", "orders.command=id"});
  EXPECT_NE(command.exit_code, 0);
  EXPECT_THAT(command.err, HasSubstr("orders.command is set by the fleet's maintainers"));
  auto rm_theirs = d.cli_as(ben, {"env", "rm", "dev-anna"});
  EXPECT_NE(rm_theirs.exit_code, 0);

  // Once an editor, two changes based on the same version: the second is refused naming who
  // changed it, and neither change is lost once it is redone.
  ASSERT_EQ(d.cli_as(anna, {"env", "set", "dev-anna", "editors=ben"}).exit_code, 0);
  auto doc = d.api().get("/v1/environments/dev-anna/document");
  ASSERT_TRUE(doc.ok());
  const std::int64_t v = (*doc)["version"];
  berth::client::Client as_anna(d.address(), anna), as_ben(d.address(), ben);
  auto first = as_ben.patch("/v1/environments/dev-anna/document", {{"set", {{"orders.env.FROM_BEN", "1"}}}}, v);
  ASSERT_TRUE(first.ok()) << first.error().message;
  auto second = as_anna.patch("/v1/environments/dev-anna/document", {{"set", {{"users.instances", "2"}}}}, v);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, berth::ErrorCode::kConflict);
  EXPECT_THAT(second.error().message, HasSubstr("changed by ben"));
  ASSERT_EQ(d.cli_as(anna, {"env", "set", "dev-anna", "users.instances=2"}).exit_code, 0);
  auto text = d.cli({"env", "get", "dev-anna"});
  EXPECT_THAT(text.out, HasSubstr("FROM_BEN"));
  EXPECT_THAT(text.out, HasSubstr("instances: 2"));

  // berth env edit: $EDITOR changes the YAML; an invalid save is refused with its location.
  const std::string editor = d.data_dir() + "/editor.sh";
  std::ofstream(editor) << "#!/bin/sh\nsed -i 's/instances: 2/instances: 3/' \"$1\"\n";
  ::chmod(editor.c_str(), 0755);
  setenv("EDITOR", editor.c_str(), 1);
  auto edit = d.cli_as(anna, {"env", "edit", "dev-anna"});
  unsetenv("EDITOR");
  ASSERT_EQ(edit.exit_code, 0) << edit.err;
  EXPECT_THAT(d.cli({"env", "get", "dev-anna"}).out, HasSubstr("instances: 3"));

  // The fleet document applied again keeps both documents; its plan says what changes.
  auto plan = d.cli({"apply", "--dry-run", "-f", d.data_dir() + "/berth.yaml"});
  ASSERT_EQ(plan.exit_code, 0) << plan.err;
  EXPECT_THAT(plan.out, HasSubstr("nothing changed"));
  ASSERT_EQ(d.apply(example_catalog("127.112")).exit_code, 0);
  EXPECT_TRUE(d.api().get("/v1/environments/dev-anna").ok());
  EXPECT_TRUE(d.api().get("/v1/environments/dev-ben").ok());

  // Every write is in the audit log with its versions.
  auto audit = d.api().get("/v1/audit?env=dev-anna");
  ASSERT_TRUE(audit.ok());
  std::vector<std::string> seen;
  for (const auto& e : *audit) seen.push_back(e["user"].get<std::string>() + " " + e["action"].get<std::string>());
  EXPECT_THAT(seen, testing::IsSupersetOf({"anna env.create", "anna env.update", "ben env.update"}));
  auto cli_audit = d.cli({"audit", "--user", "ben"});
  EXPECT_THAT(cli_audit.out, HasSubstr("env.create"));
  EXPECT_THAT(cli_audit.out, HasSubstr("dev-ben"));

  // Removed by its owner: gone, and the removal is audited.
  ASSERT_EQ(d.cli_as(ben, {"env", "rm", "dev-ben"}).exit_code, 0);
  EXPECT_FALSE(d.api().get("/v1/environments/dev-ben").ok());
  auto gone = d.api().get("/v1/audit?env=dev-ben");
  ASSERT_TRUE(gone.ok());
  ASSERT_FALSE(gone->empty());
  EXPECT_EQ(gone->back()["action"], "env.delete");
}

TEST(Team, AMemberBringsTheirOwnEnvironmentUpAndWatchesItsEventStream) {
  Daemon d("team-stream");
  const std::string fleet = R"(network: {pool: 127.113.0.0/24, exclude: [127.113.0.1]}
defaults:
  command: berth-demo-svc --listen ${ip}:${port.http}
  ports: {http: 8080}
  health: {type: http, port: http, path: /healthcheck, start_interval: 50ms, interval: 2s}
apps:
  users: {}
  orders: {depends_on: [users]}
environments:
  baseline: {}
)";
  ASSERT_EQ(d.apply(fleet).exit_code, 0);
  const std::string anna = token_for(d, "anna", "member");
  ASSERT_EQ(d.cli_as(anna, {"env", "create", "dev-anna", "--base", "baseline", "--set", "orders.env.MODE=mine"}).exit_code, 0);
  // The stream, on a connection of its own, sees the environment become ready as it happens.
  std::vector<std::string> seen;
  berth::Status streamed;
  std::thread watcher([&] {
    berth::client::Client c(d.address(), anna);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    streamed = c.stream("/v1/events/stream?env=dev-anna", [&](const json* e) {
      if (e) seen.push_back((*e)["type"].get<std::string>() + " " + (*e)["app"].dump());
      bool orders_ready = std::find(seen.begin(), seen.end(), "ready \"orders\"") != seen.end();
      return !orders_ready && std::chrono::steady_clock::now() < deadline;
    }, 200);
  });
  auto up = d.cli_as(anna, {"up", "dev-anna", "--timeout", "60s"});
  watcher.join();
  ASSERT_EQ(up.exit_code, 0) << up.out << up.err;
  EXPECT_TRUE(streamed.ok()) << streamed.error().message;
  EXPECT_THAT(seen, testing::Contains("ready \"users\""));
  EXPECT_THAT(seen, testing::Contains("ready \"orders\""));
  // Progress of `berth up` came from the stream: its events are printed.
  EXPECT_THAT(up.out, HasSubstr("ready"));
  // berth restart: the app's instance replaced (a new process), health-gated, then it returns.
  auto pid_of = [&](const std::string& app) {
    const json s = d.status("dev-anna");  // named: a temporary would dangle in the range-for
    for (const auto& a : s["apps"])
      if (a["app"] == app) return a["instances"][0]["pid"].is_null() ? 0 : a["instances"][0]["pid"].get<int>();
    return 0;
  };
  const int before = pid_of("orders");
  auto restarted = d.cli_as(anna, {"restart", "dev-anna", "orders", "--timeout", "60s"});
  ASSERT_EQ(restarted.exit_code, 0) << restarted.out << restarted.err;
  EXPECT_NE(pid_of("orders"), before);
  EXPECT_TRUE(d.status("dev-anna")["ready"].get<bool>());
  auto through = d.cli_as(anna, {"restart", "dev-anna", "nosuch"});
  EXPECT_NE(through.exit_code, 0);
  EXPECT_THAT(through.err, HasSubstr("no app 'nosuch'"));
  // Logs of every instance it runs, merged, each line prefixed like compose.
  auto merged = d.cli_as(anna, {"logs", "dev-anna", "--tail", "5"});
  ASSERT_EQ(merged.exit_code, 0) << merged.err;
  EXPECT_THAT(merged.out, HasSubstr("users#0  | "));
  EXPECT_THAT(merged.out, HasSubstr("orders#0 | "));
  EXPECT_THAT(merged.out, HasSubstr("listening on"));
  // Another member cannot take it down; its owner can.
  const std::string ben = token_for(d, "ben", "member");
  EXPECT_NE(d.cli_as(ben, {"down", "dev-anna"}).exit_code, 0);
  EXPECT_EQ(d.cli_as(anna, {"down", "dev-anna"}).exit_code, 0);
  // An unknown environment's events: an error, not an empty list.
  auto nosuch = d.cli({"events", "dev-anaa"});
  EXPECT_NE(nosuch.exit_code, 0);
  EXPECT_THAT(nosuch.err, HasSubstr("did you mean 'dev-anna'"));
}

TEST(Team, TheApiOverTls) {
  // A certificate for 127.0.0.1 of our own: the client verifies it against it as the CA.
  std::string cert, key;
  Daemon d("team-tls", {}, [&](const std::string& dir) {
    cert = dir + "/cert.pem";
    key = dir + "/key.pem";
    const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -keyout " + key + " -out " + cert +
                            " -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
  });
  // The harness starts it plain; start it again with TLS on the same data directory.
  d.kill9();
  const std::string bin = BERTH_BIN;
  pid_t pid = fork();
  if (pid == 0) {
    execl(bin.c_str(), bin.c_str(), "serve", "--data-dir", d.data_dir().c_str(), "--listen", "127.0.0.1:0", "--dns-listen",
          "", "--tls-cert", cert.c_str(), "--tls-key", key.c_str(), nullptr);
    _exit(127);
  }
  const std::string url_file = d.data_dir() + "/api.url";
  std::remove(url_file.c_str());
  ASSERT_TRUE(wait_until([&] { return read_file(url_file).rfind("https://", 0) == 0; }, std::chrono::seconds(10)));
  const std::string url = read_file(url_file);
  setenv("BERTH_CACERT", cert.c_str(), 1);
  berth::client::Client over_tls(url, d.admin_token());
  auto who = over_tls.get("/v1/whoami");
  EXPECT_TRUE(who.ok()) << (who.ok() ? "" : who.error().message);
  // The CLI too, with --addr https://...
  auto ls = d.cli({"--addr", url, "token", "ls"});
  EXPECT_EQ(ls.exit_code, 0) << ls.err;
  // Plain HTTP to it gets no answer; a client that does not trust the certificate refuses it.
  berth::client::Client plain(url.substr(8), d.admin_token());
  EXPECT_FALSE(plain.get("/v1/whoami").ok());
  unsetenv("BERTH_CACERT");
  berth::client::Client untrusting(url, d.admin_token());
  auto refused = untrusting.get("/v1/whoami");
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.error().message, HasSubstr("certificate verify failed"));
  ::kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
}

// Lifetimes on the real daemon with injected time (berth serve --test-clock): a warning before
// expiry, down at expiry, the document deleted after the grace period — each audited; a kept
// environment stays.
TEST(Team, AnEnvironmentExpiresOnInjectedTime) {
  Daemon d("team-expiry", {"--test-clock"});
  const std::string fleet = R"(network: {pool: 127.118.0.0/24}
defaults:
  command: berth-demo-svc --listen ${ip}:${port.http}
  ports: {http: 8080}
  health: {type: tcp, start_interval: 20ms}
apps:
  users: {}
environments:
  baseline: {}
)";
  ASSERT_EQ(d.apply(fleet).exit_code, 0);
  const std::string anna = token_for(d, "anna", "member");
  ASSERT_EQ(d.cli_as(anna, {"env", "create", "short", "--base", "baseline", "--ttl", "3h"}).exit_code, 0);
  ASSERT_EQ(d.cli_as(anna, {"env", "create", "kept", "--base", "baseline", "--ttl", "3h"}).exit_code, 0);
  ASSERT_EQ(d.cli_as(anna, {"env", "set", "kept", "keep=true"}).exit_code, 0);
  for (const char* env : {"short", "kept"}) ASSERT_EQ(d.cli_as(anna, {"up", env, "--timeout", "20s"}).exit_code, 0);
  auto advance = [&](const std::string& by) {
    auto r = d.api().post("/v1/test/clock", {{"advance", by}});
    ASSERT_TRUE(r.ok()) << r.error().message;
  };
  auto has_event = [&](const std::string& env, const std::string& type) {
    return wait_until([&] {
      const json events = d.events(env);
      for (const auto& e : events)
        if (e["type"] == type) return true;
      return false;
    });
  };
  // A member may not move the clock.
  berth::client::Client as_anna(d.address(), anna);
  auto refused = as_anna.post("/v1/test/clock", {{"advance", "1h"}});
  EXPECT_FALSE(refused.ok());

  advance("150m");  // within the hour before expiry
  EXPECT_TRUE(has_event("short", "expiring"));
  EXPECT_TRUE(d.status("short")["up"].get<bool>());
  advance("1h");  // past expiry
  EXPECT_TRUE(has_event("short", "expired"));
  EXPECT_TRUE(wait_until([&] { return !d.status("short")["up"].get<bool>() && d.status("short")["apps"][0]["instances"][0]["pid"].is_null(); }));
  EXPECT_TRUE(d.status("kept")["up"].get<bool>());  // keep: true
  advance("25h");  // past the grace period
  EXPECT_TRUE(wait_until([&] { return d.cli({"env", "get", "short"}).exit_code != 0; }));
  EXPECT_EQ(d.cli({"env", "get", "kept"}).exit_code, 0);
  auto audit = d.cli({"audit", "--env", "short"});
  ASSERT_EQ(audit.exit_code, 0) << audit.err;
  EXPECT_THAT(audit.out, HasSubstr("env.expire"));
  EXPECT_THAT(audit.out, HasSubstr("env.delete"));
}

namespace {
// Bytes as they are, then whatever comes back until the daemon closes (at most 5 s).
std::string send_raw(const std::string& addr, const std::string& bytes) {
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket s(io);
  auto colon = addr.rfind(':');
  s.connect({boost::asio::ip::make_address(addr.substr(0, colon)),
             static_cast<unsigned short>(std::stoi(addr.substr(colon + 1)))});
  boost::system::error_code ec;
  boost::asio::write(s, boost::asio::buffer(bytes), ec);
  std::string out;
  std::array<char, 4096> buf{};
  timeval tv{5, 0};
  ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  for (;;) {
    std::size_t n = s.read_some(boost::asio::buffer(buf), ec);
    if (ec || n == 0) break;
    out.append(buf.data(), n);
  }
  return out;
}
}  // namespace

// Hostile or broken clients: a clear status for what cannot be read, and idle connections
// beyond the cap never starve the daemon of descriptors (its probes keep passing).
TEST(Team, MalformedAndIdleClientsGetAnswersAndCannotStarveTheDaemon) {
  Daemon d("team-http");
  EXPECT_THAT(send_raw(d.address(), "GARBAGE\r\n\r\n"), HasSubstr("HTTP/1.1 400 Bad Request"));
  EXPECT_THAT(send_raw(d.address(), "GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(70'000, 'a') + "\r\n\r\n"),
              HasSubstr("HTTP/1.1 431"));
  EXPECT_THAT(send_raw(d.address(), "POST /v1/catalog HTTP/1.1\r\nHost: x\r\nContent-Length: 9000000\r\n\r\nabc"),
              HasSubstr("HTTP/1.1 413"));
  const std::string fleet = R"(network: {pool: 127.119.0.0/24}
defaults:
  command: berth-demo-svc --listen ${ip}:${port.http}
  ports: {http: 8080}
  health: {type: http, path: /healthcheck, start_interval: 20ms, interval: 100ms, failure_threshold: 1}
apps:
  users: {}
environments:
  baseline: {}
)";
  ASSERT_EQ(d.apply(fleet).exit_code, 0);
  ASSERT_EQ(d.cli({"up", "baseline", "--timeout", "20s"}).exit_code, 0);
  const json up = d.status("baseline");
  const int restarts_before = up["apps"][0]["instances"][0]["restarts"].get<int>();
  const int pid_before = up["apps"][0]["instances"][0]["pid"].get<int>();
  // 600 clients that connect and say nothing.
  boost::asio::io_context io;
  std::vector<std::unique_ptr<boost::asio::ip::tcp::socket>> idle;
  auto colon = d.address().rfind(':');
  const boost::asio::ip::tcp::endpoint ep(boost::asio::ip::make_address(d.address().substr(0, colon)),
                                          static_cast<unsigned short>(std::stoi(d.address().substr(colon + 1))));
  for (int i = 0; i < 600; ++i) {
    auto s = std::make_unique<boost::asio::ip::tcp::socket>(io);
    boost::system::error_code ec;
    s->connect(ep, ec);
    if (!ec) idle.push_back(std::move(s));
  }
  EXPECT_GE(idle.size(), 512u);
  // At the cap, one more connection is closed unanswered instead of taking a descriptor.
  EXPECT_EQ(send_raw(d.address(), "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"), "");
  // While they hold their connections the instance crashes: berth still starts its
  // replacement (the daemon has descriptors left for that).
  ::kill(pid_before, SIGKILL);
  EXPECT_TRUE(wait_until([&] {
    for (const auto& p : d.processes())
      if (p.app == "users" && p.pid != pid_before) return true;
    return false;
  }));
  idle.clear();
  EXPECT_TRUE(wait_until([&] { return d.api().get("/v1/environments").ok(); }));
  EXPECT_TRUE(wait_until([&] { return d.status("baseline")["apps"][0]["instances"][0]["state"] == "ready"; }));
  const json s = d.status("baseline");
  EXPECT_EQ(s["apps"][0]["instances"][0]["restarts"].get<int>(), restarts_before + 1);  // the kill, nothing else
  // No probe failed for want of a descriptor of the daemon's. (A probe in flight when the kill
  // lands may see the dying instance reset its connection, a moment before its exit is seen:
  // that one is the instance's, and restarts it all the same.)
  const json events = d.events("baseline");
  for (const auto& e : events) {
    if (e["type"] != "unhealthy") continue;
    EXPECT_THAT(e["message"].get<std::string>(), testing::AnyOf(HasSubstr("Connection reset by peer"), HasSubstr("Connection refused")))
        << e.dump();
  }
}
