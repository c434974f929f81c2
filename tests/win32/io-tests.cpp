// raw-win32's file I/O (Win32File): data round trips against a model,
// end-of-file behaviour, cache=none bouncing, and exact error texts.
#include <windows.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "block/drivers/file-win32.h"
#include "block/locking/win32.h"
#include "block/permissions.h"
#include "tap.h"

using namespace mb;

namespace mbtest {

namespace {

// A tiny deterministic generator: the same run every time.
uint32_t rnd(uint32_t &s) {
    s = s * 1664525u + 1013904223u;
    return s >> 8;
}

void random_io(const std::string &path, bool no_buffering) {
    const char *mode = no_buffering ? "cache=none" : "buffered";
    Win32FileOptions o;
    o.no_buffering = no_buffering;
    o.create = Win32FileOptions::Create::Always;
    auto f = Win32File::open(path, o);
    if (!check(f.ok(), std::string(mode) + ": create", f.status().to_string())) return;
    check(f->alignment() == (no_buffering ? 4096u : 1u), std::string(mode) + ": alignment");
    std::vector<uint8_t> model;
    uint32_t seed = no_buffering ? 7 : 3;
    std::string diag;
    // Unaligned buffers too: an odd offset into a larger vector.
    std::vector<uint8_t> buf(300000 + 1), back(300000 + 1);
    for (int op = 0; op < 300 && diag.empty(); op++) {
        int64_t off = rnd(seed) % 200000;
        size_t len = 1 + rnd(seed) % 70000;
        if (op % 7 == 0) {
            off &= ~int64_t(4095);
            len = (len + 4095) & ~size_t(4095);
        }
        uint8_t *p = buf.data() + (op & 1);
        for (size_t i = 0; i < len; i++) p[i] = uint8_t(rnd(seed));
        int r = f->pwrite(off, p, len);
        if (r != 0) {
            diag = "pwrite " + std::to_string(off) + "+" + std::to_string(len) + ": " +
                   std::to_string(r);
            break;
        }
        if (model.size() < size_t(off) + len) model.resize(size_t(off) + len, 0);
        std::memcpy(model.data() + off, p, len);
        if (f->length() != int64_t(model.size())) {
            diag = "length " + std::to_string(f->length()) + " want " +
                   std::to_string(model.size()) + " after write " + std::to_string(off) + "+" +
                   std::to_string(len);
            break;
        }
        // Read back a random window, reaching past the end of file sometimes.
        int64_t roff = rnd(seed) % (model.size() + 100);
        size_t rlen = 1 + rnd(seed) % 80000;
        uint8_t *q = back.data() + ((op >> 1) & 1);
        r = f->pread(roff, q, rlen);
        if (r != 0) {
            diag = "pread: " + std::to_string(r);
            break;
        }
        for (size_t i = 0; i < rlen; i++) {
            size_t at = size_t(roff) + i;
            uint8_t want = at < model.size() ? model[at] : 0;
            if (q[i] != want) {
                diag = "byte " + std::to_string(at) + " differs after op " + std::to_string(op);
                break;
            }
        }
        if (op % 50 == 49) {
            int64_t nl = rnd(seed) % 250000;
            if (f->truncate(nl) != 0) diag = "truncate";
            model.resize(size_t(nl), 0);
        }
    }
    check(diag.empty(), std::string(mode) + ": 300 random writes/reads/truncates match the model",
          diag);
    check(f->flush() == 0, std::string(mode) + ": flush");
}

}  // namespace

void run_io_tests(const std::wstring &dir) {
    std::string base = wide_to_utf8(dir);
    random_io(base + "\\io-buffered.img", false);
    random_io(base + "\\io-nobuf.img", true);

    // Exact error texts (QEMU's "Could not open" form, strerror as on POSIX).
    std::string missing = base + "\\no-such-file.img";
    auto f = Win32File::open(missing, {});
    check(
        !f.ok() && f.status().err() == ENOENT &&
            f.status().to_string() == "Could not open '" + missing + "': No such file or directory",
        "open a missing file: exact error", f.status().to_string());
    auto d = Win32File::open(base, {});
    check(!d.ok(), "open a directory fails", d.ok() ? "" : d.status().to_string());
    std::string bad = "bad-\xff\xfe.img";
    auto b = Win32File::open(bad, {});
    check(!b.ok() && b.status().err() == EINVAL &&
              b.status().to_string() ==
                  "Could not open '" + bad + "': '" + bad + "' is not valid UTF-8",
          "open a non-UTF-8 name: exact error", b.status().to_string());
    Win32FileOptions o;
    o.create = Win32FileOptions::Create::New;
    auto n = Win32File::open(base + "\\io-buffered.img", o);
    check(!n.ok() && n.status().err() == EEXIST, "create=new on an existing file: EEXIST",
          n.ok() ? "" : n.status().to_string());

    // Read-only: reads work, writes fail with an errno, flush is a no-op.
    Win32FileOptions ro;
    ro.read_only = true;
    auto r = Win32File::open(base + "\\io-buffered.img", ro);
    if (check(r.ok(), "open read-only", r.status().to_string())) {
        char c[16];
        check(r->pread(0, c, sizeof c) == 0, "read-only: read");
        int w = r->pwrite(0, c, sizeof c);
        check(w == -EACCES || w == -EBADF, "read-only: write refused with -EACCES",
              std::to_string(w));
        check(r->flush() == 0, "read-only: flush is a no-op");
        check(r->truncate(0) < 0, "read-only: truncate refused");
    }
    // Every HANDLE is owned: a hundred opens, locks, I/O and failures leave
    // the process's handle count where it was.  Wine's GetProcessHandleCount
    // says 0, so there the handles are counted by asking each small handle
    // value whether it is one (GetHandleInformation).
    auto count_handles = [] {
        DWORD n = 0;
        if (GetProcessHandleCount(GetCurrentProcess(), &n) && n != 0) return n;
        DWORD flags;
        for (uintptr_t h = 4; h < 8192; h += 4) {
            if (GetHandleInformation(reinterpret_cast<HANDLE>(h), &flags)) n++;
        }
        return n;
    };
    DWORD before = count_handles();
    for (int i = 0; i < 100; i++) {
        auto h = Win32File::open(base + "\\io-buffered.img", {});
        if (!h.ok()) break;
        Win32Locks l(h->handle(), base);
        if (l.prepare(BLK_PERM_CONSISTENT_READ, 0).ok()) l.commit();
        char c[8];
        (void)h->pread(0, c, sizeof c);
        (void)h->pwrite(0, c, sizeof c);
        auto missing_again = Win32File::open(missing, {});
    }
    DWORD after = count_handles();
    check(before != 0 && before == after, "no handle leaks over 100 open/lock/io/close rounds (" +
                                              std::to_string(before) + " handles before, " +
                                              std::to_string(after) + " after)");

    DeleteFileW((dir + L"\\io-buffered.img").c_str());
    DeleteFileW((dir + L"\\io-nobuf.img").c_str());
}

}  // namespace mbtest
