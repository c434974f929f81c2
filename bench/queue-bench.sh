#!/bin/bash
# 4 KiB O_DIRECT reads at queue depth 32, aio=native, on a 36 KiB stride over
# a 1 GiB file (neither sequential nor wrapping: COUNT stays below 1 GiB /
# 36 KiB): the public queue API (bench/mb-queue-bench.c, what an embedder
# gets) and miniblock-img bench (which does its I/O through the same API)
# vs qemu-img bench with the same offsets, and vs fio (libaio, randread,
# same request count and size).  Interleaved rounds; medians with min and
# max; CPU time per request (user + system of the whole process, from
# getrusage, for every tool alike) beside each rate.
#
#   bench/queue-bench.sh [BUILD_DIR]     (env: COUNT, ROUNDS, DEPTH, BENCH_DIR, RT)
# DEPTH=1 gives the queue-depth-1 case (what busy-polling costs per request).
# RT=1 runs every tool alike under SCHED_FIFO (chrt -f 10, needs root), so
# that other work on a shared machine does not decide who wins a round.
# Not a test: the machine is shared and loaded; read the ratios.
set -eu
BUILD=${1:-build}
COUNT=${COUNT:-29000}
ROUNDS=${ROUNDS:-5}
DEPTH=${DEPTH:-32}
DIR=${BENCH_DIR:-/var/tmp}
SIZE=$((1 << 30))
BS=4096
STRIDE=36864
RT_CMD=""
[ "${RT:-0}" = 1 ] && RT_CMD="chrt -f 10"
QB=$BUILD/bench/mb-queue-bench
MB=$BUILD/tools/miniblock-img
for t in "$QB" "$MB" qemu-img fio /usr/bin/python3; do
    command -v "$t" >/dev/null || { echo "queue-bench: $t not found (build first; scripts/setup.sh)" >&2; exit 1; }
done
if [ $((COUNT * STRIDE + BS)) -gt $SIZE ]; then
    echo "queue-bench: COUNT $COUNT would wrap around the 1 GiB file" >&2
    exit 1
fi
IMG=$(mktemp "$DIR/mb-queue-bench.XXXXXX.img")
OUT=$(mktemp)
trap 'rm -f "$IMG" "$OUT"' EXIT
# Real data: reads of holes would not reach the device.
dd if=/dev/urandom of="$IMG" bs=1M count=1024 status=none conv=fsync

# cpu_run CMD...: runs CMD; $OUT gets "CPU USER SYS" in seconds, to the
# microsecond (GNU time prints hundredths: 0.34 us per request at 29000).
cpu_run() {
    ${RT_CMD} /usr/bin/python3 -c 'import resource, subprocess, sys
r = subprocess.run(sys.argv[2:])
u = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write("CPU %.6f %.6f\n" % (u.ru_utime, u.ru_stime))
sys.exit(r.returncode)' "$OUT" "$@"
}
# Each prints "RATE CPU_US_PER_REQUEST".
cpu_per_req() { awk -v c="$COUNT" '/^CPU/ { printf " %.2f\n", ($2 + $3) * 1e6 / c }' "$OUT"; }
run_mb() {
    cpu_run \
        "$QB" "file=$IMG,format=raw,cache=none,aio=native,read-only=on" "$COUNT" "$DEPTH" $BS $STRIDE |
        awk '/requests\/s/ { printf "%s", $6 }'
    cpu_per_req
}
run_img() {
    cpu_run \
        "$MB" bench -f raw -t none -i native -d "$DEPTH" -s $BS -S $STRIDE -c "$COUNT" "$IMG" |
        awk -v c="$COUNT" '/Run completed in/ { printf "%.0f", c / $4 }'
    cpu_per_req
}
run_qemu() {
    cpu_run \
        qemu-img bench -f raw -t none -i native -d "$DEPTH" -s $BS -S $STRIDE -c "$COUNT" "$IMG" |
        awk -v c="$COUNT" '/Run completed in/ { printf "%.0f", c / $4 }'
    cpu_per_req
}
run_fio() {
    cpu_run \
        fio --name=randread --filename="$IMG" --rw=randread --bs=$BS --iodepth="$DEPTH" --ioengine=libaio \
            --direct=1 --size=1G --number_ios="$COUNT" --norandommap --randrepeat=0 \
            --output-format=terse --terse-version=3 | awk -F';' '{ printf "%s", $8 }'
    cpu_per_req
}

declare -A RATE CPU MED
TOOLS="mb img qemu fio"
for k in $TOOLS; do RATE[$k]=""; CPU[$k]=""; done
for i in $(seq "$ROUNDS"); do
    # The order rotates each round, so that no tool always runs first.
    set -- $TOOLS
    for _ in $(seq $(((i - 1) % 4))); do set -- "$@" "$1"; shift; done
    for k in "$@"; do
        read -r r c < <("run_$k")
        RATE[$k]+="$r"$'\n'
        CPU[$k]+="$c"$'\n'
    done
    echo "round $i ($*): queue API $(echo "${RATE[mb]}" | sed -n "${i}p"), miniblock-img $(echo "${RATE[img]}" | sed -n "${i}p"), qemu-img $(echo "${RATE[qemu]}" | sed -n "${i}p"), fio $(echo "${RATE[fio]}" | sed -n "${i}p") requests/s"
done

# "median min max" of a newline-separated list.
stats() { sort -n | awk 'NF { v[n++] = $1 } END { m = n % 2 ? v[(n-1)/2] : (v[n/2-1] + v[n/2]) / 2; print m, v[0], v[n-1] }'; }
echo
echo "4 KiB reads, O_DIRECT, aio=native, QD$DEPTH, 36 KiB stride over 1 GiB, $COUNT requests, $ROUNDS interleaved rounds, file in $DIR"
echo "load $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs${RT_CMD:+, every tool under $RT_CMD} (the machine may be shared: absolute figures are noisy, ratios less so)"
printf '  %-30s %22s %26s\n' "" "requests/s med [min-max]" "CPU us/request med [min-max]"
for k in $TOOLS; do
    case $k in mb) name="public queue API";; img) name="miniblock-img bench";; qemu) name="qemu-img bench";; fio) name="fio libaio randread";; esac
    read -r rm rl rh <<<"$(printf '%s' "${RATE[$k]}" | stats)"
    read -r cm cl ch <<<"$(printf '%s' "${CPU[$k]}" | stats)"
    printf '  %-30s %8.0f [%.0f-%.0f] %12.2f [%.2f-%.2f]\n' "$name" "$rm" "$rl" "$rh" "$cm" "$cl" "$ch"
    MED[$k]=$rm
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
echo "ratios of the medians (targets: >= 1.00 vs qemu-img, >= 0.95 vs fio):"
echo "  queue API / qemu-img bench:     $(ratio "${MED[mb]}" "${MED[qemu]}")"
echo "  queue API / fio:                $(ratio "${MED[mb]}" "${MED[fio]}")"
echo "  miniblock-img / qemu-img bench: $(ratio "${MED[img]}" "${MED[qemu]}")"
echo "  miniblock-img / fio:            $(ratio "${MED[img]}" "${MED[fio]}")"
