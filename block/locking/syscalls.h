// The system calls the lock code makes, in one table that tests can swap.
//
// Lock code is mostly error paths that a healthy machine never takes: ENOLCK
// on a network file system, EINTR, a failure half-way through a transaction.
// As in SQLite's os_unix.c (aSyscall), every call goes through this table so a
// test can replace one entry (fail with ENOLCK, fail on the Nth call) and
// check that the byte map is still exactly right afterwards.
//
// The entries have the plain libc contract: -1 and errno on failure.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>
#include <fcntl.h>

#include <string>

#include "miniblock/status.h"

namespace mb {

struct LockSyscalls {
    // fcntl(fd, cmd, fl) for F_OFD_SETLK/F_OFD_GETLK/F_SETLK/F_GETLK.
    int (*fcntl_lock)(int fd, int cmd, struct flock *fl);
    int (*fstat)(int fd, struct stat *st);
    int (*close)(int fd);
};

// The live table.  Not synchronised: tests swap entries while no other
// thread uses the lock code.
LockSyscalls &lock_syscalls();

// The libc entries, to restore after a test or to wrap in a fault injector.
const LockSyscalls &default_lock_syscalls();

// Restores every entry to its libc default.
void reset_lock_syscalls();

// Before a lock moves to new_fd (reopen): both fds must be the same file.
// EXDEV "Cannot move the lock of 'PATH' to an fd of another file" otherwise.
Status lock_check_same_file(int fd, int new_fd, const std::string &path);

}  // namespace mb
