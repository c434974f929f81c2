#!/bin/bash
# miniblock and real QEMU 7.2 tools on one raw image, both directions: our
# locks stop them, theirs stop us (naming the QEMU process), and the kernel
# shows the documented byte map for every lock mode.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io qemu-nbd
IMG=$T/a.img
"$MINIBLOCK_IMG" create "$IMG" 4M >/dev/null
qemu-io -f raw -c "write -P 0x42 0 64k" "$IMG" >/dev/null

# The bytes of the image anyone holds a lock on, as "100 101 201 ..." (lib.sh).
held_bytes() { locked_bytes "$IMG"; }

# hold_mb ARGS...: a miniblock-io holding the image open (stdin mode).
hold_mb() {
    coproc MB { "$MINIBLOCK_IO" "$@" "$IMG"; }
    echo "length" >&"${MB[1]}"
    local line
    while read -r -t 10 line <&"${MB[0]}"; do [ "$line" = "[ok]" ] && return 0; done
    return 1
}
release_mb() {
    echo quit >&"${MB[1]}"
    wait "$MB_PID" 2>/dev/null
}

# --- the byte map, per mode (DESIGN section 4; docs/locking.md) -------------------
check_map() {
    local name=$1 want=$2; shift 2
    if ! hold_mb "$@"; then not_ok "byte map: $name" "miniblock-io did not open"; return; fi
    local got
    got=$(held_bytes)
    release_mb
    if [ "$got" = "$want" ]; then ok "byte map: $name ($got)"; else not_ok "byte map: $name" "want '$want'" "got  '$got'"; fi
}
check_map "off, read-write" "" -f raw -l off
check_map "off, read-only" "" -f raw -l off -r
check_map "shared, read-only" "100" -f raw -l shared -r
check_map "shared, read-write" "100 101" -f raw -l shared
check_map "auto, read-only" "100 201 202 203" -f raw -r
check_map "auto, read-write" "100 101 201 202 203" -f raw
check_map "exclusive, read-only" "100 200 201 202 203" -f raw -l exclusive -r
check_map "exclusive, read-write" "100 101 200 201 202 203" -f raw -l exclusive
check_map "nothing left behind after close" "" -f raw -l off

# --- our locks stop QEMU ----------------------------------------------------------------
hold_mb -f raw
expect_fail "qemu-img convert refused while miniblock-io writes (auto)" \
    '^qemu-img: Could not open .*: Failed to get shared "write" lock$' \
    qemu-img convert -f raw -O raw "$IMG" "$T/copy.img"
expect_fail "qemu-io read-write refused while miniblock-io writes (auto)" \
    'Failed to get "write" lock' qemu-io -f raw -c "read 0 512" "$IMG"
expect_output "qemu-io -r -U reads what miniblock-io holds" \
    'read 65536/65536 bytes at offset 0' qemu-io -f raw -r -U -c "read -P 0x42 0 64k" "$IMG"
# qemu-img info of a raw image opens it without I/O and takes no lock at all
# (measured: docs/locking.md), so no lock of ours can stop it; on qcow2 it
# forbids write and is refused (tests/interop/qcow2-*.sh).
expect_output "qemu-img info of a raw image takes no lock and gets in" \
    'file format: raw' qemu-img info -f raw "$IMG"
release_mb

hold_mb -f raw -l exclusive
expect_fail "qemu-img convert refused by an exclusive miniblock-io" \
    '^qemu-img: Could not open .*: Failed to get "consistent read" lock$' \
    qemu-img convert -f raw -O raw "$IMG" "$T/copy.img"
expect_fail "even qemu-io -r -U is refused by exclusive (it still uses consistent read)" \
    'Failed to get "consistent read" lock' qemu-io -f raw -r -U -c "read 0 512" "$IMG"
release_mb

# --- QEMU's locks stop us, and we name the QEMU process --------------------------
qemu-io -f raw -c "sleep 30000" "$IMG" >/dev/null 2>&1 &
QPID=$!
BG_PIDS+=("$QPID")
for i in $(seq 50); do [ -n "$(held_bytes)" ] && break; sleep 0.1; done
expect_fail "miniblock-io read-write refused while qemu-io writes, QEMU's first line" \
    "^miniblock-io: can't open device .*: Failed to get shared \"write\" lock$" \
    "$MINIBLOCK_IO" -f raw -c "read 0 512" "$IMG"
expect_fail "the refusal names qemu-io's pid and what it uses" \
    "^Held by pid $QPID \\(qemu-io\\), command line: qemu-io -f raw -c sleep 30000 .*; uses: consistent read, write; forbids: nothing$" \
    "$MINIBLOCK_IO" -f raw -c "read 0 512" "$IMG"
expect_fail "the hint names the image" \
    "^Is another process using the image \\[$IMG\\]\\?$" "$MINIBLOCK_IO" -f raw -c "read 0 512" "$IMG"
expect_output "lock=shared shares with a QEMU writer" \
    'read 512/512 bytes' "$MINIBLOCK_IO" -f raw -l shared -c "read -P 0x42 0 512" "$IMG"
expect_output "miniblock-img locks decodes qemu-io's bytes" \
    "pid $QPID \\(qemu-io\\): uses: consistent read, write / forbids: nothing" "$MINIBLOCK_IMG" locks "$IMG"
expect_output "miniblock-img locks --output=json" \
    "\"pid\" : $QPID" "$MINIBLOCK_IMG" locks --output=json "$IMG"
kill "$QPID"; wait "$QPID" 2>/dev/null

qemu-nbd -t -f raw -k "$T/nbd.sock" "$IMG" >/dev/null 2>&1 &
NPID=$!
BG_PIDS+=("$NPID")
for i in $(seq 50); do [ -n "$(held_bytes)" ] && break; sleep 0.1; done
expect_fail "miniblock-io read-write refused while qemu-nbd -t serves it, naming qemu-nbd" \
    "Held by pid $NPID \\(qemu-nbd\\)" "$MINIBLOCK_IO" -f raw -c "read 0 512" "$IMG"
expect_fail "exclusive read-only refused too (qemu-nbd uses consistent read)" \
    'Failed to get shared "consistent read" lock' "$MINIBLOCK_IO" -f raw -r -l exclusive -c "read 0 512" "$IMG"
kill "$NPID"; wait "$NPID" 2>/dev/null

expect_output "once QEMU is gone, miniblock-io gets in and sees QEMU's data" \
    'read 65536/65536 bytes' "$MINIBLOCK_IO" -f raw -c "read -P 0x42 0 64k" "$IMG"
finish
