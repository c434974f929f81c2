// Classic POSIX locks, and the per-process inode table that makes them usable.
//
// The flaw: POSIX advisory locks (F_SETLK) belong to the *process*, not to
// the file descriptor.  Two fds of one process on one file share one set of
// locks: a lock taken through one is silently merged with the other's, an
// unlock through one drops the other's, F_GETLK never reports the process's
// own locks, and close() of *any* fd of the file drops *every* lock the
// process holds on it.
//
// The consequence: two nodes of this process on one image (two drives, a
// backing file shared by two overlays, a reopen that opens a second fd) would
// not see each other's locks, would unlock each other's bytes, and a close of
// one would leave the other running unprotected while it believes it holds its
// locks.  Another process could then open the image read-write.
//
// Our answer (SQLite's unixInodeInfo): one PosixInode per (st_dev, st_ino) in
// this process, with a count per lock byte of how many of our nodes hold it.
// A byte is locked in the kernel when its count goes from 0 to 1 and unlocked
// when it drops back to 0; conflicts between two of our nodes are found in the
// table, since the kernel cannot see them.  posix_lock_close_fd() replaces
// close() for image fds: while any of our nodes holds a byte of the inode, the
// close is deferred (the fd is parked in the inode) and done when the last
// byte is released, so a close never drops a lock someone still relies on.
// Every fd of a POSIX-locked image must therefore be closed through it.
//
// Internal to block/locking: the file driver only sees qemu-bytes.h.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "block/permissions.h"
#include "miniblock/status.h"

namespace mb {

struct PosixInode;

// One node of this process using POSIX locks on an inode.
struct PosixNode {
    PosixInode *inode = nullptr;
    int fd = -1;
    std::string name;
    LockBits held;  // bytes this node holds (as far as the table is concerned)
};

// Held across a whole prepare, so two nodes of this process never interleave
// their lock-then-test.  Recursive because diagnostics read the table too.
std::recursive_mutex &posix_table_mutex();

// Adds a node on fd's inode; fails only if fstat fails.
Result<PosixNode *> posix_node_attach(int fd, std::string name);
// Removes a node; it must hold nothing (release first).
void posix_node_detach(PosixNode *node);

// Points node at another fd of the same inode (POSIX locks belong to the
// process, so nothing is re-locked).  EXDEV if the fd is another file.
int posix_node_set_fd(PosixNode *node, int fd);

// Takes byte `off` for `node`: F_SETLK F_RDLCK only if no node of this process
// holds it yet.  Returns 0 or a positive errno.
int posix_node_lock(PosixNode *node, int64_t off);
// Releases byte `off` for `node`: F_SETLK F_UNLCK only when no other node of
// this process still holds it.  Returns 0 or a positive errno (the byte then
// stays held).
int posix_node_unlock(PosixNode *node, int64_t off);

// Other nodes of this process on the same inode that hold `off`.
std::vector<const PosixNode *> posix_node_peers_holding(const PosixNode *node, int64_t off);

// Every node of this process holding bytes of (dev, ino): (node name, fd, bits).
struct PosixSelfHolder {
    std::string name;
    int fd;
    LockBits held;
};
std::vector<PosixSelfHolder> posix_self_holders(dev_t dev, ino_t ino);

}  // namespace mb
