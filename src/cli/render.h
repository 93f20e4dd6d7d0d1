// cli/render.h — turning API JSON into what people read: tables, progress lines, root causes.
// Pure functions of JSON, so they are unit-tested without a daemon.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace berth::cli {

// "environments.beta-7.apps.orders" → "env beta-7 app override"; short labels for tables.
std::string short_layer(const std::string& layer);
// The table of `berth status E`: at most 120 columns (messages cut with "…"); `wide` adds
// DNS names, what each instance runs as and every port, uncut.
std::string status_table(const nlohmann::json& status, bool wide = false);
// The table of `berth config E [APP]`.
std::string config_table(const nlohmann::json& config);
// One line per event, for `berth events` and the progress of `berth up`.
std::string event_line(const nlohmann::json& event);
// Why an environment is not ready: the apps that are not ready and wait for nothing, each with
// its message, and who waits on them. Empty when everything is ready.
std::vector<std::string> root_causes(const nlohmann::json& status);
// "4/6 apps ready; waiting: gateway (for orders)"
std::string progress_summary(const nlohmann::json& status);
// The table of `berth db versions [STANDARD]`.
std::string versions_table(const nlohmann::json& versions);
// The table of `berth db rollout STANDARD`: each copy, its versions, state, time, and error.
std::string rollout_table(const nlohmann::json& rollout);
// The table of `berth db drift`: each copy, the version it is compared with, how many objects
// differ; then each difference, object by object, the standard's lines (-) and the copy's (+).
std::string drift_table(const nlohmann::json& check);
// `berth cluster ls`: each host, berth's state of it and the Swarm's, its capacity, how many
// instances berth placed there, its labels.
std::string cluster_table(const nlohmann::json& cluster);
// `berth env ls`: environment documents, owner, base, thin, version, expiry, why left out.
std::string documents_table(const nlohmann::json& documents);
// `berth env diff`: each setting that differs, with both values and their layers.
std::string diff_table(const nlohmann::json& diff);
// `berth apply`: what the fleet document changes (or would, with --dry-run).
std::string plan_text(const nlohmann::json& apply);
// `berth audit` and `berth token ls`.
std::string audit_table(const nlohmann::json& entries);
std::string tokens_table(const nlohmann::json& tokens);

}  // namespace berth::cli
