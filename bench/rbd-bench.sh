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
# - Same librados/librbd configuration, verified once per run: each tool
#   runs once with an admin socket, and its `config show` (every option
#   librados and librbd resolved: rbd_cache, rbd_cache_writethrough_until_
#   flush, objecter_*, ms_*, ...) must equal the other's but for the
#   socket's own path, or the script stops.  QEMU sets rbd_cache from -t;
#   we set it the same way; nothing else differs.
# - Same placement for both: on a machine of 2 CPUs or more the cluster's
#   daemons (every thread of ceph-mon and ceph-osd) are pinned to CPU 0 and
#   every tool run, with all its threads (librbd's messenger and finisher
#   threads included), to CPU 1 (taskset).  Unpinned, the scheduler moved
#   the client's threads and the osd's across the two cores from run to run
#   and the rate of one tool swung 21500-32300 req/s between identical runs.
#   Processes of others on the machine are not pinned: they still add noise
#   (PIN=0 turns pinning off).
# - Same priority for both: run as root, the daemons (every thread) and every
#   tool run get nice NICE (default -10), so that other work on a shared
#   machine (compilers at a load of 20 on 2 cores) takes less of the cores
#   the measurement needs; NICE=0 turns it off.
# - A warm-up round, discarded, runs the four (tool, read/write) combinations
#   once before the measured ones (the osd's caches, the page cache of the
#   binaries, the cluster's first maps).
# - ROUNDS interleaved rounds: each round runs the four combinations, in an
#   order that alternates from round to round, so a burst of load on the
#   shared machine hits both tools alike.  Each round gives a paired ratio
#   (miniblock / qemu, read and write): the two runs of a pair are seconds
#   apart, so their ratio cancels most of the load that moves the rates
#   themselves.
# - Per tool: median requests/s with [min-max], from the tool's own "Run
#   completed in N seconds" (the requests only), and the median CPU time
#   (user + system, all threads, from time(1)) per request with opening
#   and connecting excluded: minus the median CPU of a run of DEPTH
#   requests (one per worker).  Ratios: of the medians, and the median of
#   the per-round ratios with [min-max].
# Not a test: the figures depend on the machine's load (printed at the
# start and the end), and the cluster runs on the same host.  About 5 s
# per round on an idle 2-core machine: 2 min for the defaults.
#
#   bench/rbd-bench.sh [BUILD_DIR]        (env: COUNT, ROUNDS, PIN, NICE)
set -eu
BUILD=${1:-build}
COUNT=${COUNT:-20000}
ROUNDS=${ROUNDS:-15}
PIN=${PIN:-1}
NICE=${NICE:--10}
DEPTH=16
MB=$(readlink -f "$BUILD/tools/miniblock-img")
[ -x "$MB" ] || { echo "no $BUILD/tools/miniblock-img: build first"; exit 1; }
cd "$(dirname "$0")/.."
T=$(mktemp -d /tmp/mb-rbd-bench.XXXXXX)
trap 'scripts/ceph-cluster.sh stop "$T/ceph"; rm -rf "$T"' EXIT
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
scripts/ceph-cluster.sh start "$T/ceph" >/dev/null
export CEPH_CONF=$T/ceph/ceph.conf
IMG=rbd:rbd/bench
SIZE_MB=256
[ $((COUNT * 4096)) -le $(((SIZE_MB << 20) - 4096)) ] || { echo "COUNT too large for the image"; exit 1; }

# --- placement ---------------------------------------------------------------
TOOL_PREFIX=()
placement="not pinned (PIN=0)"
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then
    for f in "$T"/ceph/*.pid; do
        taskset -a -p -c 0 "$(cat "$f")" >/dev/null
    done
    TOOL_PREFIX=(taskset -c 1)
    placement="ceph-mon and ceph-osd on CPU 0, each tool run (all threads) on CPU 1"
elif [ "$PIN" = 1 ]; then
    placement="not pinned (one CPU)"
fi
priority="nice 0"
if [ "$NICE" != 0 ] && [ "$(id -u)" = 0 ]; then
    for f in "$T"/ceph/*.pid; do
        p=$(cat "$f")
        # renice -p changes one thread: name them all.
        renice -n "$NICE" -p $(ls "/proc/$p/task") >/dev/null
    done
    TOOL_PREFIX=(nice -n "$NICE" "${TOOL_PREFIX[@]}")
    priority="nice $NICE for the daemons and both tools"
fi

"$MB" create -f raw "$IMG" ${SIZE_MB}M >/dev/null
# Real data: reads of never-written objects would not reach the osd's store.
qemu-img bench -f raw -w -c $(((SIZE_MB << 20) / 4096)) -d 16 -s 4096 -S 4096 "$IMG" >/dev/null

# cmd TOOL: the bench command of a tool (both at the same cache setting and
# on the same CPU at the same priority).
cmd() {
    if [ "$1" = qemu ]; then
        echo "${TOOL_PREFIX[*]} qemu-img bench -t writeback"
    else
        echo "${TOOL_PREFIX[*]} $MB bench -t writeback"
    fi
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

# --- same configuration: what librados/librbd resolved in each tool -----------
# config_of TOOL: its `config show`, from the admin socket of a long read run
# (stopped once asked; its pid is ours).
config_of() {
    local tool=$1 dir=$T/asok-$1 pid sock=
    mkdir -p "$dir"
    sed "s|^admin_socket =\$|admin_socket = $dir/\$name.\$pid.asok|" "$T/ceph/ceph.conf" >"$T/conf-$tool"
    CEPH_CONF=$T/conf-$tool $(cmd "$tool") -f raw -c 10000000 -d $DEPTH -s 4096 -S 4096 "$IMG" >/dev/null &
    pid=$!
    for _ in $(seq 200); do
        sock=$(ls "$dir"/*.asok 2>/dev/null | head -1) && [ -n "$sock" ] && break
        sleep 0.05
    done
    # The socket file exists before it answers: ask until it does.
    local ok=0
    for _ in $(seq 50); do
        if [ -n "$sock" ] && timeout 10 ceph --admin-daemon "$sock" config show >"$T/config-$tool" 2>/dev/null; then
            ok=1
            break
        fi
        sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    [ $ok = 1 ] || { echo "rbd-bench: could not read the configuration of $tool from its admin socket"; exit 1; }
    grep -v '"admin_socket"' "$T/config-$tool" >"$T/config-$tool.cmp"
}
config_of mb
config_of qemu
if ! diff "$T/config-mb.cmp" "$T/config-qemu.cmp" >"$T/config.diff"; then
    echo "rbd-bench: the two tools run librados/librbd with different settings: not comparable"
    cat "$T/config.diff"
    exit 1
fi
cache=$(grep -o '"rbd_cache": "[a-z]*"' "$T/config-mb")
wtuf=$(grep -o '"rbd_cache_writethrough_until_flush": "[a-z]*"' "$T/config-mb")

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

orders=("mb:read qemu:read qemu:write mb:write" "qemu:read mb:read mb:write qemu:write"
        "mb:write qemu:write qemu:read mb:read" "qemu:write mb:write mb:read qemu:read")
# Warm-up: every combination once, discarded.
for job in ${orders[0]}; do run "${job%:*}" "${job#*:}" "$COUNT" >/dev/null; done
for r in $(seq "$ROUNDS"); do
    for job in ${orders[$(((r - 1) % 4))]}; do
        run "${job%:*}" "${job#*:}" "$COUNT" >>"$T/runs.${job%:*}.${job#*:}"
    done
done

echo "rbd-bench: 4 KiB, QD$DEPTH, $COUNT requests, $ROUNDS interleaved rounds after a warm-up round (discarded),"
echo "           memstore cluster on this host; placement: $placement; $priority"
echo "           same offsets checked (the images both tools write are identical);"
echo "           same librados/librbd configuration checked (config show: $cache, $wtuf)"
echo "           load average at the start: $load_start; at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
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
    # Line r of each file is round r: the paired ratios.
    paste -d' ' "$T/runs.mb.$rw" "$T/runs.qemu.$rw" | awk '{ printf "%.4f\n", $1 / $3 }' >"$T/ratios.$rw"
    pm=$(median <"$T/ratios.$rw")
    plo=$(sort -g "$T/ratios.$rw" | head -1)
    phi=$(sort -g "$T/ratios.$rw" | tail -1)
    awk -v a="$rate_mb" -v b="$rate_qemu" -v r="$rw" -v pm="$pm" -v lo="$plo" -v hi="$phi" \
        'BEGIN { printf "%-5s ratio miniblock/qemu: %.2f (of the medians); per round: median %.2f [%.2f-%.2f]\n",
                 r, a / b, pm, lo, hi }'
done
