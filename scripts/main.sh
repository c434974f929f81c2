#!/bin/sh
# The main job: set up, build, then run every scenario of the 2009
# qemu-devel thread with real processes (tests/scenarios/*.scn, each printing
# its table), and show the lock matrix of one raw image.
set -eu
cd "$(dirname "$0")/.."
sh scripts/build.sh
BUILD=${BUILD:-build}
status=0
for f in tests/scenarios/*.scn; do
    case $f in *selftest-*) continue ;; esac  # the runner's own failure test
    "$BUILD/tools/miniblock-scenario" "$f" || status=1
    echo
done
bash scripts/lock-matrix.sh "$BUILD" || status=1
echo
bash scripts/rbd-scenario.sh "$BUILD" || status=1
exit $status
