/* Two queues of one drive driven by two threads at once (the header's
 * threading contract), each with its own completion fd and poll() loop.
 * Built twice: normally and with -fsanitize=thread (test-queue-threads-tsan),
 * where ThreadSanitizer turns any data race between the queues into a
 * failure. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "miniblock/miniblock.h"

#define BS 4096
#define BLOCKS 256 /* per thread */
#define DEPTH 16
#define ROUNDS 4

static char path[256];

struct worker {
    mb_queue *q;
    int index;
    int64_t base;
    int errors;
    char msg[256];
};

static void note(struct worker *w, const char *what, int r) {
    if (!w->errors++) snprintf(w->msg, sizeof(w->msg), "%s: %d %s", what, r, mb_last_error());
}

/* Runs `BLOCKS` requests (writes or reads) at depth DEPTH through poll(). */
static void run(struct worker *w, unsigned char *bufs, int write, int round) {
    int next = 0, done = 0;
    struct pollfd pfd = {.fd = mbq_get_completion_fd(w->q), .events = POLLIN};
    while (done < BLOCKS && !w->errors) {
        int queued = 0;
        while (next < BLOCKS && next - done < DEPTH) {
            unsigned char *b = bufs + (size_t)next * BS;
            int64_t off = w->base + (int64_t)next * BS;
            if (write) memset(b, (w->index * 64 + round * 16 + next) & 0xff, BS);
            int r = write ? mbq_write(w->q, off, b, BS, (void *)(intptr_t)next, 0)
                          : mbq_read(w->q, off, b, BS, (void *)(intptr_t)next, 0);
            if (r < 0) return note(w, "enqueue", r);
            next++;
            queued++;
        }
        struct mb_completion c[DEPTH];
        int n = mbq_do_io(w->q, c, 0, DEPTH, NULL);
        if (n < 0) return note(w, "mbq_do_io", n);
        if (n == 0 && !queued && poll(&pfd, 1, 10000) != 1) return note(w, "poll timed out", 0);
        for (int i = 0; i < n; i++) {
            int k = (int)(intptr_t)c[i].user_data;
            if (c[i].ret < 0) return note(w, c[i].error_msg, c[i].ret);
            if (!write) {
                unsigned char want = (w->index * 64 + round * 16 + k) & 0xff;
                const unsigned char *b = bufs + (size_t)k * BS;
                for (int j = 0; j < BS; j++)
                    if (b[j] != want) return note(w, "read back wrong data", k);
            }
            done++;
        }
    }
}

static void *thread_main(void *opaque) {
    struct worker *w = opaque;
    unsigned char *bufs = NULL;
    if (posix_memalign((void **)&bufs, BS, (size_t)BLOCKS * BS)) {
        note(w, "posix_memalign", 0);
        return NULL;
    }
    /* A buffer per block: completions come back in any order. */
    for (int round = 0; round < ROUNDS && !w->errors; round++) {
        run(w, bufs, 1, round);
        run(w, bufs, 0, round);
    }
    free(bufs);
    return NULL;
}

static void two_threads(const char *extra) {
    char spec[400], *err = NULL;
    snprintf(spec, sizeof(spec), "file=%s,format=raw,queues=2%s", path, extra);
    mb_drive *d = mb_open(spec, &err);
    if (!d) fail_msg("%s", err);
    struct worker w[2];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        w[i].q = mb_get_queue(d, i);
        w[i].index = i;
        w[i].base = (int64_t)i * BLOCKS * BS;
        assert_int_equal(pthread_create(&t[i], NULL, thread_main, &w[i]), 0);
    }
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++)
        if (w[i].errors) fail_msg("queue %d: %s", i, w[i].msg);
    mb_close(d);
}

static void test_two_queues(void **state) {
    (void)state;
    snprintf(path, sizeof(path), "/var/tmp/mb-queue-threads-%d.img", (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 2 * BLOCKS * BS), 0);
    close(fd);
    two_threads("");                       /* thread pools */
    two_threads(",cache=none,aio=native"); /* libaio, one io_context per queue */
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_queues),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
