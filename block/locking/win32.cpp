// QEMU's permission-byte protocol on Windows: see win32.h for the design and
// docs/drivers/raw-win32.md for the proof that two exclusive openers cannot
// both win.
#include "block/locking/win32.h"

#include <cerrno>
#include <cstdio>

namespace mb {

int win32_to_errno(DWORD err) {
    switch (err) {
    case ERROR_SUCCESS: return 0;
    case ERROR_FILE_NOT_FOUND:
    case ERROR_PATH_NOT_FOUND:
    case ERROR_INVALID_DRIVE:
    case ERROR_BAD_NETPATH:
    case ERROR_BAD_NET_NAME: return ENOENT;
    case ERROR_ACCESS_DENIED:
    case ERROR_SHARING_VIOLATION:  // someone opened it without sharing: not a lock of ours
    case ERROR_PRIVILEGE_NOT_HELD: return EACCES;
    case ERROR_WRITE_PROTECT: return EROFS;
    case ERROR_LOCK_VIOLATION:
    case ERROR_LOCK_FAILED:
    case ERROR_NOT_LOCKED: return EAGAIN;
    case ERROR_FILE_EXISTS:
    case ERROR_ALREADY_EXISTS: return EEXIST;
    case ERROR_DISK_FULL:
    case ERROR_HANDLE_DISK_FULL: return ENOSPC;
    case ERROR_FILE_TOO_LARGE: return EFBIG;
    case ERROR_NOT_ENOUGH_MEMORY:
    case ERROR_OUTOFMEMORY:
    case ERROR_NO_SYSTEM_RESOURCES: return ENOMEM;
    case ERROR_INVALID_HANDLE: return EBADF;
    case ERROR_INVALID_PARAMETER:
    case ERROR_INVALID_NAME:
    case ERROR_BAD_PATHNAME:
    case ERROR_NEGATIVE_SEEK:
    case ERROR_NO_UNICODE_TRANSLATION: return EINVAL;
    case ERROR_FILENAME_EXCED_RANGE: return ENAMETOOLONG;
    case ERROR_DIRECTORY: return ENOTDIR;
    case ERROR_NOT_SUPPORTED:
    case ERROR_INVALID_FUNCTION: return ENOTSUP;
    case ERROR_TOO_MANY_OPEN_FILES: return EMFILE;
    case ERROR_BUSY:
    case ERROR_DEVICE_IN_USE: return EBUSY;
    case ERROR_OPERATION_ABORTED: return EINTR;
    default: return EIO;  // ERROR_CRC, ERROR_IO_DEVICE, ... and anything unforeseen
    }
}

Status Win32Error(std::string_view context, DWORD err) {
    return PosixError(context, win32_to_errno(err));
}

Result<std::wstring> utf8_to_wide(std::string_view s) {
    if (s.empty()) return std::wstring();
    if (s.size() > 0x7fffffff) return Status::Error(ENAMETOOLONG, "name too long");
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s.data(), int(s.size()), nullptr, 0);
    if (n <= 0) return Status::Error(EINVAL, "'" + std::string(s) + "' is not valid UTF-8");
    std::wstring w(size_t(n), L'\0');
    MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s.data(), int(s.size()), w.data(), n);
    return w;
}

std::string wide_to_utf8(std::wstring_view w) {
    if (w.empty()) return {};
    int n = WideCharToMultiByte(CP_UTF8, 0, w.data(), int(w.size()), nullptr, 0, nullptr, nullptr);
    if (n <= 0) return {};
    std::string s(size_t(n), '\0');
    WideCharToMultiByte(CP_UTF8, 0, w.data(), int(w.size()), s.data(), n, nullptr, nullptr);
    return s;
}

const Win32LockCalls &win32_lock_calls() {
    static const Win32LockCalls real = {::LockFileEx, ::UnlockFileEx, ::Sleep, ::GetTickCount64};
    return real;
}

namespace {

// A try-lock refused because someone holds the byte.  Windows says
// ERROR_LOCK_VIOLATION for LOCKFILE_FAIL_IMMEDIATELY; some redirectors say
// ERROR_LOCK_FAILED.
bool is_conflict(DWORD err) {
    return err == ERROR_LOCK_VIOLATION || err == ERROR_LOCK_FAILED;
}

// Undo steps are retried: a transient refusal (low memory in the redirector)
// must not leave the lock state changed.
constexpr int UNDO_TRIES = 5;

std::string byte_name(uint64_t off) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "byte 0x%llx", static_cast<unsigned long long>(off));
    return buf;
}

}  // namespace

Win32Locks::Win32Locks(HANDLE file, std::string path, Win32LockOptions opts)
    : file_(file),
      path_(std::move(path)),
      opts_(opts),
      calls_(opts.calls ? opts.calls : &win32_lock_calls()),
      // A handle opened with FILE_FLAG_OVERLAPPED needs an event to wait on
      // should a lock call ever pend; with LOCKFILE_FAIL_IMMEDIATELY it does
      // not, and a null event then only costs us that wait.
      event_(CreateEventW(nullptr, TRUE, FALSE, nullptr)) {}

bool Win32Locks::lock_byte(uint64_t off, bool exclusive, DWORD *err) {
    OVERLAPPED ov{};
    ov.Offset = DWORD(off);
    ov.OffsetHigh = DWORD(off >> 32);
    ov.hEvent = event_.get();
    // Always fail immediately: a blocking wait would hang on a peer that is
    // stuck, and the guard has its own bounded retry.
    DWORD flags = LOCKFILE_FAIL_IMMEDIATELY | (exclusive ? LOCKFILE_EXCLUSIVE_LOCK : 0);
    if (calls_->LockFileEx(file_, flags, 0, 1, 0, &ov)) return true;
    DWORD e = GetLastError();
    if (e == ERROR_IO_PENDING) {
        DWORD n;
        if (GetOverlappedResult(file_, &ov, &n, TRUE)) return true;
        e = GetLastError();
    }
    *err = e;
    return false;
}

bool Win32Locks::unlock_byte(uint64_t off, DWORD *err) {
    OVERLAPPED ov{};
    ov.Offset = DWORD(off);
    ov.OffsetHigh = DWORD(off >> 32);
    ov.hEvent = event_.get();
    if (calls_->UnlockFileEx(file_, 0, 1, 0, &ov)) return true;
    *err = GetLastError();
    return false;
}

bool Win32Locks::must_unlock(uint64_t off) {
    for (int i = 0; i < UNDO_TRIES; i++) {
        DWORD err;
        if (unlock_byte(off, &err)) return true;
        // Nothing is locked there (any more): the state we wanted.
        if (err == ERROR_NOT_LOCKED) return true;
        calls_->Sleep(1);
    }
    return false;
}

bool Win32Locks::must_relock(uint64_t off) {
    for (int i = 0; i < UNDO_TRIES; i++) {
        DWORD err;
        if (lock_byte(off, false, &err)) return true;
        calls_->Sleep(1);
    }
    return false;
}

// QEMU's hint, word for word.
std::string Win32Locks::hint() const {
    return "Is another process using the image [" + path_ + "]?";
}

// A byte of our region that the protocol never locks: if even a shared lock
// on it is refused, someone holds a lock over a range that covers it, i.e.
// another program with a protocol of its own (a lock over the whole file).
// Waiting for the guard would then be waiting for that program to go away.
constexpr uint64_t WIN32_FOREIGN_PROBE_BYTE = WIN32_LOCK_BASE + 301;

Status Win32Locks::take_guard() {
    ULONGLONG start = calls_->GetTickCount64();
    DWORD backoff = 1;
    bool probed = false;
    for (;;) {
        DWORD err;
        if (lock_byte(WIN32_GUARD_BYTE, true, &err)) return Status::OK();
        if (!is_conflict(err)) return Win32Error("Failed to lock '" + path_ + "'", err);
        if (!probed) {
            probed = true;
            DWORD perr;
            if (lock_byte(WIN32_FOREIGN_PROBE_BYTE, false, &perr)) {
                must_unlock(WIN32_FOREIGN_PROBE_BYTE);
            } else if (is_conflict(perr)) {
                return Status::Error(
                    EAGAIN, "Failed to lock '" + path_ + "': another process locks the whole file",
                    hint() +
                        "\nIt does not follow QEMU's lock protocol; Windows cannot say which "
                        "process it is");
            }
        }
        if (calls_->GetTickCount64() - start >= opts_.guard_timeout_ms) {
            return Status::Error(
                EAGAIN, "Failed to get the lock guard of '" + path_ + "'",
                hint() + "\nAnother process has been changing its locks for too long");
        }
        calls_->Sleep(backoff);
        if (backoff < 16) backoff *= 2;
    }
}

void Win32Locks::drop(LockBits bits) {
    for (int i = 0; i < BLK_PERM_COUNT; i++) {
        uint32_t b = 1u << i;
        // A byte that refuses to unlock stays in held_: held() tells the
        // truth, and an extra lock only keeps others out until we close.
        if ((bits.use & held_.use & b) && must_unlock(win32_use_byte(i))) held_.use &= ~b;
        if ((bits.forbid & held_.forbid & b) && must_unlock(win32_forbid_byte(i))) {
            held_.forbid &= ~b;
        }
    }
}

Status Win32Locks::conflict_error(bool shared_lock, int bit) const {
    // The same texts as the POSIX protocol (block/locking/qemu-bytes.cpp),
    // except that Windows cannot name the holder.
    std::string msg = shared_lock ? "Failed to get shared \"" : "Failed to get \"";
    msg += perm_name(bit);
    msg += "\" lock";
    return Status::Error(EAGAIN, std::move(msg),
                         hint() + "\nWindows cannot say which process holds it");
}

// A refused take of our own byte: someone holds it exclusively (a process
// testing outside the guard, or one that locks whole ranges).  The texts are
// the conflict ones, as on POSIX; anything else is a system error.
Status Win32Locks::take_error(uint64_t off, bool forbid_byte, int bit, DWORD err) const {
    if (is_conflict(err)) return conflict_error(forbid_byte, bit);
    return Win32Error("Failed to lock " + byte_name(off) + " of '" + path_ + "'", err);
}

// Tests byte `off` for a lock held by anyone but us.  Windows offers no
// F_GETLK, so the test is an exclusive try-lock; our own shared lock on the
// byte (if `ours`) would refuse it too, so we drop ours for the test and take
// it back.  This is safe only inside the guard: nobody else takes or tests
// locks meanwhile, so nobody can see the byte free or slip in.
Status Win32Locks::test_byte(uint64_t off, bool ours, bool *conflict, bool *lost) {
    *conflict = false;
    *lost = false;
    if (ours && !must_unlock(off)) {
        // Still held: nothing changed.
        return Status::Error(EIO, "Failed to test " + byte_name(off) + " of '" + path_ + "'",
                             "Windows refused to unlock it");
    }
    DWORD err = 0;
    Status st;
    if (lock_byte(off, true, &err)) {
        if (!must_unlock(off)) {
            // We hold an exclusive lock we cannot drop: the state cannot be
            // what it was.  held() does not list it (it is not a protocol
            // byte of ours); closing the handle drops it.
            *lost = true;
            return Status::Error(EIO, "Failed to restore the locks of '" + path_ + "'",
                                 "Windows refused to unlock " + byte_name(off) +
                                     " after testing it; close the image to drop it");
        }
    } else if (is_conflict(err)) {
        *conflict = true;
    } else {
        st = Win32Error("Failed to test " + byte_name(off) + " of '" + path_ + "'", err);
    }
    if (ours && !must_relock(off)) {
        *lost = true;
        return Status::Error(EIO, "Failed to restore the locks of '" + path_ + "'",
                             "Windows refused to re-take " + byte_name(off) +
                                 "; the image stays open with fewer locks than before");
    }
    return st;
}

Status Win32Locks::prepare(uint32_t perm, uint32_t shared) {
    // A second prepare before commit/abort (a node visited twice in one
    // transaction) builds on the first, as in the POSIX protocol: its
    // failure leaves what the first took, commit() settles on the last
    // state, abort() undoes both.
    const LockBits want = lock_bits_for(perm, shared);
    const ConflictTest test = conflict_test_for(want);
    if (!prepared_) before_ = held_;
    const LockBits entry = held_;  // what a failure of this call restores

    MB_TRY(take_guard());

    Status st;
    bool lost = false;  // a byte we held could not be taken back
    // 1. Test the others' bytes in the order the POSIX protocol does (every
    //    "forbid" byte that stops our uses, then every "use" byte that stops
    //    our forbids), so that one situation gives one message everywhere.
    for (int i = 0; i < BLK_PERM_COUNT && st.ok(); i++) {
        uint32_t b = 1u << i;
        if (!(test.their_forbid & b)) continue;
        bool conflict = false, gone = false;
        st = test_byte(win32_forbid_byte(i), held_.forbid & b, &conflict, &gone);
        if (gone) {
            lost = true;
            held_.forbid &= ~b;
        }
        // A held 202 stops a writer that does not itself use write
        // unchanged: say "write", the permission the user asked for.
        bool compat = i == 2 && !(want.use & BLK_PERM_WRITE_UNCHANGED);
        if (st.ok() && conflict) st = conflict_error(false, compat ? 1 : i);
    }
    for (int i = 0; i < BLK_PERM_COUNT && st.ok(); i++) {
        uint32_t b = 1u << i;
        if (!(test.their_use & b)) continue;
        bool conflict = false, gone = false;
        st = test_byte(win32_use_byte(i), held_.use & b, &conflict, &gone);
        if (gone) {
            lost = true;
            held_.use &= ~b;
        }
        bool compat = i == 2 && !(want.forbid & BLK_PERM_WRITE_UNCHANGED);
        if (st.ok() && conflict) st = conflict_error(true, compat ? 1 : i);
    }

    // 2. Take ours.  Only a non-conforming process (one that tests outside
    //    the guard) or a failing system can refuse a shared lock here.
    for (int i = 0; i < BLK_PERM_COUNT && st.ok(); i++) {
        uint32_t b = 1u << i;
        DWORD err;
        if ((want.use & b) && !(held_.use & b)) {
            if (lock_byte(win32_use_byte(i), false, &err)) {
                held_.use |= b;
            } else {
                st = take_error(win32_use_byte(i), false, i, err);
            }
        }
        if (st.ok() && (want.forbid & b) && !(held_.forbid & b)) {
            if (lock_byte(win32_forbid_byte(i), false, &err)) {
                held_.forbid |= b;
            } else {
                st = take_error(win32_forbid_byte(i), true, i, err);
            }
        }
    }

    if (!st.ok()) {
        // Undo inside the guard, so nobody sees the half-taken state.
        drop(LockBits{held_.use & ~entry.use, held_.forbid & ~entry.forbid});
    }
    bool guard_dropped = must_unlock(WIN32_GUARD_BYTE);
    if (st.ok() && !guard_dropped) {
        // Everyone else would wait for our guard until we close: give up the
        // transaction rather than report success with peers locked out.
        st = Status::Error(EIO, "Failed to unlock the guard " + byte_name(WIN32_GUARD_BYTE) +
                                    " of '" + path_ + "'");
        drop(LockBits{held_.use & ~entry.use, held_.forbid & ~entry.forbid});
        guard_dropped = must_unlock(WIN32_GUARD_BYTE);
    }
    if (st.ok()) {
        wanted_ = want;
        prepared_ = true;
        return st;
    }
    // Undo steps that failed persistently: say so instead of the original
    // error, which no longer describes the state.
    if (!guard_dropped) {
        return Status::Error(EIO, "Failed to restore the locks of '" + path_ + "'",
                             "Windows refused to unlock the guard " + byte_name(WIN32_GUARD_BYTE) +
                                 " (after: " + st.message() +
                                 "); other processes cannot lock the image until it is closed");
    }
    if (!lost && !(held_ == entry)) {
        st = Status::Error(EIO, "Failed to restore the locks of '" + path_ + "'",
                           "Windows refused to unlock bytes taken for the failed change "
                           "(after: " +
                               st.message() + ")");
    }
    return st;
}

Status Win32Locks::move_handle(HANDLE new_file) {
    if (prepared_) {
        return Status::Error(EBUSY, "Cannot move the locks of '" + path_ + "' during a permission change");
    }
    const HANDLE old = file_;
    file_ = new_file;
    LockBits taken{};
    Status st;
    for (int i = 0; i < BLK_PERM_COUNT && st.ok(); i++) {
        uint32_t b = 1u << i;
        DWORD err;
        if (held_.use & b) {
            if (lock_byte(win32_use_byte(i), false, &err)) taken.use |= b;
            else st = take_error(win32_use_byte(i), false, i, err);
        }
        if (st.ok() && (held_.forbid & b)) {
            if (lock_byte(win32_forbid_byte(i), false, &err)) taken.forbid |= b;
            else st = take_error(win32_forbid_byte(i), true, i, err);
        }
    }
    // On failure, undo on the new handle; on success, drop from the old one.
    // Bytes that refuse to unlock there go when that handle closes, which
    // the caller does next either way.
    if (!st.ok()) file_ = new_file;
    else file_ = old;
    const LockBits undo = st.ok() ? held_ : taken;
    for (int i = 0; i < BLK_PERM_COUNT; i++) {
        uint32_t b = 1u << i;
        if (undo.use & b) must_unlock(win32_use_byte(i));
        if (undo.forbid & b) must_unlock(win32_forbid_byte(i));
    }
    file_ = st.ok() ? new_file : old;
    return st;
}

Result<LockBits> Win32Locks::others_held() {
    MB_TRY(take_guard());
    LockBits seen;
    Status st;
    for (int i = 0; i < BLK_PERM_COUNT && st.ok(); i++) {
        for (bool forbid : {false, true}) {
            const uint64_t off = forbid ? win32_forbid_byte(i) : win32_use_byte(i);
            DWORD err;
            if (lock_byte(off, true, &err)) {
                must_unlock(off);
            } else if (is_conflict(err)) {
                (forbid ? seen.forbid : seen.use) |= 1u << i;
            } else {
                st = Win32Error("Failed to test " + byte_name(off) + " of '" + path_ + "'", err);
                break;
            }
        }
    }
    must_unlock(WIN32_GUARD_BYTE);
    if (!st.ok()) return st;
    return seen;
}

Result<LockBits> win32_lock_bytes_held(const std::string &path) {
    Result<std::wstring> wide = utf8_to_wide(path);
    if (!wide.ok()) return wide.take_status().prefix("Could not open '" + path + "'");
    Win32Handle h(CreateFileW(wide->c_str(), GENERIC_READ,
                              FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, nullptr,
                              OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, nullptr));
    if (!h.valid()) return Win32Error("Could not open '" + path + "'", GetLastError());
    Win32Locks look(h.get(), path);
    return look.others_held();
}

void Win32Locks::commit() {
    if (!prepared_) return;
    prepared_ = false;
    drop(LockBits{held_.use & ~wanted_.use, held_.forbid & ~wanted_.forbid});
}

void Win32Locks::abort() {
    if (!prepared_) return;
    prepared_ = false;
    drop(LockBits{held_.use & ~before_.use, held_.forbid & ~before_.forbid});
}

void Win32Locks::release() {
    prepared_ = false;
    drop(held_);
}

}  // namespace mb
