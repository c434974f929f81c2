/*
 * Modules that must be refused, one per -D flag (tests/plugins/meson.build):
 *   BAD_ABI_NEW   stamped with an ABI version from the future
 *   BAD_ABI_OLD   stamped with ABI version 0
 *   BAD_NO_ENTRY  no mbd_driver_init at all
 *   BAD_DUP       registers the name "raw", which is taken
 *   BAD_NAME      block-misnamed.so registering "other-name"
 *   SHORT_STRUCT  an older plugin: its struct ends before aio_write, and
 *                 what lies past its end must be ignored (here: a trap);
 *                 its options array has the first struct mbd_option layout
 *                 (before .values), so its stride is shorter than today's
 *   BAD_ENUM_EMPTY, BAD_ENUM_DUP, BAD_ENUM_DEFAULT
 *                 an enum option without values, with a value twice, with a
 *                 default that is not one of its values
 *   BAD_OPTION_SIZE  a struct mbd_option size smaller than the first layout
 *   BAD_CONDITION a nested option whose condition names a value its
 *                 group's enum does not have
 *   BAD_REQUEST_TIMEOUT  a default_request_timeout_s past 3600
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

#ifdef SHORT_STRUCT
/* struct mbd_option as the first header had it. */
struct first_option {
    const char *name;
    int type;
    int flags;
    const char *default_value;
    const char *help;
};
static const struct first_option short_options[] = {
    {"first", MBD_OPT_STR, 0, "a", "the first option of an older plugin"},
    {"second", MBD_OPT_INT, 0, "2", "the second option of an older plugin"},
    {NULL, 0, 0, NULL, NULL},
};
#endif

#if defined(BAD_ENUM_EMPTY) || defined(BAD_ENUM_DUP) || defined(BAD_ENUM_DEFAULT)
#if defined(BAD_ENUM_EMPTY)
static const char *const mode_values[] = {NULL};
#elif defined(BAD_ENUM_DUP)
static const char *const mode_values[] = {"fast", "slow", "fast", NULL};
#else
static const char *const mode_values[] = {"fast", "slow", NULL};
#endif
static const struct mbd_option enum_options[] = {
    {"mode", MBD_OPT_ENUM, 0, "medium", "how fast", mode_values},
    {NULL, 0, 0, NULL, NULL, NULL},
};
#endif

#ifdef BAD_CONDITION
static const char *const kind_values[] = {"a", "b", NULL};
static const struct mbd_option cond_options[] = {
    {"server.kind", MBD_OPT_ENUM, MBD_OPT_REQUIRED, NULL, "which", kind_values},
    {"server.x", MBD_OPT_STR, 0, NULL, "x", NULL},
    {NULL, 0, 0, NULL, NULL, NULL},
};
static const char *const cond_conditions[] = {"server.x", "kind=c", NULL};
#endif

static struct mbd_driver bad_driver = {
#ifdef BAD_CONDITION
    .options = cond_options,
    .option_conditions = cond_conditions,
#endif
#if defined(BAD_ENUM_EMPTY) || defined(BAD_ENUM_DUP) || defined(BAD_ENUM_DEFAULT)
    .options = enum_options,
#endif
#ifdef SHORT_STRUCT
    .options = (const struct mbd_option *)short_options,
#endif
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
#ifdef BAD_REQUEST_TIMEOUT
    .default_request_timeout_s = 7200,
#endif
};

#if defined(SHORT_STRUCT)
MBD_EXPORT struct mbd_driver *mbd_driver_init(void);
MBD_EXPORT struct mbd_driver *mbd_driver_init(void) {
    bad_driver.struct_size = offsetof(struct mbd_driver, aio_write);
    bad_driver.abi_version = MBD_ABI_VERSION;
    return &bad_driver;
}
#elif defined(BAD_OPTION_SIZE)
MBD_EXPORT struct mbd_driver *mbd_driver_init(void);
MBD_EXPORT struct mbd_driver *mbd_driver_init(void) {
    bad_driver.struct_size = sizeof(bad_driver);
    bad_driver.abi_version = MBD_ABI_VERSION;
    bad_driver.option_struct_size = 12;
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
