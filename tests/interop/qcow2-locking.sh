#!/bin/bash
# Locking of qcow2 chains against real QEMU tools: a writable qcow2 takes
# R,W,RS on its file and forbids W/WU/RS to others; its backing file gets
# the backing row (consistent read, forbidding write); QEMU's tools are
# refused with their own messages while miniblock holds the chain.
source "$(dirname "$0")/lib.sh"
need qemu-img qemu-io
cd "$T"

qemu-img create -q -f raw base.raw 4M
qemu-io -f raw -c 'write -P 0x42 0 4M' base.raw >/dev/null
"$MINIBLOCK_IMG" create -f qcow2 -b base.raw -F raw ov.qcow2 >/dev/null

hold rw "$MINIBLOCK_IO" ov.qcow2
echo 'write -P 1 0 4k' >&$HOLD_FD
wait_for "$T/hold-rw.out" '\[ok\]' || not_ok "miniblock-io opened the overlay"

expect_output "base: backing row" \
    "pid $HOLD_PID \(miniblock-io\): uses: consistent read / forbids: write, write unchanged, resize" \
    "$MINIBLOCK_IMG" locks base.raw
expect_output "overlay: R,W,RS, forbidding W,WU,RS" \
    "pid $HOLD_PID \(miniblock-io\): uses: consistent read, write, resize / forbids: write, write unchanged, resize" \
    "$MINIBLOCK_IMG" locks ov.qcow2
expect_fail "qemu-img info refused on the held overlay" "Failed to get shared \"write\" lock" qemu-img info ov.qcow2
expect_ok "qemu-img info -U still works" qemu-img info -U ov.qcow2
expect_fail "qemu-io writing the base refused" "Failed to get \"write\" lock" qemu-io -f raw -c 'write 0 4k' base.raw
expect_fail "qemu-img commit refused" "Failed to get \"write\" lock" qemu-img commit ov.qcow2
expect_ok "qemu-io reading the base with -U works" qemu-io -r -U -f raw -c 'read -P 0x42 0 4k' base.raw
expect_ok "qemu-img reading the base read-only works" qemu-img compare -f raw -F raw base.raw base.raw
expect_fail "a second miniblock writer refused" "Failed to get \"write\" lock" "$MINIBLOCK_IO" -c 'read 0 4k' ov.qcow2
expect_fail "lock=shared read-write refused for qcow2" \
    "'ov.qcow2': lock=shared is not possible on a writable non-raw image" \
    "$MINIBLOCK_IO" -l shared -c 'read 0 4k' ov.qcow2

echo quit >&$HOLD_FD
wait "$HOLD_PID"
expect_output "after close: the base is free" "no locks held" "$MINIBLOCK_IMG" locks base.raw
expect_ok "after close: qemu-img commit works" qemu-img commit ov.qcow2
expect_ok "after close: the commit reached the base" qemu-io -f raw -c 'read -P 1 0 4k' -c 'read -P 0x42 4k 4k' base.raw

# Read-only overlays share everything but write, like QEMU.
hold ro "$MINIBLOCK_IO" -r ov.qcow2
echo 'read 0 4k' >&$HOLD_FD
wait_for "$T/hold-ro.out" '\[ok\]' || not_ok "miniblock-io opened the overlay read-only"
expect_ok "qemu-img info works beside a read-only miniblock" qemu-img info ov.qcow2
expect_fail "qemu-io writing the overlay refused beside a reader" "Failed to get \"write\" lock" \
    qemu-io -c 'write 0 4k' ov.qcow2
echo quit >&$HOLD_FD
wait "$HOLD_PID"

finish
