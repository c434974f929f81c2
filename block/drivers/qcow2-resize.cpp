// qcow2 resize (the driver's co_truncate), as QEMU 7.2's qcow2_co_truncate:
//
//   grow    a larger L1 table if the new size needs one (exactly as large as
//           needed, written at the end, the header switched to it in one
//           write, the old one freed), then the new size in the header.
//           With a backing file longer than the old size, the newly visible
//           range reads as zeroes (QEMU's BDRV_REQ_ZERO_WRITE on truncate),
//           not as the backing file's stale data.
//   shrink  every cluster past the new end is released and its L2 entry
//           cleared, L2 tables wholly past it are unhooked and freed (the
//           L1 table keeps its size, as QEMU's), the new size goes in the
//           header, and the file is cut after the last cluster in use.
//
// The order keeps a crash safe as the write path does: the new L1 table
// and its refcounts are on disk before the header points at it; L2 entries
// are cleared before the refcounts of what they pointed at drop.
#include <algorithm>
#include <cerrno>

#include "block/drivers/qcow2.h"

namespace mb::qcow2 {

namespace {

Task<int> write_file(BlockDriverState *bs, uint64_t off, uint64_t len, const uint8_t *buf) {
    co_return co_await bdrv_co_pwritev(bs->file(), off, len, buf);
}


// A new L1 table of exactly `entries` entries.  Caller holds s->lock.
Task<int> grow_l1(BlockDriverState *bs, uint64_t entries) {
    State *s = bs->state<State>();
    const uint64_t cs = s->cluster_size;
    if (entries * 8 > MAX_L1_BYTES) co_return -EFBIG;
    const uint64_t bytes = entries * 8;
    int64_t off = co_await alloc_clusters(bs, int64_t((bytes + cs - 1) / cs));
    if (off < 0) co_return int(off);
    std::vector<uint8_t> t(bytes, 0);
    for (size_t i = 0; i < s->l1.size(); i++) put_be64(&t[i * 8], s->l1[i]);
    int r = co_await write_file(bs, uint64_t(off), bytes, t.data());
    // Its refcounts and contents on disk before the header names it.
    if (r == 0) r = co_await write_back_all(bs);
    if (r == 0) r = co_await flush_file(bs);
    if (r < 0) co_return r;
    uint8_t hb[12];
    put_be32(hb, uint32_t(entries));
    put_be64(hb + 4, uint64_t(off));
    if ((r = co_await write_file(bs, 36, sizeof hb, hb)) < 0) co_return r;
    if ((r = co_await flush_file(bs)) < 0) co_return r;
    const uint64_t old_off = s->h().l1_table_offset, old_bytes = uint64_t(s->h().l1_size) * 8;
    s->h().l1_table_offset = uint64_t(off);
    s->h().l1_size = uint32_t(entries);
    s->l1.resize(entries, 0);
    // The old table is unreferenced now: a failure here only leaks it.  Its
    // bytes stay (qemu-img does not discard them either).
    if (old_bytes && (r = co_await free_range(bs, old_off, old_bytes)) < 0) co_return r;
    co_return 0;
}

Task<int> write_size(BlockDriverState *bs, uint64_t size) {
    uint8_t b[8];
    put_be64(b, size);
    int r = co_await write_file(bs, 24, 8, b);
    if (r == 0) r = co_await flush_file(bs);
    if (r == 0) bs->state<State>()->h().size = size;
    co_return r;
}

// Releases every guest cluster from `first` on and unhooks the L2 tables
// that map only clusters past it.  Caller holds s->lock.
Task<int> release_tail(BlockDriverState *bs, uint64_t first) {
    State *s = bs->state<State>();
    const uint64_t per_l2 = uint64_t(1) << s->l2_bits;
    const uint64_t keep_l1 = (first + per_l2 - 1) / per_l2;
    int r;
    for (uint64_t i = first / per_l2; i < s->l1.size(); i++) {
        if (!(s->l1[i] & L1E_OFFSET_MASK)) continue;
        uint64_t k0 = i == first / per_l2 ? first % per_l2 : 0;
        TableCache::Table t;
        uint64_t l2_off;
        // ensure_l2_for copies a table shared with a snapshot first.
        if ((r = co_await ensure_l2_for(bs, int64_t(i * per_l2) << s->cluster_bits, &t, &l2_off)) < 0) co_return r;
        std::vector<uint64_t> old;
        for (uint64_t k = k0; k < per_l2; k++) old.push_back(be64(t->data() + k * 8));
        if ((r = co_await check_release(bs, old, "discard of")) < 0) co_return r;
        for (uint64_t k = k0; k < per_l2; k++) put_be64(t->data() + k * 8, 0);
        s->l2_cache.mark_dirty(l2_off, t);
        for (uint64_t e : old) {
            uint64_t off, len;
            entry_range(s, e, &off, &len);
            if (len && (r = co_await free_range(bs, off, len)) < 0) co_return r;
        }
    }
    // L2 tables past the new end: cleared on disk first, then unhooked from
    // the L1 table (on disk, at once), then freed.
    if ((r = co_await write_back_all(bs)) < 0) co_return r;
    if (keep_l1 >= s->l1.size()) co_return 0;
    std::vector<uint8_t> zeroes((s->l1.size() - keep_l1) * 8, 0);
    if ((r = co_await write_file(bs, s->h().l1_table_offset + keep_l1 * 8, zeroes.size(), zeroes.data())) < 0) co_return r;
    if ((r = co_await flush_file(bs)) < 0) co_return r;
    for (uint64_t i = keep_l1; i < s->l1.size(); i++) {
        uint64_t l2_off = s->l1[i] & L1E_OFFSET_MASK;
        s->l1[i] = 0;
        if (!l2_off) continue;
        s->l2_cache.erase(l2_off);
        s->l2_offsets.erase(l2_off);
        if ((r = co_await free_range(bs, l2_off, s->cluster_size)) < 0) co_return r;
    }
    co_return co_await write_back_all(bs);
}

// Cuts the file after the last cluster with a refcount (QEMU's
// qcow2_get_last_cluster), so a shrunk image gives its space back.
Task<int> cut_file(BlockDriverState *bs) {
    State *s = bs->state<State>();
    int64_t file_len = bdrv_getlength(bs->file()->bs.get());
    if (file_len < 0) co_return int(file_len);
    int64_t c = (file_len + s->cluster_size - 1) / s->cluster_size;
    while (c > 0) {
        uint64_t rc;
        int r = co_await get_refcount(bs, c - 1, &rc);
        if (r < 0) co_return r;
        if (rc) break;
        c--;
    }
    if (c * s->cluster_size < file_len) {
        // As QEMU: a file that cannot shrink (a block device) is no error.
        (void)co_await bdrv_co_truncate(bs->file(), c * s->cluster_size);
    }
    s->free_index = c;
    co_return 0;
}

}  // namespace

Task<int> co_truncate(BlockDriverState *bs, int64_t size) {
    State *s = bs->state<State>();
    if (s->corrupt) co_return -EIO;  // see signal_corruption
    if (size % 512) co_return -EINVAL;
    const uint64_t cs = s->cluster_size;
    const uint64_t l2_cover = cs << s->l2_bits;
    const uint64_t old = s->h().size;
    if (uint64_t(size) == old) co_return 0;
    int r;
    {
        co_await s->lock.lock();
        CoLockGuard g(s->lock);
        if ((r = co_await prepare_write(bs)) < 0) co_return r;
        if (uint64_t(size) > old) {
            uint64_t entries = (uint64_t(size) + l2_cover - 1) / l2_cover;
            if (entries > s->l1.size() && (r = co_await grow_l1(bs, entries)) < 0) co_return r;
            if ((r = co_await write_size(bs, uint64_t(size))) < 0) co_return r;
        } else {
            // Allocating writes past the new end finish linking first.
            const uint64_t first = (uint64_t(size) + cs - 1) / cs;
            while (co_await wait_for_overlapping(s, first, (old + cs - 1) / cs - first)) {
            }
            if ((r = co_await release_tail(bs, first)) < 0) co_return r;
            if ((r = co_await write_size(bs, uint64_t(size))) < 0) co_return r;
            co_return co_await cut_file(bs);
        }
    }
    // Growing over a longer backing file: the new range reads as zeroes.
    if (BdrvChild *b = bs->backing()) {
        int64_t blen = bdrv_getlength(b->bs.get());
        if (blen < 0) co_return int(blen);
        int64_t end = std::min<int64_t>(size, blen);
        if (end > int64_t(old)) co_return co_await co_pwrite_zeroes(bs, int64_t(old), end - int64_t(old), 0);
    }
    co_return 0;
}

}  // namespace mb::qcow2
