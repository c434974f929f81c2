// The cloop format: read-only compressed loop images, v2 layout, as Debian's
// create_compressed_fs (cloop-utils) writes them and QEMU's cloop driver
// reads them.  See docs/drivers/cloop.md.
//
// Written against the public driver ABI only (include/miniblock/driver.h),
// as any out-of-tree plugin would be: it is the example docs/plugins.md
// walks through, and with -Dmodules=enabled it is built as block-cloop.so.
// The layout parser (cloop-layout.cpp) is plain code shared with the unit
// tests and the fuzz target.
//
// The image is opened through its file child, so the file node takes the
// usual read-only locks (use consistent read, keep writers out): the seed
// thread's complaint that cloop "directly open()s the file, no locking
// implemented" does not apply here.  Read-write opens are refused, as QEMU
// refuses them ("Image is read-only"): nothing could be written anyway.
//
// Thread model SERIALIZE: reads run on the core's worker threads one at a
// time per node, so the block cache and the compressed buffer need no lock,
// and decompression never stalls the event loop.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <new>
#include <string>

// Linked into the library unless built as a module (-Dmodules=enabled).
#ifndef MB_BUILD_AS_MODULE
#define MB_BUILTIN_DRIVER cloop
#endif
#include "block/drivers/cloop.h"
#include "miniblock/driver.h"

namespace {

using mb::cloop::Layout;

// A few decompressed blocks, least recently used out first; a 4 MiB budget,
// at least one block.
constexpr uint64_t kCacheBudget = 4 << 20;
constexpr size_t kCacheMaxEntries = 4;

struct CacheEntry {
    int64_t index = -1;
    uint64_t last_use = 0;
    std::unique_ptr<uint8_t[]> data;
};

struct Cloop {
    mbd_child *file = nullptr;
    Layout layout;
    std::unique_ptr<uint8_t[]> compressed;  // max_compressed bytes
    CacheEntry cache[kCacheMaxEntries];
    size_t cache_entries = 1;
    uint64_t use_clock = 0;
};

// Hands a Status to the core as this callback's error.
void set_error(const mb::Status &st) {
    mbd_error(st.err(), "%s", st.message().c_str());
    if (!st.detail().empty()) mbd_error_hint("%s", st.detail().c_str());
}

// The decompressed block `index`, from the cache or the file; nullptr and
// *err on failure.
const uint8_t *load_block(Cloop *s, int64_t index, int *err) {
    CacheEntry *victim = nullptr;
    for (size_t i = 0; i < s->cache_entries; i++) {
        CacheEntry &e = s->cache[i];
        if (e.index == index) {
            e.last_use = ++s->use_clock;
            return e.data.get();
        }
        // An empty slot first, else the least recently used.
        if (!victim || (victim->index >= 0 && (e.index < 0 || e.last_use < victim->last_use)))
            victim = &e;
    }
    if (!victim->data) {
        victim->data.reset(new (std::nothrow) uint8_t[s->layout.block_size]);
        if (!victim->data) {
            *err = -ENOMEM;
            return nullptr;
        }
    }
    victim->index = -1;
    uint64_t off = s->layout.offsets[index];
    uint64_t len = s->layout.offsets[index + 1] - off;
    int r = mbd_child_pread(s->file, s->compressed.get(), len, off, 0);
    if (r == 0) r = mb::cloop::inflate_block(s->compressed.get(), len, victim->data.get(), s->layout.block_size);
    if (r < 0) {
        *err = r;
        return nullptr;
    }
    victim->index = index;
    victim->last_use = ++s->use_clock;
    return victim->data.get();
}

int cloop_pread(void *handle, void *vbuf, uint64_t count, uint64_t offset, uint32_t) {
    auto *s = static_cast<Cloop *>(handle);
    auto *buf = static_cast<uint8_t *>(vbuf);
    const uint64_t size = uint64_t(s->layout.virtual_size());
    if (offset > size || count > size - offset) return -EINVAL;
    const uint64_t block_size = s->layout.block_size;
    while (count > 0) {
        int64_t index = int64_t(offset / block_size);
        uint64_t in_block = offset % block_size;
        uint64_t n = std::min(count, block_size - in_block);
        int err = 0;
        const uint8_t *data = load_block(s, index, &err);
        if (!data) return err;
        memcpy(buf, data + in_block, n);
        buf += n;
        offset += n;
        count -= n;
    }
    return 0;
}

int64_t cloop_get_length(void *handle) { return static_cast<Cloop *>(handle)->layout.virtual_size(); }

void *cloop_open(mbd_node *node) {
    if (!mbd_node_read_only(node)) {
        mbd_error(EROFS, "cloop images are read-only");
        mbd_error_hint("Open with read-only=on");
        return nullptr;
    }
    auto s = std::make_unique<Cloop>();
    s->file = mbd_open_child(node, "file", MBD_CHILD_FILE);
    if (!s->file) return nullptr;
    const std::string fname = mbd_child_filename(s->file);
    int64_t len = mbd_child_length(s->file);
    if (len < 0) {
        mbd_error(int(-len), "Could not get the length of '%s': %s", fname.c_str(), strerror(int(-len)));
        return nullptr;
    }

    uint8_t header[mb::cloop::kHeaderSize] = {};
    size_t hlen = size_t(std::min<int64_t>(len, mb::cloop::kHeaderSize));
    int r = mbd_child_pread(s->file, header, hlen, 0, 0);
    if (r < 0) {
        mbd_error(-r, "Could not read the cloop header of '%s': %s", fname.c_str(), strerror(-r));
        return nullptr;
    }
    if (mb::Status st = mb::cloop::parse_header(header, hlen, len, &s->layout); !st.ok()) {
        set_error(st);
        return nullptr;
    }

    // At most 512 MiB, and no more than the file holds (parse_header).
    size_t tlen = size_t(s->layout.table_end() - int64_t(mb::cloop::kHeaderSize));
    std::unique_ptr<uint8_t[]> table(new (std::nothrow) uint8_t[tlen]);
    if (!table) {
        mbd_error(ENOMEM, "Could not allocate the offsets table (%zu bytes)", tlen);
        return nullptr;
    }
    r = mbd_child_pread(s->file, table.get(), tlen, mb::cloop::kHeaderSize, 0);
    if (r < 0) {
        mbd_error(-r, "Could not read the cloop offsets table of '%s': %s", fname.c_str(), strerror(-r));
        return nullptr;
    }
    if (mb::Status st = mb::cloop::parse_offsets(table.get(), tlen, len, &s->layout); !st.ok()) {
        set_error(st);
        return nullptr;
    }

    s->compressed.reset(new (std::nothrow) uint8_t[std::max<uint32_t>(s->layout.max_compressed, 1)]);
    if (!s->compressed) {
        mbd_error(ENOMEM, "Could not allocate a compressed block buffer");
        return nullptr;
    }
    s->cache_entries = size_t(std::clamp<uint64_t>(kCacheBudget / s->layout.block_size, 1, kCacheMaxEntries));
    return s.release();
}

void cloop_close(void *handle) { delete static_cast<Cloop *>(handle); }

int cloop_probe(const uint8_t *buf, size_t len, const char *) { return mb::cloop::probe(buf, len); }

void cloop_get_info(void *handle, mbd_info *info) {
    auto *s = static_cast<Cloop *>(handle);
    mbd_info_add(info, "block-size", std::to_string(s->layout.block_size).c_str());
    mbd_info_add(info, "block-count", std::to_string(s->layout.n_blocks).c_str());
}

// The children (a "file", required) come from the core's defaults.
mbd_driver cloop_driver = [] {
    mbd_driver d{};
    d.name = "cloop";
    d.description = "The cloop format: read-only compressed loop images (v2 layout)";
    d.kind = MBD_FORMAT;
    d.thread_model = MBD_THREAD_SERIALIZE;
    d.probe = cloop_probe;
    d.open = cloop_open;
    d.close = cloop_close;
    d.get_length = cloop_get_length;
    d.pread = cloop_pread;
    d.get_info = cloop_get_info;
    return d;
}();

}  // namespace

MBD_REGISTER(cloop_driver)
