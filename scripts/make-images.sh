#!/usr/bin/env bash
# Build berth's test and demo image without a registry: a root filesystem made of
# berth-demo-svc and the few programs the examples and tests use inside containers (sh,
# getent, curl), each with the shared libraries ldd names, imported with `docker import`.
#   scripts/make-images.sh DEMO_SVC [TAG]    TAG defaults to berth-demo:latest
# DOCKER_HOST names the dockerd (e.g. unix:///run/berth-docker/docker.sock). Idempotent: an
# image of the same contents is not imported again (its content hash is a tag of its own).
#   scripts/make-images.sh --mariadb [TAG]   the image database servers run from in containers
#                                            (berth serve --db-image; a cluster's default): this
#                                            host's mariadbd and mariadb client with their
#                                            libraries, /usr/share/mysql and sh, as user mysql
#                                            (999:999, who owns the volumes berth fills); TAG
#                                            defaults to berth-mariadb:latest
#   scripts/make-images.sh --sandbox BERTH_PAUSE [TAG]
#                                            a cluster's sandbox image (runtime/cluster): the
#                                            static berth-pause alone, as /pause; TAG defaults
#                                            to berth-pause:latest
set -euo pipefail
if [ "${1:-}" = --sandbox ]; then
  pause=${2:?usage: make-images.sh --sandbox PATH/TO/berth-pause [TAG]}
  tag=${3:-berth-pause:latest}
  : "${DOCKER_HOST:?set DOCKER_HOST to the dockerd to build in}"
  root=$(mktemp -d /tmp/berth-sandbox.XXXXXX)
  trap 'rm -rf "$root" "$root.tar"' EXIT
  install -m 0755 "$pause" "$root/pause"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$root.tar" .
  sum=$(sha256sum "$root.tar" | cut -c1-12)
  repo=${tag%%:*}
  if ! docker image inspect "$repo:$sum" >/dev/null 2>&1; then
    docker import -c 'CMD ["/pause"]' "$root.tar" "$repo:$sum" >/dev/null
  fi
  docker tag "$repo:$sum" "$tag"
  echo "$tag"
  exit 0
fi
if [ "${1:-}" = --mariadb ]; then
  tag=${2:-berth-mariadb:latest}
  : "${DOCKER_HOST:?set DOCKER_HOST to the dockerd to build in}"
  command -v mariadbd >/dev/null || PATH=$PATH:/usr/sbin
  command -v mariadbd >/dev/null || { echo "make-images: mariadbd is missing (apt-get install mariadb-server)" >&2; exit 1; }
  root=$(mktemp -d /tmp/berth-mariadb.XXXXXX)
  trap 'rm -rf "$root" "$root.tar"' EXIT
  add() {  # add BINARY DEST: the program and every library it loads
    install -D -m 0755 "$1" "$root$2"
    for lib in $(ldd "$1" | grep -o '/[^ ]*' | sort -u); do
      [ -e "$root$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
    done
  }
  add "$(command -v mariadbd)" /usr/sbin/mariadbd
  add "$(command -v mariadb)" /usr/bin/mariadb
  add /bin/dash /bin/sh
  mkdir -p "$root/usr/share/mysql" "$root/etc" "$root/tmp" "$root/var/lib/mysql" "$root/run/mysqld"
  cp -a /usr/share/mysql/charsets /usr/share/mysql/english "$root/usr/share/mysql/"
  chmod 1777 "$root/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nmysql:x:999:999:MariaDB:/var/lib/mysql:/bin/sh\n' > "$root/etc/passwd"
  printf 'root:x:0:\nmysql:x:999:\n' > "$root/etc/group"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$root.tar" --exclude=./var/lib/mysql --exclude=./run/mysqld .
  tar --mtime=@0 --owner=999 --group=999 --numeric-owner -C "$root" -rf "$root.tar" ./var/lib/mysql ./run/mysqld
  sum=$(sha256sum "$root.tar" | cut -c1-12)
  repo=${tag%%:*}
  if ! docker image inspect "$repo:$sum" >/dev/null 2>&1; then
    docker import -c 'ENV PATH=/usr/sbin:/usr/bin:/bin' -c 'USER 999:999' -c 'CMD ["/usr/sbin/mariadbd", "--no-defaults"]' \
      "$root.tar" "$repo:$sum" >/dev/null
  fi
  docker tag "$repo:$sum" "$tag"
  echo "$tag ($repo:$sum)"
  exit 0
fi
svc=${1:?usage: make-images.sh PATH/TO/berth-demo-svc [TAG]}
tag=${2:-berth-demo:latest}
: "${DOCKER_HOST:?set DOCKER_HOST to the dockerd to build in}"
docker=(docker)
command -v docker >/dev/null || { echo "make-images: the docker CLI is missing (docker.io)" >&2; exit 1; }

root=$(mktemp -d /tmp/berth-image.XXXXXX)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/usr/local/bin" "$root/etc" "$root/tmp" "$root/data"
chmod 1777 "$root/tmp"
add() {  # add BINARY [DEST]: the program and every library it loads
  local bin=$1 dest=${2:-/bin/$(basename "$1")}
  install -D -m 0755 "$bin" "$root$dest"
  for lib in $(ldd "$bin" | grep -o '/[^ ]*' | sort -u); do
    [ -e "$root$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
  done
}
add "$svc" /usr/local/bin/berth-demo-svc
add /bin/dash /bin/sh
for p in getent curl cat sleep ls; do add "$(command -v $p)"; done
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"

tarball=$root.tar
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$tarball" .
sum=$(sha256sum "$tarball" | cut -c1-12)
trap 'rm -rf "$root" "$tarball"' EXIT
repo=${tag%%:*}
if ! "${docker[@]}" image inspect "$repo:$sum" >/dev/null 2>&1; then
  "${docker[@]}" import -c 'ENV PATH=/usr/local/bin:/bin' -c 'CMD ["/usr/local/bin/berth-demo-svc"]' "$tarball" "$repo:$sum" >/dev/null
fi
"${docker[@]}" tag "$repo:$sum" "$tag"
echo "$tag ($repo:$sum)"
