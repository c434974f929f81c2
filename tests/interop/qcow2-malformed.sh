#!/bin/bash
# Malformed and hostile qcow2 images are refused with a clear error naming
# the bad value: no crash, no hang, no huge allocation, no write to the
# wrong place.  Images are made by qemu-img and then patched.
source "$(dirname "$0")/lib.sh"
need qemu-img qemu-io python3
cd "$T"

# A qemu-img image with one data cluster: header 0, refcount table 0x10000,
# refcount block 0x20000, L1 0x30000, L2 0x40000, data 0x50000.
qemu-img create -q -f qcow2 good.qcow2 1M
qemu-io -c 'write -P 9 0 64k' good.qcow2 >/dev/null

# patch NAME OFFSET FORMAT VALUE...: a copy of good.qcow2 with packed fields.
patch() { patch_image good.qcow2 "$@"; }

io() { "$MINIBLOCK_IO" "$@"; }

head -c 50 good.qcow2 >short.qcow2
expect_fail "truncated header" "^miniblock-img: Could not open 'short.qcow2': Image is too short for a qcow2 header \(50 bytes\)$" \
    "$MINIBLOCK_IMG" info short.qcow2
head -c 90 good.qcow2 >short3.qcow2
expect_fail "truncated v3 header" "Image is too short for a qcow2 version 3 header \(90 bytes\)$" \
    "$MINIBLOCK_IMG" info -f qcow2 short3.qcow2

patch l1off.qcow2 40 '>Q' 0x100000000
expect_fail "L1 offset past the end" \
    "Active L1 table \(offset 0x100000000, 8 bytes\) lies past the end of the file \(393216 bytes\)$" \
    "$MINIBLOCK_IMG" info l1off.qcow2
patch l1unal.qcow2 40 '>Q' 0x30200
expect_fail "L1 offset unaligned" "Active L1 table offset 0x30200 is not cluster aligned$" "$MINIBLOCK_IMG" info l1unal.qcow2
patch l1hdr.qcow2 40 '>Q' 0
expect_fail "L1 table in the header" "Active L1 table offset 0x0 overlaps the image header$" "$MINIBLOCK_IMG" info l1hdr.qcow2
patch l1size.qcow2 36 '>I' 0x10000000
expect_fail "L1 size absurd" "Active L1 table size 268435456 is too large$" "$MINIBLOCK_IMG" info l1size.qcow2
patch l1big.qcow2 36 '>I' 40000
expect_fail "L1 size past the end" "Active L1 table \(offset 0x30000, 320000 bytes\) lies past the end of the file \(393216 bytes\)$" \
    "$MINIBLOCK_IMG" info l1big.qcow2
patch vsize.qcow2 24 '>Q' 0x7fffffffffffffff
expect_fail "size beyond the L1 table" "Image size 9223372036854775807 needs a larger L1 table than 1 entries$" \
    "$MINIBLOCK_IMG" info vsize.qcow2

patch rt.qcow2 48 '>Q' 0x1000000
expect_fail "refcount table past the end" \
    "Refcount table \(offset 0x1000000, 65536 bytes\) lies past the end of the file \(393216 bytes\)$" \
    "$MINIBLOCK_IMG" info rt.qcow2
patch rtc.qcow2 56 '>I' 0xffffffff
expect_fail "refcount table size absurd" "Refcount table size 4294967295 clusters is too large$" "$MINIBLOCK_IMG" info rtc.qcow2

patch cb8.qcow2 20 '>I' 8
expect_fail "cluster_bits 8" "Unsupported cluster size: 2\^8$" "$MINIBLOCK_IMG" info cb8.qcow2
patch cb22.qcow2 20 '>I' 22
expect_fail "cluster_bits 22" "Unsupported cluster size: 2\^22$" "$MINIBLOCK_IMG" info cb22.qcow2
patch cbx.qcow2 20 '>I' 0xffffffff
expect_fail "cluster_bits huge" "Unsupported cluster size: 2\^4294967295$" "$MINIBLOCK_IMG" info cbx.qcow2

patch bname.qcow2 8 '>Q' 0x1000 16 '>I' 0xffffffff
expect_fail "absurd backing name length" "Backing file name length 4294967295 is too long \(at most 1023 bytes\)$" \
    "$MINIBLOCK_IMG" info bname.qcow2
patch boff.qcow2 8 '>Q' 0xfffff 16 '>I' 100
expect_fail "backing name outside the first cluster" \
    "Backing file name \(offset 0xfffff, 100 bytes\) lies outside the first cluster$" "$MINIBLOCK_IMG" info boff.qcow2

patch ver.qcow2 4 '>I' 4
expect_fail "version 4" "Image is not in qcow2 format|Unsupported qcow2 version 4$" "$MINIBLOCK_IMG" info -f qcow2 ver.qcow2
patch ro.qcow2 96 '>I' 7
expect_fail "refcount order 7" "Refcount order 7 is out of range \(0..6\)$" "$MINIBLOCK_IMG" info ro.qcow2
patch hl.qcow2 100 '>I' 0x20000
expect_fail "header length beyond the cluster" "qcow2 header length 131072 exceeds the first cluster$" "$MINIBLOCK_IMG" info hl.qcow2
patch enc.qcow2 32 '>I' 1
expect_fail "encryption" "Encrypted qcow2 images are not supported \(crypt_method 1\)$" "$MINIBLOCK_IMG" info enc.qcow2
patch ext.qcow2 112 '>I' 0x12345678 116 '>I' 0xffffffff
expect_fail "header extension too long" "Header extension 0x12345678 \(4294967295 bytes\) exceeds the first cluster$" \
    "$MINIBLOCK_IMG" info ext.qcow2

# Incompatible features: named from the image's feature table, or unknown.
patch inc2.qcow2 72 '>Q' 4
expect_fail "data-file bit refused" "Unsupported qcow2 feature\(s\): external data file$" "$MINIBLOCK_IMG" info inc2.qcow2
patch inc5.qcow2 72 '>Q' 0x30
expect_fail "unknown bits refused" \
    "Unsupported qcow2 feature\(s\): extended L2 entries, Unknown incompatible feature: 0x20$" \
    "$MINIBLOCK_IMG" info inc5.qcow2
patch dirty.qcow2 72 '>Q' 1
expect_ok "dirty image opens read-only" io -r -c 'read -P 9 0 64k' dirty.qcow2
# Read-write, as QEMU: repaired (check -r all) before the first write, then
# marked clean (tests/interop/img-qcow2-ops.sh has the crashed-QEMU case).
expect_ok "dirty image: written read-write" io -c 'write -P 3 64k 4k' dirty.qcow2
expect_output "dirty image: clean afterwards" '"dirty-flag": false' qemu-img info --output=json dirty.qcow2
patch corrupt.qcow2 72 '>Q' 2
expect_fail "corrupt image refused read-write" "qcow2: Image is corrupt; cannot be opened read/write" \
    io -c 'read 0 4k' corrupt.qcow2

# Table entries: checked when used; the data plane fails with EIO and says why.
patch l2hdr.qcow2 0x40000 '>Q' 0x8000000000000200
expect_fail "L2 entry into the header" \
    "qcow2: cluster offset 0x200 for guest offset 0x0 in 'l2hdr.qcow2' is unaligned \(inside the image header\)" \
    io -r -c 'read 0 4k' l2hdr.qcow2
patch l1e.qcow2 0x30000 '>Q' 0x8000000000000200
expect_fail "L1 entry into the header" \
    "qcow2: metadata table offset 0x200 in 'l1e.qcow2' is unaligned, inside the header or past the end of the file" \
    io -r -c 'read 0 4k' l1e.qcow2
patch l1far.qcow2 0x30000 '>Q' 0x8000000100000000
expect_fail "L1 entry past the end" "metadata table offset 0x100000000 in 'l1far.qcow2'" io -r -c 'read 0 4k' l1far.qcow2
patch comp.qcow2 0x40000 '>Q' 0x4000000000000100
expect_fail "compressed entry into the header" "qcow2: compressed cluster for guest offset 0x0 in 'comp.qcow2' points into the image header" \
    io -r -c 'read 0 4k' comp.qcow2
# A data cluster that is really the L1 table: a write there is refused.
patch ovl.qcow2 0x40000 '>Q' 0x8000000000030000
expect_fail "data write over the L1 table refused" \
    "^WARNING: qcow2: Marking image 'ovl.qcow2' as corrupt: Preventing invalid write on metadata \(overlaps with active L1 table\); further corruption events will be suppressed$" \
    io -c 'write -P 1 0 4k' ovl.qcow2
python3 -c "
import struct,sys
d=open('ovl.qcow2','rb').read()
sys.exit(0 if struct.unpack('>Q', d[0x30000:0x30008])[0] == 0x8000000000040000 else 1)" && ok "L1 entry unchanged" || not_ok "L1 entry unchanged"

# Tables that overlap other metadata are never updated.
patch l2rt.qcow2 0x30000 '>Q' 0x8000000000010000
cp l2rt.qcow2 l2rt-before.qcow2
expect_fail "L2 table on the refcount table: write refused" \
    "Marking image 'l2rt.qcow2' as corrupt: Preventing invalid write on metadata \(overlaps with refcount table\)" \
    io -c 'write -P 1 0 4k' l2rt.qcow2
# Nothing changed but the corrupt bit (incompatible features, offset 72).
patch_image l2rt-before.qcow2 l2rt-expected.qcow2 72 '>Q' 2
cmp -s l2rt-expected.qcow2 l2rt.qcow2 && ok "refused write changed nothing" || not_ok "refused write changed nothing"
expect_output "qemu-img sees the corrupt mark" "corrupt: true" qemu-img info l2rt.qcow2
expect_fail "a corrupt image is not opened read/write" "qcow2: Image is corrupt; cannot be opened read/write" \
    io -c 'write -P 1 0 4k' l2rt.qcow2
patch rbl1.qcow2 0x10000 '>Q' 0x30000
expect_fail "refcount block on the L1 table: allocation refused" \
    "Marking image 'rbl1.qcow2' as corrupt: Preventing invalid write on metadata \(overlaps with active L1 table\)" \
    io -c 'write -P 1 512k 4k' rbl1.qcow2

# Backing chain loops.
# (qemu-img refuses to make one: the name is patched in afterwards.)
qemu-img create -q -f qcow2 -b selg.qcow2 -F qcow2 -u self.qcow2 1M
python3 -c "
d = open('self.qcow2', 'rb').read().replace(b'selg.qcow2', b'self.qcow2', 1)
open('self.qcow2', 'wb').write(d)"
expect_fail "self-referencing backing file" \
    "Could not open backing file: Backing chain loop: '.*self.qcow2' is its own backing file" \
    "$MINIBLOCK_IMG" info self.qcow2
qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 -u a.qcow2 1M
qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 -u b.qcow2 1M
expect_fail "two-image backing loop" \
    "^miniblock-img: Could not open 'a.qcow2': Could not open backing file: Backing chain loop: '.*a.qcow2' is its own backing file$" \
    "$MINIBLOCK_IMG" info a.qcow2

# Unknown header extensions survive writes (we never rewrite that area).
python3 - <<'PY'
import struct
d = bytearray(open('good.qcow2', 'rb').read())
pos = 112
while True:
    t, l = struct.unpack_from('>II', d, pos)
    if t == 0:
        break
    pos += 8 + ((l + 7) & ~7)
struct.pack_into('>II8s', d, pos, 0x1badcafe, 5, b'hello')
struct.pack_into('>II', d, pos + 16, 0, 0)
open('unk.qcow2', 'wb').write(d)
PY
head -c 65536 unk.qcow2 | tail -c +113 >unk-before.bin
expect_ok "unknown extension: image writable" io -c 'write -P 3 128k 200k' unk.qcow2
head -c 65536 unk.qcow2 | tail -c +113 >unk-after.bin
if cmp -s unk-before.bin unk-after.bin; then ok "unknown extension preserved"; else not_ok "unknown extension preserved"; fi
expect_output "unknown extension: qemu-img check clean" "No errors were found" qemu-img check unk.qcow2

finish
