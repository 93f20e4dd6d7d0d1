// store/fault/fault_store.h — a StateStore wrapper that injects faults, for tests.
//
// Wraps another store (not owned; it must outlive the wrapper). Per operation it can:
//  - fail the Nth call from now (and, if sticky, every later one) before the call reaches the
//    inner store: the write did not happen and the caller is told so;
//  - lose the acknowledgement of the Nth call: the inner store does the write, then the caller
//    is told it failed (a commit whose answer was lost). Callers must not assume a failed write
//    left nothing behind;
//  - run a hook before every call: a slow store whose slowness the test controls (the hook
//    advances a ManualClock, or counts), so nothing sleeps;
// and count every call. A failure of kTransaction is a failed commit: the body runs, then the
// inner transaction is rolled back, so none of its writes remain ("partial" writes are the writes
// before an injected failure inside a body: the body decides what to do with the error, the
// transaction keeps all or none). Reads fail like writes; a lost acknowledgement of a read is a
// failed read.
//
// Like every StateStore it is used on the control loop's thread only; it is not thread-safe.
#pragma once

#include <array>
#include <functional>
#include <string>
#include <string_view>

#include "store/store.h"

namespace berth::store {

class FaultStore final : public StateStore {
 public:
  enum class Op {
    kLoadCatalog, kSaveCatalog, kUpEnvironments, kSetUp, kLoadInstances, kPutInstance,
    kEraseInstance, kSetInstanceReady, kAppendEvent, kEvents, kLastEventId, kLoadLeases,
    kPutLease, kEraseLease, kLoadDocuments, kPutDocument, kEraseDocument, kAppendAudit, kAudit,
    kLoadTokens, kPutToken, kLoadEnvUids, kPutEnvUid, kEraseEnvUid, kTransaction, kSetInstanceFingerprint,
    kCount_  // (the number of operations)
  };
  static std::string_view name(Op op);

  explicit FaultStore(StateStore& inner) : inner_(inner) {}

  // The `n`th call of `op` from now (1 = the next) fails with `message` without reaching the
  // inner store; with `sticky`, every later call too. n = 0 clears it.
  void fail(Op op, int n, std::string message = "injected fault", bool sticky = false);
  // The `n`th call of `op` from now reaches the inner store and then reports `message`.
  void lose_ack(Op op, int n, std::string message = "injected fault after the write");
  // Runs before every call of `op` (an empty function clears it).
  void on_call(Op op, std::function<void()> hook);
  // Clears every rule of every operation (the counts stay).
  void heal();
  int calls(Op op) const { return rules_[index(op)].calls; }
  // Calls that failed or lost their acknowledgement because of a rule.
  int injected(Op op) const { return rules_[index(op)].injected; }
  // Whether a transaction() body is running now (hooks use it to check what a write is part of).
  bool in_transaction() const { return depth_ > 0; }

  Result<std::optional<StoredCatalog>> load_catalog() override;
  Status save_catalog(const StoredCatalog& catalog) override;
  Result<std::vector<std::string>> up_environments() override;
  Status set_up(const std::string& env, bool up) override;
  Result<std::vector<InstanceRecord>> load_instances() override;
  Status put_instance(const InstanceRecord& record) override;
  Status erase_instance(const ipam::LeaseKey& key) override;
  Status set_instance_ready(const ipam::LeaseKey& key, Millis ready_at) override;
  Status set_instance_fingerprint(const ipam::LeaseKey& key, const std::string& fingerprint) override;
  Result<Event> append_event(Event event) override;
  Result<std::vector<Event>> events(const std::string& env, std::int64_t after_id, int limit) override;
  Result<std::int64_t> last_event_id() override;
  Result<std::vector<ipam::Lease>> load_leases() override;
  Status put_lease(const ipam::Lease& lease) override;
  Status erase_lease(const ipam::LeaseKey& key) override;
  Result<std::vector<model::EnvDocument>> load_documents() override;
  Status put_document(const model::EnvDocument& doc) override;
  Status erase_document(const std::string& name) override;
  Result<AuditEntry> append_audit(AuditEntry entry) override;
  Result<std::vector<AuditEntry>> audit(const AuditQuery& query) override;
  Result<std::vector<TokenRecord>> load_tokens() override;
  Status put_token(const TokenRecord& token) override;
  Result<std::map<std::string, std::uint32_t>> load_env_uids() override;
  Status put_env_uid(const std::string& env, std::uint32_t uid) override;
  Status erase_env_uid(const std::string& env) override;
  Status transaction(const std::function<Status()>& body) override;

 private:
  enum class Fate { kPass, kFail, kLoseAck };
  struct Rule {
    int fail_at = 0;  // call number that fails; 0: none
    bool sticky = false;
    bool after = false;  // lose the acknowledgement instead of failing before
    std::string message;
    std::function<void()> hook;
    int calls = 0;
    int injected = 0;
  };
  static std::size_t index(Op op) { return static_cast<std::size_t>(op); }
  // Counts the call, runs its hook and decides its fate.
  Fate enter(Op op);
  Error error(Op op) const;
  // One call: `call` reaches the inner store unless the call fails before it.
  template <typename R, typename F>
  R run(Op op, F&& call);

  StateStore& inner_;
  std::array<Rule, static_cast<std::size_t>(Op::kCount_)> rules_{};
  int depth_ = 0;  // transaction bodies running
};

}  // namespace berth::store
