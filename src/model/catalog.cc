#include "model/catalog.h"

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "base/text.h"

namespace berth::model {

std::string_view to_string(HealthType t) {
  switch (t) {
    case HealthType::kNone: return "none";
    case HealthType::kHttp: return "http";
    case HealthType::kTcp: return "tcp";
    case HealthType::kExec: return "exec";
  }
  return "?";
}
std::string_view to_string(RestartPolicy p) {
  switch (p) {
    case RestartPolicy::kAlways: return "always";
    case RestartPolicy::kOnFailure: return "on-failure";
    case RestartPolicy::kNever: return "never";
  }
  return "?";
}
std::string_view to_string(DependencyFailure p) {
  switch (p) {
    case DependencyFailure::kIgnore: return "ignore";
    case DependencyFailure::kMark: return "mark";
    case DependencyFailure::kRestart: return "restart";
  }
  return "?";
}

std::string AppSpec::compute_fingerprint() const {
  std::string f = fmt::format("{}\n{}\n{}\n{}", command, tag, build_type, job ? "job\n" : "");
  if (source) f += fmt::format("source {}\n{}\n{}\n{}\n", source->repo, source->command, source->artifact, source->dockerfile);
  if (!container() && !user.empty()) f += fmt::format("user {}\n", user);
  if (container()) {
    f += fmt::format("image {}\nuser {}\nworkdir {}\n", image, user, workdir);
    if (command_words) f += fmt::format("cmd {}\n", fmt::join(*command_words, "\x1f"));
    if (entrypoint) f += fmt::format("entrypoint {}\n", fmt::join(*entrypoint, "\x1f"));
    for (const auto& v : volumes) f += fmt::format("volume {} {} {} {}\n", v.bind, v.source, v.target, v.read_only);
  }
  for (const auto& a : args) f += fmt::format("arg {}\n", a);
  if (resources.cpus || resources.memory_bytes) f += fmt::format("resources {} {}\n", resources.cpus, resources.memory_bytes);
  for (const auto& c : constraints) f += fmt::format("constraint {}\n", fmt::join(c.words(), "\x1f"));
  if (database) f += fmt::format("database {}@{} {} {}\n", database->standard, database->version, database->user, database->password);
  for (const auto& [k, v] : ports) f += fmt::format("port {}={}\n", k, v);
  for (const auto& [k, v] : env) f += fmt::format("env {}={}\n", k, v);
  return fmt::format("{:016x}", std::hash<std::string>{}(f));
}

const AppSpec* Environment::find(std::string_view app) const {
  if (app_index) {
    auto it = app_index->find(std::string(app));
    return it == app_index->end() ? nullptr : &apps[it->second];
  }
  for (const auto& a : apps)
    if (a.app == app) return &a;
  return nullptr;
}

bool Environment::runs(std::string_view app) const {
  auto it = served_by.find(std::string(app));
  return it != served_by.end() && it->second == name;
}

int Environment::instance_count() const {
  int n = 0;
  for (const auto& a : apps)
    if (runs(a.app)) n += a.instances;
  return n;
}

const EnvDocument* Catalog::document(std::string_view env) const {
  if (!doc_index_.empty()) {
    auto it = doc_index_.find(std::string(env));
    return it == doc_index_.end() ? nullptr : &documents_[it->second];
  }
  for (const auto& d : documents_)
    if (d.name == env) return &d;
  return nullptr;
}

void Catalog::index() {
  env_index_.clear();
  doc_index_.clear();
  for (std::size_t i = 0; i < documents_.size(); ++i) doc_index_.emplace(documents_[i].name, i);
  // Every environment has every app of the fleet, in the same order: one index serves them all.
  auto apps = std::make_shared<std::unordered_map<std::string, std::size_t>>();
  if (!environments_.empty())
    for (std::size_t j = 0; j < environments_.front().apps.size(); ++j) apps->emplace(environments_.front().apps[j].app, j);
  for (std::size_t i = 0; i < environments_.size(); ++i) {
    Environment& env = environments_[i];
    env_index_[env.name] = i;
    env.app_index = apps;
  }
}

const Environment* Catalog::find(std::string_view env) const {
  if (!env_index_.empty()) {
    auto it = env_index_.find(std::string(env));
    return it == env_index_.end() ? nullptr : &environments_[it->second];
  }
  for (const auto& e : environments_)
    if (e.name == env) return &e;
  return nullptr;
}

std::vector<std::string> Catalog::environment_names() const {
  std::vector<std::string> names;
  for (const auto& e : environments_) names.push_back(e.name);
  return names;
}

std::vector<std::string> command_variables() {
  return {"tag", "build_type", "env", "app", "ordinal", "ip"};
}

std::string image_reference(std::string_view tmpl, const std::map<std::string, std::string>& vars) {
  auto v = vars;
  if (auto it = v.find("tag"); it != v.end())
    for (auto& c : it->second)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') c = '-';
  return substitute_raw(tmpl, v);
}

std::string substitute_raw(std::string_view tmpl, const std::map<std::string, std::string>& vars) {
  std::string out(tmpl);
  for (const auto& [k, v] : vars)
    for (auto at = out.find("${" + k + "}"); at != std::string::npos; at = out.find("${" + k + "}", at + v.size()))
      out.replace(at, k.size() + 3, v);
  return out;
}

std::string substitute(std::string_view tmpl, const std::map<std::string, std::string>& vars) {
  std::string out;
  std::size_t i = 0;
  while (i < tmpl.size()) {
    if (tmpl[i] == '$' && i + 1 < tmpl.size() && tmpl[i + 1] == '{') {
      auto close = tmpl.find('}', i + 2);
      if (close != std::string_view::npos) {
        std::string name(tmpl.substr(i + 2, close - i - 2));
        if (auto it = vars.find(name); it != vars.end()) {
          out += shell_quote(it->second);
          i = close + 1;
          continue;
        }
      }
    }
    out += tmpl[i++];
  }
  return out;
}

}  // namespace berth::model
