// miniblock-io's readv, writev and the aio_* commands (qemu-io's): the same
// output lines as read and write.
#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <numeric>

#include "block/aio.h"
#include "block/coroutine.h"
#include "tools/io-common.h"
#include "tools/tool-common.h"

namespace mb::tools::io {

namespace {

// OFF LEN [LEN...] with -P PAT, -q, -v: the common part of readv and writev.
bool cmd_vectored(Session &s, const Words &w, bool is_write) {
    CmdOpts o;
    std::string err;
    if (!parse_cmd(w, "P", is_write ? "q" : "vq", &o, &err)) return io_error("%s: %s\n", w[0].c_str(), err.c_str());
    if (o.args.size() < 2) return io_error("%s: expected OFFSET and at least one LENGTH\n", w[0].c_str());
    int pattern = is_write ? 0xcd : -1;
    bool quiet = false, verbose = false;
    for (auto &[c, v] : o.flags) {
        if (c == 'P' && !parse_pattern(v, &pattern))
            return io_error("%s: invalid pattern '%s': expected a byte value from 0 to 255\n", w[0].c_str(), v.c_str());
        if (c == 'q') quiet = true;
        if (c == 'v') verbose = true;
    }
    auto off = parse_number(o.args[0]);
    if (!off) return io_error("%s: invalid offset '%s'\n", w[0].c_str(), o.args[0].c_str());
    int64_t total = 0;
    for (size_t i = 1; i < o.args.size(); i++) {
        auto len = parse_number(o.args[i]);
        if (!len || *len > MAX_IO - total) return io_error("%s: invalid length '%s'\n", w[0].c_str(), o.args[i].c_str());
        total += *len;
    }
    if (!io_need_image(s, w[0])) return false;
    // The buffers are contiguous pieces of one request: the block layer sees
    // the same single request qemu-io's readv/writev sends.
    std::vector<uint8_t> buf(total, is_write ? pattern : 0);
    auto t0 = std::chrono::steady_clock::now();
    int r = is_write ? s.blk->pwrite(*off, total, buf.data()) : s.blk->pread(*off, total, buf.data());
    auto t = std::chrono::steady_clock::now() - t0;
    if (r < 0) {
        printf("%s failed: %s\n", is_write ? "writev" : "readv", strerror(-r));
        return false;
    }
    bool ok = is_write || pattern < 0 || check_pattern(buf.data(), total, *off, pattern);
    if (verbose) hexdump(buf.data(), total, *off);
    if (!quiet) {
        printf("%s %" PRId64 "/%" PRId64 " bytes at offset %" PRId64 "\n", is_write ? "wrote" : "read", total, total, *off);
        print_report(total, t);
    }
    return ok;
}

Task<void> aio_worker(BlockBackend *blk, AioRequest *r) {
    r->ret = r->is_write ? co_await blk->co_pwrite(r->offset, r->len, r->buf.data())
                         : co_await blk->co_pread(r->offset, r->len, r->buf.data());
    r->done = true;
}

bool cmd_aio(Session &s, const Words &w, bool is_write) {
    CmdOpts o;
    std::string err;
    if (!parse_cmd(w, "P", is_write ? "q" : "vq", &o, &err)) return io_error("%s: %s\n", w[0].c_str(), err.c_str());
    if (o.args.size() != 2) return io_error("%s: expected OFFSET and LENGTH\n", w[0].c_str());
    auto r = std::make_unique<AioRequest>();
    r->is_write = is_write;
    r->pattern = is_write ? 0xcd : -1;
    for (auto &[c, v] : o.flags) {
        if (c == 'P' && !parse_pattern(v, &r->pattern))
            return io_error("%s: invalid pattern '%s': expected a byte value from 0 to 255\n", w[0].c_str(), v.c_str());
        if (c == 'q') r->quiet = true;
        if (c == 'v') r->verbose = true;
    }
    auto off = parse_number(o.args[0]), len = parse_number(o.args[1]);
    if (!off) return io_error("%s: invalid offset '%s'\n", w[0].c_str(), o.args[0].c_str());
    if (!len || *len > MAX_IO) return io_error("%s: invalid length '%s'\n", w[0].c_str(), o.args[1].c_str());
    if (!io_need_image(s, w[0])) return false;
    r->offset = *off;
    r->len = *len;
    r->buf.assign(*len, is_write ? r->pattern : 0);
    r->start = std::chrono::steady_clock::now();
    AioRequest *p = r.get();
    s.aio.push_back(std::move(r));
    spawn(aio_worker(s.blk.get(), p));
    return true;
}

// Prints one finished request as qemu-io's aio callbacks do; false if it failed.
bool report(const AioRequest &r) {
    // qemu-io's callbacks name a failed aio_read "readv".
    const char *op = r.is_write ? "aio_write" : "readv";
    if (r.ret < 0) {
        printf("%s failed: %s\n", op, strerror(-r.ret));
        return false;
    }
    bool ok = r.is_write || r.pattern < 0 || check_pattern(r.buf.data(), r.len, r.offset, r.pattern);
    if (r.verbose) hexdump(r.buf.data(), r.len, r.offset);
    if (!r.quiet) {
        printf("%s %" PRId64 "/%" PRId64 " bytes at offset %" PRId64 "\n", r.is_write ? "wrote" : "read", r.len, r.len,
               r.offset);
        print_report(r.len, std::chrono::steady_clock::now() - r.start);
    }
    return ok;
}

}  // namespace

bool cmd_readv(Session &s, const Words &w) { return cmd_vectored(s, w, false); }
bool cmd_writev(Session &s, const Words &w) { return cmd_vectored(s, w, true); }
bool cmd_aio_read(Session &s, const Words &w) { return cmd_aio(s, w, false); }
bool cmd_aio_write(Session &s, const Words &w) { return cmd_aio(s, w, true); }

bool cmd_aio_flush(Session &s, const Words &) {
    io_reap_aio(s, true);
    return true;
}

void io_reap_aio(Session &s, bool wait_all) {
    if (s.aio.empty()) return;
    AioContext::main().poll(false);
    if (wait_all) {
        while (std::any_of(s.aio.begin(), s.aio.end(), [](auto &r) { return !r->done; })) AioContext::main().poll(true);
    }
    for (auto it = s.aio.begin(); it != s.aio.end();) {
        if (!(*it)->done) {
            ++it;
            continue;
        }
        if (!report(**it)) s.failed = true;
        it = s.aio.erase(it);
    }
}

}  // namespace mb::tools::io
