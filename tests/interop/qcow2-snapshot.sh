#!/bin/bash
# qcow2 internal snapshots: miniblock-img snapshot -l/-c/-a/-d against
# qemu-img as the oracle, both directions.  After every operation
# `qemu-img check` must find no error and no leak (COPIED flags included);
# every snapshot's content is read back with qemu-img convert -l and with
# miniblock-img convert -l; tables written by one tool are listed and used
# by the other.  Writes after a snapshot must copy shared clusters (an
# in-place write would change the snapshot too).
source "$(dirname "$0")/lib.sh"
need qemu-img qemu-io
cd "$T"
MI=$MINIBLOCK_IMG
MIO=$MINIBLOCK_IO

# qcheck NAME FILE: qemu-img check finds nothing (exit 0: no corruption, no leak).
qcheck() {
    local out
    if out=$(qemu-img check "$2" 2>&1) && grep -q "No errors were found on the image." <<<"$out"; then
        ok "$1: qemu-img check clean"
    else
        not_ok "$1: qemu-img check clean" "$out"
    fi
}
# snap_is NAME IMG SNAP REF: snapshot SNAP of IMG reads as REF (raw), by
# qemu-img convert -l and by miniblock-img convert -l.
snap_is() {
    local name=$1 img=$2 snap=$3 ref=$4 out
    rm -f "$T/snap.q.raw" "$T/snap.m.raw"
    if out=$(qemu-img convert -l "snapshot.name=$snap" -O raw "$img" "$T/snap.q.raw" 2>&1) &&
        out=$(qemu-img compare -q -f raw -F raw "$T/snap.q.raw" "$ref" 2>&1); then
        ok "$name: qemu-img reads snapshot $snap"
    else
        not_ok "$name: qemu-img reads snapshot $snap" "$out"
    fi
    if out=$("$MI" convert -l "$snap" -O raw "$img" "$T/snap.m.raw" 2>&1) &&
        out=$(qemu-img compare -q -f raw -F raw "$T/snap.m.raw" "$ref" 2>&1); then
        ok "$name: miniblock-img reads snapshot $snap"
    else
        not_ok "$name: miniblock-img reads snapshot $snap" "$out"
    fi
}
# active_is NAME IMG REF: the active state reads as REF.
active_is() {
    local out
    if out=$(qemu-img compare -q -F raw "$2" "$3" 2>&1); then ok "$1: active content"; else not_ok "$1: active content" "$out"; fi
}
# same_list NAME IMG: both tools list the snapshots identically.
same_list() {
    local a b
    a=$("$MI" snapshot -l "$2" 2>&1)
    b=$(qemu-img snapshot -l "$2" 2>&1)
    if [ "$a" = "$b" ]; then ok "$1: -l as qemu-img's"; else not_ok "$1: -l as qemu-img's" "ours: $a" "qemu-img: $b"; fi
}
nb_snapshots() { python3 -c 'import struct,sys; print(struct.unpack(">I", open(sys.argv[1],"rb").read()[60:64])[0])' "$1"; }

# --- miniblock makes and uses the snapshots ---------------------------------------
qemu-img create -q -f qcow2 a.qcow2 4M
qemu-io -c 'write -P 1 0 128k' -c 'write -P 2 1M 4k' -c 'write -P 7 3M 64k' a.qcow2 >/dev/null
qemu-img convert -O raw a.qcow2 ref1.raw
expect_ok "-c s1" "$MI" snapshot -c s1 a.qcow2
qcheck "after -c s1" a.qcow2
expect_output "qemu-img lists s1" "^1 +s1 +0 B " qemu-img snapshot -l a.qcow2
same_list "after -c s1" a.qcow2
snap_is "after -c s1" a.qcow2 s1 ref1.raw

# Writes now copy: a partial write into a shared cluster, a whole one, a
# new one, zeroes and a discard.
expect_ok "write into shared clusters" "$MIO" -c 'write -P 3 0 4k' -c 'write -P 4 64k 64k' -c 'write -P 5 2M 64k' \
    -c 'write -z 1M 64k' -c 'discard 3M 64k' a.qcow2
qcheck "after writes over s1" a.qcow2
expect_ok "the writes read back (qemu-io)" qemu-io -r -c 'read -P 3 0 4k' -c 'read -P 1 4k 60k' -c 'read -P 4 64k 64k' \
    -c 'read -P 5 2M 64k' -c 'read -P 0 1M 64k' -c 'read -P 0 3M 64k' a.qcow2
snap_is "after writes over s1" a.qcow2 s1 ref1.raw
qemu-img convert -O raw a.qcow2 ref2.raw

expect_ok "-c s2" "$MI" snapshot -c s2 a.qcow2
qcheck "after -c s2" a.qcow2
same_list "after -c s2" a.qcow2
expect_ok "write over s1 and s2" "$MIO" -c 'write -P 6 0 256k' a.qcow2
qcheck "after writes over s2" a.qcow2
snap_is "two snapshots" a.qcow2 s1 ref1.raw
snap_is "two snapshots" a.qcow2 s2 ref2.raw

expect_ok "-a s1" "$MI" snapshot -a s1 a.qcow2
qcheck "after -a s1" a.qcow2
active_is "after -a s1" a.qcow2 ref1.raw
expect_ok "write after -a s1" "$MIO" -c 'write -P 8 0 64k' a.qcow2
qcheck "after writes over the reverted state" a.qcow2
snap_is "after -a s1 and writes" a.qcow2 s1 ref1.raw
snap_is "after -a s1 and writes" a.qcow2 s2 ref2.raw
expect_ok "-a by ID (2 = s2)" "$MI" snapshot -a 2 a.qcow2
qcheck "after -a 2" a.qcow2
active_is "after -a 2" a.qcow2 ref2.raw

expect_ok "-d s1" "$MI" snapshot -d s1 a.qcow2
qcheck "after -d s1" a.qcow2
same_list "after -d s1" a.qcow2
snap_is "after -d s1" a.qcow2 s2 ref2.raw
active_is "after -d s1" a.qcow2 ref2.raw
expect_ok "-d s2" "$MI" snapshot -d s2 a.qcow2
qcheck "after -d s2 (COPIED flags back)" a.qcow2
[ "$(nb_snapshots a.qcow2)" = 0 ] && ok "no snapshot left in the header" || not_ok "no snapshot left in the header"
expect_output "-l of an image without snapshots prints nothing" "^$" "$MI" snapshot -l a.qcow2
active_is "after -d s2" a.qcow2 ref2.raw
# With the COPIED flags back, writes go in place: the file does not grow.
size0=$(stat -c %s a.qcow2)
expect_ok "write in place after the last -d" "$MIO" -c 'write -P 9 0 64k' a.qcow2
[ "$(stat -c %s a.qcow2)" = "$size0" ] && ok "in-place write after -d: no new cluster" ||
    not_ok "in-place write after -d: no new cluster" "size $size0 -> $(stat -c %s a.qcow2)"
qcheck "after in-place write" a.qcow2

# --- qemu-img's snapshots, miniblock's operations ---------------------------------
qemu-img create -q -f qcow2 b.qcow2 2M
qemu-io -c 'write -P 0x11 0 192k' b.qcow2 >/dev/null
qemu-img convert -O raw b.qcow2 refb.raw
qemu-img snapshot -c q1 b.qcow2
qemu-img snapshot -c q2 b.qcow2
same_list "qemu-img's table" b.qcow2
# The shared-cluster write: L1 and L2 entries without COPIED.
expect_ok "write over qemu-img's snapshot" "$MIO" -c 'write -P 0x22 4k 8k' -c 'write -P 0x23 1M 4k' b.qcow2
qcheck "write over qemu-img's snapshot" b.qcow2
snap_is "write over qemu-img's snapshot" b.qcow2 q1 refb.raw
expect_ok "qemu-io sees the write" qemu-io -r -c 'read -P 0x11 0 4k' -c 'read -P 0x22 4k 8k' -c 'read -P 0x23 1M 4k' b.qcow2
expect_ok "-a of qemu-img's q2" "$MI" snapshot -a q2 b.qcow2
qcheck "-a of qemu-img's q2" b.qcow2
active_is "-a of qemu-img's q2" b.qcow2 refb.raw
expect_ok "-d of qemu-img's q1" "$MI" snapshot -d q1 b.qcow2
qcheck "-d of qemu-img's q1" b.qcow2
expect_output "qemu-img lists only q2" "^2 +q2 " qemu-img snapshot -l b.qcow2

# --- miniblock's snapshots, qemu-img's operations ---------------------------------
expect_ok "-c m1 (for qemu-img)" "$MI" snapshot -c m1 b.qcow2
expect_output "the new ID follows the largest" "^3 +m1 " qemu-img snapshot -l b.qcow2
expect_ok "qemu-io writes over m1" qemu-io -c 'write -P 0x33 0 64k' b.qcow2
qcheck "qemu-io writes over m1" b.qcow2
expect_ok "qemu-img -a m1" qemu-img snapshot -a m1 b.qcow2
qcheck "qemu-img -a m1" b.qcow2
active_is "qemu-img -a m1" b.qcow2 refb.raw
expect_ok "qemu-img -d m1" qemu-img snapshot -d m1 b.qcow2
qcheck "qemu-img -d m1" b.qcow2

# --- compressed clusters, a v2 image, a backing file --------------------------------
qemu-img convert -c -O qcow2 refb.raw c.qcow2
expect_ok "-c on a compressed image" "$MI" snapshot -c z c.qcow2
qcheck "-c on a compressed image" c.qcow2
expect_ok "write over compressed shared clusters" "$MIO" -c 'write -P 0x44 0 4k' c.qcow2
qcheck "write over compressed shared clusters" c.qcow2
snap_is "compressed" c.qcow2 z refb.raw
expect_ok "-d on a compressed image" "$MI" snapshot -d z c.qcow2
qcheck "-d on a compressed image" c.qcow2
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 1M
qemu-io -c 'write -P 0x55 0 64k' v2.qcow2 >/dev/null
expect_ok "-c on v2" "$MI" snapshot -c v v2.qcow2
expect_ok "write on v2" "$MIO" -c 'write -P 0x56 0 4k' v2.qcow2
qcheck "v2" v2.qcow2
same_list "v2" v2.qcow2
qemu-img create -q -f raw base.raw 1M
qemu-io -f raw -c 'write -P 0x66 0 1M' base.raw >/dev/null
qemu-img create -q -f qcow2 -b base.raw -F raw ov.qcow2
qemu-io -c 'write -P 0x67 64k 64k' ov.qcow2 >/dev/null
qemu-img convert -O raw ov.qcow2 refov.raw
expect_ok "-c on an overlay" "$MI" snapshot -c o ov.qcow2
expect_ok "write on the overlay" "$MIO" -c 'write -P 0x68 60k 8k' ov.qcow2
qcheck "overlay" ov.qcow2
snap_is "overlay" ov.qcow2 o refov.raw
expect_ok "-a on an overlay" "$MI" snapshot -a o ov.qcow2
active_is "-a on an overlay" ov.qcow2 refov.raw
qcheck "-a on an overlay" ov.qcow2

# --- info ---------------------------------------------------------------------
"$MI" snapshot -c i1 b.qcow2 && "$MI" snapshot -c i2 b.qcow2
a=$("$MI" info b.qcow2 2>&1 | sed -n '/^Snapshot list:/,/^Format specific/p')
q=$(qemu-img info b.qcow2 2>&1 | sed -n '/^Snapshot list:/,/^Format specific/p')
[ -n "$a" ] && [ "$a" = "$q" ] && ok "info: the snapshot list as qemu-img's" || not_ok "info: the snapshot list as qemu-img's" "ours: $a" "qemu-img: $q"
if out=$(python3 - <(qemu-img info --output=json b.qcow2) <("$MI" info --output=json b.qcow2) <<'PY'
import json, sys
q, m = (json.load(open(p)) for p in sys.argv[1:3])
assert q["snapshots"] == m["snapshots"], (q["snapshots"], m["snapshots"])
assert list(q["snapshots"][0]) == list(m["snapshots"][0])
PY
); then ok "info --output=json: \"snapshots\" as qemu-img's"; else not_ok "info --output=json: \"snapshots\" as qemu-img's" "$out"; fi

# --- miniblock-img check counts the snapshots' references -------------------------
# same_check NAME IMG: both checks give the same JSON (any order of keys).
same_check() {
    local out
    "$MI" check --output=json "$2" >"$T/mc.json" 2>/dev/null
    qemu-img check --output=json "$2" >"$T/qc.json" 2>/dev/null
    if out=$(python3 -c 'import json,sys; a,b=(json.load(open(p)) for p in sys.argv[1:]); assert a==b, (a,b)' \
        "$T/mc.json" "$T/qc.json" 2>&1); then ok "$1: check as qemu-img's"; else not_ok "$1: check as qemu-img's" "$out"; fi
}
same_check "two snapshots" b.qcow2
same_check "v2 with a snapshot" v2.qcow2
# The snapshot table dropped from the header: its tables and the shared
# clusters' second references leak.
patch_image b.qcow2 leak.qcow2 60 ">I" 0 64 ">Q" 0
same_check "a dropped snapshot table leaks" leak.qcow2
expect_fail "... which check names (exit 3)" "^Leaked cluster [0-9]+ refcount=4 reference=1$" "$MI" check leak.qcow2

# --- errors, with their texts -------------------------------------------------------
expect_fail "-a of a missing snapshot" \
    "^miniblock-img: Could not apply snapshot 'nope': Failed to load snapshot: No such file or directory$" \
    "$MI" snapshot -a nope b.qcow2
expect_fail "-d of a missing snapshot" "^miniblock-img: Could not delete snapshot 'nope': snapshot not found$" \
    "$MI" snapshot -d nope b.qcow2
expect_fail "-l with -c" "^miniblock-img: Cannot mix '-l', '-a', '-c', '-d'$" "$MI" snapshot -l -c x b.qcow2
expect_fail "-c on raw" "^miniblock-img: Could not create snapshot 'x': Format 'raw' does not support internal snapshots$" \
    "$MI" snapshot -c x -f raw base.raw
expect_fail "-c with -U" "^miniblock-img: Could not open 'b.qcow2': force-share=on can only be used with read-only images$" "$MI" snapshot -U -c x b.qcow2
long=$(printf 'n%.0s' $(seq 256))
expect_fail "a name of 256 bytes" "^miniblock-img: Could not create snapshot 'n+': The snapshot name is 256 bytes long \(at most 255\)$" \
    "$MI" snapshot -c "$long" b.qcow2
expect_fail "convert -l of a missing snapshot" "^miniblock-img: Failed to load snapshot: Can't find snapshot$" "$MI" convert -l nope -O raw b.qcow2 x.raw
qemu-img create -q -f qcow2 -o refcount_bits=1 r1.qcow2 1M
qemu-io -c 'write 0 64k' r1.qcow2 >/dev/null
cp r1.qcow2 r1.before
expect_fail "refcount_bits=1 cannot share" \
    "^miniblock-img: Could not create snapshot 'x': The refcount of cluster [0-9]+ would exceed 1 \(refcount_bits=1\)$" \
    "$MI" snapshot -c x r1.qcow2
cmp -s r1.qcow2 r1.before && ok "refused -c changed nothing" || not_ok "refused -c changed nothing"
qcheck "refused -c" r1.qcow2
# QEMU's limit, 65536 snapshots: a table of that many (no L1 tables) appended
# to a qemu-img-made image; one more is refused and changes nothing.
qemu-img create -q -f qcow2 many.qcow2 1M
python3 - many.qcow2 <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b")
off = (f.seek(0, 2) + 65535) // 65536 * 65536
tab = []
for i in range(65536):
    e = struct.pack(">QIHHIIQII", 0, 0, len(str(i + 1)), 0, 0, 0, 0, 0, 0) + str(i + 1).encode()
    tab.append(e + b"\0" * (-len(e) % 8))
f.seek(off); f.write(b"".join(tab))
f.seek(60); f.write(struct.pack(">IQ", 65536, off))
PY
cp many.qcow2 many.before
expect_fail "the 65537th snapshot is refused" \
    "^miniblock-img: Could not create snapshot 'x': The image has 65536 snapshots already \(at most 65536\)$" \
    "$MI" snapshot -c x many.qcow2
cmp -s many.qcow2 many.before && ok "... and changed nothing" || not_ok "... and changed nothing"
# A damaged table is named, never followed.
cp b.qcow2 bad.qcow2
toff=$(python3 -c 'import struct,sys; print(struct.unpack(">Q", open(sys.argv[1],"rb").read()[64:72])[0])' bad.qcow2)
patch_image b.qcow2 bad.qcow2 $((toff + 36)) ">I" 4096
expect_fail "extra data too large" "invalid snapshot table in 'bad.qcow2': entry 1 of 3 has 4096 bytes of extra data \(at most 1024\)" \
    "$MI" snapshot -l bad.qcow2
expect_fail "check names the bad table" \
    "^ERROR qcow2: invalid snapshot table in 'bad.qcow2': entry 1 of 3 has 4096 bytes of extra data \(at most 1024\)$" \
    "$MI" check bad.qcow2
# The first entry's disk size (extra data bytes 8-15) changed: no revert.
patch_image b.qcow2 bad.qcow2 $((toff + 48)) ">Q" 12345
expect_fail "-a of a snapshot of another size" \
    "^miniblock-img: Could not apply snapshot 'q2': The snapshot's disk size \(12345\) differs from the image's \(2097152\): reverting a resize is not supported$" \
    "$MI" snapshot -a q2 bad.qcow2
expect_fail "convert -l with an unknown key" "^miniblock-img: Invalid parameter 'snapshot.foo'$" \
    "$MI" convert -l snapshot.foo=1 -O raw b.qcow2 x.raw
patch_image b.qcow2 bad.qcow2 $((toff)) ">Q" 12345
expect_fail "unaligned snapshot L1 table" "entry 1 of 3 \('q2'\) has an invalid L1 table \(offset 0x3039, [0-9]+ entries\)" \
    "$MI" snapshot -d q2 bad.qcow2
patch_image b.qcow2 bad.qcow2 60 ">I" 3000
expect_fail "count past the table" "lies past the end of the file or of 64 MiB" "$MI" snapshot -l bad.qcow2

# --- locking: a running holder keeps snapshot writers out -----------------------
hold q qemu-io b.qcow2
echo 'read 0 4k' >&$HOLD_FD
wait_for "$T/hold-q.out" 'read 4096/4096' || not_ok "qemu-io holds b.qcow2"
cp b.qcow2 held.before
qerr=$(qemu-img snapshot -c x b.qcow2 2>&1 | sed 's/^qemu-img: //')
merr=$("$MI" snapshot -c x b.qcow2 2>&1 | head -2 | sed 's/^miniblock-img: //')
[ -n "$qerr" ] && [ "$merr" = "$qerr" ] && ok "-c next to a running writer: qemu-img's text" ||
    not_ok "-c next to a running writer: qemu-img's text" "ours: $merr" "qemu-img: $qerr"
expect_fail "-d next to a running writer" "^miniblock-img: Could not open 'b.qcow2': Failed to get \"write\" lock$" \
    "$MI" snapshot -d i1 b.qcow2
expect_fail "-a next to a running writer" "Is another process using the image \[b.qcow2\]\?" "$MI" snapshot -a i1 b.qcow2
expect_ok "-l -U next to a running writer" "$MI" snapshot -l -U b.qcow2
cmp -s b.qcow2 held.before && ok "refused snapshot ops changed nothing" || not_ok "refused snapshot ops changed nothing"
echo quit >&$HOLD_FD
wait "$HOLD_PID"
qcheck "after the holder" b.qcow2

finish
