// The event loop on Windows: block/aio.h's interface, built by meson instead
// of block/aio.cpp when the host is Windows.
//
// Linux wakes the loop through an eventfd and completes native AIO through
// libaio; Windows has neither, and GLib's loop there waits on HANDLEs
// (WaitForMultipleObjectsEx), not on fds.  So:
//  * every completion, whichever thread it comes from, goes through
//    AioContext::schedule(), which signals ONE manual-reset event HANDLE;
//    that HANDLE is the only thing the loop polls for us.  Never an event
//    per request: WaitForMultipleObjects stops at 64 handles, and a queue
//    depth of 64 would end the loop;
//  * blocking calls (ReadFile/WriteFile at an explicit offset, flush,
//    truncate) run in the same pool of worker threads as aio=threads on
//    Linux; each worker waits for its own overlapped request on an event of
//    its own (thread_local in file-win32.cpp), so the pool, not the loop,
//    carries the per-request waits;
//  * there is no native AIO: linux_aio() says so.
//
// ThreadPool, spawn, CoMutex and CoRwLock are shared with Linux
// (aio-common.cpp); aio.cpp holds the Linux-only parts (libaio, eventfd).
#include "block/aio.h"

#include <windows.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>

namespace mb {

namespace {

// A GSource polling one HANDLE.  GPollFD.fd carries the HANDLE on Windows.
struct EventSource {
    GSource base;
    GPollFD pfd;
};

gboolean event_prepare(GSource *, gint *timeout) {
    *timeout = -1;
    return FALSE;
}

gboolean event_check(GSource *s) {
    return (reinterpret_cast<EventSource *>(s)->pfd.revents & G_IO_IN) != 0;
}

// The callback is AioContext::dispatch_cb, stored as a GSourceFunc and cast
// back to its exact type here (the way GLib's own fd sources call theirs);
// the casts go through void (*)(), the generic function pointer type.
using EventCallback = gboolean (*)(gint, GIOCondition, gpointer);
using AnyFunc = void (*)();
gboolean event_dispatch(GSource *, GSourceFunc cb, gpointer data) {
    return reinterpret_cast<EventCallback>(reinterpret_cast<AnyFunc>(cb))(0, G_IO_IN, data);
}

GSourceFuncs event_funcs = {event_prepare, event_check, event_dispatch, nullptr, nullptr, nullptr};

}  // namespace

// --- AioContext -----------------------------------------------------------

AioContext::AioContext(GMainContext *ctx)
    : ctx_(ctx ? g_main_context_ref(ctx) : g_main_context_ref(g_main_context_default())) {
    // Manual reset: the loop resets it before draining, so a completion that
    // arrives while it drains sets it again and is never lost.
    HANDLE ev = CreateEventW(nullptr, TRUE, FALSE, nullptr);
    if (!ev) g_error("miniblock: CreateEvent failed (error %lu)", GetLastError());
    event_ = ev;
    source_ = g_source_new(&event_funcs, sizeof(EventSource));
    auto *es = reinterpret_cast<EventSource *>(source_);
    es->pfd.fd = reinterpret_cast<gintptr>(ev);
    es->pfd.events = G_IO_IN;
    es->pfd.revents = 0;
    g_source_add_poll(source_, &es->pfd);
    g_source_set_callback(source_, reinterpret_cast<GSourceFunc>(reinterpret_cast<AnyFunc>(dispatch_cb)),
                          this, nullptr);
    g_source_attach(source_, ctx_);
    if (const char *ns = getenv("MINIBLOCK_POLL_NS")) poll_.set_max(atoll(ns));
}

AioContext::~AioContext() {
    pool_.reset();
    g_source_destroy(source_);
    g_source_unref(source_);
    CloseHandle(static_cast<HANDLE>(event_));
    g_main_context_unref(ctx_);
}

void AioContext::notify() { SetEvent(static_cast<HANDLE>(event_)); }

// No native AIO on Windows: nothing to batch.
void AioContext::io_plug() {}
void AioContext::io_unplug() {}

void AioContext::schedule(std::coroutine_handle<> h) {
    bool was_empty;
    {
        std::lock_guard<std::mutex> g(lock_);
        was_empty = scheduled_.empty();
        scheduled_.push_back(h);
        has_scheduled_.store(true, std::memory_order_release);
    }
    // One wake-up per batch: the loop drains everything it finds.
    if (was_empty) SetEvent(static_cast<HANDLE>(event_));
}

bool AioContext::run_scheduled(bool from_loop) {
    // Reset before taking the batch: whatever is scheduled after this point
    // sets the event again.
    if (from_loop) ResetEvent(static_cast<HANDLE>(event_));
    std::vector<std::coroutine_handle<>> batch;
    {
        std::lock_guard<std::mutex> g(lock_);
        batch.swap(scheduled_);
        has_scheduled_.store(false, std::memory_order_relaxed);
    }
    for (auto h : batch) h.resume();
    return !batch.empty();
}

gboolean AioContext::dispatch_cb(gint, GIOCondition, gpointer opaque) {
    static_cast<AioContext *>(opaque)->run_scheduled(true);
    return G_SOURCE_CONTINUE;
}

bool AioContext::poll_queues() {
    if (has_scheduled_.load(std::memory_order_acquire)) return run_scheduled(false);
    return false;
}

bool AioContext::worth_polling() const {
    // Worker threads only while they leave a core free for the spinner
    // (no native AIO here).
    static const int cores = (int)std::max(1u, std::thread::hardware_concurrency());
    return pool_ && pool_->in_flight() > 0 && pool_->in_flight() < cores;
}

ThreadPool &AioContext::thread_pool() {
    if (!pool_) pool_ = std::make_unique<ThreadPool>(*this);
    return *pool_;
}

Result<LinuxAio *> AioContext::linux_aio() {
    return Status::Error(ENOTSUP, "aio=native is not supported on Windows",
                         "Use aio=threads (the default)");
}

// Never constructed on Windows; unique_ptr<LinuxAio> needs the destructor.
LinuxAio::~LinuxAio() = default;

}  // namespace mb
