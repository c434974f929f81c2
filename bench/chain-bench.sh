#!/bin/bash
# Deep backing chains, not a test: opening the top of a chain of DEPTH qcow2
# images with miniblock-io against qemu-io 7.2, on the same files, with the
# same command (`length`: open the whole chain, print the size, close),
# interleaved for ROUNDS rounds (the order alternates each round), reported
# as medians with min and max of the wall time, the CPU time (user + system)
# and the peak RSS (/usr/bin/time %M), per depth and cache mode.  Linear
# growth shows as a constant time and RSS per image across the depths.
#
#   bench/chain-bench.sh [BUILD_DIR]
#   env: ROUNDS (3), DEPTHS ("250 500 1000 2000"), CACHES ("none writeback"),
#        DIR (/var/tmp), SIZE (1G: the virtual size of every image),
#        QEMU_MAX (1000): deeper chains are opened by miniblock-io only
#        (qemu-io 7.2's open time grows quadratically: about a minute at
#        2000 images, where miniblock's growth is what is being checked)
#
# One chain of max(DEPTHS) images is made with qemu-img (c1 the base, each
# next one over the previous, relative names); the chain of depth D is
# opened at cD.  The ratio is qemu-io's time over miniblock-io's (>= 1.0:
# miniblock opens at least as fast).  The machine is shared: read ratios.
set -eu
BUILD=${1:-build}
ROUNDS=${ROUNDS:-3}
DEPTHS=${DEPTHS:-250 500 1000 2000}
CACHES=${CACHES:-none writeback}
DIR=${DIR:-/var/tmp}
SIZE=${SIZE:-1G}
QEMU_MAX=${QEMU_MAX:-1000}
MBIO=$BUILD/tools/miniblock-io
for t in "$MBIO" qemu-img qemu-io /usr/bin/time; do
    command -v "$t" >/dev/null || { echo "chain-bench: $t not found" >&2; exit 1; }
done
W=$(mktemp -d "$DIR/mb-chain-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT
max=0
for d in $DEPTHS; do [ "$d" -gt "$max" ] && max=$d; done
qemu-img create -q -f qcow2 "$W/c1.qcow2" "$SIZE"
for ((i = 2; i <= max; i++)); do
    qemu-img create -q -u -f qcow2 -b "c$((i - 1)).qcow2" -F qcow2 "$W/c$i.qcow2" "$SIZE"
done

# run KEY TOOL DEPTH CACHE: one open; appends "wall cpu rss_kib" to $W/res.KEY.TOOL.
run() {
    local key=$1 tool=$2 d=$3 cache=$4 io
    if [ "$tool" = mb ]; then io=$MBIO; else io=qemu-io; fi
    /usr/bin/time -f '%e %U %S %M' -o "$W/time" "$io" -f qcow2 -t "$cache" -c length "$W/c$d.qcow2" \
        >"$W/out" 2>&1 || { echo "failed: $io -t $cache c$d.qcow2" >&2; cat "$W/out" >&2; exit 1; }
    awk '{ printf "%.3f %.3f %d\n", $1, $2 + $3, $4 }' "$W/time" >>"$W/res.$key.$tool"
}

stats() {  # prints "median min max" of column COL of FILE
    sort -n -k"$2" "$1" | awk -v c="$2" '{ v[NR] = $c } END {
        m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%s %s %s", m, v[1], v[NR] }'
}

echo "chain-bench: depths $DEPTHS, $ROUNDS rounds, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "qemu-io: $(qemu-io --version | head -1)"
for ((r = 1; r <= ROUNDS; r++)); do
    order="qemu mb"; [ $((r % 2)) = 0 ] && order="mb qemu"
    for cache in $CACHES; do
        for d in $DEPTHS; do
            for tool in $order; do
                [ "$tool" = qemu ] && [ "$d" -gt "$QEMU_MAX" ] && continue
                run "$d.$cache" "$tool" "$d" "$cache"
            done
        done
    done
done

printf '%-6s %-9s %-5s %24s %9s %9s %10s %6s\n' depth cache tool "wall s med [min-max]" "cpu s" "RSS MiB" \
    "us/image" ratio
for cache in $CACHES; do
    for d in $DEPTHS; do
        qm=""
        [ -f "$W/res.$d.$cache.qemu" ] && read -r qm _ _ <<<"$(stats "$W/res.$d.$cache.qemu" 1)"
        for tool in qemu mb; do
            f=$W/res.$d.$cache.$tool
            [ -f "$f" ] || continue
            read -r wm wl wh <<<"$(stats "$f" 1)"
            cm=$(stats "$f" 2 | cut -d' ' -f1)
            rm_=$(stats "$f" 3 | cut -d' ' -f1)
            name=qemu-io; [ "$tool" = mb ] && name=miniblock
            ratio=""; [ "$tool" = mb ] && [ -n "$qm" ] && ratio=$(awk -v a="$qm" -v b="$wm" 'BEGIN { printf "%.2f", a / b }')
            printf '%-6s %-9s %-9s %20s %9s %9.1f %10.0f %6s\n' "$d" "$cache" "$name" "$wm [$wl-$wh]" "$cm" \
                "$(awk -v k="$rm_" 'BEGIN { print k / 1024 }')" "$(awk -v w="$wm" -v d="$d" 'BEGIN { print w * 1e6 / d }')" \
                "$ratio"
        done
    done
done
