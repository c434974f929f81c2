#!/bin/bash
# qcow2 (and raw) benchmark, not a test: miniblock-img against qemu-img 7.2
# (and fio) on the same files, the same requests (count, size, offsets,
# depth), interleaved for ROUNDS rounds (the order alternates each round),
# reported as medians with min and max, with the CPU time (user + system,
# from /usr/bin/time, whole process) per request beside each rate, and the
# ratio two ways: of the medians, and the median of the per-round ratios.
#
#   bench/qcow2-write-bench.sh [BUILD_DIR]
#   env: ROUNDS (3), SIZE (1G), DIR (/var/tmp), CACHES ("none writeback"),
#        CASES (all: "seqwrite stridewrite read raw convert"),
#        STRACE=1: instead of timing, run each case once per tool under
#        strace -f -c and print the system call counts (to check that both
#        send the same requests, and what each costs in syscalls);
#        RT=1: every timed tool alike under SCHED_FIFO (chrt -f 10, needs
#        root), so that other work on a shared machine does not decide who
#        wins a round (as bench/queue-bench.sh).
#
# The cases (issue #9's table):
#   seqwrite     empty qcow2, 64 KiB sequential writes, QD8, half the image
#   stridewrite  empty qcow2, 4 KiB writes 68 KiB apart (a new cluster each,
#                not sequential), QD32, over the whole image
#   read         fully allocated qcow2, 4 KiB reads 12 KiB apart over the
#                whole image, QD32
#   raw          raw, 4 KiB reads, QD32, aio=native: strided (as read) vs qemu-img,
#                random (--random, our extension) vs fio randread
#   convert      half-allocated qcow2 (every other 1 MiB written) to raw
# Strides never wrap (COUNT * STEP <= SIZE - request size), because qemu-img
# 7.2 and later versions wrap differently.  Write cases start from a new
# empty image every run.  The machine is shared: read ratios, not rates.
set -eu
BUILD=${1:-build}
ROUNDS=${ROUNDS:-3}
SIZE=${SIZE:-1G}
DIR=${DIR:-/var/tmp}
CACHES=${CACHES:-none writeback}
CASES=${CASES:-seqwrite stridewrite read raw convert}
MB=$BUILD/tools/miniblock-img
RT_CMD=()
[ "${RT:-0}" = 1 ] && RT_CMD=(chrt -f 10)
for t in "$MB" qemu-img qemu-io fio /usr/bin/time; do
    command -v "$t" >/dev/null || { echo "qcow2-write-bench: $t not found" >&2; exit 1; }
done
W=$(mktemp -d "$DIR/mb-qcow2-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT
bytes=$(qemu-img create -q -f raw "$W/probe" "$SIZE" && stat -c %s "$W/probe")
rm -f "$W/probe"
nstride=$(((bytes - 4096) / 12288))

# timed OUT CMD...: runs CMD; OUT.time gets "wall user sys", OUT.wall the
# wall time in seconds to the microsecond (time(1) rounds to 10 ms: over 1%
# of a convert run), and OUT its stdout.
timed() {
    local out=$1; shift
    local t0; t0=$(date +%s%N)
    "${RT_CMD[@]}" /usr/bin/time -f '%e %U %S' -o "$out.time" "$@" >"$out" 2>"$out.err" ||
        { echo "failed: $*" >&2; cat "$out.err" >&2; exit 1; }
    echo "$(( $(date +%s%N) - t0 ))" | awk '{ printf "%.6f\n", $1 / 1e9 }' >"$out.wall"
}

# One result line per run: "RATE CPU_US_PER_REQUEST" appended to $W/res.KEY.
record() {
    local key=$1 out=$2 n=$3 secs
    secs=$(awk '/Run completed in/ { for (i = 1; i <= NF; i++) if ($i == "in") print $(i + 1) }' "$out")
    [ -n "$secs" ] || secs=$(cat "$out.wall")
    awk -v n="$n" -v s="$secs" '{ printf "%.1f %.2f\n", n / s, ($2 + $3) * 1e6 / n }' "$out.time" >>"$W/res.$key"
}

# bench_run KEY TOOL N SETUP ARGS...: one bench run of N requests; SETUP is
# a function preparing the image ($W/img) first, untimed.
bench_run() {
    local key=$1 tool=$2 n=$3 setup=$4; shift 4
    $setup
    local cmd
    if [ "$tool" = mb ]; then cmd=("$MB" bench); else cmd=(qemu-img bench); fi
    if [ "${STRACE:-0}" = 1 ]; then
        strace -f -c -o "$W/strace" "${cmd[@]}" -c "$n" "$@" "$W/img" >/dev/null
        printf '  %-8s %s\n' "$tool" "$(awk '$NF ~ /^(pwrite64|pwritev|pread64|preadv|io_submit|fdatasync|fsync|io_getevents)$/ {
            printf "%s=%s ", $NF, ($4 ~ /^[0-9]+$/ ? $4 : $5) }' "$W/strace")"
        return
    fi
    timed "$W/out" "${cmd[@]}" -c "$n" "$@" "$W/img"
    record "$key.$tool" "$W/out" "$n"
}

new_empty() { rm -f "$W/img"; qemu-img create -q -f qcow2 "$W/img" "$SIZE"; }
keep() { :; }

# Images that stay: a fully allocated qcow2 (written, not preallocated, so
# reads hit real data), a raw file of random data, a half-allocated qcow2.
prepare_static() {
    case " $CASES " in *" read "*)
        qemu-img create -q -f qcow2 "$W/full.qcow2" "$SIZE"
        qemu-img bench -q -w -f qcow2 -t none -c $((bytes / 65536)) -d 8 -s 64k "$W/full.qcow2" >/dev/null ;;
    esac
    case " $CASES " in *" raw "*)
        dd if=/dev/urandom of="$W/data.raw" bs=1M count=$((bytes >> 20)) status=none conv=fsync ;;
    esac
    case " $CASES " in *" convert "*)
        qemu-img create -q -f qcow2 "$W/half.qcow2" "$SIZE"
        local cmds=() i
        for ((i = 0; i < bytes >> 20; i += 2)); do cmds+=(-c "write -P $((i % 250 + 1)) ${i}M 1M"); done
        qemu-io -f qcow2 "${cmds[@]}" "$W/half.qcow2" >/dev/null ;;
    esac
}

use_full() { ln -sf "$W/full.qcow2" "$W/img"; }
use_raw() { ln -sf "$W/data.raw" "$W/img"; }

# One round of CASE with CACHE; ORDER "qemu mb" or "mb qemu".
run_case() {
    local c=$1 cache=$2 order=$3 tool
    for tool in $order; do
        case $c in
        seqwrite) bench_run "$c.$cache" "$tool" $((bytes / 2 / 65536)) new_empty -f qcow2 -t "$cache" -w -d 8 -s 64k ;;
        stridewrite) bench_run "$c.$cache" "$tool" $(((bytes - 4096) / 69632)) new_empty -f qcow2 -t "$cache" -w -d 32 -s 4k -S 69632 ;;
        read) bench_run "$c.$cache" "$tool" "$nstride" use_full -f qcow2 -t "$cache" -d 32 -s 4k -S 12288 ;;
        raw)
            [ "$cache" = none ] || continue
            bench_run "raw-stride.$cache" "$tool" "$nstride" use_raw -f raw -t none -i native -d 32 -s 4k -S 12288
            if [ "$tool" = mb ]; then
                bench_run "raw-random.$cache" mb 200000 use_raw -f raw -t none -i native -d 32 -s 4k --random=1
            else
                [ "${STRACE:-0}" = 1 ] && continue
                timed "$W/out" fio --name=r --filename="$W/data.raw" --rw=randread --bs=4k --iodepth=32 \
                    --ioengine=libaio --direct=1 --number_ios=200000 --size="$bytes" --randrepeat=1 \
                    --norandommap --output-format=terse --terse-version=3
                awk -F';' '{ print $8 }' "$W/out" | {
                    read -r iops
                    awk -v r="$iops" '{ printf "%.1f %.2f\n", r, ($2 + $3) * 1e6 / 200000 }' "$W/out.time"
                } >>"$W/res.raw-random.$cache.qemu"
            fi ;;
        convert)
            [ "${STRACE:-0}" = 1 ] && continue
            rm -f "$W/conv.raw"
            if [ "$tool" = mb ]; then
                timed "$W/out" "$MB" convert -f qcow2 -O raw -T "$cache" -t "$cache" "$W/half.qcow2" "$W/conv.raw"
            else
                timed "$W/out" qemu-img convert -f qcow2 -O raw -T "$cache" -t "$cache" "$W/half.qcow2" "$W/conv.raw"
            fi
            # Rate: MiB of virtual size per second; CPU per MiB.
            record "$c.$cache.$tool" "$W/out" $((bytes >> 20)) ;;
        esac
    done
}

stats() {  # prints "median min max" of column COL of FILE
    sort -n -k"$2" "$1" | awk -v c="$2" '{ v[NR] = $c } END {
        m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%s %s %s", m, v[1], v[NR] }'
}

echo "qcow2-write-bench: $SIZE images in $DIR, $ROUNDS rounds, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)${RT_CMD:+, under ${RT_CMD[*]}}"
echo "qemu-img: $(qemu-img --version | head -1)"
prepare_static
if [ "${STRACE:-0}" = 1 ]; then
    for cache in $CACHES; do
        for c in $CASES; do echo "$c, cache=$cache:"; run_case "$c" "$cache" "qemu mb"; done
    done
    exit 0
fi
for ((r = 1; r <= ROUNDS; r++)); do
    order="qemu mb"; [ $((r % 2)) = 0 ] && order="mb qemu"
    for cache in $CACHES; do
        for c in $CASES; do run_case "$c" "$cache" "$order"; done
    done
done

printf '%-26s %-9s %28s %12s %28s %12s %6s %20s\n' case cache "peer req/s med [min-max]" "peer us/req" \
    "miniblock req/s med [min-max]" "mb us/req" ratio "per round [min-max]"
for f in "$W"/res.*.mb; do
    key=${f#"$W/res."}; key=${key%.mb}
    c=${key%.*}; cache=${key##*.}
    p="$W/res.$key.qemu"
    read -r pm pl ph <<<"$(stats "$p" 1)"
    read -r mm ml mh <<<"$(stats "$f" 1)"
    pc=$(stats "$p" 2 | cut -d' ' -f1)
    mc=$(stats "$f" 2 | cut -d' ' -f1)
    peer=qemu-img; [ "$c" = raw-random ] && peer=fio
    [ "$c" = convert ] && c="convert(MiB/s,us/MiB)"
    # Line r of both files is round r: the paired ratios, two runs seconds
    # apart, cancel most of what the machine's load does to the rates.
    paste -d' ' "$f" "$p" | awk '{ printf "%.4f\n", $1 / $3 }' >"$W/ratios"
    read -r rm rl rh <<<"$(stats "$W/ratios" 1)"
    printf '%-26s %-9s %28s %12s %28s %12s %6.2f %20s\n' "$c vs $peer" "$cache" "$pm [$pl-$ph]" "$pc" \
        "$mm [$ml-$mh]" "$mc" "$(awk -v a="$mm" -v b="$pm" 'BEGIN { print a / b }')" \
        "$(printf '%.2f [%.2f-%.2f]' "$rm" "$rl" "$rh")"
done
