#!/bin/bash
# What it costs that a timed-out plugin request never touches the caller's
# buffer again (docs/plugins.md, "After a timeout"): 4 KiB reads at queue
# depth 1 and 32 with `miniblock-img bench`, through test plugins that do
# no I/O (tests/plugins/late.c with delay-ms=0: each read fills its buffer
# and completes at once), so the copy is all that differs:
#   - late-async (no abandon: the core bounces every read through a buffer
#     of its own and copies) against late-abandon (abandon: zero-copy), the
#     same plugin code otherwise, in this build;
#   - late-parallel (a blocking model: the worker reads into its own buffer,
#     the core copies): its rate and CPU per request in this build, and
#     against BEFORE, another miniblock-img, if given.  (A miniblock-img
#     from before this change cannot be that peer: there a blocking-model
#     plugin's completion resumed its waiter on the worker thread's
#     fallback loop, and `bench` hung at its first request.)
# Same --image-opts, request count, size, offsets and depth for each pair;
# rounds alternate; medians with min and max of the rate and of the CPU time
# per request (user + system, from rusage).  Not a test: the figures depend
# on the machine and its load.
#
#   [BEFORE=/path/to/old/miniblock-img] bench/plugin-bounce-bench.sh [BUILD_DIR] [COUNT] [ROUNDS]
set -eu
BUILD=${1:-build}
COUNT=${2:-2000000}
ROUNDS=${3:-5}
# The blocking model hands each request to a worker thread: 20 times fewer.
BCOUNT=$((COUNT / 20))
IMG="$BUILD/tools/miniblock-img"
[ -x "$IMG" ] || { echo "no $IMG: build first (meson setup build && ninja -C build)"; exit 1; }
export MINIBLOCK_MODULE_DIR="$(cd "$BUILD" && pwd)/tests/plugins"
T=$(mktemp -d /tmp/mb-bounce-bench.XXXXXX)
trap 'rm -rf "$T"' EXIT

# run TOOL DRIVER DEPTH: prints "rate cpu_ns_per_request".
run() {
    local tool=$1 driver=$2 depth=$3 out count=$COUNT
    [ "$driver" = late-parallel ] && count=$BCOUNT
    out=$(/usr/bin/time -f "cpu %U %S" "$tool" bench -c "$count" -d "$depth" -s 4096 \
        --image-opts "driver=raw,file.driver=$driver,file.delay-ms=0" 2>&1)
    awk -v c="$count" '/Run completed in/ { s = $4 } /^cpu / { u = $2; k = $3 }
        END { if (!s) exit 1; printf "%.0f %.1f\n", c / s, (u + k) * 1e9 / c }' <<<"$out" ||
        { echo "bench failed: $tool $driver: $out" >&2; exit 1; }
}

# stats FILE COLUMN: "median min max" of a column.
stats() {
    sort -g -k"$2","$2" "$1" | awk -v k="$2" '{ v[NR] = $k } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%s %s %s\n", m, v[1], v[NR] }'
}

# pair NAME_A TOOL_A DRIVER_A NAME_B TOOL_B DRIVER_B: interleaved rounds, ratios A/B.
pair() {
    local na=$1 ta=$2 da=$3 nb=$4 tb=$5 db=$6 depth
    for depth in 1 32; do
        : >"$T/a"
        : >"$T/b"
        for r in $(seq "$ROUNDS"); do
            run "$ta" "$da" "$depth" >>"$T/a"
            run "$tb" "$db" "$depth" >>"$T/b"
        done
        read -r ar armin armax < <(stats "$T/a" 1)
        read -r br brmin brmax < <(stats "$T/b" 1)
        read -r ac acmin acmax < <(stats "$T/a" 2)
        read -r bc bcmin bcmax < <(stats "$T/b" 2)
        echo "QD$depth  $na: $ar req/s (min $armin, max $armax), $ac ns CPU/req (min $acmin, max $acmax)"
        echo "QD$depth  $nb: $br req/s (min $brmin, max $brmax), $bc ns CPU/req (min $bcmin, max $bcmax)"
        awk -v a="$ar" -v b="$br" -v c="$ac" -v d="$bc" -v q="$depth" -v na="$na" -v nb="$nb" \
            'BEGIN { printf "QD%s  rate %s/%s: %.3f   CPU per request %s/%s: %.3f\n", q, na, nb, a / b, na, nb, c / d }'
    done
}

echo "4 KiB reads, $COUNT requests ($BCOUNT for late-parallel), $ROUNDS interleaved rounds per case and depth"
echo "== async: bounced (no abandon) vs zero-copy (abandon)"
pair bounced "$IMG" late-async zero-copy "$IMG" late-abandon
if [ -n "${BEFORE:-}" ]; then
    echo "== blocking model (late-parallel): this build vs $BEFORE"
    pair after "$IMG" late-parallel before "$BEFORE" late-parallel
else
    echo "== blocking model (late-parallel, worker buffer + copy), this build"
    for depth in 1 32; do
        : >"$T/a"
        for r in $(seq "$ROUNDS"); do run "$IMG" late-parallel "$depth" >>"$T/a"; done
        read -r ar armin armax < <(stats "$T/a" 1)
        read -r ac acmin acmax < <(stats "$T/a" 2)
        echo "QD$depth  late-parallel: $ar req/s (min $armin, max $armax), $ac ns CPU/req (min $acmin, max $acmax)"
    done
fi
