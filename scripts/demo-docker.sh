#!/usr/bin/env bash
# The demo with containers: the shop fleet (examples/shop/containers.yaml) as Docker containers,
# each on its berth address, finding the others by plain name. Starts a dockerd of its own in a
# network namespace it creates (so it never disturbs a system dockerd or the machine's network),
# builds the berth-demo image, runs `berth serve` in that namespace, brings up baseline and the
# thin beta-7 (whose orders image is built from branch feature/new-pay of its repository through
# the Engine API), shows status, a call chain and a container killed and back on its address,
# then takes everything down and stops that dockerd. Needs root. Runs on a fresh Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "demo-docker: needs root (a network namespace and a dockerd)" >&2; exit 1; }
./scripts/install-deps.sh
./scripts/build.sh release

ns=berth-demo
bin=$PWD/build/release
export PATH=$bin/src/cli:$bin/examples/shop:$PATH
work=$(mktemp -d /tmp/berth-demo-docker.XXXXXX)
data=$work/data
mkdir -p "$data"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
in_ns() { nsenter --net="/run/netns/$ns" "$@"; }
berth() { in_ns "$bin/src/cli/berth" --addr 127.0.0.1:7700 "$@"; }

./scripts/docker-netns.sh start "$ns" >/dev/null
eval "$(./scripts/docker-netns.sh env "$ns")"
export DOCKER_HOST=$BERTH_DOCKER_HOST
daemon=
cleanup() {
  for e in beta-7 baseline; do berth down "$e" -q 2>/dev/null || true; done
  [ -n "$daemon" ] && { kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; }
  ./scripts/docker-netns.sh stop "$ns" || true
}
trap cleanup EXIT

printf '\n\033[1m$ scripts/make-images.sh   # no registry here: the image is made from binaries\033[0m\n'
./scripts/make-images.sh "$bin/examples/shop/berth-demo-svc"
./scripts/make-example-repos.sh "$work/repos"   # orders' repository, with its Dockerfile
cp examples/shop/containers.yaml "$work/"

# nsenter execs berth: $! is the daemon itself.
nsenter --net="/run/netns/$ns" "$bin/src/cli/berth" serve --data-dir "$data" --listen 127.0.0.1:7700 \
  --docker-host "$DOCKER_HOST" 2>"$work/daemon.log" >/dev/null &
daemon=$!
export BERTH_DATA_DIR=$data  # the CLI reads the admin token the daemon writes there
until [ -s "$data/api.addr" ]; do
  kill -0 "$daemon" 2>/dev/null || { cat "$work/daemon.log"; exit 1; }
  sleep 0.05
done

step berth apply -f "$work/containers.yaml"
step berth up baseline
step berth up beta-7
step berth status beta-7
step berth build logs orders -e beta-7
printf '\n\033[1m$ berth exec beta-7 gateway -- curl -s http://gateway:8080/   # who answered each hop, found by plain name\033[0m\n'
chain=$(berth exec beta-7 gateway -- curl -s http://gateway:8080/)
if command -v python3 >/dev/null; then
  python3 scripts/call-chain.py "$chain"
else
  echo "$chain"
fi
step berth exec beta-7 orders -- getent hosts users   # beta-7 does not run users: baseline's
name=$(docker ps --format '{{.Names}}' | grep -- '-baseline-users-1$')
before=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}} {{.Id}}' "$name")
step docker kill "$name"
for _ in $(seq 1 100); do
  state=$(berth status baseline -o json | tr -d '\n ' | grep -o '"app":"users".*' | grep -o '"ordinal":1[^}]*"state":"[a-z]*"' | grep -o 'ready' || true)
  [ -n "$state" ] && [ "$(docker inspect -f '{{.Id}}' "$name" 2>/dev/null)" != "${before#* }" ] && break
  sleep 0.1
done
after=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}} {{.Id}}' "$name")
printf 'users#1 before: %s (container %.12s)\nusers#1 after:  %s (container %.12s)\n' "${before% *}" "${before#* }" "${after% *}" "${after#* }"
step berth events baseline
step berth down beta-7
step berth down baseline
echo
echo "demo done; the daemon's log is $work/daemon.log"
