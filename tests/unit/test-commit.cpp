// Commit under a temporary exclusive base lock, seen from outside: the base's
// lock bytes during the copy (read from a forked child in the progress
// callback), after it, after a refusal, after an I/O error half-way; the
// nodes in between an intermediate commit forbid consistent read; and
// lock=shared on a writable qcow2 image is refused.

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "block/aio.h"
#include "block/block_int.h"
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

struct Dir {
    std::string path;
    Dir() {
        char tmpl[] = "/tmp/mb-test-commit-XXXXXX";
        assert_non_null(mkdtemp(tmpl));
        path = tmpl;
    }
    ~Dir() {
        std::string cmd = "rm -rf '" + path + "'";
        if (system(cmd.c_str()) != 0) print_error("cannot remove %s\n", path.c_str());
    }
    std::string operator/(const char *name) const { return path + "/" + name; }
};

void assert_map(const ByteMap &m, uint32_t use, uint32_t forbid, int line) {
    if (m.use != use || m.forbid != forbid) {
        print_error("line %d: byte map use=%#x forbid=%#x, expected use=%#x forbid=%#x\n", line,
                    m.use, m.forbid, use, forbid);
        fail();
    }
}
#define ASSERT_MAP(m, use, forbid) assert_map((m), (use), (forbid), __LINE__)

void must(const Status &st) {
    if (!st.ok()) {
        print_error("%s\n", st.to_string().c_str());
        fail();
    }
}

void make_raw(const std::string &path, int64_t size, int pattern) {
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    std::vector<uint8_t> buf(size, pattern);
    assert_int_equal(pwrite(fd, buf.data(), size, 0), size);
    close(fd);
}

void make_qcow2(const std::string &path, int64_t size, const std::string &backing,
                const char *backing_fmt) {
    qapi::OptionDict o;
    o.set_str("backing_file", backing);
    o.set_str("backing_fmt", backing_fmt);
    must(bdrv_create("qcow2", path, size, o));
}

void assert_pattern(BlockBackend &b, int64_t off, int64_t len, int pattern) {
    std::vector<uint8_t> buf(len);
    assert_int_equal(b.pread(off, len, buf.data()), 0);
    for (int64_t i = 0; i < len; i++) {
        if (buf[i] != pattern) {
            print_error("byte %lld is %#x, expected %#x\n", (long long)(off + i), buf[i], pattern);
            fail();
        }
    }
}

void write_pattern(BlockBackend &b, int64_t off, int64_t len, int pattern) {
    std::vector<uint8_t> buf(len, pattern);
    assert_int_equal(b.pwrite(off, len, buf.data()), 0);
}

void assert_file_pattern(const std::string &path, int64_t off, int64_t len, int pattern) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    std::vector<uint8_t> buf(len);
    assert_int_equal(pread(fd, buf.data(), len, off), len);
    close(fd);
    for (int64_t i = 0; i < len; i++) assert_int_equal(buf[i], pattern);
}

// ---- the base's bytes during and after ----------------------------------------

struct Watch {
    std::string path;
    std::vector<ByteMap> seen;
};

void watch_progress(int64_t, int64_t, void *opaque) {
    auto *w = static_cast<Watch *>(opaque);
    if (w->seen.empty()) w->seen.push_back(probe_bytes(w->path));
}

void test_commit_locks(void **) {
    Dir d;
    make_raw(d / "base.img", 2 << 20, 0x11);
    make_qcow2(d / "top.qcow2", 2 << 20, "base.img", "raw");
    auto top = must_open("file=" + (d / "top.qcow2") + ",format=qcow2", "top");
    ASSERT_MAP(probe_bytes(d / "base.img"), R, W | WU | RS);
    write_pattern(*top, 0, 64 << 10, 0x22);

    Watch w{d / "base.img", {}};
    must(top->commit({}, false, watch_progress, &w));
    assert_int_equal(w.seen.size(), 1);
    // During the copy: use R, W (the base is big enough: no resize); forbid all.
    ASSERT_MAP(w.seen[0], R | W, ALL);
    // After: the read lock that keeps writers out, exactly as before.
    ASSERT_MAP(probe_bytes(d / "base.img"), R, W | WU | RS);
    assert_file_pattern(d / "base.img", 0, 64 << 10, 0x22);
    assert_file_pattern(d / "base.img", 64 << 10, 64 << 10, 0x11);
    assert_pattern(*top, 0, 64 << 10, 0x22);
    // The base node is read-only again: writes through the backing edge fail.
    BdrvChild *be = top->bs()->backing();
    assert_true(be->bs->read_only);
    assert_false(be->pinned);
    assert_int_equal(sync_wait(bdrv_co_pwritev(be, 0, 512, std::vector<uint8_t>(512).data())), -EPERM);

    // The dry run takes and returns the lock; the bytes are as before.
    must(top->commit({}, true));
    ASSERT_MAP(probe_bytes(d / "base.img"), R, W | WU | RS);
}

void test_commit_grows_base(void **) {
    Dir d;
    make_raw(d / "base.img", 1 << 20, 0x11);
    make_qcow2(d / "top.qcow2", 2 << 20, "base.img", "raw");
    auto top = must_open("file=" + (d / "top.qcow2") + ",format=qcow2", "top");
    write_pattern(*top, (2 << 20) - 4096, 4096, 0x33);
    Watch w{d / "base.img", {}};
    must(top->commit({}, false, watch_progress, &w));
    ASSERT_MAP(w.seen[0], R | W | RS, ALL);
    struct ::stat st;
    assert_int_equal(::stat((d / "base.img").c_str(), &st), 0);
    assert_int_equal(st.st_size, 2 << 20);
    assert_file_pattern(d / "base.img", (2 << 20) - 4096, 4096, 0x33);
}

void test_commit_refused(void **) {
    Dir d;
    make_raw(d / "base.img", 1 << 20, 0x11);
    make_qcow2(d / "top.qcow2", 1 << 20, "base.img", "raw");
    auto top = must_open("file=" + (d / "top.qcow2") + ",format=qcow2", "top");
    write_pattern(*top, 0, 4096, 0x22);
    auto reader = must_open("file=" + (d / "base.img") + ",format=raw,read-only=on,lock=shared", "reader");
    ASSERT_MAP(probe_bytes(d / "base.img"), R, W | WU | RS);

    for (bool check : {true, false}) {
        Status st = top->commit({}, check);
        assert_false(st.ok());
        assert_int_equal(st.err(), EAGAIN);
        const std::string want = "Cannot commit '" + (d / "top.qcow2") + "' into '" +
                                 (d / "base.img") +
                                 "': the base cannot be locked for writing: Failed to get shared "
                                 "\"consistent read\" lock";
        assert_string_equal(st.message().c_str(), want.c_str());
        assert_true(st.detail().find("Held by node 'reader.file' of this process") != std::string::npos);
        ASSERT_MAP(probe_bytes(d / "base.img"), R, W | WU | RS);
        assert_false(top->bs()->backing()->pinned);
    }
    assert_file_pattern(d / "base.img", 0, 4096, 0x11);
    reader.reset();
    must(top->commit());
    assert_file_pattern(d / "base.img", 0, 4096, 0x22);
}

// ---- an I/O error half-way ------------------------------------------------------

struct Sabotage {
    int calls = 0;
};

// After the first chunk, the file size limit drops to 2 MiB: the next write
// into the base (at 3 MiB) fails with EFBIG, a real error from the kernel.
void sabotage_progress(int64_t, int64_t, void *opaque) {
    auto *s = static_cast<Sabotage *>(opaque);
    if (++s->calls != 1) return;
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &rl), 0);
    rl.rlim_cur = 2 << 20;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

void test_commit_io_error(void **) {
    Dir d;
    make_raw(d / "base.img", 4 << 20, 0x11);
    make_qcow2(d / "top.qcow2", 4 << 20, "base.img", "raw");
    auto top = must_open("file=" + (d / "top.qcow2") + ",format=qcow2", "top");
    write_pattern(*top, 0, 4096, 0x22);
    write_pattern(*top, 3 << 20, 4096, 0x44);

    struct rlimit saved;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
    Sabotage s;
    Status st = top->commit({}, false, sabotage_progress, &s);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
    assert_false(st.ok());
    const std::string want = "Commit of '" + (d / "top.qcow2") + "' into '" + (d / "base.img") +
                             "' failed; the overlay is unchanged: File too large";
    assert_string_equal(st.message().c_str(), want.c_str());
    // Dropped back: the base's locks are the read lock again, the base node
    // read-only, the edge unpinned.
    ASSERT_MAP(probe_bytes(d / "base.img"), R, W | WU | RS);
    assert_true(top->bs()->backing()->bs->read_only);
    assert_false(top->bs()->backing()->pinned);
    // The overlay is intact and still defines the guest's view.
    assert_pattern(*top, 0, 4096, 0x22);
    assert_pattern(*top, 3 << 20, 4096, 0x44);
    assert_pattern(*top, 1 << 20, 4096, 0x11);
    // The second range never reached the base.
    assert_file_pattern(d / "base.img", 3 << 20, 4096, 0x11);
}

// ---- intermediate commit ----------------------------------------------------------

struct Watch2 {
    std::string base, mid;
    std::vector<ByteMap> base_seen, mid_seen;
};

void watch2_progress(int64_t, int64_t, void *opaque) {
    auto *w = static_cast<Watch2 *>(opaque);
    if (!w->base_seen.empty()) return;
    w->base_seen.push_back(probe_bytes(w->base));
    w->mid_seen.push_back(probe_bytes(w->mid));
}

void test_intermediate_commit(void **) {
    Dir d;
    make_raw(d / "base.img", 1 << 20, 0x11);
    make_qcow2(d / "mid.qcow2", 1 << 20, "base.img", "raw");
    make_qcow2(d / "top.qcow2", 1 << 20, "mid.qcow2", "qcow2");
    {
        auto mid = must_open("file=" + (d / "mid.qcow2") + ",format=qcow2", "mid");
        write_pattern(*mid, 0, 4096, 0x22);
    }
    auto top = must_open("file=" + (d / "top.qcow2") + ",format=qcow2", "top");
    write_pattern(*top, 64 << 10, 4096, 0x33);
    ASSERT_MAP(probe_bytes(d / "mid.qcow2"), R, W | WU | RS);

    // A base that is not in the chain.
    Status st = top->commit(d / "other.img");
    assert_false(st.ok());
    assert_string_equal(st.message().c_str(),
                        ("'" + (d / "other.img") + "' is not in the backing chain of '" +
                         (d / "top.qcow2") + "'").c_str());

    Watch2 w{d / "base.img", d / "mid.qcow2", {}, {}};
    must(top->commit(d / "base.img", false, watch2_progress, &w));
    ASSERT_MAP(w.base_seen[0], R | W, ALL);
    // The node in between: nobody may read it consistently meanwhile.
    ASSERT_MAP(w.mid_seen[0], R, R | W | WU | RS);
    ASSERT_MAP(probe_bytes(d / "mid.qcow2"), R, W | WU | RS);
    ASSERT_MAP(probe_bytes(d / "base.img"), R, W | WU | RS);
    // Both layers' data is in the base.
    assert_file_pattern(d / "base.img", 0, 4096, 0x22);
    assert_file_pattern(d / "base.img", 64 << 10, 4096, 0x33);
    assert_file_pattern(d / "base.img", 128 << 10, 4096, 0x11);
}

// With backing.lock=exclusive the base is ours from the start; committing
// a qcow2 base (mid) works and leaves it exclusive.
void test_commit_into_qcow2_exclusive(void **) {
    Dir d;
    make_raw(d / "base.img", 1 << 20, 0x11);
    make_qcow2(d / "mid.qcow2", 1 << 20, "base.img", "raw");
    make_qcow2(d / "top.qcow2", 1 << 20, "mid.qcow2", "qcow2");
    auto top = must_open("driver=qcow2,file.filename=" + (d / "top.qcow2") + ",backing.lock=exclusive", "top");
    ASSERT_MAP(probe_bytes(d / "mid.qcow2"), R, ALL);
    ASSERT_MAP(probe_bytes(d / "base.img"), R, W | WU | RS);
    write_pattern(*top, 0, 64 << 10, 0x55);
    Watch w{d / "base.img", {}};
    must(top->commit({}, false, watch_progress, &w));
    // The grandparent was never raised.
    ASSERT_MAP(w.seen[0], R, W | WU | RS);
    ASSERT_MAP(probe_bytes(d / "mid.qcow2"), R, ALL);
    top.reset();
    auto mid = must_open("file=" + (d / "mid.qcow2") + ",format=qcow2,read-only=on", "mid");
    assert_pattern(*mid, 0, 64 << 10, 0x55);
    assert_pattern(*mid, 64 << 10, 4096, 0x11);
}

// Dotted per-node overrides reach their node only.
void test_per_node_overrides(void **) {
    Dir d;
    make_raw(d / "base.img", 1 << 20, 0x11);
    make_qcow2(d / "mid.qcow2", 1 << 20, "base.img", "raw");
    make_qcow2(d / "top.qcow2", 1 << 20, "mid.qcow2", "qcow2");
    const std::string top = "driver=qcow2,file.filename=" + (d / "top.qcow2");
    {
        auto t = must_open(top + ",backing.backing.lock=off", "t");
        ASSERT_MAP(probe_bytes(d / "top.qcow2"), R | W | RS, W | WU | RS);
        ASSERT_MAP(probe_bytes(d / "mid.qcow2"), R, W | WU | RS);
        ASSERT_MAP(probe_bytes(d / "base.img"), 0, 0);
    }
    {
        // The overlay's exclusive mode never travels down as-is.
        auto t = must_open(top + ",lock=exclusive", "t");
        ASSERT_MAP(probe_bytes(d / "top.qcow2"), R | W | RS, ALL);
        ASSERT_MAP(probe_bytes(d / "mid.qcow2"), R, W | WU | RS);
        ASSERT_MAP(probe_bytes(d / "base.img"), R, W | WU | RS);
    }
    {
        auto t = must_open(top + ",lock=shared,read-only=on,backing.backing.lock=exclusive", "t");
        ASSERT_MAP(probe_bytes(d / "top.qcow2"), R, 0);
        ASSERT_MAP(probe_bytes(d / "mid.qcow2"), R, 0);
        ASSERT_MAP(probe_bytes(d / "base.img"), R, ALL);
    }
    {
        auto t = must_open(top + ",lock=off", "t");
        ASSERT_MAP(probe_bytes(d / "top.qcow2"), 0, 0);
        ASSERT_MAP(probe_bytes(d / "mid.qcow2"), 0, 0);
        ASSERT_MAP(probe_bytes(d / "base.img"), 0, 0);
    }
}

// Migration hand-over of a qcow2 image: the target opened inactive before
// the source allocated clusters; activate must re-read the tables.
void test_handover_rereads_qcow2(void **) {
    Dir d;
    make_raw(d / "base.img", 1 << 20, 0x11);
    make_qcow2(d / "top.qcow2", 1 << 20, "base.img", "raw");
    const std::string spec = "file=" + (d / "top.qcow2") + ",format=qcow2";
    auto src = must_open(spec, "src");
    auto dst = must_open(spec + ",inactive=on", "dst");
    assert_pattern(*dst, 0, 4096, 0x11);
    write_pattern(*src, 0, 64 << 10, 0x5a);
    write_pattern(*src, 512 << 10, 4096, 0x5c);
    must(src->inactivate());
    must(dst->activate());
    assert_pattern(*dst, 0, 64 << 10, 0x5a);
    assert_pattern(*dst, 512 << 10, 4096, 0x5c);
    write_pattern(*dst, 256 << 10, 64 << 10, 0x5b);
    dst.reset();
    src.reset();
    std::string cmd = "qemu-img check -q '" + (d / "top.qcow2") + "'";
    assert_int_equal(system(cmd.c_str()), 0);
    auto check = must_open(spec + ",read-only=on", "check");
    assert_pattern(*check, 0, 64 << 10, 0x5a);
    assert_pattern(*check, 256 << 10, 64 << 10, 0x5b);
    assert_pattern(*check, 512 << 10, 4096, 0x5c);
}

// Two drives of this process over one base (OFD and the POSIX fallback):
// closing one never drops the other's locks on the base, and a commit is
// refused naming the other drive's node.
void test_two_drives_over_one_base(void **) {
    for (const char *api : {"ofd", "posix"}) {
        Dir d;
        make_raw(d / "base.img", 1 << 20, 0x11);
        make_qcow2(d / "cow1.qcow2", 1 << 20, "base.img", "raw");
        make_qcow2(d / "cow2.qcow2", 1 << 20, "base.img", "raw");
        const std::string extra = std::string(",backing.file.locking-api=") + api;
        auto t1 = must_open("driver=qcow2,file.filename=" + (d / "cow1.qcow2") + extra, "t1");
        auto t2 = must_open("driver=qcow2,file.filename=" + (d / "cow2.qcow2") + extra, "t2");
        ASSERT_MAP(probe_bytes(d / "base.img"), R, W | WU | RS);
        Status st = t2->commit();
        assert_false(st.ok());
        assert_true(st.detail().find("Held by node 't1.backing.file' of this process") != std::string::npos);
        ASSERT_MAP(probe_bytes(d / "base.img"), R, W | WU | RS);
        t1.reset();
        ASSERT_MAP(probe_bytes(d / "base.img"), R, W | WU | RS);
        write_pattern(*t2, 0, 4096, 0x77);
        must(t2->commit());
        ASSERT_MAP(probe_bytes(d / "base.img"), R, W | WU | RS);
        assert_file_pattern(d / "base.img", 0, 4096, 0x77);
        t2.reset();
        ASSERT_MAP(probe_bytes(d / "base.img"), 0, 0);
    }
}

void test_shared_writable_qcow2_refused(void **) {
    Dir d;
    make_raw(d / "base.img", 1 << 20, 0);
    make_qcow2(d / "top.qcow2", 1 << 20, "base.img", "raw");
    auto o = qapi::parse_drive_options("file=" + (d / "top.qcow2") + ",format=qcow2,lock=shared");
    must(o.status());
    auto r = BlockBackend::open(*o, "top");
    assert_false(r.ok());
    assert_string_equal(r.status().message().c_str(),
                        ("'" + (d / "top.qcow2") + "': lock=shared is not possible on a writable non-raw image").c_str());
    assert_string_equal(r.status().detail().c_str(),
                        "Two writers would both update the image's metadata and corrupt it; use "
                        "lock=auto, or open the image read-only");
    // Read-only, it is fine.
    must_open("file=" + (d / "top.qcow2") + ",format=qcow2,lock=shared,read-only=on", "ro");
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commit_locks),
        cmocka_unit_test(test_commit_grows_base),
        cmocka_unit_test(test_commit_refused),
        cmocka_unit_test(test_commit_io_error),
        cmocka_unit_test(test_intermediate_commit),
        cmocka_unit_test(test_commit_into_qcow2_exclusive),
        cmocka_unit_test(test_per_node_overrides),
        cmocka_unit_test(test_two_drives_over_one_base),
        cmocka_unit_test(test_handover_rereads_qcow2),
        cmocka_unit_test(test_shared_writable_qcow2_refused),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
