#include "db/schema.h"

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

namespace berth::db {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool starts_with_word(std::string_view s, std::string_view word) {
  if (s.size() < word.size()) return false;
  for (std::size_t i = 0; i < word.size(); ++i)
    if (std::toupper(static_cast<unsigned char>(s[i])) != word[i]) return false;
  return s.size() == word.size() || !std::isalnum(static_cast<unsigned char>(s[word.size()]));
}

// Version comments opened: "/*!50001 CREATE VIEW x */" → "CREATE VIEW x ". Other comments stay.
std::string unwrap_version_comments(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  int open = 0;
  for (std::size_t i = 0; i < in.size();) {
    if (in.compare(i, 3, "/*!") == 0) {
      i += 3;
      while (i < in.size() && std::isdigit(static_cast<unsigned char>(in[i]))) ++i;
      ++open;
      continue;
    }
    if (open > 0 && in.compare(i, 2, "*/") == 0) {
      i += 2;
      --open;
      out += ' ';
      continue;
    }
    out += in[i++];
  }
  return out;
}

// Every `DEFINER=user@host` (quoted or not) removed, with `SQL SECURITY DEFINER` and
// `ALGORITHM=...`: who made a view or routine, and how MariaDB keeps a view, are not its schema.
std::string without_noise(std::string s) {
  for (std::string_view word : {"DEFINER=", "ALGORITHM="}) {
    for (std::size_t at = s.find(word); at != std::string::npos; at = s.find(word, at)) {
      std::size_t end = at + word.size();
      while (end < s.size() && !std::isspace(static_cast<unsigned char>(s[end]))) ++end;
      s.erase(at, end - at);
    }
  }
  for (std::string_view phrase : {"SQL SECURITY DEFINER", "SQL SECURITY INVOKER"})
    for (std::size_t at = s.find(phrase); at != std::string::npos; at = s.find(phrase, at)) s.erase(at, phrase.size());
  return s;
}

// AUTO_INCREMENT=N in a table's options.
std::string without_counter(std::string s) {
  const std::string_view word = " AUTO_INCREMENT=";
  if (auto at = s.find(word); at != std::string::npos) {
    std::size_t end = at + word.size();
    while (end < s.size() && std::isdigit(static_cast<unsigned char>(s[end]))) ++end;
    s.erase(at, end - at);
  }
  return s;
}

// Runs of spaces as one, and no spaces at either end.
std::string squeeze(std::string_view s) {
  std::string out;
  bool space = false;
  for (char c : trim(s)) {
    const bool is = std::isspace(static_cast<unsigned char>(c));
    if (is && space) continue;
    out += is ? ' ' : c;
    space = is;
  }
  return out;
}

// The name after `keyword` (found in `upper`, the statement upper-cased; read from `stmt` at the
// same place), `IF NOT EXISTS` skipped: `x` or `s`.`x`, unquoted. "" when the keyword is not there.
std::string name_after(std::string_view stmt, std::string_view upper, std::string_view keyword) {
  std::size_t at = 0;
  for (;;) {
    at = upper.find(keyword, at);
    if (at == std::string_view::npos) return "";
    const bool before = at == 0 || std::isspace(static_cast<unsigned char>(upper[at - 1]));
    const bool after = at + keyword.size() < upper.size() && std::isspace(static_cast<unsigned char>(upper[at + keyword.size()]));
    if (before && after) break;
    at += keyword.size();
  }
  std::string_view rest = trim(stmt.substr(at + keyword.size()));
  if (starts_with_word(rest, "IF")) {
    for (int words = 0; words < 3 && !rest.empty(); ++words) {
      auto sp = rest.find(' ');
      rest = sp == std::string_view::npos ? "" : trim(rest.substr(sp));
    }
  }
  std::string name;
  bool quoted = false;
  for (char c : rest) {
    if (c == '`') {
      quoted = !quoted;
      continue;
    }
    if (!quoted && (std::isspace(static_cast<unsigned char>(c)) || c == '(')) break;
    name += c;
  }
  if (auto dot = name.rfind('.'); dot != std::string::npos) name = name.substr(dot + 1);
  return name;
}

std::string upper_cased(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

Result<Schema> parse_schema_dump(std::string_view dump) {
  if (dump.size() > kMaxSchemaDumpBytes)
    return invalid(fmt::format("a schema dump of {} bytes is larger than {} bytes", dump.size(), kMaxSchemaDumpBytes));
  const std::string text = unwrap_version_comments(dump);
  Schema schema;
  std::string current;  // the schema of `USE`
  std::string delimiter = ";";
  std::string stmt;
  auto finish = [&](std::string s) -> Status {
    s = without_noise(std::move(s));
    std::string_view t = trim(s);
    if (t.empty() || starts_with_word(t, "SET") || starts_with_word(t, "DROP") || starts_with_word(t, "LOCK") ||
        starts_with_word(t, "UNLOCK") || t.starts_with("--") || t.starts_with("/*"))
      return {};
    if (starts_with_word(t, "USE")) {
      const std::string use = " " + std::string(t);
      current = name_after(use, upper_cased(use), "USE");
      return {};
    }
    if (!starts_with_word(t, "CREATE")) return {};  // (an ALTER ... of a dump's view placeholder, a comment)
    const std::string head = squeeze(t.substr(0, std::min<std::size_t>(t.size(), 200)));
    const std::string upper = upper_cased(head);
    if (upper.find(" DATABASE ") != std::string::npos || upper.find(" SCHEMA ") != std::string::npos) return {};
    for (std::string_view kind : {"TABLE", "VIEW", "TRIGGER", "PROCEDURE", "FUNCTION", "EVENT"}) {
      const std::string real = name_after(head, upper, kind);
      if (real.empty()) continue;
      std::string k(kind);
      for (auto& c : k) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      SchemaObject o;
      o.kind = k;
      if (k == "table") {
        // Columns and keys one per line, sorted; the options line without its counter.
        std::vector<std::string> body;
        std::string options;
        std::size_t start = 0;
        std::vector<std::string> lines;
        while (start <= t.size()) {
          auto nl = t.find('\n', start);
          lines.emplace_back(t.substr(start, nl == std::string_view::npos ? std::string_view::npos : nl - start));
          if (nl == std::string_view::npos) break;
          start = nl + 1;
        }
        for (std::size_t i = 1; i < lines.size(); ++i) {
          std::string line = squeeze(lines[i]);
          if (i + 1 == lines.size() && line.starts_with(")")) {
            options = without_counter(" " + line.substr(1));
            continue;
          }
          if (!line.empty() && line.back() == ',') line.pop_back();
          if (!line.empty()) body.push_back(line);
        }
        std::sort(body.begin(), body.end());
        o.lines = std::move(body);
        if (!options.empty()) o.lines.push_back("options:" + squeeze(options));
      } else if (k == "view" || k == "trigger") {
        o.lines.push_back(squeeze(t));  // one statement however the dump wrapped it
      } else {
        std::size_t start = 0;
        while (start <= t.size()) {
          auto nl = t.find('\n', start);
          std::string line = squeeze(t.substr(start, nl == std::string_view::npos ? std::string_view::npos : nl - start));
          if (!line.empty()) o.lines.push_back(line);
          if (nl == std::string_view::npos) break;
          start = nl + 1;
        }
      }
      const std::string key = fmt::format("{}.{}{}", current, real, k == "table" ? "" : " (" + k + ")");
      schema[key] = std::move(o);  // a later definition (a dump's real view after its placeholder) wins
      return {};
    }
    return {};
  };
  std::size_t start = 0;
  while (start < text.size()) {
    auto nl = text.find('\n', start);
    std::string_view line(text.data() + start, (nl == std::string::npos ? text.size() : nl) - start);
    start = nl == std::string::npos ? text.size() : nl + 1;
    std::string_view tl = trim(line);
    if (starts_with_word(tl, "DELIMITER")) {
      delimiter = std::string(trim(tl.substr(9)));
      if (delimiter.empty()) return invalid("a DELIMITER line without a delimiter in the schema dump");
      continue;
    }
    if (!stmt.empty()) stmt += '\n';
    stmt += line;
    if (tl.size() >= delimiter.size() && tl.substr(tl.size() - delimiter.size()) == delimiter) {
      stmt.erase(stmt.size() - delimiter.size());
      BERTH_TRY(finish(std::move(stmt)));
      stmt.clear();
    }
  }
  BERTH_TRY(finish(std::move(stmt)));
  return schema;
}

std::vector<SchemaDifference> compare_schemas(const Schema& expected, const Schema& actual) {
  std::vector<SchemaDifference> out;
  auto e = expected.begin();
  auto a = actual.begin();
  while (e != expected.end() || a != actual.end()) {
    if (a == actual.end() || (e != expected.end() && e->first < a->first)) {
      out.push_back({e->first, e->second.kind, SchemaDifference::What::kMissing, e->second.lines, {}});
      ++e;
    } else if (e == expected.end() || a->first < e->first) {
      out.push_back({a->first, a->second.kind, SchemaDifference::What::kExtra, {}, a->second.lines});
      ++a;
    } else {
      if (e->second.lines != a->second.lines) {
        SchemaDifference d{e->first, e->second.kind, SchemaDifference::What::kChanged, {}, {}};
        std::vector<std::string> x = e->second.lines, y = a->second.lines;
        std::sort(x.begin(), x.end());
        std::sort(y.begin(), y.end());
        std::set_difference(x.begin(), x.end(), y.begin(), y.end(), std::back_inserter(d.only_expected));
        std::set_difference(y.begin(), y.end(), x.begin(), x.end(), std::back_inserter(d.only_actual));
        out.push_back(std::move(d));
      }
      ++e;
      ++a;
    }
  }
  return out;
}

}  // namespace berth::db
