#!/usr/bin/env bash
# dbclone_bench.sh — time to a private copy of a 45-schema standard that answers a query on its
# largest table: berth (warm clone; cold restore from Swift) against mariadb-dump + import,
# tar.gz and tar.zst of the same data directory, all in one run on the same machine.
#
#   sudo bench/dbclone_bench.sh [SCALE]      SCALE 1 ≈ 2 GB data directory (default), 0.05 ≈ CI-sized
#
# Needs root (an XFS loop image for reflink copies, dropping the page cache before cold runs),
# scripts/install-deps.sh --bench (zstd, pigz) and a release build. Starts its own Swift
# (scripts/swift.sh) unless one answers on 127.0.0.1:8080. Everything lives under $W and is
# removed at the end (KEEP=1 keeps it).
#
# Measured, each from nothing to `SELECT COUNT(*) FROM app01.order_items` answering:
#   berth warm     berth db clone into a fresh environment: reflink copy of this host's golden, start, health, query
#   berth cold     the same with no golden on the host: restored from Swift first (parallel fetch, verify)
#   dump+import    fresh mariadb-install-db, start, load the mariadb-dump file, query (the dump itself not timed)
#   tar.gz         gzip -dc | tar x of the golden, start, query (archive made beforehand, not timed)
#   tar.zst        zstd -T0 -dc | tar x, start, query
#   swift tar.gz   curl GET of the tar.gz from the same Swift | gzip -dc | tar x, start, query
# Peers' servers run with the options berth's copies run with. Targets (issue 5): berth warm ≥ 80×
# faster than dump+import and ≤ 2 s; berth cold ≥ 3× faster than swift tar.gz.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-1}
ROOT=$PWD
BIN=$ROOT/build/release
[ -x "$BIN/src/cli/berth" ] || { echo "build first: scripts/build.sh release" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "run as root (XFS loop image, drop_caches)" >&2; exit 1; }
W=${W:-/tmp/berth-dbbench}
export PATH=$BIN/src/cli:$PATH
OPTS=(--no-defaults --user=root --skip-name-resolve --skip-log-bin --innodb-buffer-pool-size=512M
      --innodb-buffer-pool-load-at-startup=OFF --innodb-buffer-pool-dump-at-shutdown=OFF)
now() { date +%s.%N; }
el() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
declare -A T
PIDS=()

cleanup() {
  set +e
  [ -n "${BERTH_ADDR:-}" ] && for e in w1 w2 w3 c1; do berth down "$e" -q 2>/dev/null; done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  mountpoint -q "$W/xfs" && umount -l "$W/xfs"
  [ "${KEEP:-0}" = 1 ] || rm -rf "$W"
  [ "${STARTED_SWIFT:-0}" = 1 ] && "$ROOT/scripts/swift.sh" stop
}
trap cleanup EXIT
rm -rf "$W"; mkdir -p "$W/run"

# start_server NAME DATADIR: a peer's server on a socket; waits until it answers.
start_server() {
  mariadbd "${OPTS[@]}" --datadir="$2" --socket="$W/run/$1.sock" --pid-file="$W/run/$1.pid" --skip-networking \
    --log-error="$W/run/$1.err" &
  echo $! > "$W/run/$1.mypid"; PIDS+=("$(cat "$W/run/$1.mypid")")
  until mariadb --no-defaults -uroot -S "$W/run/$1.sock" -e 'SELECT 1' >/dev/null 2>&1; do
    kill -0 "$(cat "$W/run/$1.mypid")" 2>/dev/null || { tail "$W/run/$1.err"; exit 1; }
    sleep 0.02
  done
}
stop_server() { local p; p=$(cat "$W/run/$1.mypid"); kill "$p"; while kill -0 "$p" 2>/dev/null; do sleep 0.05; done; }
count() { mariadb --no-defaults -uroot -S "$W/run/$1.sock" -N -e 'SELECT COUNT(*) FROM app01.order_items'; }
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }

echo "== the standard: 45 schemas at scale $SCALE"
mariadb-install-db --no-defaults --user=root --datadir="$W/golden" --auth-root-authentication-method=socket --skip-test-db >/dev/null
start_server golden "$W/golden"
t=$(now)
bench/make_standard.sh --list | xargs -P2 -I{} sh -c "bench/make_standard.sh {} $SCALE | mariadb --no-defaults -uroot -S $W/run/golden.sock"
echo "built in $(el "$t") s: $(du -sh "$W/golden" | cut -f1) data directory, $(count golden) rows in app01.order_items"
mariadb-dump --no-defaults -uroot -S "$W/run/golden.sock" --single-transaction --routines --triggers --events --quick \
  --databases $(bench/make_standard.sh --list) > "$W/all.sql"

echo "== Swift and an XFS (reflink=1) image for berth's --db-dir"
if ! curl -sf http://127.0.0.1:8080/healthcheck >/dev/null; then "$ROOT/scripts/swift.sh" start; STARTED_SWIFT=1; fi
size_mb=$(du -sm "$W/golden" | cut -f1)
truncate -s $(( size_mb * 6 + 4096 ))M "$W/xfs.img"; mkfs.xfs -q -f -m reflink=1 "$W/xfs.img"
mkdir -p "$W/xfs"; mount -o loop "$W/xfs.img" "$W/xfs"
berth serve --data-dir "$W/data" --db-dir "$W/xfs/db" --listen 127.0.0.1:0 --dns-listen "" \
  --blob-store "swift://test:tester:testing@127.0.0.1:8080/dbbench$$" 2>"$W/daemon.log" &
PIDS+=($!)
until [ -s "$W/data/api.addr" ]; do sleep 0.05; done
export BERTH_ADDR=$(cat "$W/data/api.addr") BERTH_DATA_DIR=$W/data
cat > "$W/berth.yaml" <<YAML
network: {pool: 127.120.0.0/24}
databases:
  shopdb:
    standard: shop
    options: {innodb_buffer_pool_size: 512M}
environments:
  w1: {}
  w2: {}
  w3: {}
  c1: {}
YAML
berth apply -f "$W/berth.yaml" >/dev/null
t=$(now)
berth db import shop --from-server "$W/run/golden.sock" --user root
T[import]=$(el "$t")
stop_server golden

berth_count() {  # $1 = env
  local ip; ip=$(berth status "$1" -o json | tr -d ' \n' | grep -o '"app":"shopdb".*' | grep -o '"ip":"[0-9.]*"' | head -1 | cut -d'"' -f4)
  mariadb --no-defaults --protocol=TCP -h "$ip" -u berth -pberth -N -e 'SELECT COUNT(*) FROM app01.order_items'
}
echo "== berth warm: a fresh environment's copy (golden on this host)"
for e in w1 w2 w3; do
  t=$(now); berth up "$e" -q; c=$(berth_count "$e"); T[warm_$e]=$(el "$t")
  echo "$e: ${T[warm_$e]} s (rows $c; $(berth status "$e" | grep shopdb | grep -o 'v1 ([^)]*)'))"
done
echo "timeline of w2 (berth events):"; berth events w2 | cut -c1-140 | sed 's/^/  /'
warm=$(printf '%s\n' "${T[warm_w1]}" "${T[warm_w2]}" "${T[warm_w3]}" | sort -n | sed -n 2p)

echo "== berth cold: no golden on this host, restored from Swift"
golden_dir=$(ls -d "$W"/xfs/db/golden/shop@1)
cp -a --reflink=always "$golden_dir" "$W/xfs/peer-src"   # the same bytes for the archive peers
rm -rf "$golden_dir"
cold
t=$(now); berth up c1 -q; c=$(berth_count c1); T[cold]=$(el "$t")
echo "c1: ${T[cold]} s (rows $c; $(berth status c1 | grep shopdb | grep -o 'v1 ([^)]*)'))"
echo "timeline of c1 (berth events):"; berth events c1 | cut -c1-140 | sed 's/^/  /' 

echo "== dump + import"
mariadb-install-db --no-defaults --user=root --datadir="$W/p" --auth-root-authentication-method=socket --skip-test-db >/dev/null
rm -rf "$W/p"; cold
t=$(now)
mariadb-install-db --no-defaults --user=root --datadir="$W/p" --auth-root-authentication-method=socket --skip-test-db >/dev/null
start_server p "$W/p"; mariadb --no-defaults -uroot -S "$W/run/p.sock" < "$W/all.sql"; c=$(count p); T[dump]=$(el "$t")
stop_server p; rm -rf "$W/p"; echo "${T[dump]} s (rows $c)"

echo "== tar.gz and tar.zst of the same data directory"
(cd "$W/xfs/peer-src" && tar -cf - . | gzip -6 > "$W/golden.tar.gz")
(cd "$W/xfs/peer-src" && tar -cf - . | zstd -q -T0 -3 -o "$W/golden.tar.zst")
for kind in gz zst; do
  mkdir -p "$W/p"; cold; t=$(now)
  if [ $kind = gz ]; then gzip -dc "$W/golden.tar.gz" | tar -xf - -C "$W/p"; else zstd -q -T0 -dc "$W/golden.tar.zst" | tar -xf - -C "$W/p"; fi
  start_server p "$W/p"; c=$(count p); T[tar_$kind]=$(el "$t"); stop_server p; rm -rf "$W/p"
  echo "tar.$kind: ${T[tar_$kind]} s (rows $c)"
done

echo "== tar.gz downloaded from the same Swift"
read -r url tok < <(curl -si -H 'X-Auth-User: test:tester' -H 'X-Auth-Key: testing' http://127.0.0.1:8080/auth/v1.0 |
  tr -d '\r' | awk '/^X-Storage-Url:/{u=$2} /^X-Auth-Token:/{t=$2} END{print u, t}')
curl -sf -X PUT -H "X-Auth-Token: $tok" "$url/dbbench-tar$$" >/dev/null
curl -sf -T "$W/golden.tar.gz" -H "X-Auth-Token: $tok" "$url/dbbench-tar$$/golden.tar.gz" >/dev/null
mkdir -p "$W/p"; cold; t=$(now)
curl -sf -H "X-Auth-Token: $tok" "$url/dbbench-tar$$/golden.tar.gz" | gzip -dc | tar -xf - -C "$W/p"
start_server p "$W/p"; c=$(count p); T[swift_tar]=$(el "$t"); stop_server p; rm -rf "$W/p"
echo "swift tar.gz: ${T[swift_tar]} s (rows $c)"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fx", a / b }'; }
echo
echo "== results (scale $SCALE, $(du -sh "$W/xfs/peer-src" | cut -f1) data directory; seconds to a copy answering the query)"
printf '%-34s %8s\n' "berth import (mariadb-backup+upload)" "${T[import]}"
printf '%-34s %8s   dump+import / berth warm = %s  (target >= 80x)\n' "berth warm clone (median of 3)" "$warm" "$(ratio "${T[dump]}" "$warm")"
printf '%-34s %8s   swift tar.gz / berth cold = %s  (target >= 3x)\n' "berth cold restore from Swift" "${T[cold]}" "$(ratio "${T[swift_tar]}" "${T[cold]}")"
printf '%-34s %8s\n' "mariadb-dump + import" "${T[dump]}" "tar.gz extract" "${T[tar_gz]}" "tar.zst extract" "${T[tar_zst]}" \
  "tar.gz from Swift" "${T[swift_tar]}"
printf 'berth warm vs tar.gz %s, vs tar.zst %s\n' "$(ratio "${T[tar_gz]}" "$warm")" "$(ratio "${T[tar_zst]}" "$warm")"
