// Fuzz target: cloop header and offsets table parsing, then decompression of
// the first blocks of whatever parses.  Hostile input must give a Status or
// -EIO, never a crash, an overflow or an allocation beyond the bounds the
// parser promises (the offsets table never larger than the input).
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>

#include "block/drivers/cloop.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    using namespace mb::cloop;
    Layout l;
    // The header alone, claiming a huge file: checks only, no allocation.
    (void)parse_header(data, size, INT64_MAX, &l);
    if (!parse_image(data, size, &l).ok()) return 0;
    if (l.table_end() > int64_t(size) || l.offsets[l.n_blocks] > size) abort();
    // Small blocks only: keep each run fast.
    if (l.block_size > (256u << 10)) return 0;
    std::unique_ptr<uint8_t[]> out(new uint8_t[l.block_size]);
    for (uint32_t i = 0; i < l.n_blocks && i < 4; i++) {
        uint64_t off = l.offsets[i], len = l.offsets[i + 1] - off;
        if (len > compressed_bound(l.block_size) || off + len > size) abort();
        (void)inflate_block(data + off, len, out.get(), l.block_size);
    }
    return 0;
}
