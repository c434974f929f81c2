#!/bin/bash
# miniblock-img check against qemu-img check on the same damaged images:
# the same exit status, the same detail lines and summary, the same JSON
# numbers; -r leaks repairs what qemu-img then finds clean.
source "$(dirname "$0")/lib.sh"
need qemu-img qemu-io python3
cd "$T"

# 64k clusters: header 0, refcount table 0x10000, refcount block 0x20000,
# L1 0x30000, L2 0x40000, data 0x50000 and 0x60000.
qemu-img create -q -f qcow2 good.qcow2 1M
qemu-io -c 'write -P 9 0 128k' good.qcow2 >/dev/null
patch() { patch_image good.qcow2 "$@"; }

# same NAME IMG [ARGS]: both tools give the same status, stdout and stderr.
same() {
    local name=$1 img=$2
    shift 2
    cp "$img" q-$img
    cp "$img" m-$img
    qemu-img check "$@" q-$img >q.out 2>q.err
    local qrc=$?
    "$MINIBLOCK_IMG" check "$@" m-$img >m.out 2>m.err
    local mrc=$?
    sed -i "s/q-$img/IMG/" q.out q.err
    sed -i "s/m-$img/IMG/" m.out m.err
    if [ $qrc != $mrc ]; then
        not_ok "$name: exit status" "qemu-img $qrc, miniblock-img $mrc" "$(cat m.out m.err)"
    elif ! diff q.out m.out >/dev/null; then
        not_ok "$name: output" "$(diff q.out m.out)"
    elif ! diff <(sort q.err) <(sort m.err) >/dev/null; then
        not_ok "$name: detail lines" "$(diff <(sort q.err) <(sort m.err))"
    else
        ok "$name: exit $mrc and output as qemu-img"
    fi
}

same "clean" good.qcow2
same "clean, json" good.qcow2 --output=json
# A leak: a refcount for a cluster nothing references (the file grows to hold it).
python3 -c "
import struct
d = bytearray(open('good.qcow2', 'rb').read())
d += bytes(0x80000 - len(d))
struct.pack_into('>H', d, 0x20000 + 2 * 7, 1)
open('leak.qcow2', 'wb').write(d)"
same "leak" leak.qcow2
same "leak, json" leak.qcow2 --output=json
expect_output "leak: the detail line" "^Leaked cluster 7 refcount=1 reference=0$" sh -c "'$MINIBLOCK_IMG' check leak.qcow2 2>&1 >/dev/null; true"
same "leak, repaired" leak.qcow2 -r leaks
same "leak, repaired, json" leak.qcow2 -r leaks --output=json
cp leak.qcow2 fixed.qcow2
"$MINIBLOCK_IMG" check -r leaks fixed.qcow2 >/dev/null 2>&1
expect_output "leak: qemu-img finds the repaired image clean" "No errors were found" qemu-img check fixed.qcow2

# Corruption: a data cluster's refcount dropped to 0.
patch corrupt.qcow2 $((0x20000 + 2 * 5)) '>H' 0
same "refcount below references" corrupt.qcow2
same "refcount below references, json" corrupt.qcow2 --output=json
expect_output "corruption: the detail lines" "^ERROR OFLAG_COPIED data cluster: l2_entry=8000000000050000 refcount=0$" \
    sh -c "'$MINIBLOCK_IMG' check corrupt.qcow2 2>&1 >/dev/null; true"
# OFLAG_COPIED missing on a data cluster with refcount 1.
patch copied.qcow2 0x40000 '>Q' 0x50000
same "OFLAG_COPIED missing" copied.qcow2
# An L2 table referenced twice (two L1 entries): refcount 1 < 2 references.
qemu-img create -q -f qcow2 big.qcow2 2G
qemu-io -c 'write -P 1 0 64k' big.qcow2 >/dev/null
python3 -c "
import struct
d = bytearray(open('big.qcow2', 'rb').read())
struct.pack_into('>Q', d, 0x30008, struct.unpack_from('>Q', d, 0x30000)[0])
open('twice.qcow2', 'wb').write(d)"
same "L2 table referenced twice" twice.qcow2

finish
