#!/bin/bash
# qcow2 images made by the real qemu-img 7.2 read back bit-exact through
# miniblock: versions 2 and 3, cluster sizes 512 B to 2 MiB, refcount
# widths, zero clusters, compressed clusters, backing chains (raw and
# qcow2 bases, relative names, a base shorter than the overlay).
source "$(dirname "$0")/lib.sh"
need qemu-img qemu-io cmp
cd "$T"

# same NAME IMG: miniblock's view of IMG equals qemu-img's, byte for byte.
same() {
    local name=$1 img=$2
    rm -f "$T/q.raw" "$T/m.raw"
    qemu-img convert -O raw "$img" "$T/q.raw"
    if ! out=$("$MINIBLOCK_IMG" convert -O raw "$img" "$T/m.raw" 2>&1); then
        not_ok "$name" "miniblock-img convert failed: $out"
    elif cmp -s "$T/q.raw" "$T/m.raw"; then
        ok "$name"
    else
        not_ok "$name" "contents differ: $(cmp "$T/q.raw" "$T/m.raw" 2>&1 | head -1)"
    fi
}

fill() {
    qemu-io -f qcow2 -c 'write -P 0x11 0 100k' -c 'write -P 0x22 300k 5000' -c 'write -z 1M 512k' \
        -c 'write -P 0x33 3M 1M' -c 'write -P 0x44 6143k 1k' -c 'write -z 2M 4k' "$1" >/dev/null
}

for compat in 0.10 1.1; do
    for cs in 512 4k 64k 2M; do
        img=v-$compat-$cs.qcow2
        qemu-img create -q -f qcow2 -o compat=$compat,cluster_size=$cs "$img" 6M
        fill "$img"
        same "compat=$compat cluster_size=$cs" "$img"
    done
done

for rb in 1 8 32 64; do
    qemu-img create -q -f qcow2 -o refcount_bits=$rb rb$rb.qcow2 6M
    fill rb$rb.qcow2
    same "refcount_bits=$rb" rb$rb.qcow2
    expect_output "refcount_bits=$rb: info" "refcount bits: $rb" "$MINIBLOCK_IMG" info rb$rb.qcow2
done

# Compressed clusters: qemu-img convert -c and qemu-io write -c.
qemu-img create -q -f raw src.raw 8M
qemu-io -f raw -c 'write -P 0x55 0 3M' -c 'write -P 0x66 5M 1M' src.raw >/dev/null
head -c 1M /dev/urandom > rnd.bin
dd if=rnd.bin of=src.raw bs=1M seek=6 conv=notrunc status=none
for cs in 512 4k 64k 2M; do
    qemu-img convert -c -O qcow2 -o cluster_size=$cs src.raw c-$cs.qcow2
    same "convert -c cluster_size=$cs" c-$cs.qcow2
done
qemu-img create -q -f qcow2 cw.qcow2 4M
qemu-io -c 'write -c -P 0x77 64k 64k' -c 'write -c -P 0x78 1M 64k' cw.qcow2 >/dev/null
same "qemu-io write -c" cw.qcow2
expect_output "compressed: map says compressed data" '"start": 65536, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true' \
    "$MINIBLOCK_IMG" map --output=json cw.qcow2

# Backing chains: raw base, qcow2 middle, qcow2 top; relative names.
mkdir -p sub
qemu-img create -q -f raw sub/base.raw 4M
qemu-io -f raw -c 'write -P 0xa1 0 4M' sub/base.raw >/dev/null
qemu-img create -q -f qcow2 -b base.raw -F raw sub/mid.qcow2 8M
qemu-io -c 'write -P 0xb2 1M 100k' -c 'write -z 2M 64k' sub/mid.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b sub/mid.qcow2 -F qcow2 top.qcow2
qemu-io -c 'write -P 0xc3 1050k 3000' -c 'write -P 0xc4 7M 4k' top.qcow2 >/dev/null
same "chain raw <- qcow2 <- qcow2 (relative names, short base)" top.qcow2
expect_ok "chain: read -P sees the base" "$MINIBLOCK_IO" -r -c 'read -P 0xa1 0 1M' -c 'read -P 0xb2 1M 26k' \
    -c 'read -P 0xc3 1050k 3000' -c 'read -P 0 2M 64k' -c 'read -P 0 4M 3M' top.qcow2
expect_output "chain: map depth" '"depth": 2' "$MINIBLOCK_IMG" map --output=json top.qcow2
expect_output "info --backing-chain lists the base" 'image: .*sub/base.raw' "$MINIBLOCK_IMG" info --backing-chain top.qcow2
expect_output "info --backing-chain --output=json: an array of three" '^3$' \
    sh -c "'$MINIBLOCK_IMG' info --backing-chain --output=json top.qcow2 | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'"
expect_output "info shows the backing format" 'backing file format: qcow2' "$MINIBLOCK_IMG" info top.qcow2

# map agrees with qemu-img map on a qcow2-only image.
qemu-img create -q -f qcow2 m.qcow2 4M
qemu-io -c 'write -P 1 0 100k' -c 'write -z 1M 128k' -c 'write -P 2 3M 64k' m.qcow2 >/dev/null
if diff <(qemu-img map --output=json m.qcow2) <("$MINIBLOCK_IMG" map --output=json m.qcow2) >/dev/null; then
    ok "map --output=json equals qemu-img's"
else
    not_ok "map --output=json equals qemu-img's" "$(diff <(qemu-img map --output=json m.qcow2) <("$MINIBLOCK_IMG" map --output=json m.qcow2))"
fi
if diff <(qemu-img map m.qcow2) <("$MINIBLOCK_IMG" map m.qcow2) >/dev/null; then
    ok "map (human) equals qemu-img's"
else
    not_ok "map (human) equals qemu-img's" "$(diff <(qemu-img map m.qcow2) <("$MINIBLOCK_IMG" map m.qcow2))"
fi

# A backing file with no recorded format: probed, and refused in strict mode.
qemu-img create -q -f raw nofmt-base.raw 1M
# (qemu-img 7.2 and miniblock-img insist on -F with -b; -o backing_file alone still makes
# such a legacy image.)
"$MINIBLOCK_IMG" create -f qcow2 -o backing_file=nofmt-base.raw nofmt.qcow2 1M >/dev/null 2>&1
if qemu-img info nofmt.qcow2 | grep -q 'backing file format'; then
    not_ok "no backing format recorded without -F"
else
    ok "no backing format recorded without -F"
fi
expect_ok "unrecorded backing format: probed" "$MINIBLOCK_IO" -r -c 'read -P 0 0 4k' nofmt.qcow2
expect_fail "strict-backing refuses a guessed raw backing" \
    "Backing file '.*nofmt-base.raw' has no recorded format" \
    "$MINIBLOCK_IO" -r --image-opts -c 'read 0 4k' "driver=qcow2,file.filename=nofmt.qcow2,strict-backing=on"
# A recorded format is never probed into another: qcow2 recorded, raw there.
qemu-img create -q -f qcow2 -b nofmt-base.raw -F qcow2 -u liar.qcow2 1M
expect_fail "recorded backing format is not re-probed" "Could not open backing file: .*Image is not in qcow2 format" \
    "$MINIBLOCK_IO" -r -c 'read 0 4k' liar.qcow2
expect_ok "backing=null opens without the backing file" "$MINIBLOCK_IO" -r --image-opts -c 'read -P 0 0 4k' \
    "driver=qcow2,file.filename=liar.qcow2,backing=null"
expect_ok "l2-cache-size option" "$MINIBLOCK_IO" -r --image-opts -c 'read -P 0x33 3M 1M' \
    "driver=qcow2,file.filename=v-1.1-512.qcow2,l2-cache-size=512"

finish
