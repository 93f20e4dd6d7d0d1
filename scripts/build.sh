#!/usr/bin/env bash
# Configure and build. Usage: scripts/build.sh [debug|release|asan|tsan] [extra cmake args...]
# Build trees: build/debug, build/release, build/asan, build/tsan. Warnings are errors.
#   asan  Debug with AddressSanitizer + UndefinedBehaviorSanitizer (UB is fatal): everything the
#         unit and integration tests run, the daemon and the demo service included.
#   tsan  Debug with ThreadSanitizer: the unit tests only (berth_unit_tests).
# release is -O2 -g (CI builds it without -g: scripts/test.sh).
# The sanitized trees leave out the benchmarks and fuzz targets, and compile each product library
# as one unity file (BERTH_UNITY in CMakeLists.txt: a third less CPU for the ASan libraries).
# BERTH_JOBS=N: ninja -jN.
set -euo pipefail
cd "$(dirname "$0")/.."
type=${1:-release}
shift || true
targets=()
case "$type" in
  debug) cmake_args=(-DCMAKE_BUILD_TYPE=Debug) ;;
  release) cmake_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g -DNDEBUG") ;;
  asan) cmake_args=(-DCMAKE_BUILD_TYPE=Debug "-DBERTH_SANITIZE=address,undefined" -DBERTH_BENCH=OFF -DBERTH_FUZZ=OFF -DBERTH_UNITY=ON) ;;
  tsan)
    cmake_args=(-DCMAKE_BUILD_TYPE=Debug -DBERTH_SANITIZE=thread -DBERTH_BENCH=OFF -DBERTH_FUZZ=OFF -DBERTH_UNITY=ON)
    targets=(berth_unit_tests)
    ;;
  *) echo "usage: $0 [debug|release|asan|tsan]" >&2; exit 2 ;;
esac
cmake -S . -B "build/$type" -G Ninja "${cmake_args[@]}" -DBERTH_WERROR=ON "$@" >/dev/null
ninja -C "build/$type" ${BERTH_JOBS:+-j"$BERTH_JOBS"} "${targets[@]}"
