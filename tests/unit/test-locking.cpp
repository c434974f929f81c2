// The QEMU byte protocol: byte maps, the transaction, fault injection, error
// texts, and the POSIX fallback.  Every check looks at the real bytes, probed
// with F_OFD_GETLK from a second open file description (OFD locks and POSIX
// locks conflict with each other even inside one process, so the probe sees
// both), or with F_GETLK from a forked child.

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

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
using qapi::LockMode;

namespace {

constexpr uint32_t R = BLK_PERM_CONSISTENT_READ, W = BLK_PERM_WRITE,
                   WU = BLK_PERM_WRITE_UNCHANGED, RS = BLK_PERM_RESIZE;

// ---- files and fds --------------------------------------------------------

// ---- the real byte map ----------------------------------------------------

ByteMap map_of(LockBits b) { return ByteMap{b.use, b.forbid, false}; }

void assert_map(const std::string &path, LockBits expected, int line) {
    ByteMap got = probe_bytes(path), want = map_of(expected);
    if (!(got == want)) {
        print_error("line %d: byte map use=%#x forbid=%#x byte0=%d, expected use=%#x forbid=%#x\n",
                    line, got.use, got.forbid, got.byte0, want.use, want.forbid);
        fail();
    }
}
#define ASSERT_MAP(path, bits) assert_map((path), (bits), __LINE__)

std::unique_ptr<LockProtocol> new_lock(int fd, const std::string &path, const char *node,
                                       LockingApi api) {
    auto r = qemu_byte_lock_new(fd, path, node, api);
    if (!r.ok()) {
        print_error("qemu_byte_lock_new: %s\n", r.status().to_string().c_str());
        fail();
    }
    return std::move(*r);
}

PermPair perms(LockMode mode, bool ro, bool raw = true, NodeRole role = NodeRole::Top) {
    auto r = lock_mode_perms(mode, ro, raw, role);
    assert_true(r.ok());
    return *r;
}

void must_prepare(LockProtocol &l, PermPair p) {
    Status s = l.prepare(p.perm, p.shared);
    if (!s.ok()) {
        print_error("prepare: %s\n", s.to_string().c_str());
        fail();
    }
}

// ---- fault injection ------------------------------------------------------

int g_calls;
int g_fail_at;        // fail the Nth call (1-based); 0: never
int g_fail_err;
bool g_fail_all;      // fail every call
bool g_fail_ofd_only; // ... only the F_OFD_* ones
bool g_eintr_first;   // every call first fails once with EINTR

int inject_fcntl(int fd, int cmd, struct flock *fl) {
    static bool retrying;
    if (g_eintr_first && !retrying) {
        retrying = true;
        errno = EINTR;
        return -1;
    }
    retrying = false;
    // The preparers' byte is a courtesy between openers, not part of the
    // byte map (test-locking-race.cpp covers its failures).
    if (fl->l_start == kLockPreparerByte) return default_lock_syscalls().fcntl_lock(fd, cmd, fl);
    g_calls++;
    const bool ofd = cmd == F_OFD_SETLK || cmd == F_OFD_GETLK;
    if ((g_fail_all && (!g_fail_ofd_only || ofd)) || g_calls == g_fail_at) {
        errno = g_fail_err;
        return -1;
    }
    return default_lock_syscalls().fcntl_lock(fd, cmd, fl);
}

void inject(int fail_at, int err) {
    g_calls = 0;
    g_fail_at = fail_at;
    g_fail_err = err;
    g_fail_all = g_fail_ofd_only = g_eintr_first = false;
    lock_syscalls().fcntl_lock = inject_fcntl;
}


// ---- tests ----------------------------------------------------------------

// Every row of the DESIGN lock-mode table maps to exactly the bytes
// lock_bits_for() names, and never to byte 0, 104 or 204.
void test_byte_map_per_mode(void **) {
    const LockMode modes[] = {LockMode::Shared, LockMode::Auto, LockMode::Exclusive};
    for (LockingApi api : kLockingApis) {
        for (LockMode mode : modes) {
            for (int ro = 0; ro <= 1; ro++) {
                for (int raw = 0; raw <= 1; raw++) {
                    for (NodeRole role : {NodeRole::Top, NodeRole::Backing}) {
                        auto pp = lock_mode_perms(mode, ro, raw, role);
                        if (!pp.ok()) continue;  // shared on writable qcow2
                        TempFile t;
                        Fd f(t.path, ro ? O_RDONLY : O_RDWR);
                        auto l = new_lock(f.fd, t.path, "n", api);
                        must_prepare(*l, *pp);
                        l->commit();
                        const LockBits want = lock_bits_for(pp->perm, pp->shared);
                        assert_true(l->held() == want);
                        ASSERT_MAP(t.path, want);
                        l->release();
                        ASSERT_MAP(t.path, LockBits{});
                    }
                }
            }
        }
    }
}

// The same table written out by hand, so a wrong lock_bits_for() cannot
// hide behind itself.
void test_byte_map_literal(void **) {
    struct Row {
        LockMode mode;
        bool ro, raw;
        LockBits bytes;
    } rows[] = {
        {LockMode::Shared, true, true, {R, 0}},
        {LockMode::Shared, false, true, {R | W, 0}},
        {LockMode::Auto, true, false, {R, W | WU | RS}},
        {LockMode::Auto, false, true, {R | W, W | WU | RS}},
        {LockMode::Auto, false, false, {R | W | RS, W | WU | RS}},
        {LockMode::Exclusive, true, true, {R, R | W | WU | RS}},
        {LockMode::Exclusive, false, false, {R | W | RS, R | W | WU | RS}},
    };
    for (const Row &row : rows) {
        TempFile t;
        Fd f(t.path);
        auto l = new_lock(f.fd, t.path, "n", LockingApi::Ofd);
        must_prepare(*l, perms(row.mode, row.ro, row.raw));
        l->commit();
        ASSERT_MAP(t.path, row.bytes);
    }
}

// prepare takes the union, commit settles on the new state, abort restores
// the old one, release drops everything.
void test_transaction_semantics(void **) {
    for (LockingApi api : kLockingApis) {
        TempFile t;
        Fd f(t.path);
        auto l = new_lock(f.fd, t.path, "n", api);
        const PermPair ro = perms(LockMode::Auto, true), ex = perms(LockMode::Exclusive, false);
        const LockBits bro = lock_bits_for(ro.perm, ro.shared);
        const LockBits bex = lock_bits_for(ex.perm, ex.shared);
        const LockBits both{bro.use | bex.use, bro.forbid | bex.forbid};

        ASSERT_MAP(t.path, LockBits{});
        must_prepare(*l, ro);
        ASSERT_MAP(t.path, bro);
        l->commit();
        ASSERT_MAP(t.path, bro);

        must_prepare(*l, ex);
        ASSERT_MAP(t.path, both);
        assert_true(l->held() == both);
        l->abort();
        ASSERT_MAP(t.path, bro);
        assert_true(l->held() == bro);

        must_prepare(*l, ex);
        l->commit();
        ASSERT_MAP(t.path, bex);
        assert_true(l->held() == bex);

        // Back down: the union while prepared, then only the new bytes.
        must_prepare(*l, ro);
        ASSERT_MAP(t.path, both);
        l->commit();
        ASSERT_MAP(t.path, bro);

        l->release();
        ASSERT_MAP(t.path, LockBits{});
        assert_true(l->held() == LockBits{});

        // Two prepares in one transaction: a failing second one leaves what
        // the first took; abort undoes both.
        Fd fo(t.path);
        auto blocker = new_lock(fo.fd, t.path, "blocker", api);
        must_prepare(*blocker, PermPair{R, BLK_PERM_ALL & ~RS});  // forbids resize only
        blocker->commit();
        must_prepare(*l, PermPair{R | W, R});
        const LockBits first{R | W, W | WU | RS};
        ASSERT_MAP(t.path, (LockBits{R | W, W | WU | RS}));
        assert_false(l->prepare(R | W | RS, R).ok());  // resize is forbidden
        ASSERT_MAP(t.path, (LockBits{R | W, W | WU | RS}));
        assert_true(l->held() == first);
        must_prepare(*l, PermPair{R | W | WU, R});  // adds 102
        ASSERT_MAP(t.path, (LockBits{R | W | WU, W | WU | RS}));
        l->abort();
        ASSERT_MAP(t.path, (LockBits{R, RS}));  // only the blocker's
        assert_true(l->held() == LockBits{});
        blocker.reset();

        // The destructor releases too.
        must_prepare(*l, ex);
        l->commit();
        l.reset();
        ASSERT_MAP(t.path, LockBits{});
    }
}

// A failure at every system call of a prepare that changes the map (auto
// read-only -> exclusive read-write) leaves the map exactly as before.
void test_fault_at_every_syscall(void **) {
    const PermPair ro = perms(LockMode::Auto, true), ex = perms(LockMode::Exclusive, false);
    const LockBits bro = lock_bits_for(ro.perm, ro.shared);
    for (LockingApi api : kLockingApis) {
        for (int err : {EIO, ENOLCK, EAGAIN, EBADF}) {
            // Count the calls of the successful prepare first.
            int total;
            {
                TempFile t;
                Fd f(t.path);
                auto l = new_lock(f.fd, t.path, "n", api);
                must_prepare(*l, ro);
                l->commit();
                inject(0, 0);
                must_prepare(*l, ex);
                total = g_calls;
                reset_lock_syscalls();
            }
            // 2 bytes taken (101, 200) and 7 bytes tested.
            assert_int_equal(total, 9);
            for (int n = 1; n <= total; n++) {
                TempFile t;
                Fd f(t.path);
                auto l = new_lock(f.fd, t.path, "n", api);
                must_prepare(*l, ro);
                l->commit();
                inject(n, err);
                Status s = l->prepare(ex.perm, ex.shared);
                reset_lock_syscalls();
                assert_false(s.ok());
                assert_int_equal(s.err(), err);
                ASSERT_MAP(t.path, bro);
                assert_true(l->held() == bro);
                // And the object is still usable.
                must_prepare(*l, ex);
                l->commit();
                ASSERT_MAP(t.path, lock_bits_for(ex.perm, ex.shared));
            }
        }
    }
}

// EINTR is retried, not reported.
void test_eintr_is_retried(void **) {
    for (LockingApi api : kLockingApis) {
        TempFile t;
        Fd f(t.path);
        auto l = new_lock(f.fd, t.path, "n", api);
        inject(0, 0);
        g_eintr_first = true;
        const PermPair ex = perms(LockMode::Exclusive, false);
        must_prepare(*l, ex);
        l->commit();
        reset_lock_syscalls();
        ASSERT_MAP(t.path, lock_bits_for(ex.perm, ex.shared));
    }
}

// A file system that cannot lock gets an error saying so, never "another
// process", and never silently no locks.
void test_cannot_lock_message(void **) {
    for (LockingApi api : kLockingApis) {
        TempFile t;
        Fd f(t.path);
        auto l = new_lock(f.fd, t.path, "n", api);
        inject(0, ENOLCK);
        g_fail_all = true;
        Status s = l->prepare(R, R);
        reset_lock_syscalls();
        assert_false(s.ok());
        assert_int_equal(s.err(), ENOLCK);
        assert_string_equal(s.message().c_str(),
                            ("Failed to lock byte 100: the file system of '" + t.path +
                             "' cannot lock (No locks available)")
                                .c_str());
        assert_string_equal(s.detail().c_str(), "");
        ASSERT_MAP(t.path, LockBits{});
        assert_true(l->held() == LockBits{});

        inject(0, EOPNOTSUPP);
        g_fail_all = true;
        s = l->prepare(R, R);
        reset_lock_syscalls();
        assert_string_equal(s.message().c_str(),
                            ("Failed to lock byte 100: the file system of '" + t.path +
                             "' cannot lock (Operation not supported)")
                                .c_str());

        // Locking works but testing does not (4 locks, then 200 is tested).
        inject(5, ENOLCK);
        s = l->prepare(R, R);
        reset_lock_syscalls();
        assert_string_equal(s.message().c_str(),
                            ("Failed to test byte 200: the file system of '" + t.path +
                             "' cannot lock (No locks available)")
                                .c_str());
        ASSERT_MAP(t.path, LockBits{});

        // EIO from fcntl is a file system that cannot lock too (issue 4:
        // NFS without a lock manager answers so).
        inject(1, EIO);
        s = l->prepare(R, R);
        reset_lock_syscalls();
        assert_string_equal(s.message().c_str(),
                            ("Failed to lock byte 100: the file system of '" + t.path +
                             "' cannot lock (Input/output error)")
                                .c_str());

        // Any other errno is reported as itself, naming the file.
        inject(1, ENOMEM);
        s = l->prepare(R, R);
        reset_lock_syscalls();
        assert_string_equal(s.message().c_str(),
                            ("Failed to lock byte 100 of '" + t.path + "': Cannot allocate memory")
                                .c_str());
    }
}

// Auto probes for OFD locks; EINVAL means "no OFD locks here": POSIX.
void test_auto_falls_back_to_posix(void **) {
    TempFile t;
    Fd f(t.path);
    {
        auto l = new_lock(f.fd, t.path, "n", LockingApi::Auto);
        assert_true(qemu_byte_lock_api(*l) == LockingApi::Ofd);
    }
    inject(0, EINVAL);
    g_fail_all = g_fail_ofd_only = true;
    {
        auto l = new_lock(f.fd, t.path, "n", LockingApi::Auto);
        assert_true(qemu_byte_lock_api(*l) == LockingApi::Posix);
        must_prepare(*l, perms(LockMode::Auto, false));
        l->commit();
        ASSERT_MAP(t.path, (LockBits{R | W, W | WU | RS}));
        assert_true(byte_held(t.path, 101));
        assert_true(byte_held(t.path, 203));
    }
    ASSERT_MAP(t.path, LockBits{});
    auto r = qemu_byte_lock_new(f.fd, t.path, "n", LockingApi::Ofd);
    assert_false(r.ok());
    assert_string_equal(r.status().message().c_str(),
                        ("Cannot lock '" + t.path +
                         "': the kernel has no open file description locks")
                            .c_str());
    assert_string_equal(r.status().detail().c_str(), "Use locking-api=posix or locking-api=auto");

    // Neither OFD nor POSIX locks: the file-system message, not silence.
    g_fail_ofd_only = false;
    g_fail_err = ENOLCK;
    g_fail_all = false;
    inject(0, EINVAL);
    g_fail_all = g_fail_ofd_only = true;
    auto l = new_lock(f.fd, t.path, "n", LockingApi::Auto);
    g_fail_ofd_only = false;
    g_fail_err = ENOLCK;
    Status s = l->prepare(R, R);
    reset_lock_syscalls();
    assert_string_equal(s.message().c_str(), ("Failed to lock byte 100: the file system of '" +
                                              t.path + "' cannot lock (No locks available)")
                                                 .c_str());
}

std::string self_pid() { return std::to_string(getpid()); }

// Two nodes of this process on one file exclude each other like two
// processes, and the message names the node in the way, verbatim.
void test_conflict_messages(void **) {
    for (LockingApi api : kLockingApis) {
        TempFile t;
        Fd fa(t.path), fb(t.path);
        auto a = new_lock(fa.fd, t.path, "disk-a", api);
        auto b = new_lock(fb.fd, t.path, "disk-b", api);
        const std::string hint = "Is another process using the image [" + t.path + "]?";

        must_prepare(*a, perms(LockMode::Auto, true));  // use R; forbid W, WU, RS
        a->commit();
        const LockBits abits = a->held();

        Status s = b->prepare(R | W, R);
        assert_int_equal(s.err(), EAGAIN);
        assert_string_equal(s.message().c_str(), "Failed to get \"write\" lock");
        assert_string_equal(s.detail().c_str(),
                            (hint + "\nHeld by node 'disk-a' of this process (pid " +
                             self_pid() +
                             "); uses: consistent read; forbids: write, write unchanged, resize")
                                .c_str());
        ASSERT_MAP(t.path, abits);
        assert_true(b->held() == LockBits{});

        s = b->prepare(R, 0);  // exclusive read-only: forbids consistent read
        assert_string_equal(s.message().c_str(), "Failed to get shared \"consistent read\" lock");
        assert_string_equal(s.to_string().c_str(),
                            ("Failed to get shared \"consistent read\" lock\n" + hint +
                             "\nHeld by node 'disk-a' of this process (pid " + self_pid() +
                             "); uses: consistent read; forbids: write, write unchanged, resize")
                                .c_str());
        ASSERT_MAP(t.path, abits);

        // Two readers sharing reads coexist.
        must_prepare(*b, perms(LockMode::Auto, true));
        b->commit();
        ASSERT_MAP(t.path, abits);
    }
}

// The 2021 compatibility rules as seen from outside: a held 202 stops a
// writer ("write"), a held 102 stops whoever forbids write.
void test_compat_bytes(void **) {
    TempFile t;
    Fd f(t.path), other(t.path);
    auto lock_one = [&](short type, int64_t off) {
        struct flock fl = {};
        fl.l_type = type;
        fl.l_whence = SEEK_SET;
        fl.l_start = off;
        fl.l_len = 1;
        assert_int_equal(fcntl(other.fd, F_OFD_SETLK, &fl), 0);
    };
    const std::string pfx = "Is another process using the image [" + t.path + "]?\nHeld by this process (pid " +
                            self_pid() + ") through fd " + std::to_string(other.fd) +
                            ", which is not a node; ";
    auto l = new_lock(f.fd, t.path, "n", LockingApi::Ofd);

    lock_one(F_RDLCK, 202);
    Status s = l->prepare(R | W, BLK_PERM_ALL);  // lock=shared read-write
    assert_string_equal(s.message().c_str(), "Failed to get \"write\" lock");
    assert_string_equal(s.detail().c_str(),
                        (pfx + "uses: nothing; forbids: write unchanged").c_str());
    lock_one(F_UNLCK, 202);

    lock_one(F_RDLCK, 102);
    s = l->prepare(R, R);  // auto read-only: forbids write
    assert_string_equal(s.message().c_str(), "Failed to get shared \"write unchanged\" lock");
    assert_string_equal(s.detail().c_str(),
                        (pfx + "uses: write unchanged; forbids: nothing").c_str());
    ASSERT_MAP(t.path, (LockBits{WU, 0}));
    lock_one(F_UNLCK, 102);

    // A whole-file write lock (the 2009 protocol): our very first byte fails.
    struct flock fl = {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    assert_int_equal(fcntl(other.fd, F_OFD_SETLK, &fl), 0);
    s = l->prepare(R, R);
    assert_string_equal(s.message().c_str(), "Failed to get \"consistent read\" lock");
    assert_string_equal(
        s.detail().c_str(),
        (pfx + "uses: consistent read, write, write unchanged, resize, graph-mod (old QEMU); "
               "forbids: consistent read, write, write unchanged, resize, graph-mod (old QEMU); "
               "holds a write lock (not QEMU's protocol, e.g. a whole-file lock)")
            .c_str());
    assert_true(l->held() == LockBits{});
}

// A conflict nobody visible accounts for (here: faked by the syscall table).
int fake_conflict_fcntl(int fd, int cmd, struct flock *fl) {
    if (cmd == F_OFD_GETLK && fl->l_start == 201) {
        fl->l_type = F_RDLCK;
        fl->l_pid = -1;
        return 0;
    }
    return default_lock_syscalls().fcntl_lock(fd, cmd, fl);
}

void test_no_visible_holder_message(void **) {
    TempFile t;
    Fd f(t.path);
    auto l = new_lock(f.fd, t.path, "n", LockingApi::Ofd);
    lock_syscalls().fcntl_lock = fake_conflict_fcntl;
    Status s = l->prepare(R | W, R);
    reset_lock_syscalls();
    assert_string_equal(s.to_string().c_str(),
                        ("Failed to get \"write\" lock\nIs another process using the image [" +
                         t.path +
                         "]?\nNo holder is visible from here: it may be on another host or in "
                         "another pid namespace")
                            .c_str());
    ASSERT_MAP(t.path, LockBits{});
}

// POSIX mode: the flaw exists (a plain close drops the process's locks) ...
void test_posix_flaw_is_real(void **) {
    TempFile t;
    Fd f(t.path);
    auto l = new_lock(f.fd, t.path, "n", LockingApi::Posix);
    must_prepare(*l, perms(LockMode::Auto, true));
    l->commit();
    assert_true(byte_held(t.path, 100));
    int other = open(t.path.c_str(), O_RDONLY | O_CLOEXEC);
    close(other);
    assert_false(byte_held(t.path, 100));
    assert_false(byte_held(t.path, 201));
    // The table still knows what should be held: put it back.
    assert_int_equal(posix_lock_reassert(f.fd), 0);
    ASSERT_MAP(t.path, (LockBits{R, W | WU | RS}));
    l->release();
    ASSERT_MAP(t.path, LockBits{});
}

// ... and our answer: per-byte counts, in-process conflicts, deferred close.
void test_posix_two_nodes(void **) {
    TempFile t;
    int fa = open(t.path.c_str(), O_RDWR | O_CLOEXEC);
    Fd fb(t.path);
    auto a = new_lock(fa, t.path, "a", LockingApi::Posix);
    auto b = new_lock(fb.fd, t.path, "b", LockingApi::Posix);
    const PermPair sh = perms(LockMode::Shared, true);  // use R only
    must_prepare(*a, sh);
    a->commit();
    must_prepare(*b, sh);
    b->commit();
    ASSERT_MAP(t.path, (LockBits{R, 0}));

    // b wants to write, a forbids nothing: fine; a then wants to forbid write.
    must_prepare(*b, PermPair{R | W, BLK_PERM_ALL});
    b->commit();
    Status s = a->prepare(R, R);
    assert_string_equal(s.message().c_str(), "Failed to get shared \"write\" lock");
    assert_string_equal(s.detail().c_str(),
                        ("Is another process using the image [" + t.path +
                         "]?\nHeld by node 'b' of this process (pid " + self_pid() +
                         "); uses: consistent read, write; forbids: nothing")
                            .c_str());
    ASSERT_MAP(t.path, (LockBits{R | W, 0}));
    must_prepare(*b, sh);
    b->commit();

    // a releases: byte 100 stays, b still needs it.
    a->release();
    assert_true(byte_held(t.path, 100));
    assert_false(byte_held(t.path, 101));

    // a's fd closes while b holds locks: deferred, b keeps its locks.
    a.reset();
    assert_int_equal(posix_lock_close_fd(fa), 0);
    assert_int_equal(posix_lock_parked_fds(fb.fd), 1);
    assert_true(fcntl(fa, F_GETFD) >= 0);
    assert_true(byte_held(t.path, 100));

    // b releases: nothing is left to lose, the parked close happens.
    b->release();
    assert_int_equal(posix_lock_parked_fds(fb.fd), 0);
    assert_true(fcntl(fa, F_GETFD) < 0 && errno == EBADF);
    assert_false(byte_held(t.path, 100));

    // With no locks held, the close is immediate.
    int fc = open(t.path.c_str(), O_RDONLY | O_CLOEXEC);
    assert_int_equal(posix_lock_close_fd(fc), 0);
    assert_true(fcntl(fc, F_GETFD) < 0 && errno == EBADF);
}

// Holders report our POSIX nodes one by one.
void test_posix_holders_per_node(void **) {
    TempFile t;
    Fd fa(t.path), fb(t.path);
    auto a = new_lock(fa.fd, t.path, "a", LockingApi::Posix);
    auto b = new_lock(fb.fd, t.path, "b", LockingApi::Posix);
    must_prepare(*a, perms(LockMode::Auto, true));
    a->commit();
    must_prepare(*b, perms(LockMode::Shared, true));
    b->commit();
    auto hs = find_lock_holders(fa.fd);
    assert_int_equal(hs.size(), 2);
    assert_string_equal(hs[0].node_name.c_str(), "a");
    assert_string_equal(hs[0].kind.c_str(), "posix");
    assert_string_equal(describe_holder_bits(hs[0]).c_str(),
                        "uses: consistent read / forbids: write, write unchanged, resize");
    assert_string_equal(hs[1].node_name.c_str(), "b");
    assert_string_equal(describe_holder_bits(hs[1]).c_str(),
                        "uses: consistent read / forbids: nothing");
}

// A reopen moves the lock to a new fd: the bytes never go free, the old and
// new fd do not conflict, and closing the old fd afterwards drops nothing.
void test_move_fd(void **) {
    for (LockingApi api : kLockingApis) {
        TempFile t, other;
        int old_fd = open(t.path.c_str(), O_RDONLY | O_CLOEXEC);
        Fd new_fd(t.path), wrong(other.path);
        auto l = new_lock(old_fd, t.path, "n", api);
        const PermPair ro = perms(LockMode::Exclusive, true);
        const LockBits bro = lock_bits_for(ro.perm, ro.shared);
        must_prepare(*l, ro);

        Status s = qemu_byte_lock_move_fd(*l, new_fd.fd);
        assert_int_equal(s.err(), EBUSY);
        l->commit();

        s = qemu_byte_lock_move_fd(*l, wrong.fd);
        assert_int_equal(s.err(), EXDEV);
        assert_string_equal(s.message().c_str(),
                            ("Cannot move the lock of '" + t.path + "' to an fd of another file")
                                .c_str());

        assert_true(qemu_byte_lock_move_fd(*l, new_fd.fd).ok());
        assert_int_equal(posix_lock_close_fd(old_fd), 0);
        ASSERT_MAP(t.path, bro);
        // Now raise to read-write through the new fd: no self-conflict.
        must_prepare(*l, perms(LockMode::Exclusive, false));
        l->commit();
        ASSERT_MAP(t.path, (LockBits{R | W, R | W | WU | RS}));
        if (api == LockingApi::Ofd) {
            auto hs = find_lock_holders(new_fd.fd);
            assert_int_equal(hs.size(), 1);
            assert_int_equal(hs[0].fd, new_fd.fd);
            assert_string_equal(hs[0].node_name.c_str(), "n");
        }
        l.reset();
        ASSERT_MAP(t.path, LockBits{});
    }
}

// Nothing here leaks an fd (holder scans open /proc files; POSIX closes are
// deferred and must still happen).
int count_fds() {
    int n = 0;
    for (int fd = 0; fd < 1024; fd++) n += fcntl(fd, F_GETFD) >= 0;
    return n;
}

void test_no_fd_leak(void **) {
    const int before = count_fds();
    for (LockingApi api : kLockingApis) {
        TempFile t;
        int fa = open(t.path.c_str(), O_RDWR | O_CLOEXEC);
        int fb = open(t.path.c_str(), O_RDWR | O_CLOEXEC);
        auto a = new_lock(fa, t.path, "a", api);
        auto b = new_lock(fb, t.path, "b", api);
        must_prepare(*a, perms(LockMode::Exclusive, false));
        a->commit();
        for (int i = 0; i < 20; i++) assert_false(b->prepare(R, R).ok());
        (void)find_lock_holders(fa);
        b.reset();
        assert_int_equal(posix_lock_close_fd(fb), 0);
        a.reset();
        assert_int_equal(posix_lock_close_fd(fa), 0);
    }
    assert_int_equal(count_fds(), before);
}

void test_bit_names(void **) {
    assert_string_equal(lock_bit_names(0).c_str(), "nothing");
    assert_string_equal(lock_bit_names(W | RS).c_str(), "write, resize");
    assert_string_equal(lock_bit_names(LOCK_BIT_GRAPH_MOD).c_str(), "graph-mod (old QEMU)");
    LockHolder h;
    h.use = W | RS;
    h.forbid = W | RS;
    assert_string_equal(describe_holder_bits(h).c_str(),
                        "uses: write, resize / forbids: write, resize");
    auto list = lock_bit_name_list(R | LOCK_BIT_GRAPH_MOD);
    assert_int_equal(list.size(), 2);
    assert_string_equal(list[1].c_str(), "graph-mod (old QEMU)");
    h.pid = 1234;
    h.comm = "qemu-io";
    h.cmdline = "qemu-io -c sleep 5000 /tmp/a.img";
    assert_string_equal(describe_holder(h).c_str(),
                        "Held by pid 1234 (qemu-io), command line: qemu-io -c sleep 5000 "
                        "/tmp/a.img; uses: write, resize; forbids: write, resize");
    LockHolder u;
    u.use = R;
    assert_string_equal(describe_holder(u).c_str(),
                        "Held by a process not visible from here (another pid namespace, or "
                        "another user's process); uses: consistent read; forbids: nothing");
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_byte_map_per_mode, restore_lock_syscalls),
        cmocka_unit_test_teardown(test_byte_map_literal, restore_lock_syscalls),
        cmocka_unit_test_teardown(test_transaction_semantics, restore_lock_syscalls),
        cmocka_unit_test_teardown(test_fault_at_every_syscall, restore_lock_syscalls),
        cmocka_unit_test_teardown(test_eintr_is_retried, restore_lock_syscalls),
        cmocka_unit_test_teardown(test_cannot_lock_message, restore_lock_syscalls),
        cmocka_unit_test_teardown(test_auto_falls_back_to_posix, restore_lock_syscalls),
        cmocka_unit_test_teardown(test_conflict_messages, restore_lock_syscalls),
        cmocka_unit_test_teardown(test_compat_bytes, restore_lock_syscalls),
        cmocka_unit_test_teardown(test_no_visible_holder_message, restore_lock_syscalls),
        cmocka_unit_test_teardown(test_posix_flaw_is_real, restore_lock_syscalls),
        cmocka_unit_test_teardown(test_posix_two_nodes, restore_lock_syscalls),
        cmocka_unit_test_teardown(test_posix_holders_per_node, restore_lock_syscalls),
        cmocka_unit_test_teardown(test_move_fd, restore_lock_syscalls),
        cmocka_unit_test_teardown(test_no_fd_leak, restore_lock_syscalls),
        cmocka_unit_test_teardown(test_bit_names, restore_lock_syscalls),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
