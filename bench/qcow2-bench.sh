#!/bin/bash
# qcow2 benchmark (not a test): miniblock-img bench against qemu-img bench
# -f qcow2 on the same preallocated image in one run, with the same flags,
# and the ratio miniblock / qemu-img (above 1: miniblock is faster).
#
#   bench/qcow2-bench.sh [BUILD_DIR] [IMAGE_SIZE] [CACHE]
#
#   4 KiB "random" reads: neither tool has a random mode, so a large odd
#   step (-S) spreads the reads over the whole image (both wrap around).
#   64 KiB sequential writes over allocated clusters (no allocation).
set -eu
build=${1:-build}
size=${2:-1G}
cache=${3:-writeback}
img=$(mktemp /var/tmp/mb-qcow2-bench.XXXXXX)
trap 'rm -f "$img"' EXIT
MB="$build/tools/miniblock-img"
[ -x "$MB" ] || { echo "no $MB: build first" >&2; exit 1; }

qemu-img create -q -f qcow2 -o preallocation=falloc "$img" "$size"

# rate TOOL ARGS...: prints requests per second.
rate() {
    local tool=$1
    shift
    if [ "$tool" = mb ]; then "$MB" bench -f qcow2 -t "$cache" "$@" "$img"
    else qemu-img bench -f qcow2 -t "$cache" "$@" "$img"; fi |
        awk '/Run completed in/ { for (i = 1; i <= NF; i++) if ($i == "in") t = $(i + 1) } END { print t }'
}

run() {
    local name=$1 count=$2
    shift 2
    # Warm up both once (page cache, L2 tables), then measure.
    rate qemu -c $((count / 10)) "$@" >/dev/null
    rate mb -c $((count / 10)) "$@" >/dev/null
    local tq tm
    tq=$(rate qemu -c "$count" "$@")
    tm=$(rate mb -c "$count" "$@")
    awk -v n="$name" -v c="$count" -v tq="$tq" -v tm="$tm" 'BEGIN {
        printf "%-34s qemu-img %9.0f req/s   miniblock %9.0f req/s   ratio %.2f\n", n, c / tq, c / tm, tq / tm }'
}

echo "qcow2 bench: $size image, cache=$cache, $(nproc) CPUs"
run "4 KiB reads, step 1 MiB + 4 KiB" 200000 -d 64 -s 4k -S 1052672
run "4 KiB reads, depth 1" 50000 -d 1 -s 4k -S 1052672
run "64 KiB sequential writes" 16000 -w -d 16 -s 64k
