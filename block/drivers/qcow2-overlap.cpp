// Metadata overlap checks (QEMU's qcow2_check_metadata_overlap) and the
// corrupt flag: nothing the driver writes, frees or discards may land on a
// metadata structure of another kind.  A table that points into metadata
// means the image is corrupt: the request is refused, the image is marked
// corrupt (the incompatible bit 1 of a v3 header, as QEMU does) and every
// later write of this open fails, so the damage cannot spread.
#include <cerrno>
#include <map>

#include "block/drivers/qcow2.h"
#include "block/warn.h"

namespace mb::qcow2 {

const char *metadata_overlap(State *s, uint64_t off, uint64_t len, MetaKind self) {
    const uint64_t cs = s->cluster_size;
    auto in = [&](uint64_t a, uint64_t alen) { return alen && a < off + len && off < a + alen; };
    if (in(0, cs)) return "qcow2_header";
    if (in(s->h().l1_table_offset, uint64_t(s->h().l1_size) * 8)) return "active L1 table";
    if (in(s->h().refcount_table_offset, uint64_t(s->h().refcount_table_clusters) * cs)) return "refcount table";
    auto in_set = [&](const std::set<uint64_t> &set) {
        auto it = set.lower_bound(off >= cs ? off - cs + 1 : 0);
        return it != set.end() && *it < off + len;
    };
    if (self != MetaKind::Refblock && in_set(s->rb_offsets)) return "refcount block";
    if (self != MetaKind::L2 && in_set(s->l2_offsets)) return "active L2 table";
    return nullptr;
}

bool overlaps_metadata(State *s, uint64_t off, uint64_t len, MetaKind self) {
    return metadata_overlap(s, off, len, self) != nullptr;
}

Task<int> signal_corruption(BlockDriverState *bs, const std::string &what) {
    State *s = bs->state<State>();
    if (!s->corrupt) {
        s->corrupt = true;
        warn_report("qcow2: Marking image '" + bs->file()->bs->filename + "' as corrupt: " + what +
                    "; further corruption events will be suppressed");
        if (s->h().version >= 3) {
            s->h().incompatible |= INCOMPAT_CORRUPT;
            uint8_t be[8];
            put_be64(be, s->h().incompatible);
            // Best effort: the request fails with EIO either way.
            if (co_await bdrv_co_pwritev(bs->file(), 72, 8, be) == 0) (void)co_await flush_file(bs);
        }
    }
    co_return -EIO;
}

Task<int> check_overlap(BlockDriverState *bs, const char *verb, uint64_t off, uint64_t len, MetaKind self) {
    State *s = bs->state<State>();
    if (const char *what = metadata_overlap(s, off, len, self))
        co_return co_await signal_corruption(bs, std::string("Preventing invalid ") + verb + " metadata (overlaps with " +
                                                     what + ")");
    co_return 0;
}

// The host byte range an L2 entry holds (empty for none).
void entry_range(State *s, uint64_t e, uint64_t *off, uint64_t *len) {
    *off = *len = 0;
    if (e & OFLAG_COMPRESSED) {
        uint64_t coff = e & s->coffset_mask;
        uint64_t nsec = ((e >> s->csize_shift) & s->csize_mask) + 1;
        *off = coff;
        *len = (coff & ~511ull) + nsec * 512 - coff;
        return;
    }
    if ((*off = e & L2E_OFFSET_MASK)) *len = s->cluster_size;
}

Task<int> check_release(BlockDriverState *bs, const std::vector<uint64_t> &old, const char *verb) {
    State *s = bs->state<State>();
    std::map<uint64_t, uint64_t> drops;  // cluster -> references dropped
    for (uint64_t e : old) {
        uint64_t off, len;
        entry_range(s, e, &off, &len);
        if (!len) continue;
        int r = co_await check_overlap(bs, verb, off, len, MetaKind::Data);
        if (r < 0) co_return r;
        for (uint64_t c = off >> s->cluster_bits; c <= (off + len - 1) >> s->cluster_bits; c++) drops[c]++;
    }
    for (auto [c, n] : drops) {
        uint64_t rc;
        int r = co_await get_refcount(bs, int64_t(c), &rc);
        if (r < 0) co_return r;
        if (rc < n) {
            // A reference the refcounts do not know: dropping it would free
            // a cluster something else may own.
            co_return co_await signal_corruption(bs, "Preventing invalid free of cluster " + hex(c << s->cluster_bits) +
                                                         " (refcount " + std::to_string(rc) + ", " + std::to_string(n) +
                                                         " reference" + (n > 1 ? "s" : "") + " dropped)");
        }
    }
    co_return 0;
}

}  // namespace mb::qcow2
