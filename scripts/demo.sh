#!/usr/bin/env bash
# The demo: builds berth, starts the daemon on a scratch data directory, brings up the example
# shop fleet as `baseline` and `beta-7`, shows status, provenance and a call chain, then takes
# everything down. Runs on a fresh Debian 12 machine (installs what it needs with apt).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh release

bin=$PWD/build/release
export PATH=$bin/src/cli:$bin/examples/shop:$PATH
data=$(mktemp -d /tmp/berth-demo.XXXXXX)
export BERTH_ADDR=127.0.0.1:7700
export BERTH_DATA_DIR=$data  # the CLI reads the admin token the daemon writes there
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

berth serve --data-dir "$data" --listen "$BERTH_ADDR" --import-dir "$PWD/examples" 2>"$data/daemon.log" &
daemon=$!
cleanup() {
  for e in beta-7 baseline dev-anna dev-ben; do berth down "$e" -q 2>/dev/null || true; done
  kill "$daemon" 2>/dev/null || true
  wait "$daemon" 2>/dev/null || true
  # Database copies made with overlayfs stay mounted while their environment exists.
  grep -o " $data/[^ ]*" /proc/mounts | xargs -r -n1 umount -l 2>/dev/null || true
}
trap cleanup EXIT
until [ -s "$data/api.addr" ]; do
  kill -0 "$daemon" 2>/dev/null || { cat "$data/daemon.log"; exit 1; }
  sleep 0.05
done

./scripts/make-example-repos.sh examples/shop/repos   # the orders app's git repository
step berth apply -f examples/shop/berth.yaml
step berth up baseline
step berth up beta-7
step berth status beta-7
step berth config beta-7 orders
step berth build logs orders -e beta-7
gw_ip=$(berth status beta-7 -o json | tr -d '\n ' | grep -o '"app":"gateway".*' | grep -o '"ip":"[0-9.]*"' | head -1 | cut -d'"' -f4)
printf '\n\033[1m$ curl http://%s:8080/   # beta-7 gateway: who answered each hop\033[0m\n' "$gw_ip"
chain=$(curl -s "http://$gw_ip:8080/")
if command -v python3 >/dev/null; then
  python3 scripts/call-chain.py "$chain"
else
  echo "$chain"
fi
printf '\n\033[1m$ dig @127.0.0.1 -p 5353 +short users.beta-7.berth.test   # falls through to baseline\033[0m\n'
dig @127.0.0.1 -p 5353 +short users.beta-7.berth.test
printf '\n\033[1m$ dig @127.0.0.1 -p 5353 +short _http._tcp.orders.beta-7.berth.test SRV\033[0m\n'
dig @127.0.0.1 -p 5353 +short _http._tcp.orders.beta-7.berth.test SRV
step berth events beta-7
step berth down beta-7
step berth down baseline

# Standard databases: a standard imported once, a private copy per environment.
step berth db import shop --from-dump examples/shop/standard.sql
step berth apply -f examples/shop/databases.yaml
step berth up dev-anna
step berth up dev-ben
step berth status dev-anna
anna_db=$(berth status dev-anna -o json | tr -d '\n ' | grep -o '"app":"shopdb".*' | grep -o '"ip":"[0-9.]*"' | head -1 | cut -d'"' -f4)
ben_db=$(berth status dev-ben -o json | tr -d '\n ' | grep -o '"app":"shopdb".*' | grep -o '"ip":"[0-9.]*"' | head -1 | cut -d'"' -f4)
sql() { mariadb --no-defaults -h "$1" -u berth -pberth -N -e "$2"; }
printf '\n\033[1m$ # anna deletes half the orders in her copy\033[0m\n'
sql "$anna_db" "DELETE FROM orders.orders WHERE id % 2 = 0"
printf 'orders in dev-anna: %s, in dev-ben: %s\n' "$(sql "$anna_db" "SELECT COUNT(*) FROM orders.orders")" \
  "$(sql "$ben_db" "SELECT COUNT(*) FROM orders.orders")"
step berth db clone shopdb --env dev-anna
anna_db=$(berth status dev-anna -o json | tr -d '\n ' | grep -o '"app":"shopdb".*' | grep -o '"ip":"[0-9.]*"' | head -1 | cut -d'"' -f4)
printf 'orders in dev-anna after a fresh copy: %s\n' "$(sql "$anna_db" "SELECT COUNT(*) FROM orders.orders")"
step berth db versions
step berth down dev-anna
step berth down dev-ben
echo
echo "demo done; daemon log and instance logs are in $data"
