// The whole-file lock protocol: the (perm, shared) mapping over the DESIGN
// table, the atomic F_RDLCK -> F_WRLCK upgrade (and what a failed one
// leaves), abort and downgrade, the error texts, through whole drives, and
// commit into a base locked this way.  Probes are F_OFD_GETLK from another
// open file description, which sees this process's other descriptions' OFD
// locks as any other process would.

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "block/block_int.h"
#include "block/locking/syscalls.h"
#include "block/locking/whole-file.h"
#include "block/permissions.h"
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
using qapi::LockingApi;
using qapi::LockMode;

namespace {

bool can_take(const std::string &path, short type) {
    Fd f(path);
    struct flock fl = {};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 0;
    assert_int_equal(fcntl(f.fd, F_OFD_GETLK, &fl), 0);
    return fl.l_type == F_UNLCK;
}

// None: both free; Read: F_RDLCK possible, F_WRLCK not; Write: neither.
WholeFileMode seen(const std::string &path) {
    if (can_take(path, F_WRLCK)) return WholeFileMode::None;
    return can_take(path, F_RDLCK) ? WholeFileMode::Read : WholeFileMode::Write;
}

PermPair perms(LockMode mode, bool ro, bool raw = true, NodeRole role = NodeRole::Top) {
    auto r = lock_mode_perms(mode, ro, raw, role);
    assert_true(r.ok());
    return *r;
}

WholeFileMode mode_for(PermPair p) { return whole_file_mode_for(p.perm, p.shared); }

std::unique_ptr<LockProtocol> new_lock(int fd, const std::string &path, const char *node) {
    auto r = whole_file_lock_new(fd, path, node, LockingApi::Auto);
    if (!r.ok()) {
        print_error("%s\n", r.status().to_string().c_str());
        fail();
    }
    return std::move(*r);
}

void test_mapping(void **) {
    using M = WholeFileMode;
    // Read-only, any format: shared and auto share, exclusive excludes.
    assert_true(mode_for(perms(LockMode::Shared, true)) == M::Read);
    assert_true(mode_for(perms(LockMode::Auto, true)) == M::Read);
    assert_true(mode_for(perms(LockMode::Exclusive, true)) == M::Write);
    // Raw read-write: only shared shares.
    assert_true(mode_for(perms(LockMode::Shared, false)) == M::Read);
    assert_true(mode_for(perms(LockMode::Auto, false)) == M::Write);
    assert_true(mode_for(perms(LockMode::Exclusive, false)) == M::Write);
    // qcow2 read-write.
    assert_true(mode_for(perms(LockMode::Auto, false, false)) == M::Write);
    assert_true(mode_for(perms(LockMode::Exclusive, false, false)) == M::Write);
    // A backing file: auto reads, exclusive (asked for) excludes.
    assert_true(mode_for(perms(LockMode::Auto, false, false, NodeRole::Backing)) == M::Read);
    assert_true(mode_for(perms(LockMode::Exclusive, false, false, NodeRole::Backing)) == M::Write);
    // Commit's base edge, and nothing at all.
    assert_true(whole_file_mode_for(BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE, 0) == M::Write);
    assert_true(whole_file_mode_for(0, BLK_PERM_ALL) == M::None);
}

void test_upgrade_downgrade(void **) {
    TempFile t;
    Fd fa(t.path), fb(t.path);
    auto a = new_lock(fa.fd, t.path, "a");
    auto b = new_lock(fb.fd, t.path, "b");
    const PermPair backing = perms(LockMode::Auto, true, false, NodeRole::Backing);
    const PermPair commit{BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE, 0};

    assert_true(a->prepare(backing.perm, backing.shared).ok());
    a->commit();
    assert_true(b->prepare(backing.perm, backing.shared).ok());
    b->commit();
    assert_true(seen(t.path) == WholeFileMode::Read);

    // The upgrade fails while b reads: a still holds its read lock.
    Status st = a->prepare(commit.perm, commit.shared);
    assert_false(st.ok());
    assert_int_equal(st.err(), EAGAIN);
    assert_string_equal(st.message().c_str(), "Failed to get a whole-file write (exclusive) lock");
    assert_true(st.detail().find("Is another process using the image [" + t.path + "]?") == 0);
    assert_true(whole_file_lock_mode(*a) == WholeFileMode::Read);
    b->release();
    assert_true(seen(t.path) == WholeFileMode::Read);  // a's, still there

    // Now it converts in place; abort converts back.
    assert_true(a->prepare(commit.perm, commit.shared).ok());
    assert_true(seen(t.path) == WholeFileMode::Write);
    a->abort();
    assert_true(seen(t.path) == WholeFileMode::Read);
    // Upgrade, commit, then the downgrade after commit.
    assert_true(a->prepare(commit.perm, commit.shared).ok());
    a->commit();
    assert_true(seen(t.path) == WholeFileMode::Write);
    st = b->prepare(backing.perm, backing.shared);
    assert_false(st.ok());
    assert_string_equal(st.message().c_str(), "Failed to get a whole-file read (shared) lock");
    assert_true(st.detail().find("Held by node 'a' of this process") != std::string::npos);
    assert_true(a->prepare(backing.perm, backing.shared).ok());
    assert_true(seen(t.path) == WholeFileMode::Write);  // weaker: only at commit
    a->commit();
    assert_true(seen(t.path) == WholeFileMode::Read);
    assert_true(b->prepare(backing.perm, backing.shared).ok());
    b->commit();
    assert_true(a->prepare(0, BLK_PERM_ALL).ok());
    a->commit();
    b->release();
    assert_true(seen(t.path) == WholeFileMode::None);
}

int g_err;
int fail_setlk(int fd, int cmd, struct flock *fl) {
    if (cmd == F_OFD_SETLK && fl->l_type != F_UNLCK) {
        errno = g_err;
        return -1;
    }
    return default_lock_syscalls().fcntl_lock(fd, cmd, fl);
}

void test_cannot_lock(void **) {
    TempFile t;
    Fd f(t.path);
    auto a = new_lock(f.fd, t.path, "a");
    for (int err : {ENOLCK, EOPNOTSUPP, EIO}) {
        g_err = err;
        lock_syscalls().fcntl_lock = fail_setlk;
        Status st = a->prepare(BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL);
        reset_lock_syscalls();
        assert_false(st.ok());
        std::string want = "Failed to get a whole-file read (shared) lock: the file system of '" +
                           t.path + "' cannot lock (" + strerror(err) + ")";
        assert_string_equal(st.message().c_str(), want.c_str());
        assert_true(seen(t.path) == WholeFileMode::None);
    }
    auto r = whole_file_lock_new(f.fd, t.path, "p", LockingApi::Posix);
    assert_false(r.ok());
    assert_string_equal(r.status().message().c_str(),
                        "lock-protocol=whole-file cannot use locking-api=posix");
}

Status open_status(const std::string &spec) {
    auto o = qapi::parse_drive_options(spec);
    assert_true(o.ok());
    auto r = BlockBackend::open(*o, "probe");
    return r.ok() ? Status::OK() : r.status();
}

void test_drives(void **) {
    TempFile t;
    const std::string wf = "driver=raw,file.driver=file,file.filename=" + t.path +
                           ",file.lock-protocol=whole-file";
    {
        auto r1 = must_open(wf + ",read-only=on", "r1");
        auto r2 = must_open(wf + ",read-only=on,lock=shared", "r2");
        assert_true(seen(t.path) == WholeFileMode::Read);
        Status st = open_status(wf);  // a writer with auto wants F_WRLCK
        assert_string_equal(st.message().c_str(), "Failed to get a whole-file write (exclusive) lock");
        // A shared writer takes F_RDLCK: the 2009 cluster case.
        auto w = must_open(wf + ",lock=shared", "w");
        // A QEMU-protocol opener meets the whole-file read lock on byte 200.
        st = open_status("driver=raw,file.filename=" + t.path + ",read-only=on");
        assert_string_equal(st.message().c_str(), "Failed to get \"consistent read\" lock");
        assert_true(st.detail().find("holds a write lock") == std::string::npos);
    }
    assert_true(seen(t.path) == WholeFileMode::None);
    auto x = must_open(wf + ",lock=exclusive", "x");
    assert_true(seen(t.path) == WholeFileMode::Write);
    Status st = open_status("driver=raw,file.filename=" + t.path + ",read-only=on,lock=shared");
    assert_string_equal(st.message().c_str(), "Failed to get \"consistent read\" lock");
    assert_true(st.detail().find("holds a write lock (not QEMU's protocol") != std::string::npos);
}

struct Watch {
    std::string path;
    std::vector<WholeFileMode> seen_modes;
};

void watch(int64_t, int64_t, void *opaque) {
    auto *w = static_cast<Watch *>(opaque);
    if (w->seen_modes.empty()) w->seen_modes.push_back(seen(w->path));
}

void test_commit(void **) {
    char dir[] = "/tmp/mb-test-whole-file-dir-XXXXXX";
    assert_non_null(mkdtemp(dir));
    const std::string base = std::string(dir) + "/base.img", top = std::string(dir) + "/top.qcow2";
    {
        int fd = open(base.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        assert_true(fd >= 0 && ftruncate(fd, 1 << 20) == 0);
        close(fd);
    }
    qapi::OptionDict o;
    o.set_str("backing_file", "base.img");
    o.set_str("backing_fmt", "raw");
    assert_true(bdrv_create("qcow2", top, 1 << 20, o).ok());
    {
        auto d = must_open("driver=qcow2,file.filename=" + top +
                               ",backing.file.lock-protocol=whole-file",
                           "top");
        assert_true(seen(base) == WholeFileMode::Read);
        std::vector<uint8_t> buf(4096, 0x6b);
        assert_int_equal(d->pwrite(0, buf.size(), buf.data()), 0);
        Watch w{base, {}};
        Status st = d->commit({}, false, watch, &w);
        if (!st.ok()) print_error("%s\n", st.to_string().c_str());
        assert_true(st.ok());
        // Upgraded to F_WRLCK during the copy, back to F_RDLCK after.
        assert_true(w.seen_modes.at(0) == WholeFileMode::Write);
        assert_true(seen(base) == WholeFileMode::Read);
        // Refused while someone else reads: the read lock is kept.
        Fd other(base);
        struct flock fl = {};
        fl.l_type = F_RDLCK;
        fl.l_whence = SEEK_SET;
        assert_int_equal(fcntl(other.fd, F_OFD_SETLK, &fl), 0);
        st = d->commit();
        assert_false(st.ok());
        assert_true(st.message().find("Failed to get a whole-file write (exclusive) lock") !=
                    std::string::npos);
        assert_true(seen(base) == WholeFileMode::Read);
    }
    std::vector<uint8_t> back(4096);
    int fd = open(base.c_str(), O_RDONLY | O_CLOEXEC);
    assert_int_equal(pread(fd, back.data(), back.size(), 0), (ssize_t)back.size());
    close(fd);
    for (uint8_t c : back) assert_int_equal(c, 0x6b);
    std::string cmd = std::string("rm -rf '") + dir + "'";
    assert_int_equal(system(cmd.c_str()), 0);
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mapping),
        cmocka_unit_test(test_upgrade_downgrade),
        cmocka_unit_test(test_cannot_lock),
        cmocka_unit_test(test_drives),
        cmocka_unit_test(test_commit),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
