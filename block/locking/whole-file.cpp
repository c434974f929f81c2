// The whole-file lock protocol (see whole-file.h and docs/locking.md).
#include "block/locking/whole-file.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "block/locking/holders.h"
#include "block/locking/syscalls.h"

namespace mb {

namespace {

struct flock whole(short type) {
    struct flock fl = {};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 0;  // to the end of the file, however large it grows
    fl.l_pid = 0;  // must be 0 for OFD commands
    return fl;
}

short fcntl_type(WholeFileMode m) {
    return m == WholeFileMode::Write ? F_WRLCK : m == WholeFileMode::Read ? F_RDLCK : F_UNLCK;
}

const char *mode_name(WholeFileMode m) {
    return m == WholeFileMode::Write ? "write (exclusive)" : "read (shared)";
}

// fcntl with a bounded EINTR retry; 0 or a positive errno.
int setlk(int fd, WholeFileMode m) {
    struct flock fl = whole(fcntl_type(m));
    for (int tries = 0; tries < 100; tries++) {
        if (lock_syscalls().fcntl_lock(fd, F_OFD_SETLK, &fl) == 0) return 0;
        if (errno != EINTR) return errno;
    }
    return EINTR;
}

class WholeFileLock final : public LockProtocol {
public:
    WholeFileLock(int fd, std::string path, std::string node)
        : fd_(fd), path_(std::move(path)), node_(std::move(node)) {
        register_lock_node(fd_, node_);
    }
    ~WholeFileLock() override {
        release();
        unregister_lock_node(fd_);
    }

    Status prepare(uint32_t perm, uint32_t shared) override {
        const WholeFileMode want = whole_file_mode_for(perm, shared);
        if (!prepared_) before_ = held_;
        // Stronger: take it now (F_RDLCK -> F_WRLCK converts atomically; on
        // failure the read lock is still held).  Weaker: only at commit, so
        // that abort never has to upgrade again.
        if (want > held_) {
            int err = setlk(fd_, want);
            if (err) return error(want, err);
            held_ = want;
        }
        pending_ = want;
        prepared_ = true;
        return Status::OK();
    }

    void commit() override {
        if (!prepared_) return;
        prepared_ = false;
        if (pending_ < held_ && setlk(fd_, pending_) == 0) held_ = pending_;
    }

    void abort() override {
        if (!prepared_) return;
        prepared_ = false;
        // A downgrade (or unlock) of our own lock cannot conflict.
        if (held_ != before_ && setlk(fd_, before_) == 0) held_ = before_;
    }

    void release() override {
        prepared_ = false;
        if (held_ != WholeFileMode::None && setlk(fd_, WholeFileMode::None) == 0)
            held_ = WholeFileMode::None;
    }

    // As QEMU's byte protocol sees it: a whole-file lock of either kind
    // covers every "use" and every "forbid" byte.
    LockBits held() const override {
        if (held_ == WholeFileMode::None) return {};
        return LockBits{BLK_PERM_ALL, BLK_PERM_ALL};
    }

    WholeFileMode mode() const { return held_; }

    Status move_fd(int new_fd) {
        if (prepared_) {
            return Status::Error(EBUSY, "Cannot move the lock of '" + path_ +
                                            "' to another fd while a permission change is pending");
        }
        if (held_ == WholeFileMode::Write) {
            return Status::Error(EBUSY, "Cannot move the whole-file write lock of '" + path_ +
                                            "' to another fd");
        }
        MB_TRY(lock_check_same_file(fd_, new_fd, path_));
        if (held_ == WholeFileMode::Read) {
            int err = setlk(new_fd, WholeFileMode::Read);
            if (err) return error(WholeFileMode::Read, err);
            (void)setlk(fd_, WholeFileMode::None);
        }
        unregister_lock_node(fd_);
        fd_ = new_fd;
        register_lock_node(fd_, node_);
        return Status::OK();
    }

private:
    Status error(WholeFileMode want, int err) const {
        std::string msg = std::string("Failed to get a whole-file ") + mode_name(want) + " lock";
        if (err == ENOLCK || err == EOPNOTSUPP || err == EIO) {
            return Status::Error(err, msg + ": the file system of '" + path_ + "' cannot lock (" +
                                          std::strerror(err) + ")");
        }
        if (err != EAGAIN && err != EACCES) return PosixError(msg + " on '" + path_ + "'", err);
        Status s = Status::Error(EAGAIN, msg);
        s.add_detail("Is another process using the image [" + path_ + "]?");
        int shown = 0;
        std::vector<LockHolder> in_way_list;
        for (const LockHolder &h : find_lock_holders(fd_)) {
            if (h.this_process && (h.fd == fd_ || h.node_name == node_)) continue;
            // A read lock only meets write locks; a write lock meets all.
            if (want == WholeFileMode::Read && !h.write_lock) continue;
            s.add_detail(describe_holder(h));
            in_way_list.push_back(h);
            shown++;
        }
        if (!shown) s.add_detail(kNoVisibleHolder);
        record_conflict_holders(std::move(in_way_list));
        return s;
    }

    int fd_;
    std::string path_;
    std::string node_;
    WholeFileMode held_ = WholeFileMode::None;
    WholeFileMode before_ = WholeFileMode::None;
    WholeFileMode pending_ = WholeFileMode::None;
    bool prepared_ = false;
};

}  // namespace

WholeFileMode whole_file_mode_for(uint32_t perm, uint32_t shared) {
    const uint32_t forbid = ~shared & BLK_PERM_ALL;
    if (!(perm & BLK_PERM_ALL) && !forbid) return WholeFileMode::None;
    if (forbid & BLK_PERM_CONSISTENT_READ) return WholeFileMode::Write;
    if ((perm & BLK_PERM_WRITE) && (forbid & BLK_PERM_WRITE)) return WholeFileMode::Write;
    return WholeFileMode::Read;
}

Result<std::unique_ptr<LockProtocol>> whole_file_lock_new(int fd, std::string path,
                                                          std::string node_name,
                                                          qapi::LockingApi api) {
    if (api == qapi::LockingApi::Posix) {
        return Status::Error(EINVAL, "lock-protocol=whole-file cannot use locking-api=posix",
                             "POSIX locks would be dropped by any close of '" + path +
                                 "' in this process; use locking-api=auto or ofd");
    }
    struct flock fl = whole(F_WRLCK);
    int err = 0;
    for (int tries = 0; tries < 100; tries++) {
        if (lock_syscalls().fcntl_lock(fd, F_OFD_GETLK, &fl) == 0) {
            err = 0;
            break;
        }
        err = errno;
        if (err != EINTR) break;
    }
    if (err == EINVAL) {
        return Status::Error(EINVAL, "Cannot lock '" + path +
                                         "': the kernel has no open file description locks",
                             "lock-protocol=whole-file needs them; use lock-protocol=qemu");
    }
    if (err == EBADF) return PosixError("Cannot lock '" + path + "'", err);
    return std::unique_ptr<LockProtocol>(new WholeFileLock(fd, std::move(path), std::move(node_name)));
}

WholeFileMode whole_file_lock_mode(const LockProtocol &lock) {
    auto *w = dynamic_cast<const WholeFileLock *>(&lock);
    return w ? w->mode() : WholeFileMode::None;
}

Status whole_file_lock_move_fd(LockProtocol &lock, int new_fd) {
    auto *w = dynamic_cast<WholeFileLock *>(&lock);
    if (!w) return Status::Error(EINVAL, "Not a whole-file lock");
    return w->move_fd(new_fd);
}

}  // namespace mb
