// The raw format: a pass-through window [offset, offset + size) on its file.
//
// When raw was chosen by probing rather than by the user, a write to the
// first sector that would make the image probe as another format is refused:
// otherwise a guest could turn its disk into, say, a qcow2 header naming a
// host file as backing file (QEMU's long-standing rule).
#include <cerrno>
#include <cstring>

#include "block/block_int.h"

namespace mb {

namespace {

struct RawState : NodeState {
    int64_t offset = 0;
    int64_t size = -1;  // -1: to the end of the file
};

// Bounds a request to the window; -EINVAL outside it when a size was given.
int raw_adjust(BlockDriverState *bs, int64_t *offset, int64_t bytes) {
    auto *s = bs->state<RawState>();
    if (s->size >= 0 && (*offset > s->size || bytes > s->size - *offset)) return -EINVAL;
    if (*offset > INT64_MAX - s->offset) return -EINVAL;
    *offset += s->offset;
    return 0;
}

Task<int> raw_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes, uint8_t *buf, int flags) {
    if (int r = raw_adjust(bs, &offset, bytes)) co_return r;
    co_return co_await bdrv_co_preadv(bs->file(), offset, bytes, buf, flags);
}

constexpr int64_t SECTOR = 512;

Task<int> raw_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes, const uint8_t *buf,
                         int flags) {
    if ((bs->open_flags & BDRV_O_PROBED) && offset < SECTOR) {
        // Build what sector 0 would become and probe it.
        uint8_t sector[SECTOR];
        int r = co_await bdrv_co_preadv(bs->file(), 0, SECTOR, sector, 0);
        if (r < 0) co_return r;
        int64_t n = std::min<int64_t>(bytes, SECTOR - offset);
        memcpy(sector + offset, buf, n);
        if (bdrv_probe_format(sector, SECTOR, bs->filename.c_str())) co_return -EPERM;
    }
    if (int r = raw_adjust(bs, &offset, bytes)) co_return r;
    co_return co_await bdrv_co_pwritev(bs->file(), offset, bytes, buf, flags);
}

Task<int> raw_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes, int flags) {
    if (int r = raw_adjust(bs, &offset, bytes)) co_return r;
    co_return co_await bdrv_co_pwrite_zeroes(bs->file(), offset, bytes, flags);
}

Task<int> raw_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes) {
    if (int r = raw_adjust(bs, &offset, bytes)) co_return r;
    co_return co_await bdrv_co_pdiscard(bs->file(), offset, bytes);
}

int64_t raw_getlength(BlockDriverState *bs) {
    auto *s = bs->state<RawState>();
    if (s->size >= 0) return s->size;
    int64_t len = bdrv_getlength(bs->file()->bs.get());
    if (len < 0) return len;
    return std::max<int64_t>(0, len - s->offset);
}

Task<int> raw_co_truncate(BlockDriverState *bs, int64_t size) {
    auto *s = bs->state<RawState>();
    // A window cannot move its file's end without changing its meaning.
    if (s->offset || s->size >= 0) co_return -ENOTSUP;
    co_return co_await bdrv_co_truncate(bs->file(), size);
}

Status raw_open(BlockDriverState *bs, qapi::OptionDict &opts) {
    auto child = bdrv_open_child(bs, opts, "file", ChildRole::File);
    if (!child.ok()) return child.take_status();
    auto s = std::make_unique<RawState>();
    s->offset = opts.get_int("offset").value_or(0);
    s->size = opts.get_int("size").value_or(-1);
    int64_t len = bdrv_getlength((*child)->bs.get());
    if (len < 0) return PosixError("Could not get the length of '" + bs->file()->bs->filename + "'", (int)-len);
    if (s->offset < 0) return Status::Error(EINVAL, "Invalid value '" + std::to_string(s->offset) + "' for parameter 'offset'");
    if (s->offset > len) {
        return Status::Error(EINVAL, "The offset " + std::to_string(s->offset) +
                                         " is past the end of the file (" + std::to_string(len) + " bytes)");
    }
    if (s->size >= 0 && s->size > len - s->offset) {
        return Status::Error(EINVAL, "The sum of offset (" + std::to_string(s->offset) + ") and size (" +
                                         std::to_string(s->size) + ") is past the end of the file (" +
                                         std::to_string(len) + " bytes)");
    }
    bs->request_alignment = (*child)->bs->request_alignment;
    bs->opaque = std::move(s);
    return Status::OK();
}

void raw_get_info(BlockDriverState *bs, FormatInfo *info) {
    auto *s = bs->state<RawState>();
    if (s->offset) info->fields.emplace_back("offset", std::to_string(s->offset));
    if (s->size >= 0) info->fields.emplace_back("size", std::to_string(s->size));
}

Status raw_create(const std::string &filename, int64_t size, qapi::OptionDict &opts) {
    // A protocol filename (rbd:pool/image) is created by its protocol.
    const BlockDriver *proto = bdrv_find_protocol(filename);
    return bdrv_create(proto ? proto->format_name : "file", filename, size, opts);
}

}  // namespace

extern const BlockDriver bdrv_raw;
const BlockDriver bdrv_raw = {
    .format_name = "raw",
    .is_protocol = false,
    .sharable_writes = true,
    .protocols = nullptr,
    .probe = nullptr,  // raw is what probing falls back to
    .open = raw_open,
    .close = nullptr,
    .child_perm = nullptr,
    .check_perm = nullptr,
    .set_perm = nullptr,
    .abort_perm_update = nullptr,
    .co_preadv = raw_co_preadv,
    .co_pwritev = raw_co_pwritev,
    .co_pwrite_zeroes = raw_co_pwrite_zeroes,
    .co_pdiscard = raw_co_pdiscard,
    .co_flush = nullptr,
    .co_truncate = raw_co_truncate,
    .co_block_status = nullptr,
    .getlength = raw_getlength,
    .get_allocated_size = nullptr,
    .get_info = raw_get_info,
    .create = raw_create,
    .reopen_rw = nullptr,
    .invalidate_cache = nullptr,
};

}  // namespace mb
