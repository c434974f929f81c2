/*
 * A small NBD client as a plugin: the proof that an asynchronous network
 * protocol can live on miniblock's loop through the public ABI alone
 * (mbd_fd_watch, mbd_timer_*, completion from their callbacks).
 *
 * driver=nbdmini,path=SOCKET[,export=NAME][,timeout=SECONDS]
 *
 * The handshake (fixed newstyle, NBD_OPT_GO, simple replies) runs blocking
 * in open, each step bounded by `timeout`.  Then the socket is non-blocking
 * and watched: requests are queued in an output buffer (written when the
 * socket takes them), replies are parsed as they arrive and complete their
 * requests in any order, many in flight at once.  A server that says
 * nothing for `timeout` seconds while requests wait, a reply that breaks the
 * protocol or a dropped connection fails every waiting and later request
 * (ETIMEDOUT, EPROTO, EIO).  Reads, writes and flushes only: the core's nbd
 * driver is the full client.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <miniblock/driver.h>

#define MAX_REQS 1024
#define MAX_LEN (32u << 20)
#define REPLY_MAGIC 0x67446698u

struct req {
    mbd_request *token; /* NULL: the slot is free */
    uint16_t cmd;
    void *buf; /* reads: where the payload goes */
    uint32_t len;
};

struct conn {
    char path[108];
    int fd;
    int timeout_s;
    uint64_t size;
    uint16_t tflags;
    int err; /* non-zero: dead, every request fails with -err */
    mbd_watch *watch;
    mbd_timer *timer;
    struct req reqs[MAX_REQS];
    int pending;
    uint8_t *out; /* bytes not yet written */
    size_t out_len, out_cap;
    uint8_t hdr[16]; /* the reply header being read */
    size_t hdr_got;
    struct req *reading; /* a read reply's payload being read */
    uint32_t payload_got;
};

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) << 32 | get32(p + 4); }

/* --- the blocking handshake ------------------------------------------------ */

static int io_all(int fd, void *buf, size_t n, int writing, int timeout_s) {
    uint8_t *p = buf;
    while (n) {
        struct pollfd pfd = {fd, (short)(writing ? POLLOUT : POLLIN), 0};
        if (poll(&pfd, 1, timeout_s * 1000) <= 0) return -ETIMEDOUT;
        ssize_t r = writing ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
        if (r == 0) return -ECONNRESET;
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return -errno;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int handshake(struct conn *c, const char *export_name) {
    uint8_t b[32];
    size_t name_len = strlen(export_name);
    int r = io_all(c->fd, b, 18, 0, c->timeout_s);
    if (r) return mbd_error(-r, "NBD handshake: %s", strerror(-r)), -1;
    if (get64(b) != 0x4e42444d41474943ull || get64(b + 8) != 0x49484156454f5054ull || !(b[17] & 1)) {
        mbd_error(EPROTO, "The server does not speak fixed newstyle NBD");
        return -1;
    }
    put32(b, 1); /* NBD_FLAG_C_FIXED_NEWSTYLE */
    put64(b + 4, 0x49484156454f5054ull);
    put32(b + 12, 7); /* NBD_OPT_GO */
    put32(b + 16, (uint32_t)(4 + name_len + 2));
    put32(b + 20, (uint32_t)name_len);
    if ((r = io_all(c->fd, b, 24, 1, c->timeout_s)) || (r = io_all(c->fd, (void *)export_name, name_len, 1, c->timeout_s)) ||
        (r = io_all(c->fd, (void *)"\0\0", 2, 1, c->timeout_s)))
        return mbd_error(-r, "NBD handshake: %s", strerror(-r)), -1;
    for (;;) {
        uint8_t data[128];
        if ((r = io_all(c->fd, b, 20, 0, c->timeout_s)))
            return mbd_error(-r, "NBD handshake: %s", strerror(-r)), -1;
        uint32_t type = get32(b + 12), len = get32(b + 16);
        if (get64(b) != 0x3e889045565a9ull || get32(b + 8) != 7 || len > sizeof(data)) {
            mbd_error(EPROTO, "The server's reply to NBD_OPT_GO is malformed (length %u)", len);
            return -1;
        }
        if ((r = io_all(c->fd, data, len, 0, c->timeout_s)))
            return mbd_error(-r, "NBD handshake: %s", strerror(-r)), -1;
        if (type & 0x80000000u) {
            mbd_error(ENOENT, "The server refused export '%s' (error 0x%x)", export_name, type);
            return -1;
        }
        if (type == 1) return c->size ? 0 : (mbd_error(EPROTO, "The server sent no export size"), -1);
        if (type == 3 && len >= 12 && data[0] == 0 && data[1] == 0) { /* NBD_INFO_EXPORT */
            c->size = get64(data + 2);
            c->tflags = (uint16_t)(data[10] << 8 | data[11]);
        }
    }
}

/* --- the data plane on the loop -------------------------------------------- */

static void kill_conn(struct conn *c, int err) {
    if (!c->err) {
        c->err = err;
        mbd_warning("nbdmini: server %s: %s; connection closed", c->path,
                    err == ETIMEDOUT ? "silent for too long" : err == EPROTO ? "protocol violation" : "connection lost");
    }
    if (c->watch) mbd_fd_unwatch(c->watch); /* nothing more from this socket (may be our caller's) */
    c->watch = NULL;
    mbd_timer_cancel(c->timer);
    for (int i = 0; i < MAX_REQS; i++) {
        if (!c->reqs[i].token) continue;
        mbd_request *t = c->reqs[i].token;
        c->reqs[i].token = NULL;
        mbd_request_complete(t, -c->err);
    }
    c->pending = 0;
    c->reading = NULL;
}

static void progress(struct conn *c) {
    if (c->pending) mbd_timer_arm(c->timer, (uint64_t)c->timeout_s * 1000000000ull);
    else mbd_timer_cancel(c->timer);
}

static void on_timeout(void *opaque) { kill_conn(opaque, ETIMEDOUT); }

static void flush_out(struct conn *c) {
    while (c->out_len) {
        ssize_t r = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno == EAGAIN) break;
        if (r <= 0) return kill_conn(c, EIO);
        memmove(c->out, c->out + r, c->out_len - (size_t)r);
        c->out_len -= (size_t)r;
    }
    if (c->watch) mbd_fd_watch_set(c->watch, MBD_FD_READ | (c->out_len ? MBD_FD_WRITE : 0));
}

static void finish(struct conn *c, struct req *q, int ret) {
    mbd_request *t = q->token;
    q->token = NULL;
    c->pending--;
    progress(c);
    mbd_request_complete(t, ret);
}

static void read_input(struct conn *c) {
    for (;;) {
        ssize_t r;
        if (c->reading) {
            struct req *q = c->reading;
            r = recv(c->fd, (uint8_t *)q->buf + c->payload_got, q->len - c->payload_got, MSG_DONTWAIT);
            if (r > 0 && (c->payload_got += (uint32_t)r) == q->len) {
                c->reading = NULL;
                finish(c, q, 0);
            }
        } else {
            r = recv(c->fd, c->hdr + c->hdr_got, sizeof(c->hdr) - c->hdr_got, MSG_DONTWAIT);
            if (r > 0 && (c->hdr_got += (size_t)r) == sizeof(c->hdr)) {
                uint64_t cookie = get64(c->hdr + 8);
                uint32_t err = get32(c->hdr + 4);
                c->hdr_got = 0;
                if (get32(c->hdr) != REPLY_MAGIC || cookie == 0 || cookie > MAX_REQS ||
                    !c->reqs[cookie - 1].token)
                    return kill_conn(c, EPROTO); /* not a reply to anything we asked */
                struct req *q = &c->reqs[cookie - 1];
                if (err) finish(c, q, -(int)(err < 4096 ? err : EIO));
                else if (q->cmd == 0 && q->len) c->reading = q, c->payload_got = 0;
                else finish(c, q, 0);
            }
        }
        if (r == 0) return kill_conn(c, EIO);
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) kill_conn(c, EIO);
            return;
        }
        progress(c);
        if (c->err) return;
    }
}

static void on_io(void *opaque, int fd, int revents) {
    struct conn *c = opaque;
    (void)fd;
    if (revents & MBD_FD_WRITE) flush_out(c);
    if (!c->err && (revents & (MBD_FD_READ | MBD_FD_ERROR))) read_input(c);
}

static void submit(struct conn *c, mbd_request *token, uint16_t cmd, uint16_t flags, uint64_t offset,
                   uint32_t len, const void *wbuf, void *rbuf) {
    int i;
    if (c->err) return mbd_request_complete(token, -c->err);
    if (len > MAX_LEN || offset > c->size || len > c->size - offset) return mbd_request_complete(token, -EINVAL);
    for (i = 0; i < MAX_REQS && c->reqs[i].token; i++) {}
    if (i == MAX_REQS) return mbd_request_complete(token, -EAGAIN);
    size_t need = c->out_len + 28 + (wbuf ? len : 0);
    if (need > c->out_cap) {
        size_t cap = need * 2;
        uint8_t *p = realloc(c->out, cap);
        if (!p) return mbd_request_complete(token, -ENOMEM);
        c->out = p;
        c->out_cap = cap;
    }
    uint8_t *h = c->out + c->out_len;
    put32(h, 0x25609513u);
    h[4] = (uint8_t)(flags >> 8), h[5] = (uint8_t)flags;
    h[6] = (uint8_t)(cmd >> 8), h[7] = (uint8_t)cmd;
    put64(h + 8, (uint64_t)i + 1); /* the cookie: the slot */
    put64(h + 16, offset);
    put32(h + 24, len);
    if (wbuf) memcpy(h + 28, wbuf, len);
    c->out_len = need;
    c->reqs[i] = (struct req){token, cmd, rbuf, len};
    if (c->pending++ == 0) progress(c);
    flush_out(c);
}

static void mini_read(void *h, mbd_request *req, void *buf, uint64_t count, uint64_t offset, uint32_t flags) {
    (void)flags;
    submit(h, req, 0, 0, offset, count > MAX_LEN ? MAX_LEN + 1 : (uint32_t)count, NULL, buf);
}

static void mini_write(void *h, mbd_request *req, const void *buf, uint64_t count, uint64_t offset,
                       uint32_t flags) {
    struct conn *c = h;
    uint16_t fua = (flags & MBD_REQ_FUA) && (c->tflags & 8) ? 1 : 0;
    submit(c, req, 1, fua, offset, count > MAX_LEN ? MAX_LEN + 1 : (uint32_t)count, buf, NULL);
}

static void mini_flush(void *h, mbd_request *req) {
    struct conn *c = h;
    if (!(c->tflags & 4)) return mbd_request_complete(req, 0);
    submit(c, req, 3, 0, 0, 0, NULL, NULL);
}

/* --- open and close ---------------------------------------------------------- */

static void mini_close(void *h) {
    struct conn *c = h;
    if (c->watch) mbd_fd_unwatch(c->watch);
    if (c->timer) mbd_timer_free(c->timer);
    if (c->fd >= 0) {
        if (!c->err && !c->pending) { /* NBD_CMD_DISC, if it fits at once */
            uint8_t d[28] = {0x25, 0x60, 0x95, 0x13, 0, 0, 0, 2};
            (void)!send(c->fd, d, sizeof(d), MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        close(c->fd);
    }
    free(c->out);
    free(c);
}

static void *mini_open(mbd_node *node) {
    const char *path = mbd_opt_str(node, "path");
    const char *export_name = mbd_opt_str(node, "export");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) return mbd_error(ENOMEM, "out of memory"), NULL;
    c->timeout_s = (int)mbd_opt_int(node, "timeout", 30);
    c->fd = -1;
    if (c->timeout_s < 1 || c->timeout_s > 3600) {
        mbd_error(EINVAL, "timeout %d is not from 1 to 3600 seconds", c->timeout_s);
        goto fail;
    }
    if (strlen(path) >= sizeof(sa.sun_path)) {
        mbd_error(ENAMETOOLONG, "socket path '%s' is too long", path);
        goto fail;
    }
    strcpy(sa.sun_path, path);
    strcpy(c->path, path);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        mbd_error(errno, "could not connect to '%s': %s", path, strerror(errno));
        goto fail;
    }
    if (handshake(c, export_name ? export_name : "") < 0) goto fail;
    if ((c->tflags & 2) && !mbd_node_read_only(node)) { /* NBD_FLAG_READ_ONLY */
        mbd_error(EROFS, "export '%s' is read-only", export_name);
        goto fail;
    }
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    c->timer = mbd_timer_new(mbd_node_loop(node), on_timeout, c);
    c->watch = mbd_fd_watch(mbd_node_loop(node), c->fd, MBD_FD_READ, on_io, c);
    if (!c->watch || !c->timer) goto fail;
    return c;
fail:
    mini_close(c);
    return NULL;
}

static int64_t mini_length(void *h) { return (int64_t)((struct conn *)h)->size; }

static const struct mbd_option mini_options[] = {
    {"path", MBD_OPT_STR, MBD_OPT_REQUIRED, NULL, "the server's Unix socket", NULL},
    {"export", MBD_OPT_STR, 0, "", "the export's name", NULL},
    {"timeout", MBD_OPT_INT, 0, "30", "seconds the server may stay silent while requests wait", NULL},
    {NULL, 0, 0, NULL, NULL, NULL},
};

static struct mbd_driver mini_driver = {
    .name = "nbdmini",
    .description = "a small NBD client on the plugin ABI's event loop (a test)",
    .kind = MBD_PROTOCOL,
    .thread_model = MBD_THREAD_ASYNC,
    .sharable_writes = 1,
    .options = mini_options,
    .open = mini_open,
    .close = mini_close,
    .get_length = mini_length,
    .aio_read = mini_read,
    .aio_write = mini_write,
    .aio_flush = mini_flush,
};

MBD_REGISTER(mini_driver)
