// The qcow2 metadata cache: L2 tables and refcount blocks, whole clusters,
// kept dirty in memory and written back in dependency order (QEMU's
// Qcow2Cache with its flush dependencies; the format is docs/interop/qcow2.txt).
//
// Three orderings keep a crash from turning into corruption (leaks are fine):
//   - a cluster's refcount increment reaches the disk before any L2 entry
//     pointing at it (s->l2_needs_rb: dirty L2 tables wait for the refcount
//     blocks to be written and flushed);
//   - a refcount decrement reaches the disk only after the L2 entry that
//     dropped the reference (s->rb_needs_l2);
//   - a new cluster's data reaches the disk before the L2 entry pointing
//     at it (s->l2_needs_data).
// At most one of the first two is ever pending: before setting one, the other is
// resolved with a write-back and a flush, so the dependencies never form a
// cycle.  Otherwise nothing is flushed until the guest or the user flushes
// (cache=writethrough: after every write, done by the generic layer), the
// cache is full of dirty tables, or the image closes.
#include <algorithm>
#include <cerrno>

#include "block/drivers/qcow2.h"
#include "block/warn.h"

namespace mb::qcow2 {

TableCache::Table TableCache::find(uint64_t offset) {
    auto it = map_.find(offset);
    if (it == map_.end()) return nullptr;
    lru_.splice(lru_.begin(), lru_, it->second);
    return it->second->t;
}

void TableCache::insert(uint64_t offset, Table t, bool dirty) {
    erase(offset);
    lru_.push_front(Entry{offset, std::move(t), dirty});
    map_[offset] = lru_.begin();
    if (dirty) dirty_++;
    shrink();
}

void TableCache::shrink() {
    // Only clean tables that no suspended request holds may go: a dirty one
    // must be written first (write_back), and a held one may still change.
    for (auto it = lru_.end(); lru_.size() > capacity_ && it != lru_.begin();) {
        --it;
        if (it->dirty || it->t.use_count() > 1) continue;
        map_.erase(it->offset);
        it = lru_.erase(it);
    }
}

void TableCache::erase(uint64_t offset) {
    auto it = map_.find(offset);
    if (it == map_.end()) return;
    if (it->second->dirty) dirty_--;
    lru_.erase(it->second);
    map_.erase(it);
}

void TableCache::mark_dirty(uint64_t offset, const Table &t) {
    auto it = map_.find(offset);
    if (it == map_.end() || it->second->t != t) {
        insert(offset, t, true);
        return;
    }
    if (!it->second->dirty) dirty_++;
    it->second->dirty = true;
}

std::vector<std::pair<uint64_t, TableCache::Table>> TableCache::dirty_tables() const {
    std::vector<std::pair<uint64_t, Table>> v;
    for (auto &e : lru_)
        if (e.dirty) v.emplace_back(e.offset, e.t);
    std::sort(v.begin(), v.end(), [](auto &a, auto &b) { return a.first < b.first; });
    return v;
}

void TableCache::mark_clean(uint64_t offset, const Table &t) {
    auto it = map_.find(offset);
    if (it == map_.end() || it->second->t != t || !it->second->dirty) return;
    it->second->dirty = false;
    dirty_--;
}

Task<int> flush_file(BlockDriverState *bs) { co_return co_await bdrv_co_flush(bs->file()->bs.get()); }

void l2_points_at_new_data(State *s, uint64_t l2_off, const TableCache::Table &t) {
    s->l2_needs_data = true;
    s->l2_cache.mark_dirty(l2_off, t);
}

namespace {

// Writes every dirty table of `cache` (of kind `kind`), in file order.
Task<int> write_dirty(BlockDriverState *bs, TableCache &cache, MetaKind kind) {
    State *s = bs->state<State>();
    for (auto &[off, t] : cache.dirty_tables()) {
        int r = co_await check_overlap(bs, "write on", off, s->cluster_size, kind);
        if (r < 0) co_return r;
        bdrv_debug_event(bs->file(), kind == MetaKind::L2 ? "l2_update" : "refblock_update");
        r = co_await bdrv_co_pwritev(bs->file(), off, s->cluster_size, t->data());
        if (r < 0) co_return r;
        cache.mark_clean(off, t);
    }
    co_return 0;
}

// The dirty L2 tables, after the data of the new clusters they point at
// (l2_needs_data) and without regard to l2_needs_rb (the callers' job).
Task<int> write_l2_tables(BlockDriverState *bs) {
    State *s = bs->state<State>();
    if (s->l2_needs_data && s->l2_cache.has_dirty()) {
        if (int r = co_await flush_file(bs); r < 0) co_return r;
        s->l2_needs_data = false;
    }
    co_return co_await write_dirty(bs, s->l2_cache, MetaKind::L2);
}

}  // namespace

Task<int> write_back_l2(BlockDriverState *bs) {
    State *s = bs->state<State>();
    if (!s->l2_cache.has_dirty()) co_return 0;
    int r;
    if (s->l2_needs_rb) {
        // This flush serves l2_needs_data too: the data writes completed before it.
        if ((r = co_await write_dirty(bs, s->rb_cache, MetaKind::Refblock)) < 0) co_return r;
        if ((r = co_await flush_file(bs)) < 0) co_return r;
        s->l2_needs_rb = false;
        s->l2_needs_data = false;
    }
    co_return co_await write_l2_tables(bs);
}

Task<int> write_back_rb(BlockDriverState *bs) {
    State *s = bs->state<State>();
    if (!s->rb_cache.has_dirty()) co_return 0;
    int r;
    if (s->rb_needs_l2) {
        if ((r = co_await write_l2_tables(bs)) < 0) co_return r;
        if ((r = co_await flush_file(bs)) < 0) co_return r;
        s->rb_needs_l2 = false;
    }
    co_return co_await write_dirty(bs, s->rb_cache, MetaKind::Refblock);
}

Task<int> write_back_all(BlockDriverState *bs) {
    State *s = bs->state<State>();
    int r;
    // Whichever cache the other depends on goes first.
    if (s->rb_needs_l2) {
        if ((r = co_await write_back_rb(bs)) < 0) co_return r;
        co_return co_await write_back_l2(bs);
    }
    if ((r = co_await write_back_l2(bs)) < 0) co_return r;
    co_return co_await write_back_rb(bs);
}

Task<int> refs_will_point_at_new(BlockDriverState *bs) {
    State *s = bs->state<State>();
    if (s->rb_needs_l2) {
        // Pending decrements wait for the L2 tables: write those now, so
        // that the new dependency (L2 on refcounts) does not close a cycle.
        int r = co_await write_l2_tables(bs);
        if (r == 0) r = co_await flush_file(bs);
        if (r < 0) co_return r;
        s->rb_needs_l2 = false;
    }
    s->l2_needs_rb = true;
    co_return 0;
}

Task<int> refs_will_drop(BlockDriverState *bs) {
    State *s = bs->state<State>();
    if (s->l2_needs_rb) {
        int r = co_await write_dirty(bs, s->rb_cache, MetaKind::Refblock);
        if (r == 0) r = co_await flush_file(bs);
        if (r < 0) co_return r;
        s->l2_needs_rb = false;
    }
    s->rb_needs_l2 = true;
    co_return 0;
}

Task<int> load_table(BlockDriverState *bs, TableCache &cache, uint64_t offset, TableCache::Table *out) {
    State *s = bs->state<State>();
    if ((*out = cache.find(offset))) co_return 0;
    int64_t file_len = bdrv_getlength(bs->file()->bs.get());
    if (file_len < 0) co_return (int)file_len;
    if (offset % s->cluster_size || offset < uint64_t(s->cluster_size) ||
        offset > uint64_t(file_len) - s->cluster_size) {
        warn_report("qcow2: metadata table offset " + hex(offset) + " in '" + bs->file()->bs->filename +
                    "' is unaligned, inside the header or past the end of the file");
        co_return -EIO;
    }
    // A cache full of dirty tables makes room by writing them back (in
    // dependency order) before it grows.
    if (cache.full_of_dirty()) {
        int r = &cache == &s->l2_cache ? co_await write_back_l2(bs) : co_await write_back_rb(bs);
        if (r < 0) co_return r;
        cache.shrink();
    }
    auto t = std::make_shared<std::vector<uint8_t>>(s->cluster_size);
    bdrv_debug_event(bs->file(), &cache == &s->l2_cache ? "l2_load" : "refblock_load");
    int r = co_await bdrv_co_preadv(bs->file(), offset, s->cluster_size, t->data());
    if (r < 0) co_return r;
    // Another request may have loaded it meanwhile: keep the first copy.
    if ((*out = cache.find(offset))) co_return 0;
    cache.insert(offset, t);
    *out = t;
    co_return 0;
}

}  // namespace mb::qcow2
