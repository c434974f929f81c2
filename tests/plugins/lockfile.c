/*
 * A file protocol with lock hooks, in the blocking PARALLEL model: it takes
 * QEMU's permission bytes itself (100+i "I use bit i", 200+i "I forbid bit
 * i", F_RDLCK with OFD locks; lock, then test), so it excludes QEMU and
 * miniblock processes like the built-in `file`.  It proves that a protocol
 * plugin takes part in the graph-wide permission transaction: prepared
 * while the old bytes are still held, committed or aborted to exactly the
 * previous bytes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <miniblock/driver.h>

struct lockfile {
    int fd;
    unsigned held_use, held_forbid; /* committed */
    unsigned new_use, new_forbid;   /* prepared */
};

static const char *const perm_names[] = {"consistent read", "write", "write unchanged", "resize"};

static int byte_lock(int fd, int type, off_t byte) {
    struct flock fl = {.l_type = (short)type, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1};
    return fcntl(fd, F_OFD_SETLK, &fl);
}

/* 1 if someone else holds `byte`. */
static int byte_taken(int fd, off_t byte) {
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1};
    if (fcntl(fd, F_OFD_GETLK, &fl) < 0) return 1;
    return fl.l_type != F_UNLCK;
}

/* Releases the bytes of (use, forbid) not in (keep_use, keep_forbid). */
static void drop(struct lockfile *h, unsigned use, unsigned forbid, unsigned keep_use, unsigned keep_forbid) {
    for (int i = 0; i < 4; i++) {
        if ((use & (1u << i)) && !(keep_use & (1u << i))) byte_lock(h->fd, F_UNLCK, 100 + i);
        if ((forbid & (1u << i)) && !(keep_forbid & (1u << i))) byte_lock(h->fd, F_UNLCK, 200 + i);
    }
}

static int lf_prepare(void *handle, uint32_t perm, uint32_t shared) {
    struct lockfile *h = handle;
    unsigned use = perm & MBD_PERM_ALL, forbid = ~shared & MBD_PERM_ALL;
    if (forbid & MBD_PERM_WRITE) forbid |= MBD_PERM_WRITE_UNCHANGED; /* QEMU's rule */
    h->new_use = use;
    h->new_forbid = forbid;
    for (int i = 0; i < 4; i++) {
        if (((use & ~h->held_use) & (1u << i)) && byte_lock(h->fd, F_RDLCK, 100 + i) < 0) goto fail;
        if (((forbid & ~h->held_forbid) & (1u << i)) && byte_lock(h->fd, F_RDLCK, 200 + i) < 0) goto fail;
    }
    for (int i = 0; i < 4; i++) {
        if ((use & (1u << i)) && byte_taken(h->fd, 200 + i)) {
            mbd_error(EAGAIN, "Failed to get \"%s\" lock", perm_names[i]);
            mbd_error_hint("Another process forbids it (lockfile plugin)");
            drop(h, use, forbid, h->held_use, h->held_forbid);
            return -1;
        }
        if ((forbid & (1u << i)) && byte_taken(h->fd, 100 + i)) {
            mbd_error(EAGAIN, "Failed to get shared \"%s\" lock", perm_names[i]);
            mbd_error_hint("Another process uses it (lockfile plugin)");
            drop(h, use, forbid, h->held_use, h->held_forbid);
            return -1;
        }
    }
    return 0;
fail:
    mbd_error(errno, "Could not lock: %s", strerror(errno));
    drop(h, use, forbid, h->held_use, h->held_forbid);
    return -1;
}

static void lf_commit(void *handle) {
    struct lockfile *h = handle;
    drop(h, h->held_use, h->held_forbid, h->new_use, h->new_forbid);
    h->held_use = h->new_use;
    h->held_forbid = h->new_forbid;
}

static void lf_abort(void *handle) {
    struct lockfile *h = handle;
    drop(h, h->new_use, h->new_forbid, h->held_use, h->held_forbid);
}

static void lf_release(void *handle) {
    struct lockfile *h = handle;
    drop(h, h->held_use, h->held_forbid, 0, 0);
    h->held_use = h->held_forbid = 0;
}

static void *lf_open(mbd_node *node) {
    const char *fn = mbd_opt_str(node, "filename");
    struct lockfile *h;
    int fd;
    if (!fn) {
        mbd_error(EINVAL, "Parameter 'filename' is missing");
        return NULL;
    }
    fd = open(fn, (mbd_node_read_only(node) ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0) {
        mbd_error(errno, "Could not open '%s': %s", fn, strerror(errno));
        return NULL;
    }
    h = calloc(1, sizeof(*h));
    if (!h) {
        close(fd);
        mbd_error(ENOMEM, "out of memory");
        return NULL;
    }
    h->fd = fd;
    return h;
}

static void lf_close(void *handle) {
    struct lockfile *h = handle;
    close(h->fd);
    free(h);
}

static int64_t lf_length(void *handle) {
    struct stat st;
    if (fstat(((struct lockfile *)handle)->fd, &st) < 0) return -errno;
    return st.st_size;
}

static int lf_pread(void *handle, void *buf, uint64_t count, uint64_t offset, uint32_t flags) {
    struct lockfile *h = handle;
    (void)flags;
    while (count) {
        ssize_t n = pread(h->fd, buf, count, (off_t)offset);
        if (n < 0) return errno == EINTR ? 0 : -errno;
        if (n == 0) {
            memset(buf, 0, count); /* past the end: zeroes */
            return 0;
        }
        buf = (char *)buf + n;
        count -= (uint64_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

static int lf_pwrite(void *handle, const void *buf, uint64_t count, uint64_t offset, uint32_t flags) {
    struct lockfile *h = handle;
    (void)flags;
    while (count) {
        ssize_t n = pwrite(h->fd, buf, count, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        buf = (const char *)buf + n;
        count -= (uint64_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

static int lf_flush(void *handle) { return fdatasync(((struct lockfile *)handle)->fd) < 0 ? -errno : 0; }

/* Creates a file of the size asked for (miniblock-img create -f lockfile). */
static int lf_create(mbd_create *c) {
    const char *fn = mbd_create_filename(c);
    int fd = open(fn, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        mbd_error(errno, "Could not create '%s': %s", fn, strerror(errno));
        return -1;
    }
    if (ftruncate(fd, (off_t)mbd_create_size(c)) < 0) {
        mbd_error(errno, "Could not resize '%s': %s", fn, strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

static struct mbd_driver lockfile_driver = {
    .name = "lockfile",
    .description = "a test file protocol that takes QEMU's lock bytes through the lock hooks",
    .kind = MBD_PROTOCOL,
    .thread_model = MBD_THREAD_PARALLEL,
    .sharable_writes = 1,
    .open = lf_open,
    .close = lf_close,
    .get_length = lf_length,
    .lock_prepare = lf_prepare,
    .lock_commit = lf_commit,
    .lock_abort = lf_abort,
    .lock_release = lf_release,
    .pread = lf_pread,
    .pwrite = lf_pwrite,
    .flush = lf_flush,
    .create = lf_create,
};

MBD_REGISTER(lockfile_driver)
