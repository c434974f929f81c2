/*
 * blkdebug: a fault-injection filter.  Requests pass to the file child
 * unchanged until a rule matches; a matching request fails with the rule's
 * errno without reaching the child (a failed write has changed nothing).
 *
 *   rules=RULE[;RULE]...     RULE = EVENT[@OFFSET][:ERRNO][:once|:always][:after=N]
 *     EVENT   read, write, write-zeroes, discard or flush (QEMU's iotype
 *             names): fail such requests; or event=NAME: a driver event a
 *             format above announced (QEMU's blkdebug names, below) arms
 *             the rule, and the next requests fail (once: the next one),
 *             whatever their type: the event is announced just before the
 *             I/O it names
 *     OFFSET  the request must cover this byte (default: any request)
 *     ERRNO   EIO (default), ENOSPC, EROFS, EPERM, EINVAL, ENOMEM or a number
 *     once    the rule fires once, then is gone (default: always)
 *     after=N the first N matching requests (or events) pass (default 0)
 *
 *   iotype=EVENT             one more rule: every request of that type fails
 *                            with EIO (an enum option, QEMU's BlkdebugIOType
 *                            values without block-status)
 *
 * Write-zeroes and discard reach the child as such (a hole stays a hole).
 *
 * e.g. driver=qcow2,file.driver=blkdebug,file.rules=write:ENOSPC:once:after=2,
 *      file.file.driver=file,file.file.filename=a.qcow2
 *
 * Written against the public driver ABI, async model: the template for a
 * filter.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#ifndef MB_BUILD_AS_MODULE
#define MB_BUILTIN_DRIVER blkdebug
#endif
#include "miniblock/driver.h"

/* In the order of iotype_values (mbd_opt_int gives the index); EV_NAMED:
 * a driver event (event=NAME). */
enum { EV_READ, EV_WRITE, EV_ZERO, EV_DISCARD, EV_FLUSH, EV_NAMED };
static const char *const iotype_values[] = {"read", "write", "write-zeroes", "discard", "flush", NULL};
#define MAX_RULES 16

/* The driver events formats announce (bdrv_debug_event), under QEMU's
 * blkdebug names; only those some driver of ours emits (qcow2). */
static const char *const event_names[] = {
    "l1_update", "l2_load", "l2_update", "l2_alloc_write", "refblock_load",
    "refblock_update", "refblock_alloc", "refblock_alloc_hookup", "reftable_grow",
    "cluster_alloc", "cluster_free", "write_aio", "read_aio", "read_backing_aio",
    "cow_read", "cow_write", "read_compressed", "write_compressed",
};
#define N_EVENT_NAMES (sizeof(event_names) / sizeof(event_names[0]))

struct rule {
    int event;
    const char *name; /* EV_NAMED: one of event_names */
    atomic_int armed; /* EV_NAMED: the event happened */
    int64_t offset; /* -1: any */
    int err;
    int once;
    atomic_long skip; /* matching requests still to let pass */
    atomic_int spent; /* a once rule that fired */
};

struct blkdebug {
    mbd_child *file;
    int n;
    struct rule rules[MAX_RULES];
};

static int parse_errno(const char *s, int *out) {
    static const struct { const char *name; int value; } names[] = {
        {"EIO", EIO}, {"ENOSPC", ENOSPC}, {"EROFS", EROFS}, {"EPERM", EPERM},
        {"EINVAL", EINVAL}, {"ENOMEM", ENOMEM},
    };
    char *end;
    long v;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(s, names[i].name) == 0) { *out = names[i].value; return 0; }
    v = strtol(s, &end, 10);
    if (*s && !*end && v > 0 && v < 4096) { *out = (int)v; return 0; }
    return -1;
}

/* Parses one RULE in place; 0, or -1 after mbd_error. */
static int parse_rule(char *text, struct rule *r) {
    char *save = NULL, *tok, *at;
    r->offset = -1;
    r->err = EIO;
    r->once = 0;
    atomic_init(&r->skip, 0);
    atomic_init(&r->spent, 0);
    atomic_init(&r->armed, 0);
    r->name = NULL;
    tok = strtok_r(text, ":", &save);
    if (!tok) {
        mbd_error(EINVAL, "Empty blkdebug rule");
        return -1;
    }
    at = strchr(tok, '@');
    if (at) {
        char *end;
        *at = 0;
        r->offset = strtoll(at + 1, &end, 0);
        if (!at[1] || *end || r->offset < 0) {
            mbd_error(EINVAL, "Invalid offset '%s' in blkdebug rule", at + 1);
            return -1;
        }
    }
    r->event = -1;
    for (int i = 0; iotype_values[i]; i++)
        if (strcmp(tok, iotype_values[i]) == 0) r->event = i;
    if (r->event < 0 && strncmp(tok, "event=", 6) == 0) {
        r->event = EV_NAMED;
        for (size_t i = 0; i < N_EVENT_NAMES; i++)
            if (strcmp(tok + 6, event_names[i]) == 0) r->name = event_names[i];
        if (!r->name) {
            char list[512] = "";
            for (size_t i = 0; i < N_EVENT_NAMES; i++) {
                if (i) strcat(list, ", ");
                strcat(list, event_names[i]);
            }
            mbd_error(EINVAL, "Unknown blkdebug driver event '%s'", tok + 6);
            mbd_error_hint("Valid driver events: %s", list);
            return -1;
        }
    } else if (r->event < 0) {
        mbd_error(EINVAL, "Unknown blkdebug event '%s'", tok);
        mbd_error_hint("Valid events: read, write, write-zeroes, discard, flush, event=NAME");
        return -1;
    }
    while ((tok = strtok_r(NULL, ":", &save))) {
        if (strcmp(tok, "once") == 0) r->once = 1;
        else if (strcmp(tok, "always") == 0) r->once = 0;
        else if (strncmp(tok, "after=", 6) == 0) {
            char *end;
            long long n = strtoll(tok + 6, &end, 10);
            if (!tok[6] || *end || n < 0) {
                mbd_error(EINVAL, "Invalid count '%s' in blkdebug rule", tok + 6);
                return -1;
            }
            atomic_store(&r->skip, (long)n);
        } else if (parse_errno(tok, &r->err) < 0) {
            mbd_error(EINVAL, "Invalid blkdebug rule field '%s'", tok);
            mbd_error_hint("Expected an errno (EIO, ENOSPC, EROFS, EPERM, EINVAL, ENOMEM or a number), once, always or after=N");
            return -1;
        }
    }
    return 0;
}

static void *blkdebug_open(mbd_node *node) {
    struct blkdebug *h = calloc(1, sizeof(*h));
    const char *rules = mbd_opt_str(node, "rules");
    if (!h) {
        mbd_error(ENOMEM, "Could not allocate the blkdebug state");
        return NULL;
    }
    if (rules && *rules) {
        char *copy = strdup(rules), *save = NULL, *one;
        for (one = strtok_r(copy, ";", &save); one; one = strtok_r(NULL, ";", &save)) {
            if (h->n == MAX_RULES) {
                mbd_error(EINVAL, "Too many blkdebug rules (at most %d)", MAX_RULES);
                free(copy);
                free(h);
                return NULL;
            }
            if (parse_rule(one, &h->rules[h->n]) < 0) {
                free(copy);
                free(h);
                return NULL;
            }
            h->n++;
        }
        free(copy);
    }
    if (mbd_opt_str(node, "iotype")) {
        struct rule *r = &h->rules[h->n];
        if (h->n == MAX_RULES) {
            mbd_error(EINVAL, "Too many blkdebug rules (at most %d)", MAX_RULES);
            free(h);
            return NULL;
        }
        r->event = (int)mbd_opt_int(node, "iotype", EV_READ);
        r->offset = -1;
        r->err = EIO;
        r->once = 0;
        atomic_init(&r->skip, 0);
        atomic_init(&r->spent, 0);
        h->n++;
    }
    h->file = mbd_open_child(node, "file", MBD_CHILD_FILE);
    if (!h->file) {
        free(h);
        return NULL;
    }
    return h;
}

static void blkdebug_close(void *handle) { free(handle); }

static int64_t blkdebug_get_length(void *handle) {
    return mbd_child_length(((struct blkdebug *)handle)->file);
}

/* 0, or the negative errno of the first rule that fires for this request. */
static int inject(struct blkdebug *h, int event, uint64_t offset, uint64_t count) {
    for (int i = 0; i < h->n; i++) {
        struct rule *r = &h->rules[i];
        if (atomic_load(&r->spent)) continue;
        if (r->event == EV_NAMED ? !atomic_load(&r->armed) : r->event != event) continue;
        if (r->offset >= 0 && event != EV_FLUSH &&
            ((uint64_t)r->offset < offset || (uint64_t)r->offset - offset >= count))
            continue;
        /* An event rule with an offset never fails a flush. */
        if (r->offset >= 0 && event == EV_FLUSH && r->event == EV_NAMED) continue;
        /* after=N of an event rule counts events (blkdebug_event). */
        if (r->event != EV_NAMED) {
            if (atomic_fetch_sub(&r->skip, 1) > 0) continue;
            atomic_store(&r->skip, 0);
        }
        if (r->once && atomic_exchange(&r->spent, 1)) continue;
        return -r->err;
    }
    return 0;
}

/* A format above announced an event: arm its rules (the first after=N
 * occurrences pass). */
static void blkdebug_event(void *handle, const char *event) {
    struct blkdebug *h = handle;
    for (int i = 0; i < h->n; i++) {
        struct rule *r = &h->rules[i];
        if (r->event != EV_NAMED || strcmp(r->name, event) != 0 || atomic_load(&r->armed)) continue;
        if (atomic_fetch_sub(&r->skip, 1) > 0) continue;
        atomic_store(&r->skip, 0);
        atomic_store(&r->armed, 1);
    }
}

static void done(void *opaque, int ret) { mbd_request_complete(opaque, ret); }

static void blkdebug_aio_read(void *handle, mbd_request *req, void *buf, uint64_t count,
                              uint64_t offset, uint32_t flags) {
    struct blkdebug *h = handle;
    int r = inject(h, EV_READ, offset, count);
    if (r) return mbd_request_complete(req, r);
    mbd_child_aio_read(h->file, buf, count, offset, flags, done, req);
}

static void blkdebug_aio_write(void *handle, mbd_request *req, const void *buf, uint64_t count,
                               uint64_t offset, uint32_t flags) {
    struct blkdebug *h = handle;
    int r = inject(h, EV_WRITE, offset, count);
    if (r) return mbd_request_complete(req, r);
    mbd_child_aio_write(h->file, buf, count, offset, flags, done, req);
}

static void blkdebug_aio_zero(void *handle, mbd_request *req, uint64_t count, uint64_t offset,
                              uint32_t flags) {
    struct blkdebug *h = handle;
    int r = inject(h, EV_ZERO, offset, count);
    if (r) return mbd_request_complete(req, r);
    mbd_child_aio_zero(h->file, count, offset, flags, done, req);
}

static void blkdebug_aio_discard(void *handle, mbd_request *req, uint64_t count, uint64_t offset) {
    struct blkdebug *h = handle;
    int r = inject(h, EV_DISCARD, offset, count);
    if (r) return mbd_request_complete(req, r);
    mbd_child_aio_discard(h->file, count, offset, done, req);
}

/* The core flushes the child after this succeeds. */
static void blkdebug_aio_flush(void *handle, mbd_request *req) {
    mbd_request_complete(req, inject(handle, EV_FLUSH, 0, 0));
}

static const struct mbd_option blkdebug_options[] = {
    {"rules", MBD_OPT_STR, 0, NULL,
     "faults to inject: EVENT[@OFFSET][:ERRNO][:once|:always][:after=N], ';'-separated; "
     "EVENT is read, write, write-zeroes, discard, flush or event=NAME (a driver event)", NULL},
    {"iotype", MBD_OPT_ENUM, 0, NULL, "fail every request of this type with EIO", iotype_values},
    {NULL, 0, 0, NULL, NULL, NULL},
};

static struct mbd_driver blkdebug_driver = {
    .name = "blkdebug",
    .description = "blkdebug: a filter that fails chosen requests (fault injection)",
    .kind = MBD_FILTER,
    .thread_model = MBD_THREAD_ASYNC,
    .options = blkdebug_options,
    .open = blkdebug_open,
    .close = blkdebug_close,
    .get_length = blkdebug_get_length,
    .aio_read = blkdebug_aio_read,
    .aio_write = blkdebug_aio_write,
    .aio_flush = blkdebug_aio_flush,
    .debug_event = blkdebug_event,
    .aio_zero = blkdebug_aio_zero,
    .aio_discard = blkdebug_aio_discard,
};

MBD_REGISTER(blkdebug_driver)
