#include <cerrno>
#include "block/locking/syscalls.h"

#include <unistd.h>

namespace mb {

namespace {

int real_fcntl_lock(int fd, int cmd, struct flock *fl) { return ::fcntl(fd, cmd, fl); }
int real_fstat(int fd, struct stat *st) { return ::fstat(fd, st); }
int real_close(int fd) { return ::close(fd); }

constexpr LockSyscalls kDefault = {real_fcntl_lock, real_fstat, real_close};

LockSyscalls g_table = kDefault;

}  // namespace

LockSyscalls &lock_syscalls() { return g_table; }
const LockSyscalls &default_lock_syscalls() { return kDefault; }
void reset_lock_syscalls() { g_table = kDefault; }

Status lock_check_same_file(int fd, int new_fd, const std::string &path) {
    struct stat a, b;
    if (g_table.fstat(fd, &a) < 0) return PosixError("fstat '" + path + "'", errno);
    if (g_table.fstat(new_fd, &b) < 0) return PosixError("fstat '" + path + "'", errno);
    if (a.st_dev != b.st_dev || a.st_ino != b.st_ino)
        return Status::Error(EXDEV, "Cannot move the lock of '" + path + "' to an fd of another file");
    return Status::OK();
}

}  // namespace mb
