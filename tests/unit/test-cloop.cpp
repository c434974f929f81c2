// The cloop parser at its boundaries: each limit accepted exactly at the
// limit and refused one step past it, with the exact message; inflation of
// good, short, long and corrupt streams.  Images are built in memory.
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "block/drivers/cloop.h"

// cmocka last: its fail() macro would break the C++ headers.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
extern "C" {
#include <cmocka.h>
}

using namespace mb::cloop;

namespace {

void put32(std::vector<uint8_t> &v, size_t at, uint32_t x) {
    for (int i = 0; i < 4; i++) v[at + i] = uint8_t(x >> (24 - 8 * i));
}
void put64(std::vector<uint8_t> &v, size_t at, uint64_t x) {
    put32(v, at, uint32_t(x >> 32));
    put32(v, at + 4, uint32_t(x));
}

std::vector<uint8_t> header(uint32_t block_size, uint32_t n_blocks) {
    std::vector<uint8_t> v(kHeaderSize, 0);
    const char pre[] = "#!/bin/sh\n#V2.0 Format\n";
    memcpy(v.data(), pre, sizeof pre - 1);
    put32(v, 128, block_size);
    put32(v, 132, n_blocks);
    return v;
}

// An image of n_blocks blocks of `fill` bytes, compressed.
std::vector<uint8_t> image(uint32_t block_size, uint32_t n_blocks, uint8_t fill = 0x42) {
    std::vector<uint8_t> v = header(block_size, n_blocks);
    v.resize(kHeaderSize + 8 * (n_blocks + 1));
    std::vector<uint8_t> plain(block_size, fill), z(compressBound(block_size));
    for (uint32_t i = 0; i < n_blocks; i++) {
        put64(v, kHeaderSize + 8 * i, v.size());
        uLongf zlen = z.size();
        compress(z.data(), &zlen, plain.data(), plain.size());
        v.insert(v.end(), z.begin(), z.begin() + zlen);
    }
    put64(v, kHeaderSize + 8 * n_blocks, v.size());
    return v;
}

void expect_error(const mb::Status &st, const char *message) {
    assert_false(st.ok());
    assert_string_equal(st.message().c_str(), message);
}

void test_good_image(void **) {
    auto v = image(4096, 3);
    Layout l;
    mb::Status st = parse_image(v.data(), v.size(), &l);
    assert_true(st.ok());
    assert_int_equal(l.block_size, 4096);
    assert_int_equal(l.n_blocks, 3);
    assert_int_equal(l.virtual_size(), 3 * 4096);
    std::vector<uint8_t> out(4096);
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(inflate_block(v.data() + l.offsets[i], l.offsets[i + 1] - l.offsets[i], out.data(), 4096), 0);
        assert_true(out == std::vector<uint8_t>(4096, 0x42));
    }
}

void test_empty_image(void **) {
    auto v = image(512, 0);
    Layout l;
    assert_true(parse_image(v.data(), v.size(), &l).ok());
    assert_int_equal(l.virtual_size(), 0);
}

void test_block_size_limits(void **) {
    Layout l;
    auto h = header(kMaxBlockSize, 0);
    assert_true(parse_header(h.data(), h.size(), INT64_MAX, &l).ok());
    h = header(kMaxBlockSize + 512, 0);
    expect_error(parse_header(h.data(), h.size(), INT64_MAX, &l), "block_size 67109376 must be 64 MiB or less");
    h = header(512, 0);
    assert_true(parse_header(h.data(), h.size(), INT64_MAX, &l).ok());
    h = header(513, 0);
    expect_error(parse_header(h.data(), h.size(), INT64_MAX, &l), "block_size 513 must be a multiple of 512");
    h = header(0, 0);
    expect_error(parse_header(h.data(), h.size(), INT64_MAX, &l), "block_size cannot be zero");
}

void test_n_blocks_limits(void **) {
    Layout l;
    auto h = header(512, 67108863);  // a table of exactly 512 MiB
    assert_true(parse_header(h.data(), h.size(), INT64_MAX, &l).ok());
    h = header(512, 67108864);
    mb::Status st = parse_header(h.data(), h.size(), INT64_MAX, &l);
    expect_error(st, "n_blocks 67108864 needs too many offsets");
    assert_string_equal(st.detail().c_str(),
                        "The offsets table is limited to 512 MiB (n_blocks 67108863); try a larger block size");
    // The table must be in the file: 136 + 8 * 11 = 224 bytes.
    h = header(512, 10);
    assert_true(parse_header(h.data(), h.size(), 224, &l).ok());
    expect_error(parse_header(h.data(), h.size(), 223, &l),
                 "Offsets table of n_blocks 10 ends at byte 224, past the end of the file (223 bytes)");
}

void test_short_and_version(void **) {
    Layout l;
    auto v = image(512, 1);
    expect_error(parse_image(v.data(), 135, &l), "File of 135 bytes is too short for a cloop header");
    memcpy(v.data() + 12, "3.0", 3);
    mb::Status st = parse_image(v.data(), v.size(), &l);
    expect_error(st, "Unsupported cloop version 'V3.0'");
    assert_int_equal(st.err(), ENOTSUP);
    // No version line at all: accepted, as QEMU accepts it.
    memset(v.data(), 0, 128);
    assert_true(parse_image(v.data(), v.size(), &l).ok());
}

void test_offsets(void **) {
    Layout l;
    auto v = image(512, 2);  // table ends at 160
    auto w = v;
    put64(w, kHeaderSize, 159);
    expect_error(parse_image(w.data(), w.size(), &l),
                 "Offset 0 (159) lies inside the header or the offsets table (which end at 160)");
    w = v;
    put64(w, kHeaderSize + 8, 160);  // block 0 empty
    expect_error(parse_image(w.data(), w.size(), &l), "Offsets not increasing at index 1 (160 after 160)");
    w = v;
    put64(w, kHeaderSize + 16, w.size() + 1);
    expect_error(parse_image(w.data(), w.size(), &l),
                 ("Offset 2 (" + std::to_string(w.size() + 1) + ") is past the end of the file (" +
                  std::to_string(w.size()) + " bytes)").c_str());
}

void test_compressed_bound(void **) {
    // Block 0 exactly at the bound (512 + 0 + 16 = 528 bytes), then one more.
    Layout l;
    auto v = header(512, 1);
    v.resize(152);
    put64(v, kHeaderSize, 152);
    put64(v, kHeaderSize + 8, 152 + 528);
    v.resize(152 + 528 + 1);
    assert_true(parse_image(v.data(), v.size(), &l).ok());
    assert_int_equal(l.max_compressed, 528);
    put64(v, kHeaderSize + 8, 152 + 529);
    expect_error(parse_image(v.data(), v.size(), &l),
                 "Compressed block 0 of 529 bytes exceeds the bound of 528 bytes for block_size 512");
}

void test_inflate_errors(void **) {
    std::vector<uint8_t> plain(1024, 7), z(compressBound(1024)), out(1024);
    uLongf zlen = z.size();
    compress(z.data(), &zlen, plain.data(), plain.size());
    assert_int_equal(inflate_block(z.data(), zlen, out.data(), 1024), 0);
    assert_int_equal(inflate_block(z.data(), zlen - 1, out.data(), 1024), -EIO);  // short
    assert_int_equal(inflate_block(z.data(), zlen, out.data(), 512), -EIO);       // longer than a block
    std::vector<uint8_t> small(512), zs(compressBound(512));
    uLongf zslen = zs.size();
    compress(zs.data(), &zslen, small.data(), small.size());
    assert_int_equal(inflate_block(zs.data(), zslen, out.data(), 1024), -EIO);    // shorter than a block
    z[zlen - 1] ^= 1;                                                             // bad checksum
    assert_int_equal(inflate_block(z.data(), zlen, out.data(), 1024), -EIO);
    assert_int_equal(inflate_block(z.data(), 0, out.data(), 1024), -EIO);
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_image),      cmocka_unit_test(test_empty_image),
        cmocka_unit_test(test_block_size_limits), cmocka_unit_test(test_n_blocks_limits),
        cmocka_unit_test(test_short_and_version), cmocka_unit_test(test_offsets),
        cmocka_unit_test(test_compressed_bound), cmocka_unit_test(test_inflate_errors),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
