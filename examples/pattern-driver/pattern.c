/*
 * An out-of-tree miniblock driver: a read-only protocol serving a repeating
 * byte.  It is built outside miniblock's tree against the installed
 * <miniblock/driver.h> only (see Makefile, and docs/plugins.md, whose
 * example this is):
 *
 *   make                 # cc ... $(pkg-config --cflags miniblock)
 *   MINIBLOCK_MODULE_DIR=$PWD miniblock-io -c 'read -P 0x5a 0 4096' \
 *       --image-opts driver=raw,file.driver=pattern,file.byte=0x5a
 *
 * tests/interop/example-plugin.sh does exactly that from a temporary
 * install of miniblock.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <miniblock/driver.h>

struct pattern { int64_t size; int byte; };

static void *pattern_open(mbd_node *node) {
    struct pattern *p = malloc(sizeof(*p));
    if (!p) { mbd_error(ENOMEM, "out of memory"); return NULL; }
    p->size = mbd_opt_int(node, "size", 0);
    p->byte = (int)mbd_opt_int(node, "byte", 0);
    if (p->byte < 0 || p->byte > 255) {
        mbd_error(EINVAL, "byte %d is not from 0 to 255", p->byte);
        free(p);
        return NULL;
    }
    return p;
}

static void pattern_close(void *h) { free(h); }
static int64_t pattern_length(void *h) { return ((struct pattern *)h)->size; }

static void pattern_read(void *h, mbd_request *req, void *buf, uint64_t count,
                         uint64_t offset, uint32_t flags) {
    (void)offset; (void)flags;
    memset(buf, ((struct pattern *)h)->byte, count);
    mbd_request_complete(req, 0);
}

static const struct mbd_option pattern_options[] = {
    {"size", MBD_OPT_SIZE, 0, "1M", "the size of the device", NULL},
    {"byte", MBD_OPT_INT, 0, "0", "the byte every read returns", NULL},
    {NULL, 0, 0, NULL, NULL, NULL},
};

static struct mbd_driver pattern_driver = {
    .name = "pattern", .kind = MBD_PROTOCOL, .thread_model = MBD_THREAD_ASYNC,
    .description = "every byte the same", .options = pattern_options,
    .open = pattern_open, .close = pattern_close, .get_length = pattern_length,
    .aio_read = pattern_read,
};
MBD_REGISTER(pattern_driver)
