// Commit: copy what an overlay (and the layers between it and the base)
// defines into the base, under a temporary exclusive lock on the base.
//
// The base is normally a read-only backing file that keeps writers out
// (DESIGN section 4).  Commit, in this order:
//
//   1. The base's protocol nodes are reopened read-write (a new fd; the
//      locks move to it first, so they are never free) and the base and
//      its file nodes become writable; the base's own backing file (the
//      grandparent) is not touched and keeps its read lock.
//   2. One permission transaction raises the edge into the base to "use
//      consistent read, write (+ resize if the base must grow); forbid all"
//      and, for an intermediate commit (-b naming a deeper base), lowers the
//      edges into
//      the nodes in between to "forbid consistent read" (their content
//      changes under any reader while the base catches up, as in QEMU).
//      The edges are pinned for the duration, so no refresh elsewhere in
//      the graph recomputes them.  If anyone else uses the base (another
//      overlay, a reader, a QEMU process, another node of this process) the
//      transaction fails naming them and every lock byte is as before.
//      If it fails, the files are reopened read-only again.
//   3. Every range allocated in a layer above the base is read through the
//      top and written into the base; the base grows if the top is larger.
//   4. The base is flushed (fdatasync).
//   5. Drop back: edges unpinned and set to their previous values in one
//      transaction (which only releases bytes, so it cannot fail for locking
//      reasons), then the file nodes reopened read-only, flags restored.
//      Locks move between fds only in their weaker form (before the raise,
//      after the drop), which a whole-file F_WRLCK requires.
//
// A failure at 3 or 4 (an I/O error) still runs 5: the locks are exactly as
// before, and the overlay was only read, so it is
// intact and still defines the guest's view.  The overlay is never emptied
// after commit (qemu-img's default); it stays a valid, now redundant, layer.
#include <algorithm>
#include <cerrno>
#include <vector>

#include "block/aio.h"
#include "block/block_int.h"
#include "block/file-id.h"

namespace mb {

namespace {

struct EdgeState {
    BdrvChild *c;
    PermPair perm;
    bool pinned;
};

struct NodeFlags {
    BlockDriverState *bs;
    bool read_only;
    int open_flags;
};

bool same_file(const std::string &a, const std::string &b) {
    std::optional<FileId> ia = file_id(a), ib = file_id(b);
    if (!ia || !ib) return a == b;
    return *ia == *ib;
}

// The backing edges from top down to the base: edges.back()->bs is the base.
Result<std::vector<BdrvChild *>> commit_chain(BlockDriverState *top, const std::string &base) {
    std::vector<BdrvChild *> edges;
    if (!top->backing()) return Status::Error(EINVAL, "Image '" + top->filename + "' has no backing file");
    for (BdrvChild *c = top->backing(); c; c = c->bs->backing()) {
        edges.push_back(c);
        if (base.empty()) return edges;
        const BlockDriverState *b = c->bs.get();
        if (b->node_name == base || b->filename == base || same_file(b->filename, base)) return edges;
    }
    return Status::Error(EINVAL, "'" + base + "' is not in the backing chain of '" + top->filename + "'");
}

// The base and the nodes that hold its data (its file children, not its
// backing chain).
std::vector<BlockDriverState *> base_nodes(BlockDriverState *base) {
    std::vector<BlockDriverState *> v{base};
    for (size_t i = 0; i < v.size(); i++)
        for (auto &c : v[i]->children)
            if (c->role == ChildRole::File) v.push_back(c->bs.get());
    return v;
}

// Sets every edge to its value in one transaction (pinned or not).
Status set_edges(BlockDriverState *top, const std::vector<std::pair<BdrvChild *, PermPair>> &e,
                 bool pin) {
    std::vector<EdgeState> saved;
    for (auto &[c, p] : e) {
        saved.push_back({c, c->perm, c->pinned});
        c->pending = p;
        c->has_pending = true;
        c->pinned = true;  // so that the refresh keeps the value given here
    }
    Status st = bdrv_refresh_perms(top);
    for (auto &s : saved) {
        s.c->has_pending = false;
        s.c->pinned = st.ok() ? pin : s.pinned;
    }
    return st;
}

Status reopen_files(const std::vector<BlockDriverState *> &nodes, bool writable) {
    std::vector<BlockDriverState *> done;
    for (auto *n : nodes) {
        if (!n->drv->is_protocol) continue;
        if (!n->drv->reopen_rw) {
            Status st = Status::Error(ENOTSUP, "Driver '" + std::string(n->drv->format_name) +
                                                   "' cannot reopen " + bdrv_describe(n) +
                                                   " read-write for commit");
            for (auto *d : done) (void)d->drv->reopen_rw(d, !writable);
            return st;
        }
        Status st = n->drv->reopen_rw(n, writable);
        if (!st.ok()) {
            for (auto *d : done) (void)d->drv->reopen_rw(d, !writable);
            return st;
        }
        done.push_back(n);
    }
    return Status::OK();
}

constexpr int64_t COPY_CHUNK = 8 << 20;

Task<int> copy_allocated(BdrvChild *root, const std::vector<BlockDriverState *> &above,
                         BdrvChild *base_edge, int64_t len, const CommitParams &p) {
    std::vector<uint8_t> buf(COPY_CHUNK);
    for (int64_t off = 0; off < len;) {
        int64_t n = std::min(COPY_CHUNK, len - off);
        bool allocated = false;
        for (auto *layer : above) {
            int64_t pnum = n;
            int r = co_await bdrv_co_layer_status(layer, off, n, &pnum);
            if (r < 0) co_return r;
            n = std::min(n, pnum);
            if (r & BDRV_BLOCK_ALLOCATED) allocated = true;
        }
        if (allocated) {
            // Through the top: the data the guest sees, whichever layer has it.
            int r = co_await bdrv_co_preadv(root, off, n, buf.data());
            if (r < 0) co_return r;
            r = co_await bdrv_co_pwritev(base_edge, off, n, buf.data());
            if (r < 0) co_return r;
        }
        off += n;
        if (p.progress) p.progress(off, len, p.progress_opaque);
    }
    co_return 0;
}

}  // namespace

Status bdrv_commit(BdrvChild *root, const CommitParams &p) {
    BlockDriverState *top = root->bs.get();
    if (!top->writable() && !p.check_only) {
        // Not strictly needed to write the base, but a read-only or inactive
        // overlay says its user does not expect the chain to change.
        return Status::Error(EPERM, "Cannot commit '" + top->filename + "': the image is " +
                                        (top->read_only ? "read-only" : "inactive"));
    }
    auto chain = commit_chain(top, p.base);
    if (!chain.ok()) return chain.take_status();
    BdrvChild *base_edge = chain->back();
    BlockDriverState *base = base_edge->bs.get();
    if (base->open_flags & BDRV_O_INACTIVE)
        return Status::Error(EPERM, "Cannot commit into inactive " + bdrv_describe(base));

    int64_t len = bdrv_getlength(top);
    if (len < 0) return PosixError("Could not get the length of '" + top->filename + "'", (int)-len);
    int64_t base_len = bdrv_getlength(base);
    if (base_len < 0) return PosixError("Could not get the length of '" + base->filename + "'", (int)-base_len);

    // The permissions the lock takes.  Resize only when the base must grow.
    std::vector<std::pair<BdrvChild *, PermPair>> raise, restore;
    const uint32_t base_use = BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE |
                              (base_len < len ? BLK_PERM_RESIZE : 0u);
    for (BdrvChild *c : *chain) {
        restore.emplace_back(c, c->perm);
        if (c == base_edge) {
            raise.emplace_back(c, PermPair{base_use, 0});
        } else {
            raise.emplace_back(c, PermPair{c->perm.perm, c->perm.shared & ~BLK_PERM_CONSISTENT_READ});
        }
    }
    std::vector<bool> was_pinned;
    for (BdrvChild *c : *chain) was_pinned.push_back(c->pinned);
    auto drop_perms = [&]() {
        Status r = set_edges(top, restore, false);
        for (size_t i = 0; i < chain->size(); i++) (*chain)[i]->pinned = was_pinned[i];
        (void)r;  // fewer permissions: only releases
    };
    if (p.check_only) {
        MB_TRY(set_edges(top, raise, true).prefix("Cannot commit '" + top->filename + "' into '" +
                                                  base->filename +
                                                  "': the base cannot be locked for writing"));
        drop_perms();
        return Status::OK();
    }

    // 1. The base becomes writable: reopened before the locks are raised
    // and after they drop back, so that a lock is only ever moved between
    // fds in its weaker form (a whole-file F_WRLCK cannot move at all).
    std::vector<BlockDriverState *> nodes = base_nodes(base);
    std::vector<NodeFlags> flags;
    for (auto *n : nodes) flags.push_back({n, n->read_only, n->open_flags});
    Status st = reopen_files(nodes, true);
    if (!st.ok()) return st.prefix("Cannot commit into '" + base->filename + "'");
    for (auto *n : nodes) {
        n->read_only = false;
        n->open_flags |= BDRV_O_RDWR;
    }
    auto restore_flags = [&]() {
        (void)reopen_files(nodes, false);
        for (auto &f : flags) {
            f.bs->read_only = f.read_only;
            f.bs->open_flags = f.open_flags;
        }
    };

    // 2. The lock: one transaction.
    st = set_edges(top, raise, true);
    if (!st.ok()) {
        restore_flags();
        return st.prefix("Cannot commit '" + top->filename + "' into '" + base->filename +
                         "': the base cannot be locked for writing");
    }

    // 3. and 4. Copy, then flush.
    std::vector<BlockDriverState *> above;
    above.push_back(top);
    for (size_t i = 0; i + 1 < chain->size(); i++) above.push_back((*chain)[i]->bs.get());
    int r = 0;
    if (base_len < len) r = sync_wait(bdrv_co_truncate(base_edge, len));
    if (r == 0) r = sync_wait(copy_allocated(root, above, base_edge, len, p));
    if (r == 0) r = sync_wait(bdrv_co_flush(base));

    // 5. Drop back, whatever happened.
    drop_perms();
    restore_flags();
    if (r < 0) {
        return PosixError("Commit of '" + top->filename + "' into '" + base->filename +
                              "' failed; the overlay is unchanged",
                          -r);
    }
    return Status::OK();
}

}  // namespace mb
