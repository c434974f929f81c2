// The cloop v2 layout, parsed from bytes (block/drivers/cloop.h): shared by
// the cloop driver (cloop.cpp, a plugin), its unit tests and its fuzz target.
//
// Every size read from the image is checked before it sizes an allocation:
// block_size <= 64 MiB, the offsets table <= 512 MiB and inside the file,
// each compressed block <= compressed_bound(block_size).
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <string>

#include <zlib.h>

#include "block/drivers/cloop.h"

namespace mb {

namespace cloop {

namespace {

constexpr char kSignature[] = "#!/bin/sh\n#V2.0 Format\n";
constexpr char kVersionPrefix[] = "#!/bin/sh\n#V";

uint32_t be32(const uint8_t *p) {
    return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}

uint64_t be64(const uint8_t *p) { return uint64_t(be32(p)) << 32 | be32(p + 4); }

std::string num(uint64_t v) { return std::to_string(v); }

// A preamble that names a version other than 2.0 (the kernel's later
// layouts): say so instead of misreading it.  A preamble without any version
// line is accepted, as QEMU accepts it.
Status check_version(const uint8_t *buf) {
    const size_t plen = sizeof(kVersionPrefix) - 1;
    if (memcmp(buf, kVersionPrefix, plen) != 0) return Status::OK();
    if (memcmp(buf, kSignature, sizeof(kSignature) - 1) == 0) return Status::OK();
    std::string version = "V";
    for (size_t i = plen; i < kPreambleSize && version.size() < 16; i++) {
        char c = char(buf[i]);
        if (c == ' ' || c == '\n' || c < 0x21 || c > 0x7e) break;
        version += c;
    }
    return Status::Error(ENOTSUP, "Unsupported cloop version '" + version + "'",
                         "Only the V2.0 layout is supported");
}

}  // namespace

Status parse_header(const uint8_t *buf, size_t len, int64_t file_size, Layout *out) {
    if (len < kHeaderSize || file_size < int64_t(kHeaderSize)) {
        return Status::Error(EINVAL, "File of " + num(std::min<uint64_t>(len, file_size)) +
                                         " bytes is too short for a cloop header");
    }
    MB_TRY(check_version(buf));
    uint32_t block_size = be32(buf + kPreambleSize);
    uint32_t n_blocks = be32(buf + kPreambleSize + 4);
    if (block_size == 0) return Status::Error(EINVAL, "block_size cannot be zero");
    if (block_size % 512) {
        return Status::Error(EINVAL, "block_size " + num(block_size) + " must be a multiple of 512");
    }
    if (block_size > kMaxBlockSize) {
        return Status::Error(EINVAL, "block_size " + num(block_size) + " must be 64 MiB or less");
    }
    uint64_t table = (uint64_t(n_blocks) + 1) * 8;  // no overflow: n_blocks < 2^32
    if (table > kMaxOffsetsTable) {
        return Status::Error(EINVAL, "n_blocks " + num(n_blocks) + " needs too many offsets",
                             "The offsets table is limited to 512 MiB (n_blocks " +
                                 num(kMaxOffsetsTable / 8 - 1) + "); try a larger block size");
    }
    if (uint64_t(file_size) < kHeaderSize + table) {
        return Status::Error(EINVAL, "Offsets table of n_blocks " + num(n_blocks) + " ends at byte " +
                                         num(kHeaderSize + table) + ", past the end of the file (" +
                                         num(file_size) + " bytes)");
    }
    out->block_size = block_size;
    out->n_blocks = n_blocks;
    out->offsets.reset();
    out->max_compressed = 0;
    return Status::OK();
}

Status parse_offsets(const uint8_t *table, size_t len, int64_t file_size, Layout *out) {
    const uint64_t n = uint64_t(out->n_blocks) + 1;
    if (len < n * 8) {
        return Status::Error(EINVAL, "Offsets table of " + num(len) + " bytes is too short for n_blocks " +
                                         num(out->n_blocks));
    }
    // Bounded: parse_header checked n against kMaxOffsetsTable and the file.
    std::unique_ptr<uint64_t[]> offsets(new (std::nothrow) uint64_t[n]);
    if (!offsets) return Status::Error(ENOMEM, "Could not allocate the offsets table (" + num(n * 8) + " bytes)");
    const uint64_t bound = compressed_bound(out->block_size);
    const uint64_t table_end = uint64_t(out->table_end());
    uint32_t max_compressed = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t off = be64(table + 8 * i);
        offsets[i] = off;
        if (i == 0 && off < table_end) {
            return Status::Error(EINVAL, "Offset 0 (" + num(off) +
                                             ") lies inside the header or the offsets table (which end at " +
                                             num(table_end) + ")");
        }
        if (off > uint64_t(file_size)) {
            return Status::Error(EINVAL, "Offset " + num(i) + " (" + num(off) + ") is past the end of the file (" +
                                             num(file_size) + " bytes)");
        }
        if (i == 0) continue;
        // Strictly: an empty block cannot inflate to block_size bytes.
        if (off <= offsets[i - 1]) {
            return Status::Error(EINVAL, "Offsets not increasing at index " + num(i) + " (" + num(off) +
                                             " after " + num(offsets[i - 1]) + ")");
        }
        uint64_t size = off - offsets[i - 1];
        if (size > bound) {
            return Status::Error(EINVAL, "Compressed block " + num(i - 1) + " of " + num(size) +
                                             " bytes exceeds the bound of " + num(bound) +
                                             " bytes for block_size " + num(out->block_size));
        }
        if (size > max_compressed) max_compressed = uint32_t(size);
    }
    out->offsets = std::move(offsets);
    out->max_compressed = max_compressed;
    return Status::OK();
}

Status parse_image(const uint8_t *buf, size_t len, Layout *out) {
    MB_TRY(parse_header(buf, len, int64_t(len), out));
    return parse_offsets(buf + kHeaderSize, len - kHeaderSize, int64_t(len), out);
}

int inflate_block(const uint8_t *in, size_t in_len, uint8_t *out, uint32_t block_size) {
    z_stream z{};
    if (inflateInit(&z) != Z_OK) return -EIO;
    z.next_in = const_cast<uint8_t *>(in);
    z.avail_in = uInt(in_len);
    z.next_out = out;
    z.avail_out = block_size;
    int ret = inflate(&z, Z_FINISH);
    bool ok = ret == Z_STREAM_END && z.total_out == block_size;
    inflateEnd(&z);
    return ok ? 0 : -EIO;
}

int probe(const uint8_t *buf, size_t len) {
    const size_t n = sizeof(kSignature) - 1;
    return len >= n && memcmp(buf, kSignature, n) == 0 ? 100 : 0;
}

}  // namespace cloop

}  // namespace mb
