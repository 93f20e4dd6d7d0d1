#include "auth/auth.h"

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <openssl/rand.h>

#include "base/digest.h"

namespace berth::auth {

std::string_view to_string(Role r) {
  switch (r) {
    case Role::kViewer: return "viewer";
    case Role::kMember: return "member";
    case Role::kAdmin: return "admin";
  }
  return "viewer";
}

std::optional<Role> parse_role(std::string_view s) {
  if (s == "viewer") return Role::kViewer;
  if (s == "member") return Role::kMember;
  if (s == "admin") return Role::kAdmin;
  return std::nullopt;
}

namespace {
std::string hex(const unsigned char* p, std::size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (std::size_t i = 0; i < n; ++i) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 15];
  }
  return out;
}
}  // namespace

Result<std::string> random_secret() {
  unsigned char buf[32];
  if (RAND_bytes(buf, sizeof buf) != 1) return internal("the system's random generator failed; no token was made");
  return "berth_" + hex(buf, sizeof buf);
}

bool is_user_name(std::string_view s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
  });
}

Result<std::unique_ptr<Tokens>> Tokens::load(store::StateStore& store, const Clock& clock) {
  auto records = store.load_tokens();
  if (!records.ok()) return records.error();
  std::unique_ptr<Tokens> t(new Tokens(store, clock));
  for (auto& r : *records) t->by_hash_[r.hash] = std::move(r);
  return t;
}

Result<Principal> Tokens::authenticate(std::string_view authorization) const {
  const std::string_view scheme = "Bearer ";
  const char* how = "send `Authorization: Bearer <token>` (the CLI reads --token, $BERTH_TOKEN, $BERTH_TOKEN_FILE or "
                    "$BERTH_DATA_DIR/admin.token; an admin issues tokens with `berth token create`)";
  if (authorization.empty()) return unauthenticated(fmt::format("this request needs a token: {}", how));
  if (authorization.size() <= scheme.size() || authorization.substr(0, scheme.size()) != scheme ||
      authorization.size() > 512)
    return unauthenticated(fmt::format("the Authorization header is not a bearer token: {}", how));
  const std::string hash = sha256_hex(authorization.substr(scheme.size()));
  std::shared_lock held(mu_);
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return unauthenticated("the token is not one this daemon issued");
  const store::TokenRecord& r = it->second;
  if (r.revoked_at)
    return unauthenticated(fmt::format("token {} of {} was revoked; ask an admin for a new one", r.id, r.user));
  auto role = parse_role(r.role);
  if (!role) return internal(fmt::format("token {} has an unknown role '{}'", r.id, r.role));
  return Principal{r.user, *role, r.id};
}

Result<Tokens::Issued> Tokens::issue(const std::string& user, Role role, const std::string& by) {
  if (!is_user_name(user))
    return invalid(fmt::format("user '{}' must be lowercase letters, digits, '-', '_' or '.', at most 64", user));
  auto secret = random_secret();
  if (!secret.ok()) return secret.error();
  store::TokenRecord r;
  r.hash = sha256_hex(*secret);
  r.id = r.hash.substr(0, 12);
  r.user = user;
  r.role = std::string(to_string(role));
  r.created_at = clock_.wall_ms();
  r.created_by = by;
  std::unique_lock held(mu_);
  BERTH_TRY(store_.put_token(r));
  by_hash_[r.hash] = r;
  return Issued{std::move(*secret), std::move(r)};
}

Result<store::TokenRecord> Tokens::revoke(const std::string& id) {
  std::unique_lock held(mu_);
  for (auto& [hash, r] : by_hash_) {
    if (r.id != id) continue;
    if (r.revoked_at) return conflict(fmt::format("token {} of {} is already revoked", id, r.user));
    store::TokenRecord next = r;
    next.revoked_at = clock_.wall_ms();
    BERTH_TRY(store_.put_token(next));
    r = next;
    return r;
  }
  return not_found(fmt::format("no token '{}' (berth token ls lists them)", id));
}

std::vector<store::TokenRecord> Tokens::list() const {
  std::vector<store::TokenRecord> out;
  std::shared_lock held(mu_);
  for (const auto& [hash, r] : by_hash_) out.push_back(r);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.created_at < b.created_at; });
  return out;
}

bool Tokens::any_valid_admin() const {
  std::shared_lock held(mu_);
  return std::any_of(by_hash_.begin(), by_hash_.end(),
                     [](const auto& kv) { return kv.second.role == "admin" && !kv.second.revoked_at; });
}

Status require(const Principal& p, Role min, std::string_view what) {
  if (p.role >= min) return {};
  return forbidden(fmt::format("{} needs the {} role; {} is a {}", what, to_string(min), p.user, to_string(p.role)));
}

Status may_change(const Principal& p, const std::string& env, bool own_document, const std::string& owner,
                  const std::vector<std::string>& editors, std::string_view what) {
  if (p.role == Role::kAdmin) return {};
  BERTH_TRY(require(p, Role::kMember, what));
  if (!own_document)
    return forbidden(fmt::format("{}: environment '{}' belongs to the fleet document, which admins change; "
                                 "create your own with `berth env create NAME --base {}`", what, env, env));
  if (p.user == owner || std::find(editors.begin(), editors.end(), p.user) != editors.end()) return {};
  return forbidden(fmt::format("{}: environment '{}' belongs to {}{}; they can add you with `berth env set {} editors={}`",
                               what, env, owner,
                               editors.empty() ? "" : fmt::format(" (editors: {})", fmt::join(editors, ", ")), env,
                               p.user));
}

}  // namespace berth::auth
