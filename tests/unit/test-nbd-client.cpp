// The NBD connection of the nbd plugin on the event loop (through the
// driver ABI's fd watch and timers), against a server played by the test on
// the other end of a socketpair: several requests in flight, replies in any
// order dispatched by cookie, a violation failing everything in flight and
// everything after, a silent server timing out, a write answered before
// its payload was all sent.
#include <sys/socket.h>
#include <unistd.h>

#include <fcntl.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "block/aio.h"
#include "block/drivers/nbd-client.h"
#include "block/warn.h"

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

std::vector<std::string> warnings;

struct Pair {
    std::shared_ptr<Client> client;
    int server = -1;
    Pair(bool structured, int timeout_s = 30) {
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        ExportInfo info;
        info.size = 1 << 20;
        info.flags = TF_HAS_FLAGS | TF_SEND_FLUSH;
        info.structured = structured;
        // The client's end is non-blocking, as after a handshake.
        assert_int_equal(fcntl_nonblock(sv[0]), 0);
        // The loop the plugin gets from mbd_node_loop(): the main AioContext.
        client = Client::create(reinterpret_cast<mbd_loop *>(&AioContext::main()), UniqueFd(sv[0]), info,
                                "test", timeout_s);
        assert_non_null(client.get());
        server = sv[1];
    }
    ~Pair() {
        client->shutdown();
        close(server);
    }
    static int fcntl_nonblock(int fd);
    // Reads one request header from the server's end.
    void request(uint16_t *type, uint64_t *cookie, uint64_t *off, uint32_t *len) {
        uint8_t h[REQUEST_SIZE];
        size_t got = 0;
        while (got < sizeof(h)) {
            ssize_t n = read(server, h + got, sizeof(h) - got);
            assert_true(n > 0);
            got += n;
        }
        assert_int_equal(get32(h), REQUEST_MAGIC);
        *type = get16(h + 6);
        *cookie = get64(h + 8);
        *off = get64(h + 16);
        *len = get32(h + 24);
    }
    void send(const std::vector<uint8_t> &b) {
        assert_int_equal(write(server, b.data(), b.size()), (ssize_t)b.size());
    }
};

int Pair::fcntl_nonblock(int fd) { return fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0 ? -1 : 0; }

std::vector<uint8_t> data_chunk(uint16_t flags, uint64_t cookie, uint64_t off, const std::string &payload) {
    std::vector<uint8_t> b(20 + 8);
    put32(b.data(), STRUCTURED_REPLY_MAGIC);
    put16(b.data() + 4, flags);
    put16(b.data() + 6, REPLY_TYPE_OFFSET_DATA);
    put64(b.data() + 8, cookie);
    put32(b.data() + 16, uint32_t(8 + payload.size()));
    put64(b.data() + 20, off);
    b.insert(b.end(), payload.begin(), payload.end());
    return b;
}

std::vector<uint8_t> simple(uint32_t err, uint64_t cookie) {
    std::vector<uint8_t> b(16);
    put32(b.data(), SIMPLE_REPLY_MAGIC);
    put32(b.data() + 4, err);
    put64(b.data() + 8, cookie);
    return b;
}

struct Op {
    int ret = 1;  // 1: not finished
};

void run_read(Client *c, uint64_t off, uint32_t len, uint8_t *buf, Op *op) {
    c->request(CMD_READ, 0, off, len, nullptr, buf, [op](int r) { op->ret = r; });
}

void run_flush(Client *c, Op *op) {
    c->request(CMD_FLUSH, 0, 0, 0, nullptr, nullptr, [op](int r) { op->ret = r; });
}

// Runs the loop until every op has finished (bounded: a hang fails).
void run_until(std::initializer_list<Op *> ops) {
    gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    for (;;) {
        bool all = true;
        for (Op *o : ops) all = all && o->ret != 1;
        if (all) return;
        assert_true(g_get_monotonic_time() < deadline);
        AioContext::main().poll(true);
    }
}

void test_out_of_order(void **) {
    Pair p(true);
    uint8_t a[4] = {}, b[4] = {};
    Op oa, ob, of;
    run_read(p.client.get(), 0, 4, a, &oa);
    run_read(p.client.get(), 100, 4, b, &ob);
    run_flush(p.client.get(), &of);
    uint16_t t[3];
    uint64_t c[3], off[3];
    uint32_t len[3];
    for (int i = 0; i < 3; i++) p.request(&t[i], &c[i], &off[i], &len[i]);
    assert_int_equal(t[0], CMD_READ);
    assert_int_equal(off[1], 100);
    assert_int_equal(t[2], CMD_FLUSH);
    assert_true(c[0] != c[1] && c[1] != c[2] && c[0] != c[2]);
    // Answer last to first; the flush fails on its own.
    p.send(simple(5, c[2]));
    p.send(data_chunk(REPLY_FLAG_DONE, c[1], 100, "BBBB"));
    p.send(data_chunk(REPLY_FLAG_DONE, c[0], 0, "AAAA"));
    run_until({&oa, &ob, &of});
    assert_int_equal(oa.ret, 0);
    assert_int_equal(ob.ret, 0);
    assert_int_equal(of.ret, -EIO);
    assert_memory_equal(a, "AAAA", 4);
    assert_memory_equal(b, "BBBB", 4);
    assert_false(p.client->dead());
}

void test_violation_fails_all(void **) {
    warnings.clear();
    Pair p(true);
    uint8_t a[4] = {}, b[4] = {};
    Op oa, ob;
    run_read(p.client.get(), 0, 4, a, &oa);
    run_read(p.client.get(), 8, 4, b, &ob);
    uint16_t t;
    uint64_t c0, c1, off;
    uint32_t len;
    p.request(&t, &c0, &off, &len);
    p.request(&t, &c1, &off, &len);
    p.send(data_chunk(REPLY_FLAG_DONE, c0, 0, "AAAA"));        // fine
    p.send(data_chunk(REPLY_FLAG_DONE, c1, 4, "XXXX"));        // outside its read
    run_until({&oa, &ob});
    assert_int_equal(oa.ret, 0);
    assert_int_equal(ob.ret, -EIO);
    assert_memory_equal(b, "\0\0\0\0", 4);
    assert_true(p.client->dead());
    assert_int_equal(warnings.size(), 1);
    assert_string_equal(warnings[0].c_str(),
                        "NBD server test: protocol violation: the server sent a data chunk at offset 4 (4 bytes) "
                        "outside the read at 8 (4 bytes); connection closed");
    // Later requests fail at once, without a second warning.
    Op oc;
    run_flush(p.client.get(), &oc);
    run_until({&oc});
    assert_int_equal(oc.ret, -EIO);
    assert_int_equal(warnings.size(), 1);
}

void test_dropped(void **) {
    warnings.clear();
    Pair p(false);
    uint8_t a[8] = {};
    Op oa;
    run_read(p.client.get(), 0, 8, a, &oa);
    uint16_t t;
    uint64_t c, off;
    uint32_t len;
    p.request(&t, &c, &off, &len);
    auto r = simple(0, c);
    r.push_back('x');  // 1 of 8 payload bytes, then the server goes
    p.send(r);
    shutdown(p.server, SHUT_RDWR);
    run_until({&oa});
    assert_int_equal(oa.ret, -EIO);
    assert_int_equal(warnings.size(), 1);
    assert_string_equal(warnings[0].c_str(),
                        "NBD server test: the server closed the connection in the middle of a reply; connection closed");
}

void test_timeout(void **) {
    warnings.clear();
    Pair p(true, 1);
    Op of;
    gint64 t0 = g_get_monotonic_time();
    run_flush(p.client.get(), &of);
    run_until({&of});
    gint64 took = g_get_monotonic_time() - t0;
    assert_int_equal(of.ret, -EIO);
    assert_true(took >= 1 * G_USEC_PER_SEC && took < 3 * G_USEC_PER_SEC);
    assert_int_equal(warnings.size(), 1);
    assert_string_equal(warnings[0].c_str(),
                        "NBD server test: no reply within 1 seconds (option 'timeout'); connection closed");
}

void test_many_in_flight(void **) {
    // 64 reads at once, answered in a scrambled order in one write.
    Pair p(true);
    constexpr int N = 64;
    std::vector<std::array<uint8_t, 8>> bufs(N);
    std::vector<Op> ops(N);
    for (int i = 0; i < N; i++) run_read(p.client.get(), i * 8, 8, bufs[i].data(), &ops[i]);
    std::vector<uint64_t> cookies(N);
    for (int i = 0; i < N; i++) {
        uint16_t t;
        uint64_t off;
        uint32_t len;
        p.request(&t, &cookies[i], &off, &len);
        assert_int_equal(off, uint64_t(i) * 8);
    }
    std::vector<uint8_t> all;
    for (int k = 0; k < N; k++) {
        int i = (k * 37) % N;  // 37 is coprime with 64: a permutation
        std::string s(8, char('a' + i % 26));
        auto c = data_chunk(REPLY_FLAG_DONE, cookies[i], uint64_t(i) * 8, s);
        all.insert(all.end(), c.begin(), c.end());
    }
    p.send(all);
    gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    for (;;) {
        bool done = true;
        for (auto &o : ops) done = done && o.ret != 1;
        if (done) break;
        assert_true(g_get_monotonic_time() < deadline);
        AioContext::main().poll(true);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(ops[i].ret, 0);
        for (uint8_t x : bufs[i]) assert_int_equal(x, 'a' + i % 26);
    }
}

// A server may answer a write before it has read the payload: the request
// completes only once the payload is all sent (until then it is the
// caller's buffer the client is sending from).
void test_write_answered_early(void **) {
    Pair p(false);
    std::vector<uint8_t> payload(8 << 20, 0x5a);
    Op ow;
    p.client->request(CMD_WRITE, 0, 0, uint32_t(payload.size()), payload.data(), nullptr,
                      [&ow](int r) { ow.ret = r; });
    uint16_t t;
    uint64_t c, off;
    uint32_t len;
    p.request(&t, &c, &off, &len);
    assert_int_equal(t, CMD_WRITE);
    assert_int_equal(len, payload.size());
    p.send(simple(0, c));
    // The socket buffer holds far less than 8 MiB: the rest waits.
    for (int i = 0; i < 20; i++) AioContext::main().poll(false);
    assert_int_equal(ow.ret, 1);
    // Drain the payload while the loop sends the rest.
    assert_int_equal(fcntl(p.server, F_SETFL, fcntl(p.server, F_GETFL) | O_NONBLOCK), 0);
    size_t got = 0;
    std::vector<uint8_t> sink(1 << 16);
    gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    while (got < payload.size() || ow.ret == 1) {
        assert_true(g_get_monotonic_time() < deadline);
        ssize_t n = read(p.server, sink.data(), sink.size());
        if (n > 0) {
            for (ssize_t k = 0; k < n; k++) assert_int_equal(sink[size_t(k)], 0x5a);
            got += size_t(n);
        }
        AioContext::main().poll(false);
    }
    assert_int_equal(got, payload.size());
    assert_int_equal(ow.ret, 0);
}

// A request on a dead connection fails later, from the loop, never inside
// the call that made it.
void test_dead_never_inline(void **) {
    Pair p(true);
    p.client->shutdown();
    Op of;
    run_flush(p.client.get(), &of);
    assert_int_equal(of.ret, 1);
    run_until({&of});
    assert_int_equal(of.ret, -EIO);
}

}  // namespace

int main() {
    set_warning_handler([](const std::string &m) { warnings.push_back(m); });
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_out_of_order),
        cmocka_unit_test(test_violation_fails_all),
        cmocka_unit_test(test_dropped),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_many_in_flight),
        cmocka_unit_test(test_write_answered_early),
        cmocka_unit_test(test_dead_never_inline),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
