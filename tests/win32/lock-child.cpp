// win32-lock-child: one Windows process that opens an image and locks it on
// command, so that win32-tests can put two (or three) real processes on one
// file.  Usage: win32-lock-child PATH; then one command per line on stdin,
// one reply per line on stdout ("ok ..." or "fail ERRNO MESSAGE | DETAIL...").
//
//   open ro|rw [nobuf]     Win32File::open
//   lock MODE [as-ro]      lock as the DESIGN table says for a raw image
//                          (as-ro: with the read-only row on a writable handle)
//   perms PERM SHARED      prepare + commit of an explicit (perm, shared); a
//                          failure also says whether held() is unchanged
//   held                   "ok use=U forbid=F" (hex bit masks)
//   write OFF LEN          write LEN bytes at OFF and read them back
//   race EVENT MODE [slow] [late] [noguard]
//                          open the named event, say "ready", wait for it,
//                          then lock MODE (the barrier of the race test);
//                          slow: a 20 ms pause between tests and takes;
//                          late: start 2 ms after the barrier opens;
//                          noguard: the negative control, with the guard
//                          byte's lock calls faked (they lock nothing)
//   wholefile              one exclusive LockFileEx over the whole file (a
//                          program with a lock protocol of its own)
//   close                  release the locks, close the file
//   quit
#include <windows.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "block/drivers/file-win32.h"
#include "block/locking/win32.h"
#include "block/permissions.h"

using namespace mb;

namespace {

void reply(const std::string &s) {
    std::fputs(s.c_str(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
}

std::string one_line(const Status &st) {
    std::string s = "fail " + std::to_string(st.err()) + " " + st.message();
    // Detail lines joined with " | ": one reply is one line.
    for (char c : st.detail().empty() ? std::string() : " | " + st.detail()) {
        if (c == '\n')
            s += " | ";
        else
            s += c;
    }
    return s;
}

// Call tables for the race test.  "slow" sleeps 20 ms before the first
// shared lock (the take phase), widening the window between testing and
// taking to what an unlucky scheduler could do; "noguard" (the negative
// control) fakes the guard byte's lock and unlock, which then succeed
// without locking anything, so two openers can interleave their tests and
// takes, which is what the guard prevents.
bool g_slow = false, g_noguard = false, g_took = false;
bool is_guard(LPOVERLAPPED ov) {
    return ((uint64_t(ov->OffsetHigh) << 32) | ov->Offset) == WIN32_GUARD_BYTE;
}
BOOL WINAPI race_lock(HANDLE h, DWORD f, DWORD r, DWORD lo, DWORD hi, LPOVERLAPPED ov) {
    if (g_noguard && is_guard(ov)) return TRUE;
    if (g_slow && !g_took && !(f & LOCKFILE_EXCLUSIVE_LOCK)) {
        g_took = true;
        Sleep(20);
    }
    return LockFileEx(h, f, r, lo, hi, ov);
}
BOOL WINAPI race_unlock(HANDLE h, DWORD r, DWORD lo, DWORD hi, LPOVERLAPPED ov) {
    if (g_noguard && is_guard(ov)) return TRUE;
    return UnlockFileEx(h, r, lo, hi, ov);
}
const Win32LockCalls race_calls = {race_lock, race_unlock, ::Sleep, ::GetTickCount64};

struct State {
    std::string path;
    std::optional<Win32File> file;
    std::unique_ptr<Win32Locks> locks;
    bool ro = true;
};

std::string do_lock(State &s, const std::string &mode_name, bool as_ro) {
    if (!s.file) return "fail 9 not open";
    auto mode = qapi::parse_LockMode(mode_name);
    if (!mode) return "fail 22 bad mode " + mode_name;
    auto pp = lock_mode_perms(*mode, s.ro || as_ro, true, NodeRole::Top);
    if (!pp.ok()) return one_line(pp.status());
    // lock=off takes no locks and tests nothing (DESIGN section 4).
    if (*mode == qapi::LockMode::Off) return "ok off";
    Status st = s.locks->prepare(pp->perm, pp->shared);
    if (!st.ok()) return one_line(st);
    s.locks->commit();
    return "ok";
}

std::string handle(State &s, const std::string &line) {
    std::istringstream in(line);
    std::string cmd;
    in >> cmd;
    if (cmd == "open") {
        std::string rw, opt;
        in >> rw >> opt;
        Win32FileOptions o;
        o.read_only = rw != "rw";
        o.no_buffering = opt == "nobuf";
        s.locks.reset();
        s.file.reset();
        auto f = Win32File::open(s.path, o);
        if (!f.ok()) return one_line(f.status());
        s.file.emplace(std::move(*f));
        s.ro = o.read_only;
        s.locks = std::make_unique<Win32Locks>(s.file->handle(), s.path);
        return "ok";
    }
    if (cmd == "lock") {
        std::string mode, opt;
        in >> mode >> opt;
        return do_lock(s, mode, opt == "as-ro");
    }
    if (cmd == "perms") {
        if (!s.file) return "fail 9 not open";
        uint32_t perm = 0, shared = 0;
        in >> std::hex >> perm >> shared;
        LockBits before = s.locks->held();
        Status st = s.locks->prepare(perm, shared);
        if (!st.ok()) {
            return one_line(st) + (s.locks->held() == before ? " [kept]" : " [CHANGED]");
        }
        s.locks->commit();
        return "ok";
    }
    if (cmd == "held") {
        if (!s.file) return "fail 9 not open";
        char buf[64];
        LockBits b = s.locks->held();
        std::snprintf(buf, sizeof buf, "ok use=%x forbid=%x", unsigned(b.use), unsigned(b.forbid));
        return buf;
    }
    if (cmd == "write") {
        if (!s.file) return "fail 9 not open";
        long long off = 0, len = 0;
        in >> off >> len;
        std::vector<uint8_t> data(static_cast<size_t>(len)), back(static_cast<size_t>(len));
        for (size_t i = 0; i < data.size(); i++) data[i] = uint8_t(GetCurrentProcessId() + i);
        int r = s.file->pwrite(off, data.data(), data.size());
        if (r < 0) return "fail " + std::to_string(-r) + " write: " + std::strerror(-r);
        r = s.file->pread(off, back.data(), back.size());
        if (r < 0) return "fail " + std::to_string(-r) + " read: " + std::strerror(-r);
        if (back != data) return "fail 5 read back other data";
        return "ok";
    }
    if (cmd == "race") {
        std::string event, mode, opt;
        in >> event >> mode;
        if (!s.file) return "fail 9 not open";
        bool late = false;
        while (in >> opt) {
            g_slow |= opt == "slow";
            g_noguard |= opt == "noguard";
            late |= opt == "late";
        }
        if (g_slow || g_noguard) {
            Win32LockOptions o;
            o.calls = &race_calls;
            s.locks = std::make_unique<Win32Locks>(s.file->handle(), s.path, o);
        }
        Win32Handle ev(OpenEventA(SYNCHRONIZE, FALSE, event.c_str()));
        if (!ev.valid()) return "fail 2 no event " + event;
        reply("ready");
        if (WaitForSingleObject(ev.get(), 60000) != WAIT_OBJECT_0)
            return "fail 110 barrier timeout";
        // Start 2 ms after the other opener: its tests are done by then and
        // its takes not yet begun if it is "slow".
        if (late) Sleep(2);
        return do_lock(s, mode, false);
    }
    if (cmd == "wholefile") {
        // Another protocol: one exclusive LockFileEx over every byte, as a
        // program with a whole-file scheme of its own would take (the 2009
        // patch's lock, on Windows).  Released by close.
        if (!s.file) return "fail 9 not open";
        OVERLAPPED ov{};
        Win32Handle ev(CreateEventW(nullptr, TRUE, FALSE, nullptr));
        ov.hEvent = ev.get();
        if (!LockFileEx(s.file->handle(), LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 0,
                        MAXDWORD, MAXDWORD, &ov)) {
            return "fail " + std::to_string(win32_to_errno(GetLastError())) + " LockFileEx";
        }
        return "ok";
    }
    if (cmd == "close") {
        if (s.locks) s.locks->release();
        s.locks.reset();
        s.file.reset();
        return "ok";
    }
    return "fail 22 unknown command " + cmd;
}

}  // namespace

int wmain(int argc, wchar_t **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: win32-lock-child PATH\n");
        return 2;
    }
    State s;
    s.path = wide_to_utf8(argv[1]);
    std::string line;
    while (std::getline(std::cin, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line == "quit") break;
        if (line.empty()) continue;
        reply(handle(s, line));
    }
    return 0;
}
