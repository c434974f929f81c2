// The NBD wire format on byte strings: the handshake against scripted
// servers, and the reply parser against good and hostile reply streams.
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "block/drivers/nbd-proto.h"

// cmocka last: its fail() macro would break the C++ headers.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
extern "C" {
#include <cmocka.h>
}

using namespace mb;
using namespace mb::nbd;

namespace {

// --- building server bytes ---------------------------------------------------

struct Bytes {
    std::vector<uint8_t> v;
    Bytes &u16(uint16_t x) { size_t n = v.size(); v.resize(n + 2); put16(&v[n], x); return *this; }
    Bytes &u32(uint32_t x) { size_t n = v.size(); v.resize(n + 4); put32(&v[n], x); return *this; }
    Bytes &u64(uint64_t x) { size_t n = v.size(); v.resize(n + 8); put64(&v[n], x); return *this; }
    Bytes &str(const std::string &s) { v.insert(v.end(), s.begin(), s.end()); return *this; }
    Bytes &fill(uint8_t b, size_t n) { v.insert(v.end(), n, b); return *this; }
    Bytes &opt_reply(uint32_t opt, uint32_t type, const Bytes &data = {}) {
        u64(REP_MAGIC).u32(opt).u32(type).u32(uint32_t(data.v.size()));
        v.insert(v.end(), data.v.begin(), data.v.end());
        return *this;
    }
};

// A server that has said everything in `in`; records what the client sent.
struct Script : Transport {
    std::vector<uint8_t> in, out;
    size_t pos = 0;
    int read_exact(void *buf, size_t len) override {
        if (in.size() - pos < len) return -EPIPE;
        memcpy(buf, in.data() + pos, len);
        pos += len;
        return 0;
    }
    int write_all(const void *buf, size_t len) override {
        auto *p = static_cast<const uint8_t *>(buf);
        out.insert(out.end(), p, p + len);
        return 0;
    }
};

Bytes greeting(uint16_t flags = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES) {
    Bytes b;
    b.u64(NBDMAGIC).u64(IHAVEOPT).u16(flags);
    return b;
}

Bytes info_export(uint64_t size, uint16_t flags) {
    Bytes b;
    b.u16(INFO_EXPORT).u64(size).u16(flags);
    return b;
}

Bytes info_block(uint32_t mn, uint32_t pref, uint32_t mx) {
    Bytes b;
    b.u16(INFO_BLOCK_SIZE).u32(mn).u32(pref).u32(mx);
    return b;
}

Result<ExportInfo> run(const Bytes &server, const std::string &name = "disk", Script *keep = nullptr) {
    Script s;
    s.in = server.v;
    auto r = handshake(s, name);
    if (keep) *keep = s;
    return r;
}

void assert_error(const Result<ExportInfo> &r, const char *msg) {
    assert_false(r.ok());
    assert_string_equal(r.status().message().c_str(), msg);
}

// --- handshake ------------------------------------------------------------------

void test_handshake_go(void **) {
    Bytes b = greeting();
    b.opt_reply(OPT_STRUCTURED_REPLY, REP_ACK);
    b.opt_reply(OPT_GO, REP_INFO, info_block(512, 4096, 1 << 20));
    b.opt_reply(OPT_GO, REP_INFO, info_export(1 << 30, TF_HAS_FLAGS | TF_SEND_FLUSH));
    b.opt_reply(OPT_GO, REP_INFO, Bytes().u16(2).str("a description we ignore"));
    b.opt_reply(OPT_GO, REP_ACK);
    Script s;
    auto r = run(b, "disk", &s);
    assert_true(r.ok());
    assert_int_equal(r->size, 1 << 30);
    assert_int_equal(r->flags, TF_HAS_FLAGS | TF_SEND_FLUSH);
    assert_int_equal(r->min_block, 512);
    assert_int_equal(r->pref_block, 4096);
    assert_int_equal(r->max_block, 1 << 20);
    assert_true(r->structured);
    assert_true(r->used_go);
    // What the client sent: flags, structured-reply option, then GO with
    // the name and one information request (block sizes).
    Bytes want;
    want.u32(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    want.u64(IHAVEOPT).u32(OPT_STRUCTURED_REPLY).u32(0);
    want.u64(IHAVEOPT).u32(OPT_GO).u32(4 + 4 + 4).u32(4).str("disk").u16(1).u16(INFO_BLOCK_SIZE);
    assert_int_equal(s.out.size(), want.v.size());
    assert_memory_equal(s.out.data(), want.v.data(), want.v.size());
}

void test_handshake_defaults_and_clamp(void **) {
    Bytes b = greeting();
    b.opt_reply(OPT_STRUCTURED_REPLY, REP_ERR_UNSUP);
    b.opt_reply(OPT_GO, REP_INFO, info_block(1, 4096, 0xffffffffu));
    b.opt_reply(OPT_GO, REP_INFO, info_export(4096, 0));
    b.opt_reply(OPT_GO, REP_ACK);
    auto r = run(b);
    assert_true(r.ok());
    assert_false(r->structured);
    assert_int_equal(r->max_block, DEFAULT_MAX_BLOCK);  // our own bound
}

void test_handshake_export_name_fallback(void **) {
    for (bool no_zeroes : {true, false}) {
        Bytes b = greeting(FLAG_FIXED_NEWSTYLE | (no_zeroes ? FLAG_NO_ZEROES : 0));
        b.opt_reply(OPT_STRUCTURED_REPLY, REP_ACK);
        b.opt_reply(OPT_GO, REP_ERR_UNSUP);
        b.u64(123456).u16(TF_HAS_FLAGS | TF_READ_ONLY);
        if (!no_zeroes) b.fill(0, 124);
        Script s;
        auto r = run(b, "x", &s);
        assert_true(r.ok());
        assert_int_equal(s.pos, s.in.size());  // the zeroes were consumed
        assert_false(r->used_go);
        assert_int_equal(r->size, 123456);
        assert_int_equal(r->flags, TF_HAS_FLAGS | TF_READ_ONLY);
        assert_int_equal(r->min_block, 1);
        // The last thing sent is NBD_OPT_EXPORT_NAME "x".
        Bytes tail;
        tail.u64(IHAVEOPT).u32(OPT_EXPORT_NAME).u32(1).str("x");
        assert_memory_equal(s.out.data() + s.out.size() - tail.v.size(), tail.v.data(), tail.v.size());
    }
}

void test_handshake_errors(void **) {
    Bytes b;
    b.str("HTTP/1.1 200 OK\r\n\r\n");
    assert_error(run(b), "The server is not an NBD server (bad magic 0x485454502f312e31)");

    b = Bytes();
    b.u64(NBDMAGIC).u64(OLDSTYLE_MAGIC).fill(0, 10);
    assert_error(run(b), "The NBD server speaks the oldstyle protocol, which is not supported");

    assert_error(run(greeting(0)), "The NBD server does not support the fixed newstyle handshake");
    assert_error(run(greeting()), "The NBD server closed the connection during the handshake");

    b = greeting();
    b.opt_reply(OPT_STRUCTURED_REPLY, REP_ACK);
    b.opt_reply(OPT_GO, REP_ERR_UNKNOWN, Bytes().str("no\x01such"));
    auto r = run(b);
    assert_error(r, "The NBD server has no export 'disk'");
    assert_string_equal(r.status().detail().c_str(), "Server message: no?such");

    b = greeting();
    b.opt_reply(OPT_STRUCTURED_REPLY, REP_ACK);
    b.opt_reply(OPT_GO, REP_ACK);
    assert_error(run(b), "Protocol violation by the NBD server: NBD_OPT_GO acknowledged without NBD_INFO_EXPORT");

    // An option reply announcing a huge payload is refused before any read.
    b = greeting();
    b.u64(REP_MAGIC).u32(OPT_STRUCTURED_REPLY).u32(REP_ACK).u32(0xfffffff0u);
    assert_error(run(b), "Protocol violation by the NBD server: option reply of 4294967280 bytes");

    b = greeting();
    b.opt_reply(OPT_GO, REP_ACK);
    assert_error(run(b), "Protocol violation by the NBD server: option reply for option 7 instead of 8");

    struct { uint32_t mn, pref, mx; const char *msg; } bad[] = {
        {3, 4096, 65536, "Protocol violation by the NBD server: minimum block size 3"},
        {1 << 17, 1 << 17, 1 << 20, "Protocol violation by the NBD server: minimum block size 131072"},
        {512, 256, 65536, "Protocol violation by the NBD server: preferred block size 256"},
        {512, 4096, 1000, "Protocol violation by the NBD server: maximum block size 1000"},
    };
    for (auto &x : bad) {
        b = greeting();
        b.opt_reply(OPT_STRUCTURED_REPLY, REP_ACK);
        b.opt_reply(OPT_GO, REP_INFO, info_block(x.mn, x.pref, x.mx));
        b.opt_reply(OPT_GO, REP_INFO, info_export(1 << 20, 0));
        b.opt_reply(OPT_GO, REP_ACK);
        assert_error(run(b), x.msg);
    }
    b = greeting();
    b.opt_reply(OPT_STRUCTURED_REPLY, REP_ACK);
    b.opt_reply(OPT_GO, REP_INFO, Bytes().u16(INFO_EXPORT).u64(1));
    assert_error(run(b), "Protocol violation by the NBD server: NBD_INFO_EXPORT of 10 bytes");
}

// --- replies ----------------------------------------------------------------------

struct Harness {
    std::vector<ReplyTarget> reqs;
    std::vector<uint64_t> done;
    ReplyParser parser;
    explicit Harness(bool structured)
        : parser(
              structured,
              [this](uint64_t c) -> ReplyTarget * {
                  for (uint64_t d : done)
                      if (d == c) return nullptr;  // finished: unknown now
                  return c < reqs.size() ? &reqs[c] : nullptr;
              },
              [this](uint64_t c, ReplyTarget *) { done.push_back(c); }) {}
    // Request `cookie` is a read of [off, off + len) into buf.
    void read(uint64_t cookie, uint64_t off, uint32_t len, uint8_t *buf) {
        if (reqs.size() <= cookie) reqs.resize(cookie + 1);
        reqs[cookie].cmd = CMD_READ;
        reqs[cookie].offset = off;
        reqs[cookie].length = len;
        reqs[cookie].buf = buf;
    }
    void write(uint64_t cookie) {
        if (reqs.size() <= cookie) reqs.resize(cookie + 1);
        reqs[cookie].cmd = CMD_WRITE;
        reqs[cookie].offset = 0;
        reqs[cookie].length = 512;
    }
    // Feeds in pieces of `step` bytes.
    void feed(const Bytes &b, size_t step = SIZE_MAX) {
        for (size_t i = 0; i < b.v.size() && !parser.failed(); i += step) {
            size_t n = std::min(step, b.v.size() - i);
            parser.feed(b.v.data() + i, n);
        }
    }
};

Bytes chunk(uint16_t flags, uint16_t type, uint64_t cookie, const Bytes &payload) {
    Bytes b;
    b.u32(STRUCTURED_REPLY_MAGIC).u16(flags).u16(type).u64(cookie).u32(uint32_t(payload.v.size()));
    b.v.insert(b.v.end(), payload.v.begin(), payload.v.end());
    return b;
}

Bytes cat(std::initializer_list<Bytes> parts) {
    Bytes b;
    for (auto &p : parts) b.v.insert(b.v.end(), p.v.begin(), p.v.end());
    return b;
}

void test_simple_replies(void **) {
    for (size_t step : {size_t(1), size_t(7), SIZE_MAX}) {
        Harness h(false);
        uint8_t buf[8];
        memset(buf, 0xff, sizeof(buf));
        h.read(1, 100, 8, buf);
        h.write(2);
        h.write(3);
        Bytes b;
        b.u32(SIMPLE_REPLY_MAGIC).u32(0).u64(2);                     // write ok
        b.u32(SIMPLE_REPLY_MAGIC).u32(0).u64(1).str("abcdefgh");     // read with data
        b.u32(SIMPLE_REPLY_MAGIC).u32(28).u64(3);                    // ENOSPC
        h.feed(b, step);
        assert_false(h.parser.failed());
        assert_true(h.parser.idle());
        assert_int_equal(h.done.size(), 3);
        assert_memory_equal(buf, "abcdefgh", 8);
        assert_int_equal(h.reqs[2].error, 0);
        assert_int_equal(h.reqs[1].error, 0);
        assert_int_equal(h.reqs[3].error, -ENOSPC);
    }
}

void test_structured_read(void **) {
    for (size_t step : {size_t(1), size_t(5), SIZE_MAX}) {
        Harness h(true);
        uint8_t buf[16];
        memset(buf, 0xff, sizeof(buf));
        h.read(7, 1000, 16, buf);
        // Out of order: data for the second half, a hole, data for the start.
        Bytes b = cat({chunk(0, REPLY_TYPE_OFFSET_DATA, 7, Bytes().u64(1008).str("ABCDEFGH")),
                       chunk(0, REPLY_TYPE_OFFSET_HOLE, 7, Bytes().u64(1004).u32(4)),
                       chunk(REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, 7, Bytes().u64(1000).str("wxyz"))});
        h.feed(b, step);
        assert_false(h.parser.failed());
        assert_int_equal(h.done.size(), 1);
        assert_int_equal(h.reqs[7].error, 0);
        assert_memory_equal(buf, "wxyz\0\0\0\0ABCDEFGH", 16);
    }
}

void test_structured_errors(void **) {
    Harness h(true);
    uint8_t buf[16];
    h.read(1, 0, 16, buf);
    h.write(2);
    h.read(3, 0, 16, buf);
    h.read(4, 0, 16, buf);
    Bytes b = cat({
        // An error chunk with a message, then NONE with done.
        chunk(0, REPLY_TYPE_ERROR, 1, Bytes().u32(5).u16(4).str("oops")),
        chunk(REPLY_FLAG_DONE, REPLY_TYPE_NONE, 1, Bytes()),
        // A write answered by a chunk: ENOSPC without a message.
        chunk(REPLY_FLAG_DONE, REPLY_TYPE_ERROR, 2, Bytes().u32(28).u16(0)),
        // Error at an offset in the read; unknown errno counts as EINVAL.
        chunk(REPLY_FLAG_DONE, REPLY_TYPE_ERROR_OFFSET, 3, Bytes().u32(9999).u16(1).str("x").u64(8)),
        // A read whose chunks do not cover it.
        chunk(REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, 4, Bytes().u64(0).str("12345678")),
    });
    h.feed(b);
    assert_false(h.parser.failed());
    assert_int_equal(h.done.size(), 4);
    assert_int_equal(h.reqs[1].error, -EIO);
    assert_string_equal(h.reqs[1].message.c_str(), "the server reported: oops");
    assert_int_equal(h.reqs[2].error, -ENOSPC);
    assert_true(h.reqs[2].message.empty());
    assert_int_equal(h.reqs[3].error, -EINVAL);
    assert_int_equal(h.reqs[4].error, -EIO);
    assert_string_equal(h.reqs[4].message.c_str(), "the server's reply covers 8 of 16 bytes read");
}

// One hostile stream: the parser must stop with `why` and complete nothing.
void expect_violation(bool structured, const Bytes &b, const char *why) {
    for (size_t step : {size_t(1), SIZE_MAX}) {
        Harness h(structured);
        uint8_t buf[16];
        memset(buf, 0xee, sizeof(buf));
        h.read(1, 1000, 16, buf);
        h.write(2);
        h.feed(b, step);
        assert_true(h.parser.failed());
        assert_string_equal(h.parser.error().c_str(), why);
        assert_int_equal(h.done.size(), 0);
        // Nothing was written outside the read's own range, and nothing
        // at all for a refused chunk header.
        for (uint8_t x : buf) assert_int_equal(x, 0xee);
    }
}

void test_violations(void **) {
    expect_violation(true, Bytes().u32(0x12345678).fill(0, 12), "a reply with bad magic 0x12345678");
    expect_violation(false, chunk(1, REPLY_TYPE_NONE, 1, Bytes()), "a structured reply, which was not negotiated");
    expect_violation(true, Bytes().u32(SIMPLE_REPLY_MAGIC).u32(0).u64(99), "a reply to unknown cookie 99");
    expect_violation(true, chunk(1, REPLY_TYPE_NONE, 42, Bytes()), "a reply chunk for unknown cookie 42");
    // Huge lengths are refused from the header, before any payload.
    Bytes huge;
    huge.u32(STRUCTURED_REPLY_MAGIC).u16(1).u16(REPLY_TYPE_OFFSET_DATA).u64(1).u32(0xffffffffu);
    expect_violation(true, huge, "a data chunk of 4294967295 bytes for a read of 16");
    Bytes huge_err;
    huge_err.u32(STRUCTURED_REPLY_MAGIC).u16(1).u16(REPLY_TYPE_ERROR).u64(1).u32(1 << 30);
    expect_violation(true, huge_err, "an error chunk of 1073741824 bytes");
    expect_violation(true, chunk(1, REPLY_TYPE_OFFSET_DATA, 1, Bytes().u64(1010).str("12345678")),
                     "a data chunk at offset 1010 (8 bytes) outside the read at 1000 (16 bytes)");
    expect_violation(true, chunk(1, REPLY_TYPE_OFFSET_DATA, 1, Bytes().u64(999).str("1")),
                     "a data chunk at offset 999 (1 bytes) outside the read at 1000 (16 bytes)");
    expect_violation(true, chunk(1, REPLY_TYPE_OFFSET_HOLE, 1, Bytes().u64(0xfffffffffffffff8ull).u32(16)),
                     "a hole chunk at offset 18446744073709551608 (16 bytes) outside the read at 1000 (16 bytes)");
    expect_violation(true, chunk(1, REPLY_TYPE_OFFSET_HOLE, 1, Bytes().u64(1000).u32(0)),
                     "a hole chunk at offset 1000 (0 bytes) outside the read at 1000 (16 bytes)");
    expect_violation(true, chunk(1, REPLY_TYPE_OFFSET_DATA, 2, Bytes().u64(0).str("x")),
                     "a data chunk in the reply to a request that is not a read");
    expect_violation(true, chunk(1, REPLY_TYPE_ERROR, 1, Bytes().u32(5).u16(100).str("short")),
                     "an error chunk whose message (100 bytes) exceeds the chunk (11 bytes)");
    expect_violation(true, chunk(1, REPLY_TYPE_ERROR, 1, Bytes().u32(0).u16(0)), "an error chunk with error 0");
    expect_violation(true, chunk(1, REPLY_TYPE_ERROR_OFFSET, 1, Bytes().u32(5).u16(0).u64(5000)),
                     "an error offset 5000 outside the request");
    expect_violation(true, chunk(0, REPLY_TYPE_NONE, 1, Bytes()),
                     "an NBD_REPLY_TYPE_NONE chunk with a payload or without the done flag");
    expect_violation(true, chunk(1, REPLY_TYPE_BLOCK_STATUS, 1, Bytes().u32(0)), "a reply chunk of unknown type 5");
}

void test_overlap(void **) {
    Harness h(true);
    uint8_t buf[16];
    h.read(1, 0, 16, buf);
    h.feed(cat({chunk(0, REPLY_TYPE_OFFSET_DATA, 1, Bytes().u64(4).str("12345678")),
                chunk(1, REPLY_TYPE_OFFSET_HOLE, 1, Bytes().u64(0).u32(5))}));
    assert_true(h.parser.failed());
    assert_string_equal(h.parser.error().c_str(), "overlapping chunks in the reply to one read");
    Harness g(true);
    g.read(1, 0, 16, buf);
    g.feed(cat({chunk(0, REPLY_TYPE_OFFSET_DATA, 1, Bytes().u64(4).str("12345678")),
                chunk(1, REPLY_TYPE_OFFSET_HOLE, 1, Bytes().u64(11).u32(2))}));
    assert_true(g.parser.failed());
}

void test_finished_cookie_is_unknown(void **) {
    // A second reply to a finished request is a violation, not a write into
    // a buffer that now belongs to someone else.
    Harness h(true);
    uint8_t buf[4];
    h.read(1, 0, 4, buf);
    h.feed(cat({chunk(1, REPLY_TYPE_OFFSET_DATA, 1, Bytes().u64(0).str("abcd")),
                chunk(1, REPLY_TYPE_OFFSET_DATA, 1, Bytes().u64(0).str("WXYZ"))}));
    assert_true(h.parser.failed());
    assert_memory_equal(buf, "abcd", 4);
}

void test_encode_request(void **) {
    uint8_t b[REQUEST_SIZE];
    encode_request(b, CMD_FLAG_FUA, CMD_WRITE, 0x0102030405060708ull, 4096, 512);
    const uint8_t want[REQUEST_SIZE] = {0x25, 0x60, 0x95, 0x13, 0, 1, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8,
                                        0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 2, 0};
    assert_memory_equal(b, want, REQUEST_SIZE);
    assert_int_equal(nbd_errno_to_local(1), EPERM);
    assert_int_equal(nbd_errno_to_local(108), ESHUTDOWN);
    assert_int_equal(nbd_errno_to_local(4242), EINVAL);
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_go),
        cmocka_unit_test(test_handshake_defaults_and_clamp),
        cmocka_unit_test(test_handshake_export_name_fallback),
        cmocka_unit_test(test_handshake_errors),
        cmocka_unit_test(test_simple_replies),
        cmocka_unit_test(test_structured_read),
        cmocka_unit_test(test_structured_errors),
        cmocka_unit_test(test_violations),
        cmocka_unit_test(test_overlap),
        cmocka_unit_test(test_finished_cookie_is_unknown),
        cmocka_unit_test(test_encode_request),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
