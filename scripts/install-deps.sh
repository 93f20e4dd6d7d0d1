#!/usr/bin/env bash
# Install everything berth needs to build, test, fuzz and benchmark, from Debian 12 packages.
# Idempotent: apt is only asked when something is missing.
set -euo pipefail

packages=(
  build-essential cmake ninja-build g++ clang libclang-rt-14-dev lld
  libboost-dev libboost-system-dev nlohmann-json3-dev libyaml-cpp-dev libsqlite3-dev
  libcli11-dev libfmt-dev libgtest-dev libgmock-dev libbenchmark-dev
  curl openssl procps iproute2 bind9-dnsutils libc-ares-dev libzstd-dev libssl-dev libcurl4-openssl-dev zlib1g-dev git
  libjemalloc-dev  # the daemon's allocator (CMakeLists.txt: BERTH_JEMALLOC)
  # Real servers the integration tests run against: MariaDB (standard databases) and an
  # OpenStack Swift all-in-one with s3api (blob stores; scripts/swift.sh), XFS for reflink clones.
  mariadb-server mariadb-client mariadb-backup
  swift swift-proxy swift-account swift-container swift-object memcached xfsprogs
  # Containers: a dockerd of berth's own in a network namespace (scripts/docker-netns.sh).
  docker.io iptables
  # The web UI's browser tests: Debian's Chromium, driven by playwright-core (npm).
  chromium
)
# The web UI is built with the machine's Node.js and npm (Node 18 or later); Debian's when
# there is none.
command -v npm >/dev/null || packages+=(nodejs npm)
# Peers the benchmarks measure berth against (scripts/install-deps.sh --bench).
if [ "${1:-}" = "--bench" ]; then
  packages+=(dnsperf knot nsd zstd pigz docker-compose jq docker-registry)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The web UI's packages, exactly as locked (web/package-lock.json); npm's cache makes later runs
# offline. Skipped when node_modules matches the lock already.
web=$(cd "$(dirname "$0")/.." && pwd)/web
if ! cmp -s "$web/package-lock.json" "$web/node_modules/.berth-lock" 2>/dev/null; then
  (cd "$web" && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.berth-lock)
fi
