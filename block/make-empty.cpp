// Emptying an overlay after commit (qemu-img commit's default): every
// cluster of the top layer is dropped so that reads fall through to the
// backing file again, which now holds the same data.
//
// Done with the format's own discard, not with its internals: a format
// discards a range of an image *with* a backing file by marking it "reads
// as zeroes" (dropping it would let the backing file show through, which a
// guest's discard must not do).  Here showing the backing file is the
// point, so the backing edge is set aside while the discard runs; the format
// then drops the clusters outright, as it does for an image without one.
#include <algorithm>
#include <cerrno>

#include "block/aio.h"
#include "block/block_int.h"

namespace mb {

Status bdrv_make_empty(BlockDriverState *bs) {
    if (!bs->writable()) return Status::Error(EPERM, "Cannot empty '" + bs->filename + "': the image is read-only");
    if (!bs->drv->co_pdiscard || !bs->drv->co_block_status) {
        return Status::Error(ENOTSUP, "Cannot empty '" + bs->filename + "': driver '" +
                                          bs->drv->format_name + "' cannot drop its data");
    }
    int64_t len = bdrv_getlength(bs);
    if (len < 0) return PosixError("Could not get the length of '" + bs->filename + "'", (int)-len);
    auto &ch = bs->children;
    auto it = std::find_if(ch.begin(), ch.end(), [](auto &c) { return c->role == ChildRole::Backing; });
    std::unique_ptr<BdrvChild> backing;
    if (it != ch.end()) {
        backing = std::move(*it);
        ch.erase(it);
    }
    int r = sync_wait(bs->drv->co_pdiscard(bs, 0, len));
    if (backing) ch.push_back(std::move(backing));
    if (r == 0) r = sync_wait(bdrv_co_flush(bs));
    if (r < 0) return PosixError("Could not empty '" + bs->filename + "'", -r);
    return Status::OK();
}

}  // namespace mb
