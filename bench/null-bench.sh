#!/bin/bash
# The block layers' own cost per request, with no storage underneath:
# 4 KiB reads from null-co (driver=raw over file.driver=null-co, 1 GiB) at
# queue depth 1 and 32, `miniblock-img bench` against `qemu-img bench` on
# the same --image-opts string: same request count, size, offsets (0, 4096,
# ... wrapping at the end of the image) and depth.  Rounds alternate between
# the tools; the script prints the median rate and CPU time per request
# (user + system, from the tool's rusage) with min and max, and the ratios.
# Not a test: the figures depend on the machine and its load.
#
#   bench/null-bench.sh [BUILD_DIR] [COUNT] [ROUNDS]
set -eu
BUILD=${1:-build}
COUNT=${2:-2000000}
ROUNDS=${3:-5}
IMG="$BUILD/tools/miniblock-img"
[ -x "$IMG" ] || { echo "no $IMG: build first (meson setup build && ninja -C build)"; exit 1; }
command -v qemu-img >/dev/null || { echo "qemu-img is missing (scripts/setup.sh)"; exit 1; }
O=driver=raw,file.driver=null-co,file.size=1073741824
T=$(mktemp -d /tmp/mb-null-bench.XXXXXX)
trap 'rm -rf "$T"' EXIT

# run TOOL DEPTH: prints "rate cpu_ns_per_request".
run() {
    local tool=$1 depth=$2 out
    out=$(/usr/bin/time -f "cpu %U %S" "$tool" bench -c "$COUNT" -d "$depth" -s 4096 --image-opts "$O" 2>&1)
    awk -v c="$COUNT" '/Run completed in/ { s = $4 } /^cpu / { u = $2; k = $3 }
        END { printf "%.0f %.1f\n", c / s, (u + k) * 1e9 / c }' <<<"$out"
}

# stats FILE COLUMN: "median min max" of a column.
stats() {
    sort -g -k"$2","$2" "$1" | awk -v k="$2" '{ v[NR] = $k } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%s %s %s\n", m, v[1], v[NR] }'
}

echo "null-co, 4 KiB reads, $COUNT requests, $ROUNDS interleaved rounds per tool and depth"
for depth in 1 32; do
    : >"$T/mb.$depth"
    : >"$T/q.$depth"
    for r in $(seq "$ROUNDS"); do
        run "$IMG" "$depth" >>"$T/mb.$depth"
        run qemu-img "$depth" >>"$T/q.$depth"
    done
    read -r mb_rate mb_rmin mb_rmax < <(stats "$T/mb.$depth" 1)
    read -r q_rate q_rmin q_rmax < <(stats "$T/q.$depth" 1)
    read -r mb_cpu mb_cmin mb_cmax < <(stats "$T/mb.$depth" 2)
    read -r q_cpu q_cmin q_cmax < <(stats "$T/q.$depth" 2)
    echo "QD$depth  miniblock-img: $mb_rate req/s (min $mb_rmin, max $mb_rmax), $mb_cpu ns CPU/req (min $mb_cmin, max $mb_cmax)"
    echo "QD$depth  qemu-img:      $q_rate req/s (min $q_rmin, max $q_rmax), $q_cpu ns CPU/req (min $q_cmin, max $q_cmax)"
    awk -v a="$mb_rate" -v b="$q_rate" -v c="$mb_cpu" -v d="$q_cpu" -v q="$depth" \
        'BEGIN { printf "QD%s  rate miniblock/qemu: %.2f   CPU per request miniblock/qemu: %.2f\n", q, a / b, c / d }'
done
