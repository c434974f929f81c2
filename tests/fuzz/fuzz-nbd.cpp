// Fuzzes what an NBD server sends: the handshake (a scripted server whose
// bytes are the input) and the reply parser (a stream of replies to a few
// requests in flight).  ASan checks that data lands only in the buffers of
// the requests it answers; nothing may crash, hang or allocate without bound.
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "block/drivers/nbd-proto.h"

using namespace mb::nbd;

namespace {

struct Script : Transport {
    const uint8_t *p;
    size_t n;
    int read_exact(void *buf, size_t len) override {
        if (n < len) return -EPIPE;
        memcpy(buf, p, len);
        p += len;
        n -= len;
        return 0;
    }
    int write_all(const void *, size_t) override { return 0; }
};

void fuzz_replies(const uint8_t *data, size_t size, bool structured) {
    // Requests: three reads of different shapes, a write, a flush, each
    // read with a buffer of exactly its length so ASan sees any overflow.
    constexpr int N = 5;
    ReplyTarget t[N];
    std::unique_ptr<uint8_t[]> bufs[N];
    const uint32_t lens[N] = {512, 1, 4096, 0, 0};
    const uint64_t offs[N] = {0, 1000, 1ull << 40, 0, 0};
    const uint16_t cmds[N] = {CMD_READ, CMD_READ, CMD_READ, CMD_WRITE, CMD_FLUSH};
    bool done[N] = {};
    for (int i = 0; i < N; i++) {
        t[i].cmd = cmds[i];
        t[i].offset = offs[i];
        t[i].length = lens[i] ? lens[i] : (cmds[i] == CMD_WRITE ? 512 : 0);
        if (cmds[i] == CMD_READ) {
            bufs[i].reset(new uint8_t[lens[i]]);
            t[i].buf = bufs[i].get();
        }
    }
    ReplyParser p(
        structured,
        [&](uint64_t c) -> ReplyTarget * { return c < N && !done[c] ? &t[c] : nullptr; },
        [&](uint64_t c, ReplyTarget *) {
            if (done[c]) __builtin_trap();  // completed twice
            done[c] = true;
        });
    // Feed in pieces whose sizes come from the input, to exercise every
    // split of headers and payloads.
    size_t pos = 0;
    while (pos < size && !p.failed()) {
        size_t step = 1 + data[pos] % 64;
        size_t n = std::min(step, size - pos);
        size_t used = p.feed(data + pos, n);
        if (used > n) __builtin_trap();
        pos += n;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t mode = data[0] % 3;
    data++;
    size--;
    if (mode == 0) {
        Script s;
        s.p = data;
        s.n = size;
        auto r = handshake(s, "export");
        if (r.ok()) {
            if (r->min_block == 0 || r->max_block > DEFAULT_MAX_BLOCK || r->max_block % r->min_block)
                __builtin_trap();  // the bounds the driver relies on
        }
    } else {
        fuzz_replies(data, size, mode == 1);
    }
    return 0;
}
