// The block graph through its C++ API: the permission transaction over a
// whole open (fault injected at every lock system call), the file driver's
// O_DIRECT paths (bounce buffers, libaio), option errors at node paths.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "block/block_int.h"
#include "block/locking/holders.h"
#include "block/locking/qemu-bytes.h"
#include "block/locking/syscalls.h"
#include "block/warn.h"
#include "miniblock/block.h"

// cmocka last: its macros (fail, ...) clash with C++ headers.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
extern "C" {
#include <cmocka.h>
}

#include "tests/unit/test-util.h"

using namespace mb;

namespace {

std::string path;

std::string drive(const std::string &extra) {
    return "file=" + path + ",format=raw" + (extra.empty() ? "" : "," + extra);
}

// What each node of this process holds on the image, as "node:use/forbid;".
std::string our_bytes() { return test::our_lock_bytes(path); }

int setup(void **) {
    path = "/tmp/mb-block-" + std::to_string(getpid()) + ".img";
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ftruncate(fd, 4 << 20) < 0) return -1;
    close(fd);
    return 0;
}

int teardown(void **) {
    reset_lock_syscalls();
    unlink(path.c_str());
    return 0;
}

// --- the transaction through a whole open --------------------------------------

int fail_at = -1, calls = 0;
int (*real_fcntl)(int, int, struct flock *);
int failing_fcntl(int fd, int cmd, struct flock *fl) {
    // The preparers' byte (docs/locking.md section 3) is a courtesy whose
    // failure costs nothing: test-locking-race.cpp covers it.
    if (fl->l_start == kLockPreparerByte) return real_fcntl(fd, cmd, fl);
    if (calls++ == fail_at) {
        errno = EIO;
        return -1;
    }
    return real_fcntl(fd, cmd, fl);
}

// A second drive's open fails at every lock system call in turn: each time,
// the first drive's bytes are exactly as before and the second holds none.
void test_open_fault_injection(void **) {
    auto a = BlockBackend::open(drive("read-only=on"));
    assert_true(a.ok());
    const std::string before = our_bytes();
    assert_string_equal(before.c_str(), "drive0.file:1/14;");

    real_fcntl = default_lock_syscalls().fcntl_lock;
    // Count the calls of an open that succeeds, then fail each one.
    lock_syscalls().fcntl_lock = failing_fcntl;
    fail_at = -1;
    calls = 0;
    auto probe = BlockBackend::open(drive("read-only=on,lock=shared"));
    assert_true(probe.ok());
    const int total = calls;  // the open's calls, not the close's
    probe->reset();
    assert_true(total >= 2);
    // The API probe at lock creation may fail harmlessly (the lock calls
    // after it report for real): an open that survives a fault must hold
    // exactly its own bytes.
    int refused = 0;
    for (int i = 0; i < total; i++) {
        fail_at = i;
        calls = 0;
        auto b = BlockBackend::open(drive("read-only=on,lock=shared"));
        if (b.ok()) {
            assert_string_equal(our_bytes().c_str(), (before + (*b)->name() + ".file:1/0;").c_str());
            b->reset();
        } else {
            refused++;
        }
        assert_string_equal(our_bytes().c_str(), before.c_str());
    }
    assert_true(refused >= total - 1);
    reset_lock_syscalls();
}

// A refused open (a conflict found after our own bytes were taken) leaves
// the holder's bytes as they were and none of its own.
void test_refused_open_changes_nothing(void **) {
    auto a = BlockBackend::open(drive(""));
    assert_true(a.ok());
    const std::string before = our_bytes();
    auto b = BlockBackend::open(drive("lock=exclusive,read-only=on"));
    assert_false(b.ok());
    assert_int_equal(b.status().err(), EAGAIN);
    assert_string_equal(b.status().message().c_str(), "Failed to get shared \"consistent read\" lock");
    assert_string_equal(our_bytes().c_str(), before.c_str());
}

// Closing one of two drives on one file never drops the other's locks.
void test_close_keeps_other_drive(void **) {
    auto a = BlockBackend::open(drive("read-only=on"));
    auto b = BlockBackend::open(drive("read-only=on,lock=shared"));
    assert_true(a.ok() && b.ok());
    std::string a_only = our_bytes();
    b->reset();
    std::string after = our_bytes();
    assert_non_null(strstr(after.c_str(), ":1/14;"));
    assert_null(strstr(after.c_str(), ":1/0;"));
    (void)a_only;
}

// --- the file driver's data paths ------------------------------------------------

void roundtrip(const std::string &opts) {
    auto d = BlockBackend::open(drive(opts));
    if (!d.ok()) fail_msg("%s: %s", opts.c_str(), d.status().to_string().c_str());
    std::mt19937 rng(42);
    std::vector<uint8_t> shadow(1 << 20, 0);
    assert_int_equal((*d)->pwrite_zeroes(0, shadow.size()), 0);
    // Unaligned offsets, lengths and buffers.
    for (int i = 0; i < 200; i++) {
        int64_t off = rng() % (shadow.size() - 70000);
        int64_t len = 1 + rng() % 66000;
        std::vector<uint8_t> buf(len + 1);
        for (auto &b : buf) b = rng();
        uint8_t *p = buf.data() + 1;  // deliberately misaligned
        assert_int_equal((*d)->pwrite(off, len, p), 0);
        memcpy(shadow.data() + off, p, len);
        int64_t roff = rng() % (shadow.size() - 70000), rlen = 1 + rng() % 66000;
        std::vector<uint8_t> back(rlen + 3);
        assert_int_equal((*d)->pread(roff, rlen, back.data() + 3), 0);
        assert_memory_equal(back.data() + 3, shadow.data() + roff, rlen);
    }
    assert_int_equal((*d)->flush(), 0);
    d->reset();
    // What reached the file, read without miniblock.
    std::vector<uint8_t> file(shadow.size());
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    assert_int_equal(pread(fd, file.data(), file.size(), 0), (ssize_t)file.size());
    close(fd);
    assert_memory_equal(file.data(), shadow.data(), shadow.size());
}

void test_io_threads(void **) { roundtrip(""); }
void test_io_odirect_threads(void **) { roundtrip("cache=none"); }
void test_io_odirect_native(void **) { roundtrip("cache=none,aio=native"); }

// A drive's requests must lie within the image (QEMU's
// blk_check_byte_request): across or past the end is EIO, and a write there
// never grows the file; up to the last byte is fine.
void test_read_past_end_is_eio(void **) {
    auto d = BlockBackend::open("driver=file,filename=" + path);
    assert_true(d.ok());
    std::vector<uint8_t> buf(8192, 0xff);
    assert_int_equal((*d)->pread((4 << 20) - 4096, 8192, buf.data()), -EIO);
    assert_int_equal((*d)->pread(4 << 20, 1, buf.data()), -EIO);
    assert_int_equal((*d)->pwrite((4 << 20) - 4096, 8192, buf.data()), -EIO);
    assert_int_equal((*d)->pwrite_zeroes(8 << 20, 512), -EIO);
    assert_int_equal((*d)->pread((4 << 20) - 4096, 4096, buf.data()), 0);
    assert_int_equal((*d)->length(), 4 << 20);
}

// Discard punches a hole: the blocks go, the data reads back as zeroes.
void test_discard_punches_hole(void **) {
    auto d = BlockBackend::open(drive(""));
    assert_true(d.ok());
    std::vector<uint8_t> buf(1 << 20, 0xab);
    assert_int_equal((*d)->pwrite(0, buf.size(), buf.data()), 0);
    assert_int_equal((*d)->flush(), 0);
    struct stat before, after;
    assert_int_equal(stat(path.c_str(), &before), 0);
    assert_int_equal((*d)->pdiscard(0, 1 << 20), 0);
    assert_int_equal(stat(path.c_str(), &after), 0);
    assert_true(after.st_blocks < before.st_blocks);
    assert_int_equal(after.st_size, before.st_size);
    assert_int_equal((*d)->pread(0, 4096, buf.data()), 0);
    for (int i = 0; i < 4096; i++) assert_int_equal(buf[i], 0);
    // Resizing needs the resize permission, which no lock mode of a raw
    // drive asks for: refused, the file untouched.
    assert_int_equal((*d)->truncate(1 << 20), -EPERM);
}

// A raw image only guessed by probing: a write that would make sector 0
// probe as qcow2 is refused, any other write is fine; with format=raw given,
// the same write goes through.
void test_probed_raw_guards_sector0(void **) {
    std::string warning;
    set_warning_handler([&](const std::string &w) { warning = w; });
    auto d = BlockBackend::open("file=" + path);
    set_warning_handler(nullptr);
    assert_true(d.ok());
    assert_non_null(strstr(warning.c_str(), "probing guessed raw"));
    {
        // Read-only, nothing can hit sector 0: silent, as QEMU's raw driver.
        std::string ro_warning;
        set_warning_handler([&](const std::string &w) { ro_warning = w; });
        auto r = BlockBackend::open("file=" + path + ",read-only=on,lock=off");
        set_warning_handler(nullptr);
        assert_true(r.ok());
        assert_true(ro_warning.empty());
    }
    uint8_t sector[512] = {'Q', 'F', 'I', 0xfb, 0, 0, 0, 3};
    assert_int_equal((*d)->pwrite(0, 512, sector), -EPERM);
    assert_int_equal((*d)->pwrite(4, 4, sector + 4), 0);  // not a header by itself
    uint8_t plain[512];
    memset(plain, 0x42, sizeof(plain));
    assert_int_equal((*d)->pwrite(0, 512, plain), 0);
    d->reset();
    auto explicit_raw = BlockBackend::open(drive(""));
    assert_true(explicit_raw.ok());
    assert_int_equal((*explicit_raw)->pwrite(0, 512, sector), 0);
}

// --- options and checks at node paths ------------------------------------------

void expect_open_error(const std::string &spec, const char *message) {
    auto d = BlockBackend::open(spec);
    assert_false(d.ok());
    assert_string_equal(d.status().message().c_str(), message);
}

void test_option_errors(void **) {
    expect_open_error(drive("file.lokc=1"), "Invalid parameter 'file.lokc'");
    expect_open_error(drive("file.aio=nativ"), "Invalid value 'nativ' for parameter 'file.aio'");
    expect_open_error(drive("aio=native"), "aio=native was specified, but it requires cache=none");
    expect_open_error(drive("offset=8M"), "The offset 8388608 is past the end of the file (4194304 bytes)");
    expect_open_error(drive("offset=1M,size=4M"),
                      "The sum of offset (1048576) and size (4194304) is past the end of the file (4194304 bytes)");
    expect_open_error("file=" + path + ",format=qcow3", "Unknown driver 'qcow3'");
}

void test_raw_window(void **) {
    auto d = BlockBackend::open(drive("offset=1M,size=64k"));
    assert_true(d.ok());
    assert_int_equal((*d)->length(), 65536);
    uint8_t buf[512];
    memset(buf, 0x77, sizeof(buf));
    assert_int_equal((*d)->pwrite(0, 512, buf), 0);
    assert_int_equal((*d)->pread(65536 - 256, 512, buf), -EIO);
    d->reset();
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    uint8_t back[512];
    assert_int_equal(pread(fd, back, 512, 1 << 20), 512);
    close(fd);
    assert_int_equal(back[0], 0x77);
    assert_int_equal(back[511], 0x77);
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_fault_injection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_open_changes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_keeps_other_drive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_odirect_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_odirect_native, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_past_end_is_eio, setup, teardown),
        cmocka_unit_test_setup_teardown(test_discard_punches_hole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_probed_raw_guards_sector0, setup, teardown),
        cmocka_unit_test_setup_teardown(test_option_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_window, setup, teardown),
    };
    return cmocka_run_group_tests_name("block", tests, nullptr, nullptr);
}
