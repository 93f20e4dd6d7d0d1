// Apps built from source: reading apps.<app>.source (repository, recipes per build_type, each a
// file artifact or an image), and giving each environment's app the recipe of its build_type.
// Part of the catalog loader (model/loader.h).
#include <fmt/format.h>

#include "base/text.h"
#include "model/loader.h"

namespace berth::model::loader {

std::string resolve_repo(const std::string& repo, const std::string& base_dir) {
  bool url = repo.find("://") != std::string::npos || repo.find('@') != std::string::npos;
  if (!url && !repo.empty() && repo.front() != '/' && !base_dir.empty()) return base_dir + "/" + repo;
  return repo;
}

SourceDecl read_source(Ctx& ctx, const YAML::Node& src, const std::string& app, const std::string& base_dir) {
  const std::string where = "apps." + app + ".source";
  check_keys(ctx, src, kSourceKeys, where);
  SourceDecl out;
  out.node.reset(src);
  YAML::Node repo = src["repo"];
  if (!repo || !repo.IsScalar() || repo.Scalar().empty()) {
    ctx.error(repo ? repo : src, where + ".repo: a git repository (URL or path) is required");
  } else {
    out.repo = resolve_repo(repo.Scalar(), base_dir);
  }
  if (YAML::Node t = src["timeout"]) {
    auto d = t.IsScalar() ? parse_duration(t.Scalar()) : std::nullopt;
    if (!d || *d == 0) ctx.error(t, fmt::format("{}.timeout: bad duration '{}'; write e.g. 10m", where, display(t)));
    else out.timeout_ms = *d;
  }
  YAML::Node recipes = src["recipes"];
  if (!recipes || !recipes.IsMap() || recipes.size() == 0) {
    ctx.error(recipes ? recipes : src, where + ".recipes: a mapping of build_type (or 'default') → {command, artifact}");
    return out;
  }
  auto scalar = [](const YAML::Node& n) { return n && n.IsScalar() ? n.Scalar() : std::string(); };
  for (const auto& [k, v] : entries(ctx, recipes)) {
    std::string rw = where + ".recipes." + k.Scalar();
    if (!expect_map(ctx, v, rw)) {
      if (v.IsNull()) ctx.error(k, rw + " needs command and artifact (or image: Dockerfile)");
      continue;
    }
    check_keys(ctx, v, kRecipeKeys, rw);
    YAML::Node cmd = v["command"], art = v["artifact"], img = v["image"];
    if (img) {
      // An image built from the checkout; a command may prepare the checkout first.
      const std::string df = scalar(img);
      if (df.empty() || df.front() == '/' || df.find("..") != std::string::npos)
        ctx.error(img, rw + ".image: the Dockerfile's path inside the checkout, e.g. Dockerfile or docker/Dockerfile");
      else if (art)
        ctx.error(art, rw + ": a recipe that builds an image has no artifact (the image is the artifact)");
      else if (cmd && scalar(cmd).empty())
        ctx.error(cmd, rw + ".command must not be empty (or leave it out)");
      else
        out.recipes[k.Scalar()] = {scalar(cmd), "", df};
    } else if (scalar(cmd).empty()) {
      ctx.error(cmd ? cmd : k, rw + ".command is required (or image: Dockerfile to build an image)");
    } else if (scalar(art).empty()) {
      ctx.error(art ? art : k, rw + ".artifact (the path the command leaves) is required");
    } else {
      out.recipes[k.Scalar()] = {scalar(cmd), scalar(art), ""};
    }
  }
  return out;
}

void apply_source(Ctx& ctx, const SourceDecl& so, const std::string& env, const Flat& flat, AppSpec& spec,
                  const Leaf& repo) {
  if (so.recipes.empty()) return;  // its errors are reported
  const std::string& a = spec.app;
  auto recipe = so.recipes.find(spec.build_type);
  if (recipe == so.recipes.end()) recipe = so.recipes.find("default");
  if (recipe == so.recipes.end()) {
    std::string names;
    for (const auto& [n, r] : so.recipes) names += (names.empty() ? "" : ", ") + n;
    ctx.error(so.node["recipes"], fmt::format("app '{}' in environment '{}' has build_type '{}' but its source has no "
                                              "recipe for it and no 'default'; recipes: {}",
                                              a, env, spec.build_type, names));
    return;
  }
  SourceSpec ss;
  ss.repo = repo.layer.empty() || !repo.node.IsScalar() ? so.repo : resolve_repo(repo.node.Scalar(), ctx.base_dir);
  ss.recipe = recipe->first;
  ss.command = substitute_raw(recipe->second.command, {{"build_type", spec.build_type}});
  ss.artifact = recipe->second.artifact;
  ss.dockerfile = recipe->second.dockerfile;
  ss.timeout_ms = so.timeout_ms;
  spec.source = ss;
  for (auto [k, v] : {std::pair{"source.repo", ss.repo}, std::pair{"source.recipe", ss.recipe},
                      std::pair{"source.command", ss.command}, std::pair{"source.artifact", ss.artifact},
                      std::pair{"source.image", ss.dockerfile}}) {
    if (v.empty()) continue;
    spec.from[k] = std::string_view(k) == "source.repo" && !repo.layer.empty() ? repo.layer : "apps." + a;
    spec.values[k] = v;
  }
  if (ss.dockerfile.empty()) {
    if (spec.container() && spec.image.find("${artifact}") != std::string::npos)
      ctx.error(flat.at("image").node, fmt::format("image of app '{}' uses ${{artifact}} but its recipe '{}' builds "
                                                   "a file; give the recipe image: Dockerfile", a, ss.recipe));
    return;
  }
  // The app runs the image its recipe builds. An image the app itself names conflicts with it;
  // one inherited from defaults or an environment gives way to it.
  const std::string layer = spec.from.count("image") ? spec.from.at("image") : "";
  const std::string own_override = ".apps." + a;
  const bool own = layer == "apps." + a ||
                   (layer.rfind("environments.", 0) == 0 && layer.size() > own_override.size() &&
                    layer.compare(layer.size() - own_override.size(), std::string::npos, own_override) == 0);
  if (spec.container() && own && spec.image != "${artifact}")
    ctx.error(flat.at("image").node, fmt::format("app '{}' in environment '{}': its recipe '{}' builds the image it runs; "
                                                 "leave image unset (or write ${{artifact}})", a, env, ss.recipe));
  spec.image = "${artifact}";
  spec.image_from_build = true;
  spec.from["image"] = "apps." + a + ".source.recipes." + ss.recipe;
  spec.values["image"] = "(built from source)";
}

void check_no_artifact(Ctx& ctx, const Flat& flat, const AppSpec& spec) {
  bool uses = spec.command.find("${artifact}") != std::string::npos || spec.image.find("${artifact}") != std::string::npos;
  for (const auto& w : spec.args) uses = uses || w.find("${artifact}") != std::string::npos;
  if (uses)
    ctx.error(flat.count("command") ? flat.at("command").node : flat.count("image") ? flat.at("image").node : YAML::Node(),
              fmt::format("app '{}' uses ${{artifact}} but has no source to build it from", spec.app));
}

}  // namespace berth::model::loader
