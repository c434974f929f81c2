/* The C control plane from plain C: structured errors with the holders of a
 * lock conflict as data (a real qemu-io process holding the image), reopen
 * as one transaction checked on the lock bytes, truncate, discard, block
 * status, commit with progress, the lock holders of a path, the version and
 * the log handler. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "miniblock/miniblock.h"

#include "test-image.h"

static int setup(void **state) {
    (void)state;
    int fd = create_image("/var/tmp", "control", 1 << 20);
    if (fd < 0) return -1;
    close(fd);
    return 0;
}

/* Which of bytes 100-103 (bits 0-3) and 200-203 (bits 8-11) anyone holds,
 * as seen from a fresh open file description. */
static unsigned lock_bytes(void) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    unsigned bits = 0;
    for (int i = 0; i < 4; i++) {
        for (int f = 0; f < 2; f++) {
            struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = (f ? 200 : 100) + i, .l_len = 1};
            assert_int_equal(fcntl(fd, F_OFD_GETLK, &fl), 0);
            if (fl.l_type != F_UNLCK) bits |= 1u << (i + 8 * f);
        }
    }
    close(fd);
    return bits;
}
#define USE(i) (1u << (i))
#define FORBID(i) (1u << ((i) + 8))

static void test_reopen_transaction(void **state) {
    (void)state;
    mb_drive *d = mb_open(drive(""), NULL);
    assert_non_null(d);
    /* raw read-write, lock=auto: use R, W; forbid W, WU, RS */
    assert_int_equal(lock_bytes(), USE(0) | USE(1) | FORBID(1) | FORBID(2) | FORBID(3));
    assert_int_equal(mb_reopen(d, "read-only=on"), 0);
    assert_int_equal(lock_bytes(), USE(0) | FORBID(1) | FORBID(2) | FORBID(3));
    char buf[512] = {0};
    assert_int_equal(mb_pwrite(d, buf, 512, 0), -EPERM);
    assert_int_equal(mb_reopen(d, "lock=exclusive"), 0);
    assert_int_equal(lock_bytes(), USE(0) | FORBID(0) | FORBID(1) | FORBID(2) | FORBID(3));
    assert_int_equal(mb_reopen(d, "read-only=off,lock=auto"), 0);
    assert_int_equal(lock_bytes(), USE(0) | USE(1) | FORBID(1) | FORBID(2) | FORBID(3));
    assert_int_equal(mb_pwrite(d, buf, 512, 0), 0);

    assert_int_equal(mb_reopen(d, "lock=off"), -EINVAL);
    char want[600];
    snprintf(want, sizeof(want), "Cannot reopen '%s': the lock mode cannot change to or from 'off'\n"
             "Valid values here: shared, auto, exclusive", path);
    assert_string_equal(mb_get_error()->message, want);
    assert_int_equal(mb_get_error()->errnum, EINVAL);
    assert_int_equal(mb_get_error()->n_holders, 0);
    assert_int_equal(mb_reopen(d, "cache=none"), -EINVAL);
    assert_string_equal(mb_last_error(), "Invalid parameter 'cache' for reopen\nValid parameters: read-only, lock");
    assert_int_equal(mb_reopen(d, "read-only=maybe"), -EINVAL);
    assert_string_equal(mb_last_error(), "Invalid value 'maybe' for parameter 'read-only'\nValid values: on, off");
    mb_close(d);
    assert_int_equal(lock_bytes(), 0);
}

/* A real qemu-io holds the image read-write: it uses consistent read and
 * write and, raw being raw to QEMU, forbids nothing. */
static pid_t qemu_pid = -1;
static int qemu_stdin = -1;
static pid_t start_qemu_io(int *to_child) {
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(p[0], 0);
        close(p[1]);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        execlp("qemu-io", "qemu-io", "-f", "raw", path, (char *)NULL);
        _exit(127);
    }
    close(p[0]);
    *to_child = p[1];
    qemu_pid = pid;
    qemu_stdin = p[1];
    /* Wait until its lock bytes are there. */
    for (int i = 0; i < 500 && !(lock_bytes() & USE(1)); i++) usleep(10000);
    assert_true(lock_bytes() & USE(1));
    return pid;
}

static void stop_qemu_io(pid_t pid, int to_child) {
    close(to_child); /* EOF on stdin: qemu-io quits */
    int st;
    if (waitpid(pid, &st, 0) != pid) kill(pid, SIGKILL);
    qemu_pid = -1;
}

/* Also after a failed assertion: no qemu-io outlives its test. */
static int stop_leftover(void **state) {
    (void)state;
    if (qemu_pid > 0) {
        kill(qemu_pid, SIGKILL);
        waitpid(qemu_pid, NULL, 0);
        close(qemu_stdin);
        qemu_pid = -1;
    }
    return 0;
}

static void test_conflict_holders_as_data(void **state) {
    (void)state;
    int to_child;
    pid_t pid = start_qemu_io(&to_child);

    /* Opening read-write (lock=auto forbids other writers) fails; the
     * holder comes back as data. */
    char *err = NULL;
    assert_null(mb_open(drive(""), &err));
    const struct mb_error *e = mb_get_error();
    assert_int_equal(e->errnum, EAGAIN);
    assert_string_equal(e->message, err);
    const char *first = "Failed to get shared \"write\" lock\n";
    assert_int_equal(strncmp(err, first, strlen(first)), 0);
    assert_int_equal(e->n_holders, 1);
    assert_int_equal(e->holders[0].pid, pid);
    assert_int_equal(e->holders[0].this_process, 0);
    assert_string_equal(e->holders[0].program, "qemu-io");
    assert_string_equal(e->holders[0].node, "");
    assert_int_equal(e->holders[0].uses, MB_PERM_CONSISTENT_READ | MB_PERM_WRITE);
    assert_int_equal(e->holders[0].forbids, 0);
    mb_free_error(err);

    /* lock=shared opens beside it.  Going to lock=auto (keep writers out)
     * is one transaction that fails with every byte as before. */
    mb_drive *d = mb_open(drive("read-only=on,lock=shared"), NULL);
    assert_non_null(d);
    unsigned before = lock_bytes();
    assert_int_equal(before, USE(0) | USE(1));
    assert_int_equal(mb_reopen(d, "lock=auto"), -EAGAIN);
    e = mb_get_error();
    assert_int_equal(e->errnum, EAGAIN);
    assert_int_equal(e->n_holders, 1);
    assert_int_equal(e->holders[0].pid, pid);
    assert_int_equal(lock_bytes(), before);
    /* read-write and back under lock=shared: allowed beside qemu-io. */
    char buf[512] = {0};
    assert_int_equal(mb_pwrite(d, buf, 512, 0), -EPERM);
    assert_int_equal(mb_reopen(d, "read-only=off"), 0);
    assert_int_equal(mb_pwrite(d, buf, 512, 0), 0);
    /* Now read-write: lock=auto fails as one transaction too, and the
     * drive stays writable with the same bytes. */
    before = lock_bytes();
    assert_int_equal(mb_reopen(d, "lock=exclusive"), -EAGAIN);
    assert_int_equal(lock_bytes(), before);
    assert_int_equal(mb_pwrite(d, buf, 512, 0), 0);
    assert_int_equal(mb_reopen(d, "read-only=on"), 0);

    /* The lock holders of the path: qemu-io and our node. */
    struct mb_lock_holder *h = NULL;
    int n = mb_lock_holders(path, &h);
    assert_int_equal(n, 2);
    int ours = h[0].this_process ? 0 : 1;
    assert_int_equal(h[ours].this_process, 1);
    assert_int_equal(h[ours].pid, getpid());
    assert_int_equal(h[ours].uses, MB_PERM_CONSISTENT_READ);
    /* the file node under the drive's raw node: "driveN.file" */
    assert_int_equal(strncmp(h[ours].node, "drive", 5), 0);
    assert_string_equal(h[ours].node + strlen(h[ours].node) - 5, ".file");
    assert_int_equal(h[ours].forbids, 0);
    assert_int_equal(h[1 - ours].pid, pid);
    assert_string_equal(h[1 - ours].program, "qemu-io");
    mb_free_lock_holders(h, n);
    mb_close(d);

    stop_qemu_io(pid, to_child);
    assert_int_equal(mb_lock_holders(path, &h), 0);
    assert_null(h);
    assert_int_equal(mb_lock_holders("/nonexistent/x.img", &h), -ENOENT);
    assert_string_equal(mb_last_error(), "Could not stat '/nonexistent/x.img': No such file or directory");
}

static void test_truncate_discard_status(void **state) {
    (void)state;
    mb_drive *d = mb_open(drive(""), NULL);
    assert_non_null(d);
    assert_int_equal(mb_truncate(d, 2 << 20), 0);
    assert_int_equal(mb_length(d), 2 << 20);
    /* resize was taken for the call only */
    assert_int_equal(lock_bytes(), USE(0) | USE(1) | FORBID(1) | FORBID(2) | FORBID(3));
    assert_int_equal(mb_truncate(d, -1), -EINVAL);
    assert_string_equal(mb_last_error(), "mb_truncate: size -1 must not be negative");
    assert_int_equal(mb_discard(d, 4096, 0), 0);
    int64_t pnum = 0;
    int r = mb_block_status(d, 0, 1 << 20, &pnum);
    assert_true(r >= 0);
    assert_true(pnum >= 1 && pnum <= (1 << 20));
    assert_int_equal(mb_block_status(d, 2 << 20, 512, &pnum), -EINVAL);
    assert_string_equal(mb_last_error(), "mb_block_status: range of 512 bytes at offset 2097152 is not inside the drive");
    mb_close(d);
    d = mb_open(drive("read-only=on"), NULL);
    assert_int_equal(mb_truncate(d, 4096), -EPERM);
    mb_close(d);
}

static int64_t last_done, last_total;
static int calls;
static void progress(int64_t done, int64_t total, void *opaque) {
    (void)opaque;
    last_done = done;
    last_total = total;
    calls++;
}

static void test_commit_progress(void **state) {
    (void)state;
    char top[300], cmd[800];
    snprintf(top, sizeof(top), "%s.top.qcow2", path);
    snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 -b %s -F raw %s", path, top);
    assert_int_equal(system(cmd), 0);
    char s[400];
    snprintf(s, sizeof(s), "file=%s,format=qcow2", top);
    mb_drive *d = mb_open(s, NULL);
    assert_non_null(d);
    char buf[4096];
    memset(buf, 0x5a, sizeof(buf));
    assert_int_equal(mb_pwrite(d, buf, sizeof(buf), 65536), 0);
    assert_int_equal(mb_commit(d, NULL, progress, NULL), 0);
    assert_true(calls >= 1);
    assert_int_equal(last_done, last_total);
    assert_int_equal(last_total, mb_length(d));
    mb_close(d);
    int fd = open(path, O_RDONLY);
    char back[4096];
    assert_int_equal(pread(fd, back, sizeof(back), 65536), (ssize_t)sizeof(back));
    assert_memory_equal(back, buf, sizeof(buf));
    close(fd);
    unlink(top);
}

static char logged[512];
static void log_fn(const char *m, void *opaque) {
    (void)opaque;
    snprintf(logged, sizeof(logged), "%s", m);
}

static void test_version_and_log(void **state) {
    (void)state;
    assert_string_equal(mb_version(), MB_VERSION_STRING);
    const char *want = getenv("MB_PROJECT_VERSION");
    assert_non_null(want);
    assert_string_equal(mb_version(), want);
    char v[32];
    snprintf(v, sizeof(v), "%d.%d.%d", MB_VERSION_MAJOR, MB_VERSION_MINOR, MB_VERSION_MICRO);
    assert_string_equal(v, MB_VERSION_STRING);

    /* A probed raw image warns; the handler gets it instead of stderr. */
    mb_set_log_handler(log_fn, NULL);
    mb_drive *d = mb_open(path, NULL);
    assert_non_null(d);
    mb_close(d);
    mb_set_log_handler(NULL, NULL);
    char wantlog[400];
    snprintf(wantlog, sizeof(wantlog), "Image format was not specified for '%s' and probing guessed raw.\n", path);
    assert_int_equal(strncmp(logged, wantlog, strlen(wantlog)), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reopen_transaction),
        cmocka_unit_test_teardown(test_conflict_holders_as_data, stop_leftover),
        cmocka_unit_test(test_truncate_discard_status),
        cmocka_unit_test(test_commit_progress),
        cmocka_unit_test(test_version_and_log),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
