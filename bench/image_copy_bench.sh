#!/usr/bin/env bash
# Two ways of getting a Docker image to every host of a cluster without an outside registry, on
# one 3-host cluster of this machine:
#
#   sudo bench/image_copy_bench.sh [-r RUNS] [-m BASE_MB] [-z]
#
#   save/load  what berth does (cluster::Swarm::distribute_image): the Engine API's
#              GET /images/get?names=IMAGE on host 1 into a file, then POST /images/load of that
#              file on hosts 2 and 3 at once.
#   registry   Debian's docker-registry (distribution 2.x, filesystem storage in a temporary
#              directory, no auth, plain HTTP) in host 1's network namespace on 10.231.0.11:5000;
#              `docker push` from host 1, then `docker pull` on hosts 2 and 3 at once. The
#              dockerds are started with --insecure-registry 10.231.0.11:5000
#              (BERTH_CLUSTER_DOCKERD_ARGS of scripts/cluster.sh).
#
# Cases, each RUNS times (default 3), the median printed:
#   small    the demo image (scripts/make-images.sh, about 35 MB), to hosts that have nothing;
#   base     the demo image plus BASE_MB (default 265) of random bytes in one imported layer, to
#            hosts that have nothing (the registry empty too); with -z, BASE_MB of this machine's
#            own /usr/lib and /usr/bin files instead, which compress as a real base image's do;
#   rebuild  a new image built on host 1 FROM base, whose only new layer is a changed app binary
#            (berth-demo-svc with a few new bytes), to hosts that already have base, got the same
#            way (the registry holds base already; save/load still ships the whole tar).
# Measured per run: the wall time from the start (the save, or the tag and push) until hosts 2
# and 3 both have the image under the same id as host 1 (checked); the CPU time of every process
# involved (the three dockerds and their containerds, the registry, curl and the docker CLI);
# the bytes sent to hosts 2 and 3 (save/load: the tar once per host; registry: what the hub's
# links carried to them) and, for the registry, the bytes pushed to it (host 1's loopback).
# Random bytes do not compress: the registry's gzip (on push) costs CPU and saves nothing on them.
#
# Network: only between the cluster's namespaces (scripts/cluster.sh); the registry listens on
# host 1's address inside its namespace. Needs root, docker.io, docker-registry, curl, bc, and
# berth-demo-svc from a release build (BERTH_BUILD, default build/release). Everything it starts
# runs under nice; cluster, registry and files are removed at the end (trap).
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
runs=3 base_mb=265 filler=random
while getopts "r:m:z" o; do case $o in r) runs=$OPTARG ;; m) base_mb=$OPTARG ;; z) filler=usr ;; *) exit 2 ;; esac; done
[ "$(id -u)" -eq 0 ] || { echo "image_copy_bench: needs root" >&2; exit 1; }
registry_bin=/usr/bin/docker-registry
[ -x "$registry_bin" ] || { echo "image_copy_bench: needs the docker-registry package (apt-get install docker-registry)" >&2; exit 1; }
for c in docker curl bc nsenter; do command -v $c >/dev/null || { echo "image_copy_bench: needs $c" >&2; exit 1; }; done
bin=${BERTH_BUILD:-$PWD/build/release}  # BERTH_BUILD: another build tree
svc=$bin/examples/shop/berth-demo-svc
[ -x "$svc" ] || { echo "image_copy_bench: no $svc; build first (scripts/build.sh release)" >&2; exit 1; }

export BERTH_CLUSTER_NAME=berth-img
name=$BERTH_CLUSTER_NAME
reg_addr=10.231.0.11:5000  # host 1 (scripts/cluster.sh: host K is 10.231.0.(10+K))
export BERTH_CLUSTER_DOCKERD_ARGS="--insecure-registry $reg_addr"
work=$(mktemp -d /tmp/berth-image-bench.XXXXXX)
reg_pid=""
stop_registry() {
  [ -n "$reg_pid" ] || return 0
  kill "$reg_pid" 2>/dev/null || true
  wait "$reg_pid" 2>/dev/null || true
  reg_pid=""
}
cleanup() {
  stop_registry
  ./scripts/cluster.sh stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
nice -n 10 ./scripts/cluster.sh start 3 >/dev/null  # the dockerds (and containerds) inherit it
sock() { echo "/run/$name-$1/docker.sock"; }
d() { local k=$1; shift; docker -H "unix://$(sock "$k")" "$@"; }
api() { local k=$1; shift; curl -sf --unix-socket "$(sock "$k")" "$@"; }
now() { date +%s.%N; }
id_on() { d "$1" image inspect -f '{{.Id}}' "$2" 2>/dev/null || true; }

# ---- the registry -----------------------------------------------------------------------------
# Debian's /etc/docker/registry/config.yml asks for htpasswd auth and listens on every address
# of the root namespace: this one has neither.
cat > "$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog: {disabled: true}
storage:
  filesystem: {rootdirectory: $work/registry}
  delete: {enabled: true}
http:
  addr: $reg_addr
  secret: image-copy-bench
EOF
start_registry() {  # empty
  stop_registry
  rm -rf "$work/registry"
  mkdir -p "$work/registry"
  nice -n 10 nsenter --net="/run/netns/$name-1" "$registry_bin" serve "$work/registry.yml" >>"$work/registry.log" 2>&1 &
  reg_pid=$!
  for _ in $(seq 1 100); do
    nsenter --net="/run/netns/$name-1" curl -sf --max-time 1 "http://$reg_addr/v2/" >/dev/null && return 0
    sleep 0.1
  done
  echo "image_copy_bench: the registry did not come up:" >&2; cat "$work/registry.log" >&2; exit 1
}

# ---- the images, built on host 1 --------------------------------------------------------------
DOCKER_HOST=unix://$(sock 1) nice ./scripts/make-images.sh "$svc" bench-small:latest >/dev/null
mkdir -p "$work/root/opt/data"
d 1 export "$(d 1 create bench-small:latest)" | tar -x -C "$work/root"
d 1 rm -f "$(d 1 ps -aq)" >/dev/null
if [ "$filler" = random ]; then
  head -c $((base_mb << 20)) /dev/urandom
else
  find /usr/lib /usr/bin -type f -print0 | sort -z | xargs -0 cat 2>/dev/null | head -c $((base_mb << 20)) || true
fi | split -b 16M -a 3 - "$work/root/opt/data/blob"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/root" -cf "$work/base.tar" .
rm -rf "$work/root"
d 1 import -c 'ENV PATH=/usr/local/bin:/bin' -c 'CMD ["/usr/local/bin/berth-demo-svc"]' \
  "$work/base.tar" bench-base:latest >/dev/null
rm -f "$work/base.tar"
build_app() {  # TAG: base plus a changed app binary, a Dockerfile build on host 1
  local ctx=$work/app
  rm -rf "$ctx"; mkdir -p "$ctx"
  cp "$svc" "$ctx/berth-demo-svc"
  echo "$1 $(now)" >> "$ctx/berth-demo-svc"  # (a new binary: its layer is new)
  printf 'FROM bench-base:latest\nCOPY berth-demo-svc /usr/local/bin/berth-demo-svc\n' > "$ctx/Dockerfile"
  DOCKER_BUILDKIT=0 d 1 build -q -t "$1" "$ctx" >/dev/null 2>"$work/build.err" || { cat "$work/build.err" >&2; exit 1; }
  rm -rf "$ctx"
}
mb() { echo "scale=1; $1 / 1000000" | bc; }  # (MB as docker counts them)
size_of() { d 1 image inspect -f '{{.Size}}' "$1"; }

# ---- what is measured --------------------------------------------------------------------------
# CPU seconds so far of the three dockerds (with their containerd and any process they waited
# for), the registry, and this script's waited-for children (curl, docker).
hz=$(getconf CLK_TCK)
ticks() { awk '{s += $14 + $15 + $16 + $17} END {print s + 0}' "$@" 2>/dev/null || echo 0; }
cpu_now() {
  local files=() k pid c
  for k in 1 2 3; do
    pid=$(cat "/run/$name-$k/dockerd.pid")
    files+=("/proc/$pid/stat")
    for c in $(cat "/proc/$pid/task/"*/children 2>/dev/null); do files+=("/proc/$c/stat"); done
  done
  [ -n "$reg_pid" ] && files+=("/proc/$reg_pid/stat")
  # (this shell's own time is not the copy's: only its children's, fields 16 and 17)
  echo "$(ticks "${files[@]}") + $(awk '{print $16 + $17}' "/proc/$$/stat")" | bc
}
# Bytes so far: the hub's links towards hosts 2 and 3 (what they received), and host 1's
# loopback (the push to the registry beside it).
netns_bytes() { ip netns exec "$1" cat "/sys/class/net/$2/statistics/$3"; }
to_hosts_now() { echo "$(netns_bytes "$name-hub" veth2 tx_bytes) + $(netns_bytes "$name-hub" veth3 tx_bytes)" | bc; }
pushed_now() { netns_bytes "$name-1" lo tx_bytes; }

wipe_targets() {  # hosts 2 and 3 without any image
  for k in 2 3; do d "$k" image prune -af >/dev/null; done
}
check_ids() {  # IMAGE NAME_ON_TARGETS: hosts 2 and 3 have it under host 1's id
  local want got k
  want=$(id_on 1 "$1")
  for k in 2 3; do
    got=$(id_on "$k" "$2")
    [ "$got" = "$want" ] || { echo "image_copy_bench: host $k has '$got' for $2, host 1 has $want" >&2; exit 1; }
  done
}

# One copy; sets wall, first (save or push), cpu, sent (bytes to hosts 2 and 3), pushed.
copy_saveload() {  # IMAGE
  local image=$1 t0 t1 c0 k pids=() tar=$work/image.tar
  sync
  c0=$(cpu_now) t0=$(now)
  api 1 -o "$tar" "http://docker/images/get?names=$image"
  t1=$(now)
  for k in 2 3; do
    api "$k" -X POST -T "$tar" -H 'Content-Type: application/x-tar' -o "$work/load$k.out" \
      "http://docker/images/load?quiet=1" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  for k in 2 3; do
    if grep -q '"error' "$work/load$k.out"; then echo "image_copy_bench: load on host $k: $(cat "$work/load$k.out")" >&2; exit 1; fi
  done
  check_ids "$image" "$image"
  wall=$(echo "$(now) - $t0" | bc) first=$(echo "$t1 - $t0" | bc)
  cpu=$(echo "($(cpu_now) - $c0) / $hz" | bc -l)
  sent=$(( $(stat -c %s "$tar") * 2 )) pushed=0
  rm -f "$tar" "$work"/load*.out
}
copy_registry() {  # IMAGE
  local image=$1 ref=$reg_addr/$1 t0 t1 c0 n0 p0 k pids=()
  sync
  c0=$(cpu_now) n0=$(to_hosts_now) p0=$(pushed_now) t0=$(now)
  d 1 tag "$image" "$ref"
  d 1 push -q "$ref" >/dev/null
  t1=$(now)
  for k in 2 3; do d "$k" pull -q "$ref" >/dev/null & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p"; done
  check_ids "$image" "$ref"
  wall=$(echo "$(now) - $t0" | bc) first=$(echo "$t1 - $t0" | bc)
  cpu=$(echo "($(cpu_now) - $c0) / $hz" | bc -l)
  sent=$(( $(to_hosts_now) - n0 )) pushed=$(( $(pushed_now) - p0 ))
}

median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
declare -A res  # CASE,METHOD,QUANTITY → the median
measure() {  # CASE METHOD PREPARE IMAGE_OF: RUNS copies; PREPARE R before each, IMAGE_OF R names the image
  local case=$1 method=$2 prepare=$3 image_of=$4 r img
  local -a walls firsts cpus sents pusheds
  for r in $(seq 1 "$runs"); do
    "$prepare" "$r"
    img=$("$image_of" "$r")
    "copy_$method" "$img"
    printf '  %-8s %-9s run %d: %6.2fs (%s %.2fs), CPU %6.2fs, %7s MB to hosts 2+3, %7s MB pushed\n' \
      "$case" "$method" "$r" "$wall" "$([ "$method" = registry ] && echo push || echo save)" "$first" "$cpu" \
      "$(mb "$sent")" "$(mb "$pushed")" >&2
    walls+=("$wall") firsts+=("$first") cpus+=("$cpu") sents+=("$sent") pusheds+=("$pushed")
  done
  res[$case,$method,wall]=$(median "${walls[@]}") res[$case,$method,first]=$(median "${firsts[@]}")
  res[$case,$method,cpu]=$(median "${cpus[@]}") res[$case,$method,sent]=$(median "${sents[@]}")
  res[$case,$method,pushed]=$(median "${pusheds[@]}")
}

# first copies: nothing on hosts 2 and 3, an empty registry
fresh_saveload() { wipe_targets; }
fresh_registry() { wipe_targets; start_registry; }
small_image() { echo bench-small:latest; }
base_image() { echo bench-base:latest; }
for method in saveload registry; do
  measure small "$method" "fresh_$method" small_image
  measure base "$method" "fresh_$method" base_image
done
# the rebuild: base on hosts 2 and 3 (and in the registry) the same way, a new app image each run
app_image() { echo "bench-app:r$1"; }
rebuild_saveload() {
  if [ "$1" = 1 ]; then wipe_targets; copy_saveload bench-base:latest; fi
  build_app "bench-app:r$1"
}
rebuild_registry() {
  if [ "$1" = 1 ]; then wipe_targets; start_registry; copy_registry bench-base:latest; fi
  build_app "bench-app:r$1"
}
for method in saveload registry; do measure rebuild "$method" "rebuild_$method" app_image; done

ratio() { echo "${res[$1,registry,$2]} / ${res[$1,saveload,$2]}" | bc -l; }
echo
echo "3 hosts (dockerd $(d 1 version -f '{{.Server.Version}}'), docker-registry $("$registry_bin" --version | awk '{print $3}')), \
$(nproc) cores shared by all; base filled with $filler bytes; medians over $runs run(s)"
printf '  %-36s %-10s %8s %12s %8s %11s %10s\n' "case" "way" "wall s" "save|push s" "CPU s" "MB to 2+3" "MB pushed"
for case in small base rebuild; do
  case $case in
    small) label="small, first copy ($(mb "$(size_of bench-small:latest)") MB)" ;;
    base) label="base, first copy ($(mb "$(size_of bench-base:latest)") MB)" ;;
    rebuild) label="rebuild: base + new app layer" ;;
  esac
  printf '  %-36s %-10s %8.2f %12.2f %8.2f %11s %10s\n' "$label" save/load "${res[$case,saveload,wall]}" \
    "${res[$case,saveload,first]}" "${res[$case,saveload,cpu]}" "$(mb "${res[$case,saveload,sent]}")" -
  printf '  %-36s %-10s %8.2f %12.2f %8.2f %11s %10s\n' "" registry "${res[$case,registry,wall]}" \
    "${res[$case,registry,first]}" "${res[$case,registry,cpu]}" "$(mb "${res[$case,registry,sent]}")" \
    "$(mb "${res[$case,registry,pushed]}")"
  printf '  %-36s %-10s %7.2fx %12s %7.2fx %10.2fx\n' "" "reg/s-l" "$(ratio "$case" wall)" "" "$(ratio "$case" cpu)" \
    "$(ratio "$case" sent)"
done
