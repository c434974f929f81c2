// QEMU's -blockdev option names (block/qemu-options.cpp): each becomes
// miniblock's setting on the node that names it, seen on the opened nodes
// and on the real lock bytes; contradictions are errors with exact texts.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "block/block_int.h"
#include "block/locking/holders.h"
#include "miniblock/block.h"

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

// This process's lock bytes on the image: "node:use/forbid;" per node,
// "drive3.file" as "file".
std::string our_bytes() { return test::our_lock_bytes(path, true); }

std::unique_ptr<BlockBackend> open_ok(const std::string &spec) {
    auto d = BlockBackend::open(spec);
    if (!d.ok()) fail_msg("open(%s): %s", spec.c_str(), d.status().to_string().c_str());
    return std::move(*d);
}

void open_error(const std::string &spec, const std::string &message, const std::string &detail = {}) {
    auto d = BlockBackend::open(spec);
    if (d.ok()) fail_msg("open(%s) succeeded, expected '%s'", spec.c_str(), message.c_str());
    assert_string_equal(d.status().message().c_str(), message.c_str());
    assert_string_equal(d.status().detail().c_str(), detail.c_str());
    assert_string_equal(our_bytes().c_str(), "");  // a failed open holds nothing
}

int setup(void **) {
    path = "/tmp/mb-qemu-options-" + std::to_string(getpid()) + ".img";
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ftruncate(fd, 1 << 20) < 0) return -1;
    close(fd);
    return 0;
}

int teardown(void **) {
    unlink(path.c_str());
    return 0;
}

std::string raw(const std::string &extra) { return "driver=raw,file.filename=" + path + "," + extra; }

void test_force_share(void **) {
    // force-share=on is lock=shared: read-only, it uses R and forbids nothing.
    auto d = open_ok(raw("read-only=on,force-share=on"));
    assert_int_equal((int)d->bs()->lock_mode, (int)qapi::LockMode::Shared);
    assert_int_equal((int)d->bs()->file()->bs->lock_mode, (int)qapi::LockMode::Shared);
    assert_string_equal(our_bytes().c_str(), "file:1/0;");
    d.reset();
    open_error(raw("force-share=on"), "force-share=on can only be used with read-only images");
    open_error(raw("read-only=on,force-share=on,lock=exclusive"),
               "Parameter 'lock=exclusive' conflicts with 'force-share=on'",
               "force-share=on is lock=shared; give one of them");
    // force-share=off changes nothing.
    d.reset();
    d = open_ok(raw("read-only=on,force-share=off"));
    assert_int_equal((int)d->bs()->lock_mode, (int)qapi::LockMode::Auto);
}

void test_locking(void **) {
    // locking=off: no lock on that file node; the format node keeps its mode.
    auto d = open_ok(raw("file.locking=off"));
    assert_int_equal((int)d->bs()->file()->bs->lock_mode, (int)qapi::LockMode::Off);
    assert_string_equal(our_bytes().c_str(), "");
    d.reset();
    d = open_ok(raw("file.locking=on"));
    assert_string_equal(our_bytes().c_str(), "file:3/14;");
    d.reset();
    open_error(raw("file.locking=off,file.lock=exclusive"),
               "Parameter 'file.lock=exclusive' conflicts with 'file.locking=off'",
               "locking=off is lock=off; give one of them");
    open_error(raw("file.locking=on,file.lock=off"), "Parameter 'file.lock=off' conflicts with 'file.locking=on'",
               "locking=on takes locks; give one of them");
    open_error(raw("file.locking=maybe"), "Invalid value 'maybe' for parameter 'file.locking'",
               "Valid values: on, off, auto");
}

void test_cache(void **) {
    auto d = open_ok(raw("cache.direct=on"));
    assert_true(d->bs()->open_flags & BDRV_O_NOCACHE);
    assert_int_equal((int)d->bs()->cache_mode, (int)qapi::CacheMode::None);
    assert_int_equal((int)d->bs()->file()->bs->cache_mode, (int)qapi::CacheMode::None);
    d.reset();
    d = open_ok(raw("cache.no-flush=on"));
    assert_true(d->bs()->open_flags & BDRV_O_NO_FLUSH);
    d.reset();
    d = open_ok(raw("cache.direct=off,cache.no-flush=off"));
    assert_int_equal((int)d->bs()->cache_mode, (int)qapi::CacheMode::Writeback);
    d.reset();
    open_error(raw("cache.direct=on,cache.no-flush=on"),
               "'cache.direct=on' with 'cache.no-flush=on' has no miniblock cache mode",
               "Use cache.direct=on (cache=none) or cache.no-flush=on (cache=unsafe)");
    open_error(raw("cache.direct=maybe"), "Invalid value 'maybe' for parameter 'cache.direct'",
               "Expected a boolean: on, off, true or false");
}

void test_discard_and_detect_zeroes(void **) {
    auto d = open_ok(raw("discard=ignore"));
    assert_true(d->bs()->open_flags & BDRV_O_DISCARD_IGNORE);
    d.reset();
    d = open_ok(raw("discard=on,detect-zeroes=unmap"));
    assert_false(d->bs()->open_flags & BDRV_O_DISCARD_IGNORE);
    assert_true(d->bs()->open_flags & BDRV_O_DETECT_ZEROES);
    assert_true(d->bs()->open_flags & BDRV_O_DETECT_ZEROES_UNMAP);
    // Zeroes written through detect-zeroes read back as zeroes.
    uint8_t z[4096] = {};
    assert_int_equal(d->pwrite(0, sizeof(z), z), 0);
    uint8_t back[4096];
    memset(back, 0xff, sizeof(back));
    assert_int_equal(d->pread(0, sizeof(back), back), 0);
    assert_memory_equal(back, z, sizeof(z));
    d.reset();
    open_error(raw("discard=off,detect-zeroes=unmap"),
               "setting detect-zeroes to unmap is not allowed without setting discard operation to unmap");
}

void test_auto_read_only(void **) {
    // Writable for us: auto-read-only changes nothing.
    auto d = open_ok("driver=file,filename=" + path + ",auto-read-only=on");
    assert_false(d->bs()->read_only);
}

void test_json_blockdev(void **) {
    // A libvirt-style tree opens unchanged.
    std::string j = "json:{\"driver\": \"raw\", \"node-name\": \"fmt\", \"read-only\": false, "
                    "\"discard\": \"unmap\", \"cache\": {\"direct\": false, \"no-flush\": false}, "
                    "\"file\": {\"driver\": \"file\", \"filename\": \"" + path + "\", \"node-name\": \"sto\", "
                    "\"auto-read-only\": true, \"discard\": \"unmap\", \"locking\": \"auto\", "
                    "\"cache\": {\"direct\": false, \"no-flush\": false}}}";
    auto d = open_ok(j);
    assert_string_equal(d->bs()->node_name.c_str(), "fmt");
    assert_string_equal(d->bs()->file()->bs->node_name.c_str(), "sto");
    assert_string_equal(our_bytes().c_str(), "sto:3/14;");
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_force_share, setup, teardown),
        cmocka_unit_test_setup_teardown(test_locking, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_discard_and_detect_zeroes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auto_read_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json_blockdev, setup, teardown),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
