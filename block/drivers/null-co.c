/*
 * null-co: a protocol with no storage.  Writes are dropped; reads leave the
 * buffer as it was, or zero it with read-zeroes=on; every request can be
 * delayed by latency-ns.  QEMU's null-co under the same option names and
 * defaults, so one --image-opts string opens in both, and `miniblock-img
 * bench` against `qemu-img bench` on it measures the block layers alone.
 *
 * Written in C against the public driver ABI (include/miniblock/driver.h),
 * like any plugin: the template to start a protocol driver from.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Linked into the library unless built as a module (-Dmodules=enabled). */
#ifndef MB_BUILD_AS_MODULE
#define MB_BUILTIN_DRIVER null_co
#endif
#include "miniblock/driver.h"

struct null_co {
    int64_t size;
    uint64_t latency_ns;
    int read_zeroes;
};

static void *null_open(mbd_node *node) {
    struct null_co *h;
    int64_t size = mbd_opt_int(node, "size", 0);
    int64_t latency = mbd_opt_int(node, "latency-ns", 0);

    if (latency < 0) {
        mbd_error(EINVAL, "latency-ns must be a non-negative integer, not %lld", (long long)latency);
        return NULL;
    }
    h = calloc(1, sizeof(*h));
    if (!h) {
        mbd_error(ENOMEM, "Could not allocate the null-co state");
        return NULL;
    }
    h->size = size;
    h->latency_ns = (uint64_t)latency;
    h->read_zeroes = (int)mbd_opt_int(node, "read-zeroes", 0);
    return h;
}

static void null_close(void *handle) { free(handle); }

static int64_t null_get_length(void *handle) { return ((struct null_co *)handle)->size; }

/* Completes now, or after the configured latency without a thread. */
static void finish(struct null_co *h, mbd_request *req) {
    if (h->latency_ns) mbd_request_complete_after(req, 0, h->latency_ns);
    else mbd_request_complete(req, 0);
}

static void null_aio_read(void *handle, mbd_request *req, void *buf, uint64_t count, uint64_t offset,
                          uint32_t flags) {
    struct null_co *h = handle;
    (void)offset;
    (void)flags;
    if (h->read_zeroes) memset(buf, 0, count);
    finish(h, req);
}

static void null_aio_write(void *handle, mbd_request *req, const void *buf, uint64_t count,
                           uint64_t offset, uint32_t flags) {
    (void)buf;
    (void)count;
    (void)offset;
    (void)flags;
    finish(handle, req);
}

static void null_aio_zero(void *handle, mbd_request *req, uint64_t count, uint64_t offset,
                          uint32_t flags) {
    (void)count;
    (void)offset;
    (void)flags;
    finish(handle, req);
}

static void null_aio_flush(void *handle, mbd_request *req) { finish(handle, req); }

/* A buffer is touched only inside aio_read (zeroed, or left alone), never
 * when the request completes later: nothing to let go of.  Implementing
 * abandon keeps reads and writes zero-copy (without it the core would give
 * null-co a buffer of its own and copy). */
static void null_abandon(void *handle, mbd_request *req) {
    (void)handle;
    (void)req;
}

/* As QEMU's: everything reads as zeroes when read-zeroes is on, else as data
 * (whatever the buffer held). */
static int null_block_status(void *handle, uint64_t offset, uint64_t count, uint64_t *pnum) {
    struct null_co *h = handle;
    (void)offset;
    *pnum = count;
    return h->read_zeroes ? MBD_STATUS_ZERO | MBD_STATUS_ALLOCATED
                          : MBD_STATUS_DATA | MBD_STATUS_ALLOCATED;
}

static const char *const null_schemes[] = {"null-co", NULL};

static const struct mbd_option null_options[] = {
    {"size", MBD_OPT_SIZE, 0, "1073741824", "the size of the device in bytes", NULL},
    {"latency-ns", MBD_OPT_INT, 0, "0", "nanoseconds to delay each request by", NULL},
    {"read-zeroes", MBD_OPT_BOOL, 0, "off", "zero the buffer of every read", NULL},
    {NULL, 0, 0, NULL, NULL, NULL},
};

static struct mbd_driver null_co_driver = {
    .name = "null-co",
    .description = "null-co: no storage, writes dropped, reads zeroed or left alone (QEMU's null-co)",
    .kind = MBD_PROTOCOL,
    .thread_model = MBD_THREAD_ASYNC,
    .uri_schemes = null_schemes,
    .options = null_options,
    .sharable_writes = 1,
    .open = null_open,
    .close = null_close,
    .get_length = null_get_length,
    .aio_read = null_aio_read,
    .aio_write = null_aio_write,
    .aio_flush = null_aio_flush,
    .aio_zero = null_aio_zero,
    .block_status = null_block_status,
    .abandon = null_abandon,
};

MBD_REGISTER(null_co_driver)
