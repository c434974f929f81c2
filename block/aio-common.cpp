// The parts of the event loop that are the same on every system: spawn, the
// coroutine locks, the thread's current context and the leaked main one,
// the loop's adaptive busy-poll and the worker thread pool
// (aio=threads on Linux, every blocking call on Windows).  aio.cpp (eventfd,
// libaio) and aio-win32.cpp (one event HANDLE) hold what differs.
#include "block/aio.h"

#include <algorithm>
#include <cerrno>
#include <chrono>

namespace mb {

// --- spawn ----------------------------------------------------------------

namespace {
// A self-destroying coroutine that owns a Task and awaits it.
struct Detached {
    struct promise_type {
        Detached get_return_object() { return {}; }
        std::suspend_never initial_suspend() noexcept { return {}; }
        std::suspend_never final_suspend() noexcept { return {}; }
        void return_void() {}
        void unhandled_exception() noexcept { std::terminate(); }
    };
};
Detached run_detached(Task<void> t) { co_await t; }
}  // namespace

void spawn(Task<void> task) { run_detached(std::move(task)); }

void CoMutex::unlock() {
    if (waiters_.empty()) {
        locked_ = false;
        return;
    }
    // Ownership passes to the next waiter; resuming it from the loop keeps
    // the stack flat.
    auto h = waiters_.front();
    waiters_.pop_front();
    AioContext::main().wake(h);
}

void CoRwLock::unlock() {
    if (writer_) writer_ = false; else readers_--;
    // Hand the lock to the waiters at the head that can now have it.
    while (!waiters_.empty()) {
        Waiter w = waiters_.front();
        if (w.exclusive ? (writer_ || readers_ > 0) : writer_) break;
        waiters_.pop_front();
        if (w.exclusive) writer_ = true; else readers_++;
        AioContext::main().wake(w.h);
        if (w.exclusive) break;
    }
}

// --- the current context ----------------------------------------------------

namespace {
thread_local AioContext *current_ctx = nullptr;
}

AioContext &AioContext::main() {
    if (current_ctx) return *current_ctx;
    // Leaked on purpose: worker threads and sources may still refer to it
    // while static destructors run.  Its own GMainContext, not GLib's
    // default, so that nothing of ours runs inside an embedder's loop.
    static AioContext *ctx = [] {
        GMainContext *g = g_main_context_new();
        auto *c = new AioContext(g);
        g_main_context_unref(g);
        // Linux: no eventfd (out of fds).  Windows cannot get here: its
        // constructor stops the process when CreateEvent fails.
        if (c->init_errno()) g_error("miniblock: eventfd: %s", g_strerror(c->init_errno()));
        return c;
    }();
    return *ctx;
}

AioContext::Scope::Scope(AioContext &ctx) : prev_(current_ctx) { current_ctx = &ctx; }
AioContext::Scope::~Scope() { current_ctx = prev_; }

// --- wake-ups ------------------------------------------------------------------

namespace {
// The context whose run_scheduled is resuming a coroutine on this thread.
thread_local AioContext *resuming = nullptr;
}  // namespace

AioContext::Resuming::Resuming(AioContext *ctx) : prev_(resuming) { resuming = ctx; }
AioContext::Resuming::~Resuming() { resuming = prev_; }

void AioContext::wake(std::coroutine_handle<> h) {
    if (resuming == this) woken_.push_back(h);
    else schedule(h);
}

void AioContext::run_woken() {
    // A woken coroutine may wake others: they run in the same pass.  Taken
    // whole, so that a nested loop (sync_wait) runs only what comes later.
    while (!woken_.empty()) {
        std::vector<std::coroutine_handle<>> batch;
        batch.swap(woken_);
        for (auto h : batch) h.resume();
    }
}

// --- the loop ---------------------------------------------------------------

void AioContext::poll(bool may_block) {
    // A coroutine that woke a waiter and then waits in a nested loop: the
    // waiter first (nothing would signal the loop for it).
    if (!woken_.empty()) {
        run_woken();
        return;
    }
    if (!may_block || !worth_polling()) {
        polled_in_a_row_ = 0;
        g_main_context_iteration(ctx_, may_block);
        return;
    }
    // Spin on the completion queues for the adaptive window first
    // (block/aio-poll.h); every so often the loop proper runs even while
    // polling makes progress, so that other sources (sockets, timers, an
    // embedder's) are served.
    auto start = std::chrono::steady_clock::now();
    if (poll_.window() > 0 && polled_in_a_row_ < 16) {
        auto end = start + std::chrono::nanoseconds(poll_.window());
        do {
            if (poll_queues()) {
                polled_in_a_row_++;
                return;
            }
        } while (std::chrono::steady_clock::now() < end);
    }
    polled_in_a_row_ = 0;
    // Only a wait that ended with an event measures anything: a wake-up
    // with nothing to dispatch (GLib's own) would look like a short wait.
    if (g_main_context_iteration(ctx_, true)) {
        auto waited = std::chrono::steady_clock::now() - start;
        poll_.update(std::chrono::duration_cast<std::chrono::nanoseconds>(waited).count());
    }
}

// --- ThreadPool -----------------------------------------------------------

ThreadPool::ThreadPool(AioContext &ctx, int max_threads) : ctx_(ctx), max_threads_(max_threads) {}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> g(lock_);
        stopping_ = true;
    }
    cond_.notify_all();
    for (auto &t : threads_) t.join();
}

void ThreadPool::submit(Job *job) {
    in_flight_.fetch_add(1, std::memory_order_relaxed);
    bool spawn_thread = false;
    {
        std::lock_guard<std::mutex> g(lock_);
        queue_.push_back(job);
        // A new worker only when every existing one is busy: the pool grows
        // to the queue depth the user asks for, up to max_threads_.
        if (idle_ < static_cast<int>(queue_.size()) &&
            static_cast<int>(threads_.size()) < max_threads_) {
            spawn_thread = true;
        }
        if (spawn_thread) threads_.emplace_back([this] { worker(); });
        if (idle_ == 0) return;  // a busy worker takes it from the queue next
    }
    cond_.notify_one();
}

void ThreadPool::worker() {
    std::unique_lock<std::mutex> g(lock_);
    for (;;) {
        idle_++;
        cond_.wait(g, [this] { return stopping_ || !queue_.empty(); });
        idle_--;
        if (queue_.empty()) return;  // stopping
        Job *job = queue_.front();
        queue_.pop_front();
        g.unlock();
        job->ret = job->fn(job);
        in_flight_.fetch_sub(1, std::memory_order_relaxed);
        ctx_.schedule(job->waiter);
        g.lock();
    }
}

}  // namespace mb
