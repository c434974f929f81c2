// raw-win32: file I/O for the `file` protocol on Windows.  See
// file-win32.h; the lock protocol is block/locking/win32.cpp.
#include "block/drivers/file-win32.h"

#include <malloc.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

namespace mb {

namespace {

// Sector size assumed for FILE_FLAG_NO_BUFFERING.  4096 is a multiple of
// every sector size Windows disks use (512, 512e, 4Kn), so it is always
// right, and asking the volume (FileStorageInfo) would only let us bounce
// less on 512-byte disks, which Wine cannot tell us anyway.
constexpr uint32_t NO_BUFFERING_ALIGN = 4096;

// ReadFile/WriteFile take a DWORD length: split larger requests.
constexpr DWORD MAX_IO = 1u << 30;

struct AlignedFree {
    void operator()(void *p) const { _aligned_free(p); }
};
using AlignedBuf = std::unique_ptr<uint8_t, AlignedFree>;

AlignedBuf aligned_alloc_buf(size_t size, size_t align) {
    return AlignedBuf(static_cast<uint8_t *>(_aligned_malloc(size, align)));
}

bool is_aligned(uint64_t v, uint32_t a) {
    return (v & (a - 1)) == 0;
}

}  // namespace

Result<Win32File> Win32File::open(std::string_view path, const Win32FileOptions &opts) {
    std::string p(path);
    Result<std::wstring> wide = utf8_to_wide(path);
    if (!wide.ok()) return wide.take_status().prefix("Could not open '" + p + "'");
    if (wide->empty()) return Status::Error(EINVAL, "Could not open '': empty file name");

    DWORD access = GENERIC_READ | (opts.read_only ? 0 : GENERIC_WRITE);
    // Everyone may open, write and delete: the lock protocol decides who uses
    // the image, and a share mode would make other processes fail with a
    // "sharing violation" that names nobody (and QEMU processes, which open
    // images without locks on Windows, would lock us out by accident).
    DWORD share = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE;
    DWORD disposition = OPEN_EXISTING;
    if (opts.create == Win32FileOptions::Create::Always) disposition = CREATE_ALWAYS;
    if (opts.create == Win32FileOptions::Create::New) disposition = CREATE_NEW;
    if (opts.read_only && disposition != OPEN_EXISTING) {
        return Status::Error(EINVAL, "Could not create '" + p + "': opened read-only");
    }
    // Overlapped, so that requests from several threads run in parallel and
    // the event loop can later complete them through a completion port.
    DWORD flags = FILE_ATTRIBUTE_NORMAL | FILE_FLAG_OVERLAPPED;
    if (opts.no_buffering) flags |= FILE_FLAG_NO_BUFFERING;

    // Security attributes null: the handle is not inheritable, so no child
    // process (a helper started with bInheritHandles for its pipes) keeps
    // the image, and with it the locks, open behind our back.
    Win32Handle h(CreateFileW(wide->c_str(), access, share, nullptr, disposition, flags, nullptr));
    if (!h.valid()) return Win32Error("Could not open '" + p + "'", GetLastError());

    BY_HANDLE_FILE_INFORMATION info;
    if (GetFileInformationByHandle(h.get(), &info) &&
        (info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY)) {
        return Status::Error(EISDIR, "Could not open '" + p + "': Is a directory");
    }
    return Win32File(std::move(h), std::move(p), opts, opts.no_buffering ? NO_BUFFERING_ALIGN : 1);
}

int64_t Win32File::io_once(bool write, int64_t offset, void *buf, DWORD len) {
    // One event per request: the handle is overlapped, and waiting on the
    // handle itself would confuse concurrent requests.
    Win32Handle ev(CreateEventW(nullptr, TRUE, FALSE, nullptr));
    if (!ev.valid()) return -win32_to_errno(GetLastError());
    OVERLAPPED ov{};
    ov.Offset = DWORD(uint64_t(offset));
    ov.OffsetHigh = DWORD(uint64_t(offset) >> 32);
    ov.hEvent = ev.get();
    BOOL ok = write ? WriteFile(h_.get(), buf, len, nullptr, &ov)
                    : ReadFile(h_.get(), buf, len, nullptr, &ov);
    DWORD err = ok ? ERROR_SUCCESS : GetLastError();
    DWORD done = 0;
    if (ok || err == ERROR_IO_PENDING) {
        if (GetOverlappedResult(h_.get(), &ov, &done, TRUE)) return done;
        err = GetLastError();
    }
    // Reading at or past the end of file is not an error, just nothing.
    if (!write && err == ERROR_HANDLE_EOF) return 0;
    return -win32_to_errno(err);
}

int Win32File::pread_direct(int64_t offset, void *buf, size_t len) {
    auto *p = static_cast<uint8_t *>(buf);
    size_t done = 0;
    while (done < len) {
        DWORD chunk = DWORD(std::min<size_t>(len - done, MAX_IO));
        int64_t n = io_once(false, offset + int64_t(done), p + done, chunk);
        if (n < 0) return int(n);
        done += size_t(n);
        // A short read of a regular file means end of file (and with
        // no_buffering the next read would be unaligned): zeros from here.
        if (n < chunk) {
            std::memset(p + done, 0, len - done);
            break;
        }
    }
    return 0;
}

int Win32File::pwrite_direct(int64_t offset, const void *buf, size_t len) {
    auto *p = static_cast<uint8_t *>(const_cast<void *>(buf));  // WriteFile does not write it
    size_t done = 0;
    while (done < len) {
        DWORD chunk = DWORD(std::min<size_t>(len - done, MAX_IO));
        int64_t n = io_once(true, offset + int64_t(done), p + done, chunk);
        if (n < 0) return int(n);
        if (n == 0) return -EIO;  // no progress: do not spin
        done += size_t(n);
    }
    return 0;
}

int Win32File::pread(int64_t offset, void *buf, size_t len) {
    if (offset < 0) return -EINVAL;
    if (len == 0) return 0;
    const uint32_t a = align_;
    if (a == 1 || (is_aligned(uint64_t(offset), a) && is_aligned(len, a) &&
                   is_aligned(reinterpret_cast<uintptr_t>(buf), a))) {
        return pread_direct(offset, buf, len);
    }
    const int64_t start = offset & ~int64_t(a - 1);
    const int64_t end = (offset + int64_t(len) + a - 1) & ~int64_t(a - 1);
    AlignedBuf bounce = aligned_alloc_buf(size_t(end - start), a);
    if (!bounce) return -ENOMEM;
    int ret = pread_direct(start, bounce.get(), size_t(end - start));
    if (ret < 0) return ret;
    std::memcpy(buf, bounce.get() + (offset - start), len);
    return 0;
}

int Win32File::pwrite(int64_t offset, const void *buf, size_t len) {
    if (offset < 0) return -EINVAL;
    if (len == 0) return 0;
    const uint32_t a = align_;
    if (a == 1 || (is_aligned(uint64_t(offset), a) && is_aligned(len, a) &&
                   is_aligned(reinterpret_cast<uintptr_t>(buf), a))) {
        return pwrite_direct(offset, buf, len);
    }
    // Read-modify-write of whole sectors.
    const int64_t start = offset & ~int64_t(a - 1);
    const int64_t end = (offset + int64_t(len) + a - 1) & ~int64_t(a - 1);
    const size_t span = size_t(end - start);
    AlignedBuf bounce = aligned_alloc_buf(span, a);
    if (!bounce) return -ENOMEM;
    const int64_t old_len = length();
    if (old_len < 0) return int(old_len);
    int ret = 0;
    if (offset != start) ret = pread_direct(start, bounce.get(), a);
    if (ret == 0 && offset + int64_t(len) != end && (end - a != start || offset == start)) {
        ret = pread_direct(end - a, bounce.get() + span - a, a);
    }
    if (ret < 0) return ret;
    std::memcpy(bounce.get() + (offset - start), buf, len);
    ret = pwrite_direct(start, bounce.get(), span);
    if (ret < 0) return ret;
    // Writing whole sectors past the old end grew the file beyond what was
    // asked: cut it back to where the request ended.
    const int64_t want_len = std::max(old_len, offset + int64_t(len));
    if (end > want_len) return truncate(want_len);
    return 0;
}

int Win32File::flush() {
    // Nothing of ours can be dirty on a read-only handle, and
    // FlushFileBuffers refuses one (ERROR_ACCESS_DENIED).
    if (opts_.read_only) return 0;
    if (!FlushFileBuffers(h_.get())) return -win32_to_errno(GetLastError());
    return 0;
}

int Win32File::truncate(int64_t length) {
    if (length < 0) return -EINVAL;
    FILE_END_OF_FILE_INFO info{};
    info.EndOfFile.QuadPart = length;
    if (!SetFileInformationByHandle(h_.get(), FileEndOfFileInfo, &info, sizeof info)) {
        return -win32_to_errno(GetLastError());
    }
    return 0;
}

int64_t Win32File::length() {
    LARGE_INTEGER size;
    if (!GetFileSizeEx(h_.get(), &size)) return -win32_to_errno(GetLastError());
    return size.QuadPart;
}

}  // namespace mb
