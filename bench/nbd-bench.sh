#!/bin/bash
# 4 KiB reads at queue depth 16 over a Unix socket from a qemu-nbd export:
# miniblock-img bench against qemu-img bench on the same nbd URI.  Not a
# test (timings depend on the machine's load): runs each tool ROUNDS times,
# alternating, and compares the best runs.
#
#   bench/nbd-bench.sh [BUILD_DIR] [COUNT] [ROUNDS]
set -eu
BUILD=${1:-build}
COUNT=${2:-200000}
ROUNDS=${3:-5}
IMG="$BUILD/tools/miniblock-img"
[ -x "$IMG" ] || { echo "no $IMG: build first (meson setup build && ninja -C build)"; exit 1; }

T=$(mktemp -d /tmp/mb-nbd-bench.XXXXXX)
PIDF="$T/qemu-nbd.pid"
trap 'kill "$(cat "$PIDF" 2>/dev/null)" 2>/dev/null; rm -rf "$T"' EXIT

qemu-img create -q -f raw "$T/disk.raw" 1G
qemu-io -f raw -c 'write -P 0x5a 0 1G' "$T/disk.raw" >/dev/null
qemu-nbd --fork --pid-file="$PIDF" -t -e 4 -f raw -k "$T/nbd.sock" "$T/disk.raw"
URI="nbd+unix:///?socket=$T/nbd.sock"

rate() {  # COUNT / seconds from "Run completed in N seconds."
    awk -v c="$COUNT" '/Run completed in/ { printf "%.0f\n", c / $4 }'
}

best_mb=0
best_q=0
for r in $(seq "$ROUNDS"); do
    mb=$("$IMG" bench -f raw -c "$COUNT" -d 16 -s 4096 "$URI" | rate)
    q=$(qemu-img bench -f raw -c "$COUNT" -d 16 -s 4096 "$URI" | rate)
    echo "round $r: miniblock-img $mb req/s, qemu-img $q req/s"
    [ "$mb" -gt "$best_mb" ] && best_mb=$mb
    [ "$q" -gt "$best_q" ] && best_q=$q
done
echo "best: miniblock-img $best_mb req/s, qemu-img $best_q req/s"
awk -v a="$best_mb" -v b="$best_q" 'BEGIN { printf "ratio miniblock/qemu: %.2f\n", a / b }'
