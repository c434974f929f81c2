#!/bin/bash
# Hostile L2 entries (issue #9's three bugs, and an overlap refusal per
# metadata structure): each image is made by qemu-img, then one L2 entry is
# patched.  Every request that would free, discard or write metadata, or
# drop a refcount below 0, is refused; the image is then byte-identical to
# before (but for QEMU's corrupt bit where metadata was at stake), and
# qemu-img check finds no more corruptions or leaks than before.
source "$(dirname "$0")/lib.sh"
need qemu-img qemu-io python3
cd "$T"

# header 0, refcount table 0x10000, refcount block 0x20000, L1 0x30000,
# L2 0x40000, data 0x50000; the file ends at 0x60000.  Guest cluster 1's L2
# entry (offset 0x40008) is the one patched.
qemu-img create -q -f qcow2 good.qcow2 1M
qemu-io -c 'write -P 9 0 64k' good.qcow2 >/dev/null
[ "$(stat -c %s good.qcow2)" = $((0x60000)) ] || { echo "FATAL: unexpected layout"; exit 1; }

# counts IMG: "corruptions leaks" from qemu-img check.
counts() {
    qemu-img check --output=json "$1" 2>/dev/null |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("corruptions",0), d.get("leaks",0))'
}

# hostile NAME ENTRY PATTERN MB-IO-COMMAND: a copy of good.qcow2 with guest
# cluster 1's entry set to ENTRY (a hex string); the command, followed in the
# same process by an allocating write elsewhere (which once saved a
# half-changed refcount block), must fail with PATTERN; then the image must
# equal the patched copy but for QEMU's corrupt bit, refuse to open
# read/write, and qemu-img check must find it no worse.
hostile() {
    local name=$1 entry=$2 pattern=$3 cmd=$4
    local img=$name.qcow2
    patch_image good.qcow2 "$img" 0x40008 '>Q' "$entry"
    local before
    before=$(counts "$img")
    patch_image "$img" expected.qcow2 72 '>Q' 2
    expect_fail "$name: refused" "$pattern" "$MINIBLOCK_IO" -c "$cmd" -c 'write -P 5 128k 4k' "$img"
    cmp -s expected.qcow2 "$img" && ok "$name: image unchanged but the corrupt bit" ||
        not_ok "$name: image unchanged but the corrupt bit" "$(cmp expected.qcow2 "$img")"
    expect_fail "$name: marked corrupt, no longer writable" "qcow2: Image is corrupt; cannot be opened read/write" \
        "$MINIBLOCK_IO" -c 'write -P 5 128k 4k' "$img"
    local after
    after=$(counts "$img")
    if python3 -c "import sys; b, a = [list(map(int, x.split())) for x in sys.argv[1:]]; sys.exit(a[0] > b[0] or a[1] > b[1])" \
        "$before" "$after"; then
        ok "$name: qemu-img check no worse (corruptions, leaks: $before -> $after)"
    else
        not_ok "$name: qemu-img check worse" "before: $before" "after: $after"
    fi
}

hex() { printf '0x%x' "$(($1))"; }
COPIED=$((1 << 63))
# Bug 1: a compressed descriptor whose 256 sectors run from 0x5fe00 past the
# end of the file: the clusters past the end have refcount 0.
COMP=$(hex "1 << 62 | 255 << 54 | 0x5fe00")
hostile comp-past-eof "$COMP" \
    "^WARNING: qcow2: Marking image 'comp-past-eof.qcow2' as corrupt: Preventing invalid free of cluster 0x60000 \(refcount 0, 1 reference dropped\); further corruption events will be suppressed$" \
    'write -P 1 64k 64k'
hostile comp-past-eof-cow "$COMP" "Preventing invalid free of cluster 0x60000" 'write -P 1 68k 4k'
hostile comp-past-eof-zero "$COMP" "Preventing invalid free of cluster 0x60000" 'write -z 64k 64k'

# Bug 2: a "zero, allocated" entry on a metadata cluster: an overwrite
# replaces it and would free that cluster.
hostile zero-on-reftable "$(hex "COPIED | 0x10000 | 1")" \
    "^WARNING: qcow2: Marking image 'zero-on-reftable.qcow2' as corrupt: Preventing invalid free of metadata \(overlaps with refcount table\); further corruption events will be suppressed$" \
    'write -P 1 64k 4k'
hostile zero-on-l1 "$(hex "COPIED | 0x30000 | 1")" "Preventing invalid free of metadata \(overlaps with active L1 table\)" \
    'write -P 1 64k 4k'

# Bug 3: discard of a cluster whose entry points at each metadata structure;
# and an in-place write there.
for s in "reftable 0x10000 refcount table" "refblock 0x20000 refcount block" "l1 0x30000 active L1 table" \
         "l2 0x40000 active L2 table"; do
    set -- $s
    name=$1 off=$2
    shift 2
    hostile "discard-$name" "$(hex "COPIED | off")" "Preventing invalid discard of metadata \(overlaps with $*\)" \
        'discard 64k 64k'
    hostile "write-$name" "$(hex "COPIED | off")" "Preventing invalid write on metadata \(overlaps with $*\)" \
        'write -P 1 64k 4k'
done

finish
