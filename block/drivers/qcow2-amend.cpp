// qemu-img amend for qcow2 (QEMU's qcow2_amend_options): compat (0.10 <->
// 1.1), lazy_refcounts and refcount_bits on an image open read-write.
//
// The header is written last, whole, in one write of the first cluster:
// until then the image is valid in its old form.
//   - a new refcount width gets a new refcount structure (rebuilt from the
//     references, as check -r all does) that only the new header names; the
//     old structure is freed after the switch (a crash in between leaks it);
//   - a downgrade to 0.10 first expands zero clusters, which version 2 cannot
//     express: an allocated one is zeroed on disk and becomes a data cluster,
//     an unallocated one is dropped (no backing file) or gets a zeroed cluster
//     (a backing file would show through).
#include <cerrno>
#include <cstring>
#include <set>

#include "block/aio.h"
#include "block/drivers/qcow2.h"

namespace mb::qcow2 {

namespace {

Task<int> expand_zero_clusters(BlockDriverState *bs) {
    State *s = bs->state<State>();
    const uint64_t per_l2 = uint64_t(1) << s->l2_bits;
    const int64_t cs = s->cluster_size;
    std::vector<uint8_t> zero(cs, 0);
    for (uint64_t i = 0; i < s->l1.size(); i++) {
        if (!(s->l1[i] & L1E_OFFSET_MASK)) continue;
        TableCache::Table t;
        uint64_t l2_off;
        int r = co_await ensure_l2_for(bs, int64_t(i * per_l2) << s->cluster_bits, &t, &l2_off);
        if (r < 0) co_return r;
        for (uint64_t k = 0; k < per_l2; k++) {
            uint64_t e = be64(t->data() + k * 8);
            if ((e & OFLAG_COMPRESSED) || !(e & OFLAG_ZERO)) continue;
            uint64_t host = e & L2E_OFFSET_MASK, ne;
            if (host) {
                if ((r = co_await check_overlap(bs, "write on", host, cs, MetaKind::Data)) < 0) co_return r;
                ne = e & ~OFLAG_ZERO;
            } else if (bs->backing()) {
                int64_t off = co_await alloc_clusters(bs, 1);
                if (off < 0) co_return int(off);
                host = uint64_t(off);
                ne = host | OFLAG_COPIED;
            } else {
                ne = 0;
            }
            if (host && (r = co_await bdrv_co_pwritev(bs->file(), host, cs, zero.data())) < 0) co_return r;
            put_be64(t->data() + k * 8, ne);
            s->l2_cache.mark_dirty(l2_off, t);
        }
    }
    co_return 0;
}

// The first cluster for the header as it is in memory (fields that amend
// changes already set), laid out as qemu-img writes it.
Status build_header(State *s, std::vector<uint8_t> &buf) {
    const Header &h = s->h();
    buf.assign(s->cluster_size, 0);
    uint8_t *p = buf.data();
    put_be32(p, QCOW2_MAGIC);
    put_be32(p + 4, h.version);
    put_be32(p + 20, h.cluster_bits);
    put_be64(p + 24, h.size);
    put_be32(p + 36, h.l1_size);
    put_be64(p + 40, h.l1_table_offset);
    put_be64(p + 48, h.refcount_table_offset);
    put_be32(p + 56, h.refcount_table_clusters);
    put_be32(p + 60, h.nb_snapshots);
    put_be64(p + 64, h.snapshots_offset);
    uint32_t hlen = V2_HEADER_LENGTH;
    if (h.version >= 3) {
        hlen = 112;
        put_be64(p + 72, h.incompatible);
        put_be64(p + 80, h.compatible);
        put_be64(p + 88, h.autoclear);
        put_be32(p + 96, h.refcount_order);
        put_be32(p + 100, hlen);
    }
    return write_header_tail(p, hlen, int(h.version), s->cluster_size, s->img.backing_file, s->img.backing_format);
}

Task<int> amend_locked(BlockDriverState *bs, int version, int order, bool lazy, Status *err) {
    State *s = bs->state<State>();
    co_await s->lock.lock();
    CoLockGuard g(s->lock);
    Header &h = s->h();
    int r = co_await prepare_write(bs);  // drops stale autoclear bits
    if (r < 0) co_return r;
    uint64_t old_rt = 0, old_rt_clusters = 0;
    std::set<uint64_t> old_blocks;
    if (order != int(h.refcount_order)) {
        if ((r = co_await write_back_all(bs)) < 0) co_return r;
        std::vector<uint32_t> refs;
        if ((r = co_await count_references(bs, refs)) < 0) co_return r;
        old_rt = h.refcount_table_offset;
        old_rt_clusters = h.refcount_table_clusters;
        old_blocks = s->rb_offsets;
        s->rb_cache.clear();
        s->refcount_bits = 1 << order;
        s->rb_bits = s->cluster_bits + 3 - order;
        h.refcount_order = uint32_t(order);
        if ((r = co_await rebuild_refcounts(bs, refs, false)) < 0) {
            *err = PosixError("Could not change the refcount width", -r);
            co_return r;
        }
    }
    if (version < int(h.version) && (r = co_await expand_zero_clusters(bs)) < 0) co_return r;
    if ((r = co_await write_back_all(bs)) < 0) co_return r;
    if ((r = co_await flush_file(bs)) < 0) co_return r;

    h.version = uint32_t(version);
    h.compatible = lazy ? h.compatible | COMPAT_LAZY_REFCOUNTS : h.compatible & ~COMPAT_LAZY_REFCOUNTS;
    if (version < 3) h.compatible = h.incompatible = h.autoclear = 0;
    h.header_length = version < 3 ? V2_HEADER_LENGTH : 112;
    std::vector<uint8_t> buf;
    Status st = build_header(s, buf);
    if (!st.ok()) {
        *err = st;
        co_return -EINVAL;
    }
    if ((r = co_await bdrv_co_pwritev(bs->file(), 0, buf.size(), buf.data())) < 0) co_return r;
    if ((r = co_await flush_file(bs)) < 0) co_return r;
    // The old refcount structure is unreferenced now.
    if (old_rt_clusters) {
        if ((r = co_await free_range(bs, old_rt, old_rt_clusters * s->cluster_size)) < 0) co_return r;
        for (uint64_t b : old_blocks)
            if ((r = co_await free_range(bs, b, s->cluster_size)) < 0) co_return r;
        if ((r = co_await write_back_all(bs)) < 0) co_return r;
    }
    co_return 0;
}

}  // namespace

Status amend(BlockDriverState *bs, const AmendOptions &o) {
    State *s = bs->state<State>();
    const Header &h = s->h();
    const int version = o.version.value_or(int(h.version));
    // Downgrading turns lazy refcounts off unless they were asked for.
    const bool lazy = o.lazy_refcounts.value_or(version >= 3 && (h.compatible & COMPAT_LAZY_REFCOUNTS));
    const int order = o.refcount_order.value_or(int(h.refcount_order));
    if (lazy && version < 3) {
        return Status::Error(EINVAL, "Lazy refcounts only supported with compatibility level 1.1 and above "
                                     "(use compat=1.1 or greater)");
    }
    if (order != 4 && version < 3) {
        if (o.refcount_order) {
            return Status::Error(EINVAL, "Refcount widths other than 16 bits require compatibility level 1.1 "
                                         "or above (use compat=1.1 or greater)");
        }
        return Status::Error(EINVAL, "compat=0.10 requires refcount_bits=16");
    }
    if (version < 3 && (h.incompatible & ~INCOMPAT_DIRTY)) {
        return Status::Error(ENOTSUP, "Cannot downgrade an image with incompatible features " +
                                          hex(h.incompatible & ~INCOMPAT_DIRTY) + " set");
    }
    if (h.nb_snapshots && order != int(h.refcount_order)) {
        return Status::Error(ENOTSUP, "Changing the refcount width of an image with internal snapshots is not supported");
    }
    if (version == int(h.version) && order == int(h.refcount_order) &&
        lazy == bool(h.compatible & COMPAT_LAZY_REFCOUNTS)) {
        return Status::OK();
    }
    Status err = Status::OK();
    int r = sync_wait(amend_locked(bs, version, order, lazy, &err));
    if (!err.ok()) return err;
    if (r < 0) return PosixError("Could not amend the image", -r);
    return Status::OK();
}

}  // namespace mb::qcow2
