// Reopen (block/reopen.h).  In the manner of commit (block/commit.cpp):
//
//   1. Going read-write, the protocol nodes get a read-write fd first (the
//      locks move to it, never free); going read-only, the layer is flushed
//      first.
//   2. The new flags and lock mode are set on the layer's nodes and the
//      root edge asks for the permissions the lock table gives them: one
//      transaction over the whole graph.  If anyone is in the way it fails
//      naming them, the flags are put back and the fds reopened as they
//      were: every lock byte is as before.
//   3. Going read-only, the fds become read-only once the write locks are
//      gone (a lock moves between fds only in its weaker form).
#include "block/reopen.h"

#include <cerrno>
#include <vector>

#include "block/aio.h"

namespace mb {

namespace {

struct Saved {
    BlockDriverState *bs;
    bool read_only;
    int open_flags;
    qapi::LockMode lock;
};

// The top node and every node under it through file edges.
void layer_nodes(BlockDriverState *bs, std::vector<BlockDriverState *> &out) {
    out.push_back(bs);
    for (auto &c : bs->children)
        if (c->role == ChildRole::File) layer_nodes(c->bs.get(), out);
}

Status reopen_fds(const std::vector<BlockDriverState *> &nodes, bool writable) {
    std::vector<BlockDriverState *> done;
    for (auto *n : nodes) {
        if (!n->drv->is_protocol) continue;
        Status st = n->drv->reopen_rw
                        ? n->drv->reopen_rw(n, writable)
                        : Status::Error(ENOTSUP, "Driver '" + std::string(n->drv->format_name) +
                                                     "' cannot reopen " + bdrv_describe(n) +
                                                     (writable ? " read-write" : " read-only"));
        if (!st.ok()) {
            for (auto *d : done) (void)d->drv->reopen_rw(d, !writable);
            return st;
        }
        done.push_back(n);
    }
    return Status::OK();
}

}  // namespace

Status bdrv_reopen(BdrvChild *root, const ReopenParams &p) {
    BlockDriverState *top = root->bs.get();
    if (!top) return Status::Error(ENOMEDIUM, "The drive has no image");
    const std::string what = "Cannot reopen '" + top->filename + "'";
    if (bdrv_is_inactive(top)) return Status::Error(EPERM, what + ": the drive is inactive");
    std::vector<BlockDriverState *> nodes;
    layer_nodes(top, nodes);

    const bool make_rw = p.read_only && !*p.read_only && top->read_only;
    const bool make_ro = p.read_only && *p.read_only && !top->read_only;
    if (p.lock && (*p.lock == qapi::LockMode::Off) != (top->lock_mode == qapi::LockMode::Off)) {
        // The file nodes decide at open whether they have a lock at all.
        return Status::Error(EINVAL, what + ": the lock mode cannot change to or from 'off'",
                             "Valid values here: shared, auto, exclusive");
    }
    if (make_rw && !top->drv->co_pwritev)
        return Status::Error(ENOTSUP, what + ": the '" + std::string(top->drv->format_name) +
                                          "' driver cannot write");

    if (make_ro) {
        int r = sync_wait(bdrv_co_flush(top));
        if (r < 0) return PosixError(what + " read-only: flush failed", -r);
    }
    std::vector<Saved> saved;
    for (auto *n : nodes) saved.push_back({n, n->read_only, n->open_flags, n->lock_mode});
    auto restore = [&]() {
        for (auto &s : saved) {
            s.bs->read_only = s.read_only;
            s.bs->open_flags = s.open_flags;
            s.bs->lock_mode = s.lock;
        }
    };
    if (make_rw) {
        Status st = reopen_fds(nodes, true);
        if (!st.ok()) return st.prefix(what + " read-write");
    }
    for (auto *n : nodes) {
        if (make_rw) {
            n->read_only = false;
            n->open_flags |= BDRV_O_RDWR;
        } else if (make_ro) {
            n->read_only = true;
            n->open_flags &= ~BDRV_O_RDWR;
        }
        if (p.lock) n->lock_mode = *p.lock;
    }
    auto perms = bdrv_table_perms(top);
    Status st = perms.ok() ? bdrv_child_try_set_perm(root, *perms) : perms.take_status();
    if (!st.ok()) {
        restore();
        if (make_rw) (void)reopen_fds(nodes, false);
        return st.prefix(what);
    }
    if (make_ro) {
        // The write locks are gone; a read-only fd now.  If that fails the
        // node keeps its read-write fd, harmlessly: nothing writes through it.
        (void)reopen_fds(nodes, false);
    }
    return Status::OK();
}

}  // namespace mb
