// Racing openers, inside one process with the syscall table: the retry of a
// conflict that goes away, the message when the holder let go before it could
// be named, and the preparers' byte (docs/locking.md section 3).  The race
// between real processes is tests/unit/test-race.c.

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>

#include "block/locking/holders.h"
#include "block/locking/qemu-bytes.h"
#include "block/locking/syscalls.h"
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

constexpr uint32_t R = BLK_PERM_CONSISTENT_READ, W = BLK_PERM_WRITE;

std::unique_ptr<LockProtocol> new_lock(int fd, const std::string &path, LockingApi api) {
    auto r = qemu_byte_lock_new(fd, path, "n", api);
    assert_true(r.ok());
    return std::move(*r);
}

// A holder of byte 201 that shows itself to the first g_conflicts tests of
// that byte only, as an opener that lost its race and let go would.
int g_conflicts;    // tests of 201 still answered "held"
int g_tests_201;    // tests of 201 seen
int g_turn_calls;   // calls on the preparers' byte
int g_turn_err;     // errno for every call on the preparers' byte; 0: real

int fake_fcntl(int fd, int cmd, struct flock *fl) {
    if (fl->l_start == kLockPreparerByte) {
        g_turn_calls++;
        if (g_turn_err) {
            errno = g_turn_err;
            return -1;
        }
    }
    if ((cmd == F_OFD_GETLK || cmd == F_GETLK) && fl->l_start == 201) {
        g_tests_201++;
        if (g_conflicts > 0) {
            g_conflicts--;
            fl->l_type = F_RDLCK;
            fl->l_pid = -1;
            return 0;
        }
    }
    return default_lock_syscalls().fcntl_lock(fd, cmd, fl);
}

void fake(int conflicts, int turn_err = 0) {
    g_conflicts = conflicts;
    g_tests_201 = g_turn_calls = 0;
    g_turn_err = turn_err;
    lock_syscalls().fcntl_lock = fake_fcntl;
}


// A conflict that is gone at the next attempt is a race we win, not an error.
void test_vanishing_conflict_is_retried(void **) {
    for (LockingApi api : kLockingApis) {
        TempFile t;
        Fd f(t.path);
        auto l = new_lock(f.fd, t.path, api);
        fake(kLockRaceAttempts - 1);
        Status s = l->prepare(R | W, R);
        reset_lock_syscalls();
        assert_true(s.ok());
        assert_int_equal(g_tests_201, kLockRaceAttempts);
        l->commit();
        assert_true(l->held() == lock_bits_for(R | W, R));
        assert_false(byte_held(t.path, kLockPreparerByte));
    }
}

// Still there after every attempt, gone when we look for its holder: say so,
// not "it may be on another host".  The byte map is as before.
void test_holder_just_gone_message(void **) {
    for (LockingApi api : kLockingApis) {
        TempFile t;
        Fd f(t.path);
        auto l = new_lock(f.fd, t.path, api);
        fake(kLockRaceAttempts);
        Status s = l->prepare(R | W, R);
        reset_lock_syscalls();
        assert_false(s.ok());
        assert_int_equal(s.err(), EAGAIN);
        assert_int_equal(g_tests_201, kLockRaceAttempts + 1);
        assert_string_equal(s.to_string().c_str(),
                            ("Failed to get \"write\" lock\nIs another process using the image [" +
                             t.path +
                             "]?\nThe holder let go of the lock before it could be named "
                             "(another opener racing for it?): try again")
                                .c_str());
        assert_true(l->held() == LockBits{});
        assert_true(probe_bytes(t.path) == (ByteMap{0, 0, false}));
        assert_false(byte_held(t.path, kLockPreparerByte));
    }
}

// The preparers' byte is held around each lock-and-test, never after.
void test_turn_taken_and_given_back(void **) {
    for (LockingApi api : kLockingApis) {
        TempFile t;
        Fd f(t.path);
        auto l = new_lock(f.fd, t.path, api);
        fake(0);
        Status s = l->prepare(R | W, R);
        reset_lock_syscalls();
        assert_true(s.ok());
        assert_int_equal(g_turn_calls, 2);  // lock, unlock
        assert_false(byte_held(t.path, kLockPreparerByte));
        l->commit();
    }
}

// A file system that cannot lock the preparers' byte costs the turn, never
// the lock: lock-then-test alone still forbids two winners.
void test_turn_failure_is_not_fatal(void **) {
    for (int err : {EIO, ENOLCK, EBADF}) {
        TempFile t;
        Fd f(t.path);
        auto l = new_lock(f.fd, t.path, LockingApi::Ofd);
        fake(0, err);
        Status s = l->prepare(R | W, R);
        reset_lock_syscalls();
        assert_true(s.ok());
        assert_int_equal(g_turn_calls, 1);  // the failed lock; nothing to unlock
        l->commit();
        const LockBits want = lock_bits_for(R | W, R);
        assert_true(probe_bytes(t.path) == (ByteMap{want.use, want.forbid, false}));
    }
}

// Another opener stuck in its turn (stopped, say) delays us by a bounded
// time, then we go on without a turn; its byte stays its own.
void test_stuck_turn_is_bounded(void **) {
    TempFile t;
    Fd f(t.path), other(t.path);
    struct flock fl = {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = kLockPreparerByte;
    fl.l_len = 1;
    assert_int_equal(fcntl(other.fd, F_OFD_SETLK, &fl), 0);
    auto l = new_lock(f.fd, t.path, LockingApi::Ofd);
    Status s = l->prepare(R | W, R);
    assert_true(s.ok());
    l->commit();
    assert_true(l->held() == lock_bits_for(R | W, R));
    assert_true(byte_held(t.path, kLockPreparerByte));  // still the other's
    l->release();
    fl.l_type = F_UNLCK;
    assert_int_equal(fcntl(other.fd, F_OFD_SETLK, &fl), 0);
}

// A whole-file write lock is no preparer: no waiting for a turn, and the
// usual conflict (the byte lock fails) with the holder named.
void test_whole_file_lock_is_not_a_turn(void **) {
    TempFile t;
    Fd f(t.path), other(t.path);
    struct flock fl = {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 0;
    assert_int_equal(fcntl(other.fd, F_OFD_SETLK, &fl), 0);
    auto l = new_lock(f.fd, t.path, LockingApi::Ofd);
    fake(0);
    Status s = l->prepare(R, R | W);
    reset_lock_syscalls();
    assert_false(s.ok());
    assert_string_equal(s.message().c_str(), "Failed to get \"consistent read\" lock");
    assert_int_equal(g_turn_calls, 2);  // one try, one probe: no waiting
    assert_true(l->held() == LockBits{});
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_vanishing_conflict_is_retried, restore_lock_syscalls),
        cmocka_unit_test_teardown(test_holder_just_gone_message, restore_lock_syscalls),
        cmocka_unit_test_teardown(test_turn_taken_and_given_back, restore_lock_syscalls),
        cmocka_unit_test_teardown(test_turn_failure_is_not_fatal, restore_lock_syscalls),
        cmocka_unit_test_teardown(test_stuck_turn_is_bounded, restore_lock_syscalls),
        cmocka_unit_test_teardown(test_whole_file_lock_is_not_a_turn, restore_lock_syscalls),
    };
    return cmocka_run_group_tests_name("locking-race", tests, nullptr, nullptr);
}
