// The cloop format: read-only compressed loop images, v2 layout, as Debian's
// create_compressed_fs (cloop-utils) writes them and QEMU's cloop driver
// reads them.  See docs/drivers/cloop.md.
//
// The image is opened through its file child, so the file node takes the
// usual read-only locks (use consistent read, keep writers out): the seed
// thread's complaint that cloop "directly open()s the file, no locking
// implemented" does not apply here.  Read-write opens are refused, as QEMU
// refuses them ("Image is read-only"): nothing could be written anyway.
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

#include "block/aio.h"
#include "block/block_int.h"
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

}  // namespace cloop

namespace {

using cloop::Layout;

// A few decompressed blocks, least recently used out first; a 4 MiB budget,
// at least one block.
constexpr uint64_t kCacheBudget = 4 << 20;
constexpr size_t kCacheMaxEntries = 4;

struct CacheEntry {
    int64_t index = -1;
    uint64_t last_use = 0;
    std::unique_ptr<uint8_t[]> data;
};

struct CloopState : NodeState {
    Layout layout;
    std::unique_ptr<uint8_t[]> compressed;  // max_compressed bytes
    CacheEntry cache[kCacheMaxEntries];
    size_t cache_entries = 1;
    uint64_t use_clock = 0;
    CoMutex lock;  // one block decompresses at a time into the shared buffers
};

// The decompressed block `index`, from the cache or the file; nullptr and
// *err on failure.
Task<const uint8_t *> load_block(BlockDriverState *bs, int64_t index, int *err) {
    auto *s = bs->state<CloopState>();
    CacheEntry *victim = nullptr;
    for (size_t i = 0; i < s->cache_entries; i++) {
        CacheEntry &e = s->cache[i];
        if (e.index == index) {
            e.last_use = ++s->use_clock;
            co_return e.data.get();
        }
        // An empty slot first, else the least recently used.
        if (!victim || (victim->index >= 0 && (e.index < 0 || e.last_use < victim->last_use)))
            victim = &e;
    }
    if (!victim->data) {
        victim->data.reset(new (std::nothrow) uint8_t[s->layout.block_size]);
        if (!victim->data) {
            *err = -ENOMEM;
            co_return nullptr;
        }
    }
    victim->index = -1;
    uint64_t off = s->layout.offsets[index];
    uint64_t len = s->layout.offsets[index + 1] - off;
    int r = co_await bdrv_co_preadv(bs->file(), int64_t(off), int64_t(len), s->compressed.get(), 0);
    if (r < 0) {
        *err = r;
        co_return nullptr;
    }
    r = cloop::inflate_block(s->compressed.get(), len, victim->data.get(), s->layout.block_size);
    if (r < 0) {
        *err = r;
        co_return nullptr;
    }
    victim->index = index;
    victim->last_use = ++s->use_clock;
    co_return victim->data.get();
}

Task<int> cloop_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes, uint8_t *buf, int) {
    auto *s = bs->state<CloopState>();
    const int64_t size = s->layout.virtual_size();
    if (offset > size || bytes > size - offset) co_return -EINVAL;
    co_await s->lock.lock();
    CoLockGuard guard(s->lock);
    const int64_t block_size = s->layout.block_size;
    while (bytes > 0) {
        int64_t index = offset / block_size;
        int64_t in_block = offset % block_size;
        int64_t n = std::min(bytes, block_size - in_block);
        int err = 0;
        const uint8_t *data = co_await load_block(bs, index, &err);
        if (!data) co_return err;
        memcpy(buf, data + in_block, size_t(n));
        buf += n;
        offset += n;
        bytes -= n;
    }
    co_return 0;
}

int64_t cloop_getlength(BlockDriverState *bs) { return bs->state<CloopState>()->layout.virtual_size(); }

Status cloop_open(BlockDriverState *bs, qapi::OptionDict &opts) {
    if (!bs->read_only) {
        return Status::Error(EROFS, "cloop images are read-only", "Open with read-only=on");
    }
    auto child = bdrv_open_child(bs, opts, "file", ChildRole::File);
    if (!child.ok()) return child.take_status();
    BdrvChild *file = *child;
    const std::string &fname = file->bs->filename;
    int64_t len = bdrv_getlength(file->bs.get());
    if (len < 0) return PosixError("Could not get the length of '" + fname + "'", int(-len));

    auto s = std::make_unique<CloopState>();
    uint8_t header[cloop::kHeaderSize] = {};
    size_t hlen = size_t(std::min<int64_t>(len, cloop::kHeaderSize));
    int r = sync_wait(bdrv_co_preadv(file, 0, int64_t(hlen), header, 0));
    if (r < 0) return PosixError("Could not read the cloop header of '" + fname + "'", -r);
    MB_TRY(cloop::parse_header(header, hlen, len, &s->layout));

    // At most 512 MiB, and no more than the file holds (parse_header).
    size_t tlen = size_t(s->layout.table_end() - int64_t(cloop::kHeaderSize));
    std::unique_ptr<uint8_t[]> table(new (std::nothrow) uint8_t[tlen]);
    if (!table) return Status::Error(ENOMEM, "Could not allocate the offsets table (" + std::to_string(tlen) + " bytes)");
    r = sync_wait(bdrv_co_preadv(file, int64_t(cloop::kHeaderSize), int64_t(tlen), table.get(), 0));
    if (r < 0) return PosixError("Could not read the cloop offsets table of '" + fname + "'", -r);
    MB_TRY(cloop::parse_offsets(table.get(), tlen, len, &s->layout));

    s->compressed.reset(new (std::nothrow) uint8_t[std::max<uint32_t>(s->layout.max_compressed, 1)]);
    if (!s->compressed) return Status::Error(ENOMEM, "Could not allocate a compressed block buffer");
    s->cache_entries = size_t(std::clamp<uint64_t>(kCacheBudget / s->layout.block_size, 1,
                                                   kCacheMaxEntries));
    bs->opaque = std::move(s);
    return Status::OK();
}

int cloop_probe(const uint8_t *buf, size_t len, const char *) {
    const size_t n = sizeof(cloop::kSignature) - 1;
    return len >= n && memcmp(buf, cloop::kSignature, n) == 0 ? 100 : 0;
}

void cloop_get_info(BlockDriverState *bs, FormatInfo *info) {
    auto *s = bs->state<CloopState>();
    info->fields.emplace_back("block-size", std::to_string(s->layout.block_size));
    info->fields.emplace_back("block-count", std::to_string(s->layout.n_blocks));
}

}  // namespace

extern const BlockDriver bdrv_cloop;
const BlockDriver bdrv_cloop = {
    .format_name = "cloop",
    .is_protocol = false,
    .sharable_writes = false,
    .protocols = nullptr,
    .probe = cloop_probe,
    .open = cloop_open,
    .close = nullptr,
    .child_perm = nullptr,  // pass-through: a read-only node's read-only locks
    .check_perm = nullptr,
    .set_perm = nullptr,
    .abort_perm_update = nullptr,
    .co_preadv = cloop_co_preadv,
    .co_pwritev = nullptr,
    .co_pwrite_zeroes = nullptr,
    .co_pdiscard = nullptr,
    .co_flush = nullptr,
    .co_truncate = nullptr,
    .co_block_status = nullptr,
    .getlength = cloop_getlength,
    .get_allocated_size = nullptr,
    .get_info = cloop_get_info,
    .create = nullptr,
};

}  // namespace mb
