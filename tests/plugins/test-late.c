/*
 * A request the core timed out never touches the caller's memory again.
 *
 * Built with the library under AddressSanitizer (tests/fuzz/meson.build,
 * test 'late-asan').  Each case opens a drive whose requests finish well
 * after request-timeout=1, submits through the queue API a read into a
 * heap buffer, a read into the middle of a larger canary buffer and a
 * write from a heap buffer, frees the heap buffers as
 * soon as their requests fail with ETIMEDOUT, and waits until every
 * request has finished in the driver.  A late fill of a freed
 * buffer is a heap-use-after-free that ASan reports (the test dies); a late
 * fill of the canary fails the canary check.
 *
 * Drivers (tests/plugins/late.c, MINIBLOCK_MODULE_DIR): late-serialize,
 * late-parallel (blocking models), late-async (no abandon callback),
 * late-abandon; and the nbd driver against a real nbdkit whose delay filter
 * answers reads late.
 */
#include <errno.h>
#include <glib.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <miniblock/miniblock.h>

#define LEN 65536

static GMutex log_lock;
static GString *log_text;

static void on_log(const char *message, void *opaque) {
    (void)opaque;
    g_mutex_lock(&log_lock);
    g_string_append(log_text, message);
    g_string_append_c(log_text, '\n');
    g_mutex_unlock(&log_lock);
}

/* Occurrences of `needle` in what the library logged. */
static int logged(const char *needle) {
    int n = 0;
    g_mutex_lock(&log_lock);
    for (const char *p = log_text->str; (p = strstr(p, needle)); p++) n++;
    g_mutex_unlock(&log_lock);
    return n;
}

/* Requests that have finished in the driver after timing out: completed
 * late, or dropped by a worker before it started them. */
static int finished_late(void) {
    return logged("after it had timed out; ignored") + logged("when it timed out; not started");
}

/* `keeper`: the late replies of an async network driver arrive on the
 * drive's loop, which runs only inside mbq_do_io.  So a last read is sent
 * 1.5 s after the others (before their timeout is noticed, so that the node
 * is not yet failing everything), and the loop runs until it times out in
 * turn, 2.5 s in: the others' replies come meanwhile, at 2 s. */
static void run_case(const char *spec, int with_write, int keeper) {
    const int n = with_write ? 3 : 2;
    char *err = NULL;

    g_mutex_lock(&log_lock);
    g_string_truncate(log_text, 0);
    g_mutex_unlock(&log_lock);
    mb_drive *d = mb_open(spec, &err);
    if (!d) fail_msg("%s: %s", spec, err);
    mb_queue *q = mb_get_queue(d, 0);
    assert_non_null(q);

    uint8_t *a = malloc(LEN), *w = malloc(LEN), *k = malloc(LEN);
    uint8_t *canary = malloc(3 * LEN);
    assert_true(a && w && k && canary);
    memset(a, 0x11, LEN);
    memset(w, 0x33, LEN);
    memset(canary, 0x22, 3 * LEN);
    assert_int_equal(mbq_read(q, 0, a, LEN, "a", 0), 0);
    assert_int_equal(mbq_read(q, LEN, canary + LEN, LEN, "c", 0), 0);
    if (with_write) assert_int_equal(mbq_write(q, 2 * LEN, w, LEN, "w", 0), 0);
    assert_int_equal(mbq_do_io(q, NULL, 0, 0, NULL), 0);
    int inflight = n;
    if (keeper) {
        g_usleep(1500 * 1000);
        assert_int_equal(mbq_read(q, 3 * LEN, k, LEN, "k", 0), 0);
        inflight++;
    }

    /* Every request fails after request-timeout=1 (the watchdog looks
     * every 250 ms), and the caller lets go of its memory at once. */
    int timed_out = 0;
    while (inflight > 0) {
        struct mb_completion c[4];
        int got = mbq_do_io(q, c, 1, 4, NULL);
        assert_true(got >= 1);
        for (int i = 0; i < got; i++) {
            if (c[i].ret != -ETIMEDOUT) fail_msg("%s: request %s: %d", spec, (char *)c[i].user_data, c[i].ret);
            timed_out++;
            if (strcmp(c[i].user_data, "a") == 0) free(a);
            if (strcmp(c[i].user_data, "w") == 0) free(w);
        }
        inflight -= got;
    }
    assert_int_equal(timed_out, n + keeper);

    /* The driver finishes them 2 s after they started. */
    gint64 deadline = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;
    while (finished_late() < n && g_get_monotonic_time() < deadline) g_usleep(10000);
    if (finished_late() != n)
        fail_msg("%s: %d of %d requests finished late; log:\n%s", spec, finished_late(), n, log_text->str);
    for (int i = 0; i < 3 * LEN; i++)
        if (canary[i] != 0x22) fail_msg("%s: the canary changed at byte %d: 0x%02x", spec, i, canary[i]);

    mb_close(d);
    free(canary);
    free(k);
}

/* Each of the three requests ended one way or the other, in exact words. */
static int ended(const char *driver, const char *what) {
    char late[256], unstarted[256];
    snprintf(late, sizeof(late), "Driver '%s' completed a %s after it had timed out; ignored", driver, what);
    snprintf(unstarted, sizeof(unstarted), "Driver '%s' had not started a %s when it timed out; not started",
             driver, what);
    return logged(late) + logged(unstarted);
}

static void test_serialize(void **st) {
    (void)st;
    run_case("driver=late-serialize,delay-ms=2000,request-timeout=1", 1, 0);
    /* Serialized: one ran late; the other two waited behind it and were
     * never started once they had timed out. */
    assert_int_equal(ended("late-serialize", "read at offset 0"), 1);
    assert_int_equal(ended("late-serialize", "read at offset 65536"), 1);
    assert_int_equal(ended("late-serialize", "write at offset 131072"), 1);
    assert_int_equal(logged("when it timed out; not started"), 2);
}

static void test_parallel(void **st) {
    (void)st;
    run_case("driver=late-parallel,delay-ms=2000,request-timeout=1", 1, 0);
    assert_int_equal(ended("late-parallel", "read at offset 0"), 1);
    assert_int_equal(ended("late-parallel", "write at offset 131072"), 1);
}

static void test_async_bounced(void **st) {
    (void)st;
    run_case("driver=late-async,delay-ms=2000,request-timeout=1", 1, 0);
    assert_int_equal(logged("Driver 'late-async' did not complete a read at offset 0 within 1 s; the request fails with ETIMEDOUT and the node with EIO from now on"), 1);
}

static void test_async_abandon(void **st) {
    (void)st;
    run_case("driver=late-abandon,delay-ms=2000,request-timeout=1", 1, 0);
}

/* Requests that finish in time get their data through the core's buffers:
 * a read's fill reaches the caller's buffer, exactly its range, for every
 * model; and a blocking model's completion resumes the queue's own loop
 * (it once went to the worker thread's fallback loop, and hung). */
static void test_live(void **st) {
    (void)st;
    const char *drivers[] = {"late-serialize", "late-parallel", "late-async", "late-abandon"};
    for (int i = 0; i < 4; i++) {
        char spec[128], *err = NULL;
        snprintf(spec, sizeof(spec), "driver=%s,delay-ms=0,fill=90", drivers[i]);
        mb_drive *d = mb_open(spec, &err);
        if (!d) fail_msg("%s: %s", spec, err);
        mb_queue *q = mb_get_queue(d, 0);
        uint8_t *buf = malloc(3 * LEN);
        assert_non_null(buf);
        memset(buf, 0x22, 3 * LEN);
        assert_int_equal(mbq_read(q, 0, buf + LEN, LEN, "r", 0), 0);
        assert_int_equal(mbq_write(q, 0, buf, LEN, "w", 0), 0);
        struct mb_completion c[2];
        int got = 0;
        while (got < 2) {
            int r = mbq_do_io(q, c + got, 1, 2 - got, NULL);
            assert_true(r >= 1);
            got += r;
        }
        assert_int_equal(c[0].ret, 0);
        assert_int_equal(c[1].ret, 0);
        for (int j = 0; j < 3 * LEN; j++) {
            int want = j >= LEN && j < 2 * LEN ? 90 : 0x22;
            if (buf[j] != want) fail_msg("%s: byte %d is 0x%02x, not 0x%02x", drivers[i], j, buf[j], want);
        }
        mb_close(d);
        free(buf);
    }
}

/* nbd against a real server that answers reads and writes 2 s late. */
static void test_nbd(void **st) {
    (void)st;
    char dir[] = "/tmp/mb-late-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char sock[256], spec[512];
    snprintf(sock, sizeof(sock), "%s/nbd.sock", dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* --exit-with-parent: gone even if this test dies in ASan. */
        execlp("nbdkit", "nbdkit", "-f", "--exit-with-parent", "-U", sock, "--filter=delay", "memory", "1M",
               "rdelay=2", "wdelay=2", (char *)NULL);
        _exit(127);
    }
    struct stat sb;
    for (int i = 0; i < 500 && stat(sock, &sb) != 0; i++) g_usleep(10000);
    if (stat(sock, &sb) != 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
        fail_msg("nbdkit did not start (is nbdkit and its delay filter installed? scripts/setup.sh)");
    }
    snprintf(spec, sizeof(spec), "driver=nbd,server.type=unix,server.path=%s,request-timeout=1", sock);
    run_case(spec, 1, 1);
    assert_int_equal(logged("Driver 'nbd' completed a read at offset 0 after it had timed out; ignored"), 1);
    assert_int_equal(logged("Driver 'nbd' completed a write at offset 131072 after it had timed out; ignored"), 1);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    unlink(sock);
    rmdir(dir);
}

int main(void) {
    log_text = g_string_new("");
    mb_set_log_handler(on_log, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_live),
        cmocka_unit_test(test_serialize),
        cmocka_unit_test(test_parallel),
        cmocka_unit_test(test_async_bounced),
        cmocka_unit_test(test_async_abandon),
        cmocka_unit_test(test_nbd),
    };
    /* LATE_TEST=test_nbd: one case (ASan stops the process at its first
     * report). */
    if (getenv("LATE_TEST")) cmocka_set_test_filter(getenv("LATE_TEST"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
