#!/bin/bash
# blkdebug (block/drivers/blkdebug.c) fails chosen requests; each failure
# must leave the image consistent for qemu-img check and the locks of the
# process exactly as they were.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io
IO=$MINIBLOCK_IO
IMG=$MINIBLOCK_IMG

# check_clean NAME FILE: qemu-img check finds no corruption.  A cluster
# allocated by a write that then failed may be leaked (exit 3: "waste of
# disk space, but no harm to data"), as QEMU leaves it too; anything else
# (exit 2: corruption) fails.
check_clean() {
    local out rc
    out=$(qemu-img check "$2" 2>&1)
    rc=$?
    if [ "$rc" -eq 0 ] || { [ "$rc" -eq 3 ] && grep -q "leaked clusters were found" <<<"$out" &&
        ! grep -qi "error" <<<"$out"; }; then
        ok "$1"
    else
        not_ok "$1" "exit $rc" "$out"
    fi
}

# --- rules -----------------------------------------------------------------------
qemu-img create -q -f raw "$T/r.raw" 1M
B="driver=raw,file.driver=blkdebug,file.file.driver=file,file.file.filename=$T/r.raw"
expect_fail "a read rule fails reads with its errno" 'read failed: No space left on device' \
    "$IO" -c 'read 0 512' --image-opts "$B,file.rules=read:ENOSPC"
expect_ok "a rule at an offset spares other requests" \
    "$IO" -c 'read 0 512' -c 'write 0 512' --image-opts "$B,file.rules=read@4096;write@4096"
expect_fail "... and fails the request covering it" 'write failed: Input/output error' \
    "$IO" -c 'write 4000 512' --image-opts "$B,file.rules=write@4096"
expect_fail "once: the first request fails, the second passes" 'wrote 512/512' \
    "$IO" -c 'write 0 512' -c 'write 0 512' --image-opts "$B,file.rules=write:once"
expect_fail "after=N: the first N pass, then it fires" 'write failed: Input/output error' \
    "$IO" -c 'write 0 512' -c 'write 512 512' -c 'write 1024 512' --image-opts "$B,file.rules=write:after=2"
expect_fail "a flush rule fails flush" 'flush failed: Input/output error' \
    "$IO" -c 'flush' --image-opts "$B,file.rules=flush"
expect_fail "a bad event is named" "Unknown blkdebug event 'wirte'" \
    "$IO" -c 'read 0 512' --image-opts "$B,file.rules=wirte"
expect_fail "... with the valid ones" "^Valid events: read, write, write-zeroes, discard, flush, event=NAME$" \
    "$IO" -c 'read 0 512' --image-opts "$B,file.rules=wirte"
expect_fail "a bad field is named" "Invalid blkdebug rule field 'EFOO'" \
    "$IO" -c 'read 0 512' --image-opts "$B,file.rules=read:EFOO"
qemu-io -f raw -c 'write -P 0x66 0 4096' "$T/r.raw" >/dev/null
expect_fail "a failed write has changed nothing" 'write failed' \
    "$IO" -c 'write -P 0x77 0 4096' --image-opts "$B,file.rules=write"
expect_ok "... qemu-io reads the old data" qemu-io -f raw -c 'read -P 0x66 0 4096' "$T/r.raw"

# --- a failed write in the middle of a qcow2 allocation -------------------------------
# A first write to a fresh image allocates: an L2 table, a data cluster,
# refcounts, the L1 entry.  Fail the N-th write of it, for every N.  qcow2
# keeps metadata in its cache until a flush, so the flush is part of the
# request: only a write and a flush that both succeeded promise the data.
failed=0
for n in 0 1 2 3 4 5 6 7; do
    qemu-img create -q -f qcow2 "$T/a.qcow2" 4M
    Q="driver=qcow2,file.driver=blkdebug,file.rules=write:EIO:once:after=$n,file.file.driver=file,file.file.filename=$T/a.qcow2"
    if out=$("$IO" -c 'write -P 0x11 0 64k' -c 'flush' --image-opts "$Q" 2>&1) &&
        ! printf '%s\n' "$out" | grep -q 'failed'; then
        qemu-io -f qcow2 -c 'read -P 0x11 0 64k' "$T/a.qcow2" >/dev/null ||
            not_ok "write $n of the allocation: it succeeded and qemu-io reads it" "$out"
        break
    fi
    failed=$((failed + 1))
    check_clean "write $n of the allocation failed: qemu-img check finds the image consistent" "$T/a.qcow2"
    if printf '%s\n' "$out" | grep -q 'write failed'; then
        expect_ok "... and qemu-io reads the cluster unchanged (zeroes)" \
            qemu-io -f qcow2 -c 'read -P 0 0 64k' "$T/a.qcow2"
    elif qemu-io -f qcow2 -c 'read -P 0 0 64k' "$T/a.qcow2" >/dev/null ||
         qemu-io -f qcow2 -c 'read -P 0x11 0 64k' "$T/a.qcow2" >/dev/null; then
        # The write succeeded and the flush failed: the cluster is either
        # old or new, never a mix, and the image is consistent.
        ok "... the write succeeded and its flush failed: qemu-io reads the old or the new data"
    else
        not_ok "... the write succeeded and its flush failed: qemu-io reads a mix" "$out"
    fi
done
if [ "$failed" -ge 2 ]; then ok "$failed points of one allocation were failed"; else not_ok "$failed points of one allocation were failed"; fi

# The locks of a process whose write failed are exactly as before.
qemu-img create -q -f qcow2 "$T/l.qcow2" 4M
hold l "$IO" --image-opts "driver=qcow2,file.driver=blkdebug,file.rules=write:once:after=1,file.file.driver=file,file.file.filename=$T/l.qcow2"
echo "read 0 512" >&"$HOLD_FD_l"
wait_for "$T/hold-l.out" '\[ok\]' || true
before=$(held_locks "$HOLD_PID_l" "$T/l.qcow2")
echo "write -P 0x11 0 64k" >&"$HOLD_FD_l"
wait_for "$T/hold-l.out" 'write failed' || true
after=$(held_locks "$HOLD_PID_l" "$T/l.qcow2")
if [ -n "$before" ] && [ "$before" = "$after" ]; then
    ok "a failed allocating write leaves the lock bytes exactly as before"
else
    not_ok "a failed allocating write leaves the lock bytes exactly as before" "before: $before" "after: $after"
fi
expect_fail "... and they still keep qemu-io out" 'Failed to get "write" lock' \
    qemu-io -f qcow2 -c 'write 0 512' "$T/l.qcow2"
eval "exec $HOLD_FD_l>&-"
wait "$HOLD_PID_l"
check_clean "... and the image is consistent" "$T/l.qcow2"

# --- EIO on a backing read ---------------------------------------------------------
qemu-img create -q -f raw "$T/base.raw" 4M
qemu-io -f raw -c 'write -P 0x22 0 4M' "$T/base.raw" >/dev/null
qemu-img create -q -f qcow2 -b "$T/base.raw" -F raw "$T/top.qcow2"
TOP="driver=qcow2,file.driver=file,file.filename=$T/top.qcow2,backing.driver=raw,backing.file.driver=blkdebug,backing.file.rules=read:EIO,backing.file.file.driver=file,backing.file.file.filename=$T/base.raw"
expect_fail "a backing read fails with EIO" 'read failed: Input/output error' \
    "$IO" -c 'read 0 4096' --image-opts "$TOP"
expect_fail "a partial write needing the backing data (copy-on-write) fails" 'write failed: Input/output error' \
    "$IO" -c 'write -P 0x33 512 512' --image-opts "$TOP"
check_clean "... the overlay is consistent" "$T/top.qcow2"
expect_ok "... and still shows the backing data" qemu-io -f qcow2 -c 'read -P 0x22 0 64k' "$T/top.qcow2"

# --- a failed flush during commit -----------------------------------------------------
qemu-io -f qcow2 -c 'write -P 0x44 0 64k' "$T/top.qcow2" >/dev/null
C="driver=qcow2,file.driver=file,file.filename=$T/top.qcow2,backing.driver=raw,backing.file.driver=blkdebug,backing.file.rules=flush:EIO,backing.file.file.driver=file,backing.file.file.filename=$T/base.raw"
hold c "$IO" --image-opts "$C"
echo "read 0 512" >&"$HOLD_FD_c"
wait_for "$T/hold-c.out" '\[ok\]' || true
before_top=$(held_locks "$HOLD_PID_c" "$T/top.qcow2") before_base=$(held_locks "$HOLD_PID_c" "$T/base.raw")
echo "commit" >&"$HOLD_FD_c"
wait_for "$T/hold-c.out" 'failed; the overlay is unchanged' || true
if grep -qF "Commit of '$T/top.qcow2' into '$T/base.raw' failed; the overlay is unchanged: Input/output error" "$T/hold-c.out"; then
    ok "a failed flush fails the commit, saying the overlay is unchanged"
else
    not_ok "a failed flush fails the commit, saying the overlay is unchanged" "$(cat "$T/hold-c.out")"
fi
if [ -n "$before_top" ] && [ -n "$before_base" ] &&
    [ "$before_top" = "$(held_locks "$HOLD_PID_c" "$T/top.qcow2")" ] &&
    [ "$before_base" = "$(held_locks "$HOLD_PID_c" "$T/base.raw")" ]; then
    ok "... the lock bytes of overlay and base are exactly as before"
else
    not_ok "... the lock bytes of overlay and base are exactly as before" \
        "top before: $before_top" "top after: $(held_locks "$HOLD_PID_c" "$T/top.qcow2")" \
        "base before: $before_base" "base after: $(held_locks "$HOLD_PID_c" "$T/base.raw")"
fi
expect_fail "... the base still keeps writers out" 'Failed to get "write" lock' \
    qemu-io -f raw -c 'write 0 512' "$T/base.raw"
eval "exec $HOLD_FD_c>&-"
wait "$HOLD_PID_c"
check_clean "... the overlay is consistent" "$T/top.qcow2"
expect_ok "... and still holds its data" qemu-io -f qcow2 -c 'read -P 0x44 0 64k' "$T/top.qcow2"

# --- qcow2's driver events (event=NAME) -------------------------------------------------
EV="driver=qcow2,file.driver=blkdebug,file.file.driver=file,file.file.filename=$T/e.qcow2"
qemu-img create -q -f qcow2 "$T/e.qcow2" 4M
expect_fail "an unknown driver event is refused, naming it" "Unknown blkdebug driver event 'l3_update'" \
    "$IO" -c 'read 0 512' --image-opts "$EV,file.rules=event=l3_update"
expect_fail "... with the valid names in a hint" \
    "Valid driver events: l1_update, l2_load, l2_update, l2_alloc_write, refblock_load, refblock_update, refblock_alloc, refblock_alloc_hookup, reftable_grow, cluster_alloc, cluster_free, write_aio, read_aio, read_backing_aio, cow_read, cow_write, read_compressed, write_compressed" \
    "$IO" -c 'read 0 512' --image-opts "$EV,file.rules=event=l3_update"
# EIO at each step of a first allocating write (cache=writethrough: the
# write-back of the tables is part of the write).  The writer gets the
# error; the image is consistent.  Where the failure comes before the new
# cluster is linked in, the guest still reads the old data.
for ev in cluster_alloc refblock_update l2_alloc_write l1_update write_aio l2_update; do
    qemu-img create -q -f qcow2 "$T/e.qcow2" 4M
    expect_fail "event=$ev:EIO:once fails the allocating write" 'write failed: Input/output error' \
        "$IO" -t writethrough -c 'write -P 0x11 0 64k' --image-opts "$EV,file.rules=event=$ev:EIO:once"
    check_clean "... qemu-img check finds the image consistent after $ev failed" "$T/e.qcow2"
    case $ev in
    l2_update) ;;  # the table is written again at close: old or new data, both consistent
    *) expect_ok "... and qemu-io reads the old data (zeroes) after $ev failed" \
        qemu-io -f qcow2 -c 'read -P 0 0 64k' "$T/e.qcow2" ;;
    esac
done
qemu-img create -q -f qcow2 "$T/e.qcow2" 4M
expect_fail "after=1 counts events: the second guest write fails, with the rule's errno" \
    'write failed: No space left on device' \
    "$IO" -c 'write -P 0x11 0 64k' -c 'write -P 0x22 64k 64k' --image-opts "$EV,file.rules=event=write_aio:ENOSPC:once:after=1"
expect_ok "... the first one passed" qemu-io -f qcow2 -c 'read -P 0x11 0 64k' -c 'read -P 0 64k 64k' "$T/e.qcow2"
qemu-img create -q -f qcow2 "$T/e.qcow2" 4M
expect_fail "event=NAME:once: after its one failure the next write passes" 'wrote 65536/65536 bytes at offset 0' \
    "$IO" -c 'write -P 0x11 0 64k' -c 'write -P 0x11 0 64k' --image-opts "$EV,file.rules=event=write_aio:once"
out=$("$IO" -c 'write 0 64k' -c 'write 0 64k' --image-opts "$EV,file.rules=event=write_aio" 2>&1)
if [ "$(grep -c 'write failed: Input/output error' <<<"$out")" = 2 ]; then
    ok "event=NAME (always): once armed, every later request fails"
else
    not_ok "event=NAME (always): once armed, every later request fails" "$out"
fi
check_clean "... and the image is consistent" "$T/e.qcow2"
qemu-img create -q -f qcow2 "$T/e.qcow2" 4M
expect_fail "events pass through a filter that does not listen (qcow2 > crash-sim > blkdebug)" \
    'write failed: Input/output error' \
    "$IO" -t writethrough -c 'write 0 64k' --image-opts \
    "driver=qcow2,file.driver=crash-sim,file.file.driver=blkdebug,file.file.rules=event=write_aio:once,file.file.file.driver=file,file.file.file.filename=$T/e.qcow2"
check_clean "... and the image is consistent" "$T/e.qcow2"
qemu-img create -q -f qcow2 "$T/e.qcow2" 4M
qemu-io -f qcow2 -c 'write 0 64k' "$T/e.qcow2" >/dev/null
expect_ok "a rule whose event does not happen never fires (no new L2 table for a rewrite)" \
    "$IO" -c 'write 0 512' --image-opts "$EV,file.rules=event=l2_alloc_write"
check_clean "... and the rewritten image is consistent" "$T/e.qcow2"

# The locks of a process whose allocating write failed at an event are
# exactly as before.
for ev in l2_update refblock_update cluster_alloc; do
    qemu-img create -q -f qcow2 "$T/l.qcow2" 4M
    hold e "$IO" -t writethrough --image-opts \
        "driver=qcow2,file.driver=blkdebug,file.rules=event=$ev:EIO:once,file.file.driver=file,file.file.filename=$T/l.qcow2"
    echo "read 0 512" >&"$HOLD_FD_e"
    wait_for "$T/hold-e.out" '\[ok\]' || true
    before=$(held_locks "$HOLD_PID_e" "$T/l.qcow2")
    echo "write -P 0x11 0 64k" >&"$HOLD_FD_e"
    wait_for "$T/hold-e.out" 'write failed' || true
    after=$(held_locks "$HOLD_PID_e" "$T/l.qcow2")
    if [ -n "$before" ] && [ "$before" = "$after" ] && grep -q 'write failed: Input/output error' "$T/hold-e.out"; then
        ok "EIO at $ev: the write fails and the lock bytes are exactly as before"
    else
        not_ok "EIO at $ev: the write fails and the lock bytes are exactly as before" \
            "before: $before" "after: $after" "$(cat "$T/hold-e.out")"
    fi
    expect_fail "... and they still keep qemu-io out" 'Failed to get "write" lock' \
        qemu-io -f qcow2 -c 'write 0 512' "$T/l.qcow2"
    eval "exec $HOLD_FD_e>&-"
    wait "$HOLD_PID_e"
    rm -f "$T/hold-e.in" "$T/hold-e.out"
    check_clean "... and the image is consistent after $ev failed" "$T/l.qcow2"
done
# --- write-zeroes and discard reach the child as such --------------------------------
# A filter that forwards zeroes as a zero buffer would allocate: the file
# must show holes where the zeroes and the discard went (qemu-img map reads
# the file's extents), and read as zeroes there, the rest untouched.
# map_of FILE: qemu-img's map of a raw file, one "start length data zero" a line.
map_of() {
    qemu-img map --output=json -f raw "$1" |
        /usr/bin/python3 -c 'import json,sys; [print(e["start"], e["length"], e["data"], e["zero"]) for e in json.load(sys.stdin)]'
}
qemu-img create -q -f raw "$T/z.raw" 1M
qemu-io -f raw -c 'write -P 0x5a 0 1M' "$T/z.raw" >/dev/null
Z="driver=raw,file.driver=blkdebug,file.file.driver=file,file.file.filename=$T/z.raw"
expect_ok "write -z -u and discard through blkdebug" \
    "$IO" -c 'write -z -u 0 64k' -c 'discard 256k 128k' --image-opts "$Z"
want=$'0 65536 False True\n65536 196608 True False\n262144 131072 False True\n393216 655360 True False'
got=$(map_of "$T/z.raw")
if [ "$got" = "$want" ]; then
    ok "... the file has holes exactly there (qemu-img map)"
else
    not_ok "... the file has holes exactly there (qemu-img map)" "want: $want" "got: $got"
fi
expect_ok "... which read as zeroes, the rest unchanged (qemu-io)" qemu-io -f raw \
    -c 'read -P 0 0 64k' -c 'read -P 0x5a 64k 192k' -c 'read -P 0 256k 128k' -c 'read -P 0x5a 384k 640k' "$T/z.raw"
expect_fail "a write-zeroes rule fails write -z" 'write failed: No space left on device' \
    "$IO" -c 'write -z 512k 4k' --image-opts "$Z,file.rules=write-zeroes:ENOSPC"
expect_fail "a discard rule fails discard" 'discard failed: Input/output error' \
    "$IO" -c 'discard 512k 4k' --image-opts "$Z,file.rules=discard"
expect_ok "... and neither has touched the data" qemu-io -f raw -c 'read -P 0x5a 512k 4k' "$T/z.raw"

# --- iotype: an enum option (QEMU's BlkdebugIOType) ----------------------------------
expect_fail "iotype=discard fails every discard" 'discard failed: Input/output error' \
    "$IO" -c 'read 0 512' -c 'discard 512k 4k' --image-opts "$Z,file.iotype=discard"
expect_ok "... and nothing else" "$IO" -c 'read 0 512' -c 'write 0 512' -c 'flush' \
    --image-opts "$Z,file.iotype=discard"
expect_fail "iotype=write-zeroes fails write -z" 'write failed: Input/output error' \
    "$IO" -c 'write -z 0 4k' --image-opts "$Z,file.iotype=write-zeroes"
out=$("$IO" -c 'read 0 512' --image-opts "$Z,file.iotype=dicsard" 2>&1)
want="miniblock-io: can't open device $Z,file.iotype=dicsard: Invalid value 'dicsard' for parameter 'file.iotype'
Valid values: read, write, write-zeroes, discard, flush"
if [ "$out" = "$want" ]; then
    ok "a bad iotype is refused naming it and the allowed values"
else
    not_ok "a bad iotype is refused naming it and the allowed values" "want: $want" "got: $out"
fi
if "$IMG" --help blkdebug | grep -qxF "  iotype=<read|write|write-zeroes|discard|flush>"; then
    ok "--help blkdebug lists the values"
else
    not_ok "--help blkdebug lists the values" "$("$IMG" --help blkdebug 2>&1)"
fi
finish
