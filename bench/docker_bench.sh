#!/usr/bin/env bash
# Containers brought up by berth and by docker-compose, in one run, on one dockerd.
#
#   sudo bench/docker_bench.sh [-r RUNS]
#
# The fleet: 12 container apps in 4 dependency levels (4, 3, 3, 2 apps), each the berth-demo
# image, each healthy 300 ms after it starts. Measured: time from the command to every
# container healthy —
#   berth             berth up (health: HTTP from the daemon, first probe at once, 50 ms apart)
#   compose default   docker-compose 1.29 up -d with depends_on: condition: service_healthy and
#                     the same check (curl in the container) at Docker's default timing
#                     (interval 30s: the first check runs one interval after the start)
#   compose 1s        the same with interval: 1s
# and berth's cost against the bare Engine API calls it makes (curl on the socket, the 12 create+
# start pairs at once, no health checks, no dependencies): 12 independent apps without a health
# check, berth up versus those calls — the lower bound of any tool driving this dockerd. Every method runs RUNS times (default 1), alternating; medians are
# printed with the ratios. Needs root; the dockerd is its own, in a network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=1
while getopts "r:" o; do case $o in r) runs=$OPTARG ;; *) exit 2 ;; esac; done
[ "$(id -u)" -eq 0 ] || { echo "docker_bench: needs root" >&2; exit 1; }
command -v docker-compose >/dev/null || { echo "docker_bench: needs docker-compose (scripts/install-deps.sh --bench)" >&2; exit 1; }
bin=$PWD/build/release
[ -x "$bin/src/cli/berth" ] || { echo "docker_bench: build first (scripts/build.sh release)" >&2; exit 1; }

ns=berth-bench
./scripts/docker-netns.sh start "$ns" >/dev/null
eval "$(./scripts/docker-netns.sh env "$ns")"
export DOCKER_HOST=$BERTH_DOCKER_HOST
sock=${DOCKER_HOST#unix://}
work=$(mktemp -d /tmp/berth-docker-bench.XXXXXX)
daemon=
cleanup() {
  [ -n "$daemon" ] && { kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; }
  ./scripts/docker-netns.sh stop "$ns" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
./scripts/make-images.sh "$bin/examples/shop/berth-demo-svc" >/dev/null
image_id=$(docker image inspect -f '{{.Id}}' berth-demo:latest)

now() { date +%s.%N; }
in_ns() { nsenter --net="/run/netns/$ns" "$@"; }
berth() { in_ns "$bin/src/cli/berth" --addr 127.0.0.1:7790 "$@"; }
api() { curl -sf --unix-socket "$sock" "$@"; }

# ---- the fleet --------------------------------------------------------------------------------
levels=("a1 a2 a3 a4" "b1 b2 b3" "c1 c2 c3" "d1 d2")
declare -A deps=([b1]="a1 a2" [b2]="a2 a3" [b3]="a4" [c1]="b1" [c2]="b2 b3" [c3]="b1 b3" [d1]="c1 c2" [d2]="c3")
all="${levels[*]}"

{
  echo "network: {pool: 10.90.0.0/16}"
  echo "defaults:"
  echo "  image: berth-demo:latest"
  echo "  command: berth-demo-svc --listen \${ip}:\${port.http}"
  echo "  ports: {http: 8080}"
  echo "  health: {type: http, path: /healthcheck, start_interval: 50ms, interval: 2s, timeout: 1s}"
  echo "  env: {DEMO_WARMUP_MS: \"300\"}"
  echo "  stop_grace: 2s"
  echo "apps:"
  for a in $all; do
    if [ -n "${deps[$a]:-}" ]; then echo "  $a: {depends_on: [$(echo ${deps[$a]} | sed 's/ /, /g')]}"; else echo "  $a: {}"; fi
  done
  echo "environments:"
  echo "  bench: {}"
} > "$work/berth.yaml"
# The same 12 apps with no health check and no dependencies: berth's own cost per container.
{
  echo "network: {pool: 10.90.0.0/16}"
  echo "defaults:"
  echo "  image: berth-demo:latest"
  echo "  command: berth-demo-svc --listen \${ip}:\${port.http}"
  echo "  ports: {http: 8080}"
  echo "  stop_grace: 2s"
  echo "apps:"
  for a in $all; do echo "  $a: {}"; done
  echo "environments:"
  echo "  bench: {}"
} > "$work/flat.yaml"

compose_file() {  # compose_file INTERVAL (empty: Docker's default timing)
  echo 'version: "2.4"'
  echo "services:"
  for a in $all; do
    echo "  $a:"
    echo "    image: $image_id"
    echo "    command: [berth-demo-svc, --listen, \"0.0.0.0:8080\"]"
    echo "    environment: {DEMO_WARMUP_MS: \"300\", BERTH_APP: $a}"
    echo "    stop_grace_period: 2s"
    echo "    healthcheck:"
    echo "      test: [CMD, curl, -sf, -m, \"1\", \"http://localhost:8080/healthcheck\"]"
    echo "      timeout: 1s"
    [ -n "$1" ] && echo "      interval: $1"
    if [ -n "${deps[$a]:-}" ]; then
      echo "    depends_on:"
      for d in ${deps[$a]}; do echo "      $d: {condition: service_healthy}"; done
    fi
  done
}
compose_file "" > "$work/compose-default.yml"
compose_file 1s > "$work/compose-1s.yml"

# ---- methods ----------------------------------------------------------------------------------
mkdir -p "$work/data"
# nsenter execs berth: $! is the daemon itself.
nsenter --net="/run/netns/$ns" "$bin/src/cli/berth" serve --data-dir "$work/data" --listen 127.0.0.1:7790 \
  --dns-listen 127.0.0.1:0 --docker-host "$DOCKER_HOST" 2>"$work/daemon.log" >/dev/null &
daemon=$!
export BERTH_DATA_DIR=$work/data
until [ -s "$work/data/api.addr" ]; do kill -0 "$daemon" || { cat "$work/daemon.log"; exit 1; }; sleep 0.05; done

run_berth() {  # CATALOG → seconds from `berth up` to every instance ready
  berth apply -f "$1" >/dev/null
  local t0 t1; t0=$(now)
  berth up bench -q --timeout 300s
  t1=$(now)
  berth down bench -q --timeout 120s
  echo "$t1 - $t0" | bc
}

all_healthy() {  # every compose container healthy
  local ids; ids=$(api "http://docker/containers/json?filters=%7B%22label%22%3A%5B%22com.docker.compose.project%3Dbench%22%5D%7D" |
                   grep -o '"Id":"[0-9a-f]*"' | cut -d'"' -f4)
  [ "$(echo "$ids" | grep -c .)" -eq 12 ] || return 1
  for id in $ids; do api "http://docker/containers/$id/json" | grep -q '"Status":"healthy"' || return 1; done
}
run_compose() {  # FILE → seconds to every container healthy
  local t0 t1; t0=$(now)
  docker-compose -p bench -f "$1" up -d >/dev/null 2>"$work/compose.err" || { cat "$work/compose.err" >&2; return 1; }
  until all_healthy; do sleep 0.05; done
  t1=$(now)
  docker-compose -p bench -f "$1" down -t 2 >/dev/null 2>&1
  echo "$t1 - $t0" | bc
}

bare_one() {  # NAME IP: create and start one container, nothing else
  local id
  id=$(api -X POST -H 'Content-Type: application/json' \
    -d "{\"Image\":\"$image_id\",\"Cmd\":[\"berth-demo-svc\",\"--listen\",\"$2:8080\"],\"HostConfig\":{\"NetworkMode\":\"bare\"},\"NetworkingConfig\":{\"EndpointsConfig\":{\"bare\":{\"IPAMConfig\":{\"IPv4Address\":\"$2\"}}}}}" \
    "http://docker/containers/create?name=bare-$1" | grep -o '"Id":"[0-9a-f]*"' | cut -d'"' -f4)
  api -X POST "http://docker/containers/$id/start" >/dev/null
}
run_bare() {  # the 12 Engine API create+start calls all at once (as berth starts independent apps), no checks
  api -X POST -H 'Content-Type: application/json' -d '{"Name":"bare","IPAM":{"Config":[{"Subnet":"10.91.0.0/16"}]}}' \
    http://docker/networks/create >/dev/null
  local t0 t1 i=2; t0=$(now)
  for a in $all; do
    bare_one "$a" "10.91.0.$i" &
    i=$((i + 1))
  done
  wait
  t1=$(now)
  for a in $all; do api -X DELETE "http://docker/containers/bare-$a?force=1" >/dev/null; done
  api -X DELETE http://docker/networks/bare >/dev/null
  echo "$t1 - $t0" | bc
}

median() { sort -n | awk '{v[NR]=$1} END {if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
declare -A times
for r in $(seq 1 "$runs"); do
  echo "run $r/$runs"
  t=$(run_berth "$work/berth.yaml");             times[berth]+="$t "; echo "  berth up (12 apps, 4 levels)    ${t}s"
  t=$(run_compose "$work/compose-1s.yml");       times[c1]+="$t ";    echo "  compose, interval 1s           ${t}s"
  t=$(run_compose "$work/compose-default.yml");  times[cdef]+="$t ";  echo "  compose, default health timing ${t}s"
  t=$(run_berth "$work/flat.yaml");              times[flat]+="$t ";  echo "  berth up (12 apps, no checks)  ${t}s"
  t=$(run_bare);                                 times[bare]+="$t ";  echo "  bare create+start loop         ${t}s"
done
m() { echo ${times[$1]} | tr ' ' '\n' | grep . | median; }
b=$(m berth); c1=$(m c1); cd=$(m cdef); f=$(m flat); bare=$(m bare)
echo
echo "medians over $runs run(s), this machine ($(nproc) cores), dockerd $(docker version -f '{{.Server.Version}}' 2>/dev/null)"
printf '  %-44s %7.2fs\n' "berth: 12 apps, 4 levels, all healthy" "$b"
printf '  %-44s %7.2fs  (%.1fx berth)\n' "docker-compose, healthcheck interval 1s" "$c1" "$(echo "$c1 / $b" | bc -l)"
printf '  %-44s %7.2fs  (%.1fx berth)\n' "docker-compose, Docker's default timing" "$cd" "$(echo "$cd / $b" | bc -l)"
printf '  %-44s %7.2fs\n' "berth: 12 apps, no checks or dependencies" "$f"
printf '  %-44s %7.2fs  (berth %.2fx the lower bound: %.0f ms vs %.0f ms a container)\n' "bare Engine API create+start, 12 at once" \
  "$bare" "$(echo "$f / $bare" | bc -l)" "$(echo "$f * 1000 / 12" | bc -l)" "$(echo "$bare * 1000 / 12" | bc -l)"
