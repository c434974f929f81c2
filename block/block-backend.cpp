#include "miniblock/block.h"

#include <cerrno>

#include "block/aio.h"
#include "block/block_int.h"

namespace mb {

namespace {
int next_drive_id = 0;
}

// A user's request must lie within the image, as QEMU's
// blk_check_byte_request demands: a read past the end is an error, and a
// write there would grow the file without the resize permission the locks
// were taken for.  Only image creation, which writes a new file from
// nothing, may write beyond the end (QEMU's BLK_ALLOW_WRITE_BEYOND_EOF).
int BlockBackend::check_range(int64_t offset, int64_t bytes, bool write) {
    if (!root_) return -ENOMEDIUM;
    if (offset < 0 || bytes < 0 || offset > INT64_MAX - bytes) return -EINVAL;
    if (write && allow_write_beyond_eof_) return 0;
    // The length is asked of the driver (an fstat for files) only when a
    // request goes beyond the last length seen: the common request costs
    // no system call, and an image grown by someone else is still seen.
    auto fits = [&](int64_t len) { return offset <= len && bytes <= len - offset; };
    if (length_seen_ >= 0 && fits(length_seen_)) return 0;
    int64_t len = bdrv_getlength(bs());
    if (len < 0) return (int)len;
    length_seen_ = len;
    return fits(len) ? 0 : -EIO;
}

Result<std::unique_ptr<BlockBackend>> BlockBackend::open(std::string_view spec) {
    auto opts = qapi::parse_drive_options(spec);
    if (!opts.ok()) return opts.take_status();
    return open(*opts);
}

Result<std::unique_ptr<BlockBackend>> BlockBackend::open(const qapi::OptionDict &opts,
                                                         std::string name) {
    if (name.empty()) name = "drive" + std::to_string(next_drive_id++);
    InheritedOptions inh;
    inh.node_name = name;
    auto node = bdrv_open(opts, inh);
    if (!node.ok()) return node.take_status();
    auto perms = bdrv_table_perms(node->get());
    if (!perms.ok()) return perms.take_status();

    std::unique_ptr<BlockBackend> blk(new BlockBackend());
    blk->name_ = std::move(name);
    blk->root_ = bdrv_attach_child(nullptr, std::move(*node), "root", ChildRole::File,
                                   "drive '" + blk->name_ + "'");
    // The one transaction that takes every lock of the graph.
    Status st = bdrv_child_try_set_perm(blk->root_, *perms);
    if (!st.ok()) {
        // Nothing was locked and nothing was written: just let go.
        delete blk->root_;
        blk->root_ = nullptr;
        return st;
    }
    return blk;
}

BlockBackend::~BlockBackend() {
    if (!root_) return;
    if (!read_only()) (void)flush();
    BdrvChild *c = root_;
    root_ = nullptr;
    BdrvRef node = c->bs;
    delete c;  // the node loses its root edge...
    Status st = bdrv_refresh_perms(node.get());  // ...and releases what it no longer needs
    (void)st;
}

Status BlockBackend::activate() {
    if (!bs()) return Status::Error(ENOMEDIUM, "Drive '" + name_ + "' has no image");
    if (!inactive()) return Status::OK();
    length_seen_ = -1;  // the source may have resized the image meanwhile
    Status st = bdrv_activate(bs());
    return st.ok() ? st : st.prefix("Cannot activate drive '" + name_ + "'");
}

Status BlockBackend::inactivate() {
    if (!bs()) return Status::Error(ENOMEDIUM, "Drive '" + name_ + "' has no image");
    if (inactive()) return Status::OK();
    Status st = bdrv_inactivate(bs());
    return st.ok() ? st : st.prefix("Cannot inactivate drive '" + name_ + "'");
}

Status BlockBackend::commit(const std::string &base, bool check_only,
                            void (*progress)(int64_t, int64_t, void *), void *opaque) {
    if (!root_) return Status::Error(ENOMEDIUM, "Drive '" + name_ + "' has no image");
    CommitParams p;
    p.base = base;
    p.check_only = check_only;
    p.progress = progress;
    p.progress_opaque = opaque;
    return bdrv_commit(root_, p);
}

bool BlockBackend::inactive() const { return bs() && bdrv_is_inactive(bs()); }

BlockDriverState *BlockBackend::bs() const { return root_ ? root_->bs.get() : nullptr; }
bool BlockBackend::read_only() const { return !bs() || bs()->read_only; }

Task<int> BlockBackend::co_pread(int64_t offset, int64_t bytes, void *buf) {
    if (int r = check_range(offset, bytes, false)) co_return r;
    co_return co_await bdrv_co_preadv(root_, offset, bytes, static_cast<uint8_t *>(buf), 0);
}
Task<int> BlockBackend::co_pwrite(int64_t offset, int64_t bytes, const void *buf, int flags) {
    if (int r = check_range(offset, bytes, true)) co_return r;
    co_return co_await bdrv_co_pwritev(root_, offset, bytes, static_cast<const uint8_t *>(buf), flags);
}
Task<int> BlockBackend::co_flush() { return bdrv_co_flush(bs()); }

int BlockBackend::pread(int64_t offset, int64_t bytes, void *buf) {
    return sync_wait(co_pread(offset, bytes, buf));
}
int BlockBackend::pwrite(int64_t offset, int64_t bytes, const void *buf, int flags) {
    return sync_wait(co_pwrite(offset, bytes, buf, flags));
}
int BlockBackend::pwrite_zeroes(int64_t offset, int64_t bytes, int flags) {
    if (int r = check_range(offset, bytes, true)) return r;
    return sync_wait(bdrv_co_pwrite_zeroes(root_, offset, bytes, flags));
}
int BlockBackend::pdiscard(int64_t offset, int64_t bytes) {
    if (int r = check_range(offset, bytes, true)) return r;
    return sync_wait(bdrv_co_pdiscard(root_, offset, bytes));
}
int BlockBackend::flush() { return sync_wait(co_flush()); }
int BlockBackend::truncate(int64_t size) {
    length_seen_ = -1;  // asked again at the next request
    return sync_wait(bdrv_co_truncate(root_, size));
}
int64_t BlockBackend::length() { return bdrv_getlength(bs()); }

}  // namespace mb
