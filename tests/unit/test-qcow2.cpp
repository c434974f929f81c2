// qcow2 driver internals that the tools cannot reach: discard, a tiny L2
// cache under many tables, concurrent requests, and header parsing limits.
// Every image is checked with the driver's own check afterwards (the
// interop tests check with qemu-img).
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "block/aio.h"
#include "block/block_int.h"
#include "block/drivers/qcow2.h"
#include "miniblock/block.h"

// cmocka last: its fail() macro would break the C++ headers.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

extern "C" {
#include <cmocka.h>
}

using namespace mb;

namespace {

std::string tmpdir() {
    static std::string d = [] {
        char t[] = "/tmp/mb-test-qcow2.XXXXXX";
        assert_non_null(mkdtemp(t));
        return std::string(t);
    }();
    return d;
}

std::unique_ptr<BlockBackend> make(const std::string &name, int64_t size, const char *cs,
                                   const std::string &extra = "", const char *backing = nullptr) {
    std::string path = tmpdir() + "/" + name;
    qapi::OptionDict o;
    o.set_str("cluster_size", cs);
    if (backing) {
        o.set_str("backing_file", backing);
        o.set_str("backing_fmt", "raw");
    }
    Status st = bdrv_create("qcow2", path, size, o);
    assert_true(st.ok());
    auto blk = BlockBackend::open("driver=qcow2,file.filename=" + path + extra);
    if (!blk.ok()) fprintf(stderr, "%s\n", blk.status().to_string().c_str());
    assert_true(blk.ok());
    return std::move(*blk);
}

void expect_clean(BlockBackend &blk) {
    qcow2::CheckResult r;
    assert_true(qcow2_check(blk.bs(), false, &r).ok());
    for (auto &m : r.messages) fprintf(stderr, "%s\n", m.c_str());
    assert_int_equal(r.corruptions, 0);
    assert_int_equal(r.leaks, 0);
    assert_int_equal(r.check_errors, 0);
}

void expect_pattern(BlockBackend &blk, int64_t off, int64_t len, uint8_t pat) {
    std::vector<uint8_t> b(len);
    assert_int_equal(blk.pread(off, len, b.data()), 0);
    for (int64_t i = 0; i < len; i++) {
        if (b[i] != pat) {
            fprintf(stderr, "byte %lld: %u, expected %u\n", (long long)(off + i), b[i], pat);
            fail();
        }
    }
}

void fill(BlockBackend &blk, int64_t off, int64_t len, uint8_t pat) {
    std::vector<uint8_t> b(len, pat);
    assert_int_equal(blk.pwrite(off, len, b.data()), 0);
}

void test_discard(void **) {
    auto blk = make("d.qcow2", 4 << 20, "64k");
    fill(*blk, 0, 1 << 20, 0x11);
    assert_int_equal(blk->pdiscard(100000, 600000), 0);  // whole clusters 131072..655360
    expect_pattern(*blk, 0, 131072, 0x11);
    expect_pattern(*blk, 131072, 655360 - 131072, 0);
    expect_pattern(*blk, 655360, (1 << 20) - 655360, 0x11);
    expect_clean(*blk);
    // Rewriting a discarded range allocates again, cleanly.
    fill(*blk, 200000, 1000, 0x22);
    expect_pattern(*blk, 200000, 1000, 0x22);
    expect_pattern(*blk, 196608, 200000 - 196608, 0);
    expect_clean(*blk);
}

void test_discard_over_backing(void **) {
    std::string base = tmpdir() + "/base.raw";
    assert_true(bdrv_create("raw", base, 1 << 20, qapi::OptionDict()).ok());
    {
        auto b = BlockBackend::open("driver=raw,file.filename=" + base);
        assert_true(b.ok());
        fill(**b, 0, 1 << 20, 0x33);
    }
    auto blk = make("db.qcow2", 1 << 20, "64k", "", "base.raw");
    expect_pattern(*blk, 0, 1 << 20, 0x33);
    fill(*blk, 0, 256 << 10, 0x44);
    // v3 with a backing file: discarded clusters read as zeroes, not as the base.
    assert_int_equal(blk->pdiscard(0, 512 << 10), 0);
    expect_pattern(*blk, 0, 512 << 10, 0);
    expect_pattern(*blk, 512 << 10, 512 << 10, 0x33);
    expect_clean(*blk);
}

void test_tiny_l2_cache(void **) {
    // 512-byte clusters: one L2 table maps 32 KiB; the cache holds one.
    auto blk = make("c.qcow2", 8 << 20, "512", ",l2-cache-size=512");
    for (int i = 0; i < 64; i++) fill(*blk, int64_t(i) * 100000 + 7, 3000, uint8_t(i + 1));
    for (int i = 63; i >= 0; i--) expect_pattern(*blk, int64_t(i) * 100000 + 7, 3000, uint8_t(i + 1));
    expect_clean(*blk);
}

struct Conc {
    BlockBackend *blk;
    int done = 0;
    int errors = 0;
};

Task<void> writer(Conc *c, int i) {
    std::vector<uint8_t> b(70000, uint8_t(i + 1));
    // Neighbours share clusters at both ends: concurrent copy-on-write.
    int r = co_await c->blk->co_pwrite(int64_t(i) * 70000, 70000, b.data());
    if (r < 0) c->errors++;
    c->done++;
}

Task<void> reader(Conc *c, int64_t off) {
    std::vector<uint8_t> b(65536);
    int r = co_await c->blk->co_pread(off, 65536, b.data());
    if (r < 0) c->errors++;
    c->done++;
}

void test_concurrent(void **) {
    auto blk = make("cc.qcow2", 8 << 20, "4k");
    Conc c{blk.get()};
    const int n = 64;
    for (int i = 0; i < n; i++) {
        spawn(writer(&c, i));
        spawn(reader(&c, int64_t(i) * 65536));
    }
    while (c.done < 2 * n) AioContext::main().poll(true);
    assert_int_equal(c.errors, 0);
    for (int i = 0; i < n; i++) expect_pattern(*blk, int64_t(i) * 70000, 70000, uint8_t(i + 1));
    expect_pattern(*blk, int64_t(n) * 70000, (8 << 20) - int64_t(n) * 70000, 0);
    expect_clean(*blk);
}

void test_zero_writes(void **) {
    auto blk = make("z.qcow2", 1 << 20, "4k");
    fill(*blk, 0, 1 << 20, 0x55);
    // Partial clusters at both ends are written as data, the middle flagged.
    assert_int_equal(blk->pwrite_zeroes(1000, 20000), 0);
    expect_pattern(*blk, 0, 1000, 0x55);
    expect_pattern(*blk, 1000, 20000, 0);
    expect_pattern(*blk, 21000, 10000, 0x55);
    int64_t pnum = 0, map = 0;
    BlockDriverState *file = nullptr;
    int st = sync_wait(blk->bs()->drv->co_block_status(blk->bs(), 4096, 8192, &pnum, &map, &file));
    assert_int_equal(st, BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED);
    assert_int_equal(pnum, 8192);
    expect_clean(*blk);
}

void test_parse_limits(void **) {
    std::vector<uint8_t> h(4096, 0);
    qcow2::put_be32(&h[0], qcow2::QCOW2_MAGIC);
    qcow2::put_be32(&h[4], 3);
    qcow2::put_be32(&h[20], 12);
    qcow2::put_be64(&h[24], 1 << 20);
    qcow2::put_be32(&h[36], 1);
    qcow2::put_be64(&h[40], 3 * 4096);
    qcow2::put_be64(&h[48], 4096);
    qcow2::put_be32(&h[56], 1);
    qcow2::put_be32(&h[96], 4);
    qcow2::put_be32(&h[100], 112);
    qcow2::ParsedImage img;
    assert_true(qcow2::parse_header(h.data(), h.size(), 4 * 4096, &img).ok());
    // The same header in a file too short for its tables.
    qcow2::ParsedImage img2;
    Status st = qcow2::parse_header(h.data(), h.size(), 2 * 4096, &img2);
    assert_false(st.ok());
    assert_string_equal(st.message().c_str(),
                        "Active L1 table (offset 0x3000, 8 bytes) lies past the end of the file (8192 bytes)");
    // Shorter buffers than the fixed header never read past their end.
    for (size_t len = 0; len < 112; len++) {
        qcow2::ParsedImage i3;
        assert_false(qcow2::parse_header(h.data(), len, len, &i3).ok());
    }
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_discard),
        cmocka_unit_test(test_discard_over_backing),
        cmocka_unit_test(test_tiny_l2_cache),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_zero_writes),
        cmocka_unit_test(test_parse_limits),
    };
    int r = cmocka_run_group_tests(tests, nullptr, nullptr);
    std::string cmd = "rm -rf " + tmpdir();
    if (system(cmd.c_str()) != 0) r = r ? r : 1;
    return r;
}
