// Helpers shared by the C++ unit suites: temporary files, owned fds, the
// lock byte map as another process sees it, this process's lock bytes by
// node, and opening drives that must open.  Include after <cmocka.h>.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <string>

#include "block/locking/holders.h"
#include "block/locking/syscalls.h"
#include "miniblock/block.h"
#include "miniblock/options.h"

namespace mb::test {

// A 1 MiB file under /tmp, removed at the end of the scope.
struct TempFile {
    std::string path;
    TempFile() {
        char tmpl[] = "/tmp/mb-test-XXXXXX";
        int fd = mkostemp(tmpl, O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, 1 << 20), 0);
        close(fd);
        path = tmpl;
    }
    ~TempFile() { unlink(path.c_str()); }
};

struct Fd {
    int fd;
    explicit Fd(const std::string &path, int flags = O_RDWR)
        : fd(open(path.c_str(), flags | O_CLOEXEC)) {
        assert_true(fd >= 0);
    }
    ~Fd() {
        if (fd >= 0) close(fd);
    }
};

// Bytes 100-104 (use; bit 4 is 104) and 200-204 (forbid), and byte 0.
struct ByteMap {
    uint32_t use = 0, forbid = 0;
    bool byte0 = false;
    bool operator==(const ByteMap &) const = default;
};

// The byte map as another process sees it, probed from a forked child with
// F_GETLK, which sees OFD and POSIX locks alike (and a probe fd opened in
// this process would drop this process's POSIX locks when closed).
inline ByteMap probe_bytes(const std::string &path) {
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
        auto locked = [fd](int64_t off) {
            struct flock fl = {};
            fl.l_type = F_WRLCK;
            fl.l_whence = SEEK_SET;
            fl.l_start = off;
            fl.l_len = 1;
            if (fcntl(fd, F_GETLK, &fl) < 0) _exit(2);
            return fl.l_type != F_UNLCK;
        };
        ByteMap m;
        for (int i = 0; fd >= 0 && i <= 4; i++) {
            if (locked(100 + i)) m.use |= 1u << i;
            if (locked(200 + i)) m.forbid |= 1u << i;
        }
        if (fd >= 0) m.byte0 = locked(0);
        _exit(fd >= 0 && write(p[1], &m, sizeof m) == sizeof m ? 0 : 1);
    }
    close(p[1]);
    ByteMap m;
    assert_int_equal(read(p[0], &m, sizeof m), sizeof m);
    close(p[0]);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    return m;
}

// Both locking APIs, for the suites that run each check with each.
inline constexpr qapi::LockingApi kLockingApis[] = {qapi::LockingApi::Ofd, qapi::LockingApi::Posix};

// A cmocka teardown for the suites that fake lock system calls: the real
// ones come back even after a failed check.
inline int restore_lock_syscalls(void **) {
    reset_lock_syscalls();
    return 0;
}

// Whether another process sees byte `off` locked: F_GETLK from a forked
// child (a probe fd closed in this process would drop our POSIX locks).
inline bool byte_held(const std::string &path, int64_t off) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
        struct flock fl = {};
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        fl.l_start = off;
        fl.l_len = 1;
        if (fd < 0 || fcntl(fd, F_GETLK, &fl) < 0) _exit(2);
        _exit(fl.l_type != F_UNLCK ? 1 : 0);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) < 2);
    return WEXITSTATUS(st) == 1;
}

// What each node of this process holds on the file at `path`, as
// "node:use/forbid;".  With strip_drive, "drive3.file" reads "file": drive
// numbers depend on the order the tests ran in.
inline std::string our_lock_bytes(const std::string &path, bool strip_drive = false) {
    struct stat st;
    if (stat(path.c_str(), &st) < 0) return "stat failed";
    std::string s;
    for (auto &h : find_lock_holders(st.st_dev, st.st_ino)) {
        if (!h.this_process) continue;
        std::string n = h.node_name;
        if (strip_drive && n.rfind("drive", 0) == 0) n = n.substr(n.find('.') + 1);
        s += n + ":" + std::to_string(h.use) + "/" + std::to_string(h.forbid) + ";";
    }
    return s;
}

// Opens a drive named `name` that must open; fails the test with the error.
inline std::unique_ptr<BlockBackend> must_open(const std::string &spec, const char *name) {
    auto o = qapi::parse_drive_options(spec);
    if (!o.ok()) {
        print_error("%s: %s\n", spec.c_str(), o.status().to_string().c_str());
        fail();
    }
    auto r = BlockBackend::open(*o, name);
    if (!r.ok()) {
        print_error("%s: %s\n", spec.c_str(), r.status().to_string().c_str());
        fail();
    }
    return std::move(*r);
}

}  // namespace mb::test
