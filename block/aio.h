// The event loop: an AioContext wraps a GLib GMainContext, so an emulator
// running a GLib main loop embeds miniblock as one more source, and the tools
// run the same loop until their request completes (sync_wait).
//
// Completions reach the loop through one eventfd (a GSource): worker threads
// and libaio post coroutine handles to it, the loop resumes them in its own
// thread.  Nothing else in the block layer is thread-aware.
#pragma once

#include <glib.h>

#include <atomic>
#include <condition_variable>
#include <coroutine>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "block/aio-poll.h"
#include "block/coroutine.h"
#include "miniblock/status.h"

struct io_event;  // libaio.h

namespace mb {

class ThreadPool;
class LinuxAio;

class AioContext {
public:
    // Runs on `ctx` (the default main context when null).
    explicit AioContext(GMainContext *ctx = nullptr);
    ~AioContext();
    AioContext(const AioContext &) = delete;
    AioContext &operator=(const AioContext &) = delete;

    // The context the calling thread's block layer runs on: the one a
    // Scope made current (a queue's own context, block/queue.h), else a
    // process-wide fallback on a private GMainContext (never GLib's default:
    // an embedder's loop on the default context must not run our sources).
    static AioContext &main();
    static AioContext &current() { return main(); }

    // Makes `ctx` the calling thread's current context until destroyed;
    // nests (the previous one comes back).
    class Scope {
    public:
        explicit Scope(AioContext &ctx);
        ~Scope();
        Scope(const Scope &) = delete;
        Scope &operator=(const Scope &) = delete;

    private:
        AioContext *prev_;
    };

    // The eventfd that becomes readable whenever the loop has work (a
    // scheduled coroutine, a native AIO completion): what a queue hands to
    // an embedder as its completion fd.
#ifdef _WIN32
    // Windows has no eventfd: the same notification is an event HANDLE.
    int notify_fd() const { return -1; }
    void *notify_handle() const { return event_; }
#else
    int notify_fd() const { return efd_; }
#endif
    // Makes the notification fire again (completions left for the embedder).
    void notify();
    // Runs whatever is ready without blocking and without waiting on the
    // GLib loop (scheduled coroutines, completions in the AIO ring); true
    // if anything ran.
    bool run_pending() { return poll_queues(); }
    // Native AIO requests issued between io_plug and io_unplug reach the
    // kernel at io_unplug, once all are set up (a queue submits its batch
    // this way), each in an io_submit of its own (LinuxAio::submit_pending).
    void io_plug();
    void io_unplug();

    GMainContext *gcontext() const { return ctx_; }
    // Non-zero (an errno) if the context could not be set up (no eventfd):
    // it must not be used then.
    int init_errno() const { return init_errno_; }

    // Resumes `h` from the loop soon.  Thread-safe.
    void schedule(std::coroutine_handle<> h);
    // Marks run_scheduled's resumptions on this thread (wake()).
    class Resuming {
    public:
        explicit Resuming(AioContext *ctx);
        ~Resuming();
    private:
        AioContext *prev_;
    };
    // Called from a coroutine the loop resumed (a queue's request that just
    // completed what its mbq_do_io waits for): the loop returns to its
    // caller once that coroutine suspends; the coroutines it has not
    // resumed yet run first in its next run.
    void request_return() { return_requested_ = true; }
    // A lock handed to a waiter (CoMutex, CoRwLock): from a coroutine this
    // context's loop resumed, the waiter runs as soon as that coroutine
    // suspends, as QEMU's aio_co_wake does, instead of a loop pass later
    // (meanwhile every new request would queue behind it: a convoy, one
    // hand-over and one eventfd write per request, that kept 4 KiB qcow2
    // reads at QD32 from reaching the workers); else it is scheduled.
    void wake(std::coroutine_handle<> h);

    // One loop iteration; blocks for events when `may_block`.  A blocking
    // call first polls the completion queues in user space for a short
    // while (QEMU's adaptive polling, block/aio-poll.h): when the next
    // completion is microseconds away, catching it without a system call is
    // what keeps up with the device; when it is not, the window shrinks to
    // nothing and the call blocks at once.
    void poll(bool may_block);

    // The current busy-poll window in ns (block/aio-poll.h); for tests.
    int64_t poll_window() const { return poll_.window(); }

    ThreadPool &thread_pool();
    // Linux native AIO, created on first use.
    Result<LinuxAio *> linux_aio();

private:
    static gboolean dispatch_cb(gint fd, GIOCondition cond, gpointer opaque);
    // Runs what schedule() queued; reads the eventfd only when the loop
    // woke on it.
    bool run_scheduled(bool from_loop);
    // Completions found without blocking or a system call; true if any.
    bool poll_queues();
    // Whether a blocking wait should busy-poll first: something is in flight
    // whose completion needs no CPU of ours (block/aio-common.cpp's poll).
    bool worth_polling() const;

    GMainContext *ctx_;
    std::atomic<bool> has_scheduled_{false};
    bool return_requested_ = false;  // request_return
    AdaptivePoll poll_;  // MINIBLOCK_POLL_NS sets its maximum; 0 turns polling off
    unsigned polled_in_a_row_ = 0;
#ifdef _WIN32
    // Windows (block/aio-win32.cpp): the one event HANDLE every completion
    // signals, polled by GLib, which waits on HANDLEs there, not fds.
    void *event_ = nullptr;
#else
    int efd_ = -1;
#endif
    int init_errno_ = 0;  // why init() failed (AioContext::init_errno)
    GSource *source_ = nullptr;
    std::mutex lock_;
    std::vector<std::coroutine_handle<>> scheduled_;
    // Scheduled coroutines a run stopped before (request_return): the
    // loop's thread only.
    std::vector<std::coroutine_handle<>> ready_;
    // wake()'s waiters, run after the resumed coroutine suspends
    // (run_woken); the loop's thread only.
    std::vector<std::coroutine_handle<>> woken_;
    void run_woken();
    std::unique_ptr<ThreadPool> pool_;
    std::unique_ptr<LinuxAio> laio_;
};

// Runs the loop until `task` completes and returns its result: the
// synchronous entry for tools and simple embedders.
template <class T>
T sync_wait(Task<T> task, AioContext &ctx = AioContext::main()) {
    task.handle().resume();
    while (!task.done()) ctx.poll(true);
    if constexpr (!std::is_void_v<T>) return std::move(task.result());
}

// Starts `task` without waiting; it runs to completion on the loop and frees
// itself.  For request fan-out (bench, queue depth).
void spawn(Task<void> task);

// A pool of worker threads running blocking system calls for aio=threads.
class ThreadPool {
public:
    // One job: fn runs in a worker, then the coroutine is resumed in the loop.
    struct Job {
        int (*fn)(Job *) = nullptr;
        int ret = 0;
        std::coroutine_handle<> waiter;
    };

    explicit ThreadPool(AioContext &ctx, int max_threads = 64);
    ~ThreadPool();

    // co_await pool.run(job): runs job.fn in a worker, yields its return value.
    struct Awaiter {
        ThreadPool &pool;
        Job &job;
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<> h) {
            job.waiter = h;
            pool.submit(&job);
        }
        int await_resume() const noexcept { return job.ret; }
    };
    Awaiter run(Job &job) { return Awaiter{*this, job}; }
    // Jobs submitted and not yet handed back to the loop.
    int in_flight() const { return in_flight_.load(std::memory_order_relaxed); }

private:
    void submit(Job *job);
    void worker();

    AioContext &ctx_;
    const int max_threads_;
    std::mutex lock_;
    std::condition_variable cond_;
    std::deque<Job *> queue_;
    std::vector<std::thread> threads_;
    int idle_ = 0;
    bool stopping_ = false;
    std::atomic<int> in_flight_{0};
};

// Linux native AIO: one io_context per AioContext, completions through an
// eventfd watched by the loop.
class LinuxAio {
public:
    static Result<std::unique_ptr<LinuxAio>> create(AioContext &ctx);
    ~LinuxAio();

    struct Request;
    // co_await laio.submit(req): returns bytes transferred or negative errno.
    struct Awaiter;
    Awaiter pread(int fd, void *buf, size_t len, int64_t offset);
    Awaiter pwrite(int fd, const void *buf, size_t len, int64_t offset);
    Awaiter fdsync(int fd);

    struct Awaiter {
        LinuxAio &aio;
        int op;
        int fd;
        void *buf;
        size_t len;
        int64_t offset;
        int64_t ret = 0;
        std::coroutine_handle<> waiter;
        alignas(8) unsigned char iocb_storage[64];
        bool await_ready() const noexcept { return false; }
        bool await_suspend(std::coroutine_handle<> h);
        int64_t await_resume() const noexcept { return ret; }
    };

private:
    LinuxAio(AioContext &ctx) : ctx_(ctx) {}
    static gboolean completion_cb(gint fd, GIOCondition cond, gpointer opaque);
    void complete();
    void submit_pending();
    int reap(::io_event *events, int max);
    // Handles completions already in the ring; no system call.  True if any.
    bool poll_ring();
    void handle(::io_event *events, int n);
    friend class AioContext;

    AioContext &ctx_;
    void *io_ctx_ = nullptr;  // io_context_t
    int efd_ = -1;
    GSource *source_ = nullptr;
    int in_flight_ = 0;
    // Requests wait here to be submitted: while completions are being
    // handled (their coroutines issue the next requests), while plugged, and
    // when the io_context is full.
    std::deque<Awaiter *> pending_;
    bool in_completion_ = false;
};

}  // namespace mb
