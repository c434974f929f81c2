// qcow2 guest -> host mapping through L1/L2, the table cache, and writes.
//
// Allocating writes hold s->lock for their whole duration (copy-on-write
// reads, data, L2 and L1 updates); writes to clusters already allocated
// (OFLAG_COPIED) and reads only hold it for the lookup.  L2 entries change
// in the cache (qcow2-cache.cpp writes them back); only a new L2 table's
// L1 entry is written at once.
#include <algorithm>
#include <cerrno>
#include <cstring>

#include "block/drivers/qcow2.h"
#include "block/drivers/qcow2-snapshot.h"
#include "block/warn.h"

namespace mb::qcow2 {

namespace {

// Classifies an L2 entry; -EIO for entries that cannot be valid.
int classify(BlockDriverState *bs, uint64_t e, int64_t guest, ClusterType *t) {
    State *s = bs->state<State>();
    if (e & OFLAG_COMPRESSED) {
        *t = ClusterType::Compressed;
        if ((e & s->coffset_mask) < uint64_t(s->cluster_size)) {
            warn_report("qcow2: compressed cluster for guest offset " + hex(guest) + " in '" +
                        bs->file()->bs->filename + "' points into the image header");
            return -EIO;
        }
        return 0;
    }
    uint64_t off = e & L2E_OFFSET_MASK;
    if (s->h().version >= 3 && (e & OFLAG_ZERO)) *t = off ? ClusterType::ZeroAlloc : ClusterType::ZeroPlain;
    else *t = off ? ClusterType::Normal : ClusterType::Unallocated;
    if (off && (off % s->cluster_size)) {
        warn_report("qcow2: cluster offset " + hex(off) + " for guest offset " + hex(guest) + " in '" +
                    bs->file()->bs->filename + "' is unaligned" +
                    (off < uint64_t(s->cluster_size) ? " (inside the image header)" : ""));
        return -EIO;
    }
    return 0;
}

Task<int> write_file(BlockDriverState *bs, uint64_t off, uint64_t len, const uint8_t *buf) {
    co_return co_await bdrv_co_pwritev(bs->file(), off, len, buf);
}


// Writes the 512-byte sector of the L1 table holding entry l1_idx from the
// in-memory copy (QEMU pads the table with zeroes to a sector, as we do),
// so that an 8-byte change never becomes a read-modify-write.
Task<int> write_l1_sector(BlockDriverState *bs, uint64_t l1_idx) {
    State *s = bs->state<State>();
    uint64_t first = l1_idx & ~uint64_t(63);
    uint8_t buf[512] = {};
    for (uint64_t i = first; i < first + 64 && i < s->l1.size(); i++) put_be64(buf + (i - first) * 8, s->l1[i]);
    bdrv_debug_event(bs->file(), "l1_update");
    co_return co_await write_file(bs, s->h().l1_table_offset + first * 8, 512, buf);
}

// Drops the autoclear bits we do not maintain (bitmaps): QEMU then knows
// the bitmaps are stale.  Done once, before the first change.
Task<int> prepare_first_write(BlockDriverState *bs) {
    State *s = bs->state<State>();
    if (s->header_updated) co_return 0;
    // Every write path passes here first: the refcount table (and the
    // refcount blocks the overlap checks know) must be in memory.
    if (int r = co_await load_reftable(bs); r < 0) co_return r;
    s->header_updated = true;
    // QEMU's lazy refcounts left the image dirty: repaired before anything
    // is allocated from its refcounts (qcow2-repair.cpp).
    if (s->h().incompatible & INCOMPAT_DIRTY) {
        if (int r = co_await repair_dirty(bs); r < 0) co_return r;
    }
    if (s->h().version >= 3 && s->h().autoclear) {
        uint8_t z[8] = {};
        int r = co_await write_file(bs, 88, 8, z);
        if (r < 0) co_return r;
        s->h().autoclear = 0;
    }
    co_return 0;
}

// The L2 table for l1_idx, allocated if absent.  Caller holds s->lock.
Task<int> ensure_l2(BlockDriverState *bs, uint64_t l1_idx, TableCache::Table *t, uint64_t *l2_off) {
    State *s = bs->state<State>();
    if (l1_idx >= s->l1.size()) co_return -EIO;
    uint64_t e = s->l1[l1_idx];
    uint64_t off = e & L1E_OFFSET_MASK;
    if (off) {
        // Shared with a snapshot: changes go to a copy.
        if (!(e & OFLAG_COPIED)) co_return co_await cow_l2_table(bs, l1_idx, t, l2_off);
        int r = co_await check_overlap(bs, "write on", off, s->cluster_size, MetaKind::L2);
        if (r < 0) co_return r;
        *l2_off = off;
        co_return co_await load_table(bs, s->l2_cache, off, t);
    }
    int64_t noff = co_await alloc_clusters(bs, 1);
    if (noff < 0) co_return (int)noff;
    auto nt = std::make_shared<std::vector<uint8_t>>(s->cluster_size, 0);
    // The table's refcount and the table itself reach the disk before the
    // L1 entry that points at it.
    int r = co_await write_back_rb(bs);
    if (r < 0) co_return r;
    bdrv_debug_event(bs->file(), "l2_alloc_write");
    if ((r = co_await write_file(bs, noff, s->cluster_size, nt->data())) < 0) co_return r;
    if ((r = co_await flush_file(bs)) < 0) co_return r;
    uint64_t saved = s->l1[l1_idx];
    s->l1[l1_idx] = uint64_t(noff) | OFLAG_COPIED;
    if ((r = co_await write_l1_sector(bs, l1_idx)) < 0) {
        s->l1[l1_idx] = saved;
        co_return r;
    }
    s->l2_offsets.insert(noff);
    s->l2_cache.insert(noff, nt);
    *t = nt;
    *l2_off = noff;
    co_return 0;
}

// Frees what an L2 entry that is being replaced referenced (check_release
// has made sure it can).
Task<int> release_entry(BlockDriverState *bs, uint64_t old) {
    State *s = bs->state<State>();
    uint64_t off, len;
    entry_range(s, old, &off, &len);
    co_return co_await free_range(bs, off, len);
}

bool in_place(State *s, uint64_t e) {
    return (e & OFLAG_COPIED) && !(e & OFLAG_COMPRESSED) && (e & L2E_OFFSET_MASK) &&
           !(s->h().version >= 3 && (e & OFLAG_ZERO));
}

// Waits, if [first, first + n) (guest clusters) overlaps an allocation in
// flight, until that allocation is done; true if it waited (s->lock was
// released meanwhile, so the caller looks the mapping up again).  Caller
// holds s->lock, and holds it again on return.
Task<bool> wait_for_allocations(State *s, uint64_t first, uint64_t n) {
    for (auto &a : s->in_flight) {
        if (a->first < first + n && first < a->first + a->n) {
            std::shared_ptr<InFlight> keep = a;
            s->lock.unlock();
            co_await keep->done.lock();
            keep->done.unlock();
            co_await s->lock.lock();
            co_return true;
        }
    }
    co_return false;
}

// One allocating write of up to `bytes` at `offset` within one L2 table:
// new clusters (a contiguous run) for every cluster of the run that cannot
// be written in place.  Returns bytes consumed, 0 to look the mapping up
// again, or negative errno.  Caller holds s->lock, which is released while
// the data goes to the new clusters: allocations of other clusters proceed
// meanwhile, and only requests for these guest clusters wait.
Task<int64_t> allocating_write(BlockDriverState *bs, int64_t offset, int64_t bytes, const uint8_t *buf) {
    State *s = bs->state<State>();
    const int64_t cs = s->cluster_size;
    const uint64_t l2_entries = uint64_t(1) << s->l2_bits;
    int r = co_await prepare_first_write(bs);
    if (r < 0) co_return r;
    uint64_t l1_idx = uint64_t(offset) >> (s->cluster_bits + s->l2_bits);
    uint64_t l2_idx = (uint64_t(offset) >> s->cluster_bits) & (l2_entries - 1);
    TableCache::Table t;
    uint64_t l2_off = 0;
    if ((r = co_await ensure_l2(bs, l1_idx, &t, &l2_off)) < 0) co_return r;

    int64_t in_off = offset & (cs - 1);
    int64_t max_clusters = std::max<int64_t>(1, (8 << 20) / cs);
    int64_t want = (in_off + bytes + cs - 1) / cs;
    int64_t n = 0;
    while (n < want && n < max_clusters && l2_idx + n < l2_entries && !in_place(s, be64(t->data() + (l2_idx + n) * 8)))
        n++;
    if (n == 0) co_return 0;  // written in place after a new look-up
    const uint64_t first = uint64_t(offset) >> s->cluster_bits;
    if (co_await wait_for_allocations(s, first, n)) co_return 0;
    int64_t len = std::min<int64_t>(bytes, n * cs - in_off);
    // Everything that can fail comes before the first change: a write that
    // fails leaves the image as it was.
    std::vector<uint64_t> old(n);
    for (int64_t i = 0; i < n; i++) old[i] = be64(t->data() + (l2_idx + i) * 8);
    if ((r = co_await check_release(bs, old, "free of")) < 0) co_return r;
    int64_t host = co_await alloc_clusters(bs, n);
    if (host < 0) co_return host;
    // Only data clusters: metadata is written in place at once (and
    // resize's L1 table ends the file where qemu-img's does).
    co_await preallocate(bs, host + n * cs);
    auto fl = std::make_shared<InFlight>();
    fl->first = first;
    fl->n = n;
    co_await fl->done.lock();  // free: taken at once
    s->in_flight.push_back(fl);
    s->lock.unlock();

    int64_t guest0 = offset - in_off;
    const uint8_t *data = buf;
    std::vector<uint8_t> b;
    r = 0;
    // New clusters lie past everything the file held when this open first
    // allocated (compute_free_index truncates what lay past the last
    // refcounted cluster; free_index never goes back), or in the tail
    // preallocated as zeroes, so they read as zeroes: where the old content
    // is zeroes too, only the new data needs writing.
    bool old_zero = true;
    int64_t blen = 0;
    if (bs->backing() && (blen = bdrv_getlength(bs->backing()->bs.get())) < 0) blen = INT64_MAX;
    for (int64_t i = 0; i < n && old_zero; i++) {
        bool zflag = s->h().version >= 3 && (old[i] & OFLAG_ZERO) && !(old[i] & OFLAG_COMPRESSED);
        bool unalloc = !(old[i] & OFLAG_COMPRESSED) && !(old[i] & L2E_OFFSET_MASK);
        old_zero = zflag || (unalloc && guest0 + i * cs >= blen);
    }
    if (old_zero) {
        bdrv_debug_event(bs->file(), "write_aio");
        r = co_await write_file(bs, host + in_off, len, buf);
    } else if (in_off != 0 || len != n * cs) {
        // Copy-on-write: the old content around the new data (backing
        // file, zeroes, compressed or shared cluster), which cannot change
        // while this allocation is in flight.
        b.resize(n * cs);
        bdrv_debug_event(bs->file(), "cow_read");
        if (in_off) r = co_await read_range(bs, guest0, in_off, b.data(), false);
        memcpy(b.data() + in_off, buf, len);
        int64_t end = in_off + len;
        if (r == 0 && end < n * cs) r = co_await read_range(bs, guest0 + end, n * cs - end, b.data() + end, false);
        data = b.data();
        bdrv_debug_event(bs->file(), "cow_write");
        if (r == 0) r = co_await write_file(bs, host, n * cs, data);
    } else {
        bdrv_debug_event(bs->file(), "write_aio");
        r = co_await write_file(bs, host, n * cs, data);
    }

    co_await s->lock.lock();
    s->in_flight.remove(fl);
    fl->done.unlock();
    // The references being dropped may have changed while unlocked (shared
    // compressed clusters): check again before changing anything.
    if (r == 0) r = co_await check_release(bs, old, "free of");
    if (r < 0) {
        // Nothing points at the new clusters: drop their refcounts (the
        // space is not reused: new clusters must read as zeroes).
        (void)co_await free_range(bs, host, n * cs);
        co_return r;
    }
    for (int64_t i = 0; i < n; i++) put_be64(t->data() + (l2_idx + i) * 8, uint64_t(host + i * cs) | OFLAG_COPIED);
    l2_points_at_new_data(s, l2_off, t);
    for (int64_t i = 0; i < n; i++)
        if ((r = co_await release_entry(bs, old[i])) < 0) co_return r;
    co_return len;
}

}  // namespace

Task<int> prepare_write(BlockDriverState *bs) { co_return co_await prepare_first_write(bs); }

Task<bool> wait_for_overlapping(State *s, uint64_t first, uint64_t n) {
    co_return co_await wait_for_allocations(s, first, n);
}

Task<int> ensure_l2_for(BlockDriverState *bs, int64_t guest, TableCache::Table *t, uint64_t *l2_off) {
    State *s = bs->state<State>();
    co_return co_await ensure_l2(bs, uint64_t(guest) >> (s->cluster_bits + s->l2_bits), t, l2_off);
}

Task<int> get_mapping(BlockDriverState *bs, int64_t offset, int64_t bytes, Mapping *m) {
    State *s = bs->state<State>();
    const int64_t cs = s->cluster_size;
    const uint64_t l2_entries = uint64_t(1) << s->l2_bits;
    int64_t in_off = offset & (cs - 1);
    uint64_t l1_idx = uint64_t(offset) >> (s->cluster_bits + s->l2_bits);
    uint64_t l2_idx = (uint64_t(offset) >> s->cluster_bits) & (l2_entries - 1);
    // Never past this L2 table's coverage.
    int64_t max_bytes = std::min<int64_t>(bytes, int64_t(l2_entries - l2_idx) * cs - in_off);
    *m = Mapping{};
    m->bytes = max_bytes;
    if (l1_idx >= s->l1.size()) co_return 0;
    uint64_t l2_off = s->l1[l1_idx] & L1E_OFFSET_MASK;
    if (!l2_off) co_return 0;
    TableCache::Table t;
    int r = co_await load_table(bs, s->l2_cache, l2_off, &t);
    if (r < 0) co_return r;
    const uint8_t *p = t->data();
    uint64_t e0 = be64(p + l2_idx * 8);
    ClusterType t0;
    if ((r = classify(bs, e0, offset, &t0)) < 0) co_return r;
    m->type = t0;
    m->copied = e0 & OFLAG_COPIED;
    uint64_t host0 = e0 & L2E_OFFSET_MASK;
    if (t0 == ClusterType::Compressed) {
        m->host = e0 & ~(OFLAG_COMPRESSED | OFLAG_COPIED);
        m->bytes = std::min<int64_t>(max_bytes, cs - in_off);
        co_return 0;
    }
    m->host = host0 + in_off;
    int64_t covered = cs - in_off;
    for (uint64_t i = l2_idx + 1; covered < max_bytes && i < l2_entries; i++) {
        uint64_t e = be64(p + i * 8);
        ClusterType ti;
        if (classify(bs, e, offset, &ti) < 0 || ti != t0) break;
        if (t0 == ClusterType::Normal &&
            ((e & L2E_OFFSET_MASK) != host0 + (i - l2_idx) * cs || bool(e & OFLAG_COPIED) != m->copied))
            break;
        covered += cs;
    }
    m->bytes = std::min(max_bytes, covered);
    co_return 0;
}

Task<int> co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes, const uint8_t *buf, int flags) {
    State *s = bs->state<State>();
    if (s->corrupt) co_return -EIO;  // see signal_corruption
    if (uint64_t(offset) > s->h().size || uint64_t(bytes) > s->h().size - offset) co_return -EINVAL;
    if (flags & BDRV_REQ_WRITE_COMPRESSED) co_return co_await write_compressed(bs, offset, bytes, buf);
    // The overlap checks of in-place writes need the refcount blocks known.
    if (int r = co_await load_reftable(bs); r < 0) co_return r;
    while (bytes > 0) {
        co_await s->lock.lock();
        Mapping m;
        int r = co_await get_mapping(bs, offset, bytes, &m);
        if (r < 0) {
            s->lock.unlock();
            co_return r;
        }
        if (m.type == ClusterType::Normal && m.copied) {
            s->lock.unlock();
            if ((r = co_await check_overlap(bs, "write on", m.host, m.bytes, MetaKind::Data)) < 0) co_return r;
            bdrv_debug_event(bs->file(), "write_aio");
            r = co_await write_file(bs, m.host, m.bytes, buf);
            if (r < 0) co_return r;
            offset += m.bytes;
            bytes -= m.bytes;
            buf += m.bytes;
            continue;
        }
        int64_t n = co_await allocating_write(bs, offset, m.bytes, buf);
        s->lock.unlock();
        if (n < 0) co_return (int)n;
        offset += n;
        bytes -= n;
        buf += n;
    }
    co_return 0;
}

Task<int> co_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes, int flags) {
    State *s = bs->state<State>();
    if (s->corrupt) co_return -EIO;  // see signal_corruption
    const int64_t cs = s->cluster_size;
    if (s->h().version < 3) co_return -ENOTSUP;  // no zero flag: written as data
    if (uint64_t(offset) > s->h().size || uint64_t(bytes) > s->h().size - offset) co_return -EINVAL;
    // Partial clusters at either end are written as data.
    int64_t head = std::min<int64_t>(bytes, (cs - (offset & (cs - 1))) & (cs - 1));
    int64_t end = offset + bytes;
    int64_t tail = std::min<int64_t>(bytes - head, end & (cs - 1));
    // The last cluster of an image whose size is not cluster aligned is whole.
    if (tail && uint64_t(end) == s->h().size) tail = 0;
    std::vector<uint8_t> zero(std::max(head, tail), 0);
    if (head) {
        int r = co_await co_pwritev(bs, offset, head, zero.data(), flags);
        if (r < 0) co_return r;
    }
    int64_t off = offset + head, left = bytes - head - tail;
    const uint64_t l2_entries = uint64_t(1) << s->l2_bits;
    while (left > 0) {
        co_await s->lock.lock();
        CoLockGuard g(s->lock);
        int r = co_await prepare_first_write(bs);
        if (r < 0) co_return r;
        uint64_t l1_idx = uint64_t(off) >> (s->cluster_bits + s->l2_bits);
        uint64_t l2_idx = (uint64_t(off) >> s->cluster_bits) & (l2_entries - 1);
        int64_t n = std::min<int64_t>((left + cs - 1) / cs, l2_entries - l2_idx);
        int64_t done = std::min<int64_t>(left, n * cs);
        if (!bs->backing() && l1_idx < s->l1.size() && !(s->l1[l1_idx] & L1E_OFFSET_MASK)) {
            // No table and no backing file: these clusters read as zeroes already.
            off += done;
            left -= done;
            continue;
        }
        if (co_await wait_for_allocations(s, uint64_t(off) >> s->cluster_bits, n)) continue;
        TableCache::Table t;
        uint64_t l2_off;
        if ((r = co_await ensure_l2(bs, l1_idx, &t, &l2_off)) < 0) co_return r;
        std::vector<uint64_t> old(n, 0), now(n);
        for (int64_t i = 0; i < n; i++) {
            uint64_t e = be64(t->data() + (l2_idx + i) * 8);
            if (in_place(s, e) || ((e & OFLAG_ZERO) && (e & OFLAG_COPIED) && !(e & OFLAG_COMPRESSED))) {
                // Keep the allocation: ZERO_ALLOC.
                now[i] = (e & L2E_OFFSET_MASK) | OFLAG_COPIED | OFLAG_ZERO;
            } else {
                old[i] = e;
                now[i] = OFLAG_ZERO;
            }
        }
        if ((r = co_await check_release(bs, old, "free of")) < 0) co_return r;
        for (int64_t i = 0; i < n; i++) put_be64(t->data() + (l2_idx + i) * 8, now[i]);
        // The entries change before the old clusters lose their reference
        // (the write-back keeps that order on disk).
        s->l2_cache.mark_dirty(l2_off, t);
        for (int64_t i = 0; i < n; i++)
            if (old[i] && (r = co_await release_entry(bs, old[i])) < 0) co_return r;
        off += done;
        left -= done;
    }
    if (tail) {
        int r = co_await co_pwritev(bs, end - tail, tail, zero.data(), flags);
        if (r < 0) co_return r;
    }
    co_return 0;
}

Task<int> co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes) {
    State *s = bs->state<State>();
    if (s->corrupt) co_return -EIO;  // see signal_corruption
    const int64_t cs = s->cluster_size;
    if (uint64_t(offset) > s->h().size || uint64_t(bytes) > s->h().size - offset) co_return -EINVAL;
    // Without a zero flag, dropping a cluster would show the backing file.
    if (bs->backing() && s->h().version < 3) co_return 0;
    // Whole clusters only (the last one of an unaligned image counts).
    int64_t start = (offset + cs - 1) & ~(cs - 1);
    int64_t end = uint64_t(offset + bytes) == s->h().size ? offset + bytes : (offset + bytes) & ~(cs - 1);
    const uint64_t l2_entries = uint64_t(1) << s->l2_bits;
    const uint64_t new_entry = bs->backing() ? OFLAG_ZERO : 0;
    while (start < end) {
        co_await s->lock.lock();
        CoLockGuard g(s->lock);
        uint64_t l1_idx = uint64_t(start) >> (s->cluster_bits + s->l2_bits);
        uint64_t l2_idx = (uint64_t(start) >> s->cluster_bits) & (l2_entries - 1);
        int64_t n = std::min<int64_t>((end - start + cs - 1) / cs, l2_entries - l2_idx);
        uint64_t l1e = l1_idx < s->l1.size() ? s->l1[l1_idx] : 0;
        if (co_await wait_for_allocations(s, uint64_t(start) >> s->cluster_bits, n)) continue;
        if (l1e & L1E_OFFSET_MASK) {
            int r = co_await prepare_first_write(bs);
            if (r < 0) co_return r;
            TableCache::Table t;
            uint64_t l2_off;
            if ((r = co_await ensure_l2(bs, l1_idx, &t, &l2_off)) < 0) co_return r;
            std::vector<uint64_t> old(n);
            for (int64_t i = 0; i < n; i++) old[i] = be64(t->data() + (l2_idx + i) * 8);
            // Nothing changes unless every cluster can go (none is metadata).
            if ((r = co_await check_release(bs, old, "discard of")) < 0) co_return r;
            for (int64_t i = 0; i < n; i++) put_be64(t->data() + (l2_idx + i) * 8, new_entry);
            s->l2_cache.mark_dirty(l2_off, t);
            for (int64_t i = 0; i < n; i++) {
                if ((r = co_await release_entry(bs, old[i])) < 0) co_return r;
                // Freed clusters are never reused: give the space back
                // (not while a snapshot still references the cluster).
                uint64_t host = old[i] & L2E_OFFSET_MASK, rc = 1;
                if (host && !(old[i] & OFLAG_COMPRESSED) &&
                    co_await get_refcount(bs, int64_t(host >> s->cluster_bits), &rc) == 0 && rc == 0)
                    (void)co_await bdrv_co_pdiscard(bs->file(), host, cs);
            }
        }
        // No L2 table: the range is unallocated already (and with a
        // backing file keeps showing it, which discard allows).
        start += n * cs;
    }
    co_return 0;
}

}  // namespace mb::qcow2
