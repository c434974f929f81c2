// QEMU's permission-byte protocol on Windows (docs/drivers/raw-win32.md).
//
// The flaw: Windows byte-range locks (LockFileEx) are *mandatory*.  A shared
// lock on a byte stops every writer of that byte, our own handle included,
// and an exclusive lock stops readers too.  QEMU's bytes 100-103 and 200-203
// sit inside the first sector of every image, so locking them as-is would
// make images unwritable.  Windows also has no F_GETLK: the only way to ask
// "does anyone hold byte X?" is to try an exclusive lock on it, and a
// handle's own shared lock makes that try fail as surely as a stranger's.
//
// Our answer:
//  * The same byte map, moved to a region no image reaches: byte B+100+i is
//    "I use bit i", B+200+i is "I forbid bit i", with B = 2^63 - 2^48
//    (0x7fff000000000000, almost 8 EiB).  Locks beyond end-of-file are legal
//    on Windows, and no Windows file system lets a file grow that far (NTFS
//    stops at 8 PiB, ReFS at 35 PiB), so these bytes never cover data.
//  * A guard byte at B+300, locked exclusively around every sequence that
//    *takes* locks (prepare).  Inside it, nobody else can take or test a
//    lock, so test-then-take is atomic: we test each byte of the others by
//    trying an exclusive lock on it (releasing our own shared lock on that
//    byte for the moment of the test and taking it back), then take ours.
//    Two exclusive openers therefore run one after the other, and the second
//    sees the first's bytes.  Dropping locks (commit, abort, release) needs no
//    guard: it can only remove conflicts.
//  * Every Win32 call goes through a table (Win32LockCalls) that tests swap
//    to inject failures.  On a failure prepare undoes what it did, so the
//    byte map is exactly as before; undo steps are retried because they must
//    not fail, and if the system refuses them persistently the error says
//    that the previous state could not be restored and held() tells the truth.
#pragma once

#ifndef _WIN32
#error "block/locking/win32.h is for Windows builds only"
#endif

#include <windows.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "block/locking/lock_protocol.h"
#include "block/permissions.h"
#include "miniblock/status.h"

namespace mb {

// Owns one HANDLE (file or event); closes it once.  INVALID_HANDLE_VALUE and
// nullptr both mean "none", because CreateFileW and CreateEventW disagree on
// how they say "failed".
class Win32Handle {
public:
    Win32Handle() = default;
    explicit Win32Handle(HANDLE h) : h_(h) {}
    Win32Handle(Win32Handle &&o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
    Win32Handle &operator=(Win32Handle &&o) noexcept {
        if (this != &o) reset(std::exchange(o.h_, nullptr));
        return *this;
    }
    Win32Handle(const Win32Handle &) = delete;
    Win32Handle &operator=(const Win32Handle &) = delete;
    ~Win32Handle() { reset(); }

    HANDLE get() const { return h_; }
    bool valid() const { return h_ != nullptr && h_ != INVALID_HANDLE_VALUE; }
    void reset(HANDLE h = nullptr) {
        if (valid()) CloseHandle(h_);
        h_ = h;
    }

private:
    HANDLE h_ = nullptr;
};

// The one mapping of Win32 error codes to errno values (positive).  Data-plane
// calls return its negation; control-plane calls wrap it with Win32Error().
int win32_to_errno(DWORD err);
// "context: strerror(errno)" through PosixError, so that messages read the
// same as on POSIX.
Status Win32Error(std::string_view context, DWORD err);

// UTF-8 <-> UTF-16.  Invalid input gives an EINVAL status (never a lossy
// conversion: a mangled path could name another file).
Result<std::wstring> utf8_to_wide(std::string_view s);
std::string wide_to_utf8(std::wstring_view s);

// The Win32 calls the lock protocol makes.  Tests swap the table to count
// calls and inject failures (SQLite's aSyscall idea).
struct Win32LockCalls {
    BOOL(WINAPI *LockFileEx)(HANDLE, DWORD, DWORD, DWORD, DWORD, LPOVERLAPPED);
    BOOL(WINAPI *UnlockFileEx)(HANDLE, DWORD, DWORD, DWORD, LPOVERLAPPED);
    VOID(WINAPI *Sleep)(DWORD);
    ULONGLONG(WINAPI *GetTickCount64)(VOID);
};
// The real calls.
const Win32LockCalls &win32_lock_calls();

// The lock region (see the header comment and docs/drivers/raw-win32.md).
inline constexpr uint64_t WIN32_LOCK_BASE = 0x7fff000000000000ull;
inline constexpr uint64_t win32_use_byte(int bit) {
    return WIN32_LOCK_BASE + LOCK_USE_BASE + bit;
}
inline constexpr uint64_t win32_forbid_byte(int bit) {
    return WIN32_LOCK_BASE + LOCK_FORBID_BASE + bit;
}
inline constexpr uint64_t WIN32_GUARD_BYTE = WIN32_LOCK_BASE + 300;

struct Win32LockOptions {
    // How long prepare waits for another process's guard section to end.
    // Guard sections last microseconds; a long wait means a peer is stuck
    // (stopped in a debugger), and failing beats hanging.
    DWORD guard_timeout_ms = 5000;
    // Test hook: the call table to use (nullptr = the real calls).
    const Win32LockCalls *calls = nullptr;
};

// mb::LockProtocol on a Windows file handle.  The handle is borrowed: its
// owner (Win32File) must outlive this object; closing the handle drops every
// lock anyway.  Not thread-safe: the block layer changes permissions from one
// thread.
class Win32Locks final : public LockProtocol {
public:
    // `path` is only for messages.
    Win32Locks(HANDLE file, std::string path, Win32LockOptions opts = {});
    // Releases, as the POSIX protocol's destructor does; so it must run
    // before the handle is closed (the handle's owner outlives this object).
    ~Win32Locks() override { release(); }
    Win32Locks(const Win32Locks &) = delete;
    Win32Locks &operator=(const Win32Locks &) = delete;

    Status prepare(uint32_t perm, uint32_t shared) override;
    void commit() override;
    void abort() override;
    void release() override;
    LockBits held() const override { return held_; }

    // Moves every lock held to `new_file` (the same file, opened again:
    // commit's read-write reopen), with no moment in which a byte is free:
    // each is taken on the new handle first (shared locks of two handles
    // never conflict), then dropped from the old one.  On failure nothing
    // changed.  Not during a transaction (EBUSY).
    Status move_handle(HANDLE new_file);

    // Which protocol bytes other handles hold (this object holding none),
    // tested inside the guard so that the answer is one consistent moment.
    Result<LockBits> others_held();

private:
    bool lock_byte(uint64_t off, bool exclusive, DWORD *err);
    bool unlock_byte(uint64_t off, DWORD *err);
    bool must_unlock(uint64_t off);
    bool must_relock(uint64_t off);
    Status take_guard();
    void drop_guard();
    Status test_byte(uint64_t off, bool ours, bool *conflict, bool *lost);
    Status conflict_error(bool shared_lock, int bit) const;
    std::string hint() const;
    Status take_error(uint64_t off, bool forbid_byte, int bit, DWORD err) const;
    // Drops the bytes in `bits` from held_ (unlocking them).
    void drop(LockBits bits);

    HANDLE file_;
    std::string path_;
    Win32LockOptions opts_;
    const Win32LockCalls *calls_;
    Win32Handle event_;  // for OVERLAPPED on handles opened for overlapped I/O
    LockBits held_;
    LockBits before_;  // held_ before the transaction's first prepare, for abort
    LockBits wanted_;  // the last prepared state, for commit
    bool prepared_ = false;
};

// For `miniblock-img locks`: which of the protocol's bytes are held on the
// file at `path` (UTF-8), opened read-only for the look, which disturbs no
// one.  Windows cannot say whose they are.
Result<LockBits> win32_lock_bytes_held(const std::string &path);

}  // namespace mb
