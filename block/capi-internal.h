// What the C API's drive and queue handles hold (block/capi.cpp,
// block/capi-queue.cpp).  Internal: never installed.
#pragma once

#include <climits>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include <glib.h>

#include "block/aio.h"
#include "miniblock/block.h"
#include "miniblock/miniblock.h"

namespace mb::capi {

enum class ReqOp { Read, Write, WriteZeroes, Discard, Flush };

struct QueueImpl;
// The completion fd of a queue (block/capi-loop.cpp), made on first use.
struct FdWatch;
struct FdWatchDeleter {
    void operator()(FdWatch *w) const;
};

// One request, from enqueue to completion.
struct Req {
    ReqOp op;
    int64_t offset;
    uint8_t *buf;
    int64_t len;
    void *user_data;
    uint32_t flags;
    // A synchronous wrapper's own request: its result goes here instead of
    // into the queue's completions.
    int *sync_ret = nullptr;
    bool *sync_done = nullptr;
};

struct Completion {
    void *user_data;
    int ret;
    std::string msg;
};

struct QueueImpl {
    mb_drive *drive = nullptr;
    int index = 0;
    std::unique_ptr<AioContext> ctx;
    std::vector<Req> enqueued;
    std::deque<Completion> completed;
    // Messages handed out by the last mbq_do_io (their pointers stay valid
    // until the next one).
    std::vector<std::string> handed_out;
    int in_flight = 0;  // submitted, not yet completed
    // The completions the running mbq_do_io waits for (its min; INT_MAX
    // when it waits for none): the loop hands them over as soon as they are
    // there (AioContext::request_return).
    int want = INT_MAX;
    std::vector<Req> submitting;  // the batch mbq_do_io is submitting
    GSource *glib_source = nullptr;  // mbq_attach_glib
    mb_completion_cb *glib_cb = nullptr;
    void *glib_opaque = nullptr;
    std::unique_ptr<FdWatch, FdWatchDeleter> fdw;  // mbq_get_completion_fd (Linux)
};

// Sets the calling thread's error (mb_get_error, mb_last_error) and returns
// -err.  fail_status also hands out the holders of a lock conflict.
int fail(int err, std::string msg);
int fail_status(const Status &st);
}  // namespace mb::capi
namespace mb {
struct LockHolder;
}
namespace mb::capi {
void set_error(int err, std::string msg, std::vector<LockHolder> holders);
const char *last_message();
// Waits until no queue of the drive has a request in flight (completions
// are kept for their queues).
void wait_idle(mb_drive *d);

// Checks a request against the drive (range, alignment, writability) and
// enqueues it; 0 or -errno with mb_last_error() set.
int enqueue(mb_queue *q, Req r, bool allow_unaligned);
// Starts a request on the queue's loop (the caller holds a Scope for it).
void submit(QueueImpl *q, Req r);
// Runs queue 0's loop until a request of the sync wrappers completes.
int run_sync(mb_drive *d, Req r);
// Runs a queue's loop until nothing is in flight; drops its completions.
void drain(QueueImpl *q);

// block/capi-loop.cpp: the queue's private loop context in the embedder's
// loop.  A GSource (not attached) that runs the whole private context from
// the context it is attached to and hands completions to q->glib_cb.
GSource *new_forward_source(mb_queue *handle);
#ifndef _WIN32
// The completion fd (an epoll fd: the private context's fds and a timerfd
// for its earliest timer), made on first use; or -errno.
int completion_fd(QueueImpl *q);
#endif
// Brings the completion fd, if the queue has one, up to date with the
// private context: called after anything that ran the context (mbq_do_io,
// the synchronous calls).  Nothing to do on Windows.
void rearm_completion_fd(QueueImpl *q);

}  // namespace mb::capi

// The handle an embedder holds.  It outlives the drive (a tombstone with
// impl == nullptr), so that a call after mb_close fails cleanly.
struct mb_queue {
    mb::capi::QueueImpl *impl = nullptr;
    int index = 0;
};

struct mb_drive {
    std::unique_ptr<mb::BlockBackend> blk;
    std::vector<std::unique_ptr<mb::capi::QueueImpl>> impls;
    std::vector<mb_queue *> queues;  // never freed: see mb_queue
    bool multiqueue = false;
    bool o_direct = false;
    int64_t alignment = 1;
    bool read_only = false;
    int64_t length = 0;  // cached: updated by truncate and reopen
};
