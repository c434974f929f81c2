/* Two processes racing for lock=exclusive on one file, 200 times, through
 * the whole open path: lock, then test, means both may lose but never both
 * win. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "miniblock/miniblock.h"

enum { ROUNDS = 200 };

static char path[256];

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

static void test_exclusive_race(void **state) {
    (void)state;
    char spec[512];
    snprintf(spec, sizeof(spec), "file=%s,format=raw,lock=exclusive", path);
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
    printf("# %d rounds: one winner %d, no winner %d, both %d\n", ROUNDS, one, none, both);
    assert_int_equal(both, 0);
    /* The lock must also be obtainable: most rounds have a winner. */
    assert_true(one > ROUNDS / 2);
}

static int setup(void **state) {
    (void)state;
    snprintf(path, sizeof(path), "/tmp/mb-race-%d.img", (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ftruncate(fd, 1 << 20) < 0) return -1;
    close(fd);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    unlink(path);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exclusive_race, setup, teardown),
    };
    return cmocka_run_group_tests_name("race", tests, NULL, NULL);
}
