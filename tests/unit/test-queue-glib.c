/* A GLib embedder: a queue attached to the embedder's own, non-default
 * GMainContext in one call; completions arrive as callbacks while the
 * embedder iterates its context, and GLib's default context sees nothing. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "miniblock/miniblock.h"

#define N 64

static char path[256];

struct state {
    int done;
    int bad;
    unsigned seen[N];
};

static void on_complete(const struct mb_completion *c, void *opaque) {
    struct state *s = opaque;
    intptr_t k = (intptr_t)c->user_data;
    if (c->ret != 0 || k < 0 || k >= N) s->bad++;
    else s->seen[k]++;
    s->done++;
}

static void test_own_context(void **state) {
    (void)state;
    snprintf(path, sizeof(path), "/var/tmp/mb-queue-glib-%d.img", (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 1 << 20), 0);
    close(fd);

    for (int native = 0; native < 2; native++) {
        char spec[400], *err = NULL;
        snprintf(spec, sizeof(spec), "file=%s,format=raw%s", path, native ? ",cache=none,aio=native" : "");
        mb_drive *d = mb_open(spec, &err);
        assert_non_null(d);
        mb_queue *q = mb_get_queue(d, 0);
        GMainContext *ctx = g_main_context_new();
        struct state s = {0};
        assert_int_equal(mbq_attach_glib(q, ctx, on_complete, &s), 0);
        assert_int_equal(mbq_attach_glib(q, ctx, on_complete, &s), -EBUSY);
        assert_string_equal(mb_last_error(), "mbq_attach_glib: queue 0 is already attached to a GMainContext");

        unsigned char *buf = NULL;
        assert_int_equal(posix_memalign((void **)&buf, 4096, (size_t)N * 4096), 0);
        for (int i = 0; i < N; i++) {
            memset(buf + (size_t)i * 4096, i + 1, 4096);
            assert_int_equal(mbq_write(q, (int64_t)i * 4096, buf + (size_t)i * 4096, 4096, (void *)(intptr_t)i, 0), 0);
        }
        assert_int_equal(mbq_do_io(q, NULL, 0, 0, NULL), 0);
        gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
        while (s.done < N && g_get_monotonic_time() < deadline) g_main_context_iteration(ctx, TRUE);
        assert_int_equal(s.done, N);
        assert_int_equal(s.bad, 0);
        for (int i = 0; i < N; i++) assert_int_equal(s.seen[i], 1);
        /* Nothing of ours ever ran on, or waits on, GLib's default context. */
        assert_false(g_main_context_pending(g_main_context_default()));

        memset(buf, 0, 4096);
        assert_int_equal(mb_pread(d, buf, 4096, 5 * 4096), 0);
        for (int j = 0; j < 4096; j++) assert_int_equal(buf[j], 6);
        assert_int_equal(mbq_detach_glib(q), 0);
        free(buf);
        mb_close(d);
        g_main_context_unref(ctx);
    }
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_own_context),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
