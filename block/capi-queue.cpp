// The C API's queues (include/miniblock/miniblock.h, "Queues"): requests
// enqueued with a user_data, submitted and reaped by mbq_do_io on the
// queue's own AioContext, an eventfd for the embedder's loop.
//
// A queue is libblkio's blkioq: one thread at a time, no lock on the data
// path.  Everything a request touches lives in its queue (the loop, the
// thread pool, the libaio context, the completion list); the graph below is
// shared read-only between queues (multi-queue graphs are file/raw only).

#include <cerrno>
#include <cinttypes>
#include <climits>
#include <cstring>

#include "block/block_int.h"
#include "block/capi-internal.h"
#include "block/locking/holders.h"

namespace mb::capi {

namespace {

const char *op_name(ReqOp op) {
    switch (op) {
    case ReqOp::Read: return "Read";
    case ReqOp::Write: return "Write";
    case ReqOp::WriteZeroes: return "Write zeroes";
    case ReqOp::Discard: return "Discard";
    case ReqOp::Flush: return "Flush";
    }
    return "Request";
}

std::string request_error(const Req &r, int ret) {
    if (r.op == ReqOp::Flush) return std::string("Flush failed: ") + strerror(-ret);
    return std::string(op_name(r.op)) + " of " + std::to_string(r.len) + " bytes at offset " +
           std::to_string(r.offset) + " failed: " + strerror(-ret);
}

Task<int> run_op(mb_drive *d, const Req &r) {
    BdrvChild *root = d->blk->root();
    int flags = (r.flags & MBQ_REQ_FUA) ? BDRV_REQ_FUA : 0;
    switch (r.op) {
    case ReqOp::Read: return bdrv_co_preadv(root, r.offset, r.len, r.buf, 0);
    case ReqOp::Write: return bdrv_co_pwritev(root, r.offset, r.len, r.buf, flags);
    case ReqOp::WriteZeroes: return bdrv_co_pwrite_zeroes(root, r.offset, r.len, flags);
    case ReqOp::Discard: return bdrv_co_pdiscard(root, r.offset, r.len);
    case ReqOp::Flush: return bdrv_co_flush(d->blk->bs());
    }
    return bdrv_co_flush(nullptr);
}

// A request's own coroutine: started by submit, frees itself at the end
// (no Task owner, no extra frame), its frame from the per-thread pool.
struct Detached {
    struct promise_type {
        static void *operator new(std::size_t n) { return detail::FramePool::allocate(n); }
        static void operator delete(void *p, std::size_t n) { detail::FramePool::deallocate(p, n); }
        Detached get_return_object() { return {}; }
        std::suspend_never initial_suspend() noexcept { return {}; }
        std::suspend_never final_suspend() noexcept { return {}; }
        void return_void() {}
        void unhandled_exception() noexcept { std::terminate(); }
    };
};

Detached run_request(QueueImpl *q, Req r) {
    int ret = co_await run_op(q->drive, r);
    q->in_flight--;
    if (r.sync_done) {
        *r.sync_ret = ret;
        *r.sync_done = true;
        co_return;
    }
    q->completed.push_back({r.user_data, ret, ret < 0 ? request_error(r, ret) : std::string()});
    // Enough for the mbq_do_io waiting: it returns before the loop runs the
    // other completions it found (AioContext::request_return), so that the
    // caller's next requests go out sooner.
    if (int(q->completed.size()) >= q->want) q->ctx->request_return();
}

QueueImpl *live(mb_queue *q, const char *fn) {
    if (!q) {
        fail(EINVAL, std::string(fn) + ": no queue was given");
        return nullptr;
    }
    if (!q->impl) {
        fail(EBADF, std::string(fn) + ": queue " + std::to_string(q->index) +
                        " belongs to a closed drive");
        return nullptr;
    }
    return q->impl;
}

std::string hex(uint64_t v) {
    char b[32];
    snprintf(b, sizeof(b), "0x%" PRIx64, v);
    return b;
}

int64_t timespec_us(const struct timespec *t) {
    return int64_t(t->tv_sec) * 1000000 + t->tv_nsec / 1000;
}

gboolean timeout_fired(gpointer opaque) {
    *static_cast<bool *>(opaque) = true;
    return G_SOURCE_REMOVE;
}

}  // namespace

int fail(int err, std::string msg) {
    set_error(err, std::move(msg), {});
    return -err;
}

int enqueue(mb_queue *handle, Req r, bool allow_unaligned) {
    static const char *const fn_names[] = {"mbq_read", "mbq_write", "mbq_write_zeroes",
                                           "mbq_discard", "mbq_flush"};
    const char *fn = fn_names[int(r.op)];
    QueueImpl *q = live(handle, fn);
    if (!q) return -(handle ? EBADF : EINVAL);
    mb_drive *d = q->drive;
    if (r.flags & ~uint32_t(MBQ_REQ_FUA))
        return fail(EINVAL, std::string(fn) + ": unknown flags " + hex(r.flags));
    if ((r.flags & MBQ_REQ_FUA) && r.op != ReqOp::Write && r.op != ReqOp::WriteZeroes)
        return fail(EINVAL, std::string(fn) + ": MBQ_REQ_FUA applies to writes only");
    if (r.op != ReqOp::Read && r.op != ReqOp::Flush && d->read_only)
        return fail(EPERM, std::string(fn) + ": the drive is read-only");
    if (r.op == ReqOp::Flush) return q->enqueued.push_back(r), 0;

    if ((r.op == ReqOp::Read || r.op == ReqOp::Write) && !r.buf && r.len > 0)
        return fail(EINVAL, std::string(fn) + ": no buffer was given");
    if (r.offset < 0 || r.len < 0)
        return fail(EINVAL, std::string(fn) + ": offset " + std::to_string(r.offset) + " and length " +
                                std::to_string(r.len) + " must not be negative");
    if (r.offset > d->length - r.len) {
        // Someone sharing resize may have grown the image: ask again once.
        int64_t len = d->blk->length();
        if (len >= 0) d->length = len;
        if (r.offset > d->length - r.len)
            return fail(EINVAL, std::string(fn) + ": " + std::to_string(r.len) + " bytes at offset " +
                                    std::to_string(r.offset) + " go past the end of the drive (" +
                                    std::to_string(d->length) + " bytes)");
    }
    if (d->o_direct && !allow_unaligned && (r.op == ReqOp::Read || r.op == ReqOp::Write)) {
        int64_t a = d->alignment;
        if (r.offset % a || r.len % a)
            return fail(EINVAL, std::string(fn) + ": offset " + std::to_string(r.offset) + " and length " +
                                    std::to_string(r.len) + " must be multiples of " + std::to_string(a) +
                                    " with cache=none");
        if (reinterpret_cast<uintptr_t>(r.buf) % a)
            return fail(EINVAL, std::string(fn) + ": buffer " + hex(reinterpret_cast<uintptr_t>(r.buf)) +
                                    " is not aligned to " + std::to_string(a) + " bytes, as cache=none needs");
    }
    q->enqueued.push_back(r);
    return 0;
}

void submit(QueueImpl *q, Req r) {
    q->in_flight++;
    run_request(q, r);
}

int run_sync(mb_drive *d, Req r) {
    QueueImpl *q = d->impls[0].get();
    int ret = 0;
    bool done = false;
    r.sync_ret = &ret;
    r.sync_done = &done;
    AioContext::Scope scope(*q->ctx);
    submit(q, r);
    while (!done) q->ctx->poll(true);
    rearm_completion_fd(q);
    return ret;
}

void drain(QueueImpl *q) {
    AioContext::Scope scope(*q->ctx);
    for (Req &r : q->enqueued) submit(q, r);
    q->enqueued.clear();
    while (q->in_flight > 0) q->ctx->poll(true);
    q->completed.clear();
}

}  // namespace mb::capi

using namespace mb;
using namespace mb::capi;

extern "C" {

const char *mb_last_error(void) { return last_message(); }

mb_queue *mb_get_queue(mb_drive *d, int index) {
    if (!d) {
        fail(EINVAL, "mb_get_queue: no drive was given");
        return nullptr;
    }
    if (index < 0 || index >= int(d->queues.size())) {
        fail(EINVAL, "mb_get_queue: queue " + std::to_string(index) + " does not exist (the drive has " +
                         std::to_string(d->queues.size()) + ", set with queues=N)");
        return nullptr;
    }
    return d->queues[index];
}

int mb_get_num_queues(mb_drive *d) {
    return d ? int(d->queues.size()) : fail(EINVAL, "mb_get_num_queues: no drive was given");
}

int64_t mb_get_alignment(mb_drive *d) {
    return d ? (d->o_direct ? d->alignment : 1) : fail(EINVAL, "mb_get_alignment: no drive was given");
}

int mbq_read(mb_queue *q, int64_t offset, void *buf, size_t len, void *user_data, uint32_t flags) {
    if (len > size_t(INT64_MAX)) return fail(EINVAL, "mbq_read: length " + std::to_string(len) + " is too large");
    return enqueue(q, {ReqOp::Read, offset, static_cast<uint8_t *>(buf), int64_t(len), user_data, flags}, false);
}

int mbq_write(mb_queue *q, int64_t offset, const void *buf, size_t len, void *user_data,
              uint32_t flags) {
    if (len > size_t(INT64_MAX)) return fail(EINVAL, "mbq_write: length " + std::to_string(len) + " is too large");
    return enqueue(q, {ReqOp::Write, offset, static_cast<uint8_t *>(const_cast<void *>(buf)), int64_t(len),
                       user_data, flags}, false);
}

int mbq_write_zeroes(mb_queue *q, int64_t offset, size_t len, void *user_data, uint32_t flags) {
    if (len > size_t(INT64_MAX))
        return fail(EINVAL, "mbq_write_zeroes: length " + std::to_string(len) + " is too large");
    return enqueue(q, {ReqOp::WriteZeroes, offset, nullptr, int64_t(len), user_data, flags}, false);
}

int mbq_discard(mb_queue *q, int64_t offset, size_t len, void *user_data, uint32_t flags) {
    if (len > size_t(INT64_MAX)) return fail(EINVAL, "mbq_discard: length " + std::to_string(len) + " is too large");
    return enqueue(q, {ReqOp::Discard, offset, nullptr, int64_t(len), user_data, flags}, false);
}

int mbq_flush(mb_queue *q, void *user_data, uint32_t flags) {
    return enqueue(q, {ReqOp::Flush, 0, nullptr, 0, user_data, flags}, false);
}

}  // extern "C"

namespace {

int do_io(mb_queue *handle, struct mb_completion *out, int min, int max, const struct timespec *timeout) {
    QueueImpl *q = live(handle, "mbq_do_io");
    if (!q) return -(handle ? EBADF : EINVAL);
    if (min < 0 || max < min)
        return fail(EINVAL, "mbq_do_io: min " + std::to_string(min) + " and max " + std::to_string(max) +
                                " must satisfy 0 <= min <= max");
    if (max > 0 && !out) return fail(EINVAL, "mbq_do_io: max is " + std::to_string(max) + " but out is NULL");
    if (timeout && (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1000000000))
        return fail(EINVAL, "mbq_do_io: invalid timeout");
    int outstanding = q->in_flight + int(q->enqueued.size()) + int(q->completed.size());
    if (min > outstanding)
        return fail(EINVAL, "mbq_do_io: min " + std::to_string(min) + " is more than the " +
                                std::to_string(outstanding) + " requests in flight");

    AioContext &ctx = *q->ctx;
    AioContext::Scope scope(ctx);
    // How many completions the loop runs before handing over: what the
    // caller waits for; one for a call that hands out nothing (it only
    // submits, and the rest is run by the call that collects them).
    q->want = min > 0 ? min : max == 0 ? 1 : INT_MAX;
    q->handed_out.clear();
    if (!q->enqueued.empty()) {
        // One batch: native AIO sends it to the kernel once all of it is set
        // up (an io_submit per request: LinuxAio::submit_pending says why).
        // Swapped, not copied: both vectors keep their capacity, so that a
        // call per completion (see q->want) allocates nothing.
        q->submitting.swap(q->enqueued);
        ctx.io_plug();
        for (Req &r : q->submitting) submit(q, r);
        ctx.io_unplug();
        q->submitting.clear();
    }
    // A caller that already has its min gets it without running the loop.
    if (min == 0 || int(q->completed.size()) < min) ctx.run_pending();
    if (int(q->completed.size()) < min) {
        bool expired = false;
        GSource *timer = nullptr;
        if (timeout) {
            timer = g_timeout_source_new(0);
            g_source_set_ready_time(timer, g_get_monotonic_time() + timespec_us(timeout));
            g_source_set_callback(timer, timeout_fired, &expired, nullptr);
            g_source_attach(timer, ctx.gcontext());
        }
        while (int(q->completed.size()) < min && !expired) ctx.poll(true);
        if (timer) {
            g_source_destroy(timer);
            g_source_unref(timer);
        }
        if (int(q->completed.size()) < min)
            return fail(ETIME, "mbq_do_io: " + std::to_string(q->completed.size()) + " of " +
                                   std::to_string(min) + " completions before the timeout");
    } else if (q->completed.empty()) {
        // Woken by the completion fd: one non-blocking pass of the loop
        // serves its sources and resets the fd.
        ctx.poll(false);
    }
    int n = 0;
    q->handed_out.reserve(max);
    while (n < max && !q->completed.empty()) {
        Completion &c = q->completed.front();
        q->handed_out.push_back(std::move(c.msg));
        out[n].user_data = c.user_data;
        out[n].ret = c.ret;
        out[n].error_msg = c.ret < 0 ? q->handed_out.back().c_str() : nullptr;
        q->completed.pop_front();
        n++;
    }
    // Completions left over keep the fd readable, so that a loop waiting on
    // it (or an attached GLib source) comes back for them.
    if (!q->completed.empty()) ctx.notify();
    return n;
}

}  // namespace

extern "C" {

int mbq_do_io(mb_queue *handle, struct mb_completion *out, int min, int max,
              const struct timespec *timeout) {
    int n = do_io(handle, out, min, max, timeout);
    // The private context ran: the completion fd follows its fds and its
    // earliest timer (block/capi-loop.cpp).
    if (handle && handle->impl) rearm_completion_fd(handle->impl);
    return n;
}

int mbq_get_completion_fd(mb_queue *handle) {
    QueueImpl *q = live(handle, "mbq_get_completion_fd");
    if (!q) return -(handle ? EBADF : EINVAL);
#ifdef _WIN32
    return fail(ENOTSUP, "mbq_get_completion_fd: Windows has no completion fd; use mbq_get_completion_handle");
#else
    return completion_fd(q);
#endif
}

#ifdef _WIN32
void *mbq_get_completion_handle(mb_queue *handle) {
    QueueImpl *q = live(handle, "mbq_get_completion_handle");
    return q ? q->ctx->notify_handle() : nullptr;
}
#endif

}  // extern "C"


extern "C" {

int mbq_attach_glib(mb_queue *handle, void *gmain_context, mb_completion_cb *cb, void *opaque) {
    QueueImpl *q = live(handle, "mbq_attach_glib");
    if (!q) return -(handle ? EBADF : EINVAL);
    if (!gmain_context || !cb) return fail(EINVAL, "mbq_attach_glib: a GMainContext and a callback are needed");
    if (q->glib_source) return fail(EBUSY, "mbq_attach_glib: queue " + std::to_string(q->index) +
                                               " is already attached to a GMainContext");
    q->glib_cb = cb;
    q->glib_opaque = opaque;
    // The whole private context, not only its notify fd: an nbd socket and
    // the timers on it run from ctx too (block/capi-loop.cpp).
    q->glib_source = new_forward_source(handle);
    g_source_attach(q->glib_source, static_cast<GMainContext *>(gmain_context));
    return 0;
}

int mbq_detach_glib(mb_queue *handle) {
    QueueImpl *q = live(handle, "mbq_detach_glib");
    if (!q) return -(handle ? EBADF : EINVAL);
    if (q->glib_source) {
        g_source_destroy(q->glib_source);
        g_source_unref(q->glib_source);
        q->glib_source = nullptr;
    }
    return 0;
}

}  // extern "C"
