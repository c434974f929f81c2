/* The queue API (miniblock.h "Queues") from plain C, as an embedder with its
 * own poll() loop and no GLib uses it; and the calls it must refuse. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "miniblock/miniblock.h"

#define IMG_SIZE (4 << 20)
#define BS 4096
#define DEPTH 32

#include "test-image.h"

static int setup(void **state) {
    (void)state;
    int fd = create_image("/var/tmp", "queue", IMG_SIZE);
    if (fd < 0) return -1;
    /* Block i holds the byte i+1 everywhere. */
    unsigned char blk[BS];
    for (int i = 0; i < IMG_SIZE / BS; i++) {
        memset(blk, (i + 1) & 0xff, sizeof(blk));
        if (pwrite(fd, blk, BS, (off_t)i * BS) != BS) return -1;
    }
    close(fd);
    return 0;
}

static mb_drive *must_open(const char *s) {
    char *err = NULL;
    mb_drive *d = mb_open(s, &err);
    if (!d) fail_msg("mb_open(%s): %s", s, err);
    return d;
}

/* An embedder's loop: poll() on the completion fd, reap with min=0. */
static int poll_loop(mb_queue *q, struct mb_completion *done, int want) {
    int got = 0;
    struct pollfd pfd = {.fd = mbq_get_completion_fd(q), .events = POLLIN};
    assert_true(pfd.fd >= 0);
    while (got < want) {
        int r = poll(&pfd, 1, 10000);
        assert_int_equal(r, 1); /* never a 10 s stall */
        int n = mbq_do_io(q, done + got, 0, want - got, NULL);
        assert_true(n >= 0);
        got += n;
    }
    return got;
}

static void test_poll_embedder(void **state) {
    (void)state;
    for (int native = 0; native < 2; native++) {
        mb_drive *d = must_open(drive(native ? "cache=none,aio=native" : ""));
        mb_queue *q = mb_get_queue(d, 0);
        assert_non_null(q);
        unsigned char *bufs = NULL;
        assert_int_equal(posix_memalign((void **)&bufs, BS, (size_t)DEPTH * BS), 0);
        /* 32 reads on a 36 KiB stride, each tagged with its index. */
        for (int i = 0; i < DEPTH; i++)
            assert_int_equal(mbq_read(q, (int64_t)i * 9 * BS, bufs + (size_t)i * BS, BS, (void *)(intptr_t)(i + 1), 0), 0);
        /* Nothing is submitted before mbq_do_io. */
        assert_int_equal(mbq_do_io(q, NULL, 0, 0, NULL), 0);
        struct mb_completion done[DEPTH];
        assert_int_equal(poll_loop(q, done, DEPTH), DEPTH);
        int seen[DEPTH] = {0};
        for (int i = 0; i < DEPTH; i++) {
            assert_int_equal(done[i].ret, 0);
            assert_null(done[i].error_msg);
            int k = (int)(intptr_t)done[i].user_data - 1;
            assert_true(k >= 0 && k < DEPTH);
            seen[k]++;
            unsigned char want = (unsigned char)((k * 9 + 1) & 0xff);
            for (int j = 0; j < BS; j++) assert_int_equal(bufs[(size_t)k * BS + j], want);
        }
        for (int i = 0; i < DEPTH; i++) assert_int_equal(seen[i], 1);

        /* Writes, a write of zeroes, a discard and a flush in one batch. */
        memset(bufs, 0xab, BS);
        assert_int_equal(mbq_write(q, 0, bufs, BS, (void *)1, MBQ_REQ_FUA), 0);
        assert_int_equal(mbq_write_zeroes(q, BS, BS, (void *)2, 0), 0);
        assert_int_equal(mbq_discard(q, 2 * BS, BS, (void *)3, 0), 0);
        assert_int_equal(mbq_flush(q, (void *)4, 0), 0);
        assert_int_equal(mbq_do_io(q, done, 4, 4, NULL), 4);
        for (int i = 0; i < 4; i++) assert_int_equal(done[i].ret, 0);
        /* The synchronous calls run on the same queue. */
        assert_int_equal(mb_pread(d, bufs + BS, 2 * BS, 0), 0);
        for (int j = 0; j < BS; j++) assert_int_equal(bufs[BS + j], 0xab);
        for (int j = 0; j < BS; j++) assert_int_equal(bufs[2 * BS + j], 0);
        /* Nothing more in flight: a call that would wait forever is refused. */
        assert_int_equal(mbq_do_io(q, done, 1, 1, NULL), -EINVAL);
        assert_string_equal(mb_last_error(), "mbq_do_io: min 1 is more than the 0 requests in flight");
        free(bufs);
        mb_close(d);
        assert_int_equal(setup(NULL), 0);
    }
}

/* Completions beyond max stay queued and keep the fd readable. */
static void test_max_and_timeout(void **state) {
    (void)state;
    mb_drive *d = must_open(drive(""));
    mb_queue *q = mb_get_queue(d, 0);
    unsigned char buf[8][512];
    for (int i = 0; i < 8; i++) assert_int_equal(mbq_read(q, i * 512, buf[i], 512, NULL, 0), 0);
    struct mb_completion c[8];
    struct timespec ts = {5, 0};
    assert_int_equal(mbq_do_io(q, c, 8, 8, &ts), 8);
    for (int i = 0; i < 8; i++) assert_int_equal(mbq_read(q, i * 512, buf[i], 512, NULL, 0), 0);
    assert_int_equal(mbq_do_io(q, NULL, 0, 0, NULL), 0);
    int got = 0;
    while (got < 8) {
        struct pollfd pfd = {.fd = mbq_get_completion_fd(q), .events = POLLIN};
        assert_int_equal(poll(&pfd, 1, 10000), 1);
        int n = mbq_do_io(q, c, 0, 3, NULL);
        assert_true(n >= 0 && n <= 3);
        got += n;
    }
    assert_int_equal(got, 8);
    mb_close(d);
}

/* A caller that waits for min completions gets them as soon as they are
 * there: the loop stops before the other completions it found, so that the
 * caller's next requests go out sooner (as QEMU's completion callbacks send
 * theirs at once), and the fd stays readable for the rest. */
static void test_min_handed_over_first(void **state) {
    (void)state;
    mb_drive *d = must_open(drive("aio=threads"));
    mb_queue *q = mb_get_queue(d, 0);
    unsigned char buf[8][512];
    for (int i = 0; i < 8; i++)
        assert_int_equal(mbq_read(q, i * 512, buf[i], 512, (void *)(intptr_t)(i + 1), 0), 0);
    assert_int_equal(mbq_do_io(q, NULL, 0, 0, NULL), 0); /* submits */
    /* The worker threads finish all 8 while nobody runs the loop. */
    usleep(300 * 1000);
    struct mb_completion c[8];
    assert_int_equal(mbq_do_io(q, c, 1, 8, NULL), 1);
    int seen = 1 << (intptr_t)c[0].user_data;
    struct pollfd pfd = {.fd = mbq_get_completion_fd(q), .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 0), 1);
    int got = 1;
    while (got < 8) {
        assert_int_equal(poll(&pfd, 1, 10000), 1);
        int n = mbq_do_io(q, c, 0, 8, NULL);
        assert_true(n >= 0);
        for (int i = 0; i < n; i++) {
            assert_int_equal(c[i].ret, 0);
            seen |= 1 << (intptr_t)c[i].user_data;
        }
        got += n;
    }
    assert_int_equal(got, 8);
    assert_int_equal(seen, 0x1fe); /* each request once */
    for (int i = 0; i < 8; i++) assert_int_equal(buf[i][0], i / 8 + 1);
    mb_close(d);
}

static void test_bad_calls(void **state) {
    (void)state;
    char *err = NULL;
    assert_null(mb_open(drive("queues=0"), &err));
    assert_string_equal(err, "Invalid value '0' for parameter 'queues'\nValid values: 1 to 64");
    mb_free_error(err);

    mb_drive *d = must_open(drive("queues=2"));
    assert_int_equal(mb_get_num_queues(d), 2);
    assert_null(mb_get_queue(d, 2));
    assert_string_equal(mb_last_error(), "mb_get_queue: queue 2 does not exist (the drive has 2, set with queues=N)");
    assert_null(mb_get_queue(d, -1));
    mb_queue *q = mb_get_queue(d, 1);
    unsigned char buf[4096];
    assert_int_equal(mbq_read(q, IMG_SIZE - 512, buf, 1024, NULL, 0), -EINVAL);
    assert_string_equal(mb_last_error(),
                        "mbq_read: 1024 bytes at offset 4193792 go past the end of the drive (4194304 bytes)");
    assert_int_equal(mbq_write(q, -1, buf, 512, NULL, 0), -EINVAL);
    assert_string_equal(mb_last_error(), "mbq_write: offset -1 and length 512 must not be negative");
    assert_int_equal(mbq_read(q, 0, buf, 512, NULL, 0x80), -EINVAL);
    assert_string_equal(mb_last_error(), "mbq_read: unknown flags 0x80");
    assert_int_equal(mbq_read(q, 0, buf, 512, NULL, MBQ_REQ_FUA), -EINVAL);
    assert_string_equal(mb_last_error(), "mbq_read: MBQ_REQ_FUA applies to writes only");
    assert_int_equal(mbq_read(q, 0, NULL, 512, NULL, 0), -EINVAL);
    assert_string_equal(mb_last_error(), "mbq_read: no buffer was given");
    assert_int_equal(mbq_do_io(q, NULL, 0, 1, NULL), -EINVAL);
    assert_string_equal(mb_last_error(), "mbq_do_io: max is 1 but out is NULL");
    assert_int_equal(mbq_do_io(q, NULL, 2, 1, NULL), -EINVAL);
    assert_string_equal(mb_last_error(), "mbq_do_io: min 2 and max 1 must satisfy 0 <= min <= max");
    /* A refused request left nothing behind: the queue is empty. */
    struct mb_completion c;
    assert_int_equal(mbq_do_io(q, &c, 0, 1, NULL), 0);
    mb_close(d);

    /* The handle outlives the drive and says so. */
    assert_int_equal(mbq_read(q, 0, buf, 512, NULL, 0), -EBADF);
    assert_string_equal(mb_last_error(), "mbq_read: queue 1 belongs to a closed drive");
    assert_int_equal(mbq_do_io(q, &c, 0, 1, NULL), -EBADF);
    assert_string_equal(mb_last_error(), "mbq_do_io: queue 1 belongs to a closed drive");
    assert_int_equal(mbq_get_completion_fd(q), -EBADF);
    assert_int_equal(mbq_flush(NULL, NULL, 0), -EINVAL);
    assert_string_equal(mb_last_error(), "mbq_flush: no queue was given");

    /* cache=none: buffer, offset and length aligned, else refused. */
    d = must_open(drive("cache=none,aio=native"));
    q = mb_get_queue(d, 0);
    int64_t a = mb_get_alignment(d);
    assert_true(a >= 512);
    unsigned char *al = NULL;
    assert_int_equal(posix_memalign((void **)&al, 4096, 8192), 0);
    assert_int_equal(mbq_read(q, 0, al + 1, 4096, NULL, 0), -EINVAL);
    char want[200];
    snprintf(want, sizeof(want), "mbq_read: buffer %p is not aligned to %lld bytes, as cache=none needs",
             (void *)(al + 1), (long long)a);
    assert_string_equal(mb_last_error(), want);
    assert_int_equal(mbq_write(q, 1, al, 4096, NULL, 0), -EINVAL);
    snprintf(want, sizeof(want), "mbq_write: offset 1 and length 4096 must be multiples of %lld with cache=none",
             (long long)a);
    assert_string_equal(mb_last_error(), want);
    /* The synchronous calls of a single-queue drive still bounce. */
    assert_int_equal(mb_pread(d, al + 1, 100, 3), 0);
    assert_int_equal(al[1], 1);
    free(al);
    mb_close(d);

    /* Writes on a read-only drive are refused before they are queued; an
     * I/O error that only the driver sees comes back as a completion. */
    d = must_open(drive("read-only=on"));
    q = mb_get_queue(d, 0);
    assert_int_equal(mbq_write(q, 0, buf, 512, NULL, 0), -EPERM);
    assert_string_equal(mb_last_error(), "mbq_write: the drive is read-only");
    mb_close(d);
    d = must_open(drive("inactive=on"));
    q = mb_get_queue(d, 0);
    assert_int_equal(mbq_write(q, 0, buf, 512, (void *)7, 0), 0);
    assert_int_equal(mbq_do_io(q, &c, 1, 1, NULL), 1);
    assert_ptr_equal(c.user_data, (void *)7);
    assert_int_equal(c.ret, -EPERM);
    assert_string_equal(c.error_msg, "Write of 512 bytes at offset 0 failed: Operation not permitted");
    mb_close(d);
}

static void test_multiqueue_refused(void **state) {
    (void)state;
    char qpath[300], s[600], *err = NULL;
    snprintf(qpath, sizeof(qpath), "%s.qcow2", path);
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 %s 1M", qpath);
    assert_int_equal(system(cmd), 0);
    snprintf(s, sizeof(s), "file=%s,format=qcow2,queues=2", qpath);
    assert_null(mb_open(s, &err));
    /* The node is named after the drive: "driveN", N counting opens. */
    const char *head = "queues=2 is not supported by the 'qcow2' driver of node 'drive";
    const char *tail = "'\nOnly file and raw drives can have more than one queue";
    assert_int_equal(strncmp(err, head, strlen(head)), 0);
    assert_string_equal(err + strlen(err) - strlen(tail), tail);
    mb_free_error(err);
    /* ... and nothing stays locked: the same image opens exclusively. */
    snprintf(s, sizeof(s), "file=%s,format=qcow2,lock=exclusive", qpath);
    mb_drive *d = must_open(s);
    mb_close(d);
    unlink(qpath);
}

/* Out of file descriptors while a queue is set up: a clear error, no abort. */
static void test_no_fd_for_queue(void **state) {
    (void)state;
    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    /* fd numbers must stay below the limit: with the limit just above the
     * lowest free number, exactly one fd is left (GLib's context takes it,
     * the queue's eventfd fails). */
    int lowest = dup(0);
    assert_true(lowest >= 0);
    close(lowest);
    struct rlimit low = {(rlim_t)lowest + 1, old.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    char *err = NULL;
    mb_drive *d = mb_open(drive(""), &err);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_null(d);
    assert_string_equal(err, "Could not set up queue 0: Too many open files");
    assert_int_equal(mb_get_error()->errnum, EMFILE);
    mb_free_error(err);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_poll_embedder),
        cmocka_unit_test(test_max_and_timeout),
        cmocka_unit_test(test_min_handed_over_first),
        cmocka_unit_test(test_bad_calls),
        cmocka_unit_test(test_multiqueue_refused),
        cmocka_unit_test(test_no_fd_for_queue),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
