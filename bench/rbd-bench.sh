#!/bin/bash
# 4 KiB requests at queue depth 16 on an RBD image of a throwaway memstore
# cluster (scripts/ceph-cluster.sh): miniblock-img bench vs qemu-img bench
# (QEMU's rbd driver, qemu-block-extra), same image, same request count,
# offsets and alignment, reads then writes, ROUNDS interleaved rounds.
# Prints per-tool medians with min and max of requests/s, CPU time (user +
# system, connecting included) per request, and the ratio of the medians.  Not a test: the
# figures depend on the machine's load, and the cluster shares the cores.
#
#   bench/rbd-bench.sh [BUILD_DIR]        (env: COUNT, ROUNDS)
set -eu
BUILD=${1:-build}
COUNT=${COUNT:-20000}
ROUNDS=${ROUNDS:-5}
MB=$BUILD/tools/miniblock-img
[ -x "$MB" ] || { echo "no $MB: build first"; exit 1; }
cd "$(dirname "$0")/.."
T=$(mktemp -d /tmp/mb-rbd-bench.XXXXXX)
trap 'scripts/ceph-cluster.sh stop "$T/ceph"; rm -rf "$T"' EXIT
scripts/ceph-cluster.sh start "$T/ceph" >/dev/null
export CEPH_CONF=$T/ceph/ceph.conf
IMG=rbd:rbd/bench
"$MB" create -f raw "$IMG" 256M >/dev/null
# Real data: reads of never-written objects would not reach the osd's store.
qemu-img bench -f raw -w -c 65536 -d 16 -s 4096 -S 4096 "$IMG" >/dev/null

# run TOOL RW: "rate cpu_us_per_request" of one run.
run() {
    local tool=$1 rw=$2 w=() out
    [ "$rw" = write ] && w=(-w)
    local cmd=("$MB")
    [ "$tool" = qemu ] && cmd=(qemu-img)
    out=$(/usr/bin/time -f "TIME %e %U %S" "${cmd[@]}" bench -f raw "${w[@]}" -c "$COUNT" \
              -d 16 -s 4096 "$IMG" 2>&1)
    # The rate from the tool's own "Run completed in N seconds" (the requests
    # only); CPU from time(1), so it includes connecting to the cluster.
    awk -v c="$COUNT" '/Run completed in/ { t = $4 } /^TIME/ { cpu = ($3 + $4) * 1e6 / c }
                       END { printf "%.0f %.1f\n", c / t, cpu }' <<<"$out"
}
stats() {  # values on stdin -> "median min max"
    sort -n | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
                                      printf "%.0f %.0f %.0f\n", m, v[1], v[NR] }'
}
echo "rbd-bench: 4 KiB, QD16, $COUNT requests, $ROUNDS interleaved rounds, memstore cluster on this host"
for rw in read write; do
    : >"$T/mb.$rw"; : >"$T/q.$rw"
    for r in $(seq "$ROUNDS"); do
        # Alternate who goes first.
        if [ $((r % 2)) -eq 1 ]; then
            run mb $rw >>"$T/mb.$rw"; run qemu $rw >>"$T/q.$rw"
        else
            run qemu $rw >>"$T/q.$rw"; run mb $rw >>"$T/mb.$rw"
        fi
    done
    read -r mbm mbl mbh < <(cut -d' ' -f1 "$T/mb.$rw" | stats)
    read -r qm ql qh < <(cut -d' ' -f1 "$T/q.$rw" | stats)
    mbc=$(cut -d' ' -f2 "$T/mb.$rw" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
    qc=$(cut -d' ' -f2 "$T/q.$rw" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
    printf "%-5s miniblock-img %7s req/s (min %s, max %s), %s us CPU/req\n" "$rw" "$mbm" "$mbl" "$mbh" "$mbc"
    printf "%-5s qemu-img      %7s req/s (min %s, max %s), %s us CPU/req\n" "$rw" "$qm" "$ql" "$qh" "$qc"
    awk -v a="$mbm" -v b="$qm" -v r="$rw" 'BEGIN { printf "%-5s ratio miniblock/qemu (medians): %.2f\n", r, a / b }'
done
