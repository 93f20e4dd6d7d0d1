#!/usr/bin/env bash
# dns_bench.sh — berth's name server against Knot DNS and NSD, same names, same run.
#
# The zone: 10,000 names, 200 environments × 50 apps (appNN.beta-E.berth.test). berth serves
# them from the real daemon: beta-0 runs the 50 apps (as `sleep` processes, no health check),
# beta-1 … beta-199 are thin environments (deploy: changed, nothing changed) whose names all
# fall through to beta-0 — so every name answers an A record, the same address Knot and NSD
# are given in their zone files. Queries: 90% existing names, 10% NXDOMAIN, shuffled.
#
# Each server in turn is pinned to core 0 (all its threads) and dnsperf to core 1, for D
# seconds at saturation; rounds interleave the servers. Reported: queries per second, server
# CPU per query (user+system of all the server's threads / answered queries), and latency
# percentiles from a second run at a fixed rate below everyone's saturation. Ratios are
# against Knot, measured in the same run.
#
# Usage: bench/dns_bench.sh [-d SECONDS] [-r ROUNDS] [-Q FIXED_QPS]   (needs a release build
# and scripts/install-deps.sh --bench). Listens on 127.0.0.1:5390-5392 only.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=15 ROUNDS=3 FIXED=20000
while getopts "d:r:Q:" o; do case $o in d) DUR=$OPTARG ;; r) ROUNDS=$OPTARG ;; Q) FIXED=$OPTARG ;; *) exit 2 ;; esac; done
BIN=$PWD/build/release
for tool in dnsperf knotd nsd dig taskset; do command -v $tool >/dev/null || { echo "missing $tool: run scripts/install-deps.sh --bench" >&2; exit 1; }; done
[ -x "$BIN/src/cli/berth" ] || { echo "build first: scripts/build.sh release" >&2; exit 1; }

W=$(mktemp -d /tmp/berth-dnsbench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
declare -A PORT=([berth]=5390 [nsd]=5391 [knot]=5392)

# ---- berth ------------------------------------------------------------------------------------
python3 - "$W" <<'PY'
import sys
w = sys.argv[1]
with open(f"{w}/berth.yaml", "w") as f:
    f.write("network: {pool: 127.95.0.0/16}\ndns: {zone: berth.test, ttl: 5s, negative_ttl: 5s}\n")
    f.write("defaults: {command: sleep 3600, stop_grace: 1s}\napps:\n")
    for a in range(50): f.write(f"  app{a:02d}: {{}}\n")
    f.write("environments:\n  beta-0: {}\n")
    for e in range(1, 200): f.write(f"  beta-{e}: {{base: beta-0, deploy: changed}}\n")
PY
"$BIN/src/cli/berth" serve --data-dir "$W/berth" --listen 127.0.0.1:0 --dns-listen 127.0.0.1:${PORT[berth]} 2>"$W/berth.log" &
PIDS+=($!); BERTH_PID=$!
until [ -s "$W/berth/api.addr" ]; do sleep 0.05; done
export BERTH_ADDR=$(cat "$W/berth/api.addr") BERTH_DATA_DIR=$W/berth
"$BIN/src/cli/berth" apply -f "$W/berth.yaml" >/dev/null
"$BIN/src/cli/berth" up beta-0 -q --timeout 60s
"$BIN/src/cli/berth" status beta-0 -o json > "$W/status.json"

# ---- the same names for Knot and NSD, and the queries ---------------------------------------
python3 - "$W" <<'PY'
import json, random, sys
w = sys.argv[1]
s = json.load(open(f"{w}/status.json"))
ip = {a["app"]: a["instances"][0]["ip"] for a in s["apps"]}
names = []
with open(f"{w}/berth.test.zone", "w") as z:
    z.write("$ORIGIN berth.test.\n$TTL 5\n@ IN SOA ns.berth.test. hostmaster.berth.test. 1 60 10 600 5\n")
    z.write("@ IN NS ns.berth.test.\nns IN A 127.0.0.1\n")
    for e in range(200):
        for a in range(50):
            n = f"app{a:02d}.beta-{e}"
            z.write(f"{n} IN A {ip[f'app{a:02d}']}\n")
            names.append(n + ".berth.test")
r = random.Random(42)
with open(f"{w}/queries.txt", "w") as q:
    for i in range(200000):
        if r.randrange(100) < 10: q.write(f"nx{r.randrange(10**6)}.beta-{r.randrange(200)}.berth.test A\n")
        else: q.write(f"{r.choice(names)} A\n")
print(len(names), "names")
PY

mkdir -p "$W/knot/db" "$W/knot/run" "$W/nsd"
cat > "$W/knot/knot.conf" <<CONF
server:
    rundir: "$W/knot/run"
    listen: 127.0.0.1@${PORT[knot]}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: warning
database:
    storage: "$W/knot/db"
template:
  - id: default
    storage: "$W"
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off
zone:
  - domain: berth.test
CONF
cat > "$W/nsd/nsd.conf" <<CONF
server:
    ip-address: 127.0.0.1@${PORT[nsd]}
    port: ${PORT[nsd]}
    do-ip6: no
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "$W"
    database: ""
    zonelistfile: "$W/nsd/zone.list"
    xfrdfile: "$W/nsd/xfrd.state"
    xfrdir: "$W/nsd"
    pidfile: "$W/nsd/nsd.pid"
    logfile: "$W/nsd/nsd.log"
    verbosity: 0
    minimal-responses: yes
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: berth.test
    zonefile: berth.test.zone
CONF
knotd -c "$W/knot/knot.conf" 2>"$W/knot/log" & PIDS+=($!); KNOT_PID=$!
nsd -d -c "$W/nsd/nsd.conf" 2>"$W/nsd/log" & PIDS+=($!); NSD_PID=$!
declare -A PID=([berth]=$BERTH_PID [knot]=$KNOT_PID [nsd]=$NSD_PID)

expect=$(dig +short @127.0.0.1 -p ${PORT[knot]} app07.beta-123.berth.test A +time=1 +tries=30 2>/dev/null || true)
for s in berth knot nsd; do
  for i in $(seq 100); do
    got=$(dig +short @127.0.0.1 -p ${PORT[$s]} app07.beta-123.berth.test A +time=1 +tries=1 2>/dev/null || true)
    [ -n "$got" ] && break; sleep 0.1
  done
  [ "$got" = "$expect" ] && [ -n "$got" ] || { echo "$s answers '$got', expected '$expect'" >&2; exit 1; }
done
echo "all three answer app07.beta-123.berth.test → $expect"

tree() { local c; echo "$1"; for c in $(pgrep -P "$1" || true); do tree "$c"; done; }  # NSD's workers are grandchildren
cpu_ticks() { # user+system ticks of all threads of $1 and its descendants
  local total=0 p
  for p in $(tree "$1"); do
    for t in /proc/$p/task/*/stat; do
      # utime and stime are fields 14 and 15, counted after the command name, which may
      # contain spaces ("nsd: server 1"): count from the last ')'.
      total=$((total + $(sed 's/.*) //' "$t" 2>/dev/null | awk '{print $12 + $13}' || echo 0)))
    done
  done
  echo $total
}
pin() { local p; for p in $(tree "$1"); do taskset -a -p -c 0 "$p" >/dev/null; done; }

hz=$(getconf CLK_TCK)
: > "$W/results.csv"
for r in $(seq "$ROUNDS"); do
  for s in berth knot nsd; do
    pin "${PID[$s]}"
    c0=$(cpu_ticks "${PID[$s]}")
    taskset -c 1 dnsperf -s 127.0.0.1 -p ${PORT[$s]} -d "$W/queries.txt" -l "$DUR" -c 4 -q 100 > "$W/perf-$s-$r.txt" 2>&1
    c1=$(cpu_ticks "${PID[$s]}")
    qps=$(awk '/Queries per second/ {print $4}' "$W/perf-$s-$r.txt")
    done_q=$(awk '/Queries completed/ {print $3}' "$W/perf-$s-$r.txt")
    lost=$(awk '/Queries lost/ {print $3}' "$W/perf-$s-$r.txt")
    cpu_us=$(python3 -c "print(f'{($c1-$c0)/$hz*1e6/max(1,$done_q):.2f}')")
    # Latency at a fixed rate every server sustains.
    taskset -c 1 dnsperf -s 127.0.0.1 -p ${PORT[$s]} -d "$W/queries.txt" -l 5 -c 4 -q 100 -Q "$FIXED" -v 2>/dev/null \
      | awk '$1 == ">" {print $NF}' > "$W/lat-$s-$r.txt"
    pct=$(python3 -c "
import sys
v = sorted(float(x) for x in open('$W/lat-$s-$r.txt') if x.strip())
print(f'{v[len(v)//2]*1e6:.0f} {v[int(len(v)*0.99)]*1e6:.0f}' if v else 'nan nan')")
    echo "$r,$s,$qps,$cpu_us,$lost,$pct" | tr ' ' ',' >> "$W/results.csv"
    printf 'round %s %-6s %10s qps  %6s µs CPU/query  lost %s  p50/p99 at %s qps: %s µs\n' "$r" "$s" "$qps" "$cpu_us" "$lost" "$FIXED" "$pct"
  done
done

python3 - "$W/results.csv" <<'PY'
import csv, statistics, sys
rows = list(csv.reader(open(sys.argv[1])))
by = {}
for r, s, qps, cpu, lost, p50, p99 in rows:
    by.setdefault(s, []).append((float(qps), float(cpu), float(p50), float(p99)))
med = {s: [statistics.median(x[i] for x in v) for i in range(4)] for s, v in by.items()}
print("\nmedians over rounds (server pinned to core 0, dnsperf to core 1)")
print(f"{'server':8} {'qps':>10} {'CPU µs/q':>9} {'p50 µs':>7} {'p99 µs':>7}")
for s in ("berth", "knot", "nsd"):
    q, c, p50, p99 = med[s]
    print(f"{s:8} {q:10.0f} {c:9.2f} {p50:7.0f} {p99:7.0f}")
k = med["knot"]; b = med["berth"]; n = med["nsd"]
print(f"\nberth/knot: qps {b[0]/k[0]:.2f}x, CPU per query {b[1]/k[1]:.2f}x, p99 {b[3]/k[3]:.2f}x")
print(f"berth/nsd:  qps {b[0]/n[0]:.2f}x, CPU per query {b[1]/n[1]:.2f}x, p99 {b[3]/n[3]:.2f}x")
PY
