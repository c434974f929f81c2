// win32-tests: raw-win32 and the Windows lock protocol, run under Wine (or
// Windows) by tests/win32/run-wine-tests.sh.  Prints TAP, then
// "N passed, M failed"; exits 1 on any failure.
//
// Usage: win32-tests [--rounds N] [DIR]
//   DIR      where test files go (default: %TEMP%\miniblock-win32-PID)
//   --rounds rounds of the exclusive-opener race (default 100)
//
// Two-process tests start win32-lock-child.exe (next to this program) and
// compare what they see with what the permission model says
// (block/permissions.h): nothing here is a hand-written expectation table.
#include <windows.h>

#include <cerrno>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "block/drivers/file-win32.h"
#include "block/locking/win32.h"
#include "block/permissions.h"
#include "child.h"
#include "tap.h"

using namespace mb;
using namespace mbtest;
using qapi::LockMode;

namespace {

std::wstring g_child_exe;

std::string hex(uint32_t v) {
    char b[16];
    std::snprintf(b, sizeof b, "%x", unsigned(v));
    return b;
}

std::string bits_str(LockBits b) {
    return "use=" + hex(b.use) + " forbid=" + hex(b.forbid);
}

// ---- what the permission model says ---------------------------------------

struct Cfg {
    LockMode mode;
    bool ro;
    std::string name() const { return std::string(qapi::to_string(mode)) + (ro ? "/ro" : "/rw"); }
};

// The bytes a raw image opened as `c` holds; nullopt for lock=off (no locks,
// no tests).
std::optional<LockBits> bits_of(Cfg c) {
    if (c.mode == LockMode::Off) return std::nullopt;
    auto pp = lock_mode_perms(c.mode, c.ro, true, NodeRole::Top);
    return lock_bits_for(pp->perm, pp->shared);
}

// The first conflict a process wanting `want` finds against `other`, as the
// reply line of win32-lock-child; "" if none.  The order and the texts are
// the POSIX protocol's (block/locking/qemu-bytes.cpp): first the others'
// "forbid" bytes that stop our uses, then their "use" bytes that stop our
// forbids; a held 202 (102) stops us as "write" unless we ask for write
// unchanged ourselves.
std::string expected_conflict(LockBits want, LockBits other, const std::string &path) {
    ConflictTest t = conflict_test_for(want);
    std::string msg;
    for (int i = 0; i < BLK_PERM_COUNT && msg.empty(); i++) {
        if (t.their_forbid & other.forbid & (1u << i)) {
            int n = (i == 2 && !(want.use & BLK_PERM_WRITE_UNCHANGED)) ? 1 : i;
            msg = std::string("Failed to get \"") + perm_name(n) + "\" lock";
        }
    }
    for (int i = 0; i < BLK_PERM_COUNT && msg.empty(); i++) {
        if (t.their_use & other.use & (1u << i)) {
            int n = (i == 2 && !(want.forbid & BLK_PERM_WRITE_UNCHANGED)) ? 1 : i;
            msg = std::string("Failed to get shared \"") + perm_name(n) + "\" lock";
        }
    }
    if (msg.empty()) return "";
    return "fail " + std::to_string(EAGAIN) + " " + msg +
           " | Is another process using the image [" + path +
           "]? | Windows cannot say which process holds it";
}

// ---- looking at the lock region from outside ------------------------------

// Which protocol bytes (and the guard) anybody holds, seen through our own
// handle: an exclusive try-lock succeeds only on a byte nobody holds.
struct RegionMap {
    LockBits bits;
    bool guard = false;
    bool operator==(const RegionMap &) const = default;
    std::string str() const { return bits_str(bits) + (guard ? " guard" : ""); }
};

bool byte_free(HANDLE h, uint64_t off) {
    OVERLAPPED ov{};
    ov.Offset = DWORD(off);
    ov.OffsetHigh = DWORD(off >> 32);
    if (!LockFileEx(h, LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ov)) {
        return false;
    }
    UnlockFileEx(h, 0, 1, 0, &ov);
    return true;
}

RegionMap probe(HANDLE h) {
    RegionMap m;
    for (int i = 0; i < BLK_PERM_COUNT; i++) {
        if (!byte_free(h, win32_use_byte(i))) m.bits.use |= 1u << i;
        if (!byte_free(h, win32_forbid_byte(i))) m.bits.forbid |= 1u << i;
    }
    m.guard = !byte_free(h, WIN32_GUARD_BYTE);
    return m;
}

Win32File open_or_die(const std::string &path, bool ro,
                      Win32FileOptions::Create c = Win32FileOptions::Create::No) {
    Win32FileOptions o;
    o.read_only = ro;
    o.create = c;
    auto f = Win32File::open(path, o);
    if (!f.ok()) {
        std::printf("Bail out! cannot open %s: %s\n", path.c_str(), f.status().to_string().c_str());
        std::exit(1);
    }
    return std::move(*f);
}

std::unique_ptr<Child> spawn(const std::wstring &path) {
    auto c = Child::start(g_child_exe, path);
    if (!c) {
        std::printf("Bail out! cannot start win32-lock-child.exe\n");
        std::exit(1);
    }
    return c;
}

// ---- the premise ----------------------------------------------------------

// The design rests on two facts about LockFileEx; check them where we run.
void test_premises(const std::string &path) {
    Win32File a = open_or_die(path, false), b = open_or_die(path, false);
    OVERLAPPED ov{};
    uint64_t off = win32_use_byte(0);
    ov.Offset = DWORD(off);
    ov.OffsetHigh = DWORD(off >> 32);
    bool shared = LockFileEx(a.handle(), LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ov);
    check(shared, "premise: a shared lock beyond 2^62 is granted");
    OVERLAPPED ov2 = ov;
    bool own_excl =
        LockFileEx(a.handle(), LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ov2);
    if (own_excl) UnlockFileEx(a.handle(), 0, 1, 0, &ov2);
    check(!own_excl, "premise: a handle's own shared lock refuses its exclusive test lock");
    check(!byte_free(b.handle(), off), "premise: another handle's test sees the shared lock");
    UnlockFileEx(a.handle(), 0, 1, 0, &ov);
    check(byte_free(b.handle(), off), "premise: after unlock the byte is free");
    // Data bytes stay writable while the lock region is held.
    Win32Locks la(a.handle(), path);
    Status st = la.prepare(BLK_PERM_ALL & ~BLK_PERM_WRITE_UNCHANGED, 0);
    check(st.ok(), "exclusive lock on a fresh file", st.to_string());
    la.commit();
    char data[512] = "written while locked";
    check(b.pwrite(0, data, sizeof data) == 0,
          "another handle writes offset 0 while locks are held");
    // Resizing is not I/O on the locked bytes either: the region stays
    // beyond the end of file whatever the size.
    int64_t len = b.length();
    check(b.truncate(len + 12345) == 0 && b.length() == len + 12345 && b.truncate(len) == 0 &&
              b.length() == len,
          "another handle grows and shrinks the file while locks are held");
    la.release();
}

// ---- fault injection ------------------------------------------------------

struct Fault {
    int calls = 0;
    int fail_at = 0;  // 0: never
    bool persist = false;
    DWORD err = ERROR_NOT_ENOUGH_MEMORY;
} g_fault;

bool should_fail() {
    int n = ++g_fault.calls;
    return g_fault.fail_at > 0 &&
           (n == g_fault.fail_at || (g_fault.persist && n > g_fault.fail_at));
}

BOOL WINAPI fake_lock(HANDLE h, DWORD f, DWORD r, DWORD lo, DWORD hi, LPOVERLAPPED ov) {
    if (should_fail()) {
        SetLastError(g_fault.err);
        return FALSE;
    }
    return LockFileEx(h, f, r, lo, hi, ov);
}

BOOL WINAPI fake_unlock(HANDLE h, DWORD r, DWORD lo, DWORD hi, LPOVERLAPPED ov) {
    if (should_fail()) {
        SetLastError(g_fault.err);
        return FALSE;
    }
    return UnlockFileEx(h, r, lo, hi, ov);
}

VOID WINAPI fake_sleep(DWORD) {}

const Win32LockCalls fake_calls = {fake_lock, fake_unlock, fake_sleep, ::GetTickCount64};

struct FaultScenario {
    const char *name;
    PermPair start;   // L1's state before the change ({0, ALL}: no locks)
    PermPair target;  // the change
    bool reader;      // another handle holds a reader's locks (auto, read-only)
};

// For every call N of the change, make call N fail (once, or from N on) and
// check: success with the target state, or failure with the lock state
// exactly as before (or, only when failures persist, an explicit "could not
// be restored").
void fault_scenario(const std::string &path, const FaultScenario &sc, bool persist, DWORD err) {
    auto reader_pp = lock_mode_perms(LockMode::Auto, true, true, NodeRole::Top);
    int clean_calls = -1;
    int bad = 0;
    std::string first_diag;
    int successes = 0, failures = 0;
    for (int n = 0;; n++) {
        Win32File f1 = open_or_die(path, false), f2 = open_or_die(path, true),
                  f3 = open_or_die(path, true);
        Win32LockOptions o;
        o.calls = &fake_calls;
        Win32Locks l1(f1.handle(), path, o), l2(f2.handle(), path);
        g_fault = Fault{};
        if (sc.start.perm || sc.start.shared != BLK_PERM_ALL) {
            if (!l1.prepare(sc.start.perm, sc.start.shared).ok()) {
                check(false, std::string("fault setup ") + sc.name);
                return;
            }
            l1.commit();
        }
        if (sc.reader) {
            if (!l2.prepare(reader_pp->perm, reader_pp->shared).ok()) {
                check(false, std::string("fault setup reader ") + sc.name);
                return;
            }
            l2.commit();
        }
        LockBits held_before = l1.held();
        RegionMap map_before = probe(f3.handle());
        g_fault = Fault{0, n, persist, err};
        Status st = l1.prepare(sc.target.perm, sc.target.shared);
        int calls = g_fault.calls;
        g_fault.fail_at = 0;
        std::string diag;
        if (st.ok()) {
            successes++;
            l1.commit();
            LockBits want = lock_bits_for(sc.target.perm, sc.target.shared);
            if (!(l1.held() == want))
                diag = "held " + bits_str(l1.held()) + " want " + bits_str(want);
            RegionMap m = probe(f3.handle());
            LockBits u{
                want.use | (sc.reader ? lock_bits_for(reader_pp->perm, reader_pp->shared).use : 0),
                want.forbid |
                    (sc.reader ? lock_bits_for(reader_pp->perm, reader_pp->shared).forbid : 0)};
            if (!(m.bits == u) || m.guard) diag += " map " + m.str() + " want " + bits_str(u);
        } else {
            failures++;
            RegionMap m = probe(f3.handle());
            bool same = l1.held() == held_before && m == map_before;
            bool restore_reported = st.message().starts_with("Failed to restore");
            if (!same && !(persist && restore_reported)) {
                diag = "after failure '" + st.message() + "': held " + bits_str(l1.held()) +
                       " was " + bits_str(held_before) + ", map " + m.str() + " was " +
                       map_before.str();
            }
            if (restore_reported && !persist) diag += " restore failed on a transient fault";
        }
        if (!diag.empty()) {
            if (!bad++) first_diag = "call " + std::to_string(n) + ": " + diag;
        }
        if (n == 0) clean_calls = calls;
        if (n > clean_calls) break;
    }
    char what[200];
    std::snprintf(what, sizeof what,
                  "fault injection, %s, %s error %lu at each of its %d calls: "
                  "%d runs succeeded, %d failed",
                  sc.name, persist ? "persistent" : "one", err, clean_calls, successes, failures);
    check(bad == 0, what, first_diag);
}

void test_fault_injection(const std::string &path) {
    constexpr uint32_t R = BLK_PERM_CONSISTENT_READ, W = BLK_PERM_WRITE, RS = BLK_PERM_RESIZE;
    const FaultScenario scenarios[] = {
        {"exclusive open", {0, BLK_PERM_ALL}, {R | W, 0}, false},
        {"auto open beside a reader", {0, BLK_PERM_ALL}, {R, R}, true},
        {"commit upgrade, no reader", {R, R}, {R | W | RS, 0}, false},
        {"commit upgrade refused by a reader", {R, R}, {R | W | RS, 0}, true},
        {"exclusive open refused by a reader", {0, BLK_PERM_ALL}, {R | W, 0}, true},
    };
    for (const auto &sc : scenarios) {
        fault_scenario(path, sc, false, ERROR_NOT_ENOUGH_MEMORY);
        fault_scenario(path, sc, false, ERROR_LOCK_VIOLATION);
        fault_scenario(path, sc, true, ERROR_NOT_ENOUGH_MEMORY);
    }
}

// ---- the guard's bounded wait ---------------------------------------------

void test_guard_timeout(const std::string &path) {
    Win32File f1 = open_or_die(path, false), f2 = open_or_die(path, false);
    OVERLAPPED ov{};
    ov.Offset = DWORD(WIN32_GUARD_BYTE);
    ov.OffsetHigh = DWORD(WIN32_GUARD_BYTE >> 32);
    // A peer stuck inside its guard section.
    LockFileEx(f2.handle(), LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ov);
    Win32LockOptions o;
    o.guard_timeout_ms = 300;
    Win32Locks l1(f1.handle(), path, o);
    ULONGLONG t0 = GetTickCount64();
    Status st = l1.prepare(BLK_PERM_CONSISTENT_READ, BLK_PERM_CONSISTENT_READ);
    ULONGLONG dt = GetTickCount64() - t0;
    check(!st.ok() && st.err() == EAGAIN &&
              st.to_string() == "Failed to get the lock guard of '" + path +
                                    "'\nIs another process using the image [" + path +
                                    "]?\nAnother process has been changing its locks for too long",
          "a stuck guard: exact error after the bounded wait", st.to_string());
    check(dt >= 300 && dt < 3000, "a stuck guard: gave up after " + std::to_string(dt) + " ms");
    check(l1.held() == LockBits{} && probe(f1.handle()).bits == LockBits{},
          "a stuck guard: nothing locked");
    UnlockFileEx(f2.handle(), 0, 1, 0, &ov);
    st = l1.prepare(BLK_PERM_CONSISTENT_READ, BLK_PERM_CONSISTENT_READ);
    check(st.ok(), "guard free again: lock succeeds", st.to_string());
    if (st.ok()) l1.commit();
}

// ---- two processes, every pair of lock modes ------------------------------

std::vector<Cfg> all_cfgs() {
    std::vector<Cfg> v;
    for (LockMode m : {LockMode::Off, LockMode::Shared, LockMode::Auto, LockMode::Exclusive}) {
        v.push_back({m, true});
        v.push_back({m, false});
    }
    return v;
}

void test_matrix(const std::wstring &wpath, const std::string &path) {
    auto a = spawn(wpath), b = spawn(wpath);
    auto cfgs = all_cfgs();
    std::vector<std::string> cells;
    auto cell_name = [](Cfg c) {
        return std::string(qapi::to_string(c.mode)) + (c.ro ? ":ro" : ":rw");
    };
    std::string table = "first opener \\ second:";
    for (auto &c : cfgs) {
        char col[16];
        std::string n = c.name();
        size_t slash = n.find('/');
        std::snprintf(col, sizeof col, " %8s",
                      (n.substr(0, std::min<size_t>(slash, 4)) + n.substr(slash)).c_str());
        table += col;
    }
    for (auto &ca : cfgs) {
        char row[32];
        std::snprintf(row, sizeof row, "\n%-22s", ca.name().c_str());
        table += row;
        for (auto &cb : cfgs) {
            std::string ra = a->cmd(std::string("open ") + (ca.ro ? "ro" : "rw"));
            std::string la = a->cmd(std::string("lock ") + qapi::to_string(ca.mode));
            std::string rb = b->cmd(std::string("open ") + (cb.ro ? "ro" : "rw"));
            std::string lb = b->cmd(std::string("lock ") + qapi::to_string(cb.mode));
            std::string want = "ok";
            auto ba = bits_of(ca), bb = bits_of(cb);
            if (ba && bb) {
                std::string e = expected_conflict(*bb, *ba, path);
                if (!e.empty()) want = e;
            }
            if (want == "ok" && cb.mode == LockMode::Off) want = "ok off";
            std::string want_a = ca.mode == LockMode::Off ? "ok off" : "ok";
            bool ok = ra == "ok" && rb == "ok" && la == want_a && lb == want;
            check(ok,
                  ca.name() + " then " + cb.name() + ": " +
                      (want.starts_with("ok") ? "both open" : "second refused"),
                  "first: " + la + "; second: " + lb + "; expected: " + want);
            table += lb.starts_with("ok") ? "       ok" : "  refused";
            // For run-wine-tests.sh, which compares these cells with the
            // POSIX matrix (tests/interop/lock-matrix.expected).
            cells.push_back(cell_name(ca) + " | " + cell_name(cb) + " | " +
                            (lb.starts_with("ok") ? "yes" : "no"));
            a->cmd("close");
            b->cmd("close");
        }
    }
    for (auto &c : cells) note("cell " + c);
    note("matrix seen by two Windows processes (ok = second opener gets its locks):");
    size_t p = 0, q;
    while ((q = table.find('\n', p)) != std::string::npos) {
        note(table.substr(p, q - p));
        p = q + 1;
    }
    note(table.substr(p));
}

// ---- writes at offset 0 while locks are held ------------------------------

void test_offset0(const std::wstring &wpath) {
    auto a = spawn(wpath), b = spawn(wpath);
    check(a->cmd("open rw") == "ok" && a->cmd("lock exclusive") == "ok",
          "offset 0: first process holds lock=exclusive");
    check(a->cmd("write 0 512") == "ok", "offset 0: the exclusive holder writes offset 0");
    check(a->cmd("write 0 1048576") == "ok", "offset 0: the exclusive holder writes 1 MiB at 0");
    check(b->cmd("open rw") == "ok" && b->cmd("lock off") == "ok off",
          "offset 0: a lock=off process opens beside it");
    check(b->cmd("write 0 4096") == "ok",
          "offset 0: a lock=off process writes offset 0 (locks never cover data)");
    a->cmd("close");
    b->cmd("close");
    check(a->cmd("open rw nobuf") == "ok" && a->cmd("lock shared") == "ok" &&
              b->cmd("open rw") == "ok" && b->cmd("lock shared") == "ok",
          "offset 0: two lock=shared writers");
    check(a->cmd("write 0 4096") == "ok" && b->cmd("write 0 512") == "ok" &&
              a->cmd("write 100 7") == "ok",
          "offset 0: both write offset 0 (one with cache=none, unaligned too)");
}

// ---- commit's upgrade -----------------------------------------------------

void test_commit_upgrade(const std::wstring &wpath, const std::string &path) {
    constexpr uint32_t R = BLK_PERM_CONSISTENT_READ, W = BLK_PERM_WRITE, RS = BLK_PERM_RESIZE;
    auto ro_pp = lock_mode_perms(LockMode::Auto, true, true, NodeRole::Top);
    LockBits ro_bits = lock_bits_for(ro_pp->perm, ro_pp->shared);
    LockBits up_bits = lock_bits_for(R | W | RS, 0);
    Win32File self = open_or_die(path, true);

    auto base = spawn(wpath), reader = spawn(wpath);
    // The base under an overlay: opened writable for the commit, locked as a
    // read-only backing file.
    check(base->cmd("open rw") == "ok" && base->cmd("lock auto as-ro") == "ok",
          "commit: base held as a backing file (auto, read-only)");
    check(reader->cmd("open ro") == "ok" && reader->cmd("lock auto") == "ok",
          "commit: a second process reads the base");
    RegionMap before = probe(self.handle());
    std::string want = expected_conflict(up_bits, ro_bits, path) + " [kept]";
    std::string got = base->cmd("perms " + hex(R | W | RS) + " 0");
    check(got == want, "commit: upgrade refused while another process reads",
          "got: " + got + "; expected: " + want);
    check(base->cmd("held") == "ok " + bits_str(ro_bits), "commit: base's locks as before");
    check(probe(self.handle()) == before, "commit: lock region exactly as before",
          probe(self.handle()).str() + " was " + before.str());
    reader->quit();
    got = base->cmd("perms " + hex(R | W | RS) + " 0");
    check(got == "ok", "commit: upgrade succeeds once the reader has exited", got);
    check(base->cmd("held") == "ok " + bits_str(up_bits),
          "commit: base holds use R,W,RS, forbid all");
    check(base->cmd("write 0 65536") == "ok", "commit: the upgraded base writes offset 0");
    auto late = spawn(wpath);
    got = late->cmd("open ro") == "ok" ? late->cmd("lock auto") : "open failed";
    want = expected_conflict(ro_bits, up_bits, path);
    check(got == want, "commit: a new reader is refused during the commit",
          "got: " + got + "; expected: " + want);
    got = base->cmd("perms " + hex(ro_pp->perm) + " " + hex(ro_pp->shared));
    check(got == "ok" && base->cmd("held") == "ok " + bits_str(ro_bits),
          "commit: the base drops back to its backing-file locks", got);
    got = late->cmd("lock auto");
    check(got == "ok", "commit: after it, the reader gets in", got);
}

// ---- handles do not leak into children ------------------------------------

void test_no_inherit(const std::wstring &wpath, const std::string &path) {
    std::optional<Win32File> f = open_or_die(path, false);
    // The bytes of an exclusive opener, taken directly: the point is what
    // closing the handle does to them, and a Win32Locks object would
    // release them itself first.
    LockBits excl = lock_bits_for(BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE, 0);
    bool locked = true;
    for (int i = 0; i < BLK_PERM_COUNT; i++) {
        for (bool use : {true, false}) {
            if (!((use ? excl.use : excl.forbid) & (1u << i))) continue;
            uint64_t off = use ? win32_use_byte(i) : win32_forbid_byte(i);
            OVERLAPPED ov{};
            ov.Offset = DWORD(off);
            ov.OffsetHigh = DWORD(off >> 32);
            locked &= LockFileEx(f->handle(), LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ov) != 0;
        }
    }
    check(locked, "inherit: parent holds an exclusive opener's bytes");
    // Started with bInheritHandles=TRUE (for its pipes) while we hold the image.
    auto bystander = spawn(wpath);
    f.reset();  // closes our handle: our locks must go with it
    auto other = spawn(wpath);
    std::string got = other->cmd("open rw") == "ok" ? other->cmd("lock exclusive") : "open failed";
    check(got == "ok", "inherit: no child inherited the image handle (its locks died with ours)",
          got);
}

// ---- a byte of ours held exclusively by someone -----------------------------

// Only a process that does not follow the protocol holds one of our bytes
// exclusively; taking it then fails with the conflict text, as on POSIX.
void test_take_refused(const std::string &path) {
    Win32File f1 = open_or_die(path, true), f2 = open_or_die(path, true);
    OVERLAPPED ov{};
    ov.Offset = DWORD(win32_use_byte(0));
    ov.OffsetHigh = DWORD(win32_use_byte(0) >> 32);
    LockFileEx(f2.handle(), LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ov);
    Win32Locks l(f1.handle(), path);
    // lock=shared, read-only: uses R, forbids nothing, so tests only B+200.
    Status st = l.prepare(BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL);
    check(!st.ok() && st.err() == EAGAIN &&
              st.to_string() == "Failed to get \"consistent read\" lock\nIs another process "
                                "using the image [" + path +
                                    "]?\nWindows cannot say which process holds it",
          "a byte of ours held exclusively: the conflict text", st.to_string());
    check(l.held() == LockBits{} && !probe(f1.handle()).guard, "... and nothing held after");
    UnlockFileEx(f2.handle(), 0, 1, 0, &ov);
}

// ---- a node visited twice in one transaction --------------------------------

// A second prepare before commit/abort builds on the first, as in the POSIX
// protocol: its failure leaves what the first took, commit settles on the
// last state, abort undoes both.
void test_two_prepares(const std::string &path) {
    constexpr uint32_t R = BLK_PERM_CONSISTENT_READ, W = BLK_PERM_WRITE;
    Win32File f1 = open_or_die(path, false), f2 = open_or_die(path, true),
              f3 = open_or_die(path, true);
    Win32Locks l1(f1.handle(), path);
    check(l1.prepare(R, BLK_PERM_ALL).ok() && l1.prepare(R | W, R).ok(),
          "two prepares: both succeed");
    l1.abort();
    check(l1.held() == LockBits{} && probe(f3.handle()).bits == LockBits{},
          "two prepares: abort undoes both");
    check(l1.prepare(R, BLK_PERM_ALL).ok() && l1.prepare(R | W, R).ok(), "two prepares again");
    l1.commit();
    check(
        l1.held() == lock_bits_for(R | W, R) && probe(f3.handle()).bits == lock_bits_for(R | W, R),
        "two prepares: commit settles on the last state");
    l1.release();

    // A reader forbids write: the second prepare fails and keeps the first's bytes.
    Win32Locks l2(f2.handle(), path);
    auto ro = lock_mode_perms(LockMode::Auto, true, true, NodeRole::Top);
    check(l2.prepare(ro->perm, ro->shared).ok(), "two prepares: a reader holds the image");
    l2.commit();
    LockBits reader = lock_bits_for(ro->perm, ro->shared);
    LockBits first = lock_bits_for(R, BLK_PERM_ALL);
    check(l1.prepare(R, BLK_PERM_ALL).ok(), "two prepares: the first succeeds beside the reader");
    Status st = l1.prepare(R | W, R);
    check(!st.ok() && st.message() == "Failed to get \"write\" lock" && l1.held() == first &&
              probe(f3.handle()).bits ==
                  LockBits{first.use | reader.use, first.forbid | reader.forbid},
          "two prepares: the second fails and leaves exactly what the first took", st.to_string());
    l1.abort();
    check(l1.held() == LockBits{} && probe(f3.handle()).bits == reader,
          "two prepares: abort after the failure leaves only the reader's bytes");
}

// ---- racing exclusive openers ---------------------------------------------

struct RaceResult {
    int one = 0, none = 0, both = 0;
    std::string diag;
};

// `rounds` rounds of two fresh processes that each open the image, wait on a
// shared named event (the barrier), then lock it exclusively at once.
// `opts_a`, `opts_b`: extra words for each child's race command ("slow",
// "late", "noguard").
int race_serial = 0;

RaceResult race(const std::wstring &wpath, int rounds, const std::string &opts_a,
                const std::string &opts_b) {
    RaceResult res;
    for (int r = 0; r < rounds; r++) {
        auto a = spawn(wpath), b = spawn(wpath);
        std::string name = "miniblock-race-" + std::to_string(GetCurrentProcessId()) + "-" +
                           std::to_string(r) + "-" + std::to_string(++race_serial);
        Win32Handle ev(CreateEventA(nullptr, TRUE, FALSE, name.c_str()));
        std::string oa = a->cmd("open rw"), ob = b->cmd("open rw");
        a->send("race " + name + " exclusive " + opts_a);
        b->send("race " + name + " exclusive " + opts_b);
        std::string ra = a->recv(), rb = b->recv();
        if (oa != "ok" || ob != "ok" || ra != "ready" || rb != "ready") {
            res.diag = "round " + std::to_string(r) + ": " + oa + "/" + ob + "/" + ra + "/" + rb;
            res.both = 1000000;
            break;
        }
        SetEvent(ev.get());  // both wake at once and lock
        std::string wa = a->recv(), wb = b->recv();
        int wins = (wa == "ok") + (wb == "ok");
        if (wins == 2) {
            if (!res.both++) res.diag = "round " + std::to_string(r) + ": both won";
        } else if (wins == 1) {
            res.one++;
        } else {
            res.none++;
        }
    }
    return res;
}

void test_race(const std::wstring &wpath, int rounds) {
    // Half the rounds as they come (both wake within microseconds), half
    // with the worst interleaving forced: a 20 ms pause between the first
    // opener's tests and its takes, and the second starting 2 ms late, in
    // the middle of that pause.
    RaceResult g = race(wpath, rounds - rounds / 2, "", "");
    RaceResult s = race(wpath, rounds / 2, "slow", "slow late");
    check(g.both == 0 && s.both == 0,
          std::to_string(rounds) + " rounds of two racing exclusive openers: never both win (" +
              std::to_string(g.one + s.one) + " rounds one winner, " +
              std::to_string(g.none + s.none) + " rounds none)",
          g.diag + s.diag);
    check(g.one + s.one > 0, "race: the lock is not just refused to everyone");
    // The negative control: the same race with the guard faked away.  Double
    // wins here show that the race is real and that the guard is what stops
    // them.
    RaceResult u = race(wpath, rounds / 2, "slow noguard", "slow late noguard");
    check(u.both > 0, "control: without the guard, openers both win in " + std::to_string(u.both) +
                          " of " + std::to_string(rounds / 2) + " rounds (" +
                          std::to_string(u.one) + " one, " + std::to_string(u.none) + " none)");
}

}  // namespace

int wmain(int argc, wchar_t **argv) {
    int rounds = 100;
    std::wstring dir;
    for (int i = 1; i < argc; i++) {
        std::wstring a = argv[i];
        if (a == L"--rounds" && i + 1 < argc)
            rounds = _wtoi(argv[++i]);
        else
            dir = a;
    }
    if (dir.empty()) {
        wchar_t tmp[MAX_PATH + 1];
        GetTempPathW(MAX_PATH + 1, tmp);
        dir = std::wstring(tmp) + L"miniblock-win32-" + std::to_wstring(GetCurrentProcessId());
    }
    CreateDirectoryW(dir.c_str(), nullptr);

    wchar_t self[MAX_PATH + 1];
    DWORD n = GetModuleFileNameW(nullptr, self, MAX_PATH + 1);
    std::wstring exe(self, n);
    g_child_exe = exe.substr(0, exe.find_last_of(L"\\/") + 1) + L"win32-lock-child.exe";

    // A non-ASCII name, so that every test also proves UTF-8 -> CreateFileW.
    std::wstring wpath = dir + L"\\obraz-\u043e\u0431\u0440\u0430\u0437-\u6620\u50cf.img";
    std::string path = wide_to_utf8(wpath);
    {
        Win32File f = open_or_die(path, false, Win32FileOptions::Create::Always);
        std::vector<char> zeros(1 << 20);
        if (f.pwrite(0, zeros.data(), zeros.size()) != 0) {
            std::printf("Bail out! cannot write %s\n", path.c_str());
            return 1;
        }
    }
    note("image: " + path);

    test_premises(path);
    run_io_tests(dir);
    test_fault_injection(path);
    test_guard_timeout(path);
    test_matrix(wpath, path);
    test_offset0(wpath);
    test_commit_upgrade(wpath, path);
    test_no_inherit(wpath, path);
    test_two_prepares(path);
    test_take_refused(path);
    test_race(wpath, rounds);

    DeleteFileW(wpath.c_str());
    RemoveDirectoryW(dir.c_str());
    std::printf("1..%d\n", tap_count);
    std::printf("%d passed, %d failed\n", tap_count - tap_failed, tap_failed);
    return tap_failed ? 1 : 0;
}
