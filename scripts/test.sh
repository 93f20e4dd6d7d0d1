#!/usr/bin/env bash
# All tests. Builds, with warnings as errors, the release tree and the two sanitized trees
# (build/asan: Debug with AddressSanitizer + UndefinedBehaviorSanitizer; build/tsan: Debug with
# ThreadSanitizer, the unit tests only), builds and briefly runs every libFuzzer target, then runs
# with ctest
#   1. the unit tests under ThreadSanitizer,
#   2. every test (unit, integration, browser) under ASan + UBSan, against a sanitized daemon, CLI
#      and demo service; an ASan or LeakSanitizer report from any of those processes fails the run
#      (its ctest summary is the last thing printed).
# The sanitized Debug tree stands in for a plain debug one (same code, assertions on), which CI
# therefore does not build again; the release tree is built (benchmarks included, tests left
# out: they are built, with warnings as errors, in both sanitized trees) for the warnings only the
# optimiser finds in the product. Building and running its tests too would take CI past 45
# minutes on two cores: `./scripts/build.sh release -DBERTH_TESTS=ON && cd build/release && ctest`
# runs them by hand.
# Runs on a fresh Debian 12 machine (installs what it needs with apt).
#   FUZZ_SECONDS=N   seconds per fuzz target (default 20; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/check-deps.sh   # the architecture: no component includes what it must not
./scripts/build.sh release -DBERTH_TESTS=OFF
./scripts/build.sh asan
./scripts/build.sh tsan   # the unit tests only

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

# 1. ThreadSanitizer: the unit tests (a report makes the test fail and is in its output).
(cd build/tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 ctest -L unit --output-on-failure -j2 --timeout 600)

# 2. ASan + UBSan: everything, the containers running the sanitized demo service. ASan and LSan
# write their reports to files here, so that one from a process whose output no test reads (a
# daemon's shutdown, a CLI call) still fails the run. UBSan findings abort the process that has
# them (-fno-sanitize-recover), reported on its stderr (GCC's libubsan ignores log_path beside ASan).
# Instances get no ASAN_OPTIONS (berth gives them a clean environment): theirs go to their logs.
reports=$PWD/build/asan/sanitizer-reports
rm -rf "$reports" && mkdir -p "$reports"
DOCKER_HOST=$BERTH_DOCKER_HOST ./scripts/make-images.sh build/asan/examples/shop/berth-demo-svc
asan_status=0
(cd build/asan &&
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1:log_path=$reports/asan \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --output-on-failure -j2 --timeout 600) || asan_status=$?
# (Reports first: a test that failed because of one is explained by it.)
if compgen -G "$reports/*" >/dev/null; then
  for f in "$reports"/*; do
    echo "== sanitizer report $f" >&2
    head -n 80 "$f" >&2
  done
  echo "sanitizer reports in $reports (above: the first 80 lines of each)" >&2
  exit 1
fi
[ "$asan_status" -eq 0 ] || exit "$asan_status"

