#include "engine/stream.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace berth::engine {
using nlohmann::json;

Status Demux::feed(std::string_view data, const std::function<void(int, std::string_view)>& out) {
  while (!data.empty()) {
    if (left_ == 0) {
      const std::size_t take = std::min(data.size(), sizeof header_ - have_);
      for (std::size_t i = 0; i < take; ++i) header_[have_ + i] = static_cast<unsigned char>(data[i]);
      have_ += take;
      data.remove_prefix(take);
      if (have_ < sizeof header_) return {};
      have_ = 0;
      if (header_[0] > 2 || header_[1] || header_[2] || header_[3])
        return invalid(fmt::format("not a multiplexed stream (frame header {:02x} {:02x} {:02x} {:02x})", header_[0],
                                   header_[1], header_[2], header_[3]));
      stream_ = header_[0];
      left_ = static_cast<std::uint32_t>(header_[4]) << 24 | static_cast<std::uint32_t>(header_[5]) << 16 |
              static_cast<std::uint32_t>(header_[6]) << 8 | header_[7];
      continue;
    }
    const std::size_t take = std::min<std::size_t>(data.size(), left_);
    out(stream_, data.substr(0, take));
    left_ -= static_cast<std::uint32_t>(take);
    data.remove_prefix(take);
  }
  return {};
}

void Lines::feed(std::string_view data, const std::function<void(std::string_view, bool)>& out) {
  while (!data.empty()) {
    const auto nl = data.find('\n');
    const std::string_view part = data.substr(0, nl);
    if (partial_.size() + part.size() > max_) {
      // Hand out what fills a line's worth and go on with the rest of it.
      const std::size_t room = max_ - partial_.size();
      partial_.append(part.substr(0, room));
      out(partial_, false);
      partial_.clear();
      data.remove_prefix(room);
      continue;
    }
    if (nl == std::string_view::npos) {
      partial_.append(part);
      return;
    }
    std::string_view line = part;
    if (!partial_.empty()) {
      partial_.append(part);
      line = partial_;
    }
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    out(line, true);
    partial_.clear();
    data.remove_prefix(nl + 1);
  }
}

void Lines::finish(const std::function<void(std::string_view, bool)>& out) {
  if (!partial_.empty()) out(partial_, true);
  partial_.clear();
}

std::pair<std::string_view, std::string_view> split_timestamp(std::string_view line) {
  // 2026-12-02T05:20:53.488428753Z: digits, '-', 'T', ':', '.', then 'Z' and a space.
  const auto sp = line.find(' ');
  if (sp == std::string_view::npos || sp < 20 || sp > 40 || line[4] != '-' || line[10] != 'T' || line[sp - 1] != 'Z')
    return {{}, line};
  return {line.substr(0, sp), line.substr(sp + 1)};
}

std::optional<ContainerEvent> parse_container_event(std::string_view line) {
  json j = json::parse(line, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  auto str = [](const json& o, const char* k) -> std::string {
    auto it = o.find(k);
    return it != o.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  if (str(j, "Type") != "container") return std::nullopt;
  ContainerEvent e;
  e.action = str(j, "Action");
  auto actor = j.find("Actor");
  if (actor == j.end() || !actor->is_object()) return std::nullopt;
  e.id = str(*actor, "ID");
  if (e.id.empty() || e.action.empty()) return std::nullopt;
  if (auto attrs = actor->find("Attributes"); attrs != actor->end() && attrs->is_object())
    for (const auto& [k, v] : attrs->items())
      if (v.is_string()) e.attributes[k] = v.get<std::string>();
  if (auto code = e.attributes.find("exitCode"); code != e.attributes.end()) {
    try {
      std::size_t used = 0;
      int n = std::stoi(code->second, &used);
      if (used == code->second.size() && n >= 0 && n <= 255) e.exit_code = n;
    } catch (const std::exception&) {
    }
  }
  return e;
}

BuildMessage parse_build_message(std::string_view line) {
  BuildMessage m;
  json j = json::parse(line, nullptr, false);
  if (!j.is_object()) {
    m.text = std::string(line);
    return m;
  }
  if (auto s = j.find("stream"); s != j.end() && s->is_string()) m.text = s->get<std::string>();
  if (auto s = j.find("status"); s != j.end() && s->is_string()) m.text = s->get<std::string>() + "\n";
  if (auto e = j.find("error"); e != j.end() && e->is_string()) m.error = e->get<std::string>();
  if (auto a = j.find("aux"); a != j.end() && a->is_object())
    if (auto id = a->find("ID"); id != a->end() && id->is_string()) m.image_id = id->get<std::string>();
  return m;
}

}  // namespace berth::engine
