#!/usr/bin/env bash
# The full crash campaign (tests/integration/crash_test.cc), more kills than CI runs:
#   instances  the daemon SIGKILLed at N random moments during up (with a build), rolling apply,
#              restart and down; after each kill it must converge to the desired instances
#              exactly, no orphans after down, every address unique, in the pool, not excluded
#              and unchanged. CI runs 15 kills.
#   databases  the same during up of an environment with a database copy (the copy made, its
#              mariadbd started), berth db clone (server stopped, copy discarded and made again,
#              new server started) and down; after each kill: converged, one mariadbd per copy
#              that should run and none after down, the copy holds the standard and exactly the
#              rows written since its last reset, its address unchanged, no copy directory or
#              overlay mount beyond the copies the status lists. CI runs 6 kills (about 30 s
#              here, 3-4 s a kill).
#   tests/crash_campaign.sh [KILLS=100] [SEED] [all|instances|databases]   (after scripts/build.sh debug)
# KILLS is per test; SEED (BERTH_CRASH_SEED) replays a run.
set -euo pipefail
cd "$(dirname "$0")/.."
export BERTH_CRASH_KILLS=${1:-100} BERTH_CRASH_DB_KILLS=${1:-100}
[ -n "${2:-}" ] && export BERTH_CRASH_SEED=$2
case "${3:-all}" in
  all) filter='CrashCampaign.*' ;;
  instances) filter='CrashCampaign.EveryKillConvergesToTheDesiredInstancesWithTheirAddresses' ;;
  databases) filter='CrashCampaign.DatabaseCopiesSurviveKillsDuringUpCloneAndDown' ;;
  *) echo "usage: $0 [KILLS=100] [SEED] [all|instances|databases]" >&2; exit 2 ;;
esac
exec build/debug/tests/integration/berth_integration_tests --gtest_filter="$filter"
