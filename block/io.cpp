// The generic request path: every request is checked here before it reaches
// a driver, so drivers can trust offsets, lengths and permissions.
#include <cerrno>
#include <cstring>
#include <vector>
#include <algorithm>
#include <cstdint>

#include "block/block_int.h"

namespace mb {

namespace {

// Bounds every request: no negative values, no overflow of offset + bytes.
int check_request(int64_t offset, int64_t bytes) {
    if (offset < 0 || bytes < 0) return -EINVAL;
    if (offset > INT64_MAX - bytes) return -EINVAL;
    return 0;
}

int check_write(BdrvChild *c, int64_t offset, int64_t bytes) {
    if (!c || !c->bs) return -ENOMEDIUM;
    BlockDriverState *bs = c->bs.get();
    if (int r = check_request(offset, bytes)) return r;
    if (bs->read_only) return -EPERM;
    if (bs->open_flags & BDRV_O_INACTIVE) return -EPERM;
    // The parent must have asked for write: the permission system is what
    // keeps the locks honest.
    if (!(c->perm.perm & BLK_PERM_WRITE)) return -EPERM;
    return 0;
}

}  // namespace

Task<int> bdrv_co_preadv(BdrvChild *c, int64_t offset, int64_t bytes, uint8_t *buf, int flags) {
    if (!c || !c->bs) co_return -ENOMEDIUM;
    if (int r = check_request(offset, bytes)) co_return r;
    if (bytes == 0) co_return 0;
    BlockDriverState *bs = c->bs.get();
    if (!bs->drv->co_preadv) co_return -ENOTSUP;
    co_return co_await bs->drv->co_preadv(bs, offset, bytes, buf, flags);
}

Task<int> bdrv_co_pwritev(BdrvChild *c, int64_t offset, int64_t bytes, const uint8_t *buf,
                          int flags) {
    if (int r = check_write(c, offset, bytes)) co_return r;
    if (bytes == 0) co_return 0;
    BlockDriverState *bs = c->bs.get();
    if (!bs->drv->co_pwritev) co_return -ENOTSUP;
    if ((flags & BDRV_REQ_WRITE_COMPRESSED) && !bs->drv->can_compress) co_return -ENOTSUP;
    if (bs->open_flags & BDRV_O_WRITETHROUGH) flags |= BDRV_REQ_FUA;
    if ((bs->open_flags & BDRV_O_DETECT_ZEROES) && buf[0] == 0 && !memcmp(buf, buf + 1, bytes - 1)) {
        // QEMU's detect-zeroes: the zeroes become a zero write (unmapped
        // where the driver can, with detect-zeroes=unmap).
        if (bs->open_flags & BDRV_O_DETECT_ZEROES_UNMAP) flags |= BDRV_REQ_MAY_UNMAP;
        int r = co_await bdrv_co_pwrite_zeroes(c, offset, bytes, flags);
        // The same durability as the write it replaces.
        if (r == 0 && (flags & BDRV_REQ_FUA)) r = co_await bdrv_co_flush(bs);
        co_return r;
    }
    int r = co_await bs->drv->co_pwritev(bs, offset, bytes, buf, flags);
    if (r == 0 && (flags & BDRV_REQ_FUA) && !bs->drv->is_protocol) r = co_await bdrv_co_flush(bs);
    co_return r;
}

Task<int> bdrv_co_pwrite_zeroes(BdrvChild *c, int64_t offset, int64_t bytes, int flags) {
    if (int r = check_write(c, offset, bytes)) co_return r;
    if (bytes == 0) co_return 0;
    BlockDriverState *bs = c->bs.get();
    if (bs->drv->co_pwrite_zeroes) {
        int r = co_await bs->drv->co_pwrite_zeroes(bs, offset, bytes, flags);
        if (r != -ENOTSUP) co_return r;
    }
    // Fallback: write zeroes from a bounded buffer (unless the caller only
    // wants it done cheaply, as qcow2's preallocation).
    if (!bs->drv->co_pwritev || (flags & BDRV_REQ_NO_FALLBACK)) co_return -ENOTSUP;
    const int64_t chunk = std::min<int64_t>(bytes, 1 << 20);
    std::vector<uint8_t> zeroes(chunk, 0);
    while (bytes > 0) {
        int64_t n = std::min(bytes, chunk);
        int r = co_await bs->drv->co_pwritev(bs, offset, n, zeroes.data(), flags & BDRV_REQ_FUA);
        if (r < 0) co_return r;
        offset += n;
        bytes -= n;
    }
    co_return 0;
}

Task<int> bdrv_co_pdiscard(BdrvChild *c, int64_t offset, int64_t bytes) {
    if (int r = check_write(c, offset, bytes)) co_return r;
    BlockDriverState *bs = c->bs.get();
    // Discard is a hint: a driver without it does nothing, successfully,
    // and so does a node opened with QEMU's discard=ignore.
    if (bytes == 0 || !bs->drv->co_pdiscard || (bs->open_flags & BDRV_O_DISCARD_IGNORE)) co_return 0;
    co_return co_await bs->drv->co_pdiscard(bs, offset, bytes);
}

Task<int> bdrv_co_flush(BlockDriverState *bs) {
    if (!bs || !bs->drv) co_return -ENOMEDIUM;
    if (bs->read_only || (bs->open_flags & BDRV_O_INACTIVE)) co_return 0;
    if (bs->drv->co_flush) {
        int r = co_await bs->drv->co_flush(bs);
        if (r < 0) co_return r;
    }
    // Formats flush their own metadata, then everything below them.
    for (auto &c : bs->children) {
        int r = co_await bdrv_co_flush(c->bs.get());
        if (r < 0) co_return r;
    }
    co_return 0;
}

Task<int> bdrv_co_truncate(BdrvChild *c, int64_t size) {
    if (!c || !c->bs) co_return -ENOMEDIUM;
    if (size < 0) co_return -EINVAL;
    BlockDriverState *bs = c->bs.get();
    if (bs->read_only || (bs->open_flags & BDRV_O_INACTIVE)) co_return -EPERM;
    if (!(c->perm.perm & BLK_PERM_RESIZE)) co_return -EPERM;
    if (!bs->drv->co_truncate) co_return -ENOTSUP;
    co_return co_await bs->drv->co_truncate(bs, size);
}

void bdrv_debug_event(BdrvChild *c, const char *event) {
    for (BlockDriverState *bs = c ? c->bs.get() : nullptr; bs && bs->drv;) {
        if (bs->drv->debug_event) return bs->drv->debug_event(bs, event);
        BdrvChild *f = bs->file();
        bs = f ? f->bs.get() : nullptr;
    }
}

Task<int> bdrv_co_layer_status(BlockDriverState *bs, int64_t offset, int64_t bytes, int64_t *pnum) {
    if (!bs->drv->co_block_status) {
        *pnum = bytes;
        co_return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    }
    int64_t map = 0;
    BlockDriverState *file = nullptr;
    int r = co_await bs->drv->co_block_status(bs, offset, bytes, pnum, &map, &file);
    if (r >= 0 && (*pnum <= 0 || *pnum > bytes)) co_return -EIO;  // a driver bug, not a loop
    co_return r;
}

int64_t bdrv_getlength(BlockDriverState *bs) {
    if (!bs || !bs->drv) return -ENOMEDIUM;
    if (!bs->drv->getlength) return -ENOTSUP;
    return bs->drv->getlength(bs);
}

}  // namespace mb
