// auth/auth.h — who is calling the API, and what they may do.
//
// Every API request but GET /v1/health carries `Authorization: Bearer <token>`. A token belongs
// to one user and has one role:
//   viewer  reads everything;
//   member  also creates environments as their own documents and changes, operates and deletes
//           the ones they own or are an editor of — within what check_member_document allows;
//   admin   also applies the fleet document, operates every environment, imports standards,
//           issues and revokes tokens.
// Only a token's SHA-256 is stored (store::TokenRecord); the secret is shown once, when issued.
//
// Ownership: Tokens owns its copy of the store's token records and writes through to the store
// it was loaded from, which must outlive it. Threads: authenticate(), list() and
// any_valid_admin() on any thread (the API's transport thread authenticates every request);
// issue() and revoke() on the thread that owns the store (the control loop's). A shared mutex
// guards the records.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "base/clock.h"
#include "base/result.h"
#include "model/catalog.h"
#include "store/store.h"

namespace berth::auth {

enum class Role { kViewer = 0, kMember = 1, kAdmin = 2 };
std::string_view to_string(Role r);
std::optional<Role> parse_role(std::string_view s);

struct Principal {
  std::string user;
  Role role = Role::kViewer;
  std::string token_id;
};

// A new secret: "berth_" and 64 hex digits from the OS's random generator.
Result<std::string> random_secret();
// User names: lowercase letters, digits, '-', '_', '.', at most 64.
bool is_user_name(std::string_view s);

class Tokens {
 public:
  static Result<std::unique_ptr<Tokens>> load(store::StateStore& store, const Clock& clock);

  // The caller of a request with this Authorization header value. Errors are kUnauthenticated
  // and never echo the token.
  Result<Principal> authenticate(std::string_view authorization) const;

  struct Issued {
    std::string secret;  // shown once
    store::TokenRecord record;
  };
  Result<Issued> issue(const std::string& user, Role role, const std::string& by);
  Result<store::TokenRecord> revoke(const std::string& id);
  std::vector<store::TokenRecord> list() const;
  bool any_valid_admin() const;

 private:
  Tokens(store::StateStore& store, const Clock& clock) : store_(store), clock_(clock) {}
  store::StateStore& store_;
  const Clock& clock_;
  mutable std::shared_mutex mu_;
  std::map<std::string, store::TokenRecord> by_hash_;  // guarded by mu_
};

// At least `min`, or kForbidden naming what needs it and who the caller is.
Status require(const Principal& p, Role min, std::string_view what);
// May `p` change, operate or delete environment `env`? Admins may; members may for environments
// kept as their own documents that they own or edit. `doc_owner`/`editors` describe it;
// `own_document` false: an environment of the fleet document.
Status may_change(const Principal& p, const std::string& env, bool own_document, const std::string& owner,
                  const std::vector<std::string>& editors, std::string_view what);

}  // namespace berth::auth
