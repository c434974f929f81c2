// Lock holders and real peers: a forked child, two children racing for an
// exclusive lock, and a real qemu-io (QEMU 7.2) on the same file, in both
// directions.  The expected holder lines are compared verbatim.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "block/locking/holders.h"
#include "block/locking/qemu-bytes.h"
#include "block/permissions.h"

// cmocka last: its fail() macro would break the C++ headers.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
extern "C" {
#include <cmocka.h>
}

#include "tests/unit/test-util.h"
using namespace mb::test;

using namespace mb;
using qapi::LockingApi;

namespace {

constexpr uint32_t R = BLK_PERM_CONSISTENT_READ, W = BLK_PERM_WRITE,
                   WU = BLK_PERM_WRITE_UNCHANGED, RS = BLK_PERM_RESIZE;
constexpr uint32_t ALL = BLK_PERM_ALL;

std::unique_ptr<LockProtocol> new_lock(int fd, const std::string &path, const char *node,
                                       LockingApi api) {
    auto r = qemu_byte_lock_new(fd, path, node, api);
    assert_true(r.ok());
    return std::move(*r);
}

std::string self_cmdline() {
    char buf[4096];
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    std::string s(buf, n > 0 ? n : 0);
    for (char &c : s) {
        if (c == '\0') c = ' ';
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    return s;
}

void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, nullptr);
}

// Waits until pid shows up as a holder of path's bytes; returns it.
LockHolder wait_for_holder(int fd, pid_t pid) {
    for (int i = 0; i < 200; i++) {
        for (const LockHolder &h : find_lock_holders(fd)) {
            if (h.pid == pid) return h;
        }
        sleep_ms(25);
    }
    print_error("pid %d never showed up as a holder\n", pid);
    fail();
    return {};
}

// ---- a forked child holding locks --------------------------------------

struct Child {
    pid_t pid = -1;
    int release_fd = -1;  // closing it lets the child exit
    ~Child() {
        if (release_fd >= 0) close(release_fd);
        if (pid > 0) waitpid(pid, nullptr, 0);
    }
};

// The child names itself "lockchild", takes (perm, shared) on path with
// `api`, says so, and holds until released.
void start_child(Child *c, const std::string &path, LockingApi api, uint32_t perm,
                 uint32_t shared) {
    int ready[2], release[2];
    assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
    assert_int_equal(pipe2(release, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        close(release[1]);
        prctl(PR_SET_NAME, "lockchild");
        int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
        auto r = qemu_byte_lock_new(fd, path, "child", api);
        char ok = r.ok() && r.value()->prepare(perm, shared).ok() ? 1 : 0;
        if (ok) r.value()->commit();
        if (write(ready[1], &ok, 1) != 1) _exit(1);
        char c;
        while (read(release[0], &c, 1) > 0) {
        }
        _exit(0);
    }
    close(ready[1]);
    close(release[0]);
    c->pid = pid;
    c->release_fd = release[1];
    char ok = 0;
    assert_int_equal(read(ready[0], &ok, 1), 1);
    close(ready[0]);
    assert_int_equal(ok, 1);
}

void test_holder_forked_child(void **) {
    for (LockingApi api : {LockingApi::Ofd, LockingApi::Posix}) {
        TempFile t;
        Child c;
        start_child(&c, t.path, api, R | W, R);  // auto, raw read-write
        Fd f(t.path);
        LockHolder h = wait_for_holder(f.fd, c.pid);
        assert_false(h.this_process);
        assert_string_equal(h.comm.c_str(), "lockchild");
        assert_string_equal(h.cmdline.c_str(), self_cmdline().c_str());
        assert_string_equal(h.kind.c_str(), api == LockingApi::Ofd ? "ofd" : "posix");
        assert_int_equal(h.use, R | W);
        assert_int_equal(h.forbid, W | WU | RS);

        auto l = new_lock(f.fd, t.path, "mine", LockingApi::Ofd);
        Status s = l->prepare(R, ALL);
        assert_true(s.ok());  // a reader that lets the writer be: fine
        l->commit();
        s = l->prepare(R | W, R);
        assert_string_equal(
            s.to_string().c_str(),
            ("Failed to get \"write\" lock\nIs another process using the image [" + t.path +
             "]?\nHeld by pid " + std::to_string(c.pid) + " (lockchild), command line: " +
             self_cmdline() + "; uses: consistent read, write; forbids: write, write unchanged, "
                              "resize")
                .c_str());
        // Our own node is not "in the way" and is not listed; it is a holder.
        auto all = find_lock_holders(f.fd);
        bool found_self = false;
        for (const auto &x : all) {
            if (x.this_process && x.node_name == "mine") {
                found_self = true;
                assert_string_equal(describe_holder(x).c_str(),
                                    ("Held by node 'mine' of this process (pid " +
                                     std::to_string(getpid()) +
                                     "); uses: consistent read; forbids: nothing")
                                        .c_str());
            }
        }
        assert_true(found_self);
    }
}

// A holder whose /proc/PID/fd cannot be read (another user's process, seen
// by an unprivileged scanner) is still reported, anonymously, from
// /proc/locks.  Needs root to play the two users.
void test_holder_not_visible(void **) {
    if (geteuid() != 0) skip();
    TempFile t;
    Child c;
    start_child(&c, t.path, LockingApi::Ofd, R | W, R);
    struct stat st;
    assert_int_equal(stat(t.path.c_str(), &st), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (setgid(65534) < 0 || setuid(65534) < 0) _exit(10);
        auto hs = find_lock_holders(st.st_dev, st.st_ino);
        if (hs.size() != 1) _exit(11);
        if (hs[0].pid != 0 || hs[0].use != (R | W) || hs[0].forbid != (W | WU | RS)) _exit(12);
        if (describe_holder(hs[0]) !=
            "Held by a process not visible from here (another pid namespace, or another "
            "user's process); uses: consistent read, write; forbids: write, write unchanged, "
            "resize")
            _exit(13);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

// ---- lock, then test: racing openers never both win ----------------------

void test_race_exclusive(void **) {
    for (LockingApi api : {LockingApi::Ofd, LockingApi::Posix}) {
        TempFile t;
        int wins = 0, both_lost = 0;
        for (int round = 0; round < 200; round++) {
            int go[2], res[2], done[2];
            assert_int_equal(pipe2(go, O_CLOEXEC), 0);
            assert_int_equal(pipe2(res, O_CLOEXEC), 0);
            assert_int_equal(pipe2(done, O_CLOEXEC), 0);
            pid_t kids[2];
            for (pid_t &k : kids) {
                k = fork();
                assert_true(k >= 0);
                if (k == 0) {
                    close(go[1]);
                    close(res[0]);
                    close(done[1]);
                    int fd = open(t.path.c_str(), O_RDWR | O_CLOEXEC);
                    auto r = qemu_byte_lock_new(fd, t.path, "racer", api);
                    if (!r.ok()) _exit(1);
                    char c;
                    (void)read(go[0], &c, 1);  // EOF: the start signal
                    char ok = r.value()->prepare(ALL, 0).ok() ? 1 : 0;
                    if (ok) r.value()->commit();
                    if (write(res[1], &ok, 1) != 1) _exit(1);
                    (void)read(done[0], &c, 1);  // hold until both answered
                    _exit(0);
                }
            }
            close(go[0]);
            close(res[1]);
            close(done[0]);
            close(go[1]);  // both start at once
            char a = 0, b = 0;
            assert_int_equal(read(res[0], &a, 1), 1);
            assert_int_equal(read(res[0], &b, 1), 1);
            close(res[0]);
            close(done[1]);
            for (pid_t k : kids) {
                int st = 0;
                assert_int_equal(waitpid(k, &st, 0), k);
                assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
            }
            if (a && b) {
                print_error("round %d: both racers got the exclusive lock\n", round);
                fail();
            }
            wins += a + b;
            both_lost += !a && !b;
        }
        // Sanity: the test did race for something that can be won.
        assert_true(wins > 0);
        print_message("%s: 200 rounds, %d won, %d both lost\n",
                      api == LockingApi::Ofd ? "ofd" : "posix", wins, both_lost);
    }
}

// ---- real qemu-io ------------------------------------------------------

bool have_program(const char *name) {
    std::string cmd = std::string("command -v ") + name + " >/dev/null 2>&1";
    return system(cmd.c_str()) == 0;
}

struct QemuIo {
    pid_t pid = -1;
    ~QemuIo() {
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, 0);
        }
    }
};

void start_qemu_io(QemuIo *q, const std::vector<std::string> &args) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
        std::vector<char *> argv;
        for (const auto &a : args) argv.push_back(const_cast<char *>(a.c_str()));
        argv.push_back(nullptr);
        execvp(argv[0], argv.data());
        _exit(127);
    }
    q->pid = pid;
}

// Runs a command, returns its exit status and stderr+stdout.
int run(const std::string &cmd, std::string *out) {
    out->clear();
    FILE *p = popen((cmd + " 2>&1").c_str(), "re");
    assert_non_null(p);
    char buf[512];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out->append(buf, n);
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void test_qemu_io_holds(void **) {
    if (!have_program("qemu-io") || !have_program("qemu-img")) skip();
    struct Case {
        const char *fmt;
        bool ro;
        uint32_t our_perm, our_shared;
        const char *message;
        const char *bits;
    } cases[] = {
        // qemu-io on raw read-write locks 100-101 and forbids nothing.
        {"raw", false, R | W, R, "Failed to get shared \"write\" lock",
         "uses: consistent read, write; forbids: nothing"},
        // ... read-only, only 100.
        {"raw", true, R, 0, "Failed to get shared \"consistent read\" lock",
         "uses: consistent read; forbids: nothing"},
        // qcow2 read-write: 100, 101, 103, 201, 203.
        {"qcow2", false, R | W, R, "Failed to get \"write\" lock",
         "uses: consistent read, write, resize; forbids: write, resize"},
        // qcow2 read-only: 100, 201, 203.
        {"qcow2", true, R | W, ALL, "Failed to get \"write\" lock",
         "uses: consistent read; forbids: write, resize"},
    };
    for (const Case &c : cases) {
        for (LockingApi api : {LockingApi::Ofd, LockingApi::Posix}) {
            TempFile t;
            std::string out;
            assert_int_equal(
                run(std::string("qemu-img create -q -f ") + c.fmt + " " + t.path + " 1M", &out),
                0);
            QemuIo q;
            std::vector<std::string> args = {"qemu-io"};
            if (c.ro) args.push_back("-r");
            args.insert(args.end(), {"-c", "sleep 20000", "-f", c.fmt, t.path});
            start_qemu_io(&q, args);
            Fd f(t.path);
            LockHolder h = wait_for_holder(f.fd, q.pid);
            assert_string_equal(h.comm.c_str(), "qemu-io");
            assert_string_equal(h.kind.c_str(), "ofd");

            auto l = new_lock(f.fd, t.path, "ours", api);
            Status s = l->prepare(c.our_perm, c.our_shared);
            std::string cmdline = "qemu-io ";
            if (c.ro) cmdline += "-r ";
            cmdline += std::string("-c sleep 20000 -f ") + c.fmt + " " + t.path;
            assert_string_equal(s.to_string().c_str(),
                                (std::string(c.message) +
                                 "\nIs another process using the image [" + t.path +
                                 "]?\nHeld by pid " + std::to_string(q.pid) +
                                 " (qemu-io), command line: " + cmdline + "; " +
                                 c.bits)
                                    .c_str());
            assert_true(l->held() == LockBits{});
        }
    }
}

// The other direction: our locks stop qemu-io, with QEMU's own words.
void test_our_locks_stop_qemu_io(void **) {
    if (!have_program("qemu-io")) skip();
    for (LockingApi api : {LockingApi::Ofd, LockingApi::Posix}) {
        TempFile t;
        Fd f(t.path);
        auto l = new_lock(f.fd, t.path, "ours", api);
        std::string out;

        // auto read-only: readers welcome, writers refused.
        assert_true(l->prepare(R, R).ok());
        l->commit();
        assert_int_equal(run("qemu-io -r -c 'read 0 512' -f raw " + t.path, &out), 0);
        assert_int_not_equal(run("qemu-io -c 'write 0 512' -f raw " + t.path, &out), 0);
        assert_non_null(strstr(out.c_str(), "Failed to get \"write\" lock"));
        assert_non_null(
            strstr(out.c_str(), ("Is another process using the image [" + t.path + "]?").c_str()));

        // exclusive: even readers are refused.
        assert_true(l->prepare(R | W, 0).ok());
        l->commit();
        assert_int_not_equal(run("qemu-io -r -c 'read 0 512' -f raw " + t.path, &out), 0);
        assert_non_null(strstr(out.c_str(), "Failed to get \"consistent read\" lock"));
        // -U (force-share) shares everything but still uses consistent read
        // (byte 100): an exclusive holder keeps it out too.  qemu-img info
        // -U uses nothing and gets through.
        assert_int_not_equal(run("qemu-io -r -U -c 'read 0 512' -f raw " + t.path, &out), 0);
        assert_non_null(strstr(out.c_str(), "Failed to get \"consistent read\" lock"));
        assert_int_equal(run("qemu-img info -U " + t.path, &out), 0);

        // shared read-write: a writing qemu-io is blocked only by forbids, of
        // which there are none; its own forbids do not stop it.
        assert_true(l->prepare(R | W, ALL).ok());
        l->commit();
        assert_int_equal(run("qemu-io -c 'write 0 512' -f raw " + t.path, &out), 0);

        l->release();
    }
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_holder_forked_child),
        cmocka_unit_test(test_holder_not_visible),
        cmocka_unit_test(test_race_exclusive),
        cmocka_unit_test(test_qemu_io_holds),
        cmocka_unit_test(test_our_locks_stop_qemu_io),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
