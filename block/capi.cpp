// The C API (include/miniblock/miniblock.h) over BlockBackend: the drive,
// its queues (block/capi-queue.cpp), and the synchronous calls as thin
// wrappers over queue 0.
#include "miniblock/miniblock.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "block/block_int.h"
#include "block/capi-internal.h"
#include "block/locking/holders.h"
#include "miniblock/options.h"

using namespace mb;
using namespace mb::capi;

namespace {

constexpr int kMaxQueues = 64;

// Takes the drive-level option queues=N out of the tree (nodes do not know it).
Result<int> take_queues(qapi::OptionDict &opts) {
    auto text = opts.get_text("queues");
    if (!opts.has("queues")) return 1;
    opts.erase("queues");
    char *end = nullptr;
    long n = text ? strtol(text->c_str(), &end, 10) : 0;
    if (!text || text->empty() || *end || n < 1 || n > kMaxQueues)
        return Status::Error(EINVAL, "Invalid value '" + text.value_or("") + "' for parameter 'queues'",
                             "Valid values: 1 to " + std::to_string(kMaxQueues));
    return int(n);
}

// Several threads may only share a graph whose nodes keep no per-request
// state: the file protocol, optionally under raw.
Status check_multiqueue(BlockDriverState *bs, int n) {
    std::string name = bs->drv->format_name;
    if (name != "file" && name != "raw")
        return Status::Error(EINVAL, "queues=" + std::to_string(n) + " is not supported by the '" + name +
                                         "' driver of node '" + bs->node_name + "'",
                             "Only file and raw drives can have more than one queue");
    for (auto &c : bs->children) {
        Status st = check_multiqueue(c->bs.get(), n);
        if (!st.ok()) return st;
    }
    return Status::OK();
}

void mark_graph(BlockDriverState *bs, mb_drive *d) {
    if (d->multiqueue) bs->multiqueue = true;
    if (bs->open_flags & BDRV_O_NOCACHE) d->o_direct = true;
    d->alignment = std::max<int64_t>(d->alignment, bs->request_alignment);
    for (auto &c : bs->children) mark_graph(c->bs.get(), d);
}

// Also records the structured error (mb_get_error) of this thread.
char *dup_message(const Status &st) {
    (void)fail_status(st);
    return strdup(st.to_string().c_str());
}

int status_to_ret(const Status &st, char **errp) {
    if (errp) *errp = st.ok() ? nullptr : strdup(st.to_string().c_str());
    return st.ok() ? 0 : fail_status(st);
}

// The synchronous data calls: a request on queue 0, waited for.
int sync_request(mb_drive *d, ReqOp op, int64_t offset, const void *buf, int64_t len, int flags) {
    if (!d) return -EBADF;
    if (d->multiqueue && d->o_direct && (op == ReqOp::Read || op == ReqOp::Write) &&
        (offset % d->alignment || len % d->alignment ||
         reinterpret_cast<uintptr_t>(buf) % d->alignment)) {
        // A read-modify-write would race with the other queues' writes.
        return fail(EINVAL, "An unaligned request is refused on a drive with several queues and cache=none");
    }
    Req r{op, offset, static_cast<uint8_t *>(const_cast<void *>(buf)), len, nullptr, uint32_t(flags)};
    return run_sync(d, r);
}

}  // namespace

extern "C" {

mb_drive *mb_open(const char *spec, char **errp) {
    if (errp) *errp = nullptr;
    if (!spec) {
        (void)fail(EINVAL, "No image was given");
        if (errp) *errp = strdup("No image was given");
        return nullptr;
    }
    (void)take_conflict_holders();
    auto opts = qapi::parse_drive_options(spec);
    if (!opts.ok()) {
        char *m = dup_message(opts.status());
        if (errp) *errp = m; else free(m);
        return nullptr;
    }
    auto nq = take_queues(*opts);
    if (!nq.ok()) {
        char *m = dup_message(nq.status());
        if (errp) *errp = m; else free(m);
        return nullptr;
    }
    std::unique_ptr<mb_drive> d(new mb_drive());
    for (int i = 0; i < *nq; i++) {
        auto q = std::make_unique<QueueImpl>();
        q->drive = d.get();
        q->index = i;
        // A context of its own per queue: never GLib's default one.
        GMainContext *g = g_main_context_new();
        q->ctx = std::make_unique<AioContext>(g);
        g_main_context_unref(g);
        if (int e = q->ctx->init_errno()) {
            char *m = dup_message(PosixError("Could not set up queue " + std::to_string(i), e));
            if (errp) *errp = m; else free(m);
            return nullptr;
        }
        d->impls.push_back(std::move(q));
    }
    // Opening runs on queue 0's context: the sources a driver attaches
    // (nbd's socket) live there, where the synchronous calls run.
    AioContext::Scope scope(*d->impls[0]->ctx);
    auto blk = BlockBackend::open(*opts);
    if (!blk.ok()) {
        char *m = dup_message(blk.status());
        if (errp) *errp = m; else free(m);
        return nullptr;
    }
    d->blk = std::move(*blk);
    d->multiqueue = *nq > 1;
    if (d->multiqueue) {
        Status st = check_multiqueue(d->blk->bs(), *nq);
        if (!st.ok()) {
            d->blk.reset();
            char *m = dup_message(st);
            if (errp) *errp = m; else free(m);
            return nullptr;
        }
    }
    mark_graph(d->blk->bs(), d.get());
    d->read_only = d->blk->read_only();
    d->length = d->blk->length();
    for (auto &q : d->impls) d->queues.push_back(new mb_queue{q.get(), q->index});
    return d.release();
}

void mb_close(mb_drive *d) {
    if (!d) return;
    // Every accepted request completes before the graph goes away.
    for (auto &q : d->impls) {
        if (q->glib_source) {
            g_source_destroy(q->glib_source);
            g_source_unref(q->glib_source);
            q->glib_source = nullptr;
        }
        drain(q.get());
    }
    {
        AioContext::Scope scope(*d->impls[0]->ctx);
        d->blk.reset();
    }
    for (mb_queue *q : d->queues) q->impl = nullptr;  // tombstones, kept on purpose
    delete d;
}

int mb_pread(mb_drive *d, void *buf, int64_t len, int64_t offset) {
    return sync_request(d, ReqOp::Read, offset, buf, len, 0);
}
int mb_pwrite(mb_drive *d, const void *buf, int64_t len, int64_t offset) {
    return sync_request(d, ReqOp::Write, offset, buf, len, 0);
}
int mb_pwrite_zeroes(mb_drive *d, int64_t len, int64_t offset) {
    return sync_request(d, ReqOp::WriteZeroes, offset, nullptr, len, 0);
}
int mb_flush(mb_drive *d) { return sync_request(d, ReqOp::Flush, 0, nullptr, 0, 0); }
int64_t mb_length(mb_drive *d) {
    if (!d) return -EBADF;
    AioContext::Scope scope(*d->impls[0]->ctx);
    return d->blk->length();
}

int mb_activate(mb_drive *d, char **errp) {
    if (!d) return status_to_ret(Status::Error(EBADF, "No drive was given"), errp);
    wait_idle(d);
    AioContext::Scope scope(*d->impls[0]->ctx);
    (void)take_conflict_holders();
    return status_to_ret(d->blk->activate(), errp);
}
int mb_inactivate(mb_drive *d, char **errp) {
    if (!d) return status_to_ret(Status::Error(EBADF, "No drive was given"), errp);
    wait_idle(d);
    AioContext::Scope scope(*d->impls[0]->ctx);
    return status_to_ret(d->blk->inactivate(), errp);
}
int mb_is_inactive(mb_drive *d) { return d ? (d->blk->inactive() ? 1 : 0) : -EBADF; }

void mb_free_error(char *err) { std::free(err); }

}  // extern "C"
