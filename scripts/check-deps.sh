#!/usr/bin/env bash
# The architecture rule, checked: a component includes only the components it may use (the
# table in docs/ARCHITECTURE.md), and an interface never includes an implementation. Each line
# below is: component folder, then the include prefixes it may use besides its own folder
# (and system and library headers). Exits 1 naming every include that breaks the rule.
set -euo pipefail
cd "$(dirname "$0")/../src"
rules=(
  "base|"
  "model|base/ db/profile/"
  "db/profile|base/"
  "net/ipam|base/ model/"
  "net/dns|base/"
  "store|base/ model/ net/ipam/ipam.h"
  "store/sqlite|base/ model/ net/ipam/ipam.h store/store.h"
  "store/fault|base/ model/ net/ipam/ipam.h store/store.h"
  "build|base/"
  "health|base/ model/"
  "runtime|base/"
  "runtime/process|base/ runtime/runtime.h"
  "runtime/sim|base/ runtime/runtime.h"
  "engine|base/"
  "cluster|base/ model/constraint.h"
  "k8s|base/ model/"
  "cluster/swarm|base/ cluster/cluster.h engine/"
  "runtime/docker|base/ runtime/runtime.h engine/"
  "runtime/cluster|base/ runtime/runtime.h runtime/docker/docker_runtime.h engine/ cluster/"
  "blob|base/"
  "blob/http|base/"
  "blob/local|base/ blob/blob_store.h"
  "blob/cache|base/ blob/blob_store.h blob/local/"
  "blob/fault|base/ blob/blob_store.h"
  "blob/swift|base/ blob/blob_store.h blob/http/"
  "blob/s3|base/ blob/blob_store.h blob/http/"
  "snapshot|base/ blob/blob_store.h"
  "db|base/ model/ snapshot/ blob/blob_store.h blob/cache/"
  "db/mariadb|base/ db/engine.h db/schema.h"
  "control|base/ model/ db/profile/ net/ipam/ipam.h net/dns/zone.h net/dns/wire.h store/store.h health/prober.h health/tracker.h runtime/runtime.h build/builder.h db/manager.h db/clone.h db/engine.h blob/blob_store.h"
  "auth|base/ model/ store/store.h"
  "ui|"
  "api|base/ auth/ ui/ k8s/ control/ model/ runtime/runtime.h store/store.h net/ net/dns/zone.h health/ build/builder.h db/ blob/blob_store.h"
  "client|base/"
  "cli|base/ client/ daemon/daemon.h"
  "daemon|"  # wires everything together
)
status=0
for rule in "${rules[@]}"; do
  dir=${rule%%|*}
  allowed=${rule#*|}
  [ "$dir" = daemon ] && continue
  # The component's own files: its folder, without the sub-folders that are components of their own.
  own=$(find "$dir" -maxdepth 1 -type f \( -name '*.h' -o -name '*.cc' \))
  [ -n "$own" ] || continue
  while IFS= read -r hit; do
    file=${hit%%:*}
    inc=$(sed -E 's/.*#include "([^"]+)".*/\1/' <<<"$hit")
    case "$inc" in "$dir"/*) continue ;; esac        # itself
    [[ "$inc" == */* ]] || continue                   # a header next to the file
    ok=0
    for a in $allowed; do
      case "$inc" in "$a"*) ok=1 ;; esac
    done
    if [ $ok = 0 ]; then
      echo "src/$file includes \"$inc\": $dir may use only: ${allowed:-nothing of berth}" >&2
      status=1
    fi
  done < <(grep -H '^#include "' $own || true)
done
[ $status = 0 ] && echo "check-deps: every component includes only what it may use"
exit $status
