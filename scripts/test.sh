#!/bin/sh
# Sets up, builds and runs every test (unit, interop against real QEMU
# tools, scenarios, fuzz targets for a bounded time, Windows under Wine),
# then prints "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/.."
. scripts/ccache-env.sh
sh scripts/build.sh || { echo "0 passed, 1 failed"; exit 1; }
BUILD=${BUILD:-build}
meson test -C "$BUILD" --print-errorlogs --num-processes 2 "$@"
status=$?
# The second configuration (docs/plugins.md): the plugin-ABI drivers built
# as modules.  Its unit and interop suites, in a build directory of its own.
MBUILD=${MODULES_BUILD:-build-modules}
if [ -z "${SKIP_MODULES_BUILD:-}" ]; then
    { [ -f "$MBUILD/build.ninja" ] || meson setup "$MBUILD" -Dmodules=enabled >/dev/null; } &&
        ninja -C "$MBUILD" -j"$(nproc)" >/dev/null &&
        meson test -C "$MBUILD" --print-errorlogs --num-processes 2 --suite unit --suite interop ||
        status=1
fi
python3 - "$BUILD/meson-logs/testlog.json" "$MBUILD/meson-logs/testlog.json" <<'PY'
import json, os, sys
counts = {"passed": 0, "failed": 0, "skipped": 0}
lines = []
for f in sys.argv[1:]:
    if os.path.exists(f):
        lines += open(f).readlines()
for line in lines:
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
if [ "$status" -eq 0 ] && cat "$BUILD/meson-logs/testlog.json" "$MBUILD/meson-logs/testlog.json" 2>/dev/null |
    grep -q '"result": "SKIP"'; then
    echo "test.sh: a test was skipped; every peer should be installed" >&2
    status=1
fi
exit $status
