#!/usr/bin/env bash
# All tests: builds debug (warnings as errors), builds and briefly runs every libFuzzer target,
# then runs unit and integration tests with ctest (its summary is the last thing printed).
# Runs on a fresh Debian 12 machine (installs what it needs with apt).
#   FUZZ_SECONDS=N   seconds per fuzz target (default 20; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/check-deps.sh   # the architecture: no component includes what it must not
./scripts/build.sh debug
./scripts/build.sh release

fuzz_seconds=${FUZZ_SECONDS:-20}
if [ "$fuzz_seconds" -gt 0 ]; then
  CC=clang CXX=clang++ cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DBERTH_FUZZ=ON -DBERTH_TESTS=OFF -DBERTH_BENCH=OFF -DBERTH_WERROR=ON >/dev/null
  ninja -C build/fuzz fuzz_targets
  for target in build/fuzz/fuzz/fuzz_*; do
    name=$(basename "$target")
    corpus=fuzz/corpus/${name#fuzz_}
    work=$(mktemp -d)
    echo "fuzzing $name for ${fuzz_seconds}s (seed corpus $corpus)"
    "$target" -max_total_time="$fuzz_seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
      -artifact_prefix=build/fuzz/ "$work" "$corpus" 2>&1 | grep -E "^(stat::number_of_executed_units|stat::peak_rss|==|SUMMARY|Done)" || true
    # A crash leaves an artifact and a non-zero status: check for artifacts explicitly.
    if ls build/fuzz/crash-* build/fuzz/leak-* build/fuzz/timeout-* >/dev/null 2>&1; then
      echo "fuzz target $name found a failing input:" >&2
      ls build/fuzz/crash-* build/fuzz/leak-* build/fuzz/timeout-* >&2 || true
      exit 1
    fi
    rm -rf "$work"
  done
fi

# Servers the integration tests use: an OpenStack Swift all-in-one on 127.0.0.1:8080, and a
# dockerd of berth's own inside a network namespace (never the machine's network) with the
# berth-demo image the container tests run.
./scripts/swift.sh start
export BERTH_TEST_SWIFT=127.0.0.1:8080
./scripts/docker-netns.sh start >/dev/null
eval "$(./scripts/docker-netns.sh env)"
export BERTH_TEST_DOCKER_NETNS=$BERTH_DOCKER_NETNS BERTH_TEST_DOCKER_HOST=$BERTH_DOCKER_HOST
DOCKER_HOST=$BERTH_DOCKER_HOST ./scripts/make-images.sh build/debug/examples/shop/berth-demo-svc

cd build/debug
ctest --output-on-failure -j2 --timeout 300
