#include "base/identity.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include <fmt/format.h>

namespace berth {
namespace fs = std::filesystem;

namespace {

std::optional<std::uint32_t> number(std::string_view s) {
  std::uint32_t v = 0;
  if (s.empty()) return std::nullopt;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace

std::optional<IdRange> parse_id_range(std::string_view text, std::string* error) {
  auto fail = [&](std::string why) -> std::optional<IdRange> {
    if (error) *error = std::move(why);
    return std::nullopt;
  };
  auto dash = text.find('-');
  if (dash == std::string_view::npos) return fail(fmt::format("'{}' is not a range FIRST-LAST of user ids", text));
  auto first = number(text.substr(0, dash)), last = number(text.substr(dash + 1));
  if (!first || !last) return fail(fmt::format("'{}' is not a range FIRST-LAST of user ids (decimal numbers)", text));
  if (*first == 0) return fail("the range of instance ids must not include 0 (root)");
  if (*last <= *first) return fail(fmt::format("'{}': LAST must be above FIRST (FIRST is the group, each environment takes one more)", text));
  if (*last >= (1u << 31)) return fail(fmt::format("'{}': ids must be below 2147483648", text));
  return IdRange{*first, *last};
}

Result<Identity> lookup_user(const std::string& spec) {
  std::string user = spec, group;
  if (auto colon = spec.find(':'); colon != std::string::npos) {
    user = spec.substr(0, colon);
    group = spec.substr(colon + 1);
  }
  if (user.empty()) return invalid(fmt::format("user '{}': the user part is empty (valid: name, uid, name:group, uid:gid)", spec));
  Identity id;
  std::vector<char> buf(16 << 10);
  if (auto n = number(user)) {
    id = {*n, *n};
    passwd pw{}, *found = nullptr;
    if (getpwuid_r(*n, &pw, buf.data(), buf.size(), &found) == 0 && found) id.gid = found->pw_gid;
  } else {
    passwd pw{}, *found = nullptr;
    int rc = getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &found);
    if (rc != 0 || !found)
      return not_found(fmt::format("user '{}' is not an account on this host (valid: an account name, a uid, name:group, uid:gid)", user));
    id = {found->pw_uid, found->pw_gid};
  }
  if (!group.empty()) {
    if (auto n = number(group)) {
      id.gid = *n;
    } else {
      struct group gr {}, *found = nullptr;
      int rc = getgrnam_r(group.c_str(), &gr, buf.data(), buf.size(), &found);
      if (rc != 0 || !found) return not_found(fmt::format("group '{}' of user '{}' is not a group on this host", group, spec));
      id.gid = found->gr_gid;
    }
  }
  return id;
}

Status chown_tree(const std::string& path, Identity who) {
  struct stat top {};
  if (::lstat(path.c_str(), &top) != 0) return unavailable(fmt::format("cannot chown {}: {}", path, std::strerror(errno)));
  auto one = [&](const fs::path& p) -> Status {
    if (::lchown(p.c_str(), who.uid, who.gid) != 0)
      return unavailable(fmt::format("cannot give {} to uid {}: {}", p.string(), who.uid, std::strerror(errno)));
    return {};
  };
  BERTH_TRY(one(path));
  if (!S_ISDIR(top.st_mode)) return {};
  std::error_code ec;
  fs::recursive_directory_iterator it(path, fs::directory_options::none, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0) continue;  // gone meanwhile
    if (st.st_dev != top.st_dev) {
      it.disable_recursion_pending();
      continue;
    }
    BERTH_TRY(one(it->path()));
  }
  if (ec) return unavailable(fmt::format("cannot walk {}: {}", path, ec.message()));
  return {};
}

Status open_to_group(const std::string& path, std::uint32_t gid, unsigned mode) {
  if (::chown(path.c_str(), static_cast<uid_t>(-1), gid) != 0 || ::chmod(path.c_str(), static_cast<mode_t>(mode)) != 0)
    return unavailable(fmt::format("cannot open {} to group {}: {}", path, gid, std::strerror(errno)));
  return {};
}

std::optional<Identity> process_identity(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  if (!in) return std::nullopt;
  Identity id;
  bool uid = false, gid = false;
  std::string line;
  for (int n = 0; n < 64 && std::getline(in, line); ++n) {
    if (line.rfind("Uid:", 0) == 0) uid = std::sscanf(line.c_str() + 4, "%u", &id.uid) == 1;
    else if (line.rfind("Gid:", 0) == 0) gid = std::sscanf(line.c_str() + 4, "%u", &id.gid) == 1;
  }
  if (!uid || !gid) return std::nullopt;
  return id;
}

}  // namespace berth
