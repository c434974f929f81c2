// qcow2 internal snapshots: the snapshot table (qcow2.txt, "Snapshots"),
// create, apply (revert), delete, reading a snapshot, and the
// copy-on-write of an L2 table shared with a snapshot.
//
// Refcounts count references from every L1 table, the snapshots' and the
// active one: an L2 table reached from two L1 tables has refcount 2, and so
// has every cluster it references.  The COPIED flag (bit 63) of an active
// L1 or L2 entry says "refcount exactly 1": only such clusters are written
// in place; anything else is copied first (qcow2-cluster.cpp).
//
// Every operation is ordered so that a crash at any point leaves at most
// leaked clusters (refcounts too high), never a reference the refcounts do
// not cover nor a COPIED flag on a shared cluster:
//   create: refcounts up, COPIED flags cleared, the L1 copy, the new table,
//           then the header switches to it;
//   apply:  the snapshot's refcounts up, a new active L1 table, the header
//           switches to it, then the old active state's refcounts down and
//           the COPIED flags recomputed;
//   delete: the new table, the header switches to it, then the snapshot's
//           refcounts down and the COPIED flags recomputed.
#include "block/drivers/qcow2-snapshot.h"

#include <glib.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>

#include "block/aio.h"
#include "block/warn.h"

namespace mb::qcow2 {

namespace {

constexpr uint64_t MAX_TABLE_BYTES = 64 << 20;  // QEMU's QCOW_MAX_SNAPSHOTS_SIZE
constexpr uint32_t MAX_EXTRA = 1024;            // QEMU's QCOW_MAX_SNAPSHOT_EXTRA_DATA
constexpr size_t MAX_NAME = 255;                // what qemu-img keeps of a name
constexpr uint32_t ENTRY_FIXED = 40;

uint64_t align8(uint64_t v) { return (v + 7) & ~uint64_t(7); }

Task<int> write_file(BlockDriverState *bs, uint64_t off, uint64_t len, const uint8_t *buf) {
    co_return co_await bdrv_co_pwritev(bs->file(), off, len, buf);
}


// Dirty tables to the file in dependency order, then a flush: a step of an
// operation is on disk before the next one starts.
Task<int> sync_meta(BlockDriverState *bs) {
    int r = co_await write_back_all(bs);
    if (r < 0) co_return r;
    co_return co_await flush_file(bs);
}

// The table read from the file in growing pieces (it is usually small;
// a hostile count must not make us read 64 MiB up front).
struct Reader {
    BlockDriverState *bs;
    uint64_t base, avail;
    std::vector<uint8_t> buf;
};

Task<int> ensure(Reader &rd, uint64_t n) {
    if (n <= rd.buf.size()) co_return 0;
    if (n > rd.avail) co_return -ERANGE;
    uint64_t want = std::min<uint64_t>(rd.avail, std::max<uint64_t>(n, rd.buf.size() * 2 + 65536));
    uint64_t old = rd.buf.size();
    rd.buf.resize(want);
    co_return co_await bdrv_co_preadv(rd.bs->file(), rd.base + old, want - old, rd.buf.data() + old);
}

// Parses the snapshot table; every field bounded against the file.
// -EINVAL with *why set for an invalid table.
Task<int> read_table(BlockDriverState *bs, std::vector<SnapshotInfo> *out, std::string *why) {
    State *s = bs->state<State>();
    const Header &h = s->h();
    out->clear();
    if (!h.nb_snapshots) co_return 0;
    int64_t flen = bdrv_getlength(bs->file()->bs.get());
    if (flen < 0) co_return (int)flen;
    if (h.snapshots_offset >= uint64_t(flen)) co_return -EINVAL;  // parse_header refused it already
    Reader rd{bs, h.snapshots_offset, std::min<uint64_t>(MAX_TABLE_BYTES, uint64_t(flen) - h.snapshots_offset), {}};
    const std::string where = "qcow2: invalid snapshot table in '" + bs->file()->bs->filename + "': ";
    uint64_t p = 0;
    for (uint32_t i = 0; i < h.nb_snapshots; i++) {
        const std::string entry = "entry " + std::to_string(i + 1) + " of " + std::to_string(h.nb_snapshots);
        int r = co_await ensure(rd, p + ENTRY_FIXED);
        if (r == -ERANGE) {
            *why = where + entry + " lies past the end of the file or of 64 MiB";
            co_return -EINVAL;
        }
        if (r < 0) co_return r;
        const uint8_t *e = rd.buf.data() + p;
        SnapshotInfo sn;
        sn.l1_offset = be64(e);
        sn.l1_size = be32(e + 8);
        uint16_t id_len = be16(e + 12), name_len = be16(e + 14);
        sn.date_sec = be32(e + 16);
        sn.date_nsec = be32(e + 20);
        sn.vm_clock_nsec = be64(e + 24);
        sn.vm_state_size = be32(e + 32);
        uint32_t extra = be32(e + 36);
        if (extra > MAX_EXTRA) {
            *why = where + entry + " has " + std::to_string(extra) + " bytes of extra data (at most " +
                   std::to_string(MAX_EXTRA) + ")";
            co_return -EINVAL;
        }
        uint64_t len = ENTRY_FIXED + uint64_t(extra) + id_len + name_len;
        r = co_await ensure(rd, p + len);
        if (r == -ERANGE) {
            *why = where + entry + " lies past the end of the file or of 64 MiB";
            co_return -EINVAL;
        }
        if (r < 0) co_return r;
        e = rd.buf.data() + p;
        const uint8_t *x = e + ENTRY_FIXED;
        if (extra >= 8) sn.vm_state_size = be64(x);
        if (extra >= 16) {
            sn.has_disk_size = true;
            sn.disk_size = be64(x + 8);
        }
        if (extra >= 24) {
            sn.has_icount = true;
            sn.icount = be64(x + 16);
        }
        sn.id.assign(reinterpret_cast<const char *>(x + extra), id_len);
        sn.name.assign(reinterpret_cast<const char *>(x + extra + id_len), name_len);
        if (sn.l1_size && (sn.l1_offset % s->cluster_size || uint64_t(sn.l1_size) * 8 > MAX_L1_BYTES ||
                           sn.l1_offset < uint64_t(s->cluster_size) ||
                           sn.l1_offset + uint64_t(sn.l1_size) * 8 > uint64_t(flen))) {
            *why = where + entry + " ('" + sn.name + "') has an invalid L1 table (offset " + hex(sn.l1_offset) +
                   ", " + std::to_string(sn.l1_size) + " entries)";
            co_return -EINVAL;
        }
        // The padding to 8 bytes may be missing after the last entry.
        uint64_t padded = align8(len);
        sn.raw.assign(e, e + len);
        sn.raw.resize(padded, 0);
        out->push_back(std::move(sn));
        p += padded;
    }
    co_return 0;
}

// The entry of a new snapshot of the active state, as qemu-img 7.2 writes
// it: 24 bytes of extra data (VM state size, disk size, icount 0).
std::vector<uint8_t> new_entry(State *s, uint64_t l1_off, const std::string &id, const std::string &name) {
    gint64 now = g_get_real_time();
    std::vector<uint8_t> e(align8(ENTRY_FIXED + 24 + id.size() + name.size()), 0);
    put_be64(&e[0], l1_off);
    put_be32(&e[8], uint32_t(s->l1.size()));
    put_be16(&e[12], uint16_t(id.size()));
    put_be16(&e[14], uint16_t(name.size()));
    put_be32(&e[16], uint32_t(now / 1000000));
    put_be32(&e[20], uint32_t(now % 1000000 * 1000));
    put_be32(&e[36], 24);
    put_be64(&e[48], s->h().size);
    memcpy(&e[64], id.data(), id.size());
    memcpy(&e[64 + id.size()], name.data(), name.size());
    return e;
}

// First by ID, then by name (QEMU's find_snapshot_by_id_or_name); -1: none.
int find(const std::vector<SnapshotInfo> &t, const std::string &id_or_name) {
    for (size_t i = 0; i < t.size(); i++)
        if (t[i].id == id_or_name) return int(i);
    for (size_t i = 0; i < t.size(); i++)
        if (t[i].name == id_or_name) return int(i);
    return -1;
}

Task<int> read_l1(BlockDriverState *bs, uint64_t off, uint32_t n, std::vector<uint64_t> *l1) {
    std::vector<uint8_t> b(uint64_t(n) * 8);
    l1->assign(n, 0);
    if (!n) co_return 0;
    int r = co_await bdrv_co_preadv(bs->file(), off, b.size(), b.data());
    if (r < 0) co_return r;
    for (uint32_t i = 0; i < n; i++) (*l1)[i] = be64(&b[i * 8]);
    co_return 0;
}

// Writes an L1 table whole, padded with zeroes to a sector as QEMU does.
Task<int> write_l1(BlockDriverState *bs, uint64_t off, const std::vector<uint64_t> &l1) {
    std::vector<uint8_t> b((l1.size() * 8 + 511) & ~size_t(511), 0);
    for (size_t i = 0; i < l1.size(); i++) put_be64(&b[i * 8], l1[i]);
    if (b.empty()) co_return 0;
    co_return co_await write_file(bs, off, b.size(), b.data());
}

// Every cluster an L1 table reaches, with how many references it gets
// from it (its L2 tables, and what their entries hold).
Task<int> collect_refs(BlockDriverState *bs, const std::vector<uint64_t> &l1, std::map<uint64_t, uint64_t> *refs) {
    State *s = bs->state<State>();
    const uint64_t cs = s->cluster_size;
    // Nothing valid lies past the end of the file: such a reference must not
    // make refcount blocks appear out there.
    int64_t flen = bdrv_getlength(bs->file()->bs.get());
    if (flen < 0) co_return (int)flen;
    for (uint64_t e : l1) {
        uint64_t off = e & L1E_OFFSET_MASK;
        if (!off) continue;
        if (off % cs) co_return co_await signal_corruption(bs, "L2 table offset " + hex(off) + " is unaligned");
        (*refs)[off / cs]++;
        TableCache::Table t;
        int r = co_await load_table(bs, s->l2_cache, off, &t);
        if (r < 0) co_return r;
        for (uint64_t j = 0; j < (uint64_t(1) << s->l2_bits); j++) {
            uint64_t x = be64(t->data() + j * 8), o, len;
            entry_range(s, x, &o, &len);
            if (!len) continue;
            if (!(x & OFLAG_COMPRESSED) && o % cs)
                co_return co_await signal_corruption(bs, "cluster offset " + hex(o) + " is unaligned");
            if (o + len > uint64_t(flen) + cs)
                co_return co_await signal_corruption(bs, "cluster offset " + hex(o) + " lies past the end of the file");
            for (uint64_t c = o / cs; c <= (o + len - 1) / cs; c++) (*refs)[c]++;
        }
    }
    co_return 0;
}

// Adds (sign 1) or drops (sign -1) the references of `refs`: all checked
// first (no overflow, no underflow), so a refusal changes nothing.
Task<int> apply_refs(BlockDriverState *bs, const std::map<uint64_t, uint64_t> &refs, int sign, std::string *why) {
    State *s = bs->state<State>();
    const uint64_t max = s->refcount_bits == 64 ? UINT64_MAX : (uint64_t(1) << s->refcount_bits) - 1;
    for (auto [c, n] : refs) {
        uint64_t rc;
        int r = co_await get_refcount(bs, int64_t(c), &rc);
        if (r < 0) co_return r;
        if (sign > 0 && rc > max - n) {
            *why = "The refcount of cluster " + std::to_string(c) + " would exceed " + std::to_string(max) +
                   " (refcount_bits=" + std::to_string(s->refcount_bits) + ")";
            co_return -ERANGE;
        }
        if (sign < 0 && rc < n)
            co_return co_await signal_corruption(bs, "Preventing invalid free of cluster " + hex(c * s->cluster_size));
    }
    std::vector<std::pair<uint64_t, uint64_t>> done;
    for (auto [c, n] : refs) {
        int r = co_await update_refcount(bs, int64_t(c), sign * int(n));
        if (r < 0) {
            // Best effort back to where it was (an I/O error on a block).
            for (auto it = done.rbegin(); it != done.rend(); ++it)
                (void)co_await update_refcount(bs, int64_t(it->first), -sign * int(it->second));
            co_return r;
        }
        done.emplace_back(c, n);
    }
    co_return 0;
}

// Punches out the clusters of `refs` that nothing references any more.
Task<void> release_freed(BlockDriverState *bs, const std::map<uint64_t, uint64_t> &refs) {
    State *s = bs->state<State>();
    for (auto [c, n] : refs) {
        uint64_t rc;
        if (co_await get_refcount(bs, int64_t(c), &rc) == 0 && rc == 0)
            (void)co_await bdrv_co_pdiscard(bs->file(), c * s->cluster_size, s->cluster_size);
    }
}

// Clears (copied = false) or recomputes from the refcounts the COPIED flags
// of the active L1 table and of the L2 tables only it references, and
// writes them (L2 tables first, then the L1 table).
Task<int> update_copied(BlockDriverState *bs, bool recompute) {
    State *s = bs->state<State>();
    const uint64_t cs = s->cluster_size;
    std::vector<uint64_t> l1 = s->l1;
    for (uint64_t &e : l1) {
        uint64_t off = e & L1E_OFFSET_MASK;
        if (!off) continue;
        uint64_t rc = 0;
        int r;
        if (recompute && (r = co_await get_refcount(bs, int64_t(off / cs), &rc)) < 0) co_return r;
        e = (e & ~OFLAG_COPIED) | (rc == 1 ? OFLAG_COPIED : 0);
        TableCache::Table t;
        if ((r = co_await load_table(bs, s->l2_cache, off, &t)) < 0) co_return r;
        // A table still shared with a snapshot is the snapshot's too: its
        // entries all have refcounts above 1 and are left alone.
        if (recompute && rc != 1) continue;
        bool changed = false;
        for (uint64_t j = 0; j < (uint64_t(1) << s->l2_bits); j++) {
            uint64_t x = be64(t->data() + j * 8), nx = x & ~OFLAG_COPIED;
            uint64_t host = x & L2E_OFFSET_MASK;
            if (recompute && host && !(x & OFLAG_COMPRESSED)) {
                uint64_t drc;
                if ((r = co_await get_refcount(bs, int64_t(host / cs), &drc)) < 0) co_return r;
                if (drc == 1) nx |= OFLAG_COPIED;
            }
            if (nx != x) {
                put_be64(t->data() + j * 8, nx);
                changed = true;
            }
        }
        if (changed) s->l2_cache.mark_dirty(off, t);
    }
    int r = co_await sync_meta(bs);
    if (r < 0) co_return r;
    if (l1 != s->l1) {
        if ((r = co_await write_l1(bs, s->h().l1_table_offset, l1)) < 0) co_return r;
        s->l1 = l1;
    }
    co_return co_await flush_file(bs);
}

// Writes a table of `entries` (concatenated raw entries) to new clusters
// and switches the header to it; the old table's clusters (old_len bytes)
// are freed.
Task<int> replace_table(BlockDriverState *bs, const std::vector<std::vector<uint8_t>> &entries, uint64_t old_len) {
    State *s = bs->state<State>();
    Header &h = s->h();
    std::vector<uint8_t> tb;
    for (auto &e : entries) tb.insert(tb.end(), e.begin(), e.end());
    if (tb.size() > MAX_TABLE_BYTES) co_return -EFBIG;
    uint64_t off = 0;
    int r;
    if (!tb.empty()) {
        int64_t n = int64_t((tb.size() + s->cluster_size - 1) / s->cluster_size);
        int64_t o = co_await alloc_clusters(bs, n);
        if (o < 0) co_return (int)o;
        off = uint64_t(o);
        if ((r = co_await sync_meta(bs)) < 0) co_return r;
        if ((r = co_await write_file(bs, off, tb.size(), tb.data())) < 0) co_return r;
        if ((r = co_await flush_file(bs)) < 0) co_return r;
    }
    // Count and offset are adjacent (bytes 60-71): one write switches both.
    uint8_t hb[12];
    put_be32(hb, uint32_t(entries.size()));
    put_be64(hb + 4, off);
    if ((r = co_await write_file(bs, 60, 12, hb)) < 0) co_return r;
    if ((r = co_await flush_file(bs)) < 0) co_return r;
    uint64_t old_off = h.snapshots_offset, old_n = h.nb_snapshots;
    h.nb_snapshots = uint32_t(entries.size());
    h.snapshots_offset = off;
    // The old table (its size: what the caller read of it) is unused now.
    if (old_n && old_off && old_len && (r = co_await free_range(bs, old_off, old_len)) < 0) co_return r;
    co_return 0;
}

}  // namespace

Task<int> cow_l2_table(BlockDriverState *bs, uint64_t l1_idx, TableCache::Table *t, uint64_t *l2_off) {
    State *s = bs->state<State>();
    const uint64_t old = s->l1[l1_idx] & L1E_OFFSET_MASK;
    TableCache::Table ot;
    int r = co_await load_table(bs, s->l2_cache, old, &ot);
    if (r < 0) co_return r;
    uint64_t rc;
    if ((r = co_await get_refcount(bs, int64_t(old >> s->cluster_bits), &rc)) < 0) co_return r;
    if (rc == 0) co_return co_await signal_corruption(bs, "L2 table " + hex(old) + " has refcount 0");
    int64_t noff = co_await alloc_clusters(bs, 1);
    if (noff < 0) co_return (int)noff;
    // The copy keeps the entries as they are: their clusters keep their
    // refcounts (the snapshot and the copy each reach them once).
    auto nt = std::make_shared<std::vector<uint8_t>>(*ot);
    // The copy's refcount and the copy reach the disk before the L1 entry.
    if ((r = co_await write_back_rb(bs)) < 0) co_return r;
    if ((r = co_await write_file(bs, noff, s->cluster_size, nt->data())) < 0) co_return r;
    if ((r = co_await flush_file(bs)) < 0) co_return r;
    uint64_t saved = s->l1[l1_idx];
    s->l1[l1_idx] = uint64_t(noff) | OFLAG_COPIED;
    uint64_t first = l1_idx & ~uint64_t(63);
    uint8_t sec[512] = {};
    for (uint64_t i = first; i < first + 64 && i < s->l1.size(); i++) put_be64(sec + (i - first) * 8, s->l1[i]);
    if ((r = co_await write_file(bs, s->h().l1_table_offset + first * 8, 512, sec)) < 0) {
        s->l1[l1_idx] = saved;
        co_return r;
    }
    s->l2_offsets.insert(noff);
    s->l2_cache.insert(noff, nt);
    // The active table no longer references the old one (the L1 entry is
    // written: the decrement may reach the disk whenever).
    if ((r = co_await update_refcount(bs, int64_t(old >> s->cluster_bits), -1)) < 0) co_return r;
    *t = nt;
    *l2_off = noff;
    co_return 0;
}

namespace {
uint64_t table_bytes(const std::vector<SnapshotInfo> &t);
}  // namespace

Task<int> snapshot_references(BlockDriverState *bs, std::map<uint64_t, uint64_t> *refs, std::vector<std::string> *errors) {
    State *s = bs->state<State>();
    const uint64_t cs = s->cluster_size;
    std::vector<SnapshotInfo> table;
    std::string why;
    int r = co_await read_table(bs, &table, &why);
    if (r == -EINVAL) {
        errors->push_back("ERROR " + why);
        co_return 0;
    }
    if (r < 0) co_return r;
    auto add = [&](uint64_t off, uint64_t len) {
        if (len)
            for (uint64_t c = off / cs; c <= (off + len - 1) / cs; c++) (*refs)[c]++;
    };
    add(s->h().snapshots_offset, table_bytes(table));
    for (auto &sn : table) {
        add(sn.l1_offset, uint64_t(sn.l1_size) * 8);
        std::vector<uint64_t> l1;
        if ((r = co_await read_l1(bs, sn.l1_offset, sn.l1_size, &l1)) < 0) co_return r;
        for (uint64_t e : l1) {
            uint64_t off = e & L1E_OFFSET_MASK;
            if (!off) continue;
            if (off % cs) {
                errors->push_back("ERROR snapshot '" + sn.name + "': L2 table offset " + hex(off) + " is unaligned");
                continue;
            }
            add(off, cs);
            TableCache::Table t;
            if (co_await load_table(bs, s->l2_cache, off, &t) < 0) {
                errors->push_back("ERROR snapshot '" + sn.name + "': could not read L2 table at " + hex(off));
                continue;
            }
            for (uint64_t j = 0; j < (uint64_t(1) << s->l2_bits); j++) {
                uint64_t x = be64(t->data() + j * 8), o, len;
                entry_range(s, x, &o, &len);
                if (len && !(x & OFLAG_COMPRESSED) && o % cs) {
                    errors->push_back("ERROR snapshot '" + sn.name + "': cluster offset " + hex(o) + " is unaligned");
                    continue;
                }
                add(o, len);
            }
        }
    }
    co_return 0;
}

namespace {

uint64_t table_bytes(const std::vector<SnapshotInfo> &t) {
    uint64_t n = 0;
    for (auto &sn : t) n += sn.raw.size();
    return n;
}

std::vector<std::vector<uint8_t>> raw_entries(const std::vector<SnapshotInfo> &t) {
    std::vector<std::vector<uint8_t>> v;
    for (auto &sn : t) v.push_back(sn.raw);
    return v;
}

// The start of every writing operation: a writable qcow2 node, the refcount
// table in memory, everything cached on disk.
Task<int> begin_op(BlockDriverState *bs, std::vector<SnapshotInfo> *table, std::string *why) {
    State *s = bs->state<State>();
    if (s->corrupt) co_return -EIO;
    int r = co_await prepare_write(bs);
    if (r < 0) co_return r;
    if ((r = co_await sync_meta(bs)) < 0) co_return r;
    co_return co_await read_table(bs, table, why);
}

// A writing operation's own steps, once begin_op has read the table; `arg`
// is the new snapshot's name (create) or the ID or name of the one it acts
// on (apply, delete).
using TableOp = Task<int> (*)(BlockDriverState *bs, std::vector<SnapshotInfo> &table, const std::string &arg,
                              std::string *why);

// Every writing operation: under the node's lock (one snapshot operation
// or request at a time), begin_op, then the operation's steps.
Task<int> locked_op(BlockDriverState *bs, TableOp op, const std::string &arg, std::string *why) {
    State *s = bs->state<State>();
    co_await s->lock.lock();
    CoLockGuard g(s->lock);
    std::vector<SnapshotInfo> table;
    int r = co_await begin_op(bs, &table, why);
    if (r < 0) co_return r;
    co_return co_await op(bs, table, arg, why);
}

Task<int> create_op(BlockDriverState *bs, std::vector<SnapshotInfo> &table, const std::string &name,
                    std::string *why) {
    State *s = bs->state<State>();
    int r = 0;
    if (table.size() >= MAX_SNAPSHOTS) {
        *why = "The image has " + std::to_string(table.size()) + " snapshots already (at most " +
               std::to_string(MAX_SNAPSHOTS) + ")";
        co_return -EFBIG;
    }
    // A new ID: one more than the largest numeric one (as QEMU picks it).
    uint64_t max_id = 0;
    for (auto &sn : table) max_id = std::max<uint64_t>(max_id, strtoull(sn.id.c_str(), nullptr, 10));
    const std::string id = std::to_string(max_id + 1);

    // 1. Everything the active L1 table reaches gets one more reference.
    std::map<uint64_t, uint64_t> refs;
    if ((r = co_await collect_refs(bs, s->l1, &refs)) < 0) co_return r;
    if ((r = co_await apply_refs(bs, refs, 1, why)) < 0) co_return r;
    if ((r = co_await sync_meta(bs)) < 0) co_return r;
    // 2. Nothing active is ours alone any more: no COPIED flag.
    if ((r = co_await update_copied(bs, false)) < 0) co_return r;
    // 3. The snapshot's copy of the L1 table.
    uint64_t l1_off = 0;
    if (!s->l1.empty()) {
        int64_t n = int64_t((s->l1.size() * 8 + s->cluster_size - 1) / s->cluster_size);
        int64_t o = co_await alloc_clusters(bs, n);
        if (o < 0) co_return (int)o;
        l1_off = uint64_t(o);
        if ((r = co_await sync_meta(bs)) < 0) co_return r;
        if ((r = co_await write_l1(bs, l1_off, s->l1)) < 0) co_return r;
        if ((r = co_await flush_file(bs)) < 0) co_return r;
    }
    // 4. The table with the new entry; the header switches to it.
    auto entries = raw_entries(table);
    entries.push_back(new_entry(s, l1_off, id, name));
    if ((r = co_await replace_table(bs, entries, table_bytes(table))) < 0) co_return r;
    co_return co_await sync_meta(bs);
}

Task<int> apply_op(BlockDriverState *bs, std::vector<SnapshotInfo> &table, const std::string &id_or_name,
                   std::string *why) {
    State *s = bs->state<State>();
    int r = 0;
    int i = find(table, id_or_name);
    if (i < 0) co_return -ENOENT;
    const SnapshotInfo &sn = table[i];
    if (sn.has_disk_size && sn.disk_size != s->h().size) {
        *why = "The snapshot's disk size (" + std::to_string(sn.disk_size) + ") differs from the image's (" +
               std::to_string(s->h().size) + "): reverting a resize is not supported";
        co_return -ENOTSUP;
    }
    std::vector<uint64_t> sl1;
    if ((r = co_await read_l1(bs, sn.l1_offset, sn.l1_size, &sl1)) < 0) co_return r;
    // 1. What the snapshot reaches gets the active table's reference.
    std::map<uint64_t, uint64_t> add, drop;
    if ((r = co_await collect_refs(bs, sl1, &add)) < 0) co_return r;
    if ((r = co_await collect_refs(bs, s->l1, &drop)) < 0) co_return r;
    if ((r = co_await apply_refs(bs, add, 1, why)) < 0) co_return r;
    if ((r = co_await sync_meta(bs)) < 0) co_return r;
    // 2. A new active L1 table, the snapshot's (no COPIED flags yet), as
    //    long as the longer of the two.
    std::vector<uint64_t> nl1(std::max<size_t>(sl1.size(), s->l1.size()), 0);
    for (size_t k = 0; k < sl1.size(); k++) nl1[k] = sl1[k] & ~OFLAG_COPIED;
    uint64_t nl1_off = 0;
    if (!nl1.empty()) {
        int64_t n = int64_t((nl1.size() * 8 + s->cluster_size - 1) / s->cluster_size);
        int64_t o = co_await alloc_clusters(bs, n);
        if (o < 0) co_return (int)o;
        nl1_off = uint64_t(o);
        if ((r = co_await sync_meta(bs)) < 0) co_return r;
        if ((r = co_await write_l1(bs, nl1_off, nl1)) < 0) co_return r;
        if ((r = co_await flush_file(bs)) < 0) co_return r;
    }
    // 3. The header switches to it (size and offset: bytes 36-47, one write).
    uint8_t hb[12];
    put_be32(hb, uint32_t(nl1.size()));
    put_be64(hb + 4, nl1_off);
    if ((r = co_await write_file(bs, 36, 12, hb)) < 0) co_return r;
    if ((r = co_await flush_file(bs)) < 0) co_return r;
    uint64_t old_l1_off = s->h().l1_table_offset;
    size_t old_l1_size = s->l1.size();
    s->h().l1_table_offset = nl1_off;
    s->h().l1_size = uint32_t(nl1.size());
    s->l1 = nl1;
    for (uint64_t e : nl1)
        if (uint64_t o = e & L1E_OFFSET_MASK) s->l2_offsets.insert(o);
    // 4. The old active state loses its references, the old L1 table goes.
    if ((r = co_await apply_refs(bs, drop, -1, why)) < 0) co_return r;
    if (old_l1_size && (r = co_await free_range(bs, old_l1_off, old_l1_size * 8)) < 0) co_return r;
    if ((r = co_await sync_meta(bs)) < 0) co_return r;
    co_await release_freed(bs, drop);
    // 5. What is the active table's alone gets its COPIED flag back.
    co_return co_await update_copied(bs, true);
}

Task<int> delete_op(BlockDriverState *bs, std::vector<SnapshotInfo> &table, const std::string &id_or_name,
                    std::string *why) {
    int r = 0;
    int i = find(table, id_or_name);
    if (i < 0) co_return -ENOENT;
    const SnapshotInfo sn = table[i];
    std::vector<uint64_t> sl1;
    if ((r = co_await read_l1(bs, sn.l1_offset, sn.l1_size, &sl1)) < 0) co_return r;
    std::map<uint64_t, uint64_t> drop;
    if ((r = co_await collect_refs(bs, sl1, &drop)) < 0) co_return r;
    // 1. The table without it; the header switches to it.
    uint64_t old_len = table_bytes(table);
    table.erase(table.begin() + i);
    if ((r = co_await replace_table(bs, raw_entries(table), old_len)) < 0) co_return r;
    // 2. Its references go, and its L1 table.
    if ((r = co_await apply_refs(bs, drop, -1, why)) < 0) co_return r;
    if (sn.l1_size && (r = co_await free_range(bs, sn.l1_offset, uint64_t(sn.l1_size) * 8)) < 0) co_return r;
    if ((r = co_await sync_meta(bs)) < 0) co_return r;
    co_await release_freed(bs, drop);
    // 3. What the active table now holds alone gets its COPIED flag back.
    co_return co_await update_copied(bs, true);
}

Task<int> do_list(BlockDriverState *bs, std::vector<SnapshotInfo> *out, std::string *why) {
    State *s = bs->state<State>();
    co_await s->lock.lock();
    CoLockGuard g(s->lock);
    co_return co_await read_table(bs, out, why);
}

Task<int> do_load_tmp(BlockDriverState *bs, const std::string &id, const std::string &name, std::string *why) {
    State *s = bs->state<State>();
    co_await s->lock.lock();
    CoLockGuard g(s->lock);
    std::vector<SnapshotInfo> table;
    int r = co_await read_table(bs, &table, why);
    if (r < 0) co_return r;
    int i = -1;
    for (size_t k = 0; k < table.size() && i < 0; k++)
        if ((id.empty() || table[k].id == id) && (name.empty() || table[k].name == name)) i = int(k);
    if (i < 0) co_return -ENOENT;
    std::vector<uint64_t> sl1;
    if ((r = co_await read_l1(bs, table[i].l1_offset, table[i].l1_size, &sl1)) < 0) co_return r;
    s->l1 = sl1;
    if (table[i].has_disk_size) s->h().size = table[i].disk_size;
    co_return 0;
}

bool is_qcow2(BlockDriverState *bs) { return bs->drv && strcmp(bs->drv->format_name, "qcow2") == 0; }

Status op_status(int r, const std::string &why) {
    if (r >= 0) return Status::OK();
    if (!why.empty()) return Status::Error(-r, why);
    return Status::Error(-r, strerror(-r));
}

}  // namespace

}  // namespace mb::qcow2

namespace mb {

using namespace qcow2;

Result<std::vector<SnapshotInfo>> qcow2_snapshot_list(BlockDriverState *bs) {
    std::vector<SnapshotInfo> v;
    if (!is_qcow2(bs)) return v;
    std::string why;
    int r = sync_wait(do_list(bs, &v, &why));
    if (r < 0) return why.empty() ? PosixError("Could not read the snapshot table", -r) : Status::Error(-r, why);
    return v;
}

namespace {

Status writable_qcow2(BlockDriverState *bs) {
    if (!is_qcow2(bs)) {
        return Status::Error(ENOTSUP, std::string("Format '") + (bs->drv ? bs->drv->format_name : "?") +
                                          "' does not support internal snapshots");
    }
    if (!bs->writable()) return Status::Error(EROFS, "The image is opened read-only");
    return Status::OK();
}

}  // namespace

Status qcow2_snapshot_create(BlockDriverState *bs, const std::string &name) {
    MB_TRY(writable_qcow2(bs));
    if (name.size() > qcow2::MAX_NAME)
        return Status::Error(EINVAL, "The snapshot name is " + std::to_string(name.size()) + " bytes long (at most " +
                                         std::to_string(qcow2::MAX_NAME) + ")");
    std::string why;
    int r = sync_wait(locked_op(bs, create_op, name, &why));
    return op_status(r, why);
}

Status qcow2_snapshot_apply(BlockDriverState *bs, const std::string &id_or_name) {
    MB_TRY(writable_qcow2(bs));
    std::string why;
    int r = sync_wait(locked_op(bs, apply_op, id_or_name, &why));
    // qemu-img's words for a snapshot that is not there.
    if (r == -ENOENT) return PosixError("Failed to load snapshot", ENOENT);
    return op_status(r, why);
}

Status qcow2_snapshot_delete(BlockDriverState *bs, const std::string &id_or_name) {
    MB_TRY(writable_qcow2(bs));
    std::string why;
    int r = sync_wait(locked_op(bs, delete_op, id_or_name, &why));
    if (r == -ENOENT) return Status::Error(ENOENT, "snapshot not found");
    return op_status(r, why);
}

Status qcow2_snapshot_load_tmp(BlockDriverState *bs, const std::string &id, const std::string &name) {
    if (!is_qcow2(bs)) return writable_qcow2(bs);
    if (bs->writable()) return Status::Error(EINVAL, "A snapshot can only be read from an image opened read-only");
    std::string why;
    int r = sync_wait(do_load_tmp(bs, id, name, &why));
    if (r == -ENOENT) return Status::Error(ENOENT, "Can't find snapshot");
    return op_status(r, why);
}

}  // namespace mb

