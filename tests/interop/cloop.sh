#!/bin/bash
# cloop against its real peers: images written by create_compressed_fs
# (cloop-utils) read back bit-exact through miniblock and read the same by
# qemu-img; the file node's read-only locks keep a qemu-io writer out; hostile
# images (crafted by cloop-craft.py) refused with their exact messages.
. "$(dirname "$0")/lib.sh"
need create_compressed_fs qemu-img qemu-io python3 cmp
CRAFT="$MINIBLOCK_SOURCE/tests/interop/cloop-craft.py"

# mkcloop NAME SIZE BLOCK_SIZE [EXTRA create_compressed_fs OPTIONS]: random
# data (half compressible) of SIZE bytes into $T/NAME.cloop; $T/NAME.want is
# what the image must read as: the data, zero-padded to whole blocks.
mkcloop() {
    local name=$1 size=$2 bsize=$3; shift 3
    python3 -c "
import os, sys
size = $size
data = bytearray(os.urandom(size))
for i in range(0, size, 8192):  # every other 4 KiB compresses well
    data[i + 4096:i + 8192] = bytes(len(data[i + 4096:i + 8192]))
sys.stdout.buffer.write(data)" >"$T/$name.raw"
    create_compressed_fs -q "$@" -B "$bsize" "$T/$name.raw" "$T/$name.cloop" >/dev/null 2>&1 ||
        { echo "FATAL: create_compressed_fs failed for $name"; exit 1; }
    cp "$T/$name.raw" "$T/$name.want"
    truncate -s $(( (size + bsize - 1) / bsize * bsize )) "$T/$name.want"
}

# Bit-exact reads: sizes that are and are not multiples of the block size,
# block sizes from 512 B to 256 KiB, zlib level 0 (stored) and 7zip deflate.
IMAGES=()
mkcloop a 200000 65536;             IMAGES+=(a)
mkcloop b 1048576 4096;             IMAGES+=(b)
mkcloop c 9000 512;                 IMAGES+=(c)
mkcloop d 3000000 262144;           IMAGES+=(d)
mkcloop e 100000 16384 -L 0;        IMAGES+=(e)
mkcloop f 150000 32768 -L -1;       IMAGES+=(f)
# Written to a pipe (-m: in memory, since stdout cannot be rewound): the same bytes.
create_compressed_fs -q -m -B 65536 "$T/a.raw" - 2>/dev/null >"$T/g.cloop"
cp "$T/a.want" "$T/g.want";         IMAGES+=(g)
expect_ok "create_compressed_fs to stdout writes the same image" cmp "$T/g.cloop" "$T/a.cloop"
for n in "${IMAGES[@]}"; do
    img="$T/$n.cloop"
    expect_ok "$n: miniblock reads it (format given)" \
        "$MINIBLOCK_DUMP" "file=$img,format=cloop,read-only=on" "$T/$n.mb"
    expect_ok "$n: miniblock reads the data create_compressed_fs was given" cmp "$T/$n.mb" "$T/$n.want"
    expect_ok "$n: qemu-img convert -f cloop reads it" \
        qemu-img convert -f cloop -O raw "$img" "$T/$n.qemu"
    expect_ok "$n: miniblock and qemu-img read the same bytes" cmp "$T/$n.mb" "$T/$n.qemu"
    expect_ok "$n: probed as cloop" "$MINIBLOCK_DUMP" "file=$img,read-only=on" "$T/$n.probed"
    expect_ok "$n: probed read is the same" cmp "$T/$n.probed" "$T/$n.want"
    if "$MINIBLOCK_IMG" --help 2>&1 | grep -qw convert; then
        expect_ok "$n: miniblock-img convert -O raw" \
            "$MINIBLOCK_IMG" convert -f cloop -O raw "$img" "$T/$n.conv"
        expect_ok "$n: converted bytes are the data" cmp "$T/$n.conv" "$T/$n.want"
    fi
done

# Reads that start and end inside blocks, through miniblock-io, checked
# against a pattern: image c has 18 blocks of 512, zero-padded after 9000.
expect_output "miniblock-io reads the zero tail of the last block" \
    '^read 216/216 bytes at offset 9000$' \
    "$MINIBLOCK_IO" -r -f cloop -c 'read -P 0 9000 216' "$T/c.cloop"
expect_output "miniblock-io read straddling blocks matches qemu-io's dump" \
    '^read 1000/1000 bytes at offset 300$' \
    "$MINIBLOCK_IO" -r -f cloop -c 'read 300 1000' "$T/c.cloop"
# The hex columns only: the two tools pad the last line's text differently.
hexcols() { grep '^000' | cut -c1-58 | sed 's/  [^ ].*$//; s/^\([0-9a-f]*:\)$/\1/'; }
"$MINIBLOCK_IO" -r -f cloop -c 'read -v 300 1000' "$T/c.cloop" | hexcols >"$T/c.mbv"
qemu-io -r -f cloop -c 'read -v 300 1000' "$T/c.cloop" | hexcols >"$T/c.qv"
expect_output "the hex dump has all 1000 bytes" '^63 ' wc -l "$T/c.mbv"
expect_ok "miniblock-io read -v hex equals qemu-io read -v hex" cmp "$T/c.mbv" "$T/c.qv"
expect_fail "a read past the end is refused" '^read failed: Input/output error$' \
    "$MINIBLOCK_IO" -r -f cloop -c 'read 8704 1024' "$T/c.cloop"

expect_output "info shows block size and count" \
    'block-size: 65536' "$MINIBLOCK_IMG" info "$T/a.cloop"
expect_output "info shows the block count" \
    'block-count: 4$' "$MINIBLOCK_IMG" info "$T/a.cloop"
expect_output "info --output=json" \
    '"block-size" *: *4096' "$MINIBLOCK_IMG" info --output=json "$T/b.cloop"

# Read-only: a read-write open is refused, as QEMU's qemu-io refuses it.
expect_fail "read-write open refused" \
    "^miniblock-io: can't open device .*a\.cloop: cloop images are read-only$" \
    "$MINIBLOCK_IO" -f cloop -c 'read 0 512' "$T/a.cloop"
expect_fail "read-write open refused, with a hint" '^Open with read-only=on$' \
    "$MINIBLOCK_IO" -c 'read 0 512' "$T/a.cloop"
expect_fail "qemu-io refuses read-write too" 'Image is read-only' \
    qemu-io -f cloop -c 'read 0 512' "$T/a.cloop"

# Locking: while miniblock-io holds the cloop image, a writer of the file is
# kept out and readers are not; once it is gone, the writer gets in.
cp "$T/b.cloop" "$T/held.cloop"
hold mb "$MINIBLOCK_IO" -r -f cloop "$T/held.cloop"
echo "read -P 0 4096 4096" >&"$HOLD_FD_mb"
if wait_for "$T/hold-mb.out" '\[ok\]'; then ok "miniblock-io holds the cloop image"; else not_ok "miniblock-io holds the cloop image"; fi
expect_fail "qemu-io writer refused while miniblock holds the cloop image" \
    'Failed to get "write" lock' qemu-io -f raw -c 'write 0 512' "$T/held.cloop"
expect_fail "qemu-img resize refused while held" \
    'Failed to get "(write|resize)" lock' qemu-img resize -f raw "$T/held.cloop" 10M
expect_ok "qemu-io reader allowed alongside" qemu-io -r -f cloop -c 'read 0 4096' "$T/held.cloop"
expect_ok "a second miniblock reader allowed alongside" \
    "$MINIBLOCK_IO" -r -f cloop -c 'read 0 4096' "$T/held.cloop"
expect_output "miniblock-img locks names the holder" 'miniblock-io' "$MINIBLOCK_IMG" locks "$T/held.cloop"
eval "exec $HOLD_FD_mb>&-"
wait "$HOLD_PID_mb"
expect_ok "the writer gets in once miniblock is gone" qemu-io -f raw -c 'write 0 512' "$T/held.cloop"

# lock=shared (QEMU's -U) keeps no writer out; lock=exclusive keeps readers out.
cp "$T/b.cloop" "$T/sh.cloop"
hold sh "$MINIBLOCK_IO" -r -f cloop -U "$T/sh.cloop"
echo "read 0 512" >&"$HOLD_FD_sh"
if wait_for "$T/hold-sh.out" '\[ok\]'; then ok "miniblock-io -U holds the cloop image"; else not_ok "miniblock-io -U holds the cloop image"; fi
expect_ok "qemu-io writer allowed under lock=shared" qemu-io -f raw -c 'write 0 512' "$T/sh.cloop"
eval "exec $HOLD_FD_sh>&-"
wait "$HOLD_PID_sh"
cp "$T/b.cloop" "$T/ex.cloop"
hold ex "$MINIBLOCK_IO" -r -f cloop -l exclusive "$T/ex.cloop"
echo "read 0 512" >&"$HOLD_FD_ex"
if wait_for "$T/hold-ex.out" '\[ok\]'; then ok "miniblock-io -l exclusive holds the cloop image"; else not_ok "miniblock-io -l exclusive holds the cloop image"; fi
expect_fail "qemu-io reader refused under lock=exclusive" 'Failed to get "consistent read" lock' \
    qemu-io -r -f cloop -c 'read 0 512' "$T/ex.cloop"
eval "exec $HOLD_FD_ex>&-"
wait "$HOLD_PID_ex"

# And the other way: a qemu-io writer of the file keeps miniblock's reader out.
cp "$T/b.cloop" "$T/w.cloop"
HOLD_READY=x hold q qemu-io -f raw "$T/w.cloop"
echo "read 0 512" >&"$HOLD_FD_q"
if wait_for "$T/hold-q.out" 'read 512/512'; then ok "qemu-io holds the file for writing"; else not_ok "qemu-io holds the file for writing"; fi
expect_fail "miniblock's cloop reader refused while qemu-io writes the file" \
    'Failed to get shared "write" lock' "$MINIBLOCK_IO" -r -f cloop -c 'read 0 512' "$T/w.cloop"
eval "exec $HOLD_FD_q>&-"
wait "$HOLD_PID_q"

# Hostile images: each refused with its exact message, or, for corrupt data,
# an I/O error on the read of that block and nothing else.  The base is
# incompressible data (every block stored), and the numbers in the messages
# come from its actual layout.
head -c 200000 /dev/urandom >"$T/hb.raw"
create_compressed_fs -q -B 65536 "$T/hb.raw" "$T/hb.cloop" >/dev/null 2>&1
HB_SIZE=$(stat -c %s "$T/hb.cloop")
read -r OFF1 OFF2 < <(python3 -c "
import struct; d = open('$T/hb.cloop', 'rb').read()
print(*struct.unpack('>QQ', d[144:160]))")
hostile() {
    local kind=$1 pattern=$2
    python3 "$CRAFT" "$kind" "$T/hb.cloop" "$T/h-$kind.cloop"
    expect_fail "hostile $kind refused" "^miniblock-io: can't open device .*h-$kind\.cloop: $pattern\$" \
        "$MINIBLOCK_IO" -r -f cloop -c 'read 0 512' "$T/h-$kind.cloop"
}
hostile short 'File of 100 bytes is too short for a cloop header'
hostile version "Unsupported cloop version 'V4\.0'"
hostile bs-zero 'block_size cannot be zero'
hostile bs-odd 'block_size 1000 must be a multiple of 512'
hostile bs-huge 'block_size 134217728 must be 64 MiB or less'
hostile n-overflow 'n_blocks 4294967295 needs too many offsets'
hostile table-past-end "Offsets table of n_blocks 1000000 ends at byte 8000144, past the end of the file \($HB_SIZE bytes\)"
hostile offset-in-table 'Offset 0 \(100\) lies inside the header or the offsets table \(which end at 176\)'
hostile offset-decreasing "Offsets not increasing at index 2 \($((OFF1 - 1)) after $OFF1\)"
hostile offset-past-end "Offset 4 \($((HB_SIZE + 1))\) is past the end of the file \($HB_SIZE bytes\)"
hostile block-too-big 'Compressed block 0 of 131072 bytes exceeds the bound of 65617 bytes for block_size 65536'
expect_fail "hint for too many offsets" \
    '^The offsets table is limited to 512 MiB \(n_blocks 67108863\); try a larger block size$' \
    "$MINIBLOCK_IO" -r -f cloop -c 'read 0 512' "$T/h-n-overflow.cloop"
expect_fail "hint for an unsupported version" '^Only the V2\.0 layout is supported$' \
    "$MINIBLOCK_IO" -r -f cloop -c 'read 0 512' "$T/h-version.cloop"
expect_fail "QEMU refuses a zero block size too" 'block_size cannot be zero' \
    qemu-img info -f cloop "$T/h-bs-zero.cloop"
expect_fail "a hostile image is refused when probed too" 'block_size 1000 must be a multiple of 512' \
    "$MINIBLOCK_IO" -r -c 'read 0 512' "$T/h-bs-odd.cloop"

python3 "$CRAFT" corrupt-zlib "$T/hb.cloop" "$T/h-zlib.cloop"
expect_output "corrupt zlib: the other blocks still read" '^read 65536/65536' \
    "$MINIBLOCK_IO" -r -f cloop -c "read -P 0 200000 62144" -c 'read 0 65536' "$T/h-zlib.cloop"
expect_fail "corrupt zlib: its block gives an I/O error" '^read failed: Input/output error$' \
    "$MINIBLOCK_IO" -r -f cloop -c 'read 65536 512' "$T/h-zlib.cloop"
out=$("$MINIBLOCK_IO" -r -f cloop -c 'read 70000 512' -c 'read 131071 1' -c 'read 0 512' "$T/h-zlib.cloop" 2>&1)
if [ "$(grep -c '^read failed: Input/output error$' <<<"$out")" = 2 ] && grep -q '^read 512/512 bytes at offset 0$' <<<"$out"; then
    ok "corrupt zlib: a failed block is not cached, the next read of it fails again"
else
    not_ok "corrupt zlib: a failed block is not cached, the next read of it fails again" "output: $out"
fi
expect_fail "corrupt zlib: qemu-img fails on it too" 'error|Error' \
    qemu-img convert -f cloop -O raw "$T/h-zlib.cloop" "$T/h-zlib.raw"

finish
