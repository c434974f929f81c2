#!/bin/bash
# miniblock-io's qemu-io commands with qemu-io 7.2 as the oracle: the same
# command lines on copies of the same image give the same output (timing
# lines aside) and leave the same bytes.  Then reopen and truncate as
# permission transactions, proven by the lock bytes.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io python3
IO=$MINIBLOCK_IO
MI=$MINIBLOCK_IMG
cd "$T" || exit 1

# same_output NAME FMT IMAGE CMD...: both tools run the -c commands on their
# own copy of IMAGE; stdout (timing lines dropped) and the final bytes agree.
same_output() {
    local name=$1 fmt=$2 img=$3; shift 3
    local args=() c
    for c in "$@"; do args+=(-c "$c"); done
    cp "$img" q.copy; cp "$img" m.copy
    qemu-io -f "$fmt" "${args[@]}" q.copy 2>&1 | grep -v ' ops; ' >q.out
    "$IO" -f "$fmt" "${args[@]}" m.copy 2>&1 | grep -v ' ops; ' >m.out
    if ! diff -u q.out m.out >d.out; then
        not_ok "$name: output as qemu-io's" "$(cat d.out)"
    elif ! qemu-img compare -f "$fmt" -F "$fmt" q.copy m.copy >/dev/null 2>&1; then
        not_ok "$name: the same bytes as qemu-io's" "$(qemu-img compare -f "$fmt" -F "$fmt" q.copy m.copy 2>&1)"
    else
        ok "$name"
    fi
}

qemu-img create -f raw r.raw 1M >/dev/null
qemu-img create -f qcow2 q.qcow2 4M >/dev/null
qemu-io -f qcow2 -c 'write -P 1 0 64k' -c 'write -P 2 1M 4k' -c 'write -z 2M 64k' q.qcow2 >/dev/null
qemu-img create -f raw b.raw 4M >/dev/null
qemu-io -f raw -c 'write -P 9 3M 64k' b.raw >/dev/null
qemu-img create -f qcow2 -b b.raw -F raw o.qcow2 >/dev/null
qemu-io -f qcow2 -c 'write -P 3 64k 64k' o.qcow2 >/dev/null

same_output "read and write" raw r.raw 'write -P 0x11 0 4k' 'read -P 0x11 0 4k' 'read -P 0x12 0 4k' 'write 4k 512'
same_output "reads and writes past the end" raw r.raw 'write 1M 512' 'read 1020k 8k' 'write -z 2M 512'
same_output "readv and writev" raw r.raw 'writev -P 0x21 0 512 1k 2k' 'readv -P 0x21 0 512 1k 2k' 'readv -P 0x21 0 4k'
same_output "readv -v" raw r.raw 'writev -P 0x41 0 16 16' 'readv -v 0 16 16'
same_output "aio_write, aio_read, aio_flush" raw r.raw 'aio_write -P 0x31 0 4k' 'aio_flush' 'aio_read -P 0x31 0 4k' 'aio_flush'
same_output "aio and alloc past the end" raw r.raw 'aio_read 2M 4k' 'aio_flush' 'aio_write 1020k 8k' 'aio_flush' 'alloc 2M' 'alloc 1020k 8k' 'readv 1020k 4k 4k' 'writev 2M 512'
same_output "write -f, write -z -u, and -u alone" raw r.raw 'write -f -P 3 0 4k' 'write -z -u 4k 4k' 'read -P 0 4k 4k' 'write -u 0 512'
same_output "read -P -s -l" raw r.raw 'write -P 7 0 4k' 'write -P 8 1k 1k' 'read -P 8 -s 1k -l 1k 0 4k' 'read -P 7 -s 1k -l 2k 0 4k' 'read -P 7 -l 1k 0 4k'
same_output "length" raw r.raw 'length'
same_output "info (raw)" raw r.raw 'info'
same_output "info (qcow2)" qcow2 q.qcow2 'info'
same_output "map (raw)" raw r.raw 'map'
same_output "map (qcow2)" qcow2 q.qcow2 'map'
same_output "map (qcow2 over raw)" qcow2 o.qcow2 'map'
same_output "alloc" qcow2 q.qcow2 'alloc 0 128k' 'alloc 64k' 'alloc 1M 4k' 'alloc 2M 64k'
same_output "alloc in an overlay (its own layer only)" qcow2 o.qcow2 'alloc 0 256k' 'alloc 3M 64k'
same_output "alloc (raw)" raw r.raw 'alloc 0 4k'
same_output "truncate (raw)" raw r.raw 'truncate 2M' 'length' 'write -P 5 1536k 4k' 'read -P 5 1536k 4k'
same_output "open -o with a path" raw r.raw 'close' 'open -o driver=raw m.copy' 'length'

expect_output "open -d ignore: a discard keeps the data" '^read 4096/4096 bytes at offset 0$' \
    "$IO" -c 'open -d ignore -f raw r.raw' -c 'write -P 9 0 4k' -c 'discard 0 4k' -c 'read -P 9 0 4k'
expect_output "open -o with -f and a path" '^1 MiB$' "$IO" -c 'open -o discard=unmap -f raw r.raw' -c length
expect_output "help CMD: qemu-io's shape" '^alloc OFF \[LEN\] -- checks if offset is allocated in the file$' "$IO" -c 'help alloc'
expect_output "help lists every command" '^  aio_flush +completes all outstanding aio requests$' "$IO" -c help
expect_fail "help of an unknown command" '^command frob not found$' "$IO" -c 'help frob'
expect_fail "reopen: a bad option" "^reopen: Cannot change option 'cache' on reopen$" "$IO" -f raw -c 'reopen -o cache=none' r.raw
expect_fail "reopen: -r with -w" '^reopen: -r and -w are mutually exclusive$' "$IO" -f raw -c 'reopen -r -w' r.raw
expect_fail "truncate on a read-only image" '^truncate: Operation not permitted: the image is read-only$' "$IO" -r -f raw -c 'truncate 2M' r.raw
# write -c: compressed clusters in qcow2 (qemu-io's flag); refused where
# nothing can compress, never written uncompressed.
qemu-img create -q -f qcow2 wc.qcow2 1M
expect_output "write -c: whole clusters, compressed" '^wrote 131072/131072 bytes at offset 65536$' \
    "$IO" -c 'write -c -P 0x21 64k 128k' wc.qcow2
expect_output "write -c: qemu-io reads them back" '^read 131072/131072 bytes at offset 65536$' \
    qemu-io -c 'read -P 0x21 64k 128k' wc.qcow2
expect_output "write -c: qemu-img sees compressed clusters" '100.00% compressed clusters' qemu-img check wc.qcow2
expect_fail "write -c over an allocated cluster (EIO, as QEMU's)" '^write failed: Input/output error$' \
    "$IO" -c 'write -c 64k 64k' wc.qcow2
expect_fail "write -c on raw" '^write failed: Operation not supported$' "$IO" -f raw -c 'write -c 0 4k' r.raw
expect_fail "write -c -z" '^write: -c and -z cannot be used together$' "$IO" -c 'write -c -z 0 64k' wc.qcow2

# holders_of PID FILE: that process's lock bytes on FILE, as miniblock-img locks sees them.
holders_of() {
    "$MI" locks --output=json "$2" | python3 -c '
import json, sys
pid = int(sys.argv[1])
for f in json.load(sys.stdin):
    for h in f["holders"]:
        if h["pid"] == pid:
            print("uses", ",".join(h["uses"]), "forbids", ",".join(h["forbids"]))' "$1"
}

# reopen -w next to a reader: refused, and the holder's bytes exactly as before.
qemu-img create -f raw t.raw 1M >/dev/null
hold a "$IO" -r -f raw t.raw
echo length >&"$HOLD_FD"; wait_for "$T/hold-a.out" '\[ok\]'
A_FD=$HOLD_FD A_PID=$HOLD_PID
hold b "$IO" -r -f raw t.raw
echo length >&"$HOLD_FD"; wait_for "$T/hold-b.out" '\[ok\]'
B_FD=$HOLD_FD B_PID=$HOLD_PID
before=$(holders_of "$A_PID" t.raw)
echo 'reopen -w' >&"$A_FD"; wait_for "$T/hold-a.out" '\[error\]'
if grep -q '^reopen: Failed to get "write" lock$' "$T/hold-a.out"; then ok "reopen -w next to a reader: refused"; else not_ok "reopen -w next to a reader: refused" "$(cat "$T/hold-a.out")"; fi
after=$(holders_of "$A_PID" t.raw)
if [ -n "$before" ] && [ "$before" = "$after" ]; then ok "refused reopen: the lock bytes as before ($after)"; else not_ok "refused reopen: the lock bytes as before" "before: $before" "after: $after"; fi
echo 'write 0 512' >&"$A_FD"; wait_for "$T/hold-a.out" '^write failed'
if grep -q '^write failed: Operation not permitted$' "$T/hold-a.out"; then ok "refused reopen: still read-only"; else not_ok "refused reopen: still read-only" "$(cat "$T/hold-a.out")"; fi
echo 'reopen -o lock=exclusive' >&"$A_FD"; wait_for "$T/hold-a.out" '^reopen: .*consistent read'
if grep -q '^reopen: Failed to get shared "consistent read" lock$' "$T/hold-a.out"; then ok "reopen -o lock=exclusive next to a reader: refused"; else not_ok "reopen -o lock=exclusive: refused" "$(cat "$T/hold-a.out")"; fi
after=$(holders_of "$A_PID" t.raw)
if [ "$before" = "$after" ]; then ok "and the lock bytes as before"; else not_ok "and the lock bytes as before" "before: $before" "after: $after"; fi
echo quit >&"$B_FD"; wait "$B_PID" 2>/dev/null
: >"$T/hold-a.out"
echo 'reopen -w' >&"$A_FD"; echo 'write -P 0x77 0 512' >&"$A_FD"; wait_for "$T/hold-a.out" 'wrote 512/512'
ok "reopen -w alone: writes"
rw=$(holders_of "$A_PID" t.raw)
if [ "$rw" = "uses consistent read,write forbids write,write unchanged,resize" ]; then ok "reopen -w: the read-write bytes ($rw)"; else not_ok "reopen -w: the read-write bytes" "$rw"; fi
expect_fail "a reader is now refused" 'Failed to get shared "write" lock' "$IO" -r -f raw -c 'read 0 512' t.raw
# Commands run in order: the length's reply comes after the reopen's.
: >"$T/hold-a.out"
echo 'reopen -r' >&"$A_FD"; echo 'length' >&"$A_FD"; wait_for "$T/hold-a.out" '^[0-9]+ MiB$'
ro=$(holders_of "$A_PID" t.raw)
if [ "$ro" = "$before" ]; then ok "reopen -r: back to the read-only bytes"; else not_ok "reopen -r: back to the read-only bytes" "$ro" "$before"; fi
expect_output "a reader opens again" '^read 512/512 bytes' "$IO" -r -f raw -c 'read -P 0x77 0 512' t.raw
# truncate takes the resize permission for its duration.
: >"$T/hold-a.out"
echo 'reopen -w' >&"$A_FD"
echo 'truncate 2M' >&"$A_FD"; echo length >&"$A_FD"; wait_for "$T/hold-a.out" '^[0-9]+ MiB$'
if grep -q '^2 MiB$' "$T/hold-a.out"; then ok "truncate: grows with the resize permission"; else not_ok "truncate: grows" "$(cat "$T/hold-a.out")"; fi
tr_after=$(holders_of "$A_PID" t.raw)
if [ "$tr_after" = "$rw" ]; then ok "truncate: the resize permission is given back"; else not_ok "truncate: the resize permission is given back" "$tr_after"; fi
echo quit >&"$A_FD"; wait "$A_PID" 2>/dev/null
finish
