/*
 * A protocol plugin whose requests finish late, to prove that a request the
 * core timed out never touches the caller's buffer again: each read sleeps
 * `delay-ms` and then fills the buffer with `fill`; each write sleeps and
 * then reads the whole buffer.  1 MiB, built once per driver below:
 *   late-serialize  MBD_THREAD_SERIALIZE: pread/pwrite on the core's workers
 *   late-parallel   MBD_THREAD_PARALLEL: the same, several at once
 *   late-async      MBD_THREAD_ASYNC, a thread per request that finishes
 *                   late; no abandon callback (the core must bounce)
 *   late-abandon    the same with an abandon callback: an abandoned request
 *                   is completed late without touching its buffer
 *   late-filter     MBD_THREAD_PARALLEL, a filter over a file child: a
 *                   read sleeps, then reads the child (mbd_child_pread, on a
 *                   worker); close flushes the child.  Both report their
 *                   result (EIO once the node, and its child, went); built
 *                   only for late-close-asan (tests/fuzz/meson.build)
 * With delay-ms=0 a request finishes at once (inline for the async ones): a
 * blocking-model null device for bench/plugin-bounce-bench.sh.
 *
 * report=1 logs (mbd_warning) when each blocking call starts and returns and
 * when close runs, with how many calls were inside the driver then: a
 * close with a call inside would free what that call still uses (the test
 * plugins are also built under ASan, where that is a use-after-free).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <miniblock/driver.h>

#define LATE_SIZE (1 << 20)

struct pending {
    struct late *h;
    mbd_request *req;
    void *rbuf;       /* a read's buffer, or NULL */
    const void *wbuf; /* a write's buffer, or NULL */
    uint64_t count;
    int abandoned;
    struct pending *next;
};

struct late {
    int64_t delay_ms;
    int fill;
    int report;
    int inside; /* blocking calls in progress (atomic) */
    /* Async: the requests whose thread has not finished (late-abandon). */
    pthread_mutex_t lock;
    struct pending *pending;
    int closed; /* async: close ran; the last pending request frees h */
    mbd_child *file; /* late-filter */
};

static void sleep_ms(int64_t ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static void *late_open(mbd_node *node) {
    struct late *h = calloc(1, sizeof(*h));
    if (!h) {
        mbd_error(ENOMEM, "Could not allocate the late state");
        return NULL;
    }
    h->delay_ms = mbd_opt_int(node, "delay-ms", 3000);
    h->fill = (int)mbd_opt_int(node, "fill", 0xee);
    h->report = (int)mbd_opt_int(node, "report", 0);
    pthread_mutex_init(&h->lock, NULL);
#ifdef LATE_FILTER
    h->file = mbd_open_child(node, "file", MBD_CHILD_FILE);
    if (!h->file) {
        pthread_mutex_destroy(&h->lock);
        free(h);
        return NULL;
    }
#endif
    return h;
}

/* The core calls close once no call is inside the driver (docs/plugins.md,
 * "Close"): a blocking call still running after its request timed out
 * delays close until it returns.  An async driver's timed-out requests may
 * still be pending here: their threads keep the state, and the last one
 * frees it. */
static void late_close(void *handle) {
    struct late *h = handle;
    int inside = __atomic_load_n(&h->inside, __ATOMIC_SEQ_CST);
    pthread_mutex_lock(&h->lock);
    int pending = 0;
    for (struct pending *p = h->pending; p; p = p->next) pending++;
    h->closed = 1;
    pthread_mutex_unlock(&h->lock);
    if (h->report)
        mbd_warning("%s: closed with %d calls inside and %d requests pending", LATE_NAME, inside, pending);
#ifdef LATE_FILTER
    int r = mbd_child_flush(h->file);
    if (h->report) mbd_warning("%s: the child's flush in close returned %d", LATE_NAME, r);
#endif
    if (pending) return;
    pthread_mutex_destroy(&h->lock);
    free(h);
}

static int64_t late_get_length(void *handle) {
#ifdef LATE_FILTER
    return mbd_child_length(((struct late *)handle)->file);
#else
    (void)handle;
    return LATE_SIZE;
#endif
}

/* A scratch copy of a written buffer: reading all of it is the point. */
static void consume(const void *buf, uint64_t count) {
    void *copy = malloc(count);
    if (copy) memcpy(copy, buf, count);
    free(copy);
}

#ifndef LATE_ASYNC
static void enter(struct late *h, const char *what, uint64_t offset) {
    __atomic_add_fetch(&h->inside, 1, __ATOMIC_SEQ_CST);
    if (h->report) mbd_warning("%s: %s at offset %llu starts", LATE_NAME, what, (unsigned long long)offset);
}

/* Reads h after the sleep: after a close that did not wait for us, that
 * is the use-after-free. */
static void leave(struct late *h, const char *what, uint64_t offset) {
    if (h->report) mbd_warning("%s: %s at offset %llu returns", LATE_NAME, what, (unsigned long long)offset);
    __atomic_sub_fetch(&h->inside, 1, __ATOMIC_SEQ_CST);
}

static int late_pread(void *handle, void *buf, uint64_t count, uint64_t offset, uint32_t flags) {
    struct late *h = handle;
    int r = 0;
    (void)flags;
    enter(h, "read", offset);
    sleep_ms(h->delay_ms);
#ifdef LATE_FILTER
    r = mbd_child_pread(h->file, buf, count, offset, flags);
    if (h->report) mbd_warning("%s: the child's read at offset %llu returned %d", LATE_NAME,
                               (unsigned long long)offset, r);
#else
    memset(buf, h->fill, count);
#endif
    leave(h, "read", offset);
    return r;
}

static int late_pwrite(void *handle, const void *buf, uint64_t count, uint64_t offset, uint32_t flags) {
    struct late *h = handle;
    (void)flags;
    enter(h, "write", offset);
    sleep_ms(h->delay_ms);
    consume(buf, count);
    leave(h, "write", offset);
    return 0;
}

#else
/* --- the async model ------------------------------------------------------ */

static void unlink_pending(struct late *h, struct pending *p) {
    struct pending **pp = &h->pending;
    while (*pp && *pp != p) pp = &(*pp)->next;
    if (*pp) *pp = p->next;
}

static void *finish_late(void *arg) {
    struct pending *p = arg;
    struct late *h = p->h;
    sleep_ms(h->delay_ms);
    /* Under the lock: abandon (on the loop thread) either ran before, and
     * the buffer is no longer ours, or waits until we are done with it. */
    pthread_mutex_lock(&h->lock);
    if (!p->abandoned) {
        if (p->rbuf) memset(p->rbuf, h->fill, p->count);
        if (p->wbuf) consume(p->wbuf, p->count);
    }
    unlink_pending(h, p);
    int last = h->closed && !h->pending;
    int report = h->report;
    pthread_mutex_unlock(&h->lock);
    /* After close too: the core ignores a late completion (and reports
     * it), whether or not the node is still open. */
    mbd_request_complete(p->req, 0);
    free(p);
    if (last) {
        if (report) mbd_warning("%s: the last pending request finished after close", LATE_NAME);
        pthread_mutex_destroy(&h->lock);
        free(h);
    }
    return NULL;
}

static void start(struct late *h, mbd_request *req, void *rbuf, const void *wbuf, uint64_t count) {
    struct pending *p;
    pthread_t t;
    if (h->delay_ms == 0) {
        if (rbuf) memset(rbuf, h->fill, count);
        if (wbuf) consume(wbuf, count);
        mbd_request_complete(req, 0);
        return;
    }
    p = calloc(1, sizeof(*p));
    if (!p) {
        mbd_request_complete(req, -ENOMEM);
        return;
    }
    p->h = h;
    p->req = req;
    p->rbuf = rbuf;
    p->wbuf = wbuf;
    p->count = count;
    pthread_mutex_lock(&h->lock);
    p->next = h->pending;
    h->pending = p;
    pthread_mutex_unlock(&h->lock);
    if (pthread_create(&t, NULL, finish_late, p) != 0) {
        pthread_mutex_lock(&h->lock);
        unlink_pending(h, p);
        pthread_mutex_unlock(&h->lock);
        free(p);
        mbd_request_complete(req, -EAGAIN);
        return;
    }
    pthread_detach(t);
}

static void late_aio_read(void *handle, mbd_request *req, void *buf, uint64_t count, uint64_t offset,
                          uint32_t flags) {
    (void)offset;
    (void)flags;
    start(handle, req, buf, NULL, count);
}

static void late_aio_write(void *handle, mbd_request *req, const void *buf, uint64_t count,
                           uint64_t offset, uint32_t flags) {
    (void)offset;
    (void)flags;
    start(handle, req, NULL, buf, count);
}

#ifdef LATE_ABANDON
/* The core gave up on req: after this returns its buffer is not ours. */
static void late_abandon(void *handle, mbd_request *req) {
    struct late *h = handle;
    pthread_mutex_lock(&h->lock);
    for (struct pending *p = h->pending; p; p = p->next)
        if (p->req == req) p->abandoned = 1;
    pthread_mutex_unlock(&h->lock);
}
#endif
#endif /* LATE_ASYNC */

static const struct mbd_option late_options[] = {
    {"delay-ms", MBD_OPT_INT, 0, "3000", "milliseconds each request takes", NULL},
    {"fill", MBD_OPT_INT, 0, "238", "the byte a read fills its buffer with", NULL},
    {"report", MBD_OPT_INT, 0, "0", "1: log each blocking call and close", NULL},
    {NULL, 0, 0, NULL, NULL, NULL},
};

static struct mbd_driver late_driver = {
    .name = LATE_NAME,
    .description = "a test protocol whose requests finish late",
#ifdef LATE_FILTER
    .kind = MBD_FILTER,
#else
    .kind = MBD_PROTOCOL,
#endif
    .thread_model = LATE_MODEL,
    .options = late_options,
    .sharable_writes = 1,
    .open = late_open,
    .close = late_close,
    .get_length = late_get_length,
#ifdef LATE_ASYNC
    .aio_read = late_aio_read,
    .aio_write = late_aio_write,
#else
    .pread = late_pread,
    .pwrite = late_pwrite,
#endif
#ifdef LATE_ABANDON
    .abandon = late_abandon,
#endif
};

MBD_REGISTER(late_driver)
