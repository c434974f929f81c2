// The event-loop services of the driver ABI (include/miniblock/driver.h):
// fd watches and timers for asynchronous protocol plugins, as GSources on
// the GMainContext of the AioContext the node was opened on.  That is the
// loop the core's own nbd client uses, so a plugin client runs exactly like
// it: readiness dispatched on the loop thread, requests completed from
// there with mbd_request_complete().
//
// A watch or timer is its GSource (mbd_watch * and mbd_timer * point to
// it): removing one destroys the source, which GLib guarantees is never
// dispatched afterwards, even from inside another source's dispatch in the
// same iteration; GLib holds its own reference while dispatching, so a
// callback may remove its own watch.
#include <algorithm>
#include <cerrno>

#include "block/aio.h"
#include "block/plugin/plugin.h"

namespace mb {

namespace {

struct Watch {
    GSource src;  // first: a Watch * is its GSource *
    gpointer tag;
    int fd;
    mbd_fd_cb *cb;
    void *opaque;
};

struct Timer {
    GSource src;
    mbd_timer_cb *cb;
    void *opaque;
};

GIOCondition to_glib(int events) {
    int c = G_IO_HUP | G_IO_ERR | G_IO_NVAL;  // always reported, as poll(2) does
    if (events & MBD_FD_READ) c |= G_IO_IN;
    if (events & MBD_FD_WRITE) c |= G_IO_OUT;
    return GIOCondition(c);
}

gboolean watch_dispatch(GSource *src, GSourceFunc, gpointer) {
    auto *w = reinterpret_cast<Watch *>(src);
#ifdef G_OS_UNIX
    GIOCondition c = g_source_query_unix_fd(src, w->tag);
#else
    GIOCondition c = GIOCondition(0);
#endif
    int revents = 0;
    if (c & G_IO_IN) revents |= MBD_FD_READ;
    if (c & G_IO_OUT) revents |= MBD_FD_WRITE;
    if (c & (G_IO_HUP | G_IO_ERR | G_IO_NVAL)) revents |= MBD_FD_ERROR;
    if (revents) w->cb(w->opaque, w->fd, revents);
    return G_SOURCE_CONTINUE;
}

GSourceFuncs watch_funcs = {nullptr, nullptr, watch_dispatch, nullptr, nullptr, nullptr};

gboolean timer_dispatch(GSource *src, GSourceFunc, gpointer) {
    auto *t = reinterpret_cast<Timer *>(src);
    g_source_set_ready_time(src, -1);  // one shot; the callback may re-arm
    t->cb(t->opaque);
    return G_SOURCE_CONTINUE;
}

GSourceFuncs timer_funcs = {nullptr, nullptr, timer_dispatch, nullptr, nullptr, nullptr};

AioContext *ctx_of(mbd_loop *l) { return reinterpret_cast<AioContext *>(l); }

}  // namespace

}  // namespace mb

using namespace mb;

extern "C" {

MB_DRIVER_API mbd_loop *mbd_node_loop(mbd_node *) {
    // Open runs on the loop of the node's queue (its AioContext is the
    // thread's current one): that is where its requests run.
    return reinterpret_cast<mbd_loop *>(&AioContext::current());
}

MB_DRIVER_API mbd_watch *mbd_fd_watch(mbd_loop *loop, int fd, int events, mbd_fd_cb *cb, void *opaque) {
    if (!loop || fd < 0 || !cb || (events & ~(MBD_FD_READ | MBD_FD_WRITE))) {
        mbd_error(EINVAL, "mbd_fd_watch: invalid arguments (fd %d, events %d)", fd, events);
        return nullptr;
    }
#ifndef G_OS_UNIX
    // GLib watches fds only on POSIX systems (Windows has HANDLEs).
    (void)opaque;
    mbd_error(ENOTSUP, "mbd_fd_watch: fd watches are not supported on this system");
    return nullptr;
#else
    GSource *src = g_source_new(&watch_funcs, sizeof(Watch));
    auto *w = reinterpret_cast<Watch *>(src);
    w->fd = fd;
    w->cb = cb;
    w->opaque = opaque;
    w->tag = g_source_add_unix_fd(src, fd, to_glib(events));
    g_source_attach(src, ctx_of(loop)->gcontext());
    return reinterpret_cast<mbd_watch *>(w);
#endif
}

MB_DRIVER_API void mbd_fd_watch_set(mbd_watch *mw, int events) {
    auto *w = reinterpret_cast<Watch *>(mw);
#ifdef G_OS_UNIX
    if (w) g_source_modify_unix_fd(&w->src, w->tag, to_glib(events));
#else
    (void)w;
    (void)events;
#endif
}

MB_DRIVER_API void mbd_fd_unwatch(mbd_watch *mw) {
    auto *w = reinterpret_cast<Watch *>(mw);
    if (!w) return;
    g_source_destroy(&w->src);
    g_source_unref(&w->src);
}

MB_DRIVER_API mbd_timer *mbd_timer_new(mbd_loop *loop, mbd_timer_cb *cb, void *opaque) {
    if (!loop || !cb) return nullptr;
    GSource *src = g_source_new(&timer_funcs, sizeof(Timer));
    auto *t = reinterpret_cast<Timer *>(src);
    t->cb = cb;
    t->opaque = opaque;
    g_source_set_ready_time(src, -1);
    g_source_attach(src, ctx_of(loop)->gcontext());
    return reinterpret_cast<mbd_timer *>(t);
}

MB_DRIVER_API void mbd_timer_arm(mbd_timer *mt, uint64_t ns) {
    auto *t = reinterpret_cast<Timer *>(mt);
    if (!t) return;
    ns = std::min<uint64_t>(ns, 3600'000'000'000);
    g_source_set_ready_time(&t->src, g_get_monotonic_time() + gint64(ns / 1000));
}

MB_DRIVER_API void mbd_timer_cancel(mbd_timer *mt) {
    if (auto *t = reinterpret_cast<Timer *>(mt)) g_source_set_ready_time(&t->src, -1);
}

MB_DRIVER_API void mbd_timer_free(mbd_timer *mt) {
    auto *t = reinterpret_cast<Timer *>(mt);
    if (!t) return;
    g_source_destroy(&t->src);
    g_source_unref(&t->src);
}

}  // extern "C"
