// Requests to plugin drivers.  A plugin completes a request by handing back
// its mbd_request token, from any thread, maybe before the callback that
// started it returns, maybe never, maybe twice.  Every token is therefore
// an index into one process-wide slot table plus a generation: a slot is
// never freed (so a late or repeated completion reads valid memory), and a
// completion whose generation does not match is reported and ignored.
//
// A slot's state and generation share one atomic word, so "is this still
// the request I was given, and is it waiting?" is a single compare-exchange:
//
//   SUBMITTED --complete--> DONE                    (inline: no suspension)
//   SUBMITTED --suspend--> WAITING --complete--> DONE --resume on the loop
//   WAITING --watchdog--> TIMED_OUT --resume--> ABANDONED --late completion--> free
//   TIMED_OUT --late completion--> LATE --resume--> free
//
// The caller's buffer: once the caller has seen ETIMEDOUT it may free or
// reuse it at once, while the driver may still be working on the request.
// So the caller's buffer is touched only while the slot is SUBMITTED or
// WAITING, and only by whoever holds it in COMPLETING:
//   - the blocking thread models run the plugin's callbacks on a small pool
//     of worker threads, on a buffer each worker owns; the worker copies a
//     write's data in, and a read's data out on completion, holding the
//     slot in COMPLETING (so the watchdog cannot time it out meanwhile);
//   - an async driver with an abandon callback works on the caller's buffer
//     (zero-copy) and is told, before the caller resumes, to let go of it;
//   - an async driver without one gets a buffer of the slot's, copied like
//     a worker's, and a late completion touches only that.
#include <glib.h>
#ifdef _WIN32
#include <malloc.h>  // _aligned_malloc
#endif

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <thread>

#include "block/aio.h"
#include "block/plugin/plugin.h"
#include "block/warn.h"

namespace mb {

namespace {

// COMPLETING: a completion owns the slot while it stores the result; the
// result is published by the store of DONE, never written before the
// compare-exchange (a stale completion must not touch a reused slot).
// TIMED_OUT: the watchdog failed it, the waiter has not resumed yet;
// ABANDONED: the waiter has seen ETIMEDOUT, the slot waits for the late
// completion; LATE: completed after TIMED_OUT, the waiter frees the slot.
enum : uint32_t {
    FREE = 0,
    SUBMITTED = 1,
    WAITING = 2,
    DONE = 3,
    TIMED_OUT = 4,
    COMPLETING = 5,
    ABANDONED = 6,
    LATE = 7
};

// A buffer of the core's: page-aligned (a plugin may do O_DIRECT I/O into
// what it is given), grown on demand.
struct Bounce {
    uint8_t *p = nullptr;
    size_t cap = 0;
    // Kept for reuse up to this size; a larger one is freed after use.
    static constexpr size_t kKeep = 4 << 20;

    bool reserve(size_t n) {
        if (n <= cap && p) return true;
        release();
        size_t sz = (std::max<size_t>(n, 4096) + 4095) & ~size_t(4095);
#ifdef _WIN32
        p = static_cast<uint8_t *>(_aligned_malloc(sz, 4096));
#else
        p = static_cast<uint8_t *>(std::aligned_alloc(4096, sz));
#endif
        cap = p ? sz : 0;
        return p != nullptr;
    }
    void release() {
#ifdef _WIN32
        _aligned_free(p);
#else
        std::free(p);
#endif
        p = nullptr;
        cap = 0;
    }
    void trim() {
        if (cap > kKeep) release();
    }
};

struct Slot {
    std::atomic<uint64_t> word{0};  // generation << 8 | state
    int ret = 0;
    std::coroutine_handle<> waiter;
    int64_t deadline_ns = 0;
    const PluginDriver *pd = nullptr;  // kept after free, for messages
    // Valid while the caller may wait (the watchdog, the waiter); the
    // node may be gone once the request has timed out.
    PluginNode *node = nullptr;
    // Blocking models: the plugin's handle, from submission until the
    // worker takes it (PluginHandle: the node may close meanwhile).
    std::shared_ptr<PluginHandle> job;
    AioContext *ctx = nullptr;  // the waiter's loop
    PluginOp op = PluginOp::Read;
    void *buf = nullptr;  // the caller's
    uint64_t count = 0, offset = 0;
    uint32_t flags = 0;
    bool bounced = false;  // an async driver works on `bounce`, not `buf`
    Bounce bounce;         // the slot's, reused by its next requests
};

constexpr uint32_t kChunk = 1024, kChunks = 256;  // 262144 requests in flight at most

struct Table {
    std::array<std::atomic<Slot *>, kChunks> chunks{};
    std::mutex lock;
    std::vector<uint32_t> free;
    uint32_t used = 0;  // high-water mark
};

Table &table() {
    static Table t;
    return t;
}

Slot &slot_at(uint32_t i) { return table().chunks[i / kChunk].load(std::memory_order_acquire)[i % kChunk]; }

int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

uint64_t pack(uint64_t gen, uint32_t state) { return gen << 8 | state; }
uint32_t state_of(uint64_t w) { return uint32_t(w & 0xff); }
uint64_t gen_of(uint64_t w) { return w >> 8; }

// The token handed to the plugin: index + 1 in the low 32 bits (never NULL),
// the low 31 bits of the generation above.
mbd_request *token(uint32_t i, uint64_t gen) {
    return reinterpret_cast<mbd_request *>(uintptr_t((gen & 0x7fffffff) << 32 | (i + 1)));
}

// -1 when the slot table cannot hold another request.
int64_t slot_alloc() {
    Table &t = table();
    std::lock_guard<std::mutex> g(t.lock);
    if (!t.free.empty()) {
        uint32_t i = t.free.back();
        t.free.pop_back();
        return i;
    }
    if (t.used == kChunk * kChunks) return -1;
    uint32_t i = t.used++;
    if (i % kChunk == 0) t.chunks[i / kChunk].store(new Slot[kChunk], std::memory_order_release);
    return i;
}

void slot_free(uint32_t i) {
    Slot &s = slot_at(i);
    s.bounce.trim();
    uint64_t w = s.word.load(std::memory_order_relaxed);
    s.word.store(pack(gen_of(w) + 1, FREE), std::memory_order_release);
    Table &t = table();
    std::lock_guard<std::mutex> g(t.lock);
    t.free.push_back(i);
}

std::string describe(const Slot &s) {
    std::string d = plugin_op_name(s.op);
    if (s.op != PluginOp::Flush) d += " at offset " + std::to_string(s.offset);
    return d;
}

// Slot i, seen as `w` in TIMED_OUT or ABANDONED: the caller has gone, or
// is going, with ETIMEDOUT, so nothing of its is touched; msg is reported
// and whoever comes second frees the slot (an ABANDONED slot is held in
// COMPLETING until it is freed: a second late completion finds it taken).
// False if the slot changed meanwhile: look again.
bool finish_timed_out(uint32_t i, uint64_t w, const std::string &msg) {
    Slot &s = slot_at(i);
    uint32_t st = state_of(w);
    if (!s.word.compare_exchange_weak(w, pack(gen_of(w), st == TIMED_OUT ? LATE : COMPLETING),
                                      std::memory_order_acq_rel))
        return false;
    warn_report(msg);
    if (st == ABANDONED) slot_free(i);
    return true;
}

// Finishes slot i (of token generation `gen`) with ret, for a plugin's
// completion or a worker's.  A live request's waiter gets ret, and a
// successful read's data is copied to the caller's buffer from `data` (a
// worker's buffer) or the slot's bounce buffer, holding the slot in
// COMPLETING; a timed-out one is reported and only its slot is touched.
void complete_slot(uint32_t i, uint64_t gen, int ret, const uint8_t *data) {
    Slot &s = slot_at(i);
    for (;;) {
        uint64_t w = s.word.load(std::memory_order_acquire);
        uint32_t st = state_of(w);
        if ((gen_of(w) & 0x7fffffff) != gen || st == DONE || st == FREE || st == COMPLETING || st == LATE) {
            warn_report("Driver '" + (s.pd ? s.pd->name : std::string("?")) +
                        "' completed a request that was already completed; ignored");
            return;
        }
        if (st == TIMED_OUT || st == ABANDONED) {
            if (finish_timed_out(i, w, "Driver '" + s.pd->name + "' completed a " + describe(s) +
                                           " after it had timed out; ignored"))
                return;
            continue;
        }
        if (!s.word.compare_exchange_weak(w, pack(gen_of(w), COMPLETING), std::memory_order_acq_rel))
            continue;
        // Live, and held: the caller's buffer is still the caller's.
        if (!data && s.bounced) data = s.bounce.p;
        if (data && s.op == PluginOp::Read && ret == 0 && s.count) std::memcpy(s.buf, data, s.count);
        s.ret = ret;
        // The waiter only once it waits: while SUBMITTED, await_suspend
        // may be storing it right now (a data race TSan reports).
        std::coroutine_handle<> waiter;
        AioContext *ctx = nullptr;
        if (st == WAITING) {
            waiter = s.waiter;
            ctx = s.ctx;
        }
        s.word.store(pack(gen_of(w), DONE), std::memory_order_release);
        if (st == WAITING) ctx->schedule(waiter);
        return;
    }
}

// A request that timed out before a worker started it is never started:
// its slot is finished as a late completion would.
void drop_unstarted(uint32_t i) {
    Slot &s = slot_at(i);
    const std::string msg = "Driver '" + s.pd->name + "' had not started a " + describe(s) +
                            " when it timed out; not started";
    while (!finish_timed_out(i, s.word.load(std::memory_order_acquire), msg)) {}
}

// --- the watchdog: times out requests a plugin never completes ---------------

// One watchdog per loop that has requests waiting, attached to that loop's
// context: each queue has a context of its own, and a watchdog on another
// queue's context would run only when that queue runs (or never, once its
// drive is closed and its context gone with the source).
// Also the callback data of its source (a copy of its entry).
struct Watchdog {
    AioContext *ctx;
    GSource *src;
};
std::vector<Watchdog> &watchdogs() {  // under table().lock
    static std::vector<Watchdog> w;
    return w;
}

void watchdog_forget(GSource *src) {  // under table().lock
    auto &v = watchdogs();
    for (auto it = v.begin(); it != v.end(); ++it)
        if (it->src == src) return void(v.erase(it));
}

gboolean watchdog_cb(gpointer p) {
    auto *d = static_cast<Watchdog *>(p);
    Table &t = table();
    uint32_t used;
    {
        std::lock_guard<std::mutex> g(t.lock);
        used = t.used;
    }
    int64_t now = now_ns();
    for (uint32_t i = 0; i < used; i++) {
        Slot &s = slot_at(i);
        uint64_t w = s.word.load(std::memory_order_acquire);
        if (state_of(w) != WAITING || s.ctx != d->ctx || s.deadline_ns > now) continue;
        if (!s.word.compare_exchange_strong(w, pack(gen_of(w), TIMED_OUT), std::memory_order_acq_rel))
            continue;  // completed meanwhile
        s.node->broken.store(true);
        warn_report("Driver '" + s.pd->name + "' did not complete a " + describe(s) + " within " +
                    std::to_string(s.node->timeout_ns / 1'000'000'000) +
                    " s; the request fails with ETIMEDOUT and the node with EIO from now on");
        s.ctx->schedule(s.waiter);
    }
    // Stop when nothing of this loop waits.  Decided under the lock that
    // watchdog_arm takes after a request starts waiting: a request missed
    // here arms a new watchdog.
    std::lock_guard<std::mutex> g(t.lock);
    for (uint32_t i = 0; i < t.used; i++) {
        Slot &s = slot_at(i);
        if (state_of(s.word.load(std::memory_order_acquire)) == WAITING && s.ctx == d->ctx)
            return G_SOURCE_CONTINUE;
    }
    watchdog_forget(d->src);
    return G_SOURCE_REMOVE;
}

void watchdog_arm() {
    AioContext *ctx = &AioContext::main();
    Table &t = table();
    std::lock_guard<std::mutex> g(t.lock);
    for (const Watchdog &w : watchdogs())
        if (w.ctx == ctx) return;
    GSource *src = g_timeout_source_new(250);
    // Destroyed with its context too (a drive closed with a request still
    // waiting): then it is forgotten, and a new context at the same
    // address gets a watchdog of its own.
    g_source_set_callback(src, watchdog_cb, new Watchdog{ctx, src}, [](gpointer p) {
        auto *d = static_cast<Watchdog *>(p);
        {
            std::lock_guard<std::mutex> g(table().lock);
            watchdog_forget(d->src);
        }
        delete d;
    });
    watchdogs().push_back({ctx, src});
    g_source_attach(src, ctx->gcontext());
    g_source_unref(src);
}

// --- the worker pool of the blocking thread models ------------------------------

thread_local bool tls_worker = false;
thread_local bool tls_children_gone = false;
thread_local PluginHandle *tls_core = nullptr;  // inside call_blocking
thread_local AioContext *tls_loop = nullptr;
std::atomic<std::thread::id> loop_thread{};

class Pool {
public:
    void submit(uint32_t i) {
        std::unique_lock<std::mutex> g(lock_);
        queue_.push_back(i);
        // Idle workers woken for earlier requests may not have taken them
        // yet: count those requests, or a burst would queue behind one
        // slow request (a PARALLEL driver run serially).
        if (size_t(idle_) < queue_.size() && threads_ < kMaxThreads) {
            threads_++;
            std::thread([this] { run(); }).detach();
        }
        g.unlock();
        cond_.notify_one();
    }

private:
    static constexpr int kMaxThreads = 32;
    void run() {
        tls_worker = true;
        std::unique_lock<std::mutex> g(lock_);
        for (;;) {
            idle_++;
            cond_.wait(g, [this] { return !queue_.empty(); });
            idle_--;
            uint32_t i = queue_.front();
            queue_.pop_front();
            g.unlock();
            execute(i);
            g.lock();
        }
    }
    static void execute(uint32_t i);

    std::mutex lock_;
    std::condition_variable cond_;
    std::deque<uint32_t> queue_;
    int idle_ = 0, threads_ = 0;
};

Pool &pool() {
    // Never destroyed: detached workers may still hold it at exit.
    static Pool *p = new Pool;
    return *p;
}

int call_blocking(const Slot &s, const PluginHandle &core, uint8_t *buf) {
    const mbd_driver &c = core.pd->c;
    void *h = core.handle;
    switch (s.op) {
    case PluginOp::Read: return c.pread(h, buf, s.count, s.offset, s.flags);
    case PluginOp::Write: return c.pwrite ? c.pwrite(h, buf, s.count, s.offset, s.flags) : -ENOTSUP;
    case PluginOp::Flush: return c.flush ? c.flush(h) : 0;
    case PluginOp::Zero: return c.zero ? c.zero(h, s.count, s.offset, s.flags) : -ENOTSUP;
    case PluginOp::Discard: return c.discard ? c.discard(h, s.count, s.offset) : 0;
    }
    return -EINVAL;
}

// Runs `fn` (which may touch the caller's buffer) holding the slot in
// COMPLETING, so that the watchdog cannot time it out meanwhile; false,
// without running it, when the request has already timed out.
template <class F>
bool while_live(Slot &s, F fn) {
    for (;;) {
        uint64_t w = s.word.load(std::memory_order_acquire);
        if (state_of(w) != SUBMITTED && state_of(w) != WAITING) return false;
        if (!s.word.compare_exchange_weak(w, pack(gen_of(w), COMPLETING), std::memory_order_acq_rel))
            continue;
        fn();
        s.word.store(w, std::memory_order_release);  // back to SUBMITTED or WAITING
        return true;
    }
}

void Pool::execute(uint32_t i) {
    // The plugin reads and writes this worker's buffer, never the caller's:
    // a pread that returns after the timeout fills memory of ours.  Grown
    // to the request size; one above Bounce::kKeep is freed after use.
    thread_local Bounce mine;
    Slot &s = slot_at(i);
    uint64_t gen = gen_of(s.word.load(std::memory_order_acquire));
    // Never s.node: a request that timed out may outlive its node.  Our
    // reference keeps the plugin open until we let go, which we do before
    // finishing the slot: while the request is live its node holds one
    // too (the caller has not seen the result, so it has not closed the
    // drive), and the plugin is closed on the loop thread as usual; for a
    // timed-out request whose node has gone, ours may be the last, and
    // the plugin is closed here, after our call returned.
    std::shared_ptr<PluginHandle> core = std::move(s.job);
    std::unique_lock<std::mutex> serial;
    if (s.pd->c.thread_model == MBD_THREAD_SERIALIZE) serial = std::unique_lock<std::mutex>(core->serialize);
    const bool data = s.op == PluginOp::Read || s.op == PluginOp::Write;
    if (data && !mine.reserve(s.count)) {
        serial = {};
        core.reset();
        return complete_slot(i, gen & 0x7fffffff, -ENOMEM, nullptr);
    }
    // Waiting behind a serialized request may have taken it past its
    // timeout (and its drive may have been closed since): then it is not
    // started at all.
    bool live = s.op == PluginOp::Write ? while_live(s, [&] { std::memcpy(mine.p, s.buf, s.count); })
                                        : while_live(s, [] {});
    if (!live) {
        serial = {};
        core.reset();
        return drop_unstarted(i);
    }
    // The plugin's child I/O runs on the request's loop (the queue's),
    // not on this thread's default one, which no one may be running.
    tls_core = core.get();
    tls_loop = s.ctx;
    int r = call_blocking(s, *core, mine.p);
    tls_core = nullptr;
    tls_loop = nullptr;
    serial = {};
    core.reset();
    complete_slot(i, gen & 0x7fffffff, r, s.op == PluginOp::Read ? mine.p : nullptr);
    mine.trim();
}

void call_async(Slot &s, mbd_request *req, void *buf) {
    const mbd_driver &c = s.node->pd->c;
    void *h = s.node->handle;
    switch (s.op) {
    case PluginOp::Read: c.aio_read(h, req, buf, s.count, s.offset, s.flags); return;
    case PluginOp::Write:
        if (c.aio_write) return c.aio_write(h, req, buf, s.count, s.offset, s.flags);
        break;
    case PluginOp::Flush:
        if (c.aio_flush) return c.aio_flush(h, req);
        return mbd_request_complete(req, 0);  // nothing cached: nothing to flush
    case PluginOp::Zero:
        if (c.aio_zero) return c.aio_zero(h, req, s.count, s.offset, s.flags);
        break;
    case PluginOp::Discard:
        if (c.aio_discard) return c.aio_discard(h, req, s.count, s.offset);
        return mbd_request_complete(req, 0);  // discard is a hint
    }
    mbd_request_complete(req, -ENOTSUP);
}

}  // namespace

// Released by a worker, the plugin outlived its node (the last request
// of a closed drive has just returned): the node's children are gone
// with it, so a close that reads or flushes its children gets EIO.
PluginHandle::~PluginHandle() {
    if (!handle) return;
    tls_children_gone = tls_worker;
    if (locks) pd->c.lock_release(handle);
    if (pd->c.close) pd->c.close(handle);
    tls_children_gone = false;
}

bool plugin_children_gone() { return tls_children_gone; }
PluginHandle *plugin_worker_core() { return tls_core; }
AioContext *plugin_worker_loop() { return tls_loop; }

const char *plugin_op_name(PluginOp op) {
    switch (op) {
    case PluginOp::Read: return "read";
    case PluginOp::Write: return "write";
    case PluginOp::Flush: return "flush";
    case PluginOp::Zero: return "write-zeroes";
    case PluginOp::Discard: return "discard";
    }
    return "request";
}

bool plugin_on_loop_thread() {
    return !tls_worker && loop_thread.load(std::memory_order_relaxed) == std::this_thread::get_id();
}

void plugin_note_loop_thread() { loop_thread.store(std::this_thread::get_id(), std::memory_order_relaxed); }

bool PluginRequest::await_ready() {
    if (node->broken.load(std::memory_order_relaxed)) {
        immediate = -EIO;
        return true;
    }
    int64_t i = slot_alloc();
    if (i < 0) {
        immediate = -EAGAIN;
        return true;
    }
    slot = uint32_t(i);
    Slot &s = slot_at(slot);
    s.pd = node->pd;
    s.node = node;
    s.ctx = &AioContext::main();
    s.op = op;
    s.buf = buf;
    s.count = count;
    s.offset = offset;
    s.flags = flags;
    s.ret = 0;
    s.bounced = false;
    const bool async = node->pd->c.thread_model == MBD_THREAD_ASYNC;
    if (async && (op == PluginOp::Read || op == PluginOp::Write) && !node->pd->c.abandon) {
        // A driver that cannot be told to let go of the caller's buffer
        // works on the slot's.
        if (!s.bounce.reserve(count)) {
            slot_free(slot);
            immediate = -ENOMEM;
            return true;
        }
        if (op == PluginOp::Write && count) std::memcpy(s.bounce.p, buf, count);
        s.bounced = true;
    }
    uint64_t gen = gen_of(s.word.load(std::memory_order_relaxed));
    s.word.store(pack(gen, SUBMITTED), std::memory_order_release);
    if (async) {
        call_async(s, token(slot, gen), s.bounced ? s.bounce.p : buf);
        // Completed inline (null-co, a cache hit): no suspension at all.
        return state_of(s.word.load(std::memory_order_acquire)) == DONE;
    }
    s.job = node->core;
    pool().submit(slot);
    return false;
}

bool PluginRequest::await_suspend(std::coroutine_handle<> h) {
    Slot &s = slot_at(slot);
    s.waiter = h;
    s.deadline_ns = now_ns() + node->timeout_ns;
    uint64_t w = s.word.load(std::memory_order_acquire);
    // A completion is storing its result right now: it is a few
    // instructions from DONE.
    while (state_of(w) == COMPLETING) {
        std::this_thread::yield();
        w = s.word.load(std::memory_order_acquire);
    }
    if (state_of(w) != SUBMITTED) return false;
    if (!s.word.compare_exchange_strong(w, pack(gen_of(w), WAITING), std::memory_order_acq_rel))
        return false;  // completed meanwhile: go on without suspending
    watchdog_arm();
    return true;
}

// The waiter of a timed-out request, on its loop thread: an async driver
// that can be told lets go of the caller's buffer before the caller sees
// ETIMEDOUT; then the slot waits for the late completion (or is freed now,
// if it came already).
int PluginRequest::timed_out(uint64_t w) {
    Slot &s = slot_at(slot);
    const mbd_driver &c = node->pd->c;
    if (state_of(w) == TIMED_OUT && c.thread_model == MBD_THREAD_ASYNC && c.abandon)
        c.abandon(node->handle, token(slot, gen_of(w)));
    for (;;) {
        w = s.word.load(std::memory_order_acquire);
        if (state_of(w) == LATE) {
            slot_free(slot);
            return -ETIMEDOUT;
        }
        if (s.word.compare_exchange_weak(w, pack(gen_of(w), ABANDONED), std::memory_order_acq_rel))
            return -ETIMEDOUT;
    }
}

int PluginRequest::await_resume() {
    if (immediate != 1) return immediate;
    Slot &s = slot_at(slot);
    uint64_t w = s.word.load(std::memory_order_acquire);
    while (state_of(w) == COMPLETING) {  // resumed without suspending, mid-completion
        std::this_thread::yield();
        w = s.word.load(std::memory_order_acquire);
    }
    if (state_of(w) == TIMED_OUT || state_of(w) == LATE) return timed_out(w);
    int r = s.ret;
    slot_free(slot);
    // Data completions are 0 or a negative errno; anything else is the
    // plugin's bug, reported once per request and turned into EIO.
    if (r > 0 || r < -4095) {
        warn_report("Driver '" + node->pd->name + "' completed a " + plugin_op_name(op) +
                    (op == PluginOp::Flush ? "" : " at offset " + std::to_string(offset)) + " with " +
                    std::to_string(r) + ", which is neither 0 nor a negative errno");
        return -EIO;
    }
    return r;
}

}  // namespace mb

extern "C" {

MB_DRIVER_API void mbd_request_complete(mbd_request *req, int ret) {
    using namespace mb;
    uintptr_t v = reinterpret_cast<uintptr_t>(req);
    uint32_t idx = uint32_t(v & 0xffffffff);
    uint64_t gen = v >> 32;
    Table &t = table();
    uint32_t used;
    {
        std::lock_guard<std::mutex> g(t.lock);
        used = t.used;
    }
    if (idx == 0 || idx > used) {
        warn_report("mbd_request_complete() called with an invalid request; ignored");
        return;
    }
    complete_slot(idx - 1, gen, ret, nullptr);
}

namespace {
struct Delayed {
    mbd_request *req;
    int ret;
};
gboolean delayed_cb(gpointer p) {
    auto *d = static_cast<Delayed *>(p);
    mbd_request_complete(d->req, d->ret);
    return G_SOURCE_REMOVE;
}
}  // namespace

MB_DRIVER_API void mbd_request_complete_after(mbd_request *req, int ret, uint64_t ns) {
    if (ns == 0) return mbd_request_complete(req, ret);
    // A source driven by its ready time alone: nanosecond latencies, no
    // rounding to GLib's millisecond timeouts.
    static GSourceFuncs funcs = {nullptr, nullptr,
                                 [](GSource *, GSourceFunc cb, gpointer data) { return cb(data); },
                                 nullptr, nullptr, nullptr};
    GSource *src = g_source_new(&funcs, sizeof(GSource));
    g_source_set_ready_time(src, g_get_monotonic_time() + gint64(std::min<uint64_t>(ns, 3600'000'000'000) / 1000));
    g_source_set_callback(src, delayed_cb, new Delayed{req, ret},
                          [](gpointer p) { delete static_cast<Delayed *>(p); });
    g_source_attach(src, mb::AioContext::main().gcontext());
    g_source_unref(src);
}

}  // extern "C"
