#!/bin/sh
# Builds libminiblock.dll, the tools and the test programs with mingw-w64
# (GLib from scripts/mingw-glib.sh's prefix) and runs them under Wine:
# win32-tests (the lock protocol, processes, I/O), win32-driver-tests (the
# `file` driver table in the real library) and tools-tests.sh (the tools
# against qemu-img/qemu-io: lock matrix, qcow2, commit, bad input).  Prints TAP and
# "N passed, M failed" per program, then the total; exits non-zero on any
# failure.
#
# usage: tests/win32/run-wine-tests.sh [BUILD_DIR]     (default: build-win32)
#
# The cross build lives in its own directory (it cannot share the Linux
# one); the Wine prefix is created fresh inside it, so nothing in $HOME is
# touched.  Missing mingw-w64 or Wine is a failure, not a skip: CI installs
# them with scripts/setup.sh, and a silently skipped lock test is how a lock
# bug ships.  Set MINIBLOCK_WIN32_ALLOW_SKIP=1 to get exit 77 instead.
set -eu

SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-$SRC/build-win32}
case $BUILD in /*) ;; *) BUILD=$(pwd)/$BUILD ;; esac

missing() {
    echo "run-wine-tests: $1 not found (install it with scripts/setup.sh)" >&2
    if [ "${MINIBLOCK_WIN32_ALLOW_SKIP:-0}" = 1 ]; then exit 77; fi
    exit 1
}

command -v x86_64-w64-mingw32-g++ >/dev/null 2>&1 || missing "x86_64-w64-mingw32-g++ (g++-mingw-w64-x86-64)"
WINE=""
for w in wine64 /usr/lib/wine/wine64 /usr/lib64/wine/wine64 wine; do
    if command -v "$w" >/dev/null 2>&1; then WINE=$(command -v "$w"); break; fi
done
[ -n "$WINE" ] || missing "wine64"
WINESERVER=""
for w in wineserver /usr/lib/wine/wineserver64 /usr/lib/wine/wineserver; do
    if command -v "$w" >/dev/null 2>&1; then WINESERVER=$(command -v "$w"); break; fi
done

# GLib for mingw: scripts/setup.sh builds it once (scripts/mingw-glib.sh).
GLIB_PREFIX=$(sh "$SRC/scripts/mingw-glib.sh" --print)
[ -f "$GLIB_PREFIX/.complete" ] || missing "GLib for mingw in $GLIB_PREFIX"

start=$(date +%s)
# A build directory configured for another GLib prefix (or none) starts over.
if [ -f "$BUILD/build.ninja" ] && [ "$(cat "$BUILD/glib-prefix" 2>/dev/null)" != "$GLIB_PREFIX" ]; then
    rm -rf "$BUILD"
fi
if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup --cross-file "$SRC/win32/x86_64-w64-mingw32.ini" \
        --cross-file "$GLIB_PREFIX/miniblock-cross.ini" "$BUILD" "$SRC" >/dev/null
    echo "$GLIB_PREFIX" >"$BUILD/glib-prefix"
fi
# -j2: the machines this runs on are shared.
meson compile -C "$BUILD" -j 2 >/dev/null || meson compile -C "$BUILD" -j 2

WINEPREFIX=$BUILD/wineprefix
WINEDEBUG=-all
# GLib's DLLs, zlib1.dll and libwinpthread-1.dll, then libminiblock-0.dll.
WINEPATH="Z:$GLIB_PREFIX/bin;Z:$BUILD"
# No Mono or Gecko: nothing here is .NET or HTML, and their install prompt
# would stall the first start of a fresh prefix.
WINEDLLOVERRIDES="mscoree,mshtml="
export WINEPREFIX WINEDEBUG WINEDLLOVERRIDES WINEPATH
if [ ! -f "$WINEPREFIX/system.reg" ]; then
    # A fresh prefix takes Wine ~10 s to create: do it up front, quietly.
    "$WINE" wineboot --init >/dev/null 2>&1 || true
fi

# Each program prints TAP and "N passed, M failed"; the total comes last.
# dash has no pipefail: each program's status goes through a file.
rc=0
passed=0
failed=0
export WINE
for prog in glib-loop win32-tests win32-driver-tests test-capi tools-tests; do
    log=$BUILD/$prog.log
    rc_file=$BUILD/$prog.rc
    rm -f "$rc_file"
    echo "# $prog"
    {
        r=0
        if [ "$prog" = win32-tests ]; then
            timeout 400 "$WINE" "$BUILD/tests/win32/$prog.exe" \
                ${MINIBLOCK_WIN32_RACE_ROUNDS:+--rounds "$MINIBLOCK_WIN32_RACE_ROUNDS"} 2>&1 || r=$?
        elif [ "$prog" = test-capi ]; then
            # The C API suite (CMocka): TAP, summed up like the others.
            CMOCKA_MESSAGE_OUTPUT=TAP timeout 120 "$WINE" "$BUILD/tests/win32/$prog.exe" 2>&1 || r=$?
        elif [ "$prog" = tools-tests ]; then
            # The tools (libminiblock.dll) against qemu-img/qemu-io.
            timeout 400 bash "$SRC/tests/win32/tools-tests.sh" "$BUILD" 2>&1 || r=$?
        else
            timeout 120 "$WINE" "$BUILD/tests/win32/$prog.exe" 2>&1 || r=$?
        fi
        echo "$r" >"$rc_file"
    } | tr -d '\r' | tee "$log"
    r=$(cat "$rc_file" 2>/dev/null || echo 1)
    [ "$r" = 0 ] || rc=1
    summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)
    if [ -z "$summary" ] && [ "$prog" = test-capi ] && grep -q '^1\.\.[0-9]' "$log"; then
        # grep -c says 0 with exit status 1: not a failure here (set -e).
        summary="$(grep -c '^ok ' "$log" || true) passed, $(grep -c '^not ok ' "$log" || true) failed"
    fi
    if [ -z "$summary" ]; then
        echo "# $prog ended without a summary (exit $r)"
        failed=$((failed + 1))
    else
        passed=$((passed + ${summary%% passed*}))
        f=${summary#*, }
        failed=$((failed + ${f%% failed}))
    fi
done
# The same matrix as on POSIX: compare the 64 cells two Windows processes
# produced with the POSIX lock matrix (worked out by hand, checked on Linux
# by tests/interop/lock-matrix.sh); its rows with QEMU peers do not apply.
expected=$SRC/tests/interop/lock-matrix.expected
if [ -f "$expected" ]; then
    grep -v qemu "$expected" >"$BUILD/matrix.expected"
    sed -n 's/^# cell //p' "$BUILD/win32-tests.log" >"$BUILD/matrix.win32"
    if [ -s "$BUILD/matrix.win32" ] && diff "$BUILD/matrix.expected" "$BUILD/matrix.win32" >"$BUILD/matrix.diff"; then
        echo "ok - Windows lock matrix equals the POSIX one ($(wc -l <"$BUILD/matrix.win32") cells of $expected)"
        passed=$((passed + 1))
    else
        echo "not ok - Windows lock matrix differs from $expected:"
        sed 's/^/#   /' "$BUILD/matrix.diff"
        failed=$((failed + 1))
    fi
else
    echo "# no $expected: POSIX matrix comparison not run"
fi

# Let the prefix's wineserver go now rather than linger after us.
[ -z "$WINESERVER" ] || "$WINESERVER" -k >/dev/null 2>&1 || true
[ "$failed" = 0 ] || rc=1
echo "# win32 suite: $(( $(date +%s) - start )) s, build and Wine start included"
echo "$passed passed, $failed failed"
exit "$rc"
