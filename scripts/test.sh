#!/usr/bin/env bash
# All tests. Builds, with warnings as errors, the release tree and the two sanitized trees
# (build/asan: Debug with AddressSanitizer + UndefinedBehaviorSanitizer; build/tsan: Debug with
# ThreadSanitizer, the unit tests only), builds and briefly runs every libFuzzer target, and runs
# with ctest
#   1. every test (unit, integration, browser) under ASan + UBSan, against a sanitized daemon, CLI
#      and demo service; an ASan or LeakSanitizer report from any of those processes fails the run
#      (the reports are printed at the end);
#   2. the unit tests under ThreadSanitizer.
# The sanitized Debug tree stands in for a plain debug one (same code, assertions on), which CI
# therefore does not build again; the release tree is built (benchmarks included, tests left
# out: they are built, with warnings as errors, in both sanitized trees) for the warnings only the
# optimiser finds in the product. `./scripts/build.sh release -DBERTH_TESTS=ON && cd build/release
# && ctest` runs its tests by hand.
#
# Time (two cores, CI's budget is 45 minutes): building is about 30 minutes of CPU and the ASan
# tests about 15 minutes of mostly waiting (daemons, dockerds, Swarms, database servers). So once
# the ASan tree is built, its tests run while the other trees build and the fuzz targets run, at
# nice 19 so that they take only the CPU the tests leave; the cluster tests (each a Swarm of three
# dockerds, ~13 minutes in all) run in a lane of their own beside the others.
# Runs on a fresh Debian 12 machine (installs what it needs with apt).
#   FUZZ_SECONDS=N   seconds per fuzz target (default 20; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."
phase() { echo "== $(date +%T) $*"; }
phase "dependencies"
./scripts/install-deps.sh
./scripts/check-deps.sh   # the architecture: no component includes what it must not
phase "build asan"
./scripts/build.sh asan

# Servers the integration tests use: an OpenStack Swift all-in-one on 127.0.0.1:8080, and a
# dockerd of berth's own inside a network namespace (never the machine's network) with the
# berth-demo image the container tests run. (The cluster tests start Swarms of their own.)
./scripts/swift.sh start
export BERTH_TEST_SWIFT=127.0.0.1:8080
./scripts/docker-netns.sh start >/dev/null
eval "$(./scripts/docker-netns.sh env)"
export BERTH_TEST_DOCKER_NETNS=$BERTH_DOCKER_NETNS BERTH_TEST_DOCKER_HOST=$BERTH_DOCKER_HOST
DOCKER_HOST=$BERTH_DOCKER_HOST ./scripts/make-images.sh build/asan/examples/shop/berth-demo-svc

logs=$PWD/build/test-logs
rm -rf "$logs" && mkdir -p "$logs"

# Meanwhile, at nice 19: the release and TSan trees, the TSan unit tests (a report makes the test
# fail and is in its output), the fuzz targets and their runs.
other_trees() {
  renice -n 19 -p "$BASHPID" >/dev/null
  phase "build release"
  ./scripts/build.sh release -DBERTH_TESTS=OFF
  phase "build tsan"
  ./scripts/build.sh tsan   # the unit tests only
  phase "tsan: unit tests"
  (cd build/tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 ctest -L unit --output-on-failure -j2 --timeout 600)
  local fuzz_seconds=${FUZZ_SECONDS:-20}
  [ "$fuzz_seconds" -gt 0 ] || return 0
  phase "build fuzz"
  # -O1 and line tables: what libFuzzer's documentation builds with, and a third less to compile.
  CC=clang CXX=clang++ cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only -DNDEBUG" -DBERTH_FUZZ=ON -DBERTH_TESTS=OFF -DBERTH_BENCH=OFF -DBERTH_WERROR=ON >/dev/null
  ninja -C build/fuzz fuzz_targets
  for target in build/fuzz/fuzz/fuzz_*; do
    local name corpus work
    name=$(basename "$target")
    corpus=fuzz/corpus/${name#fuzz_}
    work=$(mktemp -d)
    phase "fuzzing $name for ${fuzz_seconds}s (seed corpus $corpus)"
    "$target" -max_total_time="$fuzz_seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
      -artifact_prefix=build/fuzz/ "$work" "$corpus" 2>&1 | grep -E "^(stat::number_of_executed_units|stat::peak_rss|==|SUMMARY|Done)" || true
    # A crash leaves an artifact and a non-zero status: check for artifacts explicitly.
    if ls build/fuzz/crash-* build/fuzz/leak-* build/fuzz/timeout-* >/dev/null 2>&1; then
      echo "fuzz target $name found a failing input:" >&2
      ls build/fuzz/crash-* build/fuzz/leak-* build/fuzz/timeout-* >&2 || true
      return 1
    fi
    rm -rf "$work"
  done
  phase "other trees done"
}
(other_trees) >"$logs/other-trees.log" 2>&1 &
other_pid=$!

# ASan + UBSan: everything, the containers running the sanitized demo service. ASan and LSan
# write their reports to files here, so that one from a process whose output no test reads (a
# daemon's shutdown, a CLI call) still fails the run. UBSan findings abort the process that has
# them (-fno-sanitize-recover), reported on its stderr (GCC's libubsan ignores log_path beside ASan).
# Instances get no ASAN_OPTIONS (berth gives them a clean environment): theirs go to their logs.
reports=$PWD/build/asan/sanitizer-reports
rm -rf "$reports" && mkdir -p "$reports"
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
unset ASAN_OPTIONS UBSAN_OPTIONS

phase "waiting for the other trees"
other_status=0
wait "$other_pid" || other_status=$?
cat "$logs/other-trees.log"
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
status=0
[ "$asan_status" -eq 0 ] || { echo "asan: tests failed (ctest status $asan_status)" >&2; status=1; }
[ "$cluster_status" -eq 0 ] || { echo "asan: cluster tests failed (ctest status $cluster_status)" >&2; status=1; }
[ "$other_status" -eq 0 ] || { echo "release/tsan/fuzz failed (status $other_status; its log is above)" >&2; status=1; }
exit "$status"
