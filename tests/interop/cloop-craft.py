#!/usr/bin/env python3
"""cloop-craft.py KIND VALID OUT: writes a hostile variant of the valid cloop
image VALID (made by create_compressed_fs, at least 3 blocks) to OUT.
Also used to write the fuzz seed corpus (tests/fuzz/corpus-cloop)."""
import struct
import sys

HDR = 136


def parse(img):
    bs, n = struct.unpack('>II', img[128:136])
    offs = list(struct.unpack('>%dQ' % (n + 1), img[HDR:HDR + 8 * (n + 1)]))
    return bs, n, offs


def with_header(img, bs, n):
    return img[:128] + struct.pack('>II', bs, n) + img[136:]


def with_offsets(img, n, offs):
    return img[:HDR] + struct.pack('>%dQ' % (n + 1), *offs) + img[HDR + 8 * (n + 1):]


def craft(kind, img):
    bs, n, offs = parse(img)
    if kind == 'short':
        return img[:100]
    if kind == 'version':
        return img.replace(b'#V2.0 Format', b'#V4.0 Format', 1)
    if kind == 'bs-zero':
        return with_header(img, 0, n)
    if kind == 'bs-odd':
        return with_header(img, 1000, n)
    if kind == 'bs-huge':
        return with_header(img, 128 << 20, n)
    if kind == 'n-overflow':
        return with_header(img, bs, 0xffffffff)
    if kind == 'table-past-end':
        return with_header(img, bs, 1000000)
    if kind == 'offset-in-table':
        offs[0] = 100
        return with_offsets(img, n, offs)
    if kind == 'offset-decreasing':
        offs[2] = offs[1] - 1
        return with_offsets(img, n, offs)
    if kind == 'offset-past-end':
        offs[n] = len(img) + 1
        return with_offsets(img, n, offs)
    if kind == 'block-too-big':
        # Block 0 swallows block 1: twice block_size of compressed bytes.
        offs[1] = offs[0] + 2 * bs
        offs[2] = max(offs[2], offs[1] + 1)
        return with_offsets(img, n, offs) + bytes(2 * bs)
    if kind == 'corrupt-zlib':
        # Garbage in block 1's deflate data (past its 2-byte zlib header).
        data = bytearray(img)
        for i in range(offs[1] + 2, min(offs[2], offs[1] + 66)):
            data[i] ^= 0x5a
        return bytes(data)
    raise SystemExit('unknown kind ' + kind)


if __name__ == '__main__':
    kind, src, dst = sys.argv[1:]
    with open(src, 'rb') as f:
        img = f.read()
    with open(dst, 'wb') as f:
        f.write(craft(kind, img))
