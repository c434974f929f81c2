#!/bin/bash
# 4 KiB requests at queue depth 16 on an RBD image of a throwaway memstore
# cluster (scripts/ceph-cluster.sh): miniblock-img bench vs qemu-img bench
# (QEMU's rbd driver, qemu-block-extra), same image, same cache setting
# (writeback: librbd's rbd_cache on for both), same request count, offsets
# and alignment.
#
# - Same work, verified once per run: before the rounds each tool writes
#   COUNT requests into a fresh image of its own with the bench's offsets
#   (the same 0xa5 bytes); the two images must be identical, or the script
#   stops.  Reads use the same offset generator.
# - ROUNDS interleaved rounds: each round runs the four (tool, read/write)
#   combinations, in an order that alternates from round to round, so a
#   burst of load on the shared machine hits both tools alike.
# - Per tool: median requests/s with [min-max], from the tool's own "Run
#   completed in N seconds" (the requests only), and the median CPU time
#   (user + system, all threads, from time(1)) per request with opening
#   and connecting excluded: minus the median CPU of a run of DEPTH
#   requests (one per worker).  The ratio is of the medians.
# Not a test: the figures depend on the machine's load, and the cluster
# shares the cores.
#
#   bench/rbd-bench.sh [BUILD_DIR]        (env: COUNT, ROUNDS)
set -eu
BUILD=${1:-build}
COUNT=${COUNT:-20000}
ROUNDS=${ROUNDS:-7}
DEPTH=16
MB=$(readlink -f "$BUILD/tools/miniblock-img")
[ -x "$MB" ] || { echo "no $BUILD/tools/miniblock-img: build first"; exit 1; }
cd "$(dirname "$0")/.."
T=$(mktemp -d /tmp/mb-rbd-bench.XXXXXX)
trap 'scripts/ceph-cluster.sh stop "$T/ceph"; rm -rf "$T"' EXIT
scripts/ceph-cluster.sh start "$T/ceph" >/dev/null
export CEPH_CONF=$T/ceph/ceph.conf
IMG=rbd:rbd/bench
SIZE_MB=256
[ $((COUNT * 4096)) -le $(((SIZE_MB << 20) - 4096)) ] || { echo "COUNT too large for the image"; exit 1; }
"$MB" create -f raw "$IMG" ${SIZE_MB}M >/dev/null
# Real data: reads of never-written objects would not reach the osd's store.
qemu-img bench -f raw -w -c $(((SIZE_MB << 20) / 4096)) -d 16 -s 4096 -S 4096 "$IMG" >/dev/null

# cmd TOOL: the bench command of a tool (both at the same cache setting).
cmd() {
    if [ "$1" = qemu ]; then echo "qemu-img bench -t writeback"; else echo "$MB bench -t writeback"; fi
}

# --- same work: the images the two tools write are identical ----------------
for tool in mb qemu; do
    "$MB" create -f raw "rbd:rbd/verify-$tool" ${SIZE_MB}M >/dev/null
    pat=()
    [ "$tool" = qemu ] && pat=(--pattern=165)  # miniblock-img writes 0xa5
    $(cmd $tool) -f raw -w "${pat[@]}" -c "$COUNT" -d $DEPTH -s 4096 -S 4096 "rbd:rbd/verify-$tool" >/dev/null
done
if ! qemu-img compare -f raw -F raw rbd:rbd/verify-mb rbd:rbd/verify-qemu >/dev/null; then
    echo "rbd-bench: the two tools did not write the same offsets: not comparable"
    exit 1
fi
rbd rm --no-progress rbd/verify-mb
rbd rm --no-progress rbd/verify-qemu

# run TOOL RW N: "rate cpu_seconds" of one run of N requests.
run() {
    local tool=$1 rw=$2 n=$3 w=() out
    [ "$rw" = write ] && w=(-w)
    out=$(/usr/bin/time -f "TIME %e %U %S" $(cmd "$tool") -f raw "${w[@]}" -c "$n" \
              -d $DEPTH -s 4096 -S 4096 "$IMG" 2>&1)
    awk -v c="$n" '/Run completed in/ { t = $4 } /^TIME/ { cpu = $3 + $4 }
                   END { if (t <= 0) t = 1e-9; printf "%.0f %.4f\n", c / t, cpu }' <<<"$out"
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Opening and connecting: DEPTH requests, 3 runs per tool and kind.
for tool in mb qemu; do
    for rw in read write; do
        for _ in 1 2 3; do run $tool $rw $DEPTH; done | cut -d' ' -f2 | median >"$T/base.$tool.$rw"
    done
done

echo "rbd-bench: 4 KiB, QD$DEPTH, $COUNT requests, $ROUNDS interleaved rounds, memstore cluster on this host"
echo "           (same offsets checked: the images both tools write are identical)"
orders=("mb:read qemu:read qemu:write mb:write" "qemu:read mb:read mb:write qemu:write"
        "mb:write qemu:write qemu:read mb:read" "qemu:write mb:write mb:read qemu:read")
for r in $(seq "$ROUNDS"); do
    for job in ${orders[$(((r - 1) % 4))]}; do
        run "${job%:*}" "${job#*:}" "$COUNT" >>"$T/runs.${job%:*}.${job#*:}"
    done
done
for rw in read write; do
    for tool in mb qemu; do
        f=$T/runs.$tool.$rw
        rate=$(cut -d' ' -f1 "$f" | median)
        lo=$(cut -d' ' -f1 "$f" | sort -g | head -1)
        hi=$(cut -d' ' -f1 "$f" | sort -g | tail -1)
        cpu=$(cut -d' ' -f2 "$f" | median)
        base=$(cat "$T/base.$tool.$rw")
        us=$(awk -v c="$cpu" -v b="$base" -v n="$COUNT" -v d=$DEPTH 'BEGIN { printf "%.1f", (c - b) * 1e6 / (n - d) }')
        name=miniblock-img
        [ $tool = qemu ] && name=qemu-img
        printf "%-5s %-13s %7.0f req/s [%s-%s], %5s us CPU/req\n" "$rw" "$name" "$rate" "$lo" "$hi" "$us"
        eval "rate_$tool=$rate"
    done
    awk -v a="$rate_mb" -v b="$rate_qemu" -v r="$rw" \
        'BEGIN { printf "%-5s ratio miniblock/qemu (medians): %.2f\n", r, a / b }'
done
