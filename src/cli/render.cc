#include "cli/render.h"

#include <algorithm>
#include <map>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "base/text.h"

namespace berth::cli {
using nlohmann::json;

namespace {

std::string str(const json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return "";
  if (j[key].is_string()) return j[key].get<std::string>();
  return j[key].dump();
}

// Columns padded to the widest cell; UTF-8 aware enough for arrows in messages (counts code points).
std::size_t width(const std::string& s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

std::string table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> w;
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (w.size() <= i) w.push_back(0);
      w[i] = std::max(w[i], width(r[i]));
    }
  std::string out;
  for (const auto& r : rows) {
    std::string line;
    for (std::size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(w[i] - width(r[i]) + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

}  // namespace

std::string short_layer(const std::string& layer) {
  if (layer == "defaults" || layer == "built-in") return layer;
  if (layer.rfind("apps.", 0) == 0) return "app";
  if (layer.rfind("databases.", 0) == 0) return "database";
  if (layer.rfind("environments.", 0) == 0) {
    std::string rest = layer.substr(13);
    auto dot = rest.find(".apps.");
    if (dot == std::string::npos) return "env " + rest;
    return "env " + rest.substr(0, dot) + " app override";
  }
  return layer;
}

std::string status_table(const json& s, bool wide) {
  std::string out = fmt::format("environment {}{}: {}\n", str(s, "environment"),
                                s["base"].is_null() ? "" : fmt::format(" (base {})", str(s, "base")),
                                !s["up"].get<bool>() ? "down" : s["ready"].get<bool>() ? "up, ready" : "up, not ready");
  std::vector<std::vector<std::string>> rows;
  if (wide) rows.push_back({"APP", "RUNS IN", "TAG", "BUILD_TYPE", "#", "IP", "PORTS", "DNS", "RUNS AS", "STATE", "HEALTH / MESSAGE"});
  else rows.push_back({"APP", "RUNS IN", "TAG", "BUILD_TYPE", "#", "ADDRESS", "STATE", "HEALTH / MESSAGE"});
  for (const auto& a : s["apps"]) {
    std::string runs = str(a, "runs_in");
    std::string runs_in = runs == str(s, "environment") || runs.empty() ? "here" : "→ " + runs;
    const auto& from = a["from"];
    std::string tag = fmt::format("{} [{}]", str(a, "tag"), short_layer(from.value("tag", "")));
    if (a.contains("build")) {
      const auto& b = a["build"];
      std::string commit = b["commit"].is_null() ? "?" : b["commit"].get<std::string>().substr(0, 7);
      std::string state = b["state"].get<std::string>();
      if (!b["duration_ms"].is_null()) state += fmt::format(" in {:.1f}s", b["duration_ms"].get<double>() / 1000.0);
      tag = fmt::format("{} → {} ({}) [{}]", str(a, "tag"), commit, state, short_layer(from.value("tag", "")));
    }
    std::string bt = fmt::format("{} [{}]", str(a, "build_type"), short_layer(from.value("build_type", "")));
    if (a.contains("database")) {  // a database: its standard and how its copy was made
      const auto& d = a["database"];
      tag = fmt::format("{} [{}]", str(d, "standard"), short_layer(from.value("standard", "")));
      if (!d["version"].is_null()) {
        const int pending = d.value("pending_migrations", 0);
        const int drift = d.contains("drift") && d["drift"].is_number_integer() ? d["drift"].get<int>() : 0;
        const int own = d.value("own_migrations", 0);
        tag = fmt::format("{} → v{}{}{}{} ({} {:.2f}s) [{}]", str(d, "standard"), d["version"].get<int>(),
                          own ? fmt::format(" +{} own", own) : "", pending ? fmt::format(" +{} pending", pending) : "",
                          drift ? fmt::format(" drift {}", drift) : "", str(d, "copy_method"),
                          d["copy_ms"].get<double>() / 1000.0, short_layer(from.value("standard", "")));
      }
      bt = "-";
    }
    bool first = true;
    for (const auto& i : a["instances"]) {
      std::string msg = str(i, "state") == "ready" ? str(i, "health") : str(i, "message");
      if (msg.empty()) msg = str(i, "message");
      std::string state = str(i, "state");
      if (i["restarts"].get<int>() > 0) state += fmt::format(" ({} restarts)", i["restarts"].get<int>());
      // "pid 4711", "container 3fa2c1d0e9ab"; the runtime while nothing runs.
      std::string runs_as = i.contains("detail") && i["detail"].is_string() ? i["detail"].get<std::string>()
                            : i.contains("runtime")                         ? str(i, "runtime")
                                                                            : "";
      // ADDRESS: ip:port of the first port (http if there is one); PORTS: every one by name.
      std::string address = str(i, "ip"), ports;
      if (a.contains("ports") && a["ports"].is_object() && !a["ports"].empty()) {
        const auto& p = a["ports"];
        address += ":" + (p.contains("http") ? p["http"].dump() : p.begin().value().dump());
        for (const auto& [name, port] : p.items()) ports += (ports.empty() ? "" : " ") + name + "=" + port.dump();
      }
      if (wide)
        rows.push_back({first ? str(a, "app") : "", first ? runs_in : "", first ? tag : "", first ? bt : "", str(i, "ordinal"),
                        str(i, "ip"), ports, str(i, "dns"), runs_as, state, msg});
      else
        rows.push_back({first ? str(a, "app") : "", first ? runs_in : "", first ? tag : "", first ? bt : "", str(i, "ordinal"),
                        str(i, "ip").empty() ? "" : address, state, msg});
      first = false;
    }
  }
  const std::string t = table(rows);
  if (wide) {
    out += t;
  } else {
    // 120 columns: the last column (messages) is cut, the rest fits.
    for (std::size_t i = 0; i < t.size();) {
      auto nl = t.find('\n', i);
      std::string line = t.substr(i, nl - i);
      if (width(line) > 120) {
        std::size_t cut = 0, n = 0;
        while (cut < line.size() && n < 119) {
          ++n;
          ++cut;
          while (cut < line.size() && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) ++cut;
        }
        line = line.substr(0, cut) + "…";
      }
      out += line + "\n";
      i = nl + 1;
    }
  }
  if (s.contains("notes"))
    for (const auto& n : s["notes"]) out += "note: " + n.get<std::string>() + "\n";
  return out;
}

std::string versions_table(const json& r) {
  json list = r.contains("standards") ? r["standards"] : json::array({r});
  std::vector<std::vector<std::string>> rows = {{"STANDARD", "VERSION", "CREATED", "SIZE", "FILES", "UPLOADED", "IMPORT", "SOURCE"}};
  for (const auto& s : list)
    for (const auto& v : s["versions"])
      rows.push_back({str(v, "standard"), str(v, "version"), str(v, "created_at"), format_bytes(v["bytes"]), str(v, "files"),
                      fmt::format("{} ({} new chunks of {})", format_bytes(v["uploaded_bytes"]), str(v, "new_chunks"), str(v, "chunks")),
                      fmt::format("{:.1f}s", v["import_ms"].get<double>() / 1000.0), str(v, "source")});
  std::string out = r.contains("store") ? fmt::format("store: {}\n", str(r, "store")) : "";
  return out + table(rows);
}

std::string rollout_table(const json& r) {
  std::vector<std::vector<std::string>> rows = {{"ENVIRONMENT", "DATABASE", "VERSION", "STATE", "TIME", "WHAT"}};
  for (const auto& w : r["rows"]) {
    const std::string state = w["state"].get<std::string>();
    std::string what = w["error"].is_null() ? w.value("phase", "") : w["error"].get<std::string>();
    if (state == "restored") what = "put back: " + what;
    rows.push_back({w["environment"].get<std::string>() + (w.value("canary", false) ? " (canary)" : ""),
                    w["database"].get<std::string>(),
                    state == "skipped" ? fmt::format("{}", w["from"].get<int>()) : fmt::format("{} → {}", w["from"].get<int>(), w["to"].get<int>()),
                    state, w["ms"].is_null() ? "" : format_duration(w["ms"].get<Millis>()), what});
  }
  return fmt::format("rollout of {} to version {}: {}\n", r["standard"].get<std::string>(), r["to"].get<int>(),
                     r["state"].get<std::string>()) +
         table(rows);
}

std::string drift_table(const json& c) {
  std::vector<std::vector<std::string>> rows = {{"ENVIRONMENT", "DATABASE", "AGAINST", "DRIFT", "READ", "TIME", "WHY"}};
  std::string details;
  for (const auto& w : c["rows"]) {
    const std::string state = str(w, "state");
    std::string drift = state == "checked" ? (w["drift"].get<int>() ? std::to_string(w["drift"].get<int>()) : "none") : state;
    rows.push_back({str(w, "environment"), str(w, "database"), fmt::format("{}@{}", str(w, "standard"), w["version"].get<int>()), drift,
                    state == "checked" ? (w.value("live", false) ? "its server" : "private server") : "",
                    state == "checked" || state == "failed" ? format_duration(w["ms"].get<Millis>()) : "",
                    w["error"].is_null() ? "" : str(w, "error")});
    if (w["differences"].empty()) continue;
    details += fmt::format("\n{}/{} against {}@{}:\n", str(w, "environment"), str(w, "database"), str(w, "standard"),
                           w["version"].get<int>());
    for (const auto& x : w["differences"]) {
      const std::string what = str(x, "what");
      details += fmt::format("  {} {} ({}){}\n", what == "missing" ? "-" : what == "extra" ? "+" : "~", str(x, "object"), str(x, "kind"),
                             what == "missing" ? ": missing from the copy" : what == "extra" ? ": only in the copy" : "");
      if (what != "changed") continue;
      for (const auto& l : x["only_standard"]) details += "      - " + l.get<std::string>() + "\n";
      for (const auto& l : x["only_copy"]) details += "      + " + l.get<std::string>() + "\n";
    }
  }
  return fmt::format("drift check {}: {}\n", c["id"].get<int>(), str(c, "state")) + table(rows) + details;
}

std::string documents_table(const json& docs) {
  std::vector<std::vector<std::string>> rows = {{"ENVIRONMENT", "OWNER", "BASE", "KIND", "VERSION", "CHANGED", "EXPIRES", "PROBLEM"}};
  for (const auto& d : docs) {
    std::string expires = d.value("keep", false) ? "kept" : str(d, "expires");
    rows.push_back({str(d, "name"), str(d, "owner"), str(d, "base"), d.value("thin", false) ? "thin" : "full",
                    str(d, "version"), fmt::format("{} by {}", str(d, "updated_at"), str(d, "updated_by")),
                    expires.empty() ? "-" : expires, d["error"].is_null() ? "" : str(d, "error")});
  }
  return table(rows);
}

std::string diff_table(const json& d) {
  if (d["differences"].empty())
    return fmt::format("{} and {}: no setting differs\n", str(d, "environment"), str(d, "against"));
  std::vector<std::vector<std::string>> rows = {
      {"APP", "SETTING", str(d, "environment"), "FROM", str(d, "against"), "FROM"}};
  for (const auto& x : d["differences"])
    rows.push_back({str(x, "app"), str(x, "setting"), x["value"].is_null() ? "-" : str(x, "value"),
                    short_layer(str(x, "from")), x["against_value"].is_null() ? "-" : str(x, "against_value"),
                    short_layer(str(x, "against_from"))});
  return table(rows);
}

std::string plan_text(const json& r) {
  const json& p = r["plan"];
  std::string out;
  for (const auto& e : p["added"]) out += fmt::format("  + environment {}\n", e.get<std::string>());
  for (const auto& e : p["removed"]) out += fmt::format("  - environment {}\n", e.get<std::string>());
  for (const auto& c : p["changed"]) {
    std::vector<std::string> settings;
    for (const auto& k : c["settings"]) settings.push_back(k.get<std::string>());
    out += fmt::format("  ~ {} {}: {}{}\n", str(c, "environment"), str(c, "app"),
                       settings.empty() ? "runs or not" : fmt::format("{}", fmt::join(settings, ", ")),
                       c["replaced"].get<int>() ? fmt::format(" ({} instance(s) replaced)", c["replaced"].get<int>()) : "");
  }
  for (const auto& [name, why] : p["invalidated"].items())
    out += fmt::format("  ! environment {} becomes invalid: {}\n", name, why.get<std::string>());
  for (const auto& n : p["notes"]) out += fmt::format("  note: {}\n", n.get<std::string>());
  if (out.empty()) out = "  no change\n";
  return out;
}

std::string audit_table(const json& entries) {
  std::vector<std::vector<std::string>> rows = {{"TIME", "USER", "ACTION", "TARGET", "VERSIONS", "DETAIL"}};
  for (const auto& e : entries) {
    std::string versions;
    if (!e["before_version"].is_null() || !e["after_version"].is_null())
      versions = fmt::format("{} → {}", e["before_version"].is_null() ? "-" : str(e, "before_version"),
                             e["after_version"].is_null() ? "-" : str(e, "after_version"));
    rows.push_back({str(e, "time"), str(e, "user"), str(e, "action"), str(e, "target"), versions, str(e, "detail")});
  }
  return table(rows);
}

std::string tokens_table(const json& tokens) {
  std::vector<std::vector<std::string>> rows = {{"ID", "USER", "ROLE", "CREATED", "BY", "REVOKED"}};
  for (const auto& t : tokens)
    rows.push_back({str(t, "id"), str(t, "user"), str(t, "role"), str(t, "created_at"), str(t, "created_by"),
                    t["revoked_at"].is_null() ? "" : str(t, "revoked_at")});
  return table(rows);
}

std::string cluster_table(const json& c) {
  std::vector<std::vector<std::string>> rows = {{"HOST", "STATE", "SWARM", "AVAILABILITY", "ROLE", "CPUS", "MEMORY", "INSTANCES", "LABELS"}};
  for (const auto& h : c["hosts"]) {
    const json& sw = h["swarm"];
    std::string labels;
    if (h["labels"].is_object())
      for (const auto& [k, v] : h["labels"].items()) labels += fmt::format("{}{}={}", labels.empty() ? "" : ",", k, v.is_string() ? v.get<std::string>() : v.dump());
    const double cpus = h["nano_cpus"].is_number() ? h["nano_cpus"].get<double>() / 1e9 : 0;
    const double mem = h["memory_bytes"].is_number() ? h["memory_bytes"].get<double>() : 0;
    rows.push_back({str(h, "host"), str(h, "state") + (h.value("leaving", false) ? ", leaving" : ""), str(sw, "state"), str(sw, "availability"),
                    str(sw, "role") + (sw.value("leader", false) ? " (leader)" : ""), cpus > 0 ? fmt::format("{:g}", cpus) : "",
                    mem > 0 ? fmt::format("{:.1f} GiB", mem / (1024.0 * 1024 * 1024)) : "",
                    std::to_string(h["instances"].is_array() ? h["instances"].size() : 0), labels});
  }
  return table(rows);
}

std::string config_table(const json& c) {
  std::string out;
  for (const auto& a : c["apps"]) {
    out += fmt::format("{} in {}{}\n", str(a, "app"), str(c, "environment"),
                       c["base"].is_null() ? "" : fmt::format(" (base {})", str(c, "base")));
    std::vector<std::vector<std::string>> rows = {{"  SETTING", "VALUE", "FROM"}};
    for (const auto& s : a["settings"]) rows.push_back({"  " + str(s, "setting"), str(s, "value"), str(s, "from")});
    out += table(rows) + "\n";
  }
  return out;
}

std::string event_line(const json& e) {
  std::string who = str(e, "app");
  if (!e["ordinal"].is_null()) who += "#" + str(e, "ordinal");
  std::string ip = str(e, "ip");
  return fmt::format("{}  {:<20} {:<12} {:<13} {}", str(e, "time"), str(e, "type"), who, ip, str(e, "message"));
}

std::vector<std::string> root_causes(const json& s) {
  std::map<std::string, const json*> apps;
  for (const auto& a : s["apps"]) apps[a["app"].get<std::string>()] = &a;
  std::map<std::string, std::set<std::string>> blocked;  // root → apps that wait on it, transitively
  std::vector<std::string> out;
  for (const auto& a : s["apps"]) {
    std::string state = str(a, "state");
    if (state == "ready" || state == "degraded") continue;
    // Follow waiting_for down to apps that wait for nothing.
    std::vector<std::string> stack{a["app"].get<std::string>()};
    std::set<std::string> seen;
    while (!stack.empty()) {
      std::string cur = stack.back();
      stack.pop_back();
      if (!seen.insert(cur).second || !apps.count(cur)) continue;
      const json& c = *apps[cur];
      if (c["waiting_for"].empty()) {
        if (cur != a["app"].get<std::string>()) blocked[cur].insert(a["app"].get<std::string>());
        else blocked[cur];
      }
      for (const auto& d : c["waiting_for"]) stack.push_back(d.get<std::string>());
    }
  }
  for (const auto& [root, waiters] : blocked) {
    const json& a = *apps[root];
    std::string msg = str(a, "message");
    // An instance that exited says why better than its last probe did before it ended.
    bool exited = false;
    for (const auto& i : a["instances"]) {
      const std::string m = str(i, "message");
      if (m.find("exited with") != std::string::npos || m.find("killed by") != std::string::npos) {
        msg = m;
        exited = true;
        break;
      }
    }
    if (!exited)
      for (const auto& i : a["instances"])
        if (!str(i, "health").empty() && str(i, "state") != "ready") { msg = str(i, "health"); break; }
    std::string line = fmt::format("{} is {}: {}", root, str(a, "state"), msg.empty() ? "no detail" : msg);
    if (!waiters.empty()) {
      std::string names;
      for (const auto& w : waiters) names += (names.empty() ? "" : ", ") + w;
      line += fmt::format(" (blocking {})", names);
    }
    out.push_back(line);
  }
  return out;
}

std::string progress_summary(const json& s) {
  int ready = 0, total = 0;
  std::vector<std::string> waiting, starting, stopping;
  for (const auto& a : s["apps"]) {
    ++total;
    std::string st = str(a, "state");
    if (st == "ready" || st == "degraded") ++ready;
    else if (st == "waiting") {
      std::string deps;
      for (const auto& d : a["waiting_for"]) deps += (deps.empty() ? "" : ", ") + d.get<std::string>();
      // Waiting for no dependency: for its build or its database copy — the message says which.
      waiting.push_back(deps.empty() ? fmt::format("{} ({})", str(a, "app"), str(a, "message"))
                                     : fmt::format("{} (for {})", str(a, "app"), deps));
    } else if (st == "starting" || st == "failed") starting.push_back(str(a, "app"));
    else if (st == "stopping") stopping.push_back(str(a, "app"));
  }
  std::string out = fmt::format("{}/{} apps ready", ready, total);
  auto list = [](const std::vector<std::string>& v) {
    std::string r;
    for (const auto& x : v) r += (r.empty() ? "" : ", ") + x;
    return r;
  };
  if (!starting.empty()) out += "; starting: " + list(starting);
  if (!waiting.empty()) out += "; waiting: " + list(waiting);
  if (!stopping.empty()) out += "; stopping: " + list(stopping);
  return out;
}

}  // namespace berth::cli
