#!/usr/bin/env bash
# An OpenStack Swift all-in-one on loopback for berth's Swift and S3 stores (tests, benchmarks).
#   scripts/swift.sh start   proxy on 127.0.0.1:${SWIFT_PORT:-8080}: tempauth test:tester/testing,
#                            s3api (SigV4, path style), SLO; storage servers on 6200-6202;
#                            memcached on 11211. Idempotent: returns at once when it answers.
#   scripts/swift.sh stop    stops what start started and removes its directory.
# Everything lives under $SWIFT_DIR (default /tmp/berth-swift); /etc/swift is not touched. The
# device is a plain directory (no loop mount needed). Debian packages: scripts/install-deps.sh --swift.
set -euo pipefail
S=${SWIFT_DIR:-/tmp/berth-swift}
PORT=${SWIFT_PORT:-8080}
ETC=$S/etc NODE=$S/node RUN=$S/run LOG=$S/log

healthy() { curl -sf "http://127.0.0.1:$PORT/healthcheck" >/dev/null 2>&1; }

write_confs() {
  mkdir -p "$ETC" "$RUN" "$LOG" "$NODE/d1"
  cat > "$ETC/swift.conf" <<CONF
[swift-hash]
swift_hash_path_suffix = berth-test-suffix
swift_hash_path_prefix = berth-test-prefix
[storage-policy:0]
name = Policy-0
default = yes
[swift-constraints]
CONF
  for spec in object:6200 container:6201 account:6202; do
    local t=${spec%:*} p=${spec#*:}
    cat > "$ETC/$t-server.conf" <<CONF
[DEFAULT]
devices = $NODE
mount_check = false
bind_ip = 127.0.0.1
bind_port = $p
workers = 1
user = swift
swift_dir = $ETC
log_name = $t-server
[pipeline:main]
pipeline = healthcheck $t-server
[app:$t-server]
use = egg:swift#$t
[filter:healthcheck]
use = egg:swift#healthcheck
[$t-replicator]
[$t-auditor]
[$t-updater]
CONF
  done
  # s3api before tempauth; slo after auth (s3api's multipart uploads use SLO underneath).
  cat > "$ETC/proxy-server.conf" <<CONF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $PORT
workers = 2
user = swift
swift_dir = $ETC
log_name = proxy-server
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk s3api tempauth copy slo dlo proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
allow_account_management = true
account_autocreate = true
[filter:s3api]
use = egg:swift#s3api
location = us-east-1
[filter:tempauth]
use = egg:swift#tempauth
user_admin_admin = admin .admin .reseller_admin
user_test_tester = testing .admin
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:11211
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
CONF
}

make_rings() {
  ( cd "$ETC"
    for spec in object:6200 container:6201 account:6202; do
      local t=${spec%:*} p=${spec#*:}
      swift-ring-builder "$t.builder" create 10 1 1 >/dev/null
      swift-ring-builder "$t.builder" add "r1z1-127.0.0.1:$p/d1" 100 >/dev/null
      swift-ring-builder "$t.builder" rebalance >/dev/null
    done )
}

start() {
  if healthy; then echo "swift: already answering on 127.0.0.1:$PORT"; return 0; fi
  rm -rf "$S"
  write_confs
  make_rings
  chown -R swift:swift "$NODE" "$RUN"
  if ! pgrep -x memcached >/dev/null; then
    memcached -u memcache -l 127.0.0.1 -p 11211 -m 64 -U 0 >"$LOG/memcached.log" 2>&1 &
    echo $! > "$RUN/memcached.pid"
  fi
  for t in object container account proxy; do
    setsid "swift-$t-server" "$ETC/$t-server.conf" -v >"$LOG/$t.log" 2>&1 < /dev/null &
    echo $! > "$RUN/$t.pid"
  done
  for _ in $(seq 1 300); do healthy && break; sleep 0.1; done
  healthy || { echo "swift: the proxy did not come up; see $LOG" >&2; tail -20 "$LOG/proxy.log" >&2; exit 1; }
  # The first authenticated request creates the account.
  for _ in $(seq 1 100); do
    curl -sf -H 'X-Auth-User: test:tester' -H 'X-Auth-Key: testing' "http://127.0.0.1:$PORT/auth/v1.0" >/dev/null && break
    sleep 0.1
  done
  echo "swift: answering on 127.0.0.1:$PORT (tempauth test:tester/testing, s3api)"
}

stop() {
  for t in proxy account container object memcached; do
    [ -f "$RUN/$t.pid" ] || continue
    local pid; pid=$(cat "$RUN/$t.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$S"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) sed -n 2,9p "$0"; exit 1 ;;
esac
