#define _GNU_SOURCE /* pipe2 */
/* Two processes racing for lock=exclusive on one file, 200 times, through
 * the whole open path: lock, then test, means never both win; taking turns on
 * the preparers' byte and retrying a vanishing conflict (docs/locking.md
 * section 3) mean exactly one wins.  Then miniblock against a real qemu-io,
 * and qemu-io against qemu-io for comparison, on a qcow2 image (a read-write
 * qemu-io forbids write only on qcow2): never two winners, and fewer rounds
 * in which both lose than between two qemu-io. */
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

enum { ROUNDS = 200, QEMU_ROUNDS = 100 };

static char path[256];
static char qcow2_path[256];

/* A racer: wait for the start signal, open, report, hold until told to go. */
static void racer(const char *spec, int go_fd, int result_fd, int done_fd) {
    char c;
    if (read(go_fd, &c, 1) != 1) _exit(2);
    mb_drive *d = mb_open(spec, NULL);
    c = d ? 'W' : 'L';
    if (write(result_fd, &c, 1) != 1) _exit(2);
    if (read(done_fd, &c, 1) < 0) _exit(2);
    mb_close(d);
    _exit(0);
}

static void exclusive_race(const char *extra, int *pboth, int *pone, int *pnone);

static void test_exclusive_race(void **state) {
    (void)state;
    int both, one, none;
    exclusive_race("", &both, &one, &none);
    printf("# miniblock vs miniblock, %d rounds: one winner %d, no winner %d, both %d\n", ROUNDS,
           one, none, both);
    assert_int_equal(both, 0);
    assert_int_equal(one, ROUNDS);
}

/* Read-only openers cannot take the preparers' byte (a write lock needs a
 * writable fd): the randomized retry alone must do. */
static void test_exclusive_race_read_only(void **state) {
    (void)state;
    int both, one, none;
    exclusive_race(",read-only=on", &both, &one, &none);
    printf("# miniblock vs miniblock, read-only, %d rounds: one winner %d, no winner %d, both %d\n",
           ROUNDS, one, none, both);
    assert_int_equal(both, 0);
    assert_true(none <= ROUNDS / 100);
}

static void exclusive_race(const char *extra, int *pboth, int *pone, int *pnone) {
    char spec[512];
    snprintf(spec, sizeof(spec), "file=%s,format=raw,lock=exclusive%s", path, extra);
    int both = 0, one = 0, none = 0;
    for (int round = 0; round < ROUNDS; round++) {
        int go[2], result[2], done[2];
        assert_int_equal(pipe(go), 0);
        assert_int_equal(pipe(result), 0);
        assert_int_equal(pipe(done), 0);
        pid_t pids[2];
        for (int i = 0; i < 2; i++) {
            pids[i] = fork();
            assert_true(pids[i] >= 0);
            if (pids[i] == 0) {
                close(go[1]);
                close(result[0]);
                close(done[1]);
                racer(spec, go[0], result[1], done[0]);
            }
        }
        close(go[0]);
        close(result[1]);
        close(done[0]);
        /* Both are blocked in read(): release them together. */
        assert_int_equal(write(go[1], "gg", 2), 2);
        int wins = 0;
        for (int i = 0; i < 2; i++) {
            char c;
            assert_int_equal(read(result[0], &c, 1), 1);
            wins += c == 'W';
        }
        close(done[1]); /* EOF: both close and exit */
        for (int i = 0; i < 2; i++) {
            int st;
            assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
            assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        }
        close(go[1]);
        close(result[0]);
        if (wins == 2) both++;
        else if (wins == 1) one++;
        else none++;
    }
    *pboth = both;
    *pone = one;
    *pnone = none;
}

/* ---- racers of a mixed round ------------------------------------------ */

/* A racer the parent starts, then releases with go(), then asks who won. */
struct racer {
    pid_t pid;
    int in;  /* parent writes: the go signal (and "quit" for qemu-io) */
    int out; /* parent reads: the result */
    int is_qemu;
};

/* Reads from fd until buf ends with "qemu-io> " (the prompt after each
 * command); returns whether "can't open" came before it. */
static int qemu_io_until_prompt(int fd, int *failed) {
    char buf[4096];
    size_t len = 0;
    static const char prompt[] = "qemu-io> ";
    const size_t plen = sizeof(prompt) - 1;
    for (;;) {
        if (len == sizeof(buf) - 1) {
            memmove(buf, buf + len / 2, len - len / 2);
            len -= len / 2;
        }
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        len += (size_t)n;
        buf[len] = 0;
        if (strstr(buf, "can't open")) *failed = 1;
        if (len >= plen && memcmp(buf + len - plen, prompt, plen) == 0) return 0;
    }
}

/* Both racers of a round share one process group (pgid 0: a new one), so
 * that one SIGCONT releases them at the same instant. */
static void start_qemu_io(struct racer *r, pid_t pgid) {
    int in[2], out[2];
    assert_int_equal(pipe2(in, O_CLOEXEC), 0);
    assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    r->pid = fork();
    assert_true(r->pid >= 0);
    setpgid(r->pid, pgid); /* in both, so that it holds before either goes on */
    if (r->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(out[1], 2);
        execlp("qemu-io", "qemu-io", (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    r->in = in[1];
    r->out = out[0];
    r->is_qemu = 1;
    int failed = 0;
    /* Its first prompt: started and waiting for the "open" command. */
    assert_int_equal(qemu_io_until_prompt(r->out, &failed), 0);
}

static void start_miniblock(struct racer *r, const char *spec, pid_t pgid) {
    int go[2], result[2];
    assert_int_equal(pipe2(go, O_CLOEXEC), 0);
    assert_int_equal(pipe2(result, O_CLOEXEC), 0);
    r->pid = fork();
    assert_true(r->pid >= 0);
    setpgid(r->pid, pgid);
    if (r->pid == 0) {
        close(go[1]);
        close(result[0]);
        racer(spec, go[0], result[1], go[0]);
    }
    close(go[0]);
    close(result[1]);
    r->in = go[1];
    r->out = result[0];
    r->is_qemu = 0;
}

static void go(struct racer *r) {
    if (r->is_qemu) {
        char line[400];
        int n = snprintf(line, sizeof(line), "open -o driver=qcow2 %s\n", qcow2_path);
        assert_int_equal(write(r->in, line, (size_t)n), n);
    } else {
        assert_int_equal(write(r->in, "g", 1), 1);
    }
}

static int won(struct racer *r) {
    if (r->is_qemu) {
        int failed = 0;
        assert_int_equal(qemu_io_until_prompt(r->out, &failed), 0);
        return !failed;
    }
    char c;
    assert_int_equal(read(r->out, &c, 1), 1);
    return c == 'W';
}

static void finish(struct racer *r) {
    if (r->is_qemu) assert_int_equal(write(r->in, "quit\n", 5), 5);
    close(r->in); /* EOF: the miniblock racer closes and exits */
    int st;
    assert_int_equal(waitpid(r->pid, &st, 0), r->pid);
    /* qemu-io exits 1 after a command (its open) failed. */
    assert_true(WIFEXITED(st) && (r->is_qemu || WEXITSTATUS(st) == 0));
    close(r->out);
}

/* QEMU_ROUNDS rounds of two racers on the qcow2 image; kinds[i] says which
 * is qemu-io.  Counts rounds with both, one and no winner. */
static void mixed_rounds(const int kinds[2], int *both, int *one, int *none) {
    char spec[512];
    snprintf(spec, sizeof(spec), "file=%s,format=qcow2,lock=exclusive", qcow2_path);
    *both = *one = *none = 0;
    for (int round = 0; round < QEMU_ROUNDS; round++) {
        struct racer r[2];
        for (int i = 0; i < 2; i++) {
            pid_t pgid = i ? r[0].pid : 0;
            if (kinds[i]) start_qemu_io(&r[i], pgid);
            else start_miniblock(&r[i], spec, pgid);
        }
        /* Stop both, hand each its go, and continue both with one signal:
         * they then start their opens at the same moment. */
        for (int i = 0; i < 2; i++) {
            int st;
            assert_int_equal(kill(r[i].pid, SIGSTOP), 0);
            assert_int_equal(waitpid(r[i].pid, &st, WUNTRACED), r[i].pid);
            assert_true(WIFSTOPPED(st));
        }
        go(&r[round & 1]);
        go(&r[!(round & 1)]);
        assert_int_equal(killpg(r[0].pid, SIGCONT), 0);
        int wins = won(&r[0]) + won(&r[1]);
        for (int i = 0; i < 2; i++) finish(&r[i]);
        if (wins == 2) (*both)++;
        else if (wins == 1) (*one)++;
        else (*none)++;
    }
}

static void test_qemu_io_race(void **state) {
    (void)state;
    /* A pipe whose reader has gone must fail the write, not kill us. */
    signal(SIGPIPE, SIG_IGN);
    static const int qemu_pair[2] = {1, 1}, mixed[2] = {0, 1};
    int qb, qo, qn, mb, mo, mn;
    mixed_rounds(qemu_pair, &qb, &qo, &qn);
    printf("# qemu-io vs qemu-io, %d rounds: one winner %d, no winner %d, both %d\n",
           QEMU_ROUNDS, qo, qn, qb);
    mixed_rounds(mixed, &mb, &mo, &mn);
    printf("# miniblock vs qemu-io, %d rounds: one winner %d, no winner %d, both %d\n",
           QEMU_ROUNDS, mo, mn, mb);
    assert_int_equal(qb, 0);
    assert_int_equal(mb, 0);
    /* qemu-io never retries, so a round both lose can still happen when
     * qemu-io's test sees our bytes while ours sees its; we retry, so we
     * lose such rounds far less often than two qemu-io do. */
    assert_true(mn == 0 || mn < qn);
}

static int setup(void **state) {
    (void)state;
    snprintf(path, sizeof(path), "/tmp/mb-race-%d.img", (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ftruncate(fd, 1 << 20) < 0) return -1;
    close(fd);
    snprintf(qcow2_path, sizeof(qcow2_path), "/tmp/mb-race-%d.qcow2", (int)getpid());
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 %s 1M", qcow2_path);
    if (system(cmd) != 0) return -1;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    unlink(path);
    unlink(qcow2_path);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exclusive_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exclusive_race_read_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qemu_io_race, setup, teardown),
    };
    return cmocka_run_group_tests_name("race", tests, NULL, NULL);
}
