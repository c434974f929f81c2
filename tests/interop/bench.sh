#!/bin/bash
# miniblock-img bench sends the requests qemu-img bench sends: the same
# count, offsets and sizes, seen by strace on the file.  The random mode (our
# extension) stays inside the image, aligned and reproducible.
. "$(dirname "$0")/lib.sh"
need qemu-img strace
IMG=$T/a.raw
truncate -s 64k "$IMG"

# offsets TOOL ARGS...: the offset of every 4 KiB read the tool makes on the
# image file (the format probe reads other sizes), one per line.
offsets() {
    local tool=$1; shift
    strace -f -qq -e trace=pread64,preadv -o "$T/strace" "$tool" bench -f raw "$@" "$IMG" >/dev/null || return 1
    awk -F', ' '/= 4096$/ { o = $NF; sub(/\).*/, "", o); print o }' "$T/strace"
}

# 15 requests fit before the wrap (0 .. 57344), so qemu-img 7.2 (which wraps
# at the image size) and miniblock (which wraps at image size - request
# size, as qemu-img since ff2ab634) send exactly the same requests.
offsets qemu-img -c 15 -d 1 >"$T/q"
offsets "$MINIBLOCK_IMG" -c 15 -d 1 >"$T/m"
expect_ok "bench: 15 strided reads at qemu-img's offsets" cmp "$T/q" "$T/m"
expect_output "bench: and exactly 15 of them" '^15$' wc -l <"$T/m"
# Past the wrap: the 16th request goes back to 0, never to a misaligned
# offset (the old rule, span = image size - size + 1, sent 61440 and then
# 4095, so every later request was misaligned).
offsets "$MINIBLOCK_IMG" -c 40 -d 4 | sort -n | uniq >"$T/m"
expect_ok "bench: wrapped offsets stay 4 KiB multiples" awk '$1 % 4096 { exit 1 }' "$T/m"
expect_output "bench: the wrap is at image size - request size" '^57344$' tail -1 "$T/m"
# A step that is not a multiple of the request: qemu-img's arithmetic
# (64096 wraps modulo 61440 to 2656).
offsets "$MINIBLOCK_IMG" -c 3 -d 1 -o 4096 -S 30000 >"$T/m"
expect_output "bench: -o and -S as qemu-img" '^4096 34096 2656$' paste -sd' ' "$T/m"

# Random mode.
offsets "$MINIBLOCK_IMG" -c 200 -d 8 --random=7 -S 8192 >"$T/r1"
offsets "$MINIBLOCK_IMG" -c 200 -d 8 --random=7 -S 8192 >"$T/r2"
offsets "$MINIBLOCK_IMG" -c 200 -d 8 --random=8 -S 8192 >"$T/r3"
expect_output "bench --random: 200 requests" '^200$' wc -l <"$T/r1"
expect_ok "bench --random: offsets are multiples of the step, inside the image" \
    awk '$1 % 8192 || $1 > 65536 - 4096 { exit 1 }' "$T/r1"
expect_ok "bench --random: the same seed, the same offsets" cmp <(sort -n "$T/r1") <(sort -n "$T/r2")
expect_fail "bench --random: another seed, other offsets" '' cmp -s <(sort -n "$T/r1") <(sort -n "$T/r3")
expect_output "bench --random: all 8 slots used" '^8$' sh -c "sort -nu '$T/r1' | wc -l"
expect_output "bench --random: the banner says so" \
    '^Sending 5 read requests, 4096 bytes each, 64 in parallel \(random offsets from 0, multiples of 4096, seed 1\)$' \
    "$MINIBLOCK_IMG" bench -f raw -c 5 --random "$IMG"
expect_fail "bench --random: a bad seed" "^miniblock-img: Invalid value 'x' for --random$" \
    "$MINIBLOCK_IMG" bench -f raw --random=x "$IMG"
expect_fail "bench --random: step 0" '^miniblock-img: --random needs a step \(-S\) of at least 1$' \
    "$MINIBLOCK_IMG" bench -f raw --random -S 0 "$IMG"
expect_fail "bench --random: no room after -o" '^miniblock-img: Offset 61441 leaves no room for a request of 4096 bytes$' \
    "$MINIBLOCK_IMG" bench -f raw --random -o 61441 "$IMG"

# The I/O goes through the public queue API (mbq_read/mbq_write), so the
# benchmark gets what an embedder gets: with cache=none, a request that is
# not aligned is refused before anything is sent, naming the values.
expect_fail "bench -t none: unaligned requests are refused as the queue API refuses them" \
    '^miniblock-img: mbq_read: offset 0 and length 5000 must be multiples of [0-9]+ with cache=none$' \
    "$MINIBLOCK_IMG" bench -f raw -t none -c 4 -d 2 -s 5000 "$IMG"
expect_output "bench -t none -i native: aligned requests run" 'requests/s$' \
    "$MINIBLOCK_IMG" bench -f raw -t none -i native -c 64 -d 8 -S 8192 "$IMG"
expect_output "bench -w -t none -i native: the same for writes" 'requests/s$' \
    "$MINIBLOCK_IMG" bench -f raw -w -t none -i native -c 64 -d 8 "$IMG"
finish
