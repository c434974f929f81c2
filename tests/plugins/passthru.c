/*
 * A filter in the blocking PARALLEL thread model: every request is passed
 * to the file child with the blocking child calls, from a worker thread.
 * It proves the simple mode, cross-thread child I/O (write-zeroes and
 * discard included: holes stay holes), and that a filter's
 * child keeps the locks (it asks the default permissions of its child).
 */
#include <errno.h>
#include <stdlib.h>

#include <miniblock/driver.h>

struct passthru {
    mbd_child *file;
};

static void *passthru_open(mbd_node *node) {
    struct passthru *h = calloc(1, sizeof(*h));
    if (!h) {
        mbd_error(ENOMEM, "out of memory");
        return NULL;
    }
    h->file = mbd_open_child(node, "file", MBD_CHILD_FILE);
    if (!h->file) {
        free(h);
        return NULL;
    }
    return h;
}

static void passthru_close(void *handle) { free(handle); }

static int64_t passthru_get_length(void *handle) {
    return mbd_child_length(((struct passthru *)handle)->file);
}

static int passthru_pread(void *handle, void *buf, uint64_t count, uint64_t offset, uint32_t flags) {
    return mbd_child_pread(((struct passthru *)handle)->file, buf, count, offset, flags);
}

static int passthru_pwrite(void *handle, const void *buf, uint64_t count, uint64_t offset,
                           uint32_t flags) {
    return mbd_child_pwrite(((struct passthru *)handle)->file, buf, count, offset, flags);
}

static int passthru_flush(void *handle) { return mbd_child_flush(((struct passthru *)handle)->file); }

static int passthru_zero(void *handle, uint64_t count, uint64_t offset, uint32_t flags) {
    return mbd_child_pwrite_zeroes(((struct passthru *)handle)->file, count, offset, flags);
}

static int passthru_discard(void *handle, uint64_t count, uint64_t offset) {
    return mbd_child_discard(((struct passthru *)handle)->file, count, offset);
}

static struct mbd_driver passthru_driver = {
    .name = "passthru",
    .description = "a test filter passing every request to its file child",
    .kind = MBD_FILTER,
    .thread_model = MBD_THREAD_PARALLEL,
    .open = passthru_open,
    .close = passthru_close,
    .get_length = passthru_get_length,
    .pread = passthru_pread,
    .pwrite = passthru_pwrite,
    .flush = passthru_flush,
    .zero = passthru_zero,
    .discard = passthru_discard,
};

MBD_REGISTER(passthru_driver)
