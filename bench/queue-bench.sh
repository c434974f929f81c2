#!/bin/bash
# 4 KiB O_DIRECT reads at queue depth 32, aio=native, on a 36 KiB stride over
# a 1 GiB file (neither sequential nor wrapping: COUNT stays below 1 GiB /
# 36 KiB): the public queue API (bench/mb-queue-bench.c, what an embedder
# gets) vs qemu-img bench with the same offsets, and vs fio (libaio,
# randread, same request count and size).  Interleaved rounds; medians with
# min and max; CPU time per request (user + system) beside each rate.
#
#   bench/queue-bench.sh [BUILD_DIR]     (env: COUNT, ROUNDS, BENCH_DIR)
# Not a test: the machine is shared and loaded; read the ratios.
set -eu
BUILD=${1:-build}
COUNT=${COUNT:-29000}
ROUNDS=${ROUNDS:-5}
DIR=${BENCH_DIR:-/var/tmp}
SIZE=$((1 << 30))
BS=4096
STRIDE=36864
QB=$BUILD/bench/mb-queue-bench
for t in "$QB" qemu-img fio /usr/bin/time; do
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

# Each prints "RATE CPU_US_PER_REQUEST".
run_mb() {
    "$QB" "file=$IMG,format=raw,cache=none,aio=native,read-only=on" "$COUNT" 32 $BS $STRIDE |
        awk '/requests\/s/ { print $6, $8 }'
}
run_qemu() {
    /usr/bin/time -f 'CPU %U %S' -o "$OUT" \
        qemu-img bench -f raw -t none -i native -d 32 -s $BS -S $STRIDE -c "$COUNT" "$IMG" |
        awk -v c="$COUNT" '/Run completed in/ { printf "%.0f", c / $4 }'
    awk -v c="$COUNT" '/^CPU/ { printf " %.2f\n", ($2 + $3) * 1e6 / c }' "$OUT"
}
run_fio() {
    /usr/bin/time -f 'CPU %U %S' -o "$OUT" \
        fio --name=randread --filename="$IMG" --rw=randread --bs=$BS --iodepth=32 --ioengine=libaio \
            --direct=1 --size=1G --number_ios="$COUNT" --norandommap --randrepeat=0 \
            --output-format=terse --terse-version=3 | awk -F';' '{ printf "%s", $8 }'
    awk -v c="$COUNT" '/^CPU/ { printf " %.2f\n", ($2 + $3) * 1e6 / c }' "$OUT"
}

declare -A RATE CPU MED
for k in mb qemu fio; do RATE[$k]=""; CPU[$k]=""; done
for i in $(seq "$ROUNDS"); do
    for k in mb qemu fio; do
        read -r r c < <("run_$k")
        RATE[$k]+="$r"$'\n'
        CPU[$k]+="$c"$'\n'
    done
    echo "round $i: queue API $(echo "${RATE[mb]}" | sed -n "${i}p"), qemu-img $(echo "${RATE[qemu]}" | sed -n "${i}p"), fio $(echo "${RATE[fio]}" | sed -n "${i}p") requests/s"
done

# "median min max" of a newline-separated list.
stats() { sort -n | awk 'NF { v[n++] = $1 } END { m = n % 2 ? v[(n-1)/2] : (v[n/2-1] + v[n/2]) / 2; print m, v[0], v[n-1] }'; }
echo
echo "4 KiB reads, O_DIRECT, aio=native, QD32, 36 KiB stride over 1 GiB, $COUNT requests, $ROUNDS interleaved rounds, file in $DIR"
echo "(the machine is shared with other builds: absolute figures are noisy, ratios less so)"
printf '  %-30s %22s %26s\n' "" "requests/s med [min-max]" "CPU us/request med [min-max]"
for k in mb qemu fio; do
    case $k in mb) name="public queue API";; qemu) name="qemu-img bench";; fio) name="fio libaio randread";; esac
    read -r rm rl rh <<<"$(printf '%s' "${RATE[$k]}" | stats)"
    read -r cm cl ch <<<"$(printf '%s' "${CPU[$k]}" | stats)"
    printf '  %-30s %8.0f [%.0f-%.0f] %12.2f [%.2f-%.2f]\n' "$name" "$rm" "$rl" "$rh" "$cm" "$cl" "$ch"
    MED[$k]=$rm
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
echo "ratios of the medians (targets: >= 1.00 vs qemu-img, >= 0.95 vs fio):"
echo "  queue API / qemu-img bench: $(ratio "${MED[mb]}" "${MED[qemu]}")"
echo "  queue API / fio:            $(ratio "${MED[mb]}" "${MED[fio]}")"
