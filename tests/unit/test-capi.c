/* The C API, from plain C, as an embedder uses it: open, I/O, errors, and
 * the locks two drives of one process take against each other. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "miniblock/miniblock.h"

#ifdef _WIN32
#include <windows.h>
#else
#include <poll.h>
#endif

#ifdef _WIN32
/* The same suite on Windows (tests/win32, docs/windows.md): the CRT opens
 * in text mode unless told O_BINARY and has no pread; a lock's holder cannot
 * be named there; aio=native does not exist. */
#include <io.h>
#define O_CLOEXEC O_BINARY
static int pread(int fd, void *buf, unsigned n, long off) {
    return lseek(fd, off, SEEK_SET) == off ? read(fd, buf, n) : -1;
}
#define TMP_DIR (getenv("TEMP") ? getenv("TEMP") : ".")
#define HOLDER_TEXT "Windows cannot say which process holds it"
#define AIO_NATIVE_ERROR "aio=native is not supported on Windows\nUse aio=threads (the default)"
#else
#define TMP_DIR "/tmp"
#define HOLDER_TEXT "of this process"
#define AIO_NATIVE_ERROR                                                                      \
    "aio=native was specified, but it requires cache=none\n"                                  \
    "Linux native AIO is only asynchronous with O_DIRECT; add cache=none, or use aio=threads"
#endif

#include "test-image.h"

static int setup(void **state) {
    (void)state;
    int fd = create_image(TMP_DIR, "capi", 1 << 20);
    if (fd < 0) return -1;
    close(fd);
    return 0;
}

static void test_io_roundtrip(void **state) {
    (void)state;
    char *err = NULL;
    mb_drive *d = mb_open(drive(""), &err);
    assert_non_null(d);
    assert_null(err);
    assert_int_equal(mb_length(d), 1 << 20);

    unsigned char buf[4096], back[4096];
    for (size_t i = 0; i < sizeof(buf); i++) buf[i] = (unsigned char)(i * 7 + 3);
    assert_int_equal(mb_pwrite(d, buf, sizeof(buf), 8192), 0);
    assert_int_equal(mb_flush(d), 0);
    memset(back, 0, sizeof(back));
    assert_int_equal(mb_pread(d, back, sizeof(back), 8192), 0);
    assert_memory_equal(buf, back, sizeof(buf));

    assert_int_equal(mb_pwrite_zeroes(d, 4096, 8192), 0);
    assert_int_equal(mb_pread(d, back, 4096, 8192), 0);
    for (int i = 0; i < 4096; i++) assert_int_equal(back[i], 0);

    /* Requests are checked before any driver sees them. */
    assert_int_equal(mb_pread(d, back, -1, 0), -EINVAL);
    assert_int_equal(mb_pread(d, back, 1, -5), -EINVAL);
    mb_close(d);

    /* The data is really in the file. */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, back, 4096, 12288), 4096);
    close(fd);
    assert_memory_equal(buf + 4096 - 4096, back, 0);
}

static void test_read_only_refuses_writes(void **state) {
    (void)state;
    char *err = NULL;
    mb_drive *d = mb_open(drive("read-only=on"), &err);
    assert_non_null(d);
    unsigned char b[512] = {0};
    assert_int_equal(mb_pwrite(d, b, 512, 0), -EPERM);
    mb_close(d);
}

static void test_errors(void **state) {
    (void)state;
    char *err = NULL;
    assert_null(mb_open("file=/nonexistent/x.img,format=raw", &err));
    assert_string_equal(err, "Could not open '/nonexistent/x.img': No such file or directory");
    mb_free_error(err);

    assert_null(mb_open(drive("lokc=on"), &err));
    assert_non_null(strstr(err, "Invalid parameter 'lokc'"));
    mb_free_error(err);

    assert_null(mb_open(drive("lock=exclusiv"), &err));
    assert_string_equal(err, "Invalid value 'exclusiv' for parameter 'lock'\n"
                             "Valid values: off, shared, auto, exclusive (aliases: none -> off, on -> auto)");
    mb_free_error(err);

    assert_null(mb_open(drive("file.aio=native"), &err));
    assert_string_equal(err, AIO_NATIVE_ERROR);
    mb_free_error(err);

    /* A NULL errp is allowed. */
    assert_null(mb_open(drive("lokc=on"), NULL));
}

/* Two drives of one process on one file exclude each other exactly as two
 * processes do, and a refused open changes nothing for the first. */
static void test_two_drives_one_process(void **state) {
    (void)state;
    char *err = NULL;
    mb_drive *a = mb_open(drive("lock=exclusive"), &err);
    assert_non_null(a);

    mb_drive *b = mb_open(drive("read-only=on"), &err);
    assert_null(b);
    assert_non_null(err);
    assert_true(strncmp(err, "Failed to get shared \"consistent read\" lock\n"
                             "Is another process using the image [", 78) == 0 ||
                strncmp(err, "Failed to get \"consistent read\" lock\n", 37) == 0);
    /* The holder is named as a node of this process (Linux). */
    assert_non_null(strstr(err, HOLDER_TEXT));
    mb_free_error(err);

    /* a still writes (its locks are intact), then lets go. */
    unsigned char buf[512];
    memset(buf, 0x5a, sizeof(buf));
    assert_int_equal(mb_pwrite(a, buf, 512, 0), 0);
    mb_drive *c = mb_open(drive("read-only=on"), &err);
    assert_null(c);
    mb_free_error(err);
    mb_close(a);

    b = mb_open(drive("read-only=on"), &err);
    assert_non_null(b);
    mb_close(b);
}

/* Migration hand-over from C: a target opened with inactive=on holds no
 * lock and cannot write; mb_activate fails while the source holds the
 * image, naming it, and succeeds once the source has inactivated. */
static void test_migration_handover(void **state) {
    (void)state;
    char *err = NULL;
    char src_spec[600], dst_spec[600];
    snprintf(src_spec, sizeof(src_spec), "%s", drive("lock=exclusive"));
    snprintf(dst_spec, sizeof(dst_spec), "%s", drive("lock=exclusive,inactive=on"));
    mb_drive *src = mb_open(src_spec, &err);
    assert_non_null(src);
    mb_drive *dst = mb_open(dst_spec, &err);
    assert_non_null(dst);
    assert_int_equal(mb_is_inactive(dst), 1);
    assert_int_equal(mb_is_inactive(src), 0);

    unsigned char buf[512];
    memset(buf, 0x3c, sizeof(buf));
    assert_int_equal(mb_pwrite(dst, buf, sizeof(buf), 0), -EPERM);

    assert_int_equal(mb_activate(dst, &err), -EAGAIN);
    assert_non_null(err);
    assert_non_null(strstr(err, "Cannot activate drive '"));
    assert_non_null(strstr(err, "Failed to get \"consistent read\" lock"));
    assert_non_null(strstr(err, HOLDER_TEXT));
    mb_free_error(err);
    err = NULL;
    assert_int_equal(mb_is_inactive(dst), 1);

    assert_int_equal(mb_pwrite(src, buf, sizeof(buf), 0), 0);
    assert_int_equal(mb_inactivate(src, &err), 0);
    assert_null(err);
    assert_int_equal(mb_pwrite(src, buf, sizeof(buf), 0), -EPERM);
    assert_int_equal(mb_activate(dst, &err), 0);
    assert_null(err);
    unsigned char back[512] = {0};
    assert_int_equal(mb_pread(dst, back, sizeof(back), 0), 0);
    assert_memory_equal(buf, back, sizeof(buf));
    assert_int_equal(mb_pwrite(dst, buf, sizeof(buf), 512), 0);
    assert_int_equal(mb_activate(NULL, NULL), -EBADF);
    mb_close(src);
    mb_close(dst);
}

/* A queue's completion notification, waited for as an embedder's loop does:
 * an eventfd on Linux, an event HANDLE on Windows (docs/windows.md).  It
 * must fire while a completion waits to be reaped: a wait that times out
 * (5 s) fails the test. */
static int wait_notification(mb_queue *q) {
#ifdef _WIN32
    void *h = mbq_get_completion_handle(q);
    assert_non_null(h);
    return WaitForSingleObject((HANDLE)h, 5000) == WAIT_OBJECT_0;
#else
    struct pollfd p = {.fd = mbq_get_completion_fd(q), .events = POLLIN};
    assert_true(p.fd >= 0);
    return poll(&p, 1, 5000) == 1;
#endif
}

static void reap_one(mb_queue *q, void *user_data) {
    struct mb_completion c[2];
    int n = 0;
    for (int tries = 0; n == 0 && tries < 30; tries++) {
        assert_true(wait_notification(q));
        n = mbq_do_io(q, c, 0, 2, NULL);  /* 0 after a wake-up that was not ours */
    }
    assert_int_equal(n, 1);
    assert_ptr_equal(c[0].user_data, user_data);
    assert_int_equal(c[0].ret, 0);
}

static void test_queue_notification(void **state) {
    (void)state;
    char *err = NULL;
    mb_drive *d = mb_open(drive(""), &err);
    assert_non_null(d);
    mb_queue *q = mb_get_queue(d, 0);
    assert_non_null(q);
#ifdef _WIN32
    assert_int_equal(mbq_get_completion_fd(q), -ENOTSUP);
    assert_string_equal(mb_last_error(),
                        "mbq_get_completion_fd: Windows has no completion fd; use mbq_get_completion_handle");
#endif
    static char wbuf[4096], rbuf[4096];
    memset(wbuf, 0x5c, sizeof(wbuf));
    assert_int_equal(mbq_write(q, 8192, wbuf, sizeof(wbuf), wbuf, 0), 0);
    assert_int_equal(mbq_do_io(q, NULL, 0, 0, NULL), 0);  /* submits */
    reap_one(q, wbuf);
    assert_int_equal(mbq_read(q, 8192, rbuf, sizeof(rbuf), rbuf, 0), 0);
    assert_int_equal(mbq_do_io(q, NULL, 0, 0, NULL), 0);
    reap_one(q, rbuf);
    assert_memory_equal(rbuf, wbuf, sizeof(wbuf));
    mb_close(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_io_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_only_refuses_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_drives_one_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_handover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_notification, setup, teardown),
    };
    return cmocka_run_group_tests_name("capi", tests, NULL, NULL);
}
