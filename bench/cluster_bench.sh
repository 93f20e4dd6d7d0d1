#!/usr/bin/env bash
# berth across hosts against Docker Swarm itself, in one run, on one 3-host Swarm.
#
#   sudo bench/cluster_bench.sh [-n INSTANCES] [-u APPS] [-r RUNS]
#
# The cluster: scripts/cluster.sh, three dockerds in network namespaces, one Swarm, the
# dispatcher's heartbeat 1 s (what berth sets), the demo image on every host.
#
# Failover (RUNS times, default 1): berth runs INSTANCES (default 12) single-instance apps of the
# demo service, spread over the hosts, each health-checked over HTTP; the Swarm runs two
# replicated services of INSTANCES tasks of the same image (endpoint mode dnsrr): one with
# Docker's defaults (restart delay 5 s), one with restart delay 0. Then host 2's dockerd is
# killed (host 3 in even runs), and measured from that moment:
#   berth   every instance that was on host 2 ready again (its HTTP check passed) on another
#           host, at its old address;
#   Swarm   every task of the service running again, none on host 2 (created → running; the
#           Swarm checks nothing).
# The host is then restarted (berth fences it and it joins the Swarm again) for the next run.
#
# Bring-up: the time of `berth up` for an environment of APPS (default 30) apps in 4
# dependency levels across the 3 hosts, against the same on a cluster of host 1 alone.
#
# Needs root, docker.io and jq (scripts/install-deps.sh --bench), a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
n=12 apps=30 runs=1
while getopts "n:u:r:" o; do case $o in n) n=$OPTARG ;; u) apps=$OPTARG ;; r) runs=$OPTARG ;; *) exit 2 ;; esac; done
[ "$(id -u)" -eq 0 ] || { echo "cluster_bench: needs root" >&2; exit 1; }
command -v jq >/dev/null || { echo "cluster_bench: needs jq (scripts/install-deps.sh --bench)" >&2; exit 1; }
bin=${BERTH_BUILD:-$PWD/build/release}  # BERTH_BUILD: another build tree
[ -x "$bin/src/cli/berth" ] || { echo "cluster_bench: build first (scripts/build.sh release)" >&2; exit 1; }

export BERTH_CLUSTER_NAME=berth-bcl
name=$BERTH_CLUSTER_NAME
work=$(mktemp -d /tmp/berth-cluster-bench.XXXXXX)
daemons=()
cleanup() {
  for p in "${daemons[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  ./scripts/cluster.sh stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
./scripts/cluster.sh start 3 >/dev/null
HEARTBEAT=1s ./scripts/cluster.sh swarm >/dev/null
h() { echo "unix:///run/$name-$1/docker.sock"; }
d1() { docker -H "$(h 1)" "$@"; }
DOCKER_HOST=$(h 1) ./scripts/make-images.sh "$bin/examples/shop/berth-demo-svc" >/dev/null
DOCKER_HOST=$(h 1) ./scripts/make-images.sh --sandbox "$bin/berth-pause" >/dev/null
d1 save berth-demo:latest -o "$work/demo.tar"
./scripts/cluster.sh load "$work/demo.tar" >/dev/null
image_id=$(d1 image inspect -f '{{.Id}}' berth-demo:latest)
now() { date +%s.%N; }

# ---- berth ------------------------------------------------------------------------------------
start_daemon() {  # DIR HOSTS...: a daemon on the cluster; its API address in DIR/api.addr
  local dir=$1; shift
  local args=()
  for k in "$@"; do args+=(--cluster-host "$(h "$k")"); done
  mkdir -p "$dir"
  "$bin/src/cli/berth" serve --data-dir "$dir" --listen 127.0.0.1:0 --dns-listen 127.0.0.1:0 "${args[@]}" \
    2>"$dir.log" >/dev/null &
  daemons+=($!)
  until [ -s "$dir/api.addr" ]; do kill -0 "${daemons[-1]}" || { cat "$dir.log"; exit 1; }; sleep 0.05; done
}
berth() { "$bin/src/cli/berth" --addr "$(cat "$dir/api.addr")" --token "$(cat "$dir/admin.token")" "$@"; }
env_json() { curl -sf -H "Authorization: Bearer $(cat "$dir/admin.token")" "http://$(cat "$dir/api.addr")/v1/environments/$1"; }

catalog_flat() {  # POOL N: N independent apps
  echo "network: {pool: $1}"
  echo "defaults:"
  echo "  image: berth-demo:latest"
  echo "  command: berth-demo-svc --listen \${ip}:\${port.http}"
  echo "  ports: {http: 8080}"
  echo "  health: {type: http, path: /healthcheck, start_interval: 50ms, interval: 1s, timeout: 1s, start_period: 60s}"
  echo "  stop_grace: 2s"
  echo "apps:"
  for i in $(seq 1 "$2"); do echo "  s$i: {}"; done
  echo "environments:"
  echo "  bench: {}"
}
catalog_levels() {  # POOL N: N apps in 4 levels, each depending on two of the level before
  echo "network: {pool: $1}"
  echo "defaults:"
  echo "  image: berth-demo:latest"
  echo "  command: berth-demo-svc --listen \${ip}:\${port.http}"
  echo "  ports: {http: 8080}"
  echo "  health: {type: http, path: /healthcheck, start_interval: 50ms, interval: 2s, timeout: 1s, start_period: 60s}"
  echo "  env: {DEMO_WARMUP_MS: \"300\"}"
  echo "  stop_grace: 2s"
  echo "apps:"
  local per=$(( ($2 + 3) / 4 )) i
  for i in $(seq 0 $(($2 - 1))); do
    local level=$((i / per)) deps=""
    if [ "$level" -gt 0 ]; then
      local a=$(( (level - 1) * per + i % per )) b=$(( (level - 1) * per + (i + 1) % per ))
      deps="depends_on: [a$a, a$b]"
    fi
    echo "  a$i: {$deps}"
  done
  echo "environments:"
  echo "  bench: {}"
}

# ---- failover ---------------------------------------------------------------------------------
dir=$work/failover
start_daemon "$dir" 1 2 3
catalog_flat 10.234.0.0/24 "$n" > "$work/flat.yaml"
berth apply -f "$work/flat.yaml" >/dev/null
berth up bench -q --timeout 300s
for svc in peer-default peer-fast; do
  extra=()
  [ "$svc" = peer-fast ] && extra=(--restart-delay 0s)
  d1 service create -q --name "$svc" --replicas "$n" --endpoint-mode dnsrr --stop-grace-period 2s "${extra[@]}" \
    "$image_id" berth-demo-svc --listen 0.0.0.0:8080 >/dev/null
done

sock1=/run/$name-1/docker.sock
# Seconds since the epoch of an RFC 3339 time with a fraction (berth's events, Docker's tasks).
jq_ts='def ts: capture("(?<s>[^.Z]*)(\\.(?<f>[0-9]+))?Z") | (.s + "Z" | fromdateiso8601) + ((.f // "0") | ("0." + .) | tonumber);'
node_id() { d1 node ls --format '{{.ID}} {{.Hostname}}' | awk -v h="$1" '$2 == h {print $1}'; }
tasks() { curl -sf --unix-socket "$sock1" "http://docker/v1.41/tasks?filters=$(jq -rn --arg s "$1" '{service: [$s], "desired-state": ["running"]} | @uri')"; }
swarm_ok() {  # SERVICE LOST_NODE_ID: every task running, none on the lost node
  tasks "$1" | jq -e --arg lost "$2" --argjson n "$n" '[.[] | select(.Status.State == "running" and .NodeID != $lost)] | length == $n' >/dev/null
}
swarm_done_at() {  # SERVICE LOST_NODE_ID: when its last task on another node became running
  tasks "$1" | jq -r --arg lost "$2" "$jq_ts"' [.[] | select(.Status.State == "running" and .NodeID != $lost) | .Status.Timestamp | ts] | max'
}
berth_ok() {  # LOST_HOST: every instance ready, none on the lost host
  env_json bench | jq -e --arg lost " on $1" --argjson n "$n" \
    '[.apps[].instances[] | select(.state == "ready" and ((.detail // "") | endswith($lost) | not))] | length == $n' >/dev/null
}
events() { curl -sf -H "Authorization: Bearer $(cat "$dir/admin.token")" "http://$(cat "$dir/api.addr")/v1/environments/bench/events?after=$1&limit=100000"; }
berth_done_at() {  # AFTER_ID: when the last instance became ready again
  events "$1" | jq -r "$jq_ts"' [.[] | select(.type == "ready") | .time | ts] | max'
}
addresses() { env_json bench | jq -r '.apps[] | .app as $a | .instances[] | "\($a)/\(.ordinal) \(.ip)"' | sort; }

declare -a t_berth t_default t_fast moved_counts
for r in $(seq 1 "$runs"); do
  # Hosts 2 and 3 in turn: what moved off one host in a run is on the others for the next.
  k=$(( r % 2 == 1 ? 2 : 3 ))
  lost=$name-$k
  until berth_ok "$lost-none" && swarm_ok peer-default "" && swarm_ok peer-fast ""; do sleep 0.2; done
  before=$(addresses)
  moved=$(env_json bench | jq --arg lost " on $lost" '[.apps[].instances[] | select((.detail // "") | endswith($lost))] | length')
  last_event=$(events 0 | jq 'map(.id) | max // 0')
  lost_node=$(node_id "$lost")
  # Measured from the kill to the time stamps the Swarm and berth give (polling only says when
  # both are done).
  t0=$(date +%s.%N)
  ./scripts/cluster.sh kill "$k" >/dev/null
  until berth_ok "$lost" && swarm_ok peer-default "$lost_node" && swarm_ok peer-fast "$lost_node"; do
    if [ "$(echo "$(date +%s.%N) - $t0 > 180" | bc)" -eq 1 ]; then echo "cluster_bench: no recovery within 180 s" >&2; exit 1; fi
    sleep 0.5
  done
  tb=$(echo "$(berth_done_at "$last_event") - $t0" | bc)
  td=$(echo "$(swarm_done_at peer-default "$lost_node") - $t0" | bc)
  tf=$(echo "$(swarm_done_at peer-fast "$lost_node") - $t0" | bc)
  after=$(addresses)
  [ "$before" = "$after" ] || { echo "cluster_bench: addresses changed:"; diff <(echo "$before") <(echo "$after") || true; }
  printf 'run %d: %d berth instances moved; berth %.2fs, Swarm (defaults) %.2fs, Swarm (restart delay 0) %.2fs\n' \
    "$r" "$moved" "$tb" "$td" "$tf"
  t_berth+=("$tb") t_default+=("$td") t_fast+=("$tf") moved_counts+=("$moved")
  ./scripts/cluster.sh restart "$k" >/dev/null
  # berth fences the host and joins it to the Swarm again.
  until d1 node ls --format '{{.Hostname}} {{.Status}}' | grep -q "^$lost Ready"; do sleep 0.5; done
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
mb=$(median "${t_berth[@]}") md=$(median "${t_default[@]}") mf=$(median "${t_fast[@]}")
berth down bench -q --timeout 120s
d1 service rm peer-default peer-fast >/dev/null

# ---- bring-up: 3 hosts against 1 --------------------------------------------------------------
catalog_levels 10.234.0.0/24 "$apps" > "$work/levels.yaml"  # (the same pool: the daemon's network is made once)
up_time() {
  berth apply -f "$work/levels.yaml" >/dev/null
  local t0; t0=$(now)
  berth up bench -q --timeout 600s
  echo "$(now) - $t0" | bc
  berth down bench -q --timeout 120s
}
up3=$(up_time)
dir=$work/one
start_daemon "$dir" 1
catalog_levels 10.236.0.0/24 "$apps" > "$work/levels.yaml"
up1=$(up_time)

echo
echo "3 hosts (dockerd $(d1 version -f '{{.Server.Version}}'), heartbeat 1 s), $(nproc) cores shared by all; medians over $runs run(s)"
printf '  %-58s %6.2fs\n' "berth: moved instances ready at their old addresses" "$mb"
printf '  %-58s %6.2fs  (berth %.2fx)\n' "Swarm, Docker's defaults: tasks running again" "$md" "$(echo "$mb / $md" | bc -l)"
printf '  %-58s %6.2fs  (berth %.2fx)\n' "Swarm, restart delay 0: tasks running again" "$mf" "$(echo "$mb / $mf" | bc -l)"
printf '  %-58s %6.2fs\n' "berth up, $apps apps in 4 levels, across 3 hosts" "$up3"
printf '  %-58s %6.2fs  (3 hosts %.2fx 1 host)\n' "berth up, the same on host 1 alone" "$up1" "$(echo "$up3 / $up1" | bc -l)"
