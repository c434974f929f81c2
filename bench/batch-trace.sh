#!/bin/bash
# Where a QD32 4 KiB read run spends its time at the device: qemu-img bench
# and miniblock-img bench on the same file with the same requests, traced
# with perf at the block layer (block:block_rq_issue, one event per request
# the kernel hands to the device).  Not a test and not a rate benchmark
# (qcow2-write-bench.sh is): it shows the structure behind a ratio.
#
# On a virtio disk both tools run in lockstep batches: the device completes
# about a queue depth of requests together, the tool wakes, resubmits them
# in a burst, and the disk then idles until the next batch completes.  Per
# tool the script prints the mean of, per batch:
#   burst  first to last issue of a batch (how fast the tool resubmits);
#   gap    last issue of a batch to the first of the next: the device
#          working off the batch, its interrupt, the tool's wake-up and
#          its reaction up to its first resubmission;
#   cycle  burst + gap, the time per batch, which sets the rate.
# The gap is not split at the tool's wake-up: sched:sched_waking and the
# switch from the idle task go missing for most wake-ups on the VM where
# this was written (a split from the few seen would mislead).
# A gap over GAP_US (20) microseconds ends a batch.  Issues by other
# processes (kblockd dispatching requeued requests) are counted apart.
#
#   bench/batch-trace.sh [BUILD_DIR]
#   env: ROUNDS (3), COUNT (30000), FORMAT (qcow2, or raw), AIO (native,
#        or threads), SIZE (1G), DIR (/var/tmp), GAP_US (20)
# Needs root and perf (Debian: linux-perf).
set -eu
BUILD=${1:-build}
ROUNDS=${ROUNDS:-3}
COUNT=${COUNT:-30000}
FORMAT=${FORMAT:-qcow2}
AIO=${AIO:-native}
SIZE=${SIZE:-1G}
DIR=${DIR:-/var/tmp}
GAP_US=${GAP_US:-20}
MB=$BUILD/tools/miniblock-img
for t in "$MB" qemu-img perf; do
    command -v "$t" >/dev/null || { echo "batch-trace: $t not found" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "batch-trace: perf's system-wide tracepoints need root" >&2; exit 1; }
case $FORMAT in qcow2 | raw) ;; *) echo "batch-trace: FORMAT must be qcow2 or raw, not '$FORMAT'" >&2; exit 1 ;; esac
case $AIO in native | threads) ;; *) echo "batch-trace: AIO must be native or threads, not '$AIO'" >&2; exit 1 ;; esac
W=$(mktemp -d "$DIR/mb-batch-trace.XXXXXX")
trap 'rm -rf "$W"' EXIT

# A written image (reads of unallocated clusters or holes skip the device).
if [ "$FORMAT" = qcow2 ]; then
    qemu-img create -q -f qcow2 "$W/img" "$SIZE"
    bytes=$(qemu-img info --output=json "$W/img" | awk -F'[:,]' '/"virtual-size"/ { print $2 + 0 }')
    qemu-img bench -q -w -f qcow2 -t none -c $((bytes / 65536)) -d 8 -s 64k "$W/img" >/dev/null
else
    qemu-img create -q -f raw "$W/img" "$SIZE"
    bytes=$(stat -c %s "$W/img")
    dd if=/dev/urandom of="$W/img" bs=1M count=$((bytes >> 20)) status=none conv=notrunc,fsync
fi
step=12288
[ $((COUNT * step)) -le $((bytes - 4096)) ] || { echo "batch-trace: COUNT=$COUNT does not fit in $SIZE at a 12 KiB stride" >&2; exit 1; }
ARGS=(-f "$FORMAT" -t none -i "$AIO" -d 32 -s 4k -S "$step" -c "$COUNT" "$W/img")

# trace TOOL: one traced run; appends "burst gap cycle per_batch others" to $W/res.TOOL.
trace() {
    local tool=$1 comm cmd
    if [ "$tool" = qemu ]; then cmd=(qemu-img bench); comm=qemu-img; else cmd=("$MB" bench); comm=miniblock-img; fi
    perf record -q -o "$W/perf.data" -e block:block_rq_issue -a -- "${cmd[@]}" "${ARGS[@]}" >"$W/out" 2>"$W/err" ||
        { echo "batch-trace: $tool failed:" >&2; cat "$W/err" >&2; exit 1; }
    # The tool's 4 KiB reads (8 sectors), in issue order, with their time.
    perf script -i "$W/perf.data" -F comm,time,trace 2>/dev/null |
        awk -v c="$comm" -v g="$GAP_US" '
        / \+ 8 / {
            match($0, /[0-9]+\.[0-9]+:/); ts = substr($0, RSTART, RLENGTH - 1) * 1e6
            if ($1 != c) { others++; next }
            n++
            if (n > 1) {
                d = ts - prev
                if (d > g) { gaps += d; batches++; burst += last_end - start; start = ts }
            } else start = ts
            prev = ts; last_end = ts
        }
        END {
            if (!batches) { print "batch-trace: no batches found" > "/dev/stderr"; exit 1 }
            printf "%.1f %.1f %.1f %.1f %d\n", burst / batches, gaps / batches,
                (burst + gaps) / batches, n / batches, others
        }' >>"$W/res.$tool"
}

echo "batch-trace: $FORMAT $SIZE, $COUNT reads of 4 KiB at QD32, aio=$AIO, $ROUNDS rounds, load $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= ROUNDS; r++)); do
    if [ $((r % 2)) = 1 ]; then trace qemu; trace mb; else trace mb; trace qemu; fi
done
med() { sort -n | awk '{ v[NR] = $1 } END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
printf '%-14s %10s %10s %10s %12s %12s %14s\n' tool "burst us" "gap us" "cycle us" "reads/batch" "us/read" "others' issues"
for tool in qemu mb; do
    f=$W/res.$tool
    name=qemu-img; [ "$tool" = mb ] && name=miniblock-img
    awk '{ printf "%.2f\n", $3 / $4 }' "$f" >"$f.per"
    printf '%-14s %10s %10s %10s %12s %12s %14s\n' "$name" "$(cut -d' ' -f1 "$f" | med)" "$(cut -d' ' -f2 "$f" | med)" \
        "$(cut -d' ' -f3 "$f" | med)" "$(cut -d' ' -f4 "$f" | med)" "$(med <"$f.per")" "$(cut -d' ' -f5 "$f" | med)"
done
echo "(medians over the rounds; us/read = cycle / reads per batch, the inverse of the rate while batches run)"
