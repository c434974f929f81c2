#!/bin/sh
# Sets up, builds and runs every test (unit, interop against real QEMU
# tools, scenarios, fuzz targets for a bounded time, Windows under Wine),
# then prints "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/.."
sh scripts/build.sh || { echo "0 passed, 1 failed"; exit 1; }
BUILD=${BUILD:-build}
meson test -C "$BUILD" --print-errorlogs --num-processes 2 "$@"
status=$?
python3 - "$BUILD/meson-logs/testlog.json" <<'PY'
import json, sys
counts = {"passed": 0, "failed": 0, "skipped": 0}
for line in open(sys.argv[1]):
    r = json.loads(line)["result"]
    if r in ("OK", "EXPECTEDFAIL"):
        counts["passed"] += 1
    elif r == "SKIP":
        counts["skipped"] += 1
    else:
        counts["failed"] += 1
print("%(passed)d passed, %(failed)d failed, %(skipped)d skipped" % counts)
PY
# A skipped test is not a pass: the setup script installs every peer.
if [ "$status" -eq 0 ] && grep -q '"result": "SKIP"' "$BUILD/meson-logs/testlog.json"; then
    echo "test.sh: a test was skipped; every peer should be installed" >&2
    status=1
fi
exit $status
