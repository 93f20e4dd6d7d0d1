// The fleet document and the environment documents: applying one with its plan, creating,
// changing and deleting the others one at a time with their versions, environment lifetimes,
// and the audit log of every write. Part of ControlLoop (control/loop.h); loop thread only.
#include <algorithm>
#include <limits>

#include <fmt/format.h>

#include "base/text.h"
#include "control/loop.h"

namespace berth::control {

namespace {

bool is_env_name(std::string_view s) {
  if (s.empty() || s.size() > 63 || s.front() == '-' || s.back() == '-') return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; });
}

std::vector<std::string> changed_settings(const model::AppSpec& a, const model::AppSpec& b) {
  std::vector<std::string> out;
  for (const auto& [k, v] : a.values)
    if (auto it = b.values.find(k); it == b.values.end() || it->second != v) out.push_back(k);
  for (const auto& [k, v] : b.values)
    if (!a.values.count(k)) out.push_back(k);
  return out;
}

std::string stale(const std::string& what, std::int64_t based_on, std::int64_t now, const std::string& by, Millis at) {
  return fmt::format("{} was changed since version {} you based this on: it is version {} now, changed by {} at {}; "
                     "read it again (berth env get) and redo the change — nothing was overwritten",
                     what, based_on, now, by.empty() ? "someone" : by, at ? rfc3339_ms(at) : "an unknown time");
}

}  // namespace

void ControlLoop::install(model::Catalog catalog, std::map<std::string, std::string> invalid) {
  catalog_ = std::move(catalog);
  planner_ = Planner(*catalog_);  // (it points into catalog_)
  invalid_documents_ = std::move(invalid);
  ipam_.set_network(with_reserved(catalog_->network(), d_.reserved_pool_tail));
  prepare_network();
  publisher_.catalog_changed();
  schedule_reconcile();
}

Result<Plan> ControlLoop::apply_fleet(const std::string& text, const std::string& filename, const std::string& base_dir_in,
                                      const std::string& user, std::int64_t based_on, bool dry_run, bool force,
                                      bool move_base_dir) {
  BERTH_ASSERT_LOOP(*d_.executor);
  FleetApply req{text, filename, base_dir_in, user, based_on, dry_run, force, move_base_dir};
  auto prepared = prepare_fleet(req);
  if (!prepared.ok()) return prepared.error();
  return finish_fleet(req, std::move(*prepared), parse_fleet(req.text, req.filename, prepared->base_dir, documents_));
}

void ControlLoop::apply_fleet_async(FleetApply req, std::function<void(Result<Plan>)> done) {
  BERTH_ASSERT_LOOP(*d_.executor);
  auto prepared = prepare_fleet(req);
  if (!prepared.ok()) return done(prepared.error());
  if (!d_.worker) return done(finish_fleet(req, std::move(*prepared), parse_fleet(req.text, req.filename, prepared->base_dir, documents_)));
  // Parsed and validated on the worker (a catalog of thousands of environments takes a while);
  // the loop goes on meanwhile and installs it once it is back, unless what it was made from
  // changed (then it starts over).
  const std::uint64_t generation = documents_generation_;
  // (The job reads only its own copies; it reaches the loop through the executor, and only while
  // the loop is alive.)
  auto back = guarded([this, generation](FleetApply again, PreparedFleet made, Result<model::ResolvedCatalog> parsed,
                                        std::function<void(Result<Plan>)> answer) {
    if (generation != documents_generation_ || made.version != fleet_version_)
      return apply_fleet_async(std::move(again), std::move(answer));  // (a stale based_on is refused then)
    answer(finish_fleet(again, std::move(made), std::move(parsed)));
  });
  d_.worker->post([executor = d_.executor, back = std::move(back), req = std::move(req), prepared = std::move(*prepared),
                   docs = documents_, done = std::move(done)]() mutable {
    auto parsed = parse_fleet(req.text, req.filename, prepared.base_dir, docs);
    executor->post([back = std::move(back), req = std::move(req), prepared = std::move(prepared), parsed = std::move(parsed),
                    done = std::move(done)]() mutable {
      back(std::move(req), std::move(prepared), std::move(parsed), std::move(done));
    });
  });
}

Result<ControlLoop::PreparedFleet> ControlLoop::prepare_fleet(const FleetApply& req) const {
  if (req.based_on >= 0 && req.based_on != fleet_version_)
    return conflict(fmt::format("the fleet document was applied since version {} you based this on: it is version {} now, "
                                "applied by {} at {}; nothing was changed",
                                req.based_on, fleet_version_,
                                fleet_ && !fleet_->applied_by.empty() ? fleet_->applied_by : "someone",
                                fleet_ ? rfc3339_ms(fleet_->applied_at) : "-"));
  PreparedFleet p;
  p.version = fleet_version_;
  // Relative repositories resolve where the fleet document was first applied, not wherever the
  // applier happens to stand (another checkout would build baseline from its own commits).
  p.base_dir = req.base_dir;
  if (fleet_ && !req.move_base_dir && !fleet_->base_dir.empty() && p.base_dir != fleet_->base_dir) {
    if (!p.base_dir.empty())
      p.notes.push_back(fmt::format("relative source repositories resolve against {} (where the fleet document was "
                                    "first applied), not {}; berth apply --move-base-dir moves them",
                                    fleet_->base_dir, p.base_dir));
    p.base_dir = fleet_->base_dir;
  }
  return p;
}

Result<model::ResolvedCatalog> ControlLoop::parse_fleet(const std::string& text, const std::string& filename,
                                                        const std::string& base_dir,
                                                        const std::vector<model::EnvDocument>& docs) {
  try {
    auto fleet_only = model::Catalog::parse(text, filename, base_dir);
    if (!fleet_only.ok()) return fleet_only.error();
    return model::resolve_catalog(text, filename, base_dir, docs);
  } catch (const std::exception& e) {  // (a library's, on the worker: an error, not the daemon's end)
    return internal(fmt::format("validating {}: {}", filename, e.what()));
  }
}

Result<Plan> ControlLoop::finish_fleet(const FleetApply& req, PreparedFleet prepared, Result<model::ResolvedCatalog> resolved) {
  if (!resolved.ok()) return resolved.error();
  const std::string& text = req.text;
  const std::string& filename = req.filename;
  const std::string& base_dir = prepared.base_dir;
  const std::string& user = req.user;
  const bool dry_run = req.dry_run, force = req.force;
  Plan plan;
  plan.notes = std::move(prepared.notes);
  model::Catalog& next = resolved->catalog;
  for (const auto& [name, why] : resolved->invalid)
    if (!invalid_documents_.count(name)) plan.invalidated[name] = why;
  // Removing an environment that is up would strand its instances without a spec: refuse.
  for (const auto& e : obs_.up)
    if (!next.find(e)) {
      if (auto it = resolved->invalid.find(e); it != resolved->invalid.end())
        return conflict(fmt::format("environment '{}' is up, and with the new fleet document its own document is invalid: "
                                    "{}; fix the document or take it down first; nothing was changed", e, it->second));
      return conflict(fmt::format("environment '{}' is up but the new catalog does not define it; run `berth down {}` first",
                                  e, e));
    }
  // The plan: environments added and removed, apps whose settings change.
  for (const auto& e : next.environments())
    if (!catalog_ || !catalog_->find(e.name)) plan.added.push_back(e.name);
  if (catalog_)
    for (const auto& e : catalog_->environments()) {
      const model::Environment* ne = next.find(e.name);
      if (!ne) {
        plan.removed.push_back(e.name);
        continue;
      }
      for (const auto& a : e.apps) {
        const model::AppSpec* na = ne->find(a.app);
        if (!na) continue;
        auto settings = changed_settings(a, *na);
        if (settings.empty() && e.runs(a.app) == ne->runs(a.app)) continue;
        Plan::Change c{e.name, a.app, settings, 0};
        if (obs_.up.count(e.name) && e.runs(a.app) && a.fingerprint() != na->fingerprint())
          if (auto env = obs_.envs.find(e.name); env != obs_.envs.end())
            if (auto app = env->second.apps.find(a.app); app != env->second.apps.end())
              for (const auto& [o, sup] : app->second.instances)
                if (sup.state().exists()) ++c.replaced;
        plan.replaced += c.replaced;
        plan.changed.push_back(std::move(c));
      }
    }
  plan.version = fleet_version_;
  if (!plan.invalidated.empty() && !force) {
    std::vector<std::string> lines;
    for (const auto& [name, why] : plan.invalidated) lines.push_back(fmt::format("environment '{}': {}", name, why));
    std::string all;
    for (const auto& l : lines) all += "\n  " + l;
    Error err = conflict(fmt::format("applying {} would make {} environment document(s) invalid; nothing was changed "
                                     "(--force applies it and leaves them out until they are fixed):{}",
                                     filename, lines.size(), all));
    err.details = lines;
    return err;
  }
  if (dry_run) return plan;

  const Millis now = d_.clock->wall_ms();
  store::StoredCatalog stored{text, filename, now, base_dir, fleet_version_ + 1, user};
  store::AuditEntry entry{0, now, user, "fleet.apply", filename, "", fleet_version_, stored.version,
                          fmt::format("{} environment(s) added, {} removed, {} app setting change(s), {} instance(s) "
                                      "replaced{}", plan.added.size(), plan.removed.size(), plan.changed.size(),
                                      plan.replaced, plan.invalidated.empty() ? "" : "; forced past invalid documents")};
  const Status written = d_.store->transaction([&]() -> Status {
    BERTH_TRY(d_.store->save_catalog(stored));
    BERTH_TRY(d_.store->append_audit(entry));
    return {};
  });
  if (!written.ok()) return written.error();
  fleet_ = stored;
  fleet_version_ = stored.version;
  install(std::move(next), std::move(resolved->invalid));
  for (const auto& e : obs_.up) emit(e, "applied", "", -1, "", fmt::format("catalog {} applied (version {}) by {}", filename,
                                                                         fleet_version_, user));
  for (const auto& [name, why] : plan.invalidated)
    emit(name, "invalid", "", -1, "", fmt::format("the fleet document version {} makes this environment invalid: {}",
                                                   fleet_version_, why));
  check_lifetimes();
  plan.version = fleet_version_;
  plan.applied = true;
  return plan;
}

Result<model::EnvDocument> ControlLoop::put_document(const DocumentWrite& w) {
  BERTH_ASSERT_LOOP(*d_.executor);
  if (!fleet_ || !catalog_)
    return not_found("no fleet document applied yet: an admin runs `berth apply -f berth.yaml` first");
  if (!is_env_name(w.name))
    return invalid(fmt::format("environment name '{}' must be a DNS label: lowercase letters, digits and '-', at most 63",
                               w.name));
  if (w.text.size() > (1u << 20)) return invalid("an environment document is at most 1 MiB");
  auto it = std::find_if(documents_.begin(), documents_.end(), [&](const auto& d) { return d.name == w.name; });
  if (w.based_on == 0) {
    if (it != documents_.end())
      return conflict(fmt::format("environment '{}' already exists (version {}, owned by {}); change it with berth env "
                                  "set, or pick another name", w.name, it->version, it->owner));
    if (catalog_->find(w.name))
      return conflict(fmt::format("environment '{}' is defined in the fleet document {}; pick another name", w.name,
                                  fleet_->filename));
  } else {
    if (it == documents_.end())
      return not_found(catalog_->find(w.name)
                           ? fmt::format("environment '{}' is defined in the fleet document {}; admins change it there",
                                         w.name, fleet_->filename)
                           : fmt::format("no environment document '{}'", w.name));
    if (it->version != w.based_on)
      return conflict(stale(fmt::format("environment '{}'", w.name), w.based_on, it->version, it->updated_by, it->updated_at));
  }
  model::EnvDocument doc;
  if (it != documents_.end()) doc = *it;
  doc.name = w.name;
  if (doc.owner.empty()) doc.owner = w.user;
  doc.text = w.text;
  doc.version = (it != documents_.end() ? it->version : 0) + 1;
  doc.updated_at = d_.clock->wall_ms();
  doc.updated_by = w.user;

  std::vector<model::EnvDocument> docs = documents_;
  if (auto jt = std::find_if(docs.begin(), docs.end(), [&](const auto& d) { return d.name == w.name; }); jt != docs.end())
    *jt = doc;
  else
    docs.push_back(doc);
  // Validated with every other valid document: a change that breaks another (its base, say) is
  // refused like one that is wrong itself.
  std::vector<model::EnvDocument> valid;
  for (const auto& d : docs)
    if (d.name == doc.name || !invalid_documents_.count(d.name)) valid.push_back(d);
  auto parsed = model::Catalog::parse(fleet_->text, fleet_->filename, fleet_->base_dir, valid);
  if (!parsed.ok()) return parsed.error();

  const bool created = it == documents_.end();
  store::AuditEntry entry{0, doc.updated_at, w.user, created ? "env.create" : "env.update", doc.name, doc.name,
                          created ? 0 : it->version, doc.version, ""};
  const Status written = d_.store->transaction([&]() -> Status {
    BERTH_TRY(d_.store->put_document(doc));
    BERTH_TRY(d_.store->append_audit(entry));
    return {};
  });
  if (!written.ok()) return written.error();
  documents_ = std::move(docs);
  ++documents_generation_;
  auto invalid_now = invalid_documents_;
  invalid_now.erase(doc.name);
  install(std::move(parsed.value()), std::move(invalid_now));
  expiry_warned_.erase(doc.name);
  emit(doc.name, "document", "", -1, "", fmt::format("{} by {} (version {})", created ? "created" : "changed", w.user,
                                                      doc.version));
  check_lifetimes();
  return doc;
}

Result<std::vector<std::string>> ControlLoop::delete_document(const std::string& name, std::int64_t based_on,
                                                              const std::string& user, bool keep_data) {
  BERTH_ASSERT_LOOP(*d_.executor);
  auto it = std::find_if(documents_.begin(), documents_.end(), [&](const auto& d) { return d.name == name; });
  if (it == documents_.end())
    return not_found(catalog_ && catalog_->find(name)
                         ? fmt::format("environment '{}' is defined in the fleet document {}; admins remove it there", name,
                                       fleet_ ? fleet_->filename : "berth.yaml")
                         : fmt::format("no environment document '{}'", name));
  if (based_on > 0 && it->version != based_on)
    return conflict(stale(fmt::format("environment '{}'", name), based_on, it->version, it->updated_by, it->updated_at));
  // Environments based on it would lose their base.
  std::vector<std::string> based;
  if (catalog_)
    for (const auto& e : catalog_->environments())
      if (e.base == name) based.push_back(e.name);
  if (!based.empty()) {
    std::string list;
    for (const auto& b : based) list += (list.empty() ? "" : ", ") + b;
    return conflict(fmt::format("environment(s) {} are based on '{}'; delete or rebase them first", list, name));
  }
  std::vector<std::string> notes;
  if (obs_.up.count(name)) {
    BERTH_TRY(down(name));
    notes.push_back("taken down");
  }
  // Its database copies: removed once its instances are gone, unless kept.
  std::vector<std::string> dbs;
  if (const model::Environment* e = catalog_ ? catalog_->find(name) : nullptr)
    for (const auto& a : e->apps)
      if (a.database && d_.databases && d_.databases->find_copy(name, a.app)) {
        const db::Copy* c = d_.databases->find_copy(name, a.app);
        if (keep_data) {
          notes.push_back(fmt::format("kept the copy of database {} ({}@{}) at {}; an environment of the same name gets it "
                                      "again", a.app, c->standard, c->at(), c->dir));
        } else {
          notes.push_back(fmt::format("removed the copy of database {} ({}@{}); --keep-data keeps it", a.app, c->standard,
                                      c->at()));
          dbs.push_back(a.app);
        }
      }
  store::AuditEntry entry{0, d_.clock->wall_ms(), user, "env.delete", name, name, it->version, 0,
                          notes.empty() ? "" : notes.front()};
  const Status written = d_.store->transaction([&]() -> Status {
    BERTH_TRY(d_.store->erase_document(name));
    BERTH_TRY(d_.store->append_audit(entry));
    return {};
  });
  if (!written.ok()) return written.error();
  documents_.erase(it);
  ++documents_generation_;
  if (!dbs.empty()) drop_copies_[name] = dbs;
  if (!obs_.envs.count(name)) drop_copies(name);  // nothing of it runs
  std::vector<model::EnvDocument> valid;
  for (const auto& d : documents_)
    if (!invalid_documents_.count(d.name)) valid.push_back(d);
  auto invalid_now = invalid_documents_;
  invalid_now.erase(name);
  if (fleet_) {
    auto parsed = model::Catalog::parse(fleet_->text, fleet_->filename, fleet_->base_dir, valid);
    if (parsed.ok()) install(std::move(parsed.value()), std::move(invalid_now));
    else emit(name, "error", "", -1, "", "after deleting the document the catalog does not parse: " + parsed.error().message);
  }
  expiry_warned_.erase(name);
  emit(name, "deleted", "", -1, "", fmt::format("environment document deleted by {}{}", user,
                                                 notes.empty() ? "" : "; " + notes.back()));
  return notes;
}

void ControlLoop::drop_copies(const std::string& env) {
  auto it = drop_copies_.find(env);
  if (it == drop_copies_.end() || !d_.databases) return;
  for (const auto& db : it->second)
    if (auto st = d_.databases->reset(env, db); !st.ok())
      emit(env, "error", db, -1, "", "removing the database copy: " + st.error().message);
  drop_copies_.erase(it);
}

std::vector<DocumentStatus> ControlLoop::documents() const {
  std::vector<DocumentStatus> out;
  for (const auto& d : documents_) {
    auto it = invalid_documents_.find(d.name);
    out.push_back({d, it == invalid_documents_.end() ? "" : it->second});
  }
  return out;
}

Status ControlLoop::audit(const std::string& user, const std::string& action, const std::string& target,
                          const std::string& env, const std::string& detail) {
  auto r = d_.store->append_audit({0, d_.clock->wall_ms(), user, action, target, env, 0, 0, detail});
  if (!r.ok()) return r.error();
  return {};
}

void ControlLoop::clock_moved() {
  BERTH_ASSERT_LOOP(*d_.executor);
  check_lifetimes();
  poke();
}

void ControlLoop::check_lifetimes() {
  if (lifetime_timer_) d_.executor->cancel(lifetime_timer_);
  lifetime_timer_ = 0;
  if (!catalog_) return;
  const Millis now = d_.clock->wall_ms();
  Millis next = std::numeric_limits<Millis>::max();
  std::vector<std::string> expired, to_delete;
  for (const auto& e : catalog_->environments()) {
    if (!e.own_document || e.keep || !e.expires_at) continue;
    const Millis gone_at = e.expires_at + d_.expiry_grace_ms;
    if (now >= gone_at) {
      to_delete.push_back(e.name);
    } else if (now >= e.expires_at) {
      if (obs_.up.count(e.name)) expired.push_back(e.name);
      next = std::min(next, gone_at);
    } else if (now >= e.expires_at - d_.expiry_warning_ms) {
      if (expiry_warned_.insert(e.name).second)
        emit(e.name, "expiring", "", -1, "", fmt::format("expires at {} (in {}): then taken down, and deleted {} later; "
                                                          "berth env extend {} 2d keeps it longer",
                                                          rfc3339_ms(e.expires_at), format_duration(e.expires_at - now),
                                                          format_duration(d_.expiry_grace_ms), e.name));
      next = std::min(next, e.expires_at);
    } else {
      next = std::min(next, e.expires_at - d_.expiry_warning_ms);
    }
  }
  for (const auto& name : expired) {
    emit(name, "expired", "", -1, "", fmt::format("expired: taken down; its document is deleted after {} unless extended "
                                                   "(berth env extend {} 2d)", format_duration(d_.expiry_grace_ms), name));
    if (auto st = down(name, true); !st.ok()) emit(name, "error", "", -1, "", "taking it down: " + st.error().message);
    (void)audit("berth", "env.expire", name, name, "taken down at expiry");
  }
  bool deleted = false;
  for (const auto& name : to_delete) {
    auto r = delete_document(name, 0, "berth", false);
    if (r.ok()) deleted = true;
    else if (expiry_warned_.insert(name + "/delete").second)
      emit(name, "error", "", -1, "", "deleting it after its expiry: " + r.error().message);
  }
  if (deleted) return check_lifetimes();  // the catalog changed
  if (next == std::numeric_limits<Millis>::max()) return;
  // At most a minute: the wall clock may jump.
  const Millis delay = std::clamp<Millis>(next - now, 0, 60'000);
  lifetime_timer_ = d_.executor->after(delay, guarded([this] {
    lifetime_timer_ = 0;
    check_lifetimes();
  }));
}

}  // namespace berth::control
