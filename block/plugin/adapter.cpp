// The BlockDriver a plugin driver is seen through.  Everything the plugin
// returns is checked here before the core relies on it.
#include <cerrno>
#include <chrono>
#include <thread>

#include "block/aio.h"
#include "block/plugin/plugin.h"
#include "block/warn.h"

namespace mb {

namespace {

// A plugin protocol without lock hooks takes no locks: like nbd, it opens
// with lock=auto ("nothing to lock") and lock=off, and refuses a mode that
// promises exclusion it cannot give.
Status check_lockless(BlockDriverState *bs, const PluginDriver *pd, const qapi::OptionDict &opts) {
    if (pd->c.kind != MBD_PROTOCOL || pd->lock_hooks) return Status::OK();
    if (bs->lock_mode != qapi::LockMode::Shared && bs->lock_mode != qapi::LockMode::Exclusive)
        return Status::OK();
    std::string mode = bs->lock_mode == qapi::LockMode::Shared ? "shared" : "exclusive";
    // The driver may say why it has no locks and who locks instead (nbd:
    // the protocol has none, the server locks).
    const char *why = pd->c.no_locks_reason ? pd->c.no_locks_reason : "it implements no lock hooks";
    const char *who = pd->c.no_locks_hint ? pd->c.no_locks_hint : "Nothing takes locks for it";
    Status st = Status::Error(EINVAL, "lock=" + mode + " cannot be honoured by driver '" + pd->name +
                                          "': " + why);
    if (!opts.has("lock"))
        st.add_detail("The lock mode was given to a node above this " + pd->name +
                      " node and applies to it too");
    st.add_detail(std::string(who) + "; use lock=auto (nothing to lock) or lock=off");
    return st;
}

Status plugin_open(BlockDriverState *bs, qapi::OptionDict &opts) {
    const PluginDriver *pd = plugin_of(bs->drv);
    plugin_note_loop_thread();
    MB_TRY(check_lockless(bs, pd, opts));
    auto node = std::make_unique<PluginNode>();
    node->pd = pd;
    // The driver's default, when it has a timeout of its own to come first.
    if (pd->c.default_request_timeout_s) node->timeout_ns = int64_t(pd->c.default_request_timeout_s) * 1'000'000'000;
    if (auto t = opts.get_int("request-timeout")) {
        if (*t < 1 || *t > 3600) {
            return Status::Error(EINVAL, "Invalid value '" + std::to_string(*t) + "' for parameter '" +
                                             bdrv_option_name(bs, "request-timeout") + "'",
                                 "Expected seconds from 1 to 3600");
        }
        node->timeout_ns = *t * 1'000'000'000;
    }
    node->locks = pd->lock_hooks && bs->lock_mode != qapi::LockMode::Off;
    if (pd->c.kind == MBD_PROTOCOL && bs->filename.empty()) bs->filename = pd->name + "://";
    PluginNode *n = node.get();
    bs->opaque = std::move(node);
    PluginOpenCtx ctx{bs, &opts, pd};
    plugin_error_clear();
    void *h = pd->c.open(reinterpret_cast<mbd_node *>(&ctx));
    if (!h) {
        bs->opaque.reset();
        return plugin_error_status(pd, "Driver '" + pd->name + "' could not open " + bdrv_describe(bs), EIO);
    }
    n->handle = h;
    n->core = std::make_shared<PluginHandle>();
    n->core->pd = pd;
    n->core->handle = h;
    n->core->locks = n->locks;
    if (pd->c.kind != MBD_PROTOCOL && !bs->file()) {
        bs->opaque.reset();  // closes h
        return Status::Error(EINVAL, "Driver '" + pd->name + "' opened no file child",
                             "A format or filter opens its child with mbd_open_child(node, \"file\", MBD_CHILD_FILE)");
    }
    return Status::OK();
}

// Every request the caller may still wait for has finished (the drive was
// drained); what is left are requests that timed out.  Those of the
// blocking models own the plugin's handle until a worker has dropped them
// unstarted or their call has returned, so the plugin is closed now, or by
// that worker afterwards (PluginHandle).  An async driver has no call
// inside it: it is closed now, its timed-out requests still its own.
//
// A worker still inside the plugin may be waiting for child I/O it
// started on the loop: that I/O uses the children, which go right after
// this, so it is finished first (bounded: the children's own requests
// complete or time out), and any later child I/O of a worker fails.
void plugin_close(BlockDriverState *bs) {
    auto *n = bs->state<PluginNode>();
    if (!n || !n->handle) return;
    PluginHandle &core = *n->core;
    for (;;) {
        AioContext *loop;
        {
            std::lock_guard<std::mutex> g(core.child_lock);
            core.node_gone = true;
            if (core.child_inflight == 0) break;
            loop = core.child_loop;
        }
        // On this node's loop (a plugin node has one queue), which the
        // caller no longer runs for them: mb_close drained the requests
        // it waits for, not these.
        (loop ? *loop : AioContext::main()).poll(true);
    }
    n->handle = nullptr;
    n->core.reset();
}

int64_t plugin_getlength(BlockDriverState *bs) {
    auto *n = bs->state<PluginNode>();
    if (!n->pd->c.get_length) return -ENOTSUP;
    int64_t r = n->pd->c.get_length(n->handle);
    if (r < -4095) {
        warn_report("Driver '" + n->pd->name + "' returned " + std::to_string(r) +
                    " from get_length, which is neither a length nor a negative errno");
        return -EIO;
    }
    return r;
}

void plugin_child_perm(BlockDriverState *bs, BdrvChild *c, PermPair cum, PermPair *out) {
    auto *n = bs->state<PluginNode>();
    uint32_t p = cum.perm, s = cum.shared;
    n->pd->c.child_perm(n->handle, reinterpret_cast<mbd_child *>(c), cum.perm, cum.shared, &p, &s);
    // Only the four bits mean anything; others would reach the lock code.
    out->perm = p & BLK_PERM_ALL;
    out->shared = s & BLK_PERM_ALL;
}

Status plugin_check_perm(BlockDriverState *bs, PermPair cum) {
    auto *n = bs->state<PluginNode>();
    n->lock_prepared = false;
    if (!n->locks) return Status::OK();
    // An inactive node (migration target) holds no locks at all.
    if (bs->open_flags & BDRV_O_INACTIVE) cum = PermPair{0, BLK_PERM_ALL};
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(bs->lock_wait_ms);
    for (;;) {
        plugin_error_clear();
        int r = n->pd->c.lock_prepare(n->handle, cum.perm, cum.shared);
        if (r == 0) break;
        Status st = plugin_error_status(n->pd, "Driver '" + n->pd->name + "' could not lock " + bdrv_describe(bs), EAGAIN);
        if (r != -1) {
            warn_report("Driver '" + n->pd->name + "' returned " + std::to_string(r) +
                        " from lock_prepare, which is neither 0 nor -1");
        }
        if (st.err() != EAGAIN || std::chrono::steady_clock::now() >= deadline) return st;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    n->lock_prepared = true;
    return Status::OK();
}

void plugin_set_perm(BlockDriverState *bs, PermPair) {
    auto *n = bs->state<PluginNode>();
    if (n->lock_prepared) n->pd->c.lock_commit(n->handle);
    n->lock_prepared = false;
}

void plugin_abort_perm_update(BlockDriverState *bs) {
    auto *n = bs->state<PluginNode>();
    if (n->lock_prepared) n->pd->c.lock_abort(n->handle);
    n->lock_prepared = false;
}

Task<int> plugin_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes, uint8_t *buf, int flags) {
    co_return co_await PluginRequest{bs->state<PluginNode>(), PluginOp::Read, buf, uint64_t(bytes),
                                     uint64_t(offset), uint32_t(flags & BDRV_REQ_FUA)};
}

Task<int> plugin_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes, const uint8_t *buf,
                            int flags) {
    co_return co_await PluginRequest{bs->state<PluginNode>(), PluginOp::Write, const_cast<uint8_t *>(buf),
                                     uint64_t(bytes), uint64_t(offset), uint32_t(flags & BDRV_REQ_FUA)};
}

Task<int> plugin_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes, int flags) {
    auto *n = bs->state<PluginNode>();
    uint32_t f = (flags & BDRV_REQ_FUA) ? MBD_REQ_FUA : 0;
    // MBD_REQ_MAY_UNMAP came with option_struct_size: a plugin built
    // before it never sees a flag bit it does not know.
    if ((flags & BDRV_REQ_MAY_UNMAP) &&
        n->pd->c.struct_size >= offsetof(mbd_driver, option_struct_size) + sizeof(uint32_t))
        f |= MBD_REQ_MAY_UNMAP;
    co_return co_await PluginRequest{n, PluginOp::Zero, nullptr, uint64_t(bytes), uint64_t(offset), f};
}

Task<int> plugin_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes) {
    co_return co_await PluginRequest{bs->state<PluginNode>(), PluginOp::Discard, nullptr, uint64_t(bytes),
                                     uint64_t(offset), 0};
}

Task<int> plugin_co_flush(BlockDriverState *bs) {
    // bdrv_co_flush flushes the children after this.  cache=unsafe: no
    // flush reaches a plugin.
    if (bs->open_flags & BDRV_O_NO_FLUSH) co_return 0;
    co_return co_await PluginRequest{bs->state<PluginNode>(), PluginOp::Flush, nullptr, 0, 0, 0};
}

Task<int> plugin_co_block_status(BlockDriverState *bs, int64_t offset, int64_t bytes, int64_t *pnum,
                                 int64_t *map, BlockDriverState **file) {
    (void)map;
    (void)file;
    auto *n = bs->state<PluginNode>();
    uint64_t num = 0;
    int r = n->pd->c.block_status(n->handle, uint64_t(offset), uint64_t(bytes), &num);
    if (r < 0 && r >= -4095) co_return r;
    const int known = MBD_STATUS_DATA | MBD_STATUS_ZERO | MBD_STATUS_ALLOCATED;
    if (r < 0 || (r & ~known) || num == 0 || num > uint64_t(bytes)) {
        warn_report("Driver '" + n->pd->name + "' returned status " + std::to_string(r) + " for " +
                    std::to_string(num) + " bytes at offset " + std::to_string(offset) + " of a " +
                    std::to_string(bytes) + "-byte query, which is out of range");
        co_return -EIO;
    }
    *pnum = int64_t(num);
    int out = 0;
    if (r & MBD_STATUS_DATA) out |= BDRV_BLOCK_DATA;
    if (r & MBD_STATUS_ZERO) out |= BDRV_BLOCK_ZERO;
    if (r & MBD_STATUS_ALLOCATED) out |= BDRV_BLOCK_ALLOCATED;
    co_return out;
}

void plugin_get_info(BlockDriverState *bs, FormatInfo *info) {
    auto *n = bs->state<PluginNode>();
    n->pd->c.get_info(n->handle, reinterpret_cast<mbd_info *>(info));
}

void plugin_debug_event(BlockDriverState *bs, const char *event) {
    auto *n = bs->state<PluginNode>();
    n->pd->c.debug_event(n->handle, event);
}

}  // namespace

void plugin_fill_block_driver(PluginDriver *pd) {
    const mbd_driver &c = pd->c;
    BlockDriver &bd = pd->bd;
    bd.format_name = pd->name.c_str();
    bd.is_protocol = c.kind == MBD_PROTOCOL;
    bd.sharable_writes = c.kind == MBD_FILTER || c.sharable_writes;
    bd.protocols = pd->schemes.size() > 1 ? pd->schemes.data() : nullptr;
    bd.probe = nullptr;  // bdrv_probe_format calls the plugin's, checked
    bd.open = plugin_open;
    bd.close = plugin_close;
    if (c.child_perm) bd.child_perm = plugin_child_perm;
    if (pd->lock_hooks) {
        bd.check_perm = plugin_check_perm;
        bd.set_perm = plugin_set_perm;
        bd.abort_perm_update = plugin_abort_perm_update;
    }
    const bool async = c.thread_model == MBD_THREAD_ASYNC;
    bd.co_preadv = plugin_co_preadv;
    if (async ? c.aio_write != nullptr : c.pwrite != nullptr) bd.co_pwritev = plugin_co_pwritev;
    if (async ? c.aio_zero != nullptr : c.zero != nullptr) bd.co_pwrite_zeroes = plugin_co_pwrite_zeroes;
    bd.co_pdiscard = plugin_co_pdiscard;
    bd.co_flush = plugin_co_flush;
    if (c.block_status) bd.co_block_status = plugin_co_block_status;
    bd.getlength = plugin_getlength;
    if (c.get_info) bd.get_info = plugin_get_info;
    if (c.debug_event) bd.debug_event = plugin_debug_event;
}

}  // namespace mb
