/* A complete embedder of miniblock's C API: open a drive, submit requests
 * on a queue, wait for the completion fd in the embedder's own poll() loop,
 * complete the requests, handle a lock conflict as data, close.  Only the
 * installed header and libminiblock.so: no GLib, no miniblock internals.
 *
 *   cc embedder.c $(pkg-config --cflags --libs miniblock) -o embedder
 *   ./embedder disk.img            (a raw image of at least 1 MiB) */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <miniblock/miniblock.h>

#define DEPTH 8
#define BLOCK 4096

/* What the embedder hangs on each request (user_data). */
struct request {
    int index;
    void *buf;
};

static int report(const char *what) {
    const struct mb_error *e = mb_get_error();
    fprintf(stderr, "%s: %s (errno %d)\n", what, e->message, e->errnum);
    for (int i = 0; i < e->n_holders; i++) {
        const struct mb_lock_holder *h = &e->holders[i];
        fprintf(stderr, "  holder: pid %d (%s)%s, uses 0x%x, forbids 0x%x\n", h->pid,
                h->program, h->this_process ? " in this process" : "", h->uses, h->forbids);
    }
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s IMAGE\n", argv[0]);
        return 2;
    }
    char spec[4200];
    snprintf(spec, sizeof(spec), "file=%s,format=raw,cache=none,aio=native", argv[1]);

    /* 1. Open.  Locks are taken here: read-write, writers kept out. */
    mb_drive *d = mb_open(spec, NULL);
    if (!d) return report("open");
    printf("miniblock %s, image of %lld bytes\n", mb_version(), (long long)mb_length(d));

    /* 2. A lock conflict is data, not only text: a second writer of the
     *    same image (here a second drive of this process; another process
     *    or a QEMU fails the same way) is refused and told who is in the way. */
    mb_drive *other = mb_open(spec, NULL);
    if (other) {
        fprintf(stderr, "a second writer was let in\n");
        return 1;
    }
    const struct mb_error *e = mb_get_error();
    if (e->errnum == EAGAIN && e->n_holders > 0 && e->holders[0].this_process)
        printf("second open refused as expected: %d holder(s), first pid %d\n", e->n_holders,
               e->holders[0].pid);
    else
        return report("second open");

    /* 3. Submit: enqueue DEPTH writes, then one mbq_do_io sends them all.
     *    With cache=none buffers must be aligned (mb_get_alignment). */
    mb_queue *q = mb_get_queue(d, 0);
    struct request reqs[DEPTH];
    for (int i = 0; i < DEPTH; i++) {
        reqs[i].index = i;
        if (posix_memalign(&reqs[i].buf, 4096, BLOCK)) return 1;
        memset(reqs[i].buf, 'a' + i, BLOCK);
        if (mbq_write(q, (int64_t)i * BLOCK, reqs[i].buf, BLOCK, &reqs[i], 0) < 0)
            return report("mbq_write");
    }
    if (mbq_do_io(q, NULL, 0, 0, NULL) < 0) return report("submit");

    /* 4. The embedder's loop: poll() the completion fd (beside its own fds),
     *    reap with min = 0 when it is readable. */
    struct pollfd pfd = {.fd = mbq_get_completion_fd(q), .events = POLLIN};
    int done = 0;
    while (done < DEPTH) {
        if (poll(&pfd, 1, -1) < 0 && errno != EINTR) return 1;
        struct mb_completion c[DEPTH];
        int n = mbq_do_io(q, c, 0, DEPTH, NULL);
        if (n < 0) return report("mbq_do_io");
        for (int i = 0; i < n; i++) {
            struct request *r = c[i].user_data;
            if (c[i].ret < 0) {
                fprintf(stderr, "request %d: %s\n", r->index, c[i].error_msg);
                return 1;
            }
            done++;
        }
    }
    printf("%d writes completed\n", done);

    /* 5. Read one back, synchronously this time (a wrapper over queue 0),
     *    then flush and close: every lock is released. */
    if (mb_pread(d, reqs[0].buf, BLOCK, 3 * BLOCK) < 0) return report("read");
    printf("block 3 starts with '%c'\n", ((char *)reqs[0].buf)[0]);
    if (mb_flush(d) < 0) return report("flush");
    mb_close(d);
    for (int i = 0; i < DEPTH; i++) free(reqs[i].buf);
    return 0;
}
