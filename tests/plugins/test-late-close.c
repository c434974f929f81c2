/*
 * A drive closed while requests that timed out are still in the driver.
 *
 * Built with the library under AddressSanitizer, and run with the late
 * test plugins built under ASan too (tests/fuzz/meson.build, test
 * 'late-close-asan'): a close that frees the plugin's state while a call is
 * still inside the plugin is a heap-use-after-free when that call returns,
 * and ASan stops the test there.
 *
 * The contract (docs/plugins.md, "Close"): mb_close returns at once; the
 * plugin's close runs only once no call is inside the plugin any more, at
 * once when none is, else after the last one returns; a request that timed
 * out while queued for a worker is never started; an async driver is
 * closed at once and its late completions are ignored.
 *
 * Drivers (tests/plugins/late.c with report=1, which logs each blocking
 * call's start and return and, from close, how many calls were inside).
 */
#include <errno.h>
#include <glib.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <miniblock/miniblock.h>

#define LEN 65536

/* A pthread mutex, not a GMutex: GLib's futex-based one is invisible to
 * ThreadSanitizer (late-close-tsan). */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static GString *log_text;

static void on_log(const char *message, void *opaque) {
    (void)opaque;
    pthread_mutex_lock(&log_lock);
    g_string_append(log_text, message);
    g_string_append_c(log_text, '\n');
    pthread_mutex_unlock(&log_lock);
}

static void log_reset(void) {
    pthread_mutex_lock(&log_lock);
    g_string_truncate(log_text, 0);
    pthread_mutex_unlock(&log_lock);
}

/* Occurrences of `needle` in what the library and the plugin logged. */
static int logged(const char *needle) {
    int n = 0;
    pthread_mutex_lock(&log_lock);
    for (const char *p = log_text->str; (p = strstr(p, needle)); p++) n++;
    pthread_mutex_unlock(&log_lock);
    return n;
}

/* Where `needle` first appears in the log, or -1. */
static long logged_at(const char *needle) {
    pthread_mutex_lock(&log_lock);
    const char *p = strstr(log_text->str, needle);
    long at = p ? (long)(p - log_text->str) : -1;
    pthread_mutex_unlock(&log_lock);
    return at;
}

/* Waits (20 s at most) until `needle` has been logged. */
static void wait_logged(const char *needle) {
    gint64 deadline = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;
    while (!logged(needle) && g_get_monotonic_time() < deadline) g_usleep(10000);
    if (!logged(needle)) fail_msg("not logged: %s\nlog:\n%s", needle, log_text->str);
}

static mb_drive *open_drive(const char *spec) {
    char *err = NULL;
    mb_drive *d = mb_open(spec, &err);
    if (!d) fail_msg("%s: %s", spec, err);
    return d;
}

/* Submits n requests (reads at 0, LEN, ...; the last one a write when
 * `write`), waits until they have all failed with ETIMEDOUT, frees their
 * buffers, and closes the drive. */
static void time_out_and_close(const char *spec, int n, int write) {
    mb_drive *d = open_drive(spec);
    mb_queue *q = mb_get_queue(d, 0);
    assert_non_null(q);
    uint8_t *bufs[4];
    assert_true(n <= 4);
    for (int i = 0; i < n; i++) {
        bufs[i] = malloc(LEN);
        assert_non_null(bufs[i]);
        memset(bufs[i], 0x33, LEN);
        int r = write && i == n - 1 ? mbq_write(q, (int64_t)i * LEN, bufs[i], LEN, bufs[i], 0)
                                    : mbq_read(q, (int64_t)i * LEN, bufs[i], LEN, bufs[i], 0);
        assert_int_equal(r, 0);
    }
    assert_int_equal(mbq_do_io(q, NULL, 0, 0, NULL), 0);
    int left = n;
    while (left > 0) {
        struct mb_completion c[4];
        int got = mbq_do_io(q, c, 1, 4, NULL);
        assert_true(got >= 1);
        for (int i = 0; i < got; i++) {
            if (c[i].ret != -ETIMEDOUT) fail_msg("%s: a request ended with %d, not ETIMEDOUT", spec, c[i].ret);
            free(c[i].user_data);
        }
        left -= got;
    }
    mb_close(d);
}

/* SERIALIZE: the read a worker starts first blocks past the timeout (two
 * workers race for the node; either read may win), the other waits behind
 * it and times out unstarted; the caller closes the drive; then the first
 * read returns.  Before the fix, close freed the plugin's state at once
 * ("closed with 1 calls inside"), and the read's return read it: ASan's
 * heap-use-after-free in late.c. */
static void test_serialize_queued(void **st) {
    (void)st;
    log_reset();
    time_out_and_close("driver=late-serialize,delay-ms=5000,request-timeout=1,report=1", 2, 0);
    /* Checked after the read has returned, so that on a core that closes
     * too early ASan reports the use-after-free first. */
    int returned_at_close = logged(" returns");
    int closed_at_close = logged("late-serialize: closed");
    wait_logged(" returns");
    wait_logged("late-serialize: closed with 0 calls inside and 0 requests pending");
    /* mb_close returned while the first read was still in the plugin,
     * and did not close the plugin under it. */
    assert_int_equal(returned_at_close, 0);
    assert_int_equal(closed_at_close, 0);
    assert_true(logged_at(" returns") < logged_at("late-serialize: closed with 0 calls inside"));
    assert_int_equal(logged("late-serialize: closed"), 1);
    /* One read ran; the one queued behind it never reached the plugin. */
    assert_int_equal(logged(" starts"), 1);
    assert_int_equal(logged("when it timed out; not started"), 1);
    assert_int_equal(logged("late-serialize: read at offset 0 starts") +
                         logged("Driver 'late-serialize' had not started a read at offset 0 when it timed out; not started"),
                     1);
    assert_int_equal(logged("late-serialize: read at offset 65536 starts") +
                         logged("Driver 'late-serialize' had not started a read at offset 65536 when it timed out; not started"),
                     1);
    wait_logged("after it had timed out; ignored");
    assert_int_equal(logged("Driver 'late-serialize' completed a read at offset "), 1);
}

/* PARALLEL: two reads and a write all running in workers at close; the
 * plugin is closed after the last of them returns. */
static void test_parallel_running(void **st) {
    (void)st;
    log_reset();
    time_out_and_close("driver=late-parallel,delay-ms=5000,request-timeout=1,report=1", 3, 1);
    int closed_at_close = logged("late-parallel: closed");
    wait_logged("late-parallel: write at offset 131072 returns");
    wait_logged("late-parallel: closed with 0 calls inside and 0 requests pending");
    assert_int_equal(closed_at_close, 0);
    long closed = logged_at("late-parallel: closed");
    assert_true(logged_at("late-parallel: read at offset 0 returns") < closed);
    assert_true(logged_at("late-parallel: read at offset 65536 returns") < closed);
    assert_true(logged_at("late-parallel: write at offset 131072 returns") < closed);
    assert_int_equal(logged("late-parallel: closed"), 1);
}

/* A blocking filter reads its child from a worker (mbd_child_pread) and
 * flushes it in close.  Through the C API the child read runs on the
 * queue's loop (it once went to the worker thread's default loop, which no
 * one runs, and every read timed out); within mb_close (nothing inside the
 * plugin) the flush reaches the child. */
static void test_filter_children(void **st) {
    (void)st;
    log_reset();
    mb_drive *d = open_drive("driver=late-filter,delay-ms=0,report=1,request-timeout=5,"
                             "file.driver=late-parallel,file.delay-ms=0,file.fill=90");
    uint8_t buf[512];
    assert_int_equal(mb_pread(d, buf, sizeof(buf), 0), 0);
    assert_int_equal(buf[0], 90);
    assert_int_equal(buf[511], 90);
    mb_close(d);
    assert_int_equal(logged("late-filter: the child's read at offset 0 returned 0"), 1);
    assert_int_equal(logged("late-filter: closed with 0 calls inside and 0 requests pending"), 1);
    assert_int_equal(logged("late-filter: the child's flush in close returned 0"), 1);
}

/* The read times out while the filter sleeps; the drive is closed; then
 * the filter reads its child, which has gone: EIO, at once (no loop runs
 * it any more); and close, after the read returned, flushes it: EIO. */
static void test_filter_child_after_close(void **st) {
    (void)st;
    log_reset();
    time_out_and_close("driver=late-filter,delay-ms=4000,request-timeout=1,report=1,file.driver=null-co,file.size=1M",
                       1, 0);
    int closed_at_close = logged("late-filter: closed");
    wait_logged("late-filter: the child's flush in close returned -5");
    assert_int_equal(closed_at_close, 0);
    assert_int_equal(logged("late-filter: the child's read at offset 0 returned -5"), 1);
    assert_true(logged_at("late-filter: read at offset 0 returns") < logged_at("late-filter: closed with 0 calls inside"));
}

/* The read times out while the filter waits for its child's read (3 s, in
 * the child's worker): mb_close finishes that child read before the child
 * goes (it is the core's own request on the child, bounded by the child's
 * request-timeout); the filter's call then returns with the data, and
 * close follows it (on the loop or on its worker, whichever lets go
 * last). */
static void test_filter_child_inflight(void **st) {
    (void)st;
    log_reset();
    time_out_and_close("driver=late-filter,delay-ms=0,request-timeout=1,report=1,"
                       "file.driver=late-parallel,file.delay-ms=3000,file.report=1",
                       1, 0);
    assert_int_equal(logged("late-parallel: read at offset 0 returns"), 1);
    wait_logged("late-filter: closed with 0 calls inside and 0 requests pending");
    assert_int_equal(logged("late-filter: the child's read at offset 0 returned 0"), 1);
    assert_true(logged_at("late-filter: read at offset 0 returns") < logged_at("late-filter: closed"));
    assert_int_equal(logged("late-filter: the child's flush in close returned 0") +
                         logged("late-filter: the child's flush in close returned -5"),
                     1);
    wait_logged("late-parallel: closed with 0 calls inside and 0 requests pending");
}

/* ASYNC: no call is inside the plugin (aio_* return at once), so close
 * runs within mb_close, with the timed-out requests still pending in the
 * driver; their late completions come after close and are ignored. */
static void async_case(const char *driver) {
    char spec[128], closed[128], late[160];
    snprintf(spec, sizeof(spec), "driver=%s,delay-ms=4000,request-timeout=1,report=1", driver);
    log_reset();
    time_out_and_close(spec, 2, 1);
    snprintf(closed, sizeof(closed), "%s: closed with 0 calls inside and 2 requests pending", driver);
    assert_int_equal(logged(closed), 1);
    snprintf(late, sizeof(late), "%s: the last pending request finished after close", driver);
    wait_logged(late);
    snprintf(late, sizeof(late), "Driver '%s' completed a read at offset 0 after it had timed out; ignored", driver);
    assert_int_equal(logged(late), 1);
    snprintf(late, sizeof(late), "Driver '%s' completed a write at offset 65536 after it had timed out; ignored",
             driver);
    assert_int_equal(logged(late), 1);
}

static void test_async(void **st) {
    (void)st;
    async_case("late-async");
    async_case("late-abandon");
}

/* A plugin call that never returns (an hour, past this process): mb_close
 * still returns, and the plugin is never closed under that call.  Last:
 * its worker stays asleep until the process exits. */
static void test_never_returns(void **st) {
    (void)st;
    log_reset();
    time_out_and_close("driver=late-serialize,delay-ms=3600000,request-timeout=1,report=1", 1, 0);
    assert_int_equal(logged("late-serialize: read at offset 0 starts"), 1);
    /* A close would run at once, within mb_close; give a wrong one time
     * to show anyway. */
    g_usleep(500 * 1000);
    assert_int_equal(logged("late-serialize: closed"), 0);
    /* The driver still opens and works for another drive meanwhile. */
    mb_drive *d = open_drive("driver=late-serialize,delay-ms=0,fill=90,report=1");
    uint8_t buf[512];
    assert_int_equal(mb_pread(d, buf, sizeof(buf), 0), 0);
    assert_int_equal(buf[0], 90);
    mb_close(d);
    assert_int_equal(logged("late-serialize: closed with 0 calls inside and 0 requests pending"), 1);
}

int main(void) {
    log_text = g_string_new("");
    mb_set_log_handler(on_log, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_serialize_queued),
        cmocka_unit_test(test_parallel_running),
        cmocka_unit_test(test_filter_children),
        cmocka_unit_test(test_filter_child_after_close),
        cmocka_unit_test(test_filter_child_inflight),
        cmocka_unit_test(test_async),
        cmocka_unit_test(test_never_returns),
    };
    /* LATE_TEST=test_async: one case (ASan stops the process at its first
     * report). */
    if (getenv("LATE_TEST")) cmocka_set_test_filter(getenv("LATE_TEST"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
