// win32-driver-tests: raw-win32's `file` driver table (the end of
// block/drivers/file-win32.cpp) driven the way the block core drives it:
// open, the permission transaction's three steps, data-plane Tasks, create,
// close, linked with libminiblock.dll: requests go through the Windows
// event loop and its worker threads (block/aio-win32.cpp).
#include <windows.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "block/aio.h"
#include "block/block_int.h"
#include "block/locking/win32.h"
#include "tap.h"

using namespace mb;
using namespace mbtest;

namespace mb {
extern const BlockDriver bdrv_file;
}

namespace {

constexpr uint32_t R = BLK_PERM_CONSISTENT_READ, W = BLK_PERM_WRITE, RS = BLK_PERM_RESIZE;

// Runs a Task to completion on the event loop (its request runs in a
// worker thread, which wakes the loop through the loop's one event).
int run(Task<int> t) {
    return sync_wait(std::move(t));
}

struct Node {
    BlockDriverState *bs = new BlockDriverState;
    ~Node() { delete bs; }  // closes through bdrv_file.close
};

// A node of the `file` driver as the core would open it.
std::unique_ptr<Node> open_node(const std::string &path, bool ro, qapi::LockMode mode,
                                int flags = 0, Status *st_out = nullptr,
                                std::vector<std::pair<std::string, std::string>> extra = {}) {
    auto n = std::make_unique<Node>();
    n->bs->drv = &bdrv_file;
    n->bs->read_only = ro;
    n->bs->lock_mode = mode;
    n->bs->open_flags = flags | (ro ? 0 : BDRV_O_RDWR);
    qapi::OptionDict opts;
    opts.set_str("filename", path);
    for (auto &[k, v] : extra) opts.set_str(k, v);
    Status st = bdrv_file.open(n->bs, opts);
    if (st_out) *st_out = st;
    if (!st.ok()) {
        n->bs->drv = nullptr;  // nothing to close
        return nullptr;
    }
    return n;
}

// The core's transaction for one node: check, then set or abort.
Status set_perms(BlockDriverState *bs, PermPair p) {
    Status st = bdrv_file.check_perm(bs, p);
    if (!st.ok()) {
        bdrv_file.abort_perm_update(bs);
        return st;
    }
    bdrv_file.set_perm(bs, p);
    return st;
}

PermPair table(qapi::LockMode m, bool ro) {
    return *lock_mode_perms(m, ro, true, NodeRole::Top);
}

std::string hint(const std::string &path) {
    return "\nIs another process using the image [" + path +
           "]?\nWindows cannot say which process holds it";
}

}  // namespace

int wmain(int, wchar_t **) {
    wchar_t tmp[MAX_PATH + 1];
    GetTempPathW(MAX_PATH + 1, tmp);
    std::wstring dir =
        std::wstring(tmp) + L"miniblock-driver-" + std::to_wstring(GetCurrentProcessId());
    CreateDirectoryW(dir.c_str(), nullptr);
    std::string path = wide_to_utf8(dir + L"\\disk-\u00e9t\u00e9.img");

    qapi::OptionDict none;
    Status st = bdrv_file.create(path, 1 << 20, none);
    check(st.ok(), "create a 1 MiB image", st.to_string());

    auto a = open_node(path, false, qapi::LockMode::Auto, 0, &st);
    if (!check(a != nullptr, "open read-write, lock=auto", st.to_string())) return 1;
    check(bdrv_file.getlength(a->bs) == 1 << 20, "getlength");
    st = set_perms(a->bs, table(qapi::LockMode::Auto, false));
    check(st.ok(), "auto read-write: locks taken", st.to_string());

    std::vector<uint8_t> buf(65536), back(65536);
    for (size_t i = 0; i < buf.size(); i++) buf[i] = uint8_t(i * 7);
    check(run(bdrv_file.co_pwritev(a->bs, 0, int64_t(buf.size()), buf.data(), BDRV_REQ_FUA)) == 0,
          "co_pwritev at offset 0 (FUA) under its own locks");
    check(run(bdrv_file.co_preadv(a->bs, 0, int64_t(back.size()), back.data(), 0)) == 0 &&
              back == buf,
          "co_preadv reads it back");
    {
        // 200 requests in flight at once, well past WaitForMultipleObjects'
        // 64 handles: the loop waits on its one event, never one per request.
        constexpr int N = 200;
        std::vector<std::vector<uint8_t>> bufs(N, std::vector<uint8_t>(512));
        int done = 0, good = 0;
        for (int i = 0; i < N; i++) {
            spawn([](BlockDriverState *bs, uint8_t *b, int64_t off, int *done, int *good,
                     uint8_t want) -> Task<void> {
                int r = co_await bdrv_file.co_preadv(bs, off, 512, b, 0);
                if (r == 0 && b[0] == want && b[511] == uint8_t(want + 511 * 7)) ++*good;
                ++*done;
            }(a->bs, bufs[i].data(), int64_t(i % 128) * 512, &done, &good, uint8_t((i % 128) * 512 * 7)));
        }
        while (done < N) AioContext::main().poll(true);
        check(good == N, "200 concurrent reads complete through the loop's one event (" +
                             std::to_string(good) + " right)");
    }
    check(run(bdrv_file.co_flush(a->bs)) == 0, "co_flush");
    check(run(bdrv_file.co_truncate(a->bs, 3 << 20)) == 0 && bdrv_file.getlength(a->bs) == 3 << 20,
          "co_truncate grows the file");

    // A second node (its own handle, as a second drive would have) in read-only auto.
    auto b = open_node(path, true, qapi::LockMode::Auto, 0, &st);
    check(b != nullptr, "second node opens read-only", st.to_string());
    if (b) {
        st = set_perms(b->bs, table(qapi::LockMode::Auto, true));
        check(!st.ok() && st.err() == EAGAIN &&
                  st.to_string() == "Failed to get shared \"write\" lock" + hint(path),
              "second node refused: it forbids the write the first one uses", st.to_string());
        // Inactive (migration target): no locks, so no conflict.
        b->bs->open_flags |= BDRV_O_INACTIVE;
        st = set_perms(b->bs, table(qapi::LockMode::Auto, true));
        check(st.ok(), "an inactive node takes no locks", st.to_string());
        b->bs->open_flags &= ~BDRV_O_INACTIVE;
        // lock-wait: a refused lock is retried for that long, then reported.
        b->bs->lock_wait_ms = 300;
        ULONGLONG t0 = GetTickCount64();
        st = set_perms(b->bs, table(qapi::LockMode::Auto, true));
        ULONGLONG dt = GetTickCount64() - t0;
        check(!st.ok() && dt >= 300 && dt < 3000,
              "lock-wait=300 ms retries, then fails (" + std::to_string(dt) + " ms)");
        b->bs->lock_wait_ms = 0;
    }

    // Creating truncates, so it needs an exclusive lock: refused while A is open.
    st = bdrv_file.create(path, 4096, none);
    check(!st.ok() && st.to_string() == "Failed to get \"write\" lock" + hint(path),
          "create refused while a node uses the image", st.to_string());
    check(bdrv_file.getlength(a->bs) == 3 << 20, "... and the image is not truncated");

    // The commit upgrade, done by the core as one transaction on the node.
    st = set_perms(a->bs, PermPair{R | W | RS, 0});
    check(st.ok(), "upgrade to use R,W,RS, forbid all with no other user", st.to_string());

    a.reset();  // closes: its locks go with the handle
    if (b) {
        st = set_perms(b->bs, table(qapi::LockMode::Auto, true));
        check(st.ok(), "after the first node closes, the second gets its locks", st.to_string());
        b.reset();
    }

    // cache=none
    auto c = open_node(path, false, qapi::LockMode::Exclusive, BDRV_O_NOCACHE, &st);
    if (check(c != nullptr, "open with cache=none", st.to_string())) {
        check(c->bs->request_alignment == 4096, "cache=none: request_alignment 4096");
        check(set_perms(c->bs, table(qapi::LockMode::Exclusive, false)).ok(),
              "cache=none: exclusive lock");
        check(run(bdrv_file.co_pwritev(c->bs, 100, 7, buf.data(), 0)) == 0 &&
                  run(bdrv_file.co_preadv(c->bs, 100, 7, back.data(), 0)) == 0 &&
                  std::memcmp(buf.data(), back.data(), 7) == 0,
              "cache=none: an unaligned request round-trips");
        c.reset();
    }

    // Options with no Windows meaning are refused, naming the value.
    struct Bad {
        const char *key, *value, *want;
    } bad[] = {
        {"aio", "native", "aio=native is not supported on Windows\nUse aio=threads (the default)"},
        {"locking-api", "ofd",
         "locking-api=ofd is not available on Windows\nWindows locks are LockFileEx byte ranges; "
         "use locking-api=auto"},
        {"lock-protocol", "whole-file",
         "lock-protocol=whole-file is not supported on Windows\nWindows locks are mandatory: a "
         "lock over the whole file would stop our own writes; use lock-protocol=qemu"},
    };
    for (auto &x : bad) {
        auto n = open_node(path, false, qapi::LockMode::Auto, 0, &st, {{x.key, x.value}});
        check(n == nullptr && st.to_string() == x.want,
              std::string("refuse ") + x.key + "=" + x.value, st.to_string());
    }
    auto m = open_node(path + ".missing", true, qapi::LockMode::Auto, 0, &st);
    check(m == nullptr &&
              st.to_string() == "Could not open '" + path + ".missing': No such file or directory",
          "open a missing file: exact error", st.to_string());

    DeleteFileW((dir + L"\\disk-\u00e9t\u00e9.img").c_str());
    RemoveDirectoryW(dir.c_str());
    std::printf("1..%d\n", tap_count);
    std::printf("%d passed, %d failed\n", tap_count - tap_failed, tap_failed);
    return tap_failed ? 1 : 0;
}
