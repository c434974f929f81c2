// The cloop v2 layout, parsed from bytes (no I/O), so that the driver and the
// fuzz target (tests/fuzz/fuzz-cloop.cpp) check hostile images the same way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "miniblock/status.h"

namespace mb::cloop {

// The layout, in bytes: a 128-byte shell preamble, big-endian u32 block_size
// at 128 and u32 n_blocks at 132, then n_blocks + 1 big-endian u64 offsets;
// block i is the zlib stream in [offsets[i], offsets[i + 1]).
inline constexpr size_t kPreambleSize = 128;
inline constexpr size_t kHeaderSize = 136;
inline constexpr uint32_t kMaxBlockSize = 64u << 20;        // QEMU's cap
inline constexpr uint64_t kMaxOffsetsTable = 512ull << 20;  // QEMU's cap

struct Layout {
    uint32_t block_size = 0;
    uint32_t n_blocks = 0;
    // n_blocks + 1 entries, strictly increasing, inside the file.
    std::unique_ptr<uint64_t[]> offsets;
    // The largest compressed block (bounded by compressed_bound()).
    uint32_t max_compressed = 0;

    int64_t table_end() const { return kHeaderSize + 8 * (int64_t(n_blocks) + 1); }
    int64_t virtual_size() const { return int64_t(n_blocks) * block_size; }
};

// How large a zlib stream of one block may be: deflate of incompressible
// data grows a little (QEMU's bound: block_size + block_size/1000 + 12 + 4).
inline uint32_t compressed_bound(uint32_t block_size) {
    return block_size + block_size / 1000 + 16;
}

// Step 1: the first kHeaderSize bytes (fewer is an error) of a file of
// `file_size` bytes.  Sets block_size and n_blocks; checks that the offsets
// table fits (in the file and under kMaxOffsetsTable) before anyone
// allocates it.
Status parse_header(const uint8_t *buf, size_t len, int64_t file_size, Layout *out);
// Step 2: the offsets table, table_end() - kHeaderSize bytes read at
// kHeaderSize.  Allocates it (bounded by step 1) and checks every entry.
Status parse_offsets(const uint8_t *table, size_t len, int64_t file_size, Layout *out);
// Both steps over a whole image held in memory (the fuzz target's entry).
Status parse_image(const uint8_t *buf, size_t len, Layout *out);

// 100 if the bytes start with the V2.0 signature, else 0.
int probe(const uint8_t *buf, size_t len);

// Decompresses block `index`'s `in_len` bytes into exactly block_size bytes
// at `out`; 0 or -EIO (corrupt or short stream).
int inflate_block(const uint8_t *in, size_t in_len, uint8_t *out, uint32_t block_size);

}  // namespace mb::cloop
