/*
 * A protocol plugin that misbehaves on purpose, chosen by its option
 * `misbehave`, to prove the core survives it with a clear message:
 *   none            a well-behaved 1 MiB device of 0x5a bytes
 *   double-complete completes every read twice
 *   never           never completes a read
 *   late            completes a read 3 s late (after a 1 s timeout)
 *   bad-ret         completes reads with 7 (neither 0 nor -errno)
 *   bad-length      get_length returns -5000
 *   bad-status      block_status claims more bytes than asked
 *   open-fails      open fails with a message and a hint
 *   open-silent     open fails without calling mbd_error
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <miniblock/driver.h>

struct hostile {
    char mode[32];
};

static void *hostile_open(mbd_node *node) {
    const char *m = mbd_opt_str(node, "misbehave");
    struct hostile *h;
    if (strcmp(m, "open-fails") == 0) {
        mbd_error(EACCES, "Hostile device refuses to open");
        mbd_error_hint("Try misbehave=none");
        return NULL;
    }
    if (strcmp(m, "open-silent") == 0) return NULL;
    h = calloc(1, sizeof(*h));
    if (!h) return NULL;
    strncpy(h->mode, m, sizeof(h->mode) - 1);
    return h;
}

static void hostile_close(void *handle) { free(handle); }

static int64_t hostile_get_length(void *handle) {
    struct hostile *h = handle;
    return strcmp(h->mode, "bad-length") == 0 ? -5000 : 1 << 20;
}

struct late {
    mbd_request *req;
};

static void *complete_late(void *p) {
    struct late *l = p;
    sleep(3);
    mbd_request_complete(l->req, 0);
    free(l);
    return NULL;
}

static void hostile_aio_read(void *handle, mbd_request *req, void *buf, uint64_t count, uint64_t offset,
                             uint32_t flags) {
    struct hostile *h = handle;
    (void)offset;
    (void)flags;
    if (strcmp(h->mode, "never") == 0) return;
    if (strcmp(h->mode, "late") == 0) {
        pthread_t t;
        struct late *l = malloc(sizeof(*l));
        l->req = req;
        pthread_create(&t, NULL, complete_late, l);
        pthread_detach(t);
        return;
    }
    memset(buf, 0x5a, count);
    if (strcmp(h->mode, "bad-ret") == 0) {
        mbd_request_complete(req, 7);
        return;
    }
    mbd_request_complete(req, 0);
    if (strcmp(h->mode, "double-complete") == 0) mbd_request_complete(req, 0);
}

static void hostile_aio_write(void *handle, mbd_request *req, const void *buf, uint64_t count,
                              uint64_t offset, uint32_t flags) {
    (void)handle;
    (void)buf;
    (void)count;
    (void)offset;
    (void)flags;
    mbd_request_complete(req, -EROFS);
}

static int hostile_block_status(void *handle, uint64_t offset, uint64_t count, uint64_t *pnum) {
    struct hostile *h = handle;
    (void)offset;
    *pnum = strcmp(h->mode, "bad-status") == 0 ? count + 4096 : count;
    return MBD_STATUS_DATA | MBD_STATUS_ALLOCATED;
}

static const struct mbd_option hostile_options[] = {
    {"misbehave", MBD_OPT_STR, 0, "none", "how to misbehave", NULL},
    {NULL, 0, 0, NULL, NULL, NULL},
};

static struct mbd_driver hostile_driver = {
    .name = "hostile",
    .description = "a test protocol that misbehaves on request",
    .kind = MBD_PROTOCOL,
    .thread_model = MBD_THREAD_ASYNC,
    .options = hostile_options,
    .sharable_writes = 1,
    .open = hostile_open,
    .close = hostile_close,
    .get_length = hostile_get_length,
    .aio_read = hostile_aio_read,
    .aio_write = hostile_aio_write,
    .block_status = hostile_block_status,
};

MBD_REGISTER(hostile_driver)
