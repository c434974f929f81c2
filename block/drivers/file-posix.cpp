// The file protocol driver (POSIX): regular files and block devices.
//
// I/O goes through a pool of worker threads (aio=threads) or Linux native
// AIO (aio=native, which needs O_DIRECT).  With O_DIRECT, requests that are
// not aligned to the device's block size go through an aligned bounce
// buffer; unaligned writes read-modify-write whole blocks and are serialized
// against every other write of the node (a CoRwLock) so that no write can
// be lost under an overlapping read-modify-write.
//
// This is the node that touches the file, so it is the one that takes the
// locks: its cumulative (perm, shared) goes to a LockProtocol.
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "block/aio.h"
#include "block/block_int.h"
#include "block/locking/lock_protocol.h"
#include "block/locking/qemu-bytes.h"
#include "block/locking/whole-file.h"
#include "block/unique-fd.h"

namespace mb {

namespace {

constexpr size_t MEM_ALIGN = 4096;

struct AlignedFree {
    void operator()(uint8_t *p) const { std::free(p); }
};
using AlignedBuf = std::unique_ptr<uint8_t, AlignedFree>;

AlignedBuf aligned_buf(size_t size) {
    void *p = std::aligned_alloc(MEM_ALIGN, (size + MEM_ALIGN - 1) / MEM_ALIGN * MEM_ALIGN);
    return AlignedBuf(static_cast<uint8_t *>(p));
}

struct FileState : NodeState {
    UniqueFd fd;
    std::string path;
    bool is_block_dev = false;
    bool use_laio = false;
    bool o_direct = false;
    bool no_flush = false;
    std::unique_ptr<LockProtocol> lock;  // null when lock=off
    bool whole_file = false;             // lock-protocol=whole-file
    bool lock_prepared = false;
    CoRwLock write_lock;  // only used with O_DIRECT (see above)
};

// --- blocking operations run by worker threads ---------------------------------

enum class Op { Read, Write, Flush, Discard, WriteZeroes, Truncate };

struct FileJob : ThreadPool::Job {
    Op op;
    int fd;
    uint8_t *buf;
    int64_t len;
    int64_t offset;
    bool block_dev;
};

int do_rw(FileJob *j) {
    int64_t done = 0;
    while (done < j->len) {
        ssize_t r = j->op == Op::Read
                        ? pread(j->fd, j->buf + done, j->len - done, j->offset + done)
                        : pwrite(j->fd, j->buf + done, j->len - done, j->offset + done);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (r == 0) {
            if (j->op == Op::Write) return -ENOSPC;
            // Reading past the end of the file yields zeroes, as on a disk
            // whose tail was never written.
            memset(j->buf + done, 0, j->len - done);
            break;
        }
        done += r;
    }
    return 0;
}

int do_job(ThreadPool::Job *job) {
    auto *j = static_cast<FileJob *>(job);
    switch (j->op) {
    case Op::Read:
    case Op::Write:
        return do_rw(j);
    case Op::Flush:
        return fdatasync(j->fd) < 0 ? -errno : 0;
    case Op::Discard:
        if (j->block_dev) {
            uint64_t range[2] = {(uint64_t)j->offset, (uint64_t)j->len};
            return ioctl(j->fd, BLKDISCARD, range) < 0 ? -errno : 0;
        }
        return fallocate(j->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, j->offset, j->len) < 0
                   ? -errno
                   : 0;
    case Op::WriteZeroes:
        if (j->block_dev) {
            uint64_t range[2] = {(uint64_t)j->offset, (uint64_t)j->len};
            return ioctl(j->fd, BLKZEROOUT, range) < 0 ? -errno : 0;
        }
        return fallocate(j->fd, FALLOC_FL_ZERO_RANGE, j->offset, j->len) < 0 ? -errno : 0;
    case Op::Truncate:
        return ftruncate(j->fd, j->offset) < 0 ? -errno : 0;
    }
    return -EINVAL;
}

Task<int> run_job(FileState *s, Op op, uint8_t *buf, int64_t len, int64_t offset) {
    FileJob job;
    job.fn = do_job;
    job.op = op;
    job.fd = s->fd.get();
    job.buf = buf;
    job.len = len;
    job.offset = offset;
    job.block_dev = s->is_block_dev;
    co_return co_await AioContext::main().thread_pool().run(job);
}

// One read or write of an aligned buffer through the configured engine.
Task<int> submit_rw(FileState *s, Op op, uint8_t *buf, int64_t len, int64_t offset) {
    if (!s->use_laio) co_return co_await run_job(s, op, buf, len, offset);
    auto laio = AioContext::main().linux_aio();
    if (!laio.ok()) co_return -laio.status().err();
    int64_t done = 0;
    while (done < len) {
        int64_t r = op == Op::Read ? co_await (*laio)->pread(s->fd.get(), buf + done, len - done, offset + done)
                                   : co_await (*laio)->pwrite(s->fd.get(), buf + done, len - done, offset + done);
        if (r < 0) co_return (int)r;
        if (r == 0) {
            if (op == Op::Write) co_return -ENOSPC;
            memset(buf + done, 0, len - done);
            break;
        }
        done += r;
    }
    co_return 0;
}

bool is_aligned(const BlockDriverState *bs, int64_t offset, int64_t bytes, const void *buf) {
    uint32_t a = bs->request_alignment;
    return offset % a == 0 && bytes % a == 0 && reinterpret_cast<uintptr_t>(buf) % MEM_ALIGN == 0;
}

// --- callbacks -------------------------------------------------------------------

Task<int> file_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes, uint8_t *buf, int) {
    auto *s = bs->state<FileState>();
    if (!s->o_direct || is_aligned(bs, offset, bytes, buf))
        co_return co_await submit_rw(s, Op::Read, buf, bytes, offset);
    const int64_t a = bs->request_alignment;
    int64_t start = offset / a * a, end = (offset + bytes + a - 1) / a * a;
    AlignedBuf bounce = aligned_buf(end - start);
    if (!bounce) co_return -ENOMEM;
    int r = co_await submit_rw(s, Op::Read, bounce.get(), end - start, start);
    if (r == 0) memcpy(buf, bounce.get() + (offset - start), bytes);
    co_return r;
}

Task<int> file_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes, const uint8_t *buf,
                          int flags) {
    auto *s = bs->state<FileState>();
    int r;
    if (!s->o_direct) {
        r = co_await submit_rw(s, Op::Write, const_cast<uint8_t *>(buf), bytes, offset);
    } else if (bs->multiqueue) {
        // The queue layer refuses unaligned requests on a multi-queue drive,
        // so no read-modify-write exists to be serialized against.
        r = co_await submit_rw(s, Op::Write, const_cast<uint8_t *>(buf), bytes, offset);
    } else if (is_aligned(bs, offset, bytes, buf)) {
        co_await s->write_lock.lock_shared();
        r = co_await submit_rw(s, Op::Write, const_cast<uint8_t *>(buf), bytes, offset);
        s->write_lock.unlock();
    } else {
        const int64_t a = bs->request_alignment;
        int64_t start = offset / a * a, end = (offset + bytes + a - 1) / a * a;
        AlignedBuf bounce = aligned_buf(end - start);
        if (!bounce) co_return -ENOMEM;
        bool rmw = start != offset || end != offset + bytes;
        co_await (rmw ? s->write_lock.lock_exclusive() : s->write_lock.lock_shared());
        r = 0;
        if (rmw) {
            // Head and tail blocks keep their current contents.
            r = co_await submit_rw(s, Op::Read, bounce.get(), a, start);
            if (r == 0 && end - a > start)
                r = co_await submit_rw(s, Op::Read, bounce.get() + (end - a - start), a, end - a);
        }
        if (r == 0) {
            memcpy(bounce.get() + (offset - start), buf, bytes);
            r = co_await submit_rw(s, Op::Write, bounce.get(), end - start, start);
        }
        s->write_lock.unlock();
    }
    if (r == 0 && (flags & BDRV_REQ_FUA) && !s->no_flush) r = co_await run_job(s, Op::Flush, nullptr, 0, 0);
    co_return r;
}

Task<int> file_co_flush(BlockDriverState *bs) {
    auto *s = bs->state<FileState>();
    if (s->no_flush) co_return 0;
    co_return co_await run_job(s, Op::Flush, nullptr, 0, 0);
}

Task<int> file_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes) {
    auto *s = bs->state<FileState>();
    int r = co_await run_job(s, Op::Discard, nullptr, bytes, offset);
    // Discard is advisory: a file system that cannot punch holes did nothing wrong.
    if (r == -EOPNOTSUPP || r == -ENOTTY || r == -EINVAL) r = 0;
    co_return r;
}

Task<int> file_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes, int) {
    auto *s = bs->state<FileState>();
    if (s->o_direct && !is_aligned(bs, offset, bytes, nullptr)) co_return -ENOTSUP;
    int r = co_await run_job(s, Op::WriteZeroes, nullptr, bytes, offset);
    if (r == -EOPNOTSUPP || r == -ENOTTY || r == -EINVAL) r = -ENOTSUP;  // generic fallback writes
    co_return r;
}

int64_t file_getlength(BlockDriverState *bs) {
    auto *s = bs->state<FileState>();
    if (s->is_block_dev) {
        uint64_t size;
        if (ioctl(s->fd.get(), BLKGETSIZE64, &size) < 0) return -errno;
        return (int64_t)size;
    }
    struct stat st;
    if (fstat(s->fd.get(), &st) < 0) return -errno;
    return st.st_size;
}

int64_t file_get_allocated_size(BlockDriverState *bs) {
    struct stat st;
    if (fstat(bs->state<FileState>()->fd.get(), &st) < 0) return -errno;
    return (int64_t)st.st_blocks * 512;
}

Task<int> file_co_truncate(BlockDriverState *bs, int64_t size) {
    auto *s = bs->state<FileState>();
    if (s->is_block_dev) {
        int64_t len = file_getlength(bs);
        co_return len < 0 ? (int)len : size <= len ? 0 : -ENOTSUP;
    }
    co_return co_await run_job(s, Op::Truncate, nullptr, 0, size);
}

// O_DIRECT needs every request aligned to the logical block size: ask the
// device, or find the smallest size a direct read accepts.
uint32_t probe_alignment(FileState *s) {
    if (s->is_block_dev) {
        int sz = 0;
        if (ioctl(s->fd.get(), BLKSSZGET, &sz) == 0 && sz > 0) return sz;
    }
    AlignedBuf buf = aligned_buf(MEM_ALIGN);
    for (uint32_t a : {512u, 1024u, 2048u, 4096u}) {
        if (pread(s->fd.get(), buf.get(), a, 0) >= 0 || errno != EINVAL) return a;
    }
    return 4096;
}

Status file_open(BlockDriverState *bs, qapi::OptionDict &opts) {
    auto s = std::make_unique<FileState>();
    s->path = *opts.get_str("filename");
    bs->filename = s->path;
    auto aio = qapi::parse_AioMode(opts.get_str("aio").value_or("threads"));
    s->o_direct = bs->open_flags & BDRV_O_NOCACHE;
    s->no_flush = bs->open_flags & BDRV_O_NO_FLUSH;
    if (aio == qapi::AioMode::Native && !s->o_direct) {
        return Status::Error(EINVAL, "aio=native was specified, but it requires cache=none",
                             "Linux native AIO is only asynchronous with O_DIRECT; add cache=none, "
                             "or use aio=threads");
    }
    s->use_laio = aio == qapi::AioMode::Native;

    int flags = (bs->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | (s->o_direct ? O_DIRECT : 0);
    int fd = open(s->path.c_str(), flags);
    if (fd < 0 && errno == EINVAL && s->o_direct) {
        return Status::Error(EINVAL, "Could not open '" + s->path + "': the file system does not support O_DIRECT",
                             "Use cache=writeback (the default)");
    }
    if (fd < 0) return PosixError("Could not open '" + qapi::shown_name(s->path) + "'", errno);
    s->fd.reset(fd);
    struct stat st;
    if (fstat(fd, &st) < 0) return PosixError("Could not stat '" + s->path + "'", errno);
    if (S_ISDIR(st.st_mode)) return Status::Error(EISDIR, "'" + s->path + "' is a directory");
    s->is_block_dev = S_ISBLK(st.st_mode);
    if (s->o_direct) bs->request_alignment = probe_alignment(s.get());
    if (s->use_laio) {
        auto r = AioContext::main().linux_aio();
        if (!r.ok()) return r.take_status();
    }

    if (bs->lock_mode != qapi::LockMode::Off) {
        auto api = qapi::parse_LockingApi(opts.get_str("locking-api").value_or("auto"));
        s->whole_file = opts.get_str("lock-protocol").value_or("qemu") == "whole-file";
        auto lock = s->whole_file ? whole_file_lock_new(s->fd.get(), s->path, bs->node_name, *api)
                                  : qemu_byte_lock_new(s->fd.get(), s->path, bs->node_name, *api);
        if (!lock.ok()) return lock.take_status();
        s->lock = std::move(*lock);
    }
    bs->opaque = std::move(s);
    return Status::OK();
}

void file_close(BlockDriverState *bs) {
    auto *s = bs->state<FileState>();
    if (!s) return;
    if (s->lock) s->lock->release();
    s->lock.reset();
    // POSIX locks die with *any* close of the file: the lock module decides
    // when this fd may really go.
    if (s->fd) posix_lock_close_fd(s->fd.release());
}

// --- locking: the permission transaction's steps ---------------------------------

Status file_check_perm(BlockDriverState *bs, PermPair cum) {
    auto *s = bs->state<FileState>();
    s->lock_prepared = false;
    if (!s->lock) return Status::OK();
    // An inactive node (migration target) holds no locks at all.
    if (bs->open_flags & BDRV_O_INACTIVE) cum = PermPair{0, BLK_PERM_ALL};
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(bs->lock_wait_ms);
    for (;;) {
        Status st = s->lock->prepare(cum.perm, cum.shared);
        if (st.ok()) break;
        // Only a conflict is worth waiting for; a file system that cannot
        // lock will not learn to.
        if (st.err() != EAGAIN || std::chrono::steady_clock::now() >= deadline) return st;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
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

// Commit writes into a backing file that was opened read-only: a new fd with
// the other access mode takes over, and the locks move to it first (the
// bytes are never free, and the old and new fds never see each other as a
// conflict).  The old fd goes through posix_lock_close_fd.
Status file_reopen_rw(BlockDriverState *bs, bool writable) {
    auto *s = bs->state<FileState>();
    int flags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | (s->o_direct ? O_DIRECT : 0);
    UniqueFd fd(open(s->path.c_str(), flags));
    if (!fd) {
        return PosixError("Could not reopen '" + s->path + "' " +
                              (writable ? "read-write" : "read-only"), errno);
    }
    struct stat a, b;
    if (fstat(fd.get(), &b) < 0 || fstat(s->fd.get(), &a) < 0)
        return PosixError("Could not stat '" + s->path + "'", errno);
    if (a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
        return Status::Error(ESTALE, "Could not reopen '" + s->path +
                                         "': the name now points to another file");
    }
    if (s->lock) {
        MB_TRY(s->whole_file ? whole_file_lock_move_fd(*s->lock, fd.get())
                             : qemu_byte_lock_move_fd(*s->lock, fd.get()));
    }
    int old = s->fd.release();
    s->fd = std::move(fd);
    posix_lock_close_fd(old);
    return Status::OK();
}

void file_get_info(BlockDriverState *bs, FormatInfo *info) {
    auto *s = bs->state<FileState>();
    info->fields.emplace_back("aio", s->use_laio ? "native" : "threads");
    if (s->o_direct) info->fields.emplace_back("request alignment", std::to_string(bs->request_alignment));
}

// Creating truncates: it must not happen under anyone's feet, so it takes an
// exclusive lock first, exactly as an exclusive open would.
Status file_create(const std::string &filename, int64_t size, qapi::OptionDict &opts) {
    // preallocation: qemu-img's modes for files (metadata is qcow2's only).
    std::string prealloc = opts.get_text("preallocation").value_or("off");
    opts.erase("preallocation");
    if (prealloc == "metadata") return Status::Error(ENOTSUP, "Unsupported preallocation mode: metadata");
    if (prealloc != "off" && prealloc != "falloc" && prealloc != "full")
        return Status::Error(EINVAL, "Parameter 'preallocation' does not accept value '" + prealloc + "'");
    MB_TRY(bdrv_create_options_done("raw", opts));
    UniqueFd fd(open(filename.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!fd) return PosixError("Could not create '" + filename + "'", errno);
    auto lock = qemu_byte_lock_new(fd.get(), filename, "image creation", qapi::LockingApi::Auto);
    if (!lock.ok()) return lock.take_status();
    MB_TRY((*lock)->prepare(BLK_PERM_ALL & ~BLK_PERM_WRITE_UNCHANGED, 0));
    (*lock)->commit();
    struct stat st;
    if (fstat(fd.get(), &st) < 0) return PosixError("Could not stat '" + filename + "'", errno);
    if (S_ISREG(st.st_mode)) {
        if (ftruncate(fd.get(), 0) < 0 || ftruncate(fd.get(), size) < 0)
            return PosixError("Could not resize '" + filename + "'", errno);
        if (prealloc != "off" && size > 0) {
            if (int e = posix_fallocate(fd.get(), 0, size)) {
                if (prealloc == "falloc") return PosixError("Could not preallocate data for the new file", e);
            }
            // full: every byte written, as qemu-img does (fallocate alone may
            // leave unwritten extents).
            for (int64_t off = 0; prealloc == "full" && off < size;) {
                static const std::vector<char> zeroes(1 << 20, 0);
                size_t n = size_t(std::min<int64_t>(size - off, int64_t(zeroes.size())));
                ssize_t w = pwrite(fd.get(), zeroes.data(), n, off);
                if (w < 0 && errno == EINTR) continue;
                if (w <= 0) return PosixError("Could not write zeros for preallocation", w < 0 ? errno : EIO);
                off += w;
            }
        }
    }
    (*lock)->release();
    lock->reset();
    if (posix_lock_close_fd(fd.release()) < 0) return PosixError("Could not close '" + filename + "'", errno);
    return Status::OK();
}

}  // namespace

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
    .co_pwrite_zeroes = file_co_pwrite_zeroes,
    .co_pdiscard = file_co_pdiscard,
    .co_flush = file_co_flush,
    .co_truncate = file_co_truncate,
    .co_block_status = nullptr,
    .getlength = file_getlength,
    .get_allocated_size = file_get_allocated_size,
    .get_info = file_get_info,
    .create = file_create,
    .reopen_rw = file_reopen_rw,
    .invalidate_cache = nullptr,
};

}  // namespace mb
