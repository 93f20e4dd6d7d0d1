#!/usr/bin/env bash
# A Docker Swarm of berth's own, for the cluster tests and benchmarks: N hosts on this machine,
# each a dockerd in a network namespace of its own, joined by a bridge in a hub namespace.
# Nothing is attached to the machine's own network namespace, and the namespaces have no default
# route: all traffic stays between them (and their unix sockets, reached as files).
#   scripts/cluster.sh start [N]    the hub and N hosts (default 3), each dockerd answering.
#                                   Idempotent. Prints each host's socket.
#   scripts/cluster.sh swarm        host 1 creates the Swarm, the others join it (as workers;
#                                   ROLE=manager: as managers). HEARTBEAT=1s sets the dispatcher
#                                   heartbeat. Prints `docker node ls`.
#   scripts/cluster.sh load FILE    `docker load` of a saved image into every host.
#   scripts/cluster.sh kill K       SIGKILL of host K's dockerd (a crashed host, as the Swarm sees
#                                   it; its containers' processes stay until it restarts).
#   scripts/cluster.sh restart K    host K's dockerd started again.
#   scripts/cluster.sh cut K        host K's link to the hub down (a host cut off by the network);
#   scripts/cluster.sh heal K       and up again.
#   scripts/cluster.sh env          BERTH_CLUSTER_HOSTS=unix://...,unix://... (host 1 first)
#   scripts/cluster.sh stop         every dockerd (and what it runs), namespace and directory that
#                                   start made, gone; the Swarm with them.
# BERTH_CLUSTER_NAME (default berth-cl) prefixes every namespace and directory, so that two
# clusters can exist at once. BERTH_CLUSTER_DOCKERD_ARGS (default none): more flags for every
# host's dockerd, split on spaces (e.g. --insecure-registry 10.231.0.11:5000); read when a dockerd
# starts (start, restart). Needs root and the docker.io package (scripts/install-deps.sh).
# Pitfalls met on this machine (shared/reference/swarm-netns.sh found them): dockerd must be
# started with `nsenter --net` (`ip netns exec` remounts /sys and hides the cgroup mounts); a
# Swarm service must name its image by ID, or every task first waits 20 s for a registry; this
# kernel has no IPVS (services need `--endpoint-mode dnsrr`) and no ESP (no encrypted overlays).
set -euo pipefail
cmd=${1:-}
name=${BERTH_CLUSTER_NAME:-berth-cl}
hub=$name-hub
net=10.231.0             # the hosts' link: host K is $net.(10+K)/24

run_of() { echo "/run/$name-$1"; }
sock_of() { echo "$(run_of "$1")/docker.sock"; }
data_of() { echo "/var/lib/$name-$1"; }
addr_of() { echo "$net.$((10 + $1))"; }
d() { local k=$1; shift; docker -H "unix://$(sock_of "$k")" "$@"; }
answering() { curl -sf --max-time 2 --unix-socket "$(sock_of "$1")" http://docker/_ping >/dev/null 2>&1; }
# The hosts start made, in order.
hosts() { ls /run/netns 2>/dev/null | sed -n "s/^$name-\([0-9][0-9]*\)\$/\1/p" | sort -n; }

start_dockerd() {
  local k=$1 run data
  run=$(run_of "$k") data=$(data_of "$k")
  mkdir -p "$run/exec" "$data"
  # Its own hostname (the Swarm names nodes by it), its own docker0 and local-network pool.
  unshare --uts sh -c "hostname $name-$k; exec nsenter --net=/run/netns/$name-$k dockerd \
      --data-root $data --exec-root $run/exec --pidfile $run/dockerd.pid -H unix://$run/docker.sock \
      --bip 172.30.$k.1/24 --default-address-pool base=10.240.0.0/16,size=24 \
      --storage-driver overlay2 --userland-proxy=false ${BERTH_CLUSTER_DOCKERD_ARGS:-}" >>"$run/dockerd.log" 2>&1 </dev/null &
}

wait_dockerd() {
  local k=$1
  for _ in $(seq 1 300); do answering "$k" && return 0; sleep 0.1; done
  echo "cluster: host $k's dockerd did not come up; see $(run_of "$k")/dockerd.log" >&2
  tail -20 "$(run_of "$k")/dockerd.log" >&2
  return 1
}

start() {
  local n=${1:-3}
  [ "$n" -ge 1 ] && [ "$n" -le 200 ] || { echo "cluster: between 1 and 200 hosts, not '$n'" >&2; exit 2; }
  if [ ! -e "/run/netns/$hub" ]; then
    ip netns add "$hub"
    ip netns exec "$hub" ip link set lo up
    ip netns exec "$hub" ip link add br0 type bridge
    ip netns exec "$hub" ip link set br0 up
  fi
  for k in $(seq 1 "$n"); do
    if [ ! -e "/run/netns/$name-$k" ]; then
      ip netns add "$name-$k"
      ip netns exec "$name-$k" ip link set lo up
      ip netns exec "$hub" ip link add "veth$k" type veth peer name eth0 netns "$name-$k"
      ip netns exec "$hub" ip link set "veth$k" master br0 up
      ip netns exec "$name-$k" ip addr add "$(addr_of "$k")/24" dev eth0
      ip netns exec "$name-$k" ip link set eth0 up
    fi
    answering "$k" || start_dockerd "$k"
  done
  for k in $(seq 1 "$n"); do
    wait_dockerd "$k"
    echo "$(sock_of "$k")"
  done
}

swarm() {
  local all; all=$(hosts)
  [ -n "$all" ] || { echo "cluster: no hosts; run '$0 start' first" >&2; exit 1; }
  if [ "$(d 1 info -f '{{.Swarm.LocalNodeState}}')" != active ]; then
    d 1 swarm init --advertise-addr "$(addr_of 1)" --listen-addr "$(addr_of 1):2377" \
      ${HEARTBEAT:+--dispatcher-heartbeat "$HEARTBEAT"} >/dev/null
  elif [ -n "${HEARTBEAT:-}" ]; then
    d 1 swarm update --dispatcher-heartbeat "$HEARTBEAT" >/dev/null
  fi
  local token; token=$(d 1 swarm join-token -q "${ROLE:-worker}")
  for k in $all; do
    [ "$k" = 1 ] && continue
    [ "$(d "$k" info -f '{{.Swarm.LocalNodeState}}')" = active ] && continue
    d "$k" swarm join --token "$token" --advertise-addr "$(addr_of "$k")" --listen-addr "$(addr_of "$k"):2377" \
      "$(addr_of 1):2377" >/dev/null
  done
  d 1 node ls
}

load() {
  local file=${1:?usage: $0 load FILE}
  for k in $(hosts); do d "$k" load -q -i "$file" >/dev/null; done
}

pid_of() { cat "$(run_of "$1")/dockerd.pid" 2>/dev/null; }

kill_host() { kill -KILL "$(pid_of "${1:?usage: $0 kill K}")"; }

restart() {
  local k=${1:?usage: $0 restart K}
  answering "$k" || start_dockerd "$k"
  wait_dockerd "$k"
}

link() { ip netns exec "$hub" ip link set "veth${1:?usage: $0 cut|heal K}" "$2"; }

env_line() {
  local list=""
  for k in $(hosts); do list+="${list:+,}unix://$(sock_of "$k")"; done
  echo "BERTH_CLUSTER_HOSTS=$list"
}

stop() {
  local k pid
  # A host whose dockerd was killed still has its containers' processes: start it again so that
  # it reaps them itself, then every container goes, the Swarm is left, and dockerd stops.
  for k in $(hosts); do
    [ -d "$(data_of "$k")" ] && ! answering "$k" && { start_dockerd "$k"; wait_dockerd "$k" || true; }
    ip netns exec "$hub" ip link set "veth$k" up 2>/dev/null || true
  done
  for k in $(hosts); do
    answering "$k" || continue
    d "$k" ps -aq | xargs -r docker -H "unix://$(sock_of "$k")" rm -f >/dev/null 2>&1 || true
    d "$k" swarm leave --force >/dev/null 2>&1 || true
  done
  for k in $(hosts); do
    pid=$(pid_of "$k") || continue
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  for k in $(hosts); do
    grep -E " ($(data_of "$k")|$(run_of "$k"))[/ ]" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l || true
    ip netns del "$name-$k" 2>/dev/null || true
    rm -rf "$(run_of "$k")" "$(data_of "$k")"
  done
  ip netns del "$hub" 2>/dev/null || true
}

case "$cmd" in
  start) start "${2:-3}" ;;
  swarm) swarm ;;
  load) load "${2:-}" ;;
  kill) kill_host "${2:-}" ;;
  restart) restart "${2:-}" ;;
  cut) link "${2:-}" down ;;
  heal) link "${2:-}" up ;;
  env) env_line ;;
  stop) stop ;;
  *) sed -n 2,26p "$0"; exit 2 ;;
esac
