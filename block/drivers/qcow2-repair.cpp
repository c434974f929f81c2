// qcow2 repairs that go beyond adjusting single refcounts:
//
//   rebuild_refcounts  check -r all when a cluster in use has refcount 0: the
//                      refcount structure itself cannot be trusted, so a new
//                      one is written from the references counted by check
//                      (QEMU's rebuild_refcount_structure), placed first-fit
//                      in clusters nobody references, and the header is
//                      switched to it in one write.  The old table and
//                      blocks are then merely leaked; check frees them.
//   repair_dirty       an image whose dirty bit is set (QEMU used lazy
//                      refcounts and did not close it) is repaired before
//                      its first write (QEMU: when opened read-write), then
//                      marked clean.
//                      miniblock itself never sets the bit: it keeps
//                      refcounts in crash-safe order even with
//                      lazy_refcounts=on, which only QEMU acts on.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>

#include "block/aio.h"
#include "block/drivers/qcow2.h"
#include "block/warn.h"

namespace mb::qcow2 {

Task<int> rebuild_refcounts(BlockDriverState *bs, std::vector<uint32_t> &refs, bool write_header) {
    State *s = bs->state<State>();
    const uint64_t cs = s->cluster_size;
    const uint64_t per_block = uint64_t(1) << s->rb_bits;
    const uint64_t max_rc = s->refcount_bits >= 32 ? UINT32_MAX : (uint64_t(1) << s->refcount_bits) - 1;
    for (uint64_t c = 0; c < refs.size(); c++) {
        if (refs[c] > max_rc) co_return -ERANGE;  // a width too narrow for the references
    }
    // Whatever the caches hold goes out first: the old structure is dropped.
    int r = co_await write_back_all(bs);
    if (r < 0) co_return r;

    uint64_t first_free = 0;
    auto alloc = [&](uint64_t n) {
        for (uint64_t c = first_free;; c++) {
            if (c + n > refs.size()) refs.resize(c + n, 0);
            bool free = true;
            for (uint64_t k = 0; k < n && free; k++)
                if (refs[c + k]) free = false;
            if (!free) continue;
            for (uint64_t k = 0; k < n; k++) refs[c + k] = 1;
            if (n == 1 || c == first_free) first_free = c + n;
            return c;
        }
    };
    std::map<uint64_t, uint64_t> blocks;  // block index -> its cluster
    auto place_blocks = [&] {
        for (bool added = true; added;) {
            added = false;
            for (uint64_t j = 0; j * per_block < refs.size(); j++) {
                if (blocks.count(j)) continue;
                uint64_t end = std::min<uint64_t>(refs.size(), (j + 1) * per_block);
                if (std::any_of(refs.begin() + j * per_block, refs.begin() + end, [](uint32_t v) { return v; })) {
                    blocks[j] = alloc(1);
                    added = true;
                }
            }
        }
    };
    uint64_t table = 0, table_clusters = 0;
    for (int iter = 0;; iter++) {
        if (iter > 64) co_return -EIO;
        place_blocks();
        uint64_t need = ((blocks.rbegin()->first + 1) * 8 + cs - 1) / cs;
        if (need * cs > MAX_REFTABLE_BYTES) co_return -EFBIG;
        if (table_clusters >= need) break;
        for (uint64_t k = 0; k < table_clusters; k++) refs[table + k] = 0;
        first_free = std::min(first_free, table_clusters ? table : first_free);
        table = alloc(need);
        table_clusters = need;
    }

    // The blocks, the table, then the header: nothing points at the new
    // structure until it is complete on disk.
    std::vector<uint8_t> buf(cs);
    std::vector<uint64_t> rt(table_clusters * cs / 8, 0);
    for (auto [j, c] : blocks) {
        std::fill(buf.begin(), buf.end(), 0);
        for (uint64_t i = 0; i < per_block && j * per_block + i < refs.size(); i++)
            refcount_entry_set(s->refcount_bits, buf.data(), i, refs[j * per_block + i]);
        if ((r = co_await bdrv_co_pwritev(bs->file(), c * cs, cs, buf.data())) < 0) co_return r;
        rt[j] = c * cs;
    }
    std::vector<uint8_t> tb(rt.size() * 8);
    for (size_t i = 0; i < rt.size(); i++) put_be64(&tb[i * 8], rt[i]);
    if ((r = co_await bdrv_co_pwritev(bs->file(), table * cs, tb.size(), tb.data())) < 0) co_return r;
    if ((r = co_await flush_file(bs)) < 0) co_return r;
    if (write_header) {
        uint8_t hb[12];
        put_be64(hb, table * cs);
        put_be32(hb + 8, uint32_t(table_clusters));
        if ((r = co_await bdrv_co_pwritev(bs->file(), 48, sizeof hb, hb)) < 0) co_return r;
        if ((r = co_await flush_file(bs)) < 0) co_return r;
    }

    s->h().refcount_table_offset = table * cs;
    s->h().refcount_table_clusters = uint32_t(table_clusters);
    s->reftable = std::move(rt);
    s->reftable_loaded = true;
    s->rb_cache.clear();
    s->rb_offsets.clear();
    for (auto [j, c] : blocks) s->rb_offsets.insert(c * cs);
    s->free_index = -1;
    co_return 0;
}

Task<int> repair_dirty(BlockDriverState *bs) {
    State *s = bs->state<State>();
    CheckResult res;
    // check clears the bit once nothing is left wrong.
    int r = co_await check_locked(bs, CHECK_FIX_LEAKS | CHECK_FIX_ERRORS, &res);
    if (r == 0 && (s->h().incompatible & INCOMPAT_DIRTY)) r = -EIO;
    if (r < 0) warn_report("qcow2: Could not repair dirty image '" + bs->filename + "': " + strerror(-r));
    co_return r;
}

}  // namespace mb::qcow2
