/* An embedder of the queue API that drives a queue ONLY through its own
 * loop, never through a blocking mbq_do_io: either a queue attached to the
 * embedder's GMainContext (mbq_attach_glib) and that context iterated, or
 * the completion fd in a plain poll() loop (mbq_get_completion_fd).  Run by
 * queue-loops.sh against real nbdkit servers: everything the queue's own
 * loop context holds (the nbd socket, the core's request-timeout watchdog,
 * nbd's own timers) must run from the embedder's loop alone.
 *
 *   queue-loops MODE SPEC CASE
 * MODE: glib | fd.  CASE:
 *   data     write 8 blocks, read them back (a plain server)
 *   timeout  read 4 blocks from a server that answers too late: each read
 *            must fail with ETIMEDOUT (request-timeout in SPEC)
 *   detach   (glib) 4 reads in flight, detach: no callback afterwards, the
 *            reads complete through mbq_do_io, then close
 *   close    (glib) 4 reads in flight, mb_close with the source attached:
 *            no callback during or after it, the context stays usable
 *   close-in-callback, detach-in-callback  (glib) 8 reads; the first
 *            callback closes the drive (detaches the queue): no further
 *            callback, no use of the freed queue
 * The waiting cases also report whether the process used less than 0.5 s
 * of CPU: a loop that spins instead of sleeping until the private
 * context's next fd or timer burns seconds of it here.
 * Prints what happened (one line per completion, then a summary) and exits
 * 0 when it is what CASE expects.  Every wait is bounded (20 s): a hang is
 * reported as one, never waited out. */
#include <errno.h>
#include <glib.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "miniblock/miniblock.h"

#define BS 4096
#define MAXREQ 8
#define LIMIT_US (20 * G_USEC_PER_SEC)

static int done, callbacks_after;
static int stop_counting;
static unsigned char *bufs;

static mb_drive *drive;
static mb_queue *queue;
static const char *in_callback;  /* what the first callback does */

static const char *cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double t = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    return t < 0.5 ? "less than 0.5 s of CPU" : "0.5 s of CPU or more (a busy loop)";
}

static double secs(gint64 since) { return (double)(g_get_monotonic_time() - since) / G_USEC_PER_SEC; }

static void record(const struct mb_completion *c) {
    intptr_t k = (intptr_t)c->user_data;
    if (c->ret < 0)
        printf("request %d: %s (%s)\n", (int)k, strerror(-c->ret), c->error_msg ? c->error_msg : "no message");
    else
        printf("request %d: ok\n", (int)k);
    done++;
}

static void on_complete(const struct mb_completion *c, void *opaque) {
    (void)opaque;
    if (stop_counting) {
        callbacks_after++;
        return;
    }
    record(c);
    if (in_callback && !strcmp(in_callback, "close")) {
        mb_close(drive);
        drive = NULL;
        stop_counting = 1;
    } else if (in_callback && !strcmp(in_callback, "detach")) {
        mbq_detach_glib(queue);
        stop_counting = 1;
    }
}

static gboolean wake(gpointer p) {
    *(int *)p = 1;
    return G_SOURCE_REMOVE;
}

/* Iterates `ctx` (and nothing else) until `want` completions or `limit_us`. */
static void run_glib(GMainContext *ctx, int want, gint64 limit_us) {
    int expired = 0;
    GSource *t = g_timeout_source_new((guint)(limit_us / 1000));
    g_source_set_callback(t, wake, &expired, NULL);
    g_source_attach(t, ctx);
    while (done < want && !expired) g_main_context_iteration(ctx, TRUE);
    g_source_destroy(t);
    g_source_unref(t);
}

/* poll() on the completion fd alone until `want` completions or the limit. */
static void run_fd(mb_queue *q, int want) {
    int fd = mbq_get_completion_fd(q);
    if (fd < 0) {
        printf("mbq_get_completion_fd: %s\n", mb_last_error());
        exit(1);
    }
    gint64 end = g_get_monotonic_time() + LIMIT_US;
    while (done < want) {
        gint64 left = end - g_get_monotonic_time();
        if (left <= 0) return;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)(left / 1000) + 1);
        if (r < 0 && errno != EINTR) return;
        struct mb_completion c[MAXREQ];
        int n = mbq_do_io(q, c, 0, MAXREQ, NULL);
        if (n < 0) {
            printf("mbq_do_io: %s\n", mb_last_error());
            exit(1);
        }
        for (int i = 0; i < n; i++) record(&c[i]);
    }
}

static void submit(mb_queue *q) {
    if (mbq_do_io(q, NULL, 0, 0, NULL) < 0) {
        printf("mbq_do_io (submit): %s\n", mb_last_error());
        exit(1);
    }
}

static void enqueue_reads(mb_queue *q, int n) {
    for (int i = 0; i < n; i++)
        if (mbq_read(q, (int64_t)i * BS, bufs + (size_t)i * BS, BS, (void *)(intptr_t)i, 0) < 0) {
            printf("mbq_read: %s\n", mb_last_error());
            exit(1);
        }
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s glib|fd SPEC data|timeout|detach|close\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1], *spec = argv[2], *what = argv[3];
    int glib = !strcmp(mode, "glib");
    char *err = NULL;
    mb_drive *d = mb_open(spec, &err);
    if (!d) {
        printf("mb_open: %s\n", err);
        return 1;
    }
    mb_queue *q = mb_get_queue(d, 0);
    drive = d;
    queue = q;
    bufs = calloc(MAXREQ, BS);
    GMainContext *ctx = NULL;
    if (glib) {
        ctx = g_main_context_new();
        if (mbq_attach_glib(q, ctx, on_complete, NULL) < 0) {
            printf("mbq_attach_glib: %s\n", mb_last_error());
            return 1;
        }
    }
    gint64 start = g_get_monotonic_time();
    int ok = 0;

    if (!strcmp(what, "data")) {
        for (int i = 0; i < MAXREQ; i++) {
            memset(bufs + (size_t)i * BS, 0x40 + i, BS);
            mbq_write(q, (int64_t)i * BS, bufs + (size_t)i * BS, BS, (void *)(intptr_t)i, 0);
        }
        submit(q);
        if (glib) run_glib(ctx, MAXREQ, LIMIT_US); else run_fd(q, MAXREQ);
        int writes = done;
        memset(bufs, 0, (size_t)MAXREQ * BS);
        done = 0;
        enqueue_reads(q, MAXREQ);
        submit(q);
        if (glib) run_glib(ctx, MAXREQ, LIMIT_US); else run_fd(q, MAXREQ);
        int same = 0;
        for (int i = 0; i < MAXREQ; i++) {
            int j = 0;
            while (j < BS && bufs[(size_t)i * BS + j] == 0x40 + i) j++;
            same += j == BS;
        }
        printf("%s: %d of %d writes and %d of %d reads completed, %d blocks read back intact\n", mode, writes,
               MAXREQ, done, MAXREQ, same);
        ok = writes == MAXREQ && done == MAXREQ && same == MAXREQ;
    } else if (!strcmp(what, "timeout")) {
        enqueue_reads(q, 4);
        submit(q);
        if (glib) run_glib(ctx, 4, LIMIT_US); else run_fd(q, 4);
        double t = secs(start);
        const char *c = cpu();
        printf("%s: %d of 4 reads completed, after %s, with %s\n", mode, done,
               done < 4 ? "more than 20 s (a hang)" : t < 5 ? "less than 5 s" : "more than 5 s", c);
        ok = done == 4 && t < 5 && c[0] == 'l';
    } else if (glib && !strcmp(what, "detach")) {
        enqueue_reads(q, 4);
        submit(q);
        run_glib(ctx, 4, G_USEC_PER_SEC / 2);  /* the server answers after 3 s */
        int before = done;
        if (mbq_detach_glib(q) < 0) return printf("mbq_detach_glib: %s\n", mb_last_error()), 1;
        stop_counting = 1;
        struct mb_completion c[4];
        struct timespec limit = {20, 0};
        int n = mbq_do_io(q, c, 4, 4, &limit);
        run_glib(ctx, 1000, G_USEC_PER_SEC / 5);  /* nothing of ours may run there now */
        int good = 0;
        for (int i = 0; i < n; i++) good += c[i].ret == 0;
        const char *t = cpu();
        printf("glib: %d callbacks before detach, %d after it; %d of 4 reads completed by mbq_do_io, with %s\n",
               before, callbacks_after, good, t);
        ok = before == 0 && callbacks_after == 0 && good == 4 && t[0] == 'l';
    } else if (glib && !strcmp(what, "close")) {
        enqueue_reads(q, 4);
        submit(q);
        run_glib(ctx, 4, G_USEC_PER_SEC / 2);
        int before = done;
        stop_counting = 1;
        mb_close(d);
        d = NULL;
        run_glib(ctx, 1000, G_USEC_PER_SEC / 5);
        int r = mbq_detach_glib(q);
        printf("glib: %d callbacks before close, %d after it; then mbq_detach_glib: %d (%s)\n", before,
               callbacks_after, r, mb_last_error());
        ok = before == 0 && callbacks_after == 0 && r == -EBADF;
    } else if (glib && (!strcmp(what, "close-in-callback") || !strcmp(what, "detach-in-callback"))) {
        in_callback = !strcmp(what, "close-in-callback") ? "close" : "detach";
        enqueue_reads(q, MAXREQ);
        submit(q);
        run_glib(ctx, MAXREQ, 2 * G_USEC_PER_SEC);  /* the other 7 must never come */
        int detached = in_callback[0] == 'd';
        struct mb_completion c[MAXREQ];
        int rest = detached ? mbq_do_io(q, c, 0, MAXREQ, NULL) : 0;
        /* Detached: the rest are there for mbq_do_io (waited for if needed). */
        if (detached && rest >= 0 && rest < MAXREQ - 1) {
            struct timespec limit = {20, 0};
            int more = mbq_do_io(q, c + rest, MAXREQ - 1 - rest, MAXREQ - 1 - rest, &limit);
            if (more > 0) rest += more;
        }
        printf("glib: %d callback, then %s in it; %d callbacks after it, %d completions left for mbq_do_io\n", done,
               detached ? "mbq_detach_glib" : "mb_close", callbacks_after, rest);
        ok = done == 1 && callbacks_after == 0 && rest == (detached ? MAXREQ - 1 : 0);
        d = drive;
    } else {
        fprintf(stderr, "unknown case %s %s\n", mode, what);
        return 2;
    }
    if (d) mb_close(d);
    if (ctx) g_main_context_unref(ctx);
    free(bufs);
    return ok ? 0 : 1;
}
