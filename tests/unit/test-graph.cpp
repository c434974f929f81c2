// Locks across the graph, through whole drives (BlockBackend): the migration
// hand-over (inactive, activate, inactivate), two drives of one process on one
// file (OFD and the POSIX fallback), lock-wait, and a file system that cannot
// lock.  Byte maps are read from a forked child, as another process sees them.

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>

#include "block/block_int.h"
#include "block/locking/syscalls.h"
#include "miniblock/block.h"
#include "miniblock/options.h"

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

namespace {

constexpr uint32_t R = BLK_PERM_CONSISTENT_READ, W = BLK_PERM_WRITE,
                   WU = BLK_PERM_WRITE_UNCHANGED, RS = BLK_PERM_RESIZE, ALL = BLK_PERM_ALL;

void assert_map(const std::string &path, uint32_t use, uint32_t forbid, int line) {
    ByteMap m = probe_bytes(path);
    if (m.use != use || m.forbid != forbid) {
        print_error("line %d: byte map use=%#x forbid=%#x, expected use=%#x forbid=%#x\n", line,
                    m.use, m.forbid, use, forbid);
        fail();
    }
}
#define ASSERT_MAP(path, use, forbid) assert_map((path), (use), (forbid), __LINE__)

Result<std::unique_ptr<BlockBackend>> open_drive(const std::string &spec, const char *name) {
    auto o = qapi::parse_drive_options(spec);
    if (!o.ok()) return o.take_status();
    return BlockBackend::open(*o, name);
}

void assert_contains(const std::string &s, const std::string &part) {
    if (s.find(part) == std::string::npos) {
        print_error("'%s'\ndoes not contain\n'%s'\n", s.c_str(), part.c_str());
        fail();
    }
}

void assert_not_contains(const std::string &s, const std::string &part) {
    if (s.find(part) != std::string::npos) {
        print_error("'%s'\ncontains\n'%s'\n", s.c_str(), part.c_str());
        fail();
    }
}

std::string raw(const TempFile &f, const std::string &extra = "") {
    return "file=" + f.path + ",format=raw" + (extra.empty() ? "" : "," + extra);
}

// ---- migration hand-over ------------------------------------------------------

void test_inactive_open_holds_nothing(void **) {
    TempFile f;
    auto d = must_open(raw(f, "inactive=on"), "dst");
    assert_true(d->inactive());
    ASSERT_MAP(f.path, 0, 0);
    // Both nodes of the graph are inactive: the flag is inherited.
    assert_true(d->bs()->open_flags & BDRV_O_INACTIVE);
    assert_true(d->bs()->file()->bs->open_flags & BDRV_O_INACTIVE);
    char buf[512] = {};
    assert_int_equal(d->pwrite(0, 512, buf), -EPERM);
    assert_int_equal(d->pwrite_zeroes(0, 512), -EPERM);
    assert_int_equal(d->pread(0, 512, buf), 0);  // reading is fine
    assert_true(d->activate().ok());
    assert_false(d->inactive());
    ASSERT_MAP(f.path, R | W, W | WU | RS);
    assert_int_equal(d->pwrite(0, 512, buf), 0);
}

void test_activate_refused_while_source_holds(void **) {
    TempFile f;
    auto src = must_open(raw(f, "lock=exclusive"), "src");
    auto dst = must_open(raw(f, "lock=exclusive,inactive=on"), "dst");
    ASSERT_MAP(f.path, R | W, ALL);

    Status st = dst->activate();
    assert_false(st.ok());
    assert_int_equal(st.err(), EAGAIN);
    assert_string_equal(st.message().c_str(),
                        "Cannot activate drive 'dst': Failed to get \"consistent read\" lock");
    assert_contains(st.detail(), "Is another process using the image [" + f.path + "]?");
    assert_contains(st.detail(), "Held by node 'src.file' of this process (pid " +
                                     std::to_string(getpid()) + ")");
    // Exactly as before: the target inactive everywhere, the bytes the source's.
    assert_true(dst->inactive());
    assert_true(dst->bs()->file()->bs->open_flags & BDRV_O_INACTIVE);
    ASSERT_MAP(f.path, R | W, ALL);

    // The source stops: it flushes and lets go of everything.
    uint8_t buf[4096];
    memset(buf, 0x5a, sizeof buf);
    assert_int_equal(src->pwrite(0, sizeof buf, buf), 0);
    assert_true(src->inactivate().ok());
    assert_true(src->inactive());
    ASSERT_MAP(f.path, 0, 0);
    assert_int_equal(src->pwrite(0, 512, buf), -EPERM);

    assert_true(dst->activate().ok());
    ASSERT_MAP(f.path, R | W, ALL);
    uint8_t back[4096] = {};
    assert_int_equal(dst->pread(0, sizeof back, back), 0);
    assert_memory_equal(buf, back, sizeof buf);

    // Now the old source is the one refused.
    st = src->activate();
    assert_false(st.ok());
    assert_contains(st.detail(), "Held by node 'dst.file' of this process");
    assert_true(src->inactive());
    ASSERT_MAP(f.path, R | W, ALL);

    // Idempotent both ways.
    assert_true(dst->activate().ok());
    assert_true(src->inactivate().ok());
}

// ---- two drives of one process on one file ---------------------------------------

void test_two_drives_ofd(void **) {
    TempFile f;
    auto a = must_open(raw(f), "a");
    auto r = open_drive(raw(f), "b");
    assert_false(r.ok());
    // a forbids write (byte 201): b's wish to write is what fails.
    assert_string_equal(r.status().message().c_str(), "Failed to get \"write\" lock");
    assert_contains(r.status().detail(), "Held by node 'a.file' of this process");
    // The failed open left a's bytes alone.
    ASSERT_MAP(f.path, R | W, W | WU | RS);
    auto b = must_open(raw(f, "read-only=on,lock=shared"), "b");
    b.reset();  // closing b never drops a's locks
    ASSERT_MAP(f.path, R | W, W | WU | RS);
}

void test_two_drives_posix(void **) {
    TempFile f;
    const std::string posix = "file.locking-api=posix";
    auto a = must_open(raw(f, "read-only=on," + posix), "a");
    auto b = must_open(raw(f, "read-only=on,lock=shared," + posix), "b");
    ASSERT_MAP(f.path, R, W | WU | RS);
    // POSIX locks belong to the process: closing b's fd would drop a's
    // locks, unless the inode table defers it.
    b.reset();
    ASSERT_MAP(f.path, R, W | WU | RS);

    // A conflict between two nodes of this process: the kernel cannot see
    // it (same owner), the table can, and names the node.
    auto r = open_drive(raw(f, posix), "c");
    assert_false(r.ok());
    assert_string_equal(r.status().message().c_str(), "Failed to get \"write\" lock");
    assert_contains(r.status().detail(), "Held by node 'a.file' of this process (pid " +
                                             std::to_string(getpid()) + ")");
    ASSERT_MAP(f.path, R, W | WU | RS);

    // Shared writers over POSIX locks, one closed: the other's bytes stay.
    a.reset();
    ASSERT_MAP(f.path, 0, 0);
    auto w1 = must_open(raw(f, "lock=shared," + posix), "w1");
    auto w2 = must_open(raw(f, "lock=shared," + posix), "w2");
    ASSERT_MAP(f.path, R | W, 0);
    w1.reset();
    ASSERT_MAP(f.path, R | W, 0);
    r = open_drive(raw(f, "lock=exclusive," + posix), "x");
    assert_false(r.ok());
    assert_contains(r.status().detail(), "Held by node 'w2.file' of this process");
    w2.reset();
    ASSERT_MAP(f.path, 0, 0);
    auto x = must_open(raw(f, "lock=exclusive," + posix), "x");
    ASSERT_MAP(f.path, R | W, ALL);
}

// ---- lock-wait ----------------------------------------------------------------------

// A child that holds byte 201 (forbids write) for `ms`, then exits.
pid_t hold_forbid_write(const std::string &path, int ms) {
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
        struct flock fl = {};
        fl.l_type = F_RDLCK;
        fl.l_whence = SEEK_SET;
        fl.l_start = 201;
        fl.l_len = 1;
        char ok = fd >= 0 && fcntl(fd, F_OFD_SETLK, &fl) == 0;
        if (write(p[1], &ok, 1) != 1) _exit(1);
        usleep(ms * 1000);
        _exit(0);
    }
    close(p[1]);
    char ok = 0;
    assert_int_equal(read(p[0], &ok, 1), 1);
    close(p[0]);
    assert_true(ok);
    return pid;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void test_lock_wait(void **) {
    TempFile f;
    pid_t holder = hold_forbid_write(f.path, 1000);
    auto t0 = std::chrono::steady_clock::now();
    auto r = open_drive(raw(f, "lock-wait=0"), "now");
    double t = seconds_since(t0);
    assert_false(r.ok());
    assert_string_equal(r.status().message().c_str(), "Failed to get \"write\" lock");
    assert_true(t < 0.5);

    t0 = std::chrono::steady_clock::now();
    auto d = must_open(raw(f, "lock-wait=5"), "patient");
    t = seconds_since(t0);
    print_message("lock-wait=5 got the lock after %.2f s (holder let go after ~1 s)\n", t);
    assert_true(t > 0.5 && t < 4);
    int st;
    assert_int_equal(waitpid(holder, &st, 0), holder);
    ASSERT_MAP(f.path, R | W, W | WU | RS);

    // Waiting until the time is up, then the usual error.
    holder = hold_forbid_write(f.path, 3000);
    d.reset();
    t0 = std::chrono::steady_clock::now();
    r = open_drive(raw(f, "lock-wait=1"), "late");
    t = seconds_since(t0);
    assert_false(r.ok());
    assert_string_equal(r.status().message().c_str(), "Failed to get \"write\" lock");
    assert_true(t >= 0.9 && t < 2.5);
    kill(holder, SIGKILL);
    waitpid(holder, &st, 0);
}

// ---- a file system that cannot lock ---------------------------------------------------

int g_err;
int fail_setlk(int fd, int cmd, struct flock *fl) {
    if (cmd == F_OFD_SETLK || cmd == F_SETLK) {
        errno = g_err;
        return -1;
    }
    return default_lock_syscalls().fcntl_lock(fd, cmd, fl);
}

void test_cannot_lock(void **) {
    TempFile f;
    for (int err : {ENOLCK, EOPNOTSUPP, EIO}) {
        g_err = err;
        lock_syscalls().fcntl_lock = fail_setlk;
        auto t0 = std::chrono::steady_clock::now();
        // lock-wait does not wait for a file system to learn locking.
        auto r = open_drive(raw(f, "lock-wait=5"), "d");
        double t = seconds_since(t0);
        reset_lock_syscalls();
        assert_false(r.ok());
        const std::string want = "Failed to lock byte 100: the file system of '" + f.path +
                                 "' cannot lock (" + strerror(err) + ")";
        assert_string_equal(r.status().message().c_str(), want.c_str());
        assert_int_equal(r.status().err(), err);
        assert_not_contains(r.status().to_string(), "another process");
        assert_true(t < 1);
        ASSERT_MAP(f.path, 0, 0);
    }
    // Never silently unlocked: with lock=off nothing is attempted at all.
    g_err = ENOLCK;
    lock_syscalls().fcntl_lock = fail_setlk;
    auto d = open_drive(raw(f, "lock=off"), "off");
    reset_lock_syscalls();
    assert_true(d.ok());
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inactive_open_holds_nothing),
        cmocka_unit_test(test_activate_refused_while_source_holds),
        cmocka_unit_test(test_two_drives_ofd),
        cmocka_unit_test(test_two_drives_posix),
        cmocka_unit_test(test_lock_wait),
        cmocka_unit_test(test_cannot_lock),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
