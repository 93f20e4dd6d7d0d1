#!/usr/bin/env bash
# rollout_bench.sh — one release of the 45-schema standard carried to N environments' copies:
# berth db rollout against a Flyway-style loop (the mariadb client applying the same files to
# each copy in turn), and the time to recover a copy from a migration that fails on it, all in
# one run on the same machine.
#
#   sudo bench/rollout_bench.sh [SCALE] [COPIES] [PARALLEL]   defaults 1 (app01.order_items has
#                                                               1.6M rows), 10 copies, --parallel 2
#
# Needs root (an XFS loop image, so that copies and snapshots are reflinks) and a release build.
# Everything lives under $W and is removed at the end (KEEP=1 keeps it).
#
# The release: V1 adds a column and an index to app01.order_items, V2 a new table. 2×COPIES
# environments are up, each having written a row of its own: b01.. take berth's rollout, l01..
# (rollout: none, so berth leaves them alone) the loop's, whose copies are the same reflinks of
# the same golden. Measured:
#   loop       for each l copy in turn: mariadb < V1, mariadb < V2 (what "Flyway in a loop" does)
#   rollout    berth db rollout shop --parallel PARALLEL over the b copies: per copy a snapshot
#              (reflink), the files through its running server, the snapshot dropped
#   recovery   a release whose second file fails on one copy (it made that table itself): the
#              copy's row from start to restored (snapshot, the failing apply, put back, server
#              up again), against re-cloning it from the standard (berth db clone: its data lost)
# Target (issue 12): rollout >= 3x faster than the loop at 10 copies; recovery <= 2 s per copy.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-1}
COPIES=${2:-10}
PARALLEL=${3:-2}
ROOT=$PWD
BIN=$ROOT/build/release
[ -x "$BIN/src/cli/berth" ] || { echo "build first: scripts/build.sh release" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "run as root (XFS loop image)" >&2; exit 1; }
W=${W:-/tmp/berth-rolloutbench}
export PATH=$BIN/src/cli:$PATH
now() { date +%s.%N; }
el() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
declare -A T
PIDS=()
B=(); L=()
for i in $(seq 1 "$COPIES"); do B+=("$(printf b%02d "$i")"); L+=("$(printf l%02d "$i")"); done

cleanup() {
  set +e
  [ -n "${BERTH_ADDR:-}" ] && for e in "${B[@]}" "${L[@]}"; do berth down "$e" -q 2>/dev/null; done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  mountpoint -q "$W/xfs" && umount -l "$W/xfs"
  [ "${KEEP:-0}" = 1 ] || rm -rf "$W"
}
trap cleanup EXIT
rm -rf "$W"; mkdir -p "$W/run"

echo "== the standard: 45 schemas at scale $SCALE"
mariadb-install-db --no-defaults --user=root --datadir="$W/golden" --auth-root-authentication-method=socket --skip-test-db >/dev/null
mariadbd --no-defaults --user=root --skip-log-bin --datadir="$W/golden" --socket="$W/run/golden.sock" --skip-networking \
  --innodb-buffer-pool-size=512M --log-error="$W/run/golden.err" &
GOLDEN_PID=$!; PIDS+=("$GOLDEN_PID")
until mariadb --no-defaults -uroot -S "$W/run/golden.sock" -e 'SELECT 1' >/dev/null 2>&1; do sleep 0.05; done
t=$(now)
bench/make_standard.sh --list | xargs -P2 -I{} sh -c "bench/make_standard.sh {} $SCALE | mariadb --no-defaults -uroot -S $W/run/golden.sock"
echo "built in $(el "$t") s: $(du -sh "$W/golden" | cut -f1)," \
  "$(mariadb --no-defaults -uroot -S "$W/run/golden.sock" -N -e 'SELECT COUNT(*) FROM app01.order_items') rows in app01.order_items"

size_mb=$(du -sm "$W/golden" | cut -f1)
truncate -s $(( size_mb * 8 + 8192 ))M "$W/xfs.img"; mkfs.xfs -q -f -m reflink=1 "$W/xfs.img"
mkdir -p "$W/xfs"; mount -o loop "$W/xfs.img" "$W/xfs"
berth serve --data-dir "$W/data" --db-dir "$W/xfs/db" --import-dir "$W" --listen 127.0.0.1:0 --dns-listen "" 2>"$W/daemon.log" &
PIDS+=($!)
until [ -s "$W/data/api.addr" ]; do sleep 0.05; done
export BERTH_ADDR=$(cat "$W/data/api.addr") BERTH_DATA_DIR=$W/data
{
  echo "network: {pool: 127.121.0.0/24}"
  echo "databases:"
  echo "  shopdb:"
  echo "    standard: shop"
  echo "    options: {innodb_buffer_pool_size: 128M}"
  echo "environments:"
  for e in "${B[@]}"; do echo "  $e: {}"; done
  for e in "${L[@]}"; do echo "  $e: {apps: {shopdb: {rollout: none}}}"; done
} > "$W/berth.yaml"
berth apply -f "$W/berth.yaml" >/dev/null
berth db import shop --from-server "$W/run/golden.sock" --user root -q
kill "$GOLDEN_PID"; wait "$GOLDEN_PID" 2>/dev/null || true

ip_of() { berth status "$1" -o json | tr -d ' \n' | grep -o '"app":"shopdb".*' | grep -o '"ip":"[0-9.]*"' | head -1 | cut -d'"' -f4; }
sql() { mariadb --no-defaults --protocol=TCP -h "$(ip_of "$1")" -u berth -pberth -N -e "$2"; }
echo "== $((COPIES * 2)) environments up, each writing a row of its own"
t=$(now)
for e in "${B[@]}" "${L[@]}"; do berth up "$e" -q; sql "$e" "INSERT INTO app01.order_items VALUES (99000000, 1, 'OWN-$e', 1, 1.00)"; done
echo "up in $(el "$t") s ($(berth status b01 | grep shopdb | grep -o 'v1 ([^)]*)'))"

mkdir -p "$W/release"
cat > "$W/release/V1__order_items_refunds.sql" <<'SQL'
ALTER TABLE app01.order_items ADD COLUMN refund_state VARCHAR(10) NOT NULL DEFAULT 'none', ADD INDEX k_qty_price (qty, unit_price);
SQL
cat > "$W/release/V2__refunds.sql" <<'SQL'
CREATE TABLE app01.refunds (id BIGINT UNSIGNED PRIMARY KEY, item_id BIGINT UNSIGNED NOT NULL, amount DECIMAL(10,2) NOT NULL,
  created_at DATETIME NOT NULL, KEY k_item (item_id)) ENGINE=InnoDB;
SQL
echo "== the release (berth's rehearsal on a copy of the golden, then sealed as version 2)"
t=$(now); berth db release shop --from "$W/release" -q; T[release]=$(el "$t"); echo "${T[release]} s"

echo "== the loop: mariadb < each file, one copy after the other (${L[*]})"
t=$(now)
for e in "${L[@]}"; do
  ip=$(ip_of "$e")
  for f in "$W"/release/V1__*.sql "$W"/release/V2__*.sql; do
    mariadb --no-defaults --protocol=TCP -h "$ip" -u berth -pberth < "$f"
  done
done
T[loop]=$(el "$t"); echo "${T[loop]} s"

echo "== berth db rollout shop --parallel $PARALLEL (${B[*]})"
t=$(now); berth db rollout shop --parallel "$PARALLEL" > "$W/rollout.txt" || true; T[rollout]=$(el "$t")
cat "$W/rollout.txt"; echo "${T[rollout]} s"
applied=$(grep -c ' applied ' "$W/rollout.txt" || true)
[ "$applied" -eq "$COPIES" ] || { echo "only $applied of $COPIES copies applied" >&2; exit 1; }
for e in b01 l01; do
  echo "$e: $(sql "$e" "SELECT CONCAT(COUNT(*), ' rows, own row ', SUM(sku = 'OWN-$e'), ', refund_state ', MIN(refund_state)) FROM app01.order_items")"
done

echo "== recovery: a release whose second file fails on b01 (it made that table itself)"
sql b01 "CREATE TABLE app01.returns (id INT PRIMARY KEY)"
mkdir -p "$W/release3"; cp "$W"/release/*.sql "$W/release3/"
cat > "$W/release3/V3__returns.sql" <<'SQL'
ALTER TABLE app01.order_items ADD COLUMN returned TINYINT NOT NULL DEFAULT 0;
CREATE TABLE app01.returns (id BIGINT UNSIGNED PRIMARY KEY, item_id BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB;
SQL
berth db release shop --from "$W/release3" -q
berth db rollout shop --canary b01 > "$W/recover.txt" || true
cat "$W/recover.txt"
T[recover]=$(awk '$1 == "b01" && / restored / { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9.]+(ms|s)$/) { v = $i; break } } END {
  if (v ~ /ms$/) { sub(/ms$/, "", v); v /= 1000 } else sub(/s$/, "", v); printf "%.2f", v }' "$W/recover.txt")
until sql b01 "SELECT 1" >/dev/null 2>&1; do sleep 0.1; done  # (its server starting again on the put-back copy)
echo "b01 after: $(sql b01 "SELECT CONCAT('own row ', SUM(sku = 'OWN-b01'), ', returned column ', (SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = 'app01' AND column_name = 'returned')) FROM app01.order_items")"
t=$(now); berth db clone shopdb --env b02 -q; T[reclone]=$(el "$t")
echo "re-clone of b02 from the standard: ${T[reclone]} s; its own row: $(sql b02 "SELECT COUNT(*) FROM app01.order_items WHERE sku = 'OWN-b02'")"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
echo
echo "== results (scale $SCALE, $(du -sh "$W/golden" | cut -f1) data directory, $COPIES copies, $(nproc) cores)"
printf '%-46s %8s\n' "release (rehearsal on the golden, seal, upload)" "${T[release]}"
printf '%-46s %8s\n' "loop: mariadb < files, copy after copy" "${T[loop]}"
printf '%-46s %8s   loop / rollout = %s  (target >= 3x)\n' "berth db rollout --parallel $PARALLEL" "${T[rollout]}" "$(ratio "${T[loop]}" "${T[rollout]}")"
printf '%-46s %8s   (target <= 2 s)\n' "berth: a failed copy back as it was" "${T[recover]}"
printf '%-46s %8s   (its data lost)\n' "re-clone from the standard" "${T[reclone]}"
