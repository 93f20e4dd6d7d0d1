// ui/assets.h — the web environment manager's static files (built from web/ with Vite at build
// time, embedded by cmake/embed_ui.cmake), served by the API at / and /assets/*. Immutable data:
// any thread.
#pragma once

#include <string_view>
#include <vector>

namespace berth::ui {

struct Asset {
  std::string_view path;          // "/index.html", "/assets/index-3f2a.js"
  std::string_view content_type;
  std::string_view data;
};

const std::vector<Asset>& assets();
// The asset served at `path` ("/" is /index.html), or nullptr.
const Asset* find_asset(std::string_view path);

}  // namespace berth::ui
