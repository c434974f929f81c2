#!/bin/bash
# 4 KiB O_DIRECT reads at queue depth 32 on one file: miniblock-img bench vs
# qemu-img bench (aio=native and aio=threads) vs fio (libaio), in one run,
# interleaved, best of ROUNDS each.  Prints requests/s and the ratios.
#
#   bench/read-bench.sh [BUILD_DIR]      (env: COUNT, ROUNDS, SIZE_MB, BENCH_DIR)
# Not a test: these machines are noisy; the ratio is what to read.
set -eu
BUILD=${1:-build}
COUNT=${COUNT:-200000}
ROUNDS=${ROUNDS:-3}
SIZE_MB=${SIZE_MB:-256}
DIR=${BENCH_DIR:-/var/tmp}
MB=$BUILD/tools/miniblock-img
for t in "$MB" qemu-img fio; do command -v "$t" >/dev/null || { echo "read-bench: $t not found" >&2; exit 1; }; done
IMG=$(mktemp "$DIR/mb-bench.XXXXXX.img")
trap 'rm -f "$IMG"' EXIT
# Real data: reads of holes would skip the device.
dd if=/dev/urandom of="$IMG" bs=1M count="$SIZE_MB" status=none conv=fsync

rate_mb() { "$MB" bench -f raw -t none -i "$1" -d 32 -s 4k -c "$COUNT" "$IMG" | awk '/requests\/s/ {print $1}'; }
rate_qemu() {
    qemu-img bench -f raw -t none -i "$1" -d 32 -s 4k -c "$COUNT" "$IMG" |
        awk -v c="$COUNT" '/Run completed in/ {printf "%.0f\n", c / $4}'
}
rate_fio() {
    fio --name=read --filename="$IMG" --rw=read --bs=4k --iodepth=32 --ioengine=libaio \
        --direct=1 --number_ios="$COUNT" --size="${SIZE_MB}M" --output-format=terse --terse-version=3 |
        awk -F';' '{print $8}'
}
best() { sort -n | tail -1; }

declare -A R
for k in mb_native qemu_native mb_threads qemu_threads fio; do R[$k]=""; done
for i in $(seq "$ROUNDS"); do
    R[mb_native]+="$(rate_mb native)"$'\n'
    R[qemu_native]+="$(rate_qemu native)"$'\n'
    R[fio]+="$(rate_fio)"$'\n'
    R[mb_threads]+="$(rate_mb threads)"$'\n'
    R[qemu_threads]+="$(rate_qemu threads)"$'\n'
done
for k in "${!R[@]}"; do R[$k]=$(printf '%s' "${R[$k]}" | best); done

echo "4 KiB sequential reads, O_DIRECT, queue depth 32, $COUNT requests, best of $ROUNDS, ${SIZE_MB} MiB file in $DIR"
printf '  %-34s %10s requests/s\n' "miniblock-img bench, aio=native" "${R[mb_native]}"
printf '  %-34s %10s requests/s\n' "qemu-img bench, aio=native" "${R[qemu_native]}"
printf '  %-34s %10s requests/s\n' "fio, libaio" "${R[fio]}"
printf '  %-34s %10s requests/s\n' "miniblock-img bench, aio=threads" "${R[mb_threads]}"
printf '  %-34s %10s requests/s\n' "qemu-img bench, aio=threads" "${R[qemu_threads]}"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
echo "ratios (target: >= 1.00 vs qemu-img, >= 0.95 vs fio):"
echo "  miniblock/qemu-img, aio=native:  $(ratio "${R[mb_native]}" "${R[qemu_native]}")"
echo "  miniblock/qemu-img, aio=threads: $(ratio "${R[mb_threads]}" "${R[qemu_threads]}")"
echo "  miniblock(native)/fio(libaio):   $(ratio "${R[mb_native]}" "${R[fio]}")"
