#!/bin/bash
# qcow2 creation is byte-identical to qemu-img 7.2's (same layout, same
# header extensions) where the metadata fits one refcount block; creation,
# open and tool errors are exact texts.
source "$(dirname "$0")/lib.sh"
need qemu-img qemu-io python3
cd "$T"

for o in cluster_size=512 cluster_size=4k cluster_size=8k cluster_size=64k cluster_size=2M \
         compat=0.10 compat=0.10,cluster_size=4k; do
    for size in 0 100M 3G; do
        rm -f q.qcow2 m.qcow2
        if [ $o = cluster_size=512 ] && [ $size = 3G ]; then
            # Several refcount blocks: qemu-img places them after the L1
            # table, miniblock before it; both are valid.
            "$MINIBLOCK_IMG" create -f qcow2 -o $o m.qcow2 $size >/dev/null
            expect_output "create $o $size: valid for qemu-img" "No errors were found" qemu-img check m.qcow2
            continue
        fi
        qemu-img create -q -f qcow2 -o $o q.qcow2 $size
        "$MINIBLOCK_IMG" create -f qcow2 -o $o m.qcow2 $size >/dev/null
        if cmp -s q.qcow2 m.qcow2; then ok "create $o $size: byte-identical to qemu-img"
        else not_ok "create $o $size: byte-identical to qemu-img" "$(cmp q.qcow2 m.qcow2 2>&1)"; fi
    done
done
qemu-img create -q -f raw base.raw 5M
for cs in 4k 64k; do
    rm -f q.qcow2 m.qcow2
    qemu-img create -q -f qcow2 -o cluster_size=$cs -b base.raw -F raw q.qcow2
    "$MINIBLOCK_IMG" create -f qcow2 -o cluster_size=$cs -b base.raw -F raw m.qcow2 >/dev/null
    if cmp -s q.qcow2 m.qcow2; then ok "create -b base.raw -F raw ($cs): byte-identical"
    else not_ok "create -b base.raw -F raw ($cs): byte-identical" "$(cmp q.qcow2 m.qcow2 2>&1)"; fi
done
expect_output "create -b: size from the backing file" "virtual size: 5 MiB" qemu-img info m.qcow2

c() { "$MINIBLOCK_IMG" create -f qcow2 "$@"; }
expect_fail "cluster_size not a power of two" "^miniblock-img: Invalid cluster_size '1000'$" c -o cluster_size=1000 x.qcow2 1M
expect_output "cluster_size detail" "Cluster size must be a power of two between 512 and 2M" sh -c "$MINIBLOCK_IMG create -f qcow2 -o cluster_size=4M x.qcow2 1M 2>&1; true"
expect_fail "compat" "^miniblock-img: Invalid compat '2'$" c -o compat=2 x.qcow2 1M
expect_fail "size not a multiple of 512" "^miniblock-img: Image size 1000 is not a multiple of 512 bytes$" c x.qcow2 1000
expect_fail "refcount_bits" "^miniblock-img: Refcount width must be a power of two and may not exceed 64 bits$" c -o refcount_bits=12 x.qcow2 1M
expect_fail "lazy_refcounts" "^miniblock-img: Parameter 'lazy_refcounts' expects 'on' or 'off'$" c -o lazy_refcounts=yes x.qcow2 1M
expect_fail "unknown creation option" "^miniblock-img: Invalid parameter 'foo'$" c -o foo=1 x.qcow2 1M
expect_fail "backing_fmt alone" "^miniblock-img: backing_fmt is set without backing_file$" c -o backing_fmt=raw x.qcow2 1M
expect_fail "-F without -b" "miniblock-img: -F needs -b" c -F raw x.qcow2 1M
expect_fail "missing backing file" "^miniblock-img: Could not open backing file 'nothere.raw': " c -b nothere.raw -F raw x.qcow2
expect_fail "too large for the cluster size" "^miniblock-img: Image size 1099511627776 is too large for cluster size 512$" \
    c -o cluster_size=512 x.qcow2 1T
long=$(printf 'a%.0s' $(seq 1100))
expect_fail "backing name too long" "^miniblock-img: Backing file name is longer than 1023 bytes$" \
    "$MINIBLOCK_IMG" create -f qcow2 -o "backing_file=$long" x.qcow2 1M

# Tool errors.
"$MINIBLOCK_IMG" create -f qcow2 g.qcow2 1M >/dev/null
expect_fail "check -r foo" "^miniblock-img: Unknown option value for -r \(expecting 'leaks' or 'all'\): foo$" "$MINIBLOCK_IMG" check -r foo g.qcow2
expect_fail "check of a raw image" "^miniblock-img: This image format does not support checks$" "$MINIBLOCK_IMG" check base.raw
"$MINIBLOCK_IMG" check -f raw base.raw >/dev/null 2>&1
[ $? = 63 ] && ok "check of a raw image exits 63" || not_ok "check of a raw image exits 63"
expect_fail "l2-cache-size too large" "Invalid value '8589934592' for parameter 'l2-cache-size'" \
    "$MINIBLOCK_IO" --image-opts -c 'read 0 4k' driver=qcow2,file.filename=g.qcow2,l2-cache-size=8G
expect_fail "refcount-cache-size too large" "Invalid value '8589934592' for parameter 'refcount-cache-size'" \
    "$MINIBLOCK_IO" --image-opts -c 'read 0 4k' driver=qcow2,file.filename=g.qcow2,refcount-cache-size=8G

# Internal snapshots (tests/interop/qcow2-snapshot.sh has the rest):
# writable, shared clusters copied, checked.
qemu-img create -q -f qcow2 s.qcow2 1M
qemu-io -c 'write -P 5 0 64k' s.qcow2 >/dev/null
qemu-img snapshot -c snap1 s.qcow2
expect_ok "snapshots: readable" "$MINIBLOCK_IO" -r -c 'read -P 5 0 64k' s.qcow2
expect_ok "snapshots: writable" "$MINIBLOCK_IO" -c 'write -P 6 0 4k' s.qcow2
expect_ok "snapshots: the snapshot kept its data" \
    bash -c "qemu-img convert -l snap1 -O raw s.qcow2 s1.raw && qemu-io -f raw -r -c 'read -P 5 0 64k' s1.raw"
expect_output "snapshots: checked" "No errors were found" "$MINIBLOCK_IMG" check s.qcow2

# More header fields.
qemu-img create -q -f qcow2 good.qcow2 1M
qemu-io -c 'write -P 9 0 64k' good.qcow2 >/dev/null
patch() { patch_image good.qcow2 "$@"; }
patch hl.qcow2 100 '>I' 100
expect_fail "header length too short" "qcow2 header length 100 is too short$" "$MINIBLOCK_IMG" info hl.qcow2
patch rt0.qcow2 56 '>I' 0
expect_fail "empty refcount table" "Refcount table is empty$" "$MINIBLOCK_IMG" info rt0.qcow2
patch ct.qcow2 104 'B' 1
expect_fail "compression type without its bit" "Compression type 1 is set without the compression type feature bit$" \
    "$MINIBLOCK_IMG" info ct.qcow2
patch ct2.qcow2 104 'B' 1 72 '>Q' 8
expect_fail "zstd compression refused" "Unsupported qcow2 feature\(s\): compression type$" "$MINIBLOCK_IMG" info ct2.qcow2
patch bf.qcow2 112 '>I' 0xe2792aca 116 '>I' 20
expect_fail "backing format name length" "Backing format name length 20 is out of range \(1..15\)$" "$MINIBLOCK_IMG" info bf.qcow2
patch sn.qcow2 60 '>I' 0x100000
expect_fail "snapshot count" "Snapshot count 1048576 is too large$" "$MINIBLOCK_IMG" info sn.qcow2
patch so.qcow2 60 '>I' 1 64 '>Q' 0x123
expect_fail "snapshot table offset" "Snapshot table offset 0x123 is invalid$" "$MINIBLOCK_IMG" info so.qcow2
patch nc.qcow2 0x30000 '>Q' 0x40000
expect_ok "L2 table without COPIED still readable" "$MINIBLOCK_IO" -r -c 'read -P 9 0 64k' nc.qcow2
# Without COPIED the table may be shared (with a snapshot): a write goes to
# a copy of it, the old one loses a reference (here its last).
expect_ok "L2 table without COPIED: written through a copy" "$MINIBLOCK_IO" -c 'write -P 8 64k 4k' nc.qcow2
expect_ok "... which reads back" qemu-io -r -c 'read -P 9 0 64k' -c 'read -P 8 64k 4k' nc.qcow2
expect_output "... and qemu-img check finds nothing" "No errors were found" qemu-img check nc.qcow2

# Chains: 1000 images open (made by patching the backing name of one
# qemu-img overlay, which is quick); a chain longer than max-chain-depth
# is refused in one line naming the image where it stopped.
qemu-img create -q -f qcow2 d0000.qcow2 1M
qemu-io -c 'write -P 0x5a 64k 4k' d0000.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b d0000.qcow2 -F qcow2 -u dt.qcow2 1M
python3 -c "
d = open('dt.qcow2', 'rb').read()
for i in range(1, 1001):
    open('d%04d.qcow2' % i, 'wb').write(d.replace(b'd0000.qcow2', b'd%04d.qcow2' % (i - 1)))"
expect_output "a chain of 1001 images opens and reads the base" '^read 4096/4096 bytes at offset 65536$' \
    "$MINIBLOCK_IO" -r -c 'read -P 0x5a 64k 4k' d1000.qcow2
expect_fail "a chain longer than max-chain-depth" \
    "^miniblock-io: can't open device .*: Could not open backing file: Backing chain longer than 100 images: stopped at 'd0900.qcow2'$" \
    "$MINIBLOCK_IO" -r --image-opts -c 'read 0 4k' driver=qcow2,file.filename=d1000.qcow2,max-chain-depth=100
expect_fail "a chain longer than max-chain-depth: the hint" "^Raise the limit with max-chain-depth \(at most 3000\)$" \
    "$MINIBLOCK_IO" -r --image-opts -c 'read 0 4k' driver=qcow2,file.filename=d1000.qcow2,max-chain-depth=100
expect_fail "max-chain-depth out of range" "Invalid value '3001' for parameter 'max-chain-depth'" \
    "$MINIBLOCK_IO" -r --image-opts -c 'read 0 4k' driver=qcow2,file.filename=d1000.qcow2,max-chain-depth=3001
expect_ok "max-chain-depth=1001 is enough" \
    "$MINIBLOCK_IO" -r --image-opts -c 'read -P 0x5a 64k 4k' driver=qcow2,file.filename=d1000.qcow2,max-chain-depth=1001
# Option paths (and node names) count a run of more than eight backing
# levels, so that a deep chain's names stay short; shorter runs are spelt out.
b9=backing.backing.backing.backing.backing.backing.backing.backing.backing
expect_fail "an option nine levels down is named with a counted run" \
    "Could not open backing file: Invalid value 'bogus' for parameter 'backing\[9\]\.file\.aio'$" \
    "$MINIBLOCK_IO" -r --image-opts -c 'read 0 4k' driver=qcow2,file.filename=d1000.qcow2,$b9.file.aio=bogus
expect_fail "an option three levels down is named in full" \
    "Could not open backing file: Invalid value 'bogus' for parameter 'backing\.backing\.backing\.file\.aio'$" \
    "$MINIBLOCK_IO" -r --image-opts -c 'read 0 4k' driver=qcow2,file.filename=d1000.qcow2,backing.backing.backing.file.aio=bogus

finish
