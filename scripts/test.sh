#!/usr/bin/env bash
# All tests. Builds, with warnings as errors, the release tree and the two sanitized trees
# (build/asan: Debug with AddressSanitizer + UndefinedBehaviorSanitizer; build/tsan: Debug with
# ThreadSanitizer, the unit tests only) and the libFuzzer targets, then
#   1. runs the unit tests under ThreadSanitizer (ctest),
#   2. runs every fuzz target briefly,
#   3. runs every test (unit, integration, browser) under ASan + UBSan (ctest), against a
#      sanitized daemon, CLI and demo service; an ASan or LeakSanitizer report from any of those
#      processes fails the run (the reports are printed at the end).
# The sanitized Debug tree stands in for a plain debug one (same code, assertions on), which CI
# therefore does not build again; the release tree is built (benchmarks included, tests left
# out: they are built, with warnings as errors, in both sanitized trees) for the warnings only the
# optimiser finds in the product. `./scripts/build.sh release -DBERTH_TESTS=ON && cd build/release
# && ctest` runs its tests by hand.
#
# Time (two cores; CI's budget is 45 minutes): the four trees are built one after another, each
# with every core; then the TSan unit tests, the fuzz targets two at a time, and the ASan tests
# with the cluster tests (each a Swarm of three dockerds, ~16 minutes in all) in a lane of their
# own beside the others. Measured on a clean clone (2026-12-07): release 8.3 min, asan 13.5, tsan
# 5.9, fuzz 4.9, TSan tests 0.9, fuzzing 1.4, ASan tests 15.9; 51 min in all. The release tree
# here is built without debug info (-O2: 14.2 s for src/api/handlers.cc against 23.8 s with -g;
# CI wants its warnings, not a debugger): 6.9 min. Line tables only (-g1) in the sanitized
# trees saved a fifth of one file's time alone, and nothing in the parallel build (asan 14.3
# min); they keep -g. The tests keep both cores busy: work beside them only slows them
# (building other trees at nice 19 meanwhile was tried). Since then: the sanitized and fuzz
# trees compile each product library as one unity file (BERTH_UNITY: a third less CPU for the
# ASan libraries, 810 s against 545 s), and the HTTP transport is a library of its own that only
# the daemon links, so the TSan and fuzz trees skip its 90 s file.
# Runs on a fresh Debian 12 machine (installs what it needs with apt).
#   FUZZ_SECONDS=N   seconds per fuzz target (default 20; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."
phase() { echo "== $(date +%T) $*"; }
phase "dependencies"
./scripts/install-deps.sh
./scripts/check-deps.sh   # the architecture: no component includes what it must not
phase "build release"
./scripts/build.sh release -DBERTH_TESTS=OFF "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -DNDEBUG"
phase "build asan"
./scripts/build.sh asan
phase "build tsan"
./scripts/build.sh tsan   # the unit tests only
fuzz_seconds=${FUZZ_SECONDS:-20}
if [ "$fuzz_seconds" -gt 0 ]; then
  phase "build fuzz"
  # -O1 and line tables: what libFuzzer's documentation builds with, and less to compile.
  CC=clang CXX=clang++ cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only -DNDEBUG" -DBERTH_FUZZ=ON -DBERTH_TESTS=OFF \
    -DBERTH_BENCH=OFF -DBERTH_WERROR=ON -DBERTH_UNITY=ON >/dev/null
  ninja -C build/fuzz fuzz_targets
fi

# 1. ThreadSanitizer: the unit tests (a report makes the test fail and is in its output).
phase "tsan: unit tests"
(cd build/tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 ctest -L unit --output-on-failure -j2 --timeout 600)

# 2. Every libFuzzer target for a while, two at a time (each runs on one core).
fuzz_one() {
  local target=$1 name corpus work
  name=$(basename "$target")
  corpus=fuzz/corpus/${name#fuzz_}
  work=$(mktemp -d)
  "$target" -max_total_time="$fuzz_seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="build/fuzz/$name-" "$work" "$corpus" >"build/fuzz/$name.log" 2>&1 || true
  rm -rf "$work"
}
if [ "$fuzz_seconds" -gt 0 ]; then
  phase "fuzzing every target for ${fuzz_seconds}s, two at a time"
  rm -f build/fuzz/*-crash-* build/fuzz/*-leak-* build/fuzz/*-timeout-* build/fuzz/*-oom-*
  targets=(build/fuzz/fuzz/fuzz_*)
  for ((k = 0; k < ${#targets[@]}; k += 2)); do
    fuzz_one "${targets[k]}" &
    [ $((k + 1)) -lt ${#targets[@]} ] && fuzz_one "${targets[k + 1]}" &
    wait
  done
  for target in "${targets[@]}"; do
    name=$(basename "$target")
    echo "$name (seed corpus fuzz/corpus/${name#fuzz_}):"
    grep -E "^(stat::number_of_executed_units|stat::peak_rss|==|SUMMARY|Done)" "build/fuzz/$name.log" || true
  done
  # A crash leaves an artifact and a non-zero status: check for artifacts explicitly.
  if compgen -G "build/fuzz/*-crash-*" >/dev/null || compgen -G "build/fuzz/*-leak-*" >/dev/null ||
     compgen -G "build/fuzz/*-timeout-*" >/dev/null || compgen -G "build/fuzz/*-oom-*" >/dev/null; then
    echo "a fuzz target found a failing input:" >&2
    ls build/fuzz/*-crash-* build/fuzz/*-leak-* build/fuzz/*-timeout-* build/fuzz/*-oom-* 2>/dev/null >&2 || true
    for f in build/fuzz/fuzz_*.log; do grep -q -E "^==[0-9]+==|^SUMMARY" "$f" && tail -n 60 "$f" >&2; done
    exit 1
  fi
fi

# Servers the integration tests use: an OpenStack Swift all-in-one on 127.0.0.1:8080, and a
# dockerd of berth's own inside a network namespace (never the machine's network) with the
# berth-demo image the container tests run. (The cluster tests start Swarms of their own.)
./scripts/swift.sh start
export BERTH_TEST_SWIFT=127.0.0.1:8080
./scripts/docker-netns.sh start >/dev/null
eval "$(./scripts/docker-netns.sh env)"
export BERTH_TEST_DOCKER_NETNS=$BERTH_DOCKER_NETNS BERTH_TEST_DOCKER_HOST=$BERTH_DOCKER_HOST
DOCKER_HOST=$BERTH_DOCKER_HOST ./scripts/make-images.sh build/asan/examples/shop/berth-demo-svc

# 3. ASan + UBSan: everything, the containers running the sanitized demo service. ASan and LSan
# write their reports to files here, so that one from a process whose output no test reads (a
# daemon's shutdown, a CLI call) still fails the run. UBSan findings abort the process that has
# them (-fno-sanitize-recover), reported on its stderr (GCC's libubsan ignores log_path beside ASan).
# Instances get no ASAN_OPTIONS (berth gives them a clean environment): theirs go to their logs.
reports=$PWD/build/asan/sanitizer-reports
rm -rf "$reports" && mkdir -p "$reports"
logs=$PWD/build/test-logs
rm -rf "$logs" && mkdir -p "$logs"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1:log_path=$reports/asan
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
phase "asan: every test (the cluster tests in a lane of their own)"
(cd build/asan && ctest -R '^Cluster' --output-on-failure --timeout 600) >"$logs/cluster-lane.log" 2>&1 &
cluster_pid=$!
asan_status=0
(cd build/asan && ctest -E '^Cluster' --output-on-failure -j2 --timeout 600) || asan_status=$?
cluster_status=0
wait "$cluster_pid" || cluster_status=$?
phase "asan: the cluster lane"
cat "$logs/cluster-lane.log"
phase "done"

# (Reports first: a test that failed because of one is explained by it.)
if compgen -G "$reports/*" >/dev/null; then
  for f in "$reports"/*; do
    echo "== sanitizer report $f" >&2
    head -n 80 "$f" >&2
  done
  echo "sanitizer reports in $reports (above: the first 80 lines of each)" >&2
  exit 1
fi
[ "$asan_status" -eq 0 ] || { echo "asan: tests failed (ctest status $asan_status)" >&2; exit 1; }
[ "$cluster_status" -eq 0 ] || { echo "asan: cluster tests failed (ctest status $cluster_status)" >&2; exit 1; }
