// qcow2 refcounts: reading and updating entries of any refcount order,
// cluster allocation at the end of the image, and refcount table growth.
//
// Allocation never reuses freed clusters: every cluster at or after
// s->free_index has refcount 0 (computed once, at the first allocation of an
// open, from the last non-empty refcount block: compute_free_index), so new
// clusters and new refcount structures never collide with anything the
// image already references.
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "block/drivers/qcow2.h"
#include "block/drivers/qcow2-snapshot.h"
#include "block/warn.h"

namespace mb::qcow2 {

// Entry i of a refcount block of `bits`-wide entries (qcow2.txt: sub-byte
// widths fill each byte from its least significant bit).
void refcount_entry_set(int bits, uint8_t *blk, uint64_t i, uint64_t v) {
    switch (bits) {
    case 1: case 2: case 4: {
        uint64_t bit = i * bits;
        uint8_t mask = uint8_t(((1u << bits) - 1) << (bit % 8));
        blk[bit / 8] = uint8_t((blk[bit / 8] & ~mask) | ((v << (bit % 8)) & mask));
        break;
    }
    case 8: blk[i] = uint8_t(v); break;
    case 16: put_be16(blk + i * 2, uint16_t(v)); break;
    case 32: put_be32(blk + i * 4, uint32_t(v)); break;
    default: put_be64(blk + i * 8, v); break;
    }
}

namespace {

uint64_t rc_get(const State *s, const uint8_t *blk, uint64_t i) {
    switch (s->refcount_bits) {
    case 1: case 2: case 4: {
        int b = s->refcount_bits;
        uint64_t bit = i * b;
        return (blk[bit / 8] >> (bit % 8)) & ((1u << b) - 1);
    }
    case 8: return blk[i];
    case 16: return be16(blk + i * 2);
    case 32: return be32(blk + i * 4);
    default: return be64(blk + i * 8);
    }
}

void rc_set(const State *s, uint8_t *blk, uint64_t i, uint64_t v) { refcount_entry_set(s->refcount_bits, blk, i, v); }

uint64_t rc_max(const State *s) { return s->refcount_bits == 64 ? UINT64_MAX : (1ull << s->refcount_bits) - 1; }

Task<int> write_file(BlockDriverState *bs, uint64_t off, uint64_t len, const uint8_t *buf) {
    co_return co_await bdrv_co_pwritev(bs->file(), off, len, buf);
}

// Where allocation starts: after the last cluster with a non-zero
// refcount, as QEMU's allocator, which trusts refcounts too.  Nothing can be
// referenced past it: every structure (header, L1, L2, refcount table and
// blocks, snapshot tables, data) is refcounted, and a refcount reaches the
// disk before anything that points at the cluster (qcow2-cache.cpp).  What
// lies past it is what a killed writer left: its preallocated tail, data
// written to clusters it never counted.  That tail is given back (the
// clusters must read as zeroes: allocating_write relies on it), once the
// metadata of this open is on the disk; where the file cannot be shortened,
// allocation starts at its end instead, as before.
Task<int> compute_free_index(BlockDriverState *bs) {
    State *s = bs->state<State>();
    const int64_t cs = s->cluster_size;
    int64_t file_len = bdrv_getlength(bs->file()->bs.get());
    if (file_len < 0) co_return (int)file_len;
    const int64_t file_end = (file_len + cs - 1) / cs;
    const uint64_t per_block = uint64_t(1) << s->rb_bits;
    int64_t idx = -1;
    for (size_t j = s->reftable.size(); j-- > 0 && idx < 0;) {
        uint64_t off = s->reftable[j] & REFT_OFFSET_MASK;
        if (!off) continue;
        TableCache::Table t;
        int r = co_await load_table(bs, s->rb_cache, off, &t);
        if (r < 0) co_return r;
        for (uint64_t i = per_block; i-- > 0;) {
            if (rc_get(s, t->data(), i)) {
                idx = int64_t(j * per_block + i + 1);
                break;
            }
        }
    }
    if (idx < 0) idx = file_end;  // no refcounts at all: broken, keep off the file
    if (idx * cs < file_len) {
        int r = -EPERM;
        if (bs->file()->perm.perm & BLK_PERM_RESIZE) {
            r = co_await write_back_all(bs);
            if (r == 0) r = co_await flush_file(bs);
            if (r == 0) r = co_await bdrv_co_truncate(bs->file(), idx * cs);
        }
        if (r < 0) idx = std::max(idx, file_end);
    }
    s->free_index = idx;
    co_return 0;
}

Task<int> update_range(BlockDriverState *bs, int64_t first, int64_t count, int delta);

// A larger refcount table covering at least `min_entries` blocks, placed at
// the end with the refcount blocks that describe it.
Task<int> grow_reftable(BlockDriverState *bs, uint64_t min_entries) {
    State *s = bs->state<State>();
    const uint64_t cs = s->cluster_size;
    const int rb = s->rb_bits;
    const uint64_t old_n = s->reftable.size();
    const uint64_t old_clusters = s->h().refcount_table_clusters;
    const uint64_t T = s->free_index;
    uint64_t want = std::max<uint64_t>(min_entries, old_n + 1);
    uint64_t n = 0;
    std::vector<uint64_t> needed;
    bdrv_debug_event(bs->file(), "reftable_grow");
    for (int iter = 0;; iter++) {
        if (iter > 64) co_return -EIO;
        n = std::max<uint64_t>((want * 8 + cs - 1) / cs, old_clusters + old_clusters / 2 + 1);
        if (n * cs > MAX_REFTABLE_BYTES) co_return -EFBIG;
        uint64_t area_end = T + n + needed.size();
        std::vector<uint64_t> nd;
        for (uint64_t j = T >> rb; j <= (area_end - 1) >> rb; j++)
            if (j >= old_n || !(s->reftable[j] & REFT_OFFSET_MASK)) nd.push_back(j);
        uint64_t w = std::max<uint64_t>(want, nd.empty() ? 0 : nd.back() + 1);
        if (nd == needed && w <= n * cs / 8) break;
        needed = nd;
        want = w;
    }
    const uint64_t area_end = T + n + needed.size();
    std::vector<uint64_t> table(n * cs / 8, 0);
    std::copy(s->reftable.begin(), s->reftable.end(), table.begin());
    std::vector<std::vector<uint8_t>> blocks(needed.size(), std::vector<uint8_t>(cs, 0));
    for (size_t i = 0; i < needed.size(); i++) table[needed[i]] = (T + n + i) * cs;
    // The area is claimed before anything can fail: a grow that fails half
    // way may have counted some of it already, and the next allocation
    // must not start in there (a refcount of 2 for a new cluster).
    s->free_index = area_end;
    // Refcounts of the new area: in the new blocks, or in existing ones.
    int r;
    for (uint64_t c = T; c < area_end;) {
        uint64_t j = c >> rb;
        uint64_t run_end = std::min<uint64_t>(area_end, (j + 1) << rb);
        auto it = std::find(needed.begin(), needed.end(), j);
        if (it != needed.end()) {
            for (uint64_t x = c; x < run_end; x++)
                rc_set(s, blocks[it - needed.begin()].data(), x & ((1ull << rb) - 1), 1);
        } else if ((r = co_await update_range(bs, c, run_end - c, 1)) < 0) {
            co_return r;
        }
        c = run_end;
    }
    // The cached blocks' new refcounts reach the disk with the new table.
    if ((r = co_await write_back_rb(bs)) < 0) co_return r;
    for (size_t i = 0; i < needed.size(); i++)
        if ((r = co_await write_file(bs, (T + n + i) * cs, cs, blocks[i].data())) < 0) co_return r;
    std::vector<uint8_t> tb(n * cs);
    for (size_t i = 0; i < table.size(); i++) put_be64(&tb[i * 8], table[i]);
    if ((r = co_await write_file(bs, T * cs, tb.size(), tb.data())) < 0) co_return r;
    if ((r = co_await flush_file(bs)) < 0) co_return r;
    // Switch the header to the new table in one write.
    uint8_t hb[12];
    put_be64(hb, T * cs);
    put_be32(hb + 8, uint32_t(n));
    if ((r = co_await write_file(bs, 48, 12, hb)) < 0) co_return r;
    // Once the header write is done the disk may use the new table: so
    // does the memory, even if the flush fails (later hookups must go to
    // the table the header names).
    uint64_t old_off = s->h().refcount_table_offset;
    s->h().refcount_table_offset = T * cs;
    s->h().refcount_table_clusters = uint32_t(n);
    s->reftable = std::move(table);
    for (size_t i = 0; i < needed.size(); i++) {
        s->rb_offsets.insert((T + n + i) * cs);
        s->rb_cache.insert((T + n + i) * cs, std::make_shared<std::vector<uint8_t>>(std::move(blocks[i])));
    }
    // The old table is freed only once the switch is durable (else it is
    // leaked: the header may still name it).
    if ((r = co_await flush_file(bs)) < 0) co_return r;
    co_return co_await update_range(bs, old_off / cs, old_clusters, -1);
}

// Makes sure block j of the refcount table exists.
Task<int> ensure_block(BlockDriverState *bs, uint64_t j) {
    State *s = bs->state<State>();
    const uint64_t cs = s->cluster_size;
    int r;
    // An increment before any allocation of this open (a repair, a
    // snapshot) may need a block: it goes where allocation would start.
    if (s->free_index < 0 && (r = co_await compute_free_index(bs)) < 0) co_return r;
    if (j >= s->reftable.size()) {
        if ((r = co_await grow_reftable(bs, j + 1)) < 0) co_return r;
    }
    if (s->reftable[j] & REFT_OFFSET_MASK) co_return 0;
    bdrv_debug_event(bs->file(), "refblock_alloc");
    uint64_t p = s->free_index++;
    auto blk = std::make_shared<std::vector<uint8_t>>(cs, 0);
    bool self = (p >> s->rb_bits) == j;
    if (self) rc_set(s, blk->data(), p & ((1ull << s->rb_bits) - 1), 1);
    if ((r = co_await write_file(bs, p * cs, cs, blk->data())) < 0) co_return r;
    // A block described elsewhere gets its refcount before it is hooked in.
    if (!self && (r = co_await update_range(bs, p, 1, 1)) < 0) co_return r;
    if ((r = co_await write_back_rb(bs)) < 0) co_return r;
    if ((r = co_await flush_file(bs)) < 0) co_return r;
    // The table's sector from the in-memory copy: no read-modify-write.
    s->reftable[j] = p * cs;
    uint64_t first = j & ~uint64_t(63);
    uint8_t sec[512] = {};
    for (uint64_t i = first; i < first + 64 && i < s->reftable.size(); i++) put_be64(sec + (i - first) * 8, s->reftable[i]);
    bdrv_debug_event(bs->file(), "refblock_alloc_hookup");
    if ((r = co_await write_file(bs, s->h().refcount_table_offset + first * 8, 512, sec)) < 0) {
        s->reftable[j] = 0;
        co_return r;
    }
    s->rb_offsets.insert(p * cs);
    s->rb_cache.insert(p * cs, blk);
    co_return 0;
}

// All or nothing: every entry is checked (and every block loaded or, for
// increments, created) before any changes, so a failure (an underflow, an
// overflow, an I/O error) leaves the cached refcounts exactly as they were.
Task<int> update_range(BlockDriverState *bs, int64_t first, int64_t count, int delta) {
    State *s = bs->state<State>();
    const uint64_t per_block = uint64_t(1) << s->rb_bits;
    struct Part {
        uint64_t off;
        TableCache::Table t;
        uint64_t i0;
        int64_t n;
        int64_t c0;  // the cluster of entry i0
    };
    std::vector<Part> parts;
    for (int64_t c = first, left = count; left > 0;) {
        uint64_t j = uint64_t(c) >> s->rb_bits;
        uint64_t i0 = uint64_t(c) & (per_block - 1);
        int64_t n = std::min<int64_t>(left, per_block - i0);
        int r;
        if (j >= s->reftable.size() || !(s->reftable[j] & REFT_OFFSET_MASK)) {
            if (delta < 0) {
                warn_report("qcow2: refcount of cluster " + std::to_string(c) + " in '" + bs->file()->bs->filename +
                            "' would drop below 0 (no refcount block); refusing the update");
                co_return -EIO;
            }
            if ((r = co_await ensure_block(bs, j)) < 0) co_return r;
        }
        uint64_t off = s->reftable[j] & REFT_OFFSET_MASK;
        if ((r = co_await check_overlap(bs, "write on", off, s->cluster_size, MetaKind::Refblock)) < 0) co_return r;
        TableCache::Table t;
        if ((r = co_await load_table(bs, s->rb_cache, off, &t)) < 0) co_return r;
        parts.push_back({off, t, i0, n, c});
        c += n;
        left -= n;
    }
    for (auto &p : parts) {
        for (int64_t x = 0; x < p.n; x++) {
            uint64_t v = rc_get(s, p.t->data(), p.i0 + x);
            if ((delta < 0 && v < uint64_t(-delta)) || (delta > 0 && v > rc_max(s) - delta)) {
                warn_report("qcow2: refcount of cluster " + std::to_string(p.c0 + x) + " in '" +
                            bs->file()->bs->filename + "' would " + (delta < 0 ? "drop below 0" : "overflow") +
                            " (" + std::to_string(v) + (delta < 0 ? " - " : " + ") +
                            std::to_string(delta < 0 ? -delta : delta) + "); refusing the update");
                co_return -EIO;
            }
        }
    }
    // A decrement may reach the disk only after the L2 entries that dropped
    // the reference; an increment before any L2 entry that will point at
    // the cluster.  Declared here, right before the change and after every
    // co_await that could declare the opposite: gathering the blocks above
    // may grow the refcount table, whose freeing of the old table declares
    // a decrement and so resolves (clears) an earlier increment dependency.
    {
        int r = delta < 0 ? co_await refs_will_drop(bs) : co_await refs_will_point_at_new(bs);
        if (r < 0) co_return r;
    }
    for (auto &p : parts) {
        for (int64_t x = 0; x < p.n; x++) rc_set(s, p.t->data(), p.i0 + x, rc_get(s, p.t->data(), p.i0 + x) + delta);
        s->rb_cache.mark_dirty(p.off, p.t);
    }
    co_return 0;
}

}  // namespace

Task<int> load_reftable(BlockDriverState *bs) {
    State *s = bs->state<State>();
    if (s->reftable_loaded) co_return 0;
    std::vector<uint8_t> t(uint64_t(s->h().refcount_table_clusters) * s->cluster_size);
    int r = co_await bdrv_co_preadv(bs->file(), s->h().refcount_table_offset, t.size(), t.data());
    if (r < 0) co_return r;
    s->reftable.resize(t.size() / 8);
    for (size_t i = 0; i < s->reftable.size(); i++) {
        s->reftable[i] = be64(&t[i * 8]);
        if (uint64_t o = s->reftable[i] & REFT_OFFSET_MASK) s->rb_offsets.insert(o);
    }
    s->reftable_loaded = true;
    co_return 0;
}

Task<int> get_refcount(BlockDriverState *bs, int64_t cluster, uint64_t *out) {
    State *s = bs->state<State>();
    if (int r = co_await load_reftable(bs); r < 0) co_return r;
    uint64_t j = uint64_t(cluster) >> s->rb_bits;
    *out = 0;
    if (j >= s->reftable.size()) co_return 0;
    uint64_t off = s->reftable[j] & REFT_OFFSET_MASK;
    if (!off) co_return 0;
    TableCache::Table t;
    int r = co_await load_table(bs, s->rb_cache, off, &t);
    if (r < 0) co_return r;
    *out = rc_get(s, t->data(), uint64_t(cluster) & ((uint64_t(1) << s->rb_bits) - 1));
    co_return 0;
}

Task<int> update_refcount(BlockDriverState *bs, int64_t cluster, int delta) {
    co_return co_await update_range(bs, cluster, 1, delta);
}

// QEMU's preallocate filter grows files by 128 MiB, aligned to 1 MiB: less
// here, since the tail stays until close (or a crash, after which the next
// writer gives it back before its first allocation: compute_free_index).
constexpr int64_t PREALLOC_CHUNK = 32 << 20;
constexpr int64_t PREALLOC_ALIGN = 1 << 20;

// Makes the file at least `end` bytes long ahead of writes to new clusters
// that would otherwise extend it, as zeroes (unwritten extents) where the
// file system can (never by writing zeroes).  Best effort: a file that
// cannot stops being asked.
Task<void> preallocate(BlockDriverState *bs, int64_t end) {
    State *s = bs->state<State>();
    if (s->prealloc_off || end <= s->prealloc_end) co_return;
    BdrvChild *f = bs->file();
    int64_t len = bdrv_getlength(f->bs.get());
    if (len < 0 || strcmp(f->bs->drv->format_name, "file") != 0) {
        s->prealloc_off = true;
        co_return;
    }
    if (end <= len) {
        s->prealloc_end = std::max(s->prealloc_end, len);
        co_return;
    }
    int64_t from = (len + PREALLOC_ALIGN - 1) / PREALLOC_ALIGN * PREALLOC_ALIGN;
    int64_t to = (end + PREALLOC_CHUNK + PREALLOC_ALIGN - 1) / PREALLOC_ALIGN * PREALLOC_ALIGN;
    int r = co_await bdrv_co_pwrite_zeroes(f, from, to - from, BDRV_REQ_NO_FALLBACK);
    if (r < 0) {
        s->prealloc_off = true;
        co_return;
    }
    s->prealloc_end = to;
}

Task<int> trim_preallocation(BlockDriverState *bs) {
    State *s = bs->state<State>();
    if (s->prealloc_end < 0 || s->free_index < 0) co_return 0;
    // Without the permission (a node closed after its users let go) the
    // tail stays: it reads as zeroes and only costs space.
    if (!(bs->file()->perm.perm & BLK_PERM_RESIZE)) co_return 0;
    int64_t keep = s->free_index * s->cluster_size;
    int64_t len = bdrv_getlength(bs->file()->bs.get());
    if (len < 0) co_return (int)len;
    if (len <= keep) co_return 0;
    int r = co_await bdrv_co_truncate(bs->file(), keep);
    if (r == 0) s->prealloc_end = -1;
    co_return r;
}

Task<int64_t> alloc_clusters(BlockDriverState *bs, int64_t n) {
    State *s = bs->state<State>();
    if (int r = co_await load_reftable(bs); r < 0) co_return r;
    if (s->free_index < 0) {
        int r = co_await compute_free_index(bs);
        if (r < 0) co_return r;
    }
    int64_t start = s->free_index;
    // Offsets must fit the 56-bit table entries.
    if (start + n > (int64_t(1) << (56 - s->cluster_bits))) co_return -EFBIG;
    bdrv_debug_event(bs->file(), "cluster_alloc");
    // Whatever points at the new clusters waits for their refcounts
    // (update_range declares that dependency).
    s->free_index += n;
    int r = co_await update_range(bs, start, n, 1);
    if (r < 0) co_return r;
    co_return start * s->cluster_size;
}

Task<int> free_range(BlockDriverState *bs, uint64_t off, uint64_t len) {
    State *s = bs->state<State>();
    if (!len) co_return 0;
    bdrv_debug_event(bs->file(), "cluster_free");
    uint64_t c0 = off >> s->cluster_bits, c1 = (off + len - 1) >> s->cluster_bits;
    co_return co_await update_range(bs, c0, c1 - c0 + 1, -1);
}

// --- check ----------------------------------------------------------------------

namespace {

constexpr uint64_t MAX_CHECK_CLUSTERS = uint64_t(1) << 28;

struct Counter {
    std::vector<uint32_t> ref;
    CheckResult *res;
    void add(uint64_t off, uint64_t len, int64_t cs, const char *what) {
        if (!len) return;
        uint64_t c0 = off / cs, c1 = (off + len - 1) / cs;
        for (uint64_t c = c0; c <= c1; c++) {
            if (c >= ref.size()) {
                // Nothing valid lives past the end of the file.
                res->messages.push_back(std::string("ERROR ") + what + " at " + hex(c * cs) +
                                        " lies past the end of the file");
                res->corruptions++;
                return;
            }
            ref[c]++;
        }
    }
};

}  // namespace

namespace {

struct CopiedCheck {
    uint64_t cluster;
    bool copied;
    std::string what;  // "data cluster: l2_entry=8000000000050000"
    uint64_t l1_index, l2_offset, l2_index;  // where the entry is (l2_offset 0: an L1 entry)
};

// Counts every reference to every host cluster into cnt (and the entries
// whose OFLAG_COPIED is compared once refcounts are known).
Task<int> count_refs(BlockDriverState *bs, Counter &cnt, std::vector<CopiedCheck> &copied, CheckResult *res) {
    State *s = bs->state<State>();
    const int64_t cs = s->cluster_size;
    const Header &h = s->h();
    std::fill(cnt.ref.begin(), cnt.ref.end(), 0);
    copied.clear();
    cnt.add(0, cs, cs, "header");
    cnt.add(h.l1_table_offset, uint64_t(h.l1_size) * 8, cs, "L1 table");
    cnt.add(h.refcount_table_offset, uint64_t(h.refcount_table_clusters) * cs, cs, "refcount table");
    for (uint64_t e : s->reftable) {
        uint64_t off = e & REFT_OFFSET_MASK;
        if (!off) continue;
        if (off % cs) {
            res->messages.push_back("ERROR refcount block offset " + hex(off) + " is unaligned");
            res->corruptions++;
            continue;
        }
        cnt.add(off, cs, cs, "refcount block");
    }
    uint64_t last_host = 0;
    const uint64_t l2_entries = uint64_t(1) << s->l2_bits;
    for (size_t i = 0; i < s->l1.size(); i++) {
        uint64_t l2_off = s->l1[i] & L1E_OFFSET_MASK;
        if (!l2_off) continue;
        if (l2_off % cs) {
            res->messages.push_back("ERROR L2 table offset " + hex(l2_off) + " is unaligned");
            res->corruptions++;
            continue;
        }
        cnt.add(l2_off, cs, cs, "L2 table");
        copied.push_back({l2_off / uint64_t(cs), bool(s->l1[i] & OFLAG_COPIED),
                          "L2 cluster: l1_index=" + std::to_string(i) + " l1_entry=" + hex(s->l1[i]).substr(2), i, 0, 0});
        TableCache::Table t;
        last_host = 0;  // contiguity is counted within one L2 table
        int r = co_await load_table(bs, s->l2_cache, l2_off, &t);
        if (r < 0) {
            res->messages.push_back("ERROR could not read L2 table at " + hex(l2_off));
            res->corruptions++;
            continue;
        }
        for (uint64_t k = 0; k < l2_entries; k++) {
            uint64_t e = be64(t->data() + k * 8);
            if (e & OFLAG_COMPRESSED) {
                uint64_t coff = e & s->coffset_mask;
                uint64_t nsec = ((e >> s->csize_shift) & s->csize_mask) + 1;
                uint64_t end = (coff & ~511ull) + nsec * 512;
                cnt.add(coff, end - coff, cs, "compressed cluster");
                res->allocated_clusters++;
                res->compressed_clusters++;
                // As qemu-img: compressed clusters count as fragmented (each
                // is read on its own, in whole sectors), and leave the
                // contiguity of the normal clusters around them alone.
                res->fragmented_clusters++;
                continue;
            }
            uint64_t off = e & L2E_OFFSET_MASK;
            if (!off) continue;
            if (off % cs) {
                res->messages.push_back("ERROR cluster offset " + hex(off) + " is unaligned");
                res->corruptions++;
                continue;
            }
            cnt.add(off, cs, cs, "data cluster");
            copied.push_back({off / uint64_t(cs), bool(e & OFLAG_COPIED), "data cluster: l2_entry=" + hex(e).substr(2),
                              i, l2_off, k});
            res->allocated_clusters++;
            if (last_host && off != last_host + cs) res->fragmented_clusters++;
            last_host = off;
        }
    }
    // What the snapshots reference (qcow2-snapshot.cpp).
    if (h.nb_snapshots) {
        std::map<uint64_t, uint64_t> refs;
        std::vector<std::string> errors;
        if (int r = co_await snapshot_references(bs, &refs, &errors); r < 0) co_return r;
        for (auto &m : errors) res->messages.push_back(m);
        res->corruptions += int64_t(errors.size());
        for (auto [c, n] : refs)
            for (uint64_t k = 0; k < n; k++) cnt.add(c * cs, cs, cs, "snapshot cluster");
    }
    co_return 0;
}

// QEMU's compare_refcounts: each cluster's refcount against its references.
// A referenced cluster with refcount 0 means the refcount structure itself
// is broken (*rebuild); what `fix` allows is repaired ("Repairing ...").
Task<void> compare(BlockDriverState *bs, const Counter &cnt, int fix, bool *rebuild, int64_t *highest,
                   CheckResult *res) {
    for (uint64_t c = 0; c < cnt.ref.size(); c++) {
        uint64_t rc;
        int r = co_await get_refcount(bs, int64_t(c), &rc);
        if (r < 0) {
            res->messages.push_back("Can't get refcount for cluster " + std::to_string(c) + ": " + strerror(-r));
            res->check_errors++;
            continue;
        }
        uint64_t refs = cnt.ref[c];
        if (rc || refs) *highest = int64_t(c);
        if (rc == refs) continue;
        int64_t *num_fixed = nullptr;
        if (rc == 0) *rebuild = true;
        else if (rc > refs && (fix & CHECK_FIX_LEAKS) && bs->writable()) num_fixed = &res->leaks_fixed;
        else if (rc < refs && (fix & CHECK_FIX_ERRORS) && bs->writable()) num_fixed = &res->corruptions_fixed;
        res->messages.push_back(std::string(num_fixed ? "Repairing" : rc < refs ? "ERROR" : "Leaked") + " cluster " +
                                std::to_string(c) + " refcount=" + std::to_string(rc) + " reference=" +
                                std::to_string(refs));
        if (num_fixed) {
            uint64_t diff = rc > refs ? rc - refs : refs - rc;
            // update_range refuses what the width cannot hold (an overflow).
            if (diff <= uint64_t(INT32_MAX) &&
                co_await update_range(bs, int64_t(c), 1, rc > refs ? -int(diff) : int(diff)) == 0) {
                (*num_fixed)++;
                continue;
            }
        }
        if (rc < refs) res->corruptions++;
        else res->leaks++;
    }
}

// QEMU's check_oflag_copied: an entry's COPIED flag says its refcount is 1.
Task<int> check_copied(BlockDriverState *bs, const std::vector<CopiedCheck> &copied, int fix, CheckResult *res) {
    State *s = bs->state<State>();
    const bool repair = bs->writable() && ((fix & CHECK_FIX_ERRORS) ||
                                           ((fix & CHECK_FIX_LEAKS) && !res->check_errors && !res->corruptions && !res->leaks));
    for (auto &cc : copied) {
        uint64_t rc;
        if (co_await get_refcount(bs, cc.cluster, &rc) < 0) continue;
        if ((rc == 1) == cc.copied) continue;
        res->corruptions++;
        res->messages.push_back(std::string(repair ? "Repairing" : "ERROR") + " OFLAG_COPIED " + cc.what +
                                " refcount=" + std::to_string(rc));
        if (!repair) continue;
        int r;
        if (!cc.l2_offset) {
            uint64_t e = rc == 1 ? s->l1[cc.l1_index] | OFLAG_COPIED : s->l1[cc.l1_index] & ~OFLAG_COPIED;
            uint8_t b[8];
            put_be64(b, e);
            if ((r = co_await write_file(bs, s->h().l1_table_offset + cc.l1_index * 8, 8, b)) < 0) {
                res->check_errors++;
                continue;
            }
            s->l1[cc.l1_index] = e;
        } else {
            TableCache::Table t;
            if ((r = co_await load_table(bs, s->l2_cache, cc.l2_offset, &t)) < 0) {
                res->check_errors++;
                continue;
            }
            uint64_t e = be64(t->data() + cc.l2_index * 8);
            put_be64(t->data() + cc.l2_index * 8, rc == 1 ? e | OFLAG_COPIED : e & ~OFLAG_COPIED);
            s->l2_cache.mark_dirty(cc.l2_offset, t);
        }
        res->corruptions--;
        res->corruptions_fixed++;
    }
    co_return 0;
}

}  // namespace

Task<int> count_references(BlockDriverState *bs, std::vector<uint32_t> &refs) {
    State *s = bs->state<State>();
    if (int r = co_await load_reftable(bs); r < 0) co_return r;
    int64_t file_len = bdrv_getlength(bs->file()->bs.get());
    if (file_len < 0) co_return (int)file_len;
    uint64_t nclusters = (file_len + s->cluster_size - 1) / s->cluster_size;
    if (nclusters > MAX_CHECK_CLUSTERS) co_return -EFBIG;
    CheckResult res;
    Counter cnt{std::vector<uint32_t>(nclusters, 0), &res};
    std::vector<CopiedCheck> copied;
    if (int r = co_await count_refs(bs, cnt, copied, &res); r < 0) co_return r;
    if (res.corruptions) co_return -EIO;  // references that cannot be counted: run check first
    refs = std::move(cnt.ref);
    co_return 0;
}

Task<int> check(BlockDriverState *bs, int fix, CheckResult *res) {
    State *s = bs->state<State>();
    co_await s->lock.lock();
    CoLockGuard g(s->lock);
    co_return co_await check_locked(bs, fix, res);
}

Task<int> check_locked(BlockDriverState *bs, int fix, CheckResult *res) {
    State *s = bs->state<State>();
    const int64_t cs = s->cluster_size;
    const Header &h = s->h();
    if (!bs->writable()) fix = 0;
    if (int r = co_await load_reftable(bs); r < 0) co_return r;
    int64_t file_len = bdrv_getlength(bs->file()->bs.get());
    if (file_len < 0) co_return (int)file_len;
    uint64_t nclusters = (file_len + cs - 1) / cs;
    if (nclusters > MAX_CHECK_CLUSTERS) co_return -EFBIG;
    Counter cnt{std::vector<uint32_t>(nclusters, 0), res};
    std::vector<CopiedCheck> copied;
    res->total_clusters = (h.size + cs - 1) / cs;
    if (int r = co_await count_refs(bs, cnt, copied, res); r < 0) co_return r;

    // Counts only: the detail lines accumulate across the passes.
    auto set_counts = [&](const CheckResult &src) {
        auto m = std::move(res->messages);
        *res = src;
        res->messages = std::move(m);
    };
    const CheckResult pre = *res;
    bool rebuild = false;
    int64_t highest = -1;
    co_await compare(bs, cnt, 0, &rebuild, &highest, res);
    if (rebuild && (fix & CHECK_FIX_ERRORS)) {
        // As QEMU: a fresh refcount structure from the references; the old
        // one is leaked by that and freed at once; the counts say what was
        // wrong before.
        const CheckResult old = *res;
        res->messages.push_back("Rebuilding refcount structure");
        if (int r = co_await rebuild_refcounts(bs, cnt.ref); r < 0) {
            res->check_errors++;
            co_return r;
        }
        res->corruptions = res->leaks = 0;
        int64_t file_now = bdrv_getlength(bs->file()->bs.get());
        if (file_now < 0) co_return (int)file_now;
        cnt.ref.assign(std::max<uint64_t>(nclusters, (file_now + cs - 1) / cs), 0);
        const CheckResult saved = *res;
        if (int r = co_await count_refs(bs, cnt, copied, res); r < 0) co_return r;
        set_counts(CheckResult{});
        rebuild = false;
        highest = -1;
        co_await compare(bs, cnt, CHECK_FIX_LEAKS, &rebuild, &highest, res);
        if (rebuild) res->messages.push_back("ERROR rebuilt refcount structure is still broken");
        const int64_t fresh_leaks = res->leaks;
        set_counts(saved);
        if (res->corruptions < old.corruptions) res->corruptions_fixed += old.corruptions - res->corruptions;
        if (res->leaks < old.leaks) res->leaks_fixed += old.leaks - res->leaks;
        res->leaks += fresh_leaks;
    } else if (fix) {
        if (rebuild) {
            res->messages.push_back("ERROR need to rebuild refcount structures");
            res->check_errors++;
            co_return -EIO;
        }
        if (res->leaks || res->corruptions) {
            set_counts(pre);
            highest = -1;
            co_await compare(bs, cnt, fix, &rebuild, &highest, res);
        }
    }
    if (int r = co_await check_copied(bs, copied, fix, res); r < 0) co_return r;
    res->image_end_offset = (highest + 1) * cs;
    if (fix) {
        int r = co_await write_back_all(bs);
        if (r == 0) r = co_await flush_file(bs);
        if (r < 0) co_return r;
        // As QEMU (qcow2_mark_clean, qcow2_mark_consistent): a repaired image
        // with nothing left wrong is neither dirty nor corrupt any more.
        const uint64_t bits = INCOMPAT_DIRTY | INCOMPAT_CORRUPT;
        if (!res->check_errors && !res->corruptions && (s->h().incompatible & bits)) {
            uint8_t b[8];
            put_be64(b, s->h().incompatible & ~bits);
            if ((r = co_await write_file(bs, 72, 8, b)) == 0) r = co_await flush_file(bs);
            if (r < 0) co_return r;
            s->h().incompatible &= ~bits;
            s->corrupt = false;
        }
        // Allocation starts over from the refcounts as they are now.
        s->free_index = -1;
    }
    co_return 0;
}

}  // namespace mb::qcow2
