// How a queue's private loop context reaches an embedder's loop
// (include/miniblock/miniblock.h, "Queues"): everything on that context
// runs from the embedder's loop, not only the notify fd.  The context holds
// more than completions: a protocol's sockets and timers (nbd), the core's
// request-timeout watchdog (block/plugin/requests.cpp), whatever a plugin
// adds with mbd_fd_watch/mbd_timer_*.  Both ways below derive what to wait
// for from the context itself (g_main_context_prepare/query: its fds and
// its earliest timer), as QEMU's aio_get_g_source makes an AioContext one
// GSource of the main loop:
//
// - mbq_attach_glib: a GSource on the embedder's GMainContext whose fds are
//   the private context's fds and whose timeout is its earliest timer; its
//   dispatch runs one non-blocking iteration of the private context, then
//   hands the completions to the embedder's callback.
// - mbq_get_completion_fd (Linux): an epoll fd holding the private
//   context's fds plus a timerfd set to its earliest timer, both brought up
//   to date at the end of every mbq_do_io (and synchronous call), so that
//   the fd is readable whenever mbq_do_io(min = 0) has something to run.
#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>
#include <vector>

#ifndef _WIN32
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>
#endif

#include "block/capi-internal.h"

namespace mb::capi {

namespace {

// The private context's fds and its timeout in ms (-1: no timer), as its
// next iteration would poll them; true if a source is ready now.  Leaves
// the context prepared but not checked: a source found ready keeps its
// ready flag until an iteration dispatches it.
bool query_private(AioContext &ctx, std::vector<GPollFD> &fds, int *timeout_ms) {
    GMainContext *g = ctx.gcontext();
    // Owned by another thread (which breaks the queue's one-thread
    // contract): nothing to learn, and nothing of ours may run here.
    if (!g_main_context_acquire(g)) {
        fds.clear();
        *timeout_ms = -1;
        return false;
    }
    gint max_prio = G_MAXINT;
    bool ready = g_main_context_prepare(g, &max_prio);
    if (fds.size() < 8) fds.resize(8);
    int n;
    while ((n = g_main_context_query(g, max_prio, timeout_ms, fds.data(), int(fds.size()))) > int(fds.size()))
        fds.resize(n);
    fds.resize(n);
    g_main_context_release(g);
    return ready;
}

}  // namespace

// --- mbq_attach_glib ------------------------------------------------------------

namespace {

struct Forward {
    GSource src;  // first: a Forward * is its GSource *
    mb_queue *handle;
    // What query_private found, and the records of it polled by the
    // embedder's context (each a GPollFD of its own: GLib keeps the pointer).
    std::vector<GPollFD> *found;
    std::vector<GPollFD *> *polled;
    gint64 deadline;  // of the private context's earliest timer; -1: none
};

bool same_set(const std::vector<GPollFD> &a, const std::vector<GPollFD *> &b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); i++)
        if (a[i].fd != b[i]->fd || a[i].events != b[i]->events) return false;
    return true;
}

gboolean forward_prepare(GSource *src, gint *timeout) {
    auto *f = reinterpret_cast<Forward *>(src);
    QueueImpl *q = f->handle->impl;
    *timeout = -1;
    if (!q) return FALSE;
    for (GPollFD *p : *f->polled) p->revents = 0;
    // Completions the callback has not had yet (more than one dispatch
    // hands out, or left by an mbq_do_io of the embedder's).
    if (!q->completed.empty()) {
        *timeout = 0;
        return TRUE;
    }
    int tmo;
    bool ready = query_private(*q->ctx, *f->found, &tmo);
    // Changed only when the set changes: every change wakes the embedder's
    // context once (GLib signals it), which must not happen per iteration.
    if (!same_set(*f->found, *f->polled)) {
        for (GPollFD *p : *f->polled) {
            g_source_remove_poll(src, p);
            delete p;
        }
        f->polled->clear();
        for (const GPollFD &fd : *f->found) {
            auto *p = new GPollFD(fd);
            p->revents = 0;
            f->polled->push_back(p);
            g_source_add_poll(src, p);
        }
    }
    if (ready) tmo = 0;
    f->deadline = tmo < 0 ? -1 : g_get_monotonic_time() + gint64(tmo) * 1000;
    *timeout = tmo;
    return ready;
}

gboolean forward_check(GSource *src) {
    auto *f = reinterpret_cast<Forward *>(src);
    QueueImpl *q = f->handle->impl;
    if (!q) return FALSE;
    if (!q->completed.empty()) return TRUE;
    for (GPollFD *p : *f->polled)
        if (p->revents & (p->events | G_IO_HUP | G_IO_ERR | G_IO_NVAL)) return TRUE;
    return f->deadline >= 0 && g_get_monotonic_time() >= f->deadline;
}

gboolean forward_dispatch(GSource *src, GSourceFunc, gpointer) {
    auto *f = reinterpret_cast<Forward *>(src);
    mb_queue *h = f->handle;
    QueueImpl *q = h->impl;
    if (!q) return G_SOURCE_REMOVE;
    {
        // One pass of the private context: its sockets, its timers, the
        // notify fd's completions.  Every completion it finds is kept
        // (want: none is waited for), then all go to the callback.
        AioContext::Scope scope(*q->ctx);
        q->want = INT_MAX;
        q->ctx->run_pending();
        q->ctx->poll(false);
    }
    // Taken one by one off the queue's list, so that the ones after a
    // callback that detaches the queue stay there for mbq_do_io.  At most
    // those there now: completions of requests the callbacks submit wait
    // for the next dispatch, so that a busy queue does not starve the
    // embedder's other sources.
    for (size_t left = q->completed.size(); left > 0 && !q->completed.empty(); left--) {
        Completion done = std::move(q->completed.front());
        q->completed.pop_front();
        struct mb_completion c = {done.user_data, done.ret, done.ret < 0 ? done.msg.c_str() : nullptr};
        q->glib_cb(&c, q->glib_opaque);
        // The callback may detach the queue or close its drive: then
        // nothing more of this dispatch runs (q may be freed).
        if (h->impl != q || q->glib_source != src) return G_SOURCE_REMOVE;
    }
    return G_SOURCE_CONTINUE;
}

void forward_finalize(GSource *src) {
    auto *f = reinterpret_cast<Forward *>(src);
    for (GPollFD *p : *f->polled) delete p;
    delete f->polled;
    delete f->found;
}

GSourceFuncs forward_funcs = {forward_prepare, forward_check, forward_dispatch, forward_finalize, nullptr, nullptr};

}  // namespace

GSource *new_forward_source(mb_queue *handle) {
    GSource *src = g_source_new(&forward_funcs, sizeof(Forward));
    auto *f = reinterpret_cast<Forward *>(src);
    f->handle = handle;
    f->found = new std::vector<GPollFD>();
    f->polled = new std::vector<GPollFD *>();
    f->deadline = -1;
    g_source_set_name(src, "miniblock queue");
    return src;
}

// --- the completion fd (Linux) ------------------------------------------------------

#ifndef _WIN32

struct FdWatch {
    int epfd = -1;
    int tfd = -1;  // timerfd: the private context's earliest timer
    int notify = -1;  // the AioContext's eventfd, registered once
    gint64 armed = -1;  // the timerfd's deadline (monotonic us); -1: disarmed
    std::vector<GPollFD> found;
    std::vector<GPollFD> registered;  // the context's fds in epfd, but notify
};

void FdWatchDeleter::operator()(FdWatch *w) const {
    if (w->epfd >= 0) close(w->epfd);
    if (w->tfd >= 0) close(w->tfd);
    delete w;
}

namespace {

uint32_t to_epoll(gushort ev) {
    uint32_t e = 0;
    if (ev & G_IO_IN) e |= EPOLLIN;
    if (ev & G_IO_OUT) e |= EPOLLOUT;
    if (ev & G_IO_PRI) e |= EPOLLPRI;
    return e;
}

void set_timer(FdWatch &w, gint64 deadline_us) {
    struct itimerspec its = {};
    if (deadline_us >= 0) {
        // Absolute, on CLOCK_MONOTONIC: GLib's clock.  0 would disarm.
        gint64 t = std::max<gint64>(deadline_us, 1);
        its.it_value.tv_sec = t / G_USEC_PER_SEC;
        its.it_value.tv_nsec = (t % G_USEC_PER_SEC) * 1000;
    }
    timerfd_settime(w.tfd, TFD_TIMER_ABSTIME, &its, nullptr);
    w.armed = deadline_us;
}

}  // namespace

int completion_fd(QueueImpl *q) {
    if (q->fdw) return q->fdw->epfd;
    std::unique_ptr<FdWatch, FdWatchDeleter> w(new FdWatch);
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd < 0)
        return fail(errno, std::string("mbq_get_completion_fd: epoll_create1: ") + strerror(errno));
    w->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (w->tfd < 0)
        return fail(errno, std::string("mbq_get_completion_fd: timerfd_create: ") + strerror(errno));
    w->notify = q->ctx->notify_fd();
    struct epoll_event ev = {};
    ev.events = EPOLLIN;
    ev.data.fd = w->tfd;
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->tfd, &ev) < 0 ||
        (ev.data.fd = w->notify, epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->notify, &ev) < 0))
        return fail(errno, std::string("mbq_get_completion_fd: epoll_ctl: ") + strerror(errno));
    q->fdw = std::move(w);
    rearm_completion_fd(q);
    return q->fdw->epfd;
}

void rearm_completion_fd(QueueImpl *q) {
    if (!q->fdw) return;
    FdWatch &w = *q->fdw;
    int tmo;
    bool ready = query_private(*q->ctx, w.found, &tmo);
    // The context's fds but the eventfd (registered once, never closed):
    // the others (a plugin's socket) may have been closed and their number
    // reused since, which drops them from epfd silently, so each is added
    // again (EEXIST: still there).  A socket costs a system call per call.
    for (const GPollFD &old : w.registered) {
        bool kept = false;
        for (const GPollFD &fd : w.found) kept |= fd.fd == old.fd;
        if (!kept) epoll_ctl(w.epfd, EPOLL_CTL_DEL, old.fd, nullptr);
    }
    w.registered.clear();
    for (const GPollFD &fd : w.found) {
        if (fd.fd == w.notify) continue;
        struct epoll_event ev = {};
        ev.events = to_epoll(fd.events);
        ev.data.fd = fd.fd;
        if (epoll_ctl(w.epfd, EPOLL_CTL_ADD, fd.fd, &ev) < 0 && errno == EEXIST)
            epoll_ctl(w.epfd, EPOLL_CTL_MOD, fd.fd, &ev);
        w.registered.push_back(fd);
    }
    // Completions left, or a source ready now: readable at once.
    if (ready || !q->completed.empty()) return q->ctx->notify();
    if (tmo < 0) {
        if (w.armed >= 0) set_timer(w, -1);
        return;
    }
    // The timer's ms are rounded up (GLib's query): a deadline already set
    // within that ms is kept, unless it has expired (the timerfd stays
    // readable until set again).
    gint64 now = g_get_monotonic_time();
    gint64 deadline = now + gint64(tmo) * 1000;
    if (w.armed > now && w.armed > deadline - 1000 && w.armed < deadline + 1000) return;
    set_timer(w, deadline);
}

#else

// Windows has no completion fd (mbq_get_completion_handle): nothing to hold.
struct FdWatch {};
void FdWatchDeleter::operator()(FdWatch *w) const { delete w; }
void rearm_completion_fd(QueueImpl *) {}

#endif

}  // namespace mb::capi
