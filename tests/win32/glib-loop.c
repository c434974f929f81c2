/* glib-loop: the mingw GLib prefix (scripts/mingw-glib.sh) works under Wine
 * the way block/aio-win32.cpp uses it: a GMainContext of our own (not the
 * default one) wakes up for an event HANDLE that another thread signals, and
 * for a timeout.  Prints TAP and "N passed, M failed". */
#include <glib.h>
#include <windows.h>

#include <stdio.h>

static int count, failed;

static void check(int cond, const char *what) {
    count++;
    if (!cond) failed++;
    printf("%s %d - %s\n", cond ? "ok" : "not ok", count, what);
}

typedef struct {
    GSource base;
    GPollFD pfd;
} EventSource;

static gboolean ev_prepare(GSource *s, gint *timeout) {
    (void)s;
    *timeout = -1;
    return FALSE;
}
static gboolean ev_check(GSource *s) { return (((EventSource *)s)->pfd.revents & G_IO_IN) != 0; }
static gboolean ev_dispatch(GSource *s, GSourceFunc cb, gpointer data) {
    (void)s;
    return cb(data);
}
static GSourceFuncs ev_funcs = {ev_prepare, ev_check, ev_dispatch, NULL, NULL, NULL};

static HANDLE event;
static int woken, timed_out;

static gboolean on_event(gpointer data) {
    (void)data;
    ResetEvent(event);
    woken++;
    return G_SOURCE_CONTINUE;
}
static gboolean on_timeout(gpointer data) {
    (void)data;
    timed_out = 1;
    return G_SOURCE_REMOVE;
}
static gpointer signaller(gpointer data) {
    (void)data;
    g_usleep(50 * 1000);
    SetEvent(event);
    return NULL;
}

int main(void) {
    GMainContext *ctx = g_main_context_new();
    event = CreateEventW(NULL, TRUE, FALSE, NULL);
    GSource *src = g_source_new(&ev_funcs, sizeof(EventSource));
    EventSource *es = (EventSource *)src;
    es->pfd.fd = (gintptr)event;
    es->pfd.events = G_IO_IN;
    g_source_add_poll(src, &es->pfd);
    g_source_set_callback(src, on_event, NULL, NULL);
    g_source_attach(src, ctx);

    check(glib_check_version(2, 66, 0) == NULL, "GLib is 2.66 or newer");
    GThread *t = g_thread_new("signaller", signaller, NULL);
    gint64 t0 = g_get_monotonic_time();
    while (!woken && g_get_monotonic_time() - t0 < 5 * G_USEC_PER_SEC) g_main_context_iteration(ctx, TRUE);
    g_thread_join(t);
    check(woken == 1, "a blocking iteration wakes for an event HANDLE set by another thread");

    GSource *to = g_timeout_source_new(20);
    g_source_set_callback(to, on_timeout, NULL, NULL);
    g_source_attach(to, ctx);
    g_source_unref(to);
    t0 = g_get_monotonic_time();
    while (!timed_out && g_get_monotonic_time() - t0 < 5 * G_USEC_PER_SEC) g_main_context_iteration(ctx, TRUE);
    check(timed_out && woken == 1, "a timeout fires, and the reset event does not wake the loop again");

    g_source_destroy(src);
    g_source_unref(src);
    g_main_context_unref(ctx);
    CloseHandle(event);
    printf("1..%d\n%d passed, %d failed\n", count, count - failed, failed);
    return failed != 0;
}
