#!/usr/bin/env bash
# Create the example fleet's source repositories under DIR (default examples/shop/repos):
#   orders   main: VERSION 1.4.0;  feature/new-pay: VERSION 2.0-new-pay
# The build (build.sh BUILD_TYPE) leaves out/orders, a launcher that runs berth-demo-svc
# reporting "<VERSION>+<build_type>", so which commit and build an instance runs is visible
# in its answers. Its Dockerfile makes an image of that launcher on top of berth-demo
# (scripts/make-images.sh), for the fleet as containers (examples/shop/containers.yaml).
# Idempotent: an existing repository is left as it is.
set -euo pipefail
dir=${1:-$(dirname "$0")/../examples/shop/repos}
repo=$dir/orders
[ -d "$repo/.git" ] && exit 0
mkdir -p "$repo"
cd "$repo"
git init -q -b main
git config user.email demo@berth.test
git config user.name "berth demo"
cat > build.sh <<'SH'
#!/bin/sh
# Build the orders service for build type $1.
set -e
mkdir -p out
version="$(cat VERSION)+$1"
printf '#!/bin/sh\nexec berth-demo-svc --version "%s" "$@"\n' "$version" > out/orders
chmod +x out/orders
echo "built orders $version"
SH
chmod +x build.sh
cat > Dockerfile <<'DOCKERFILE'
# The orders service as an image: the launcher build.sh made, on the demo image.
FROM berth-demo:latest
COPY out/orders /usr/local/bin/orders
CMD ["/usr/local/bin/orders"]
DOCKERFILE
echo 1.4.0 > VERSION
git add -A
git commit -q -m "orders 1.4.0"
git checkout -q -b feature/new-pay
echo 2.0-new-pay > VERSION
git commit -q -am "orders: new payment flow"
git checkout -q main
