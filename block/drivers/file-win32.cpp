// raw-win32: the `file` protocol on Windows.  Win32File (file-win32.h) does
// the I/O, Win32Locks (block/locking/win32.cpp) the locking, and the driver
// table at the end of this file plugs both into the block graph.
#include "block/drivers/file-win32.h"

#include <malloc.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#ifdef MB_WIN32_BLOCK_CORE
#include "block/aio.h"
#include "block/block_int.h"
#endif

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
    if (opts.create == Win32FileOptions::Create::IfMissing) disposition = OPEN_ALWAYS;
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
    if (!h.valid()) {
        DWORD err = GetLastError();
        // Windows refuses to open a directory this way with "access denied",
        // which would send the user looking at permissions.
        DWORD attr = GetFileAttributesW(wide->c_str());
        if (err == ERROR_ACCESS_DENIED && attr != INVALID_FILE_ATTRIBUTES &&
            (attr & FILE_ATTRIBUTE_DIRECTORY)) {
            return Status::Error(EISDIR, "'" + p + "' is a directory");
        }
        return Win32Error("Could not open '" + p + "'", err);
    }

    BY_HANDLE_FILE_INFORMATION info;
    if (GetFileInformationByHandle(h.get(), &info) &&
        (info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY)) {
        return Status::Error(EISDIR, "'" + p + "' is a directory");  // as raw-posix says it
    }
    return Win32File(std::move(h), std::move(p), opts, opts.no_buffering ? NO_BUFFERING_ALIGN : 1);
}

int64_t Win32File::io_once(bool write, int64_t offset, void *buf, DWORD len) {
    // FILE_FLAG_NO_BUFFERING's rules, checked here because Wine does not
    // enforce them and Windows fails such a request (ERROR_INVALID_PARAMETER)
    // only on some volumes: offset, length and buffer address all multiples
    // of the sector size.  pread/pwrite bounce what is not; reaching this
    // unaligned is a bug of ours, so it fails on every system alike.
    if (opts_.no_buffering &&
        !(is_aligned(uint64_t(offset), align_) && is_aligned(len, align_) &&
          is_aligned(reinterpret_cast<uintptr_t>(buf), align_))) {
        return -EINVAL;
    }
    // The calling thread's own event (a worker of the pool, block/aio.h):
    // the handle is overlapped, and waiting on the handle itself would
    // confuse concurrent requests.  One event per thread, reused, never one
    // per request, and never one the event loop has to poll.
    thread_local Win32Handle ev(CreateEventW(nullptr, TRUE, FALSE, nullptr));
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

// --- the `file` driver table ----------------------------------------------------
//
// Compiled where the block core builds for Windows (MB_WIN32_BLOCK_CORE, set
// by win32/meson.build for libminiblock.dll); the protocol tests build the
// part above alone.
#ifdef MB_WIN32_BLOCK_CORE

namespace mb {

namespace {

struct FileState : NodeState {
    std::optional<Win32File> file;
    // Declared after `file`, so destroyed before it: the lock object borrows
    // the file's handle.  Null when lock=off.
    std::unique_ptr<Win32Locks> lock;
    bool lock_prepared = false;
    bool no_flush = false;
    // cache=none: an unaligned write is a read-modify-write of whole
    // sectors, so it runs alone; aligned writes share (raw-posix's rule).
    CoRwLock write_lock;
};

// Requests run in the event loop's worker threads (block/aio-win32.cpp):
// each does its ReadFile/WriteFile at an explicit offset and waits on its
// thread's own event, and the coroutine resumes in the loop when the worker
// signals the loop's one event.  So a node has many requests in flight.
struct FileJob : ThreadPool::Job {
    enum class Op { Read, Write, Flush, Truncate } op;
    Win32File *file;
    uint8_t *buf;
    int64_t offset, bytes;
};

int do_job(ThreadPool::Job *job) {
    auto *j = static_cast<FileJob *>(job);
    switch (j->op) {
    case FileJob::Op::Read: return j->file->pread(j->offset, j->buf, size_t(j->bytes));
    case FileJob::Op::Write: return j->file->pwrite(j->offset, j->buf, size_t(j->bytes));
    case FileJob::Op::Flush: return j->file->flush();
    case FileJob::Op::Truncate: return j->file->truncate(j->offset);
    }
    return -EINVAL;
}

Task<int> run_job(FileState *s, FileJob::Op op, const uint8_t *buf, int64_t offset, int64_t bytes) {
    FileJob job;
    job.fn = do_job;
    job.op = op;
    job.file = &*s->file;
    job.buf = const_cast<uint8_t *>(buf);  // writes only read it
    job.offset = offset;
    job.bytes = bytes;
    co_return co_await AioContext::main().thread_pool().run(job);
}

Task<int> file_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes, uint8_t *buf, int) {
    co_return co_await run_job(bs->state<FileState>(), FileJob::Op::Read, buf, offset, bytes);
}

Task<int> file_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes, const uint8_t *buf,
                          int flags) {
    auto *s = bs->state<FileState>();
    const uint32_t a = s->file->alignment();
    const bool rmw = a > 1 && ((uint64_t(offset) | uint64_t(bytes)) & (a - 1)) != 0;
    co_await (rmw ? s->write_lock.lock_exclusive() : s->write_lock.lock_shared());
    int r = co_await run_job(s, FileJob::Op::Write, buf, offset, bytes);
    s->write_lock.unlock();
    if (r == 0 && (flags & BDRV_REQ_FUA) && !s->no_flush) {
        r = co_await run_job(s, FileJob::Op::Flush, nullptr, 0, 0);
    }
    co_return r;
}

Task<int> file_co_flush(BlockDriverState *bs) {
    auto *s = bs->state<FileState>();
    if (s->no_flush) co_return 0;
    co_return co_await run_job(s, FileJob::Op::Flush, nullptr, 0, 0);
}

Task<int> file_co_truncate(BlockDriverState *bs, int64_t size) {
    co_return co_await run_job(bs->state<FileState>(), FileJob::Op::Truncate, nullptr, size, 0);
}

int64_t file_getlength(BlockDriverState *bs) {
    return bs->state<FileState>()->file->length();
}

// What the file takes on disk (sparse files take less): `info`'s actual-size.
int64_t file_get_allocated_size(BlockDriverState *bs) {
    FILE_STANDARD_INFO info;
    if (!GetFileInformationByHandleEx(bs->state<FileState>()->file->handle(), FileStandardInfo,
                                      &info, sizeof info)) {
        return -win32_to_errno(GetLastError());
    }
    return info.AllocationSize.QuadPart;
}

Status file_open(BlockDriverState *bs, qapi::OptionDict &opts) {
    auto s = std::make_unique<FileState>();
    std::string path = *opts.get_str("filename");
    bs->filename = path;
    // Each refusal names the option: these are POSIX choices with no
    // Windows meaning, and ignoring them would hide a wrong configuration.
    std::string aio = opts.get_str("aio").value_or("threads");
    if (aio != "threads") {
        return Status::Error(EINVAL, "aio=" + aio + " is not supported on Windows",
                             "Use aio=threads (the default)");
    }
    std::string api = opts.get_str("locking-api").value_or("auto");
    if (api != "auto") {
        return Status::Error(EINVAL, "locking-api=" + api + " is not available on Windows",
                             "Windows locks are LockFileEx byte ranges; use locking-api=auto");
    }
    std::string proto = opts.get_str("lock-protocol").value_or("qemu");
    if (proto != "qemu") {
        return Status::Error(EINVAL, "lock-protocol=" + proto + " is not supported on Windows",
                             "Windows locks are mandatory: a lock over the whole file would "
                             "stop our own writes; use lock-protocol=qemu");
    }
    s->no_flush = bs->open_flags & BDRV_O_NO_FLUSH;

    Win32FileOptions o;
    o.read_only = bs->read_only;
    o.no_buffering = bs->open_flags & BDRV_O_NOCACHE;
    Result<Win32File> f = Win32File::open(path, o);
    if (!f.ok()) return f.take_status();
    s->file.emplace(std::move(*f));
    bs->request_alignment = s->file->alignment();
    if (bs->lock_mode != qapi::LockMode::Off) {
        s->lock = std::make_unique<Win32Locks>(s->file->handle(), path);
    }
    bs->opaque = std::move(s);
    return Status::OK();
}

void file_close(BlockDriverState *bs) {
    auto *s = bs->state<FileState>();
    if (!s) return;
    if (s->lock) s->lock->release();
    s->lock.reset();
    // Windows locks belong to the handle, not the process: closing it needs
    // none of raw-posix's deferred-close care.
    s->file.reset();
}

Status file_check_perm(BlockDriverState *bs, PermPair cum) {
    auto *s = bs->state<FileState>();
    s->lock_prepared = false;
    if (!s->lock) return Status::OK();
    // An inactive node (migration target) holds no locks at all.
    if (bs->open_flags & BDRV_O_INACTIVE) cum = PermPair{0, BLK_PERM_ALL};
    const ULONGLONG deadline = GetTickCount64() + ULONGLONG(bs->lock_wait_ms);
    for (;;) {
        Status st = s->lock->prepare(cum.perm, cum.shared);
        if (st.ok()) break;
        // Only a conflict is worth waiting for.
        if (st.err() != EAGAIN || GetTickCount64() >= deadline) return st;
        Sleep(100);
    }
    s->lock_prepared = true;
    return Status::OK();
}

void file_set_perm(BlockDriverState *bs, PermPair) {
    auto *s = bs->state<FileState>();
    if (s->lock_prepared) s->lock->commit();
    s->lock_prepared = false;
}

void file_abort_perm_update(BlockDriverState *bs) {
    auto *s = bs->state<FileState>();
    if (s->lock_prepared) s->lock->abort();
    s->lock_prepared = false;
}

// Commit writes into a backing file that was opened read-only: a new handle
// with the other access takes over, and the locks move to it first (the
// bytes are never free; raw-posix's file_reopen_rw does the same with fds).
Status file_reopen_rw(BlockDriverState *bs, bool writable) {
    auto *s = bs->state<FileState>();
    const std::string mode = writable ? "read-write" : "read-only";
    Win32FileOptions o;
    o.read_only = !writable;
    o.no_buffering = s->file->alignment() > 1;
    Result<Win32File> f = Win32File::open(s->file->path(), o);
    if (!f.ok()) return PosixError("Could not reopen '" + s->file->path() + "' " + mode, f.status().err());
    BY_HANDLE_FILE_INFORMATION a, b;
    if (!GetFileInformationByHandle(s->file->handle(), &a) ||
        !GetFileInformationByHandle(f->handle(), &b)) {
        return Win32Error("Could not reopen '" + s->file->path() + "' " + mode, GetLastError());
    }
    if (a.dwVolumeSerialNumber != b.dwVolumeSerialNumber || a.nFileIndexHigh != b.nFileIndexHigh ||
        a.nFileIndexLow != b.nFileIndexLow) {
        return Status::Error(EIO, "Could not reopen '" + s->file->path() +
                                      "': the name now points to another file");
    }
    if (s->lock) MB_TRY(s->lock->move_handle(f->handle()));
    s->file.emplace(std::move(*f));  // closes the old handle
    return Status::OK();
}

void file_get_info(BlockDriverState *bs, FormatInfo *info) {
    auto *s = bs->state<FileState>();
    info->fields.emplace_back("aio", "threads");
    info->fields.emplace_back("locking",
                              s->lock ? "LockFileEx, QEMU's bytes at 0x7fff000000000000" : "off");
    if (s->file->alignment() > 1) {
        info->fields.emplace_back("request alignment", std::to_string(s->file->alignment()));
    }
}

// Creating truncates: it must not happen under anyone's feet, so it takes an
// exclusive lock first, exactly as an exclusive open would.
Status file_create(const std::string &filename, int64_t size, qapi::OptionDict &opts) {
    MB_TRY(bdrv_create_options_done("raw", opts));
    Win32FileOptions o;
    o.create = Win32FileOptions::Create::IfMissing;
    Result<Win32File> f = Win32File::open(filename, o);
    if (!f.ok()) return f.take_status();
    Win32Locks lock(f->handle(), filename);
    MB_TRY(lock.prepare(BLK_PERM_ALL & ~BLK_PERM_WRITE_UNCHANGED, 0));
    lock.commit();
    int r = f->truncate(0);
    if (r == 0) r = f->truncate(size);
    lock.release();
    if (r < 0) return PosixError("Could not resize '" + filename + "'", -r);
    return Status::OK();
}

}  // namespace

// The same name and symbol as raw-posix's table: a build links one of them.
extern const BlockDriver bdrv_file;
const BlockDriver bdrv_file = {
    .format_name = "file",
    .is_protocol = true,
    .sharable_writes = true,
    .protocols = nullptr,
    .probe = nullptr,
    .open = file_open,
    .close = file_close,
    .child_perm = nullptr,
    .check_perm = file_check_perm,
    .set_perm = file_set_perm,
    .abort_perm_update = file_abort_perm_update,
    .co_preadv = file_co_preadv,
    .co_pwritev = file_co_pwritev,
    .co_pwrite_zeroes = nullptr,  // the core writes zeroes
    .co_pdiscard = nullptr,       // advisory: nothing to do
    .co_flush = file_co_flush,
    .co_truncate = file_co_truncate,
    .co_block_status = nullptr,
    .getlength = file_getlength,
    .get_allocated_size = file_get_allocated_size,
    .get_info = file_get_info,
    .create = file_create,
    .reopen_rw = file_reopen_rw,
};

}  // namespace mb

#endif  // MB_WIN32_BLOCK_CORE
