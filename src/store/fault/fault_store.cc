#include "store/fault/fault_store.h"

#include <fmt/format.h>

namespace berth::store {

std::string_view FaultStore::name(Op op) {
  static constexpr std::array<std::string_view, static_cast<std::size_t>(Op::kCount_)> kNames = {
      "load_catalog", "save_catalog", "up_environments", "set_up", "load_instances", "put_instance",
      "erase_instance", "set_instance_ready", "append_event", "events", "last_event_id", "load_leases",
      "put_lease", "erase_lease", "load_documents", "put_document", "erase_document", "append_audit",
      "audit", "load_tokens", "put_token", "load_env_uids", "put_env_uid", "erase_env_uid", "transaction",
      "set_instance_fingerprint"};
  return kNames[index(op)];
}

void FaultStore::fail(Op op, int n, std::string message, bool sticky) {
  Rule& r = rules_[index(op)];
  r.fail_at = n > 0 ? r.calls + n : 0;
  r.sticky = sticky;
  r.after = false;
  r.message = std::move(message);
}

void FaultStore::lose_ack(Op op, int n, std::string message) {
  Rule& r = rules_[index(op)];
  r.fail_at = n > 0 ? r.calls + n : 0;
  r.sticky = false;
  r.after = true;
  r.message = std::move(message);
}

void FaultStore::on_call(Op op, std::function<void()> hook) { rules_[index(op)].hook = std::move(hook); }

void FaultStore::heal() {
  for (Rule& r : rules_) {
    r.fail_at = 0;
    r.sticky = r.after = false;
    r.hook = nullptr;
  }
}

FaultStore::Fate FaultStore::enter(Op op) {
  Rule& r = rules_[index(op)];
  const int call = ++r.calls;
  if (r.hook) r.hook();
  if (r.fail_at == 0 || !(call == r.fail_at || (r.sticky && call > r.fail_at))) return Fate::kPass;
  ++r.injected;
  return r.after ? Fate::kLoseAck : Fate::kFail;
}

Error FaultStore::error(Op op) const {
  return unavailable(fmt::format("state store: {}: {}", name(op), rules_[index(op)].message));
}

template <typename R, typename F>
R FaultStore::run(Op op, F&& call) {
  const Fate fate = enter(op);
  if (fate == Fate::kFail) return error(op);
  R r = call();
  if (fate == Fate::kLoseAck) return error(op);
  return r;
}

Result<std::optional<StoredCatalog>> FaultStore::load_catalog() {
  return run<Result<std::optional<StoredCatalog>>>(Op::kLoadCatalog, [&] { return inner_.load_catalog(); });
}
Status FaultStore::save_catalog(const StoredCatalog& catalog) {
  return run<Status>(Op::kSaveCatalog, [&] { return inner_.save_catalog(catalog); });
}
Result<std::vector<std::string>> FaultStore::up_environments() {
  return run<Result<std::vector<std::string>>>(Op::kUpEnvironments, [&] { return inner_.up_environments(); });
}
Status FaultStore::set_up(const std::string& env, bool up) {
  return run<Status>(Op::kSetUp, [&] { return inner_.set_up(env, up); });
}
Result<std::vector<InstanceRecord>> FaultStore::load_instances() {
  return run<Result<std::vector<InstanceRecord>>>(Op::kLoadInstances, [&] { return inner_.load_instances(); });
}
Status FaultStore::put_instance(const InstanceRecord& record) {
  return run<Status>(Op::kPutInstance, [&] { return inner_.put_instance(record); });
}
Status FaultStore::erase_instance(const ipam::LeaseKey& key) {
  return run<Status>(Op::kEraseInstance, [&] { return inner_.erase_instance(key); });
}
Status FaultStore::set_instance_ready(const ipam::LeaseKey& key, Millis ready_at) {
  return run<Status>(Op::kSetInstanceReady, [&] { return inner_.set_instance_ready(key, ready_at); });
}

Status FaultStore::set_instance_fingerprint(const ipam::LeaseKey& key, const std::string& fingerprint) {
  return run<Status>(Op::kSetInstanceFingerprint, [&] { return inner_.set_instance_fingerprint(key, fingerprint); });
}
Result<Event> FaultStore::append_event(Event event) {
  return run<Result<Event>>(Op::kAppendEvent, [&] { return inner_.append_event(std::move(event)); });
}
Result<std::vector<Event>> FaultStore::events(const std::string& env, std::int64_t after_id, int limit) {
  return run<Result<std::vector<Event>>>(Op::kEvents, [&] { return inner_.events(env, after_id, limit); });
}
Result<std::int64_t> FaultStore::last_event_id() {
  return run<Result<std::int64_t>>(Op::kLastEventId, [&] { return inner_.last_event_id(); });
}
Result<std::vector<ipam::Lease>> FaultStore::load_leases() {
  return run<Result<std::vector<ipam::Lease>>>(Op::kLoadLeases, [&] { return inner_.load_leases(); });
}
Status FaultStore::put_lease(const ipam::Lease& lease) {
  return run<Status>(Op::kPutLease, [&] { return inner_.put_lease(lease); });
}
Status FaultStore::erase_lease(const ipam::LeaseKey& key) {
  return run<Status>(Op::kEraseLease, [&] { return inner_.erase_lease(key); });
}
Result<std::vector<model::EnvDocument>> FaultStore::load_documents() {
  return run<Result<std::vector<model::EnvDocument>>>(Op::kLoadDocuments, [&] { return inner_.load_documents(); });
}
Status FaultStore::put_document(const model::EnvDocument& doc) {
  return run<Status>(Op::kPutDocument, [&] { return inner_.put_document(doc); });
}
Status FaultStore::erase_document(const std::string& doc_name) {
  return run<Status>(Op::kEraseDocument, [&] { return inner_.erase_document(doc_name); });
}
Result<AuditEntry> FaultStore::append_audit(AuditEntry entry) {
  return run<Result<AuditEntry>>(Op::kAppendAudit, [&] { return inner_.append_audit(std::move(entry)); });
}
Result<std::vector<AuditEntry>> FaultStore::audit(const AuditQuery& query) {
  return run<Result<std::vector<AuditEntry>>>(Op::kAudit, [&] { return inner_.audit(query); });
}
Result<std::vector<TokenRecord>> FaultStore::load_tokens() {
  return run<Result<std::vector<TokenRecord>>>(Op::kLoadTokens, [&] { return inner_.load_tokens(); });
}
Status FaultStore::put_token(const TokenRecord& token) {
  return run<Status>(Op::kPutToken, [&] { return inner_.put_token(token); });
}
Result<std::map<std::string, std::uint32_t>> FaultStore::load_env_uids() {
  return run<Result<std::map<std::string, std::uint32_t>>>(Op::kLoadEnvUids, [&] { return inner_.load_env_uids(); });
}
Status FaultStore::put_env_uid(const std::string& env, std::uint32_t uid) {
  return run<Status>(Op::kPutEnvUid, [&] { return inner_.put_env_uid(env, uid); });
}
Status FaultStore::erase_env_uid(const std::string& env) {
  return run<Status>(Op::kEraseEnvUid, [&] { return inner_.erase_env_uid(env); });
}

Status FaultStore::transaction(const std::function<Status()>& body) {
  const Fate fate = enter(Op::kTransaction);
  auto counted = [&]() -> Status {
    ++depth_;
    Status st = body();
    --depth_;
    return st;
  };
  if (fate == Fate::kPass) return inner_.transaction(counted);
  if (fate == Fate::kLoseAck) {
    BERTH_TRY(inner_.transaction(counted));
    return error(Op::kTransaction);
  }
  // A failed commit: the body ran, and none of its writes remain.
  Status ran;
  (void)inner_.transaction([&]() -> Status {
    ran = counted();
    return error(Op::kTransaction);
  });
  if (!ran.ok()) return ran.error();
  return error(Op::kTransaction);
}

}  // namespace berth::store
