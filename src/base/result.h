// base/result.h — errors as values.
//
// Anything that can fail on input or I/O returns Result<T> (or Status for no value). An Error
// carries a human message that already names the place (file:line:col, field, value) and what
// would be valid; callers add context with Error::wrap() as it travels up. Exceptions thrown by
// libraries are caught at the component edge and turned into Errors. Results are [[nodiscard]]
// so a dropped error fails to compile under -Werror=unused-result.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace berth {

enum class ErrorCode {
  kInvalid,     // bad input (catalog, request body, argument)
  kNotFound,    // a named thing does not exist
  kConflict,    // the request contradicts current state
  kUnavailable, // an I/O peer or resource is not there (connection refused, disk full)
  kInternal,    // a bug or an unexpected system failure
  kUnauthenticated,  // no valid credentials (HTTP 401)
  kForbidden,   // authenticated, but not allowed to do this (HTTP 403)
  // A limit of the daemon's own ran out (open files, processes, memory): says nothing about the
  // request or the instance; the same thing works once the limit is raised or load goes down.
  kExhausted,
};

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
  // For validation: every problem found, each already located. `message` summarises.
  std::vector<std::string> details;

  Error() = default;
  Error(ErrorCode c, std::string m) : code(c), message(std::move(m)) {}

  // Prefix context: err.wrap("loading catalog") → "loading catalog: <message>".
  Error wrap(const std::string& context) const& {
    Error e = *this;
    e.message = context + ": " + message;
    return e;
  }
};

inline Error invalid(std::string m) { return {ErrorCode::kInvalid, std::move(m)}; }
inline Error not_found(std::string m) { return {ErrorCode::kNotFound, std::move(m)}; }
inline Error conflict(std::string m) { return {ErrorCode::kConflict, std::move(m)}; }
inline Error unavailable(std::string m) { return {ErrorCode::kUnavailable, std::move(m)}; }
inline Error internal(std::string m) { return {ErrorCode::kInternal, std::move(m)}; }
inline Error unauthenticated(std::string m) { return {ErrorCode::kUnauthenticated, std::move(m)}; }
inline Error forbidden(std::string m) { return {ErrorCode::kForbidden, std::move(m)}; }
inline Error exhausted(std::string m) { return {ErrorCode::kExhausted, std::move(m)}; }

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}          // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}      // NOLINT: implicit by design

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { assert(ok()); return std::get<0>(v_); }
  const T& value() const& { assert(ok()); return std::get<0>(v_); }
  T&& value() && { assert(ok()); return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const { assert(!ok()); return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

// Result of an operation with no value.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT: implicit by design
  static Status Ok() { return {}; }

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { assert(!ok_); return error_; }

 private:
  Error error_;
  bool ok_ = true;
};

}  // namespace berth

// Propagate an error from a Status or Result expression.
#define BERTH_TRY(expr)                       \
  do {                                        \
    auto berth_try_r_ = (expr);               \
    if (!berth_try_r_.ok()) return berth_try_r_.error(); \
  } while (0)
