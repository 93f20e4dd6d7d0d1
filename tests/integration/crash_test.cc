// The crash campaign: the daemon SIGKILLed at random moments while it brings an environment up
// (with a build from source), rolls out a changed setting, restarts every instance one at a
// time and brings it down. After each kill it is started again and must converge, and then the
// process table and `status` must show the desired instances exactly — one process per instance,
// none after down — every address unique, in the pool, not excluded, and the same as before the
// kill. CI runs 15 kills; tests/crash_campaign.sh runs more (BERTH_CRASH_KILLS) and the seed
// (BERTH_CRASH_SEED) replays a run.
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "harness.h"
#include "model/catalog.h"
#include "model/network.h"

using namespace berth::it;
using nlohmann::json;

namespace {

int env_int(const char* name, int def) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : def;
}

struct Counts {
  int kills = 0, converged = 0, instances_checked = 0, addresses_checked = 0;
};

}  // namespace

TEST(CrashCampaign, EveryKillConvergesToTheDesiredInstancesWithTheirAddresses) {
  const int kills = env_int("BERTH_CRASH_KILLS", 15);
  const unsigned seed = static_cast<unsigned>(env_int("BERTH_CRASH_SEED", static_cast<int>(std::random_device{}() & 0x7fffffff)));
  std::mt19937 random(seed);
  std::printf("crash campaign: %d kills, seed %u (BERTH_CRASH_SEED=%u replays it)\n", kills, seed, seed);

  const std::string base = example_catalog("127.114");
  auto parsed = berth::model::Catalog::parse(base, "berth.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  const berth::model::NetworkSpec net = parsed->network();

  Daemon d("crash");
  ASSERT_EQ(d.apply(base).exit_code, 0);
  std::map<std::string, std::string> address;  // app#n → its address, fixed once first seen
  Counts n;
  int variant = 0;

  // Converged: every instance the status wants is ready, one process each, addresses as known.
  auto check_up = [&](const char* phase) {
    ASSERT_TRUE(wait_until([&] {
      auto s = d.api().get("/v1/environments/baseline");
      return s.ok() && (*s)["ready"].get<bool>() && !(*s)["updating"].get<bool>();
    }, std::chrono::seconds(90))) << phase << ": did not converge\n" << d.status("baseline").dump(1);
    auto s = d.status("baseline");
    std::map<std::string, std::string> wanted;  // app#n → ip, from the status
    for (const auto& a : s["apps"]) {
      if (a["runs_in"] != "baseline") continue;
      for (const auto& i : a["instances"])
        if (i["state"] != "completed") wanted[fmt::format("{}#{}", a["app"].get<std::string>(), i["ordinal"].get<int>())] = i["ip"];
    }
    std::map<std::string, int> running;
    std::set<std::string> ips;
    for (const auto& p : d.processes()) {
      if (p.env != "baseline") continue;
      const std::string k = p.app + "#" + p.instance;
      ++running[k];
      EXPECT_TRUE(ips.insert(p.ip).second) << phase << ": " << p.ip << " held twice";
      auto ip = berth::model::parse_ipv4(p.ip);
      EXPECT_TRUE(ip && net.usable(*ip)) << phase << ": " << p.ip << " is not a usable pool address";
      ++n.addresses_checked;
    }
    for (const auto& [k, ip] : wanted) {
      EXPECT_EQ(running[k], 1) << phase << ": " << k << " has " << running[k] << " processes";
      if (auto it = address.find(k); it != address.end()) EXPECT_EQ(ip, it->second) << phase << ": " << k << " moved";
      else address[k] = ip;
      ++n.instances_checked;
    }
    for (const auto& [k, count] : running) EXPECT_TRUE(wanted.count(k)) << phase << ": " << k << " runs but is not wanted";
    ++n.converged;
  };
  auto check_down = [&](const char* phase) {
    ASSERT_TRUE(wait_until([&] {
      for (const auto& p : d.processes())
        if (p.env == "baseline") return false;
      return true;
    }, std::chrono::seconds(60))) << phase << ": processes left after down";
    ++n.converged;
  };
  auto kill_soon = [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 1200)(random)));
    d.kill9();
    ++n.kills;
    d.start();
  };

  for (int k = 0; k < kills && !HasFatalFailure(); ++k) {
    switch (k % 4) {
      case 0:  // up (its first wave, the build of orders from source, later waves)
        ASSERT_EQ(d.cli({"up", "baseline", "--no-wait"}).exit_code, 0);
        kill_soon();
        check_up("up");
        break;
      case 1: {  // a changed setting rolled out instance by instance
        std::string changed = replaced(base, "DEMO_WARMUP_MS: \"600\"", fmt::format("DEMO_WARMUP_MS: \"{}\"", 601 + variant++));
        ASSERT_EQ(d.apply(changed).exit_code, 0);
        kill_soon();
        check_up("rolling apply");
        break;
      }
      case 2:  // every instance restarted, one at a time
        ASSERT_TRUE(d.api().post("/v1/environments/baseline/restart").ok());
        kill_soon();
        check_up("restart");
        break;
      case 3:  // down: nothing may be left, and the next up gets the same addresses back
        ASSERT_EQ(d.cli({"down", "baseline", "--no-wait"}).exit_code, 0);
        kill_soon();
        check_down("down");
        break;
    }
  }
  std::printf("crash campaign: %d kills, %d convergences checked, %d instance checks, %d address checks, seed %u\n",
              n.kills, n.converged, n.instances_checked, n.addresses_checked, seed);
}
