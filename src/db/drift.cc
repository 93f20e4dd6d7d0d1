// db::Manager's drift checks (db/drift.h): each copy's schema against its version's golden.
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/files.h"
#include "db/files.h"
#include "db/manager.h"

namespace berth::db {
namespace fs = std::filesystem;
using nlohmann::json;

std::string_view to_string(DriftResult::State s) {
  switch (s) {
    case DriftResult::State::kPending: return "pending";
    case DriftResult::State::kChecking: return "checking";
    case DriftResult::State::kChecked: return "checked";
    case DriftResult::State::kFailed: return "failed";
    case DriftResult::State::kSkipped: return "skipped";
  }
  return "?";
}

std::string_view to_string(SchemaDifference::What w) {
  switch (w) {
    case SchemaDifference::What::kMissing: return "missing";
    case SchemaDifference::What::kExtra: return "extra";
    case SchemaDifference::What::kChanged: return "changed";
  }
  return "?";
}

namespace {

json schema_to_json(const Schema& s) {
  json j = json::object();
  for (const auto& [name, o] : s) j[name] = {{"kind", o.kind}, {"lines", o.lines}};
  return j;
}

std::optional<Schema> schema_from_json(const json& j) {
  try {
    Schema s;
    for (const auto& [name, o] : j.items()) s[name] = {o.at("kind").get<std::string>(), o.at("lines").get<std::vector<std::string>>()};
    return s;
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

json result_to_json(const DriftResult& r) {
  json diffs = json::array();
  for (const auto& d : r.differences)
    diffs.push_back({{"object", d.object}, {"kind", d.kind}, {"what", std::string(to_string(d.what))},
                     {"only_expected", d.only_expected}, {"only_actual", d.only_actual}});
  return {{"env", r.env}, {"db", r.db}, {"standard", r.standard}, {"version", r.version},
          {"state", std::string(to_string(r.state))}, {"error", r.error}, {"live", r.live},
          {"checked_at", r.checked_at}, {"took_ms", r.took_ms}, {"differences", diffs}};
}

std::optional<DriftResult> result_from_json(const json& j) {
  try {
    DriftResult r;
    r.env = j.at("env");
    r.db = j.at("db");
    r.standard = j.at("standard");
    r.version = j.at("version");
    const std::string state = j.at("state");
    r.state = state == "checked" ? DriftResult::State::kChecked : DriftResult::State::kFailed;
    r.error = j.value("error", "");
    r.live = j.value("live", false);
    r.checked_at = j.value("checked_at", 0ll);
    r.took_ms = j.value("took_ms", 0ll);
    for (const auto& d : j.at("differences")) {
      SchemaDifference x;
      x.object = d.at("object");
      x.kind = d.at("kind");
      const std::string what = d.at("what");
      x.what = what == "missing" ? SchemaDifference::What::kMissing
               : what == "extra" ? SchemaDifference::What::kExtra
                                 : SchemaDifference::What::kChanged;
      x.only_expected = d.value("only_expected", std::vector<std::string>{});
      x.only_actual = d.value("only_actual", std::vector<std::string>{});
      r.differences.push_back(std::move(x));
    }
    return r;
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

fs::path drift_file(const Copy& c) { return fs::path(c.dir) / "drift.json"; }

}  // namespace

std::string Manager::schema_path(const std::string& standard, int version) const {
  return fmt::format("{}/standards/{}/{}.schema", dir_, standard, version);
}

void Manager::load_drift(const Copy& c) {
  if (auto j = read_json(drift_file(c)))
    if (auto r = result_from_json(*j); r && r->env == c.env && r->db == c.db) drift_[key(c.env, c.db)] = std::move(*r);
}

const DriftCheck* Manager::drift_check() const { return drift_check_ ? &*drift_check_ : nullptr; }

const DriftResult* Manager::drift_of(const std::string& env, const std::string& db) const {
  auto it = drift_.find(key(env, db));
  return it == drift_.end() ? nullptr : &it->second;
}

Result<const DriftCheck*> Manager::check_drift(const std::vector<DriftTarget>& targets) {
  if (drift_check_ && !drift_check_->done)
    return conflict(fmt::format("drift check {} is still running (berth db drift --show)", drift_check_->id));
  DriftCheck check;
  check.id = drift_check_ ? drift_check_->id + 1 : 1;
  check.started_at = clock_.wall_ms();
  struct Work {
    std::size_t row;
    Copy copy;
    std::optional<ServerSource> live;
    std::shared_ptr<std::mutex> lock;  // of the golden it is compared with
  };
  std::vector<Work> work;
  for (const auto& t : targets) {
    DriftResult r;
    r.env = t.env;
    r.db = t.db;
    const Copy* c = find_copy(t.env, t.db);
    if (c) {
      r.standard = c->standard;
      r.version = c->at();
    }
    if (!c) {
      r.state = DriftResult::State::kSkipped;
      r.error = "it has no copy yet (it is made at the environment's first up)";
    } else if (!t.skip.empty()) {
      r.state = DriftResult::State::kSkipped;
      r.error = t.skip;
    } else if (auto why = held(t.env, t.db)) {
      r.state = DriftResult::State::kSkipped;
      r.error = "its copy is held by a " + *why;
    } else if (making_copy(t.env, t.db) || chowning_.count(key(t.env, t.db))) {
      r.state = DriftResult::State::kSkipped;
      r.error = "its copy is being made";
    } else {
      r.live = t.live.has_value();
      work.push_back({check.rows.size(), *c, t.live, golden_lock(golden_path(c->standard, c->at()))});
      // Read through a private server: held until read, so its own server waits.
      if (!t.live) drift_reading_.insert(key(t.env, t.db));
    }
    check.rows.push_back(std::move(r));
  }
  drift_check_ = std::move(check);
  const int id = drift_check_->id;
  if (work.empty()) {
    drift_check_->done = true;
    drift_check_->finished_at = clock_.wall_ms();
    return &*drift_check_;
  }
  const std::string log = fmt::format("{}/logs/drift-{}.log", dir_, id);
  run_worker([this, alive = alive_, id, work = std::move(work), log] {
    std::error_code ec;
    fs::create_directories(fs::path(log).parent_path(), ec);
    for (const auto& w : work) {
      if (!*alive) break;  // (the daemon is stopping: the rows not read are never seen)
      executor_.post([this, alive, id, row = w.row] {
        if (*alive && drift_check_ && drift_check_->id == id) drift_check_->rows[row].state = DriftResult::State::kChecking;
      });
      const Millis t0 = steady_ms();
      std::vector<SchemaDifference> differences;
      Status st = catching([&]() -> Status {
        auto golden = golden_schema(w.copy.standard, w.copy.at(), *w.lock, log);
        if (!golden.ok()) return golden.error();
        Result<Schema> actual = not_found("");
        if (w.live) {
          actual = engine_->schema(*w.live, log);
        } else {
          BERTH_TRY(ensure_mounted(golden_path(w.copy.standard, w.copy.version), w.copy.dir, w.copy.method));
          BERTH_TRY(on_private_server(w.copy, [&]() -> Status {
            actual = engine_->schema_of(w.copy.datadir, log);
            return {};
          }));
        }
        if (!actual.ok()) return actual.error().wrap(fmt::format("reading the schema of {}/{}", w.copy.env, w.copy.db));
        differences = compare_schemas(*golden, *actual);
        return {};
      });
      const Millis took = steady_ms() - t0;
      executor_.post([this, alive, id, w, st, took, differences = std::move(differences)]() mutable {
        if (!*alive) return;
        if (drift_reading_.erase(key(w.copy.env, w.copy.db))) copy_free(w.copy.env, w.copy.db);
        if (!drift_check_ || drift_check_->id != id) return;
        DriftResult& r = drift_check_->rows[w.row];
        r.state = st.ok() ? DriftResult::State::kChecked : DriftResult::State::kFailed;
        r.error = st.ok() ? "" : st.error().message;
        r.differences = std::move(differences);
        r.checked_at = clock_.wall_ms();
        r.took_ms = took;
        // Kept with the copy it is of (unless that copy went meanwhile).
        const Copy* c = find_copy(r.env, r.db);
        if (c && c->created_at == w.copy.created_at && c->at() == r.version) {
          drift_[key(r.env, r.db)] = r;
          (void)write_json(drift_file(*c), result_to_json(r));
        }
        if (on_change_) on_change_();
      });
    }
    executor_.post([this, alive, id] {
      if (!*alive || !drift_check_ || drift_check_->id != id) return;
      drift_check_->done = true;
      drift_check_->finished_at = clock_.wall_ms();
      if (on_change_) on_change_();
    });
  });
  return &*drift_check_;
}

Result<Schema> Manager::golden_schema(const std::string& standard, int version, std::mutex& lock, const std::string& log) {
  const std::string cached = schema_path(standard, version);
  if (auto j = read_json(cached))
    if (auto s = schema_from_json(*j)) return std::move(*s);
  const std::string golden = golden_path(standard, version);
  // A throwaway clone: a private server writes to the directory it runs on, and a golden is
  // never written.
  const std::string work = fmt::format("{}/golden/{}@{}.schema.work", dir_, standard, version);
  Result<Schema> schema = not_found("");
  {
    std::lock_guard<std::mutex> held(lock);
    if (auto j = read_json(cached))  // (read by another check meanwhile)
      if (auto s = schema_from_json(*j)) return std::move(*s);
    std::error_code ec;
    if (!fs::exists(golden, ec))
      return not_found(fmt::format("the golden of {}@{} is not on this host: its schema cannot be compared", standard, version));
    (void)remove_copy(work);
    auto m = clone_tree(golden, work, clone_options_);
    if (!m.ok()) return m.error().wrap(fmt::format("cloning {}@{} to read its schema", standard, version));
    schema = engine_->schema_of(work + "/data", log);
    (void)remove_copy(work);
  }
  if (!schema.ok()) return schema.error().wrap(fmt::format("reading the schema of {}@{}", standard, version));
  BERTH_TRY(write_json(cached, schema_to_json(*schema)));
  return schema;
}

}  // namespace berth::db
