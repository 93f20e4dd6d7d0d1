#!/usr/bin/env bash
# Configure and build. Usage: scripts/build.sh [debug|release] [extra cmake args...]
# Build trees: build/debug, build/release. Warnings are errors.
set -euo pipefail
cd "$(dirname "$0")/.."
type=${1:-release}
shift || true
case "$type" in
  debug) cmake_type=Debug ;;
  release) cmake_type=RelWithDebInfo ;;
  *) echo "usage: $0 [debug|release]" >&2; exit 2 ;;
esac
cmake -S . -B "build/$type" -G Ninja -DCMAKE_BUILD_TYPE="$cmake_type" -DBERTH_WERROR=ON "$@" >/dev/null
ninja -C "build/$type"
