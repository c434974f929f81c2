/*
 * Modules that must be refused, one per -D flag (tests/plugins/meson.build):
 *   BAD_ABI_NEW   stamped with an ABI version from the future
 *   BAD_ABI_OLD   stamped with ABI version 0
 *   BAD_NO_ENTRY  no mbd_driver_init at all
 *   BAD_DUP       registers the name "raw", which is taken
 *   BAD_NAME      block-misnamed.so registering "other-name"
 *   SHORT_STRUCT  an older plugin: its struct ends before aio_write, and
 *                 what lies past its end must be ignored (here: a trap)
 *   (none)        a good driver, built with another build's stamp
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>

#include <miniblock/driver.h>

static void *bad_open(mbd_node *node) {
    (void)node;
#ifdef SHORT_STRUCT
    return (void *)1;
#else
    mbd_error(EIO, "never opened");
    return NULL;
#endif
}

static int64_t short_length(void *h) {
    (void)h;
    return 1 << 20;
}

static void trap_aio_write(void *h, mbd_request *req, const void *buf, uint64_t count,
                           uint64_t offset, uint32_t flags) {
    (void)h;
    (void)req;
    (void)buf;
    (void)count;
    (void)offset;
    (void)flags;
    abort();
}

static void bad_aio_read(void *h, mbd_request *req, void *buf, uint64_t count, uint64_t offset,
                         uint32_t flags) {
    (void)h;
    (void)buf;
    (void)count;
    (void)offset;
    (void)flags;
    mbd_request_complete(req, -EIO);
}

static struct mbd_driver bad_driver = {
#if defined(BAD_DUP)
    .name = "raw",
#elif defined(BAD_NAME)
    .name = "other-name",
#else
    .name = BAD_MODULE_NAME,
#endif
    .kind = MBD_PROTOCOL,
    .open = bad_open,
    .aio_read = bad_aio_read,
    .get_length = short_length,
    .aio_write = trap_aio_write,
};

#if defined(SHORT_STRUCT)
MBD_EXPORT struct mbd_driver *mbd_driver_init(void);
MBD_EXPORT struct mbd_driver *mbd_driver_init(void) {
    bad_driver.struct_size = offsetof(struct mbd_driver, aio_write);
    bad_driver.abi_version = MBD_ABI_VERSION;
    return &bad_driver;
}
#elif defined(BAD_ABI_NEW) || defined(BAD_ABI_OLD)
MBD_EXPORT struct mbd_driver *mbd_driver_init(void);
MBD_EXPORT struct mbd_driver *mbd_driver_init(void) {
    bad_driver.struct_size = sizeof(bad_driver);
#ifdef BAD_ABI_NEW
    bad_driver.abi_version = 99;
#else
    bad_driver.abi_version = 0;
#endif
    return &bad_driver;
}
#elif defined(BAD_NO_ENTRY)
MBD_EXPORT struct mbd_driver *not_the_entry_point(void);
MBD_EXPORT struct mbd_driver *not_the_entry_point(void) { return &bad_driver; }
#else
MBD_REGISTER(bad_driver)
#endif
