#!/usr/bin/env bash
# A dockerd of berth's own, inside a network namespace this script creates, so that nothing it
# does (bridges, iptables, container traffic) touches the machine's own network, and a system
# dockerd, if any, is never disturbed.
#   scripts/docker-netns.sh start [NAME]   netns NAME (default berth-docker) with loopback only;
#                                          dockerd with its own data-root, exec-root and socket,
#                                          no default bridge. Idempotent. Prints the socket.
#   scripts/docker-netns.sh stop [NAME]    stops dockerd (and what it runs), removes the netns
#                                          and every directory start made.
#   scripts/docker-netns.sh env [NAME]     prints BERTH_DOCKER_NETNS=... BERTH_DOCKER_HOST=...
# Programs that talk to containers (berth serve, tests) run in the namespace too:
#   nsenter --net=/run/netns/NAME berth serve --docker-host unix:///run/NAME/docker.sock ...
# Needs root and the docker.io package (scripts/install-deps.sh).
set -euo pipefail
cmd=${1:-}
name=${2:-berth-docker}
run=/run/$name                 # socket, pid file, exec-root
data=${BERTH_DOCKER_DATA:-/var/lib/$name}
sock=$run/docker.sock
log=$run/dockerd.log

answering() { curl -sf --unix-socket "$sock" http://docker/_ping >/dev/null 2>&1; }

start() {
  if answering; then echo "$sock"; return 0; fi
  [ -e "/run/netns/$name" ] || ip netns add "$name"
  ip netns exec "$name" ip link set lo up
  mkdir -p "$run/exec" "$data"
  # nsenter --net, not `ip netns exec`: the latter remounts /sys and hides the cgroup mounts
  # dockerd needs. No default bridge and no default route: nothing can leave the namespace.
  nsenter --net="/run/netns/$name" dockerd --data-root "$data" --exec-root "$run/exec" --pidfile "$run/dockerd.pid" \
    -H "unix://$sock" --bridge=none --storage-driver overlay2 --userland-proxy=false \
    >>"$log" 2>&1 < /dev/null &
  for _ in $(seq 1 150); do answering && break; sleep 0.1; done
  answering || { echo "docker-netns: dockerd did not come up; see $log" >&2; tail -20 "$log" >&2; exit 1; }
  echo "$sock"
}

stop() {
  if [ -f "$run/dockerd.pid" ]; then
    pid=$(cat "$run/dockerd.pid")
    # Containers first, so nothing they hold stays mounted.
    if answering; then
      for c in $(curl -sf --unix-socket "$sock" 'http://docker/containers/json?all=1' | grep -o '"Id":"[0-9a-f]*"' | cut -d'"' -f4); do
        curl -sf --unix-socket "$sock" -X DELETE "http://docker/containers/$c?force=1" >/dev/null || true
      done
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  grep -E " ($data|$run)[/ ]" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  ip netns del "$name" 2>/dev/null || true
  rm -rf "$run" "$data"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  env) echo "BERTH_DOCKER_NETNS=/run/netns/$name BERTH_DOCKER_HOST=unix://$sock" ;;
  *) sed -n 2,14p "$0"; exit 2 ;;
esac
