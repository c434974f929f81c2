// raw-win32: the file protocol's I/O on Windows (docs/drivers/raw-win32.md).
//
// Win32File is the whole driver minus the block-graph glue; the `file`
// driver table at the end of file-win32.cpp wraps it the way raw-posix wraps
// its fd.  Control plane (open) returns Status; data plane returns negative
// errno, never throws.
#pragma once

#ifndef _WIN32
#error "block/drivers/file-win32.h is for Windows builds only"
#endif

#include <windows.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "block/locking/win32.h"
#include "miniblock/status.h"

namespace mb {

struct Win32FileOptions {
    bool read_only = false;
    // cache=none: FILE_FLAG_NO_BUFFERING.  Requests whose offset, length or
    // buffer are not aligned go through an aligned bounce buffer.
    bool no_buffering = false;
    enum class Create {
        No,         // the file must exist
        IfMissing,  // open it, or create it empty (never truncates)
        Always,     // create or truncate
        New,        // fail if it exists
    };
    Create create = Create::No;
};

class Win32File {
public:
    // `path` is UTF-8 (converted with MultiByteToWideChar, then CreateFileW).
    // Share modes let every other process open, write and delete the file:
    // the lock protocol, not the share mode, decides who may use the image.
    static Result<Win32File> open(std::string_view path, const Win32FileOptions &opts);

    Win32File(Win32File &&) noexcept = default;
    Win32File &operator=(Win32File &&) noexcept = default;

    // Reads `len` bytes at `offset`; bytes past the end of file read as
    // zeros (as raw-posix does).  0 or -errno.
    int pread(int64_t offset, void *buf, size_t len);
    // Writes all `len` bytes at `offset`, extending the file if needed.
    // With no_buffering, unaligned writes read-modify-write whole sectors:
    // the caller must not run overlapping unaligned writes concurrently (the
    // block layer serialises them, as QEMU's does for request_alignment).
    int pwrite(int64_t offset, const void *buf, size_t len);
    int flush();                   // FlushFileBuffers
    int truncate(int64_t length);  // FileEndOfFileInfo
    int64_t length();              // GetFileSizeEx; >= 0 or -errno

    HANDLE handle() const { return h_.get(); }
    const std::string &path() const { return path_; }
    bool read_only() const { return opts_.read_only; }
    // The offset/length/buffer alignment that avoids bouncing (1 when
    // buffered): the driver table's request_alignment.
    uint32_t alignment() const { return align_; }

private:
    Win32File(Win32Handle h, std::string path, Win32FileOptions opts, uint32_t align)
        : h_(std::move(h)), path_(std::move(path)), opts_(opts), align_(align) {}
    // One ReadFile/WriteFile at `offset`: bytes done (a read may stop at EOF)
    // or -errno.
    int64_t io_once(bool write, int64_t offset, void *buf, DWORD len);
    int pread_direct(int64_t offset, void *buf, size_t len);
    int pwrite_direct(int64_t offset, const void *buf, size_t len);

    Win32Handle h_;
    std::string path_;
    Win32FileOptions opts_;
    uint32_t align_ = 1;
};

}  // namespace mb
