/*
 * crash-sim: a filter that simulates a power failure, in the manner of
 * SQLite's test6.c.  A disk with a volatile write cache promises nothing
 * about a write until the next flush: on power loss each unflushed write may
 * be lost, kept, or torn (some of its sectors written, others not; a sector
 * itself is atomic).  SIGKILL cannot show that, because the host's page
 * cache survives the process; this filter can.
 *
 *   - Writes, write-zeroes and discards are kept in memory (a discard as
 *     zeroes, which is what the file protocol leaves), and reads see them.
 *   - A flush writes them to the child in order (the core then flushes the
 *     child).  Past max-unflushed bytes the oldest go to the child early, as
 *     a disk's cache writes back on its own.
 *   - The power fails when the (crash-after + 1)-th write-type request or
 *     flush (crash-on=request) or flush (crash-on=flush) arrives: a random
 *     subset of the unflushed writes, chosen by `seed`, reaches the child,
 *     and that request and every later one fails with EIO.  With exit=on
 *     (the default) the process then ends with status 75, as a machine
 *     without power would (no close, no final flush).
 *
 * Written against the public driver ABI with the SERIALIZE thread model:
 * one request at a time, so the list of unflushed writes needs no lock
 * (get_length, on the loop thread, reads only an atomic).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef MB_BUILD_AS_MODULE
#define MB_BUILTIN_DRIVER crash_sim
#endif
#include "miniblock/driver.h"

#define SECTOR 512
#define CRASH_EXIT_STATUS 75
/* Bookkeeping charged per unflushed write towards max-unflushed, so that a
 * flood of tiny writes is bounded too. */
#define ENTRY_COST 64

struct pending {
    uint64_t offset, len;
    uint8_t *data; /* NULL: zeroes */
};

struct crash_sim {
    mbd_child *file;
    uint64_t rng;
    int64_t crash_after; /* requests (or flushes) that pass; -1: never */
    int on_flush;        /* count flushes only */
    int do_exit;
    uint64_t max_unflushed;
    uint64_t counted;
    int crashed;
    struct pending *w;
    size_t n, cap, head; /* w[head..n) are unflushed */
    uint64_t bytes;      /* charged to max-unflushed */
    _Atomic int64_t max_end;
};

/* splitmix64: small, and the same sequence everywhere for a seed. */
static uint64_t next_rand(struct crash_sim *h) {
    uint64_t z = (h->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void *crash_open(mbd_node *node) {
    struct crash_sim *h;
    const char *on = mbd_opt_str(node, "crash-on");
    int64_t after = mbd_opt_int(node, "crash-after", -1);
    int64_t max = mbd_opt_int(node, "max-unflushed", 64 << 20);
    int on_flush;

    if (after < -1) {
        mbd_error(EINVAL, "Invalid crash-after %" PRId64, after);
        mbd_error_hint("Expected a count of requests that pass (0 or more), or -1 for no power failure");
        return NULL;
    }
    if (!on || strcmp(on, "request") == 0) on_flush = 0;
    else if (strcmp(on, "flush") == 0) on_flush = 1;
    else {
        mbd_error(EINVAL, "Invalid crash-on '%s'", on);
        mbd_error_hint("Valid values: request, flush");
        return NULL;
    }
    if (max < 0) {
        mbd_error(EINVAL, "Invalid max-unflushed %" PRId64, max);
        return NULL;
    }
    h = calloc(1, sizeof(*h));
    if (!h) {
        mbd_error(ENOMEM, "Could not allocate the crash-sim state");
        return NULL;
    }
    h->rng = (uint64_t)mbd_opt_int(node, "seed", 1);
    h->crash_after = after;
    h->on_flush = on_flush;
    h->do_exit = (int)mbd_opt_int(node, "exit", 1);
    h->max_unflushed = (uint64_t)max;
    h->file = mbd_open_child(node, "file", MBD_CHILD_FILE);
    if (!h->file) {
        free(h);
        return NULL;
    }
    int64_t len = mbd_child_length(h->file);
    atomic_init(&h->max_end, len > 0 ? len : 0);
    return h;
}

static void drop_all(struct crash_sim *h) {
    for (size_t i = h->head; i < h->n; i++) free(h->w[i].data);
    h->n = h->head = 0;
    h->bytes = 0;
}

/* Writes `len` bytes of w (from `skip` into it) to the child. */
static int put(struct crash_sim *h, const struct pending *w, uint64_t skip, uint64_t len) {
    static const uint8_t zeroes[64 * 1024];
    if (w->data) return mbd_child_pwrite(h->file, w->data + skip, len, w->offset + skip, 0);
    while (len) {
        uint64_t n = len < sizeof(zeroes) ? len : sizeof(zeroes);
        int r = mbd_child_pwrite(h->file, zeroes, n, w->offset + skip, 0);
        if (r < 0) return r;
        skip += n;
        len -= n;
    }
    return 0;
}

/* Writes the oldest unflushed writes to the child until at most `keep`
 * bytes are charged.  On failure the rest stays unflushed. */
static int write_back(struct crash_sim *h, uint64_t keep) {
    while (h->head < h->n && h->bytes > keep) {
        struct pending *w = &h->w[h->head];
        int r = put(h, w, 0, w->len);
        if (r < 0) return r;
        h->bytes -= (w->data ? w->len : 0) + ENTRY_COST;
        free(w->data);
        h->head++;
    }
    if (h->head == h->n) h->n = h->head = 0;
    return 0;
}

/* The power fails: each unflushed write is dropped, kept or torn. */
static int power_fail(struct crash_sim *h) {
    unsigned kept = 0, torn = 0, dropped = 0;
    size_t unflushed = h->n - h->head;
    h->crashed = 1;
    for (size_t i = h->head; i < h->n; i++) {
        struct pending *w = &h->w[i];
        switch (next_rand(h) % 3) {
        case 0: dropped++; break;
        case 1:
            kept++;
            (void)put(h, w, 0, w->len);
            break;
        default:
            /* Sectors at the disk's 512-byte boundaries, each kept or not. */
            torn++;
            for (uint64_t s = 0; s < w->len;) {
                uint64_t end = ((w->offset + s) / SECTOR + 1) * SECTOR - w->offset;
                if (end > w->len) end = w->len;
                if (next_rand(h) & 1) (void)put(h, w, s, end - s);
                s = end;
            }
        }
    }
    drop_all(h);
    (void)mbd_child_flush(h->file);
    fprintf(stderr,
            "crash-sim: simulated power failure at request %" PRIu64
            ": %zu unflushed writes, %u kept, %u torn, %u dropped\n",
            h->counted + 1, unflushed, kept, torn, dropped);
    fflush(stderr);
    if (h->do_exit) _Exit(CRASH_EXIT_STATUS);
    return -EIO;
}

/* Every request but a read passes here first: 0, or -EIO once the power
 * has failed (now or before). */
static int tick(struct crash_sim *h, int is_flush) {
    if (h->crashed) return -EIO;
    if (h->on_flush && !is_flush) return 0;
    if (h->crash_after >= 0 && h->counted == (uint64_t)h->crash_after) return power_fail(h);
    h->counted++;
    return 0;
}

/* Records a write (buf NULL: zeroes).  Room is made first, so that a
 * failure leaves this write unrecorded. */
static int add(struct crash_sim *h, const void *buf, uint64_t count, uint64_t offset) {
    struct pending *w;
    uint64_t end = offset + count, cost = (buf ? count : 0) + ENTRY_COST;
    int64_t cur;
    int r = write_back(h, h->max_unflushed > cost ? h->max_unflushed - cost : 0);
    if (r < 0) return r;
    if (h->head && h->n == h->cap) { /* the written-back prefix is dead */
        memmove(h->w, h->w + h->head, (h->n - h->head) * sizeof(*h->w));
        h->n -= h->head;
        h->head = 0;
    }
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        struct pending *nw = realloc(h->w, cap * sizeof(*nw));
        if (!nw) return -ENOMEM;
        h->w = nw;
        h->cap = cap;
    }
    w = &h->w[h->n];
    w->offset = offset;
    w->len = count;
    w->data = NULL;
    if (buf) {
        if (!(w->data = malloc(count))) return -ENOMEM;
        memcpy(w->data, buf, count);
    }
    h->n++;
    h->bytes += cost;
    cur = atomic_load(&h->max_end);
    while ((int64_t)end > cur && !atomic_compare_exchange_weak(&h->max_end, &cur, (int64_t)end)) {
    }
    return 0;
}

static void crash_close(void *handle) {
    struct crash_sim *h = handle;
    /* Closed with the power on: the disk writes its cache out. */
    if (!h->crashed && write_back(h, 0) == 0) (void)mbd_child_flush(h->file);
    drop_all(h);
    free(h->w);
    free(h);
}

static int64_t crash_get_length(void *handle) {
    struct crash_sim *h = handle;
    int64_t len = mbd_child_length(h->file);
    int64_t end = atomic_load(&h->max_end);
    return len < 0 || len > end ? len : end;
}

static int crash_pread(void *handle, void *buf, uint64_t count, uint64_t offset, uint32_t flags) {
    struct crash_sim *h = handle;
    uint8_t *b = buf;
    int r;
    (void)flags;
    if (h->crashed) return -EIO;
    /* The child reads zeroes past its end, where unflushed writes may be. */
    if ((r = mbd_child_pread(h->file, buf, count, offset, 0)) < 0) return r;
    for (size_t i = h->head; i < h->n; i++) {
        const struct pending *w = &h->w[i];
        uint64_t s = w->offset > offset ? w->offset : offset;
        uint64_t e = w->offset + w->len < offset + count ? w->offset + w->len : offset + count;
        if (s >= e) continue;
        if (w->data) memcpy(b + (s - offset), w->data + (s - w->offset), e - s);
        else memset(b + (s - offset), 0, e - s);
    }
    return 0;
}

static int crash_pwrite(void *handle, const void *buf, uint64_t count, uint64_t offset, uint32_t flags) {
    struct crash_sim *h = handle;
    int r = tick(h, 0);
    if (r < 0) return r;
    /* FUA needs nothing here: the core flushes a filter after a FUA write. */
    (void)flags;
    return add(h, buf, count, offset);
}

static int crash_zero(void *handle, uint64_t count, uint64_t offset, uint32_t flags) {
    return crash_pwrite(handle, NULL, count, offset, flags);
}

static int crash_discard(void *handle, uint64_t count, uint64_t offset) {
    return crash_pwrite(handle, NULL, count, offset, 0);
}

/* The core flushes the child after this succeeds. */
static int crash_flush(void *handle) {
    struct crash_sim *h = handle;
    int r = tick(h, 1);
    if (r < 0) return r;
    return write_back(h, 0);
}

static const struct mbd_option crash_options[] = {
    {"seed", MBD_OPT_INT, 0, "1", "seed of the choices made at the power failure", NULL},
    {"crash-after", MBD_OPT_INT, 0, "-1",
     "the power fails when this many requests have passed (-1: never)", NULL},
    {"crash-on", MBD_OPT_STR, 0, "request",
     "what crash-after counts: request (writes, write-zeroes, discards, flushes) or flush", NULL},
    {"max-unflushed", MBD_OPT_SIZE, 0, "64M",
     "unflushed bytes kept in memory; past this the oldest go to the child", NULL},
    {"exit", MBD_OPT_BOOL, 0, "on",
     "end the process (status 75) at the power failure; off: fail every request with EIO", NULL},
    {NULL, 0, 0, NULL, NULL, NULL},
};

static struct mbd_driver crash_sim_driver = {
    .name = "crash-sim",
    .description = "crash-sim: a filter that keeps unflushed writes and simulates power failures",
    .kind = MBD_FILTER,
    .thread_model = MBD_THREAD_SERIALIZE,
    .options = crash_options,
    .open = crash_open,
    .close = crash_close,
    .get_length = crash_get_length,
    .pread = crash_pread,
    .pwrite = crash_pwrite,
    .flush = crash_flush,
    .zero = crash_zero,
    .discard = crash_discard,
};

MBD_REGISTER(crash_sim_driver)
