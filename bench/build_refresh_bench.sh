#!/usr/bin/env bash
# build_refresh_bench.sh — the overhead of `berth refresh` around a build.
#
# An app with 2 instances built from a git repository (its build sleeps BUILD_S seconds, the
# service is ready 200 ms after start). After a commit moves the branch, `berth refresh` is
# timed until every instance runs the new build and is ready. Reported: that time, the build's
# own duration (from berth's build record), and the rest: berth's overhead plus the rolling
# replacement (2 × the service's start time, one instance after the other, each health-gated).
# Target: overhead ≤ 1 s. Median of RUNS refreshes. Usage: bench/build_refresh_bench.sh [RUNS] [BUILD_S]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5} BUILD_S=${2:-2}
BIN=$PWD/build/release
[ -x "$BIN/src/cli/berth" ] || { echo "build first: scripts/build.sh release" >&2; exit 1; }
W=$(mktemp -d /tmp/berth-refreshbench.XXXXXX)
export PATH=$BIN/src/cli:$BIN/examples/shop:$PATH
berth serve --data-dir "$W/data" --listen 127.0.0.1:0 --dns-listen 127.0.0.1:0 2>"$W/daemon.log" &
DAEMON=$!
trap 'berth down dev -q 2>/dev/null || true; kill $DAEMON 2>/dev/null || true; wait 2>/dev/null; rm -rf "$W"' EXIT
until [ -s "$W/data/api.addr" ]; do sleep 0.05; done
export BERTH_ADDR=$(cat "$W/data/api.addr") BERTH_DATA_DIR=$W/data

mkdir -p "$W/repo" && cd "$W/repo"
git init -q -b main
cat > build.sh <<SH
#!/bin/sh
set -e
sleep $BUILD_S
mkdir -p out
printf '#!/bin/sh\nexec berth-demo-svc --version "%s" "\$@"\n' "\$(cat VERSION)" > out/svc
chmod +x out/svc
SH
chmod +x build.sh; echo 0 > VERSION
git -c user.email=b@b -c user.name=b add -A; git -c user.email=b@b -c user.name=b commit -qm v0
cd - >/dev/null
cat > "$W/berth.yaml" <<YAML
network: {pool: 127.104.0.0/24}
apps:
  svc:
    tag: main
    instances: 2
    ports: {http: 8080}
    env: {DEMO_WARMUP_MS: "200"}
    health: {type: http, path: /healthcheck, start_interval: 10ms}
    source: {repo: $W/repo, recipes: {default: {command: ./build.sh, artifact: out/svc}}}
    command: \${artifact} --listen \${ip}:\${port.http}
environments:
  dev: {}
YAML
berth apply -f "$W/berth.yaml" >/dev/null
berth up dev -q --timeout 120s

ms() { date +%s%3N; }
: > "$W/results"
for r in $(seq "$RUNS"); do
  (cd "$W/repo" && echo "$r" > VERSION && git -c user.email=b@b -c user.name=b commit -qam "v$r")
  t0=$(ms)
  berth refresh dev -q --timeout 120s
  t1=$(ms)
  build_ms=$(berth status dev -o json | python3 -c "import json,sys; s=json.load(sys.stdin); print(s['apps'][0]['build']['duration_ms'])")
  total=$((t1 - t0))
  echo "$total $build_ms" >> "$W/results"
  printf 'refresh %d: %5d ms total, build %5d ms, overhead %4d ms\n' "$r" "$total" "$build_ms" $((total - build_ms))
done
python3 - "$W/results" <<'PY'
import statistics, sys
rows = [tuple(map(int, l.split())) for l in open(sys.argv[1])]
tot = statistics.median(r[0] for r in rows); b = statistics.median(r[1] for r in rows)
over = statistics.median(r[0] - r[1] for r in rows)
print(f"\nmedian of {len(rows)}: refresh {tot:.0f} ms = build {b:.0f} ms + overhead {over:.0f} ms "
      f"(includes the rolling replacement of 2 instances ready 200 ms after start; target ≤ 1000 ms: "
      f"{'met' if over <= 1000 else 'NOT met'})")
PY
