#!/usr/bin/env bash
# The full crash campaign (tests/integration/crash_test.cc): the daemon SIGKILLed at N random
# moments during up (with a build), rolling apply, restart and down; after each kill it must
# converge to the desired instances exactly, no orphans after down, every address unique, in
# the pool, not excluded and unchanged. CI runs 15 kills; this runs more.
#   tests/crash_campaign.sh [KILLS=100] [SEED]     (after scripts/build.sh debug)
set -euo pipefail
cd "$(dirname "$0")/.."
export BERTH_CRASH_KILLS=${1:-100}
[ -n "${2:-}" ] && export BERTH_CRASH_SEED=$2
exec build/debug/tests/integration/berth_integration_tests --gtest_filter='CrashCampaign.*'
