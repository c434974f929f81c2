// qcow2 compressed writes (BDRV_REQ_WRITE_COMPRESSED, for convert -c): each
// guest cluster is deflated (raw deflate, 4 KiB window: what QEMU's zlib
// compression type reads) and packed byte by byte after the previous one,
// as QEMU packs them.  A descriptor covers whole 512-byte sectors, and
// every host cluster it touches holds one reference for it (qemu-img
// check's rule).  Only unallocated clusters may be written compressed, as
// in QEMU; a cluster that does not shrink is written as a normal one.
#include <zlib.h>

#include <cerrno>
#include <cstring>

#include "block/drivers/qcow2.h"
#include "block/warn.h"

namespace mb::qcow2 {

namespace {

// Deflates `in` (one cluster) into `out`; the compressed length, or 0 if
// it would not be smaller than the cluster.
size_t deflate_cluster(const uint8_t *in, size_t len, std::vector<uint8_t> &out) {
    out.resize(len);
    z_stream z{};
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK) return 0;
    z.next_in = const_cast<uint8_t *>(in);
    z.avail_in = uInt(len);
    z.next_out = out.data();
    z.avail_out = uInt(len);
    int r = deflate(&z, Z_FINISH);
    size_t n = len - z.avail_out;
    deflateEnd(&z);
    return r == Z_STREAM_END ? n : 0;
}

// Writes one guest cluster compressed.  Caller holds s->lock.
Task<int> write_one(BlockDriverState *bs, int64_t guest, const uint8_t *data) {
    State *s = bs->state<State>();
    const int64_t cs = s->cluster_size;
    const uint64_t l2_entries = uint64_t(1) << s->l2_bits;
    std::vector<uint8_t> z;
    size_t zlen = deflate_cluster(data, cs, z);
    // Past what a descriptor can describe (or no gain): a normal cluster.
    const uint64_t max_sectors = s->csize_mask + 1;
    if (!zlen || zlen >= size_t(cs) || (zlen + 511) / 512 + 1 > max_sectors) co_return 1;

    TableCache::Table t;
    uint64_t l2_off = 0;
    int r = co_await ensure_l2_for(bs, guest, &t, &l2_off);
    if (r < 0) co_return r;
    uint64_t l2_idx = (uint64_t(guest) >> s->cluster_bits) & (l2_entries - 1);
    uint64_t old = be64(t->data() + l2_idx * 8);
    if (old & ~OFLAG_ZERO) {
        warn_report("qcow2: a compressed write needs an unallocated cluster; guest offset " + hex(guest) + " in '" +
                    bs->file()->bs->filename + "' is allocated");
        co_return -EIO;
    }
    // Place it after the previous compressed cluster if it fits in that
    // host cluster (or runs on into the next one, when that is free and
    // adjacent), else at the start of new clusters.
    uint64_t coff = s->comp_next;
    const uint64_t ccs = uint64_t(cs);
    bool shares = coff && coff % ccs;
    uint64_t end = coff + zlen;
    if (shares && end > (coff / ccs + 1) * ccs && uint64_t(s->free_index) * ccs != (coff / ccs + 1) * ccs) shares = false;
    int64_t first_new, n_new;
    if (shares) {
        first_new = int64_t((coff / ccs + 1));
        n_new = end > uint64_t(first_new) * ccs ? int64_t((end - first_new * ccs + ccs - 1) / ccs) : 0;
    } else {
        coff = 0;
        n_new = int64_t((zlen + ccs - 1) / ccs);
    }
    // alloc_clusters and update_refcount(+1) declare "refcounts before
    // L2" themselves (update_range), right before the cache changes.
    if (n_new) {
        int64_t host = co_await alloc_clusters(bs, n_new);
        if (host < 0) co_return int(host);
        if (!shares) coff = uint64_t(host);
    }
    // The shared cluster gets a reference for this descriptor too.
    if (shares && (r = co_await update_refcount(bs, int64_t(coff / ccs), 1)) < 0) co_return r;
    if ((r = co_await check_overlap(bs, "write on", coff, zlen, MetaKind::Data)) < 0) co_return r;
    bdrv_debug_event(bs->file(), "write_compressed");
    if ((r = co_await bdrv_co_pwritev(bs->file(), coff, zlen, z.data())) < 0) co_return r;
    uint64_t nsec = ((coff & 511) + zlen + 511) / 512;
    put_be64(t->data() + l2_idx * 8, OFLAG_COMPRESSED | ((nsec - 1) << s->csize_shift) | coff);
    l2_points_at_new_data(s, l2_off, t);
    s->comp_next = coff + zlen;
    co_return 0;
}

}  // namespace

Task<int> write_compressed(BlockDriverState *bs, int64_t offset, int64_t bytes, const uint8_t *buf) {
    State *s = bs->state<State>();
    const int64_t cs = s->cluster_size;
    // Whole clusters, but for the image's last one.
    if (offset % cs || (bytes % cs && uint64_t(offset + bytes - 1) / cs != (s->h().size - 1) / cs)) co_return -EINVAL;
    std::vector<uint8_t> last;
    for (int64_t done = 0; done < bytes; done += cs) {
        const uint8_t *p = buf + done;
        int64_t n = std::min(cs, bytes - done);
        if (n < cs) {
            // The image's last, partial cluster: compressed whole.
            last.assign(cs, 0);
            memcpy(last.data(), p, n);
            p = last.data();
        }
        co_await s->lock.lock();
        int r;
        {
            CoLockGuard g(s->lock);
            if (co_await wait_for_overlapping(s, uint64_t(offset + done) / cs, 1)) {
                done -= cs;  // look again
                continue;
            }
            r = co_await prepare_write(bs);
            if (r == 0) r = co_await write_one(bs, offset + done, p);
        }
        if (r == 1) r = co_await co_pwritev(bs, offset + done, n, buf + done, 0);
        if (r < 0) co_return r;
    }
    co_return 0;
}

}  // namespace mb::qcow2
