// cli/interact.h — what the CLI does with a running daemon beyond one request: following an
// environment's event stream until a condition holds, a database job's progress, instances'
// logs; editing an environment's document in $EDITOR. Each prints for people on stdout (errors
// on stderr) and returns the command's exit code.
//
// Threads: the CLI's one thread; each call blocks until it is done (or, following logs, until
// the process is interrupted).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "base/result.h"
#include "client/client.h"

namespace berth::cli {

// Print `e` (and its details) as "berth: ..." on stderr; returns 1.
int fail(const Error& e);

// Follow the environment's event stream from event `after` until `done(status)` holds,
// printing events as they happen (unless `quiet`); the status is checked after each event and
// each second without one. After `timeout_ms`, says what is not ready and why; `what` ("up",
// "down", ...) names the command in messages.
int follow(client::Client& c, const std::string& env, std::int64_t after, Millis timeout_ms, bool quiet,
           const std::function<bool(const nlohmann::json&)>& done, const std::string& what);
// Poll a database job, showing its phase, bytes, rate and ETA on one line, until it ends.
int follow_job(client::Client& c, const std::string& id, bool quiet);
// `berth logs`: one instance (`ordinal` >= 0 and one app) as it is, or many merged line by line
// with a prefix; `tail_lines` < 0: everything; `follow`: keep printing what comes.
int logs_command(client::Client& c, const std::string& env, const std::vector<std::string>& apps, int ordinal,
                 int tail_lines, bool follow);
// "orders.tag=feature/x" ... → {"orders.tag": "feature/x"}; nullopt (said on stderr) if one is
// not KEY=VALUE.
std::optional<nlohmann::json> settings_of(const std::vector<std::string>& kvs);
// The whole file, "" when it cannot be read.
std::string read_file(const std::string& path);
// `berth env edit`: the document in $VISUAL/$EDITOR; on save it is validated by the daemon and,
// when refused, reopened with the errors on top as comments. Saved unchanged: nothing is sent.
int edit_document(client::Client& c, const std::string& name);

}  // namespace berth::cli
