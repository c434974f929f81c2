// QEMU's lock-byte protocol over OFD locks, or POSIX locks with the inode
// table (see qemu-bytes.h and posix-inode.h for why both).
#include "block/locking/qemu-bytes.h"

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>

#include "block/locking/holders.h"
#include "block/locking/lock-bytes.h"
#include "block/locking/posix-inode.h"
#include "block/locking/syscalls.h"

namespace mb {

using qapi::LockingApi;

namespace {

namespace lb = lockbytes;

// The one place that decides what a failed lock call means.
enum class LockErrClass {
    Conflict,   // someone holds an incompatible lock
    CannotLock, // this file system (or kernel) cannot lock at all
    Other,
};

LockErrClass classify_lock_errno(int err) {
    switch (err) {
    case EAGAIN:
#if EACCES != EAGAIN
    case EACCES:
#endif
        return LockErrClass::Conflict;
    case ENOLCK:
    case EIO:  // e.g. NFS without a lock manager, some FUSE file systems
    case EOPNOTSUPP:
#if ENOTSUP != EOPNOTSUPP
    case ENOTSUP:
#endif
        return LockErrClass::CannotLock;
    default:
        return LockErrClass::Other;
    }
}

// fcntl with a bounded EINTR retry (an injected endless EINTR must not hang).
int lock_fcntl(int fd, int cmd, struct flock *fl) {
    for (int tries = 0; tries < 100; tries++) {
        if (lock_syscalls().fcntl_lock(fd, cmd, fl) == 0) return 0;
        if (errno != EINTR) return errno;
    }
    return EINTR;
}

struct flock one_byte(short type, int64_t off) {
    struct flock fl = {};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = off;
    fl.l_len = 1;
    fl.l_pid = 0;  // must be 0 for OFD commands
    return fl;
}

// The preparers' byte (docs/locking.md section 3): a one-byte write lock that
// a miniblock opener holds only while it locks and tests QEMU's bytes, so that
// two miniblock openers of one file take turns instead of both losing.  It is
// outside every range QEMU, libvirt (byte 0) or old QEMU (104/204) lock.
class PreparerTurn {
public:
    PreparerTurn(int fd, bool ofd) : fd_(fd), ofd_(ofd) {
        // Wait while another opener holds it: a lock-and-test takes
        // microseconds, so polling is cheap; bounded, so a stopped process
        // that holds the byte costs at most the budget, after which we go on
        // without a turn (lock-then-test still forbids two winners).
        const int64_t budget_us = 500 * 1000;
        int64_t waited_us = 0, step_us = 50;
        for (;;) {
            struct flock fl = one_byte(F_WRLCK, kLockPreparerByte);
            int err = lock_fcntl(fd_, ofd_ ? F_OFD_SETLK : F_SETLK, &fl);
            if (err == 0) {
                held_ = true;
                return;
            }
            // Cannot lock (EBADF: a read-only fd cannot take a write lock):
            // no turn, the retry in prepare() must do.
            if (err != EAGAIN && err != EACCES) return;
            // Only another preparer's one-byte lock is a reason to wait; a
            // lock over the whole file (the whole-file protocol) will make the
            // byte locks fail, and says so better.
            struct flock probe = one_byte(F_WRLCK, kLockPreparerByte);
            if (lock_fcntl(fd_, ofd_ ? F_OFD_GETLK : F_GETLK, &probe) != 0) return;
            if (probe.l_type != F_UNLCK &&
                (probe.l_start != kLockPreparerByte || probe.l_len != 1))
                return;
            if (waited_us >= budget_us) return;
            usleep(static_cast<useconds_t>(step_us));
            waited_us += step_us;
            step_us = std::min<int64_t>(step_us * 2, 2000);
        }
    }
    ~PreparerTurn() {
        if (!held_) return;
        struct flock fl = one_byte(F_UNLCK, kLockPreparerByte);
        lock_fcntl(fd_, ofd_ ? F_OFD_SETLK : F_SETLK, &fl);  // else it goes with the fd
    }
    PreparerTurn(const PreparerTurn &) = delete;
    PreparerTurn &operator=(const PreparerTurn &) = delete;

private:
    int fd_;
    bool ofd_;
    bool held_ = false;
};

// Random backoff between attempts, so that two openers that both lost do not
// retry in step (an opener without a turn, e.g. QEMU, never retries itself).
useconds_t race_backoff_us(int attempt) {
    static thread_local std::minstd_rand rng([] {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return static_cast<unsigned>(ts.tv_nsec ^ (getpid() << 16));
    }());
    const unsigned max_us = 1000u << attempt;  // 1, 2, 4, 8 ms
    return static_cast<useconds_t>(200 + rng() % max_us);
}

class QemuByteLock final : public LockProtocol {
public:
    QemuByteLock(int fd, std::string path, std::string node, LockingApi api, PosixNode *pnode)
        : fd_(fd), path_(std::move(path)), node_(std::move(node)), api_(api), pnode_(pnode) {
        if (api_ == LockingApi::Ofd) register_lock_node(fd_, node_);
    }
    ~QemuByteLock() override {
        release();
        if (pnode_) posix_node_detach(pnode_);
        if (api_ == LockingApi::Ofd) unregister_lock_node(fd_);
    }

    Status prepare(uint32_t perm, uint32_t shared) override;
    void commit() override;
    void abort() override;
    void release() override;
    LockBits held() const override { return held_; }

    LockingApi api() const { return api_; }
    Status move_fd(int new_fd);

private:
    int lock_byte(int64_t off);
    int unlock_byte(int64_t off);
    // 0 and *conflict set when tested, else a positive errno.
    int test_byte(int64_t off, bool *conflict);
    void drop(LockBits bytes);

    Status syscall_error(const char *what, int64_t off, int err) const;
    Status conflict_error(bool want_use, int bit, LockBits want, int64_t tested = -1);
    // One lock-then-test.  On a conflict found by a test, *tested is the
    // byte (the caller may retry); on any failure nothing this call took
    // is still held.
    Status try_prepare(LockBits want, int64_t *tested);

    int fd_;
    std::string path_;
    std::string node_;
    LockingApi api_;
    PosixNode *pnode_;  // owned by the inode table; POSIX mode only
    LockBits held_;
    LockBits added_;    // what the pending prepare took
    LockBits pending_;  // the state commit() settles on
    bool prepared_ = false;
};

int QemuByteLock::lock_byte(int64_t off) {
    if (pnode_) return posix_node_lock(pnode_, off);
    struct flock fl = one_byte(F_RDLCK, off);
    return lock_fcntl(fd_, F_OFD_SETLK, &fl);
}

int QemuByteLock::unlock_byte(int64_t off) {
    if (pnode_) return posix_node_unlock(pnode_, off);
    struct flock fl = one_byte(F_UNLCK, off);
    return lock_fcntl(fd_, F_OFD_SETLK, &fl);
}

int QemuByteLock::test_byte(int64_t off, bool *conflict) {
    // A F_WRLCK probe conflicts with any read lock on the byte by others.
    if (pnode_) {
        // The kernel cannot show us our own POSIX locks: the table can.
        if (!posix_node_peers_holding(pnode_, off).empty()) {
            *conflict = true;
            return 0;
        }
    }
    struct flock fl = one_byte(F_WRLCK, off);
    int err = lock_fcntl(fd_, pnode_ ? F_GETLK : F_OFD_GETLK, &fl);
    if (err) return err;
    *conflict = fl.l_type != F_UNLCK;
    return 0;
}

void QemuByteLock::drop(LockBits bytes) {
    // Unlock in reverse order of locking; a byte that fails to unlock stays
    // in held_, so held() keeps telling the truth.
    for (auto it = lb::kOrder.rbegin(); it != lb::kOrder.rend(); ++it) {
        if (!lb::has(bytes, *it) || !lb::has(held_, *it)) continue;
        if (unlock_byte(*it) == 0) lb::set(held_, *it, false);
    }
}

Status QemuByteLock::syscall_error(const char *what, int64_t off, int err) const {
    const std::string ctx = std::string("Failed to ") + what + " byte " + std::to_string(off);
    switch (classify_lock_errno(err)) {
    case LockErrClass::CannotLock:
        return Status::Error(err, ctx + ": the file system of '" + path_ + "' cannot lock (" +
                                      std::strerror(err) + ")");
    default:
        return PosixError(ctx + " of '" + path_ + "'", err);
    }
}

Status QemuByteLock::conflict_error(bool want_use, int bit, LockBits want, int64_t tested) {
    std::string msg = want_use ? "Failed to get \"" : "Failed to get shared \"";
    msg += perm_name(bit);
    msg += "\" lock";
    Status s = Status::Error(EAGAIN, msg);
    s.add_detail("Is another process using the image [" + path_ + "]?");

    // Name whoever holds a byte that stands in our way (not ourselves).
    const LockBits test = lb::as_bits(conflict_test_for(want));
    int shown = 0;
    std::vector<LockHolder> in_way_list;
    for (const LockHolder &h : find_lock_holders(fd_)) {
        if (h.this_process && (h.fd == fd_ || (!h.node_name.empty() && h.node_name == node_)))
            continue;
        const bool in_way = (h.use & test.use) || (h.forbid & test.forbid) ||
                            (h.write_lock && ((h.use & want.use) || (h.forbid & want.forbid)));
        if (!in_way) continue;
        s.add_detail(describe_holder(h));
        in_way_list.push_back(h);
        shown++;
    }
    if (!shown) {
        // Nobody to name: either the holder is out of sight, or it let go
        // between our test and the look-up (a racing opener that lost).
        bool still = true;
        if (tested >= 0 && test_byte(tested, &still) == 0 && !still)
            s.add_detail(kHolderJustGone);
        else
            s.add_detail(kNoVisibleHolder);
    }
    record_conflict_holders(std::move(in_way_list));
    return s;
}

Status QemuByteLock::prepare(uint32_t perm, uint32_t shared) {
    // A second prepare before commit/abort builds on the first (a node
    // visited twice in one transaction): it may take more bytes, commit
    // settles on the last state, abort undoes both.

    std::unique_lock<std::recursive_mutex> table_guard;
    if (pnode_) table_guard = std::unique_lock(posix_table_mutex());

    const LockBits want = lock_bits_for(perm, shared);
    // Lock-then-test, retried a few times when a test finds a conflict: the
    // conflicting bytes may belong to an opener that is itself still
    // preparing and about to lose (docs/locking.md section 3).  Conflicts
    // between nodes of this process (POSIX table) never go away by waiting.
    for (int attempt = 0;; attempt++) {
        int64_t tested = -1;
        Status s;
        {
            PreparerTurn turn(fd_, !pnode_);
            s = try_prepare(want, &tested);
        }
        if (s.ok() || tested < 0) return s;
        bool ours = pnode_ && !posix_node_peers_holding(pnode_, tested).empty();
        if (ours || attempt + 1 >= kLockRaceAttempts) {
            const bool use = lb::is_use_byte(tested);
            const int bit = lb::bit_of(tested);
            // A held 202 stops a writer that does not itself use write
            // unchanged: say "write", the permission the user asked for.
            const bool compat =
                bit == 2 && !((use ? want.forbid : want.use) & BLK_PERM_WRITE_UNCHANGED);
            return conflict_error(!use, compat ? 1 : bit, want, tested);
        }
        usleep(race_backoff_us(attempt));
    }
}

Status QemuByteLock::try_prepare(LockBits want, int64_t *tested) {
    const LockBits to_add = lb::minus(want, held_);
    LockBits added;

    // On any failure, unlock exactly what this call took: the byte map is
    // then what it was before.
    auto undo = [&] { drop(added); };

    // Lock first ...
    for (int64_t off : lb::kOrder) {
        if (!lb::has(to_add, off)) continue;
        int err = lock_byte(off);
        if (err) {
            undo();
            if (classify_lock_errno(err) == LockErrClass::Conflict)
                return conflict_error(lb::is_use_byte(off), lb::bit_of(off), want);
            return syscall_error("lock", off, err);
        }
        lb::set(added, off, true);
        lb::set(held_, off, true);
    }

    // ... then test: a racing opener either sees our bytes or we see its.
    const ConflictTest t = conflict_test_for(want);
    for (int64_t base : {LOCK_FORBID_BASE, LOCK_USE_BASE}) {
        const uint32_t mask = base == LOCK_FORBID_BASE ? t.their_forbid : t.their_use;
        for (int bit = 0; bit < BLK_PERM_COUNT; bit++) {
            if (!(mask & (1u << bit))) continue;
            bool conflict = false;
            int err = test_byte(base + bit, &conflict);
            if (err || conflict) {
                undo();
                if (err) return syscall_error("test", base + bit, err);
                *tested = base + bit;
                return Status::Error(EAGAIN, "conflict");  // the caller words it
            }
        }
    }

    added_ = prepared_ ? lb::unite(added_, added) : added;
    pending_ = want;
    prepared_ = true;
    return Status::OK();
}

void QemuByteLock::commit() {
    if (!prepared_) return;
    drop(lb::minus(held_, pending_));
    prepared_ = false;
    added_ = {};
}

void QemuByteLock::abort() {
    if (!prepared_) return;
    drop(added_);
    prepared_ = false;
    added_ = {};
}

void QemuByteLock::release() {
    drop(held_);
    prepared_ = false;
    added_ = {};
}

Status QemuByteLock::move_fd(int new_fd) {
    if (prepared_) {
        return Status::Error(EBUSY, "Cannot move the lock of '" + path_ +
                                        "' to another fd while a permission change is pending");
    }
    MB_TRY(lock_check_same_file(fd_, new_fd, path_));
    if (pnode_) {
        int err = posix_node_set_fd(pnode_, new_fd);
        if (err) return PosixError("Cannot move the lock of '" + path_ + "'", err);
        fd_ = new_fd;
        return Status::OK();
    }
    // OFD: take every held byte on the new description, then let go of the
    // old one; the bytes are never free in between.
    LockBits taken;
    for (int64_t off : lb::kOrder) {
        if (!lb::has(held_, off)) continue;
        struct flock fl = one_byte(F_RDLCK, off);
        int err = lock_fcntl(new_fd, F_OFD_SETLK, &fl);
        if (err) {
            for (int64_t u : lb::kOrder) {
                if (!lb::has(taken, u)) continue;
                struct flock ul = one_byte(F_UNLCK, u);
                lock_fcntl(new_fd, F_OFD_SETLK, &ul);
            }
            if (classify_lock_errno(err) == LockErrClass::Conflict) {
                return conflict_error(lb::is_use_byte(off), lb::bit_of(off), held_);
            }
            return syscall_error("lock", off, err);
        }
        lb::set(taken, off, true);
    }
    const LockBits keep = held_;
    drop(held_);  // on the old fd
    held_ = keep;  // now held through the new one (an old byte that failed
                   // to unlock stays behind on the old fd until it closes)
    unregister_lock_node(fd_);
    fd_ = new_fd;
    register_lock_node(fd_, node_);
    return Status::OK();
}

}  // namespace

Status qemu_byte_lock_move_fd(LockProtocol &lock, int new_fd) {
    auto *q = dynamic_cast<QemuByteLock *>(&lock);
    if (!q) return Status::Error(EINVAL, "Not a QEMU byte lock");
    return q->move_fd(new_fd);
}

Result<std::unique_ptr<LockProtocol>> qemu_byte_lock_new(int fd, std::string path,
                                                         std::string node_name,
                                                         LockingApi api) {
    if (api != LockingApi::Posix) {
        // Probe as QEMU does: a kernel without OFD locks says EINVAL.
        struct flock fl = one_byte(F_WRLCK, LOCK_USE_BASE);
        int err = lock_fcntl(fd, F_OFD_GETLK, &fl);
        if (err == EINVAL) {
            if (api == LockingApi::Ofd) {
                return Status::Error(EINVAL,
                                     "Cannot lock '" + path +
                                         "': the kernel has no open file description locks",
                                     "Use locking-api=posix or locking-api=auto");
            }
            api = LockingApi::Posix;
        } else if (err == EBADF) {
            return PosixError("Cannot lock '" + path + "'", err);
        } else {
            // ENOLCK and the like are the file system's answer to every lock
            // call: prepare reports them with the byte it failed on.
            api = LockingApi::Ofd;
        }
    }
    PosixNode *pnode = nullptr;
    if (api == LockingApi::Posix) {
        auto r = posix_node_attach(fd, node_name);
        if (!r.ok()) return r.take_status().prefix("Cannot lock '" + path + "'");
        pnode = *r;
    }
    return std::unique_ptr<LockProtocol>(
        new QemuByteLock(fd, std::move(path), std::move(node_name), api, pnode));
}

LockingApi qemu_byte_lock_api(const LockProtocol &lock) {
    auto *q = dynamic_cast<const QemuByteLock *>(&lock);
    return q ? q->api() : LockingApi::Auto;
}

}  // namespace mb
