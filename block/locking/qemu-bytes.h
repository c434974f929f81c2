// QEMU's lock-byte protocol (docs/locking.md is normative).
//
// Each permission bit i is two one-byte F_RDLCK locks: 100+i "I use bit i",
// 200+i "I forbid bit i to others".  A prepare takes the bytes it needs in
// addition to those held, *then* tests the other side's bytes with a
// F_WRLCK probe: two racing openers may both fail, never both succeed.  Byte 0
// (libvirt's) and 104/204 (old QEMU's graph-mod) are never locked.
//
// Racing openers: lock-then-test lets two openers that race for
// incompatible locks both lose.  Two refinements give exactly one winner
// (docs/locking.md section 3): miniblock openers take turns through a
// one-byte write lock on kLockPreparerByte held only around one
// lock-and-test, and a conflict found by a test is retried a few times after
// a short random backoff (kLockRaceAttempts attempts, ~15 ms at most), since
// a racing QEMU that lost lets go of its bytes at once.
//
// Locks are open-file-description locks (F_OFD_SETLK): they belong to the fd's
// open file description, so two nodes of this process on one file exclude
// each other exactly as two processes do, and closing another fd of the file
// drops nothing.
//
// Classic POSIX locks are the fallback (locking-api=posix, or auto on a kernel
// that refuses OFD locks with EINVAL).  They are broken by design: they belong
// to the process, so our own nodes cannot see each other through the kernel
// and closing *any* fd of the file drops *all* of the process's locks on it.
// We keep a per-process inode table (posix-inode.h) that counts, per byte, the
// nodes holding it, detects conflicts between our own nodes, unlocks a byte
// only when no node needs it any more, and defers closes while locks are held.
// Hence the one rule for the file driver: close image fds with
// posix_lock_close_fd(), never close().
//
// If the file system cannot lock at all (ENOLCK, EOPNOTSUPP, EIO), prepare fails
// and says so; it never falls back to "no locking" silently.
#pragma once

#include <memory>
#include <string>

#include "block/locking/lock_protocol.h"
#include "miniblock/status.h"
#include "qapi-types.h"

namespace mb {

// The byte miniblock openers lock (F_WRLCK) while they lock and test QEMU's
// bytes: outside QEMU's 100-104/200-204 and libvirt's 0.
inline constexpr int64_t kLockPreparerByte = 300;
// Lock-and-test attempts of one prepare when tests keep finding a conflict.
inline constexpr int kLockRaceAttempts = 5;

// A lock protocol for one protocol node on `fd` (which stays owned by the
// caller and must outlive the object).  `path` and `node_name` appear in
// messages.  With LockingApi::Auto the kernel is probed once here
// (F_OFD_GETLK): EINVAL means no OFD locks, and POSIX locks are used.
// Fails for LockingApi::Ofd when the kernel has no OFD locks.
// Takes no lock: call prepare()/commit().  The destructor releases.
Result<std::unique_ptr<LockProtocol>> qemu_byte_lock_new(int fd, std::string path,
                                                         std::string node_name,
                                                         qapi::LockingApi api);

// The kernel primitive a lock made by qemu_byte_lock_new() uses
// (LockingApi::Ofd or LockingApi::Posix); Auto for any other LockProtocol.
qapi::LockingApi qemu_byte_lock_api(const LockProtocol &lock);

// Moves a lock to another fd of the same file (a reopen that opened a new fd
// with other flags) without a moment in which the bytes are free and without
// the old and the new fd seeing each other as a conflict: the held bytes are
// taken on new_fd first (no test: they are ours already), then dropped on the
// old fd.  The caller then closes the old fd (with posix_lock_close_fd).
// Refused while a prepare is pending or if new_fd is another file; on failure
// nothing has changed.
Status qemu_byte_lock_move_fd(LockProtocol &lock, int new_fd);

// close() for every fd of an image: while a node of this process holds POSIX
// locks on the fd's inode, the close is deferred until the last of them is
// released (a close would drop them all).  Otherwise closes now.  Returns 0
// or -errno.  Destroy the fd's LockProtocol first.
int posix_lock_close_fd(int fd);

// Takes again, through fd, every POSIX lock byte that some node of this
// process holds on fd's inode.  For recovery after an fd of the image was
// closed behind the table's back (a plain close() by code that does not know
// about the table): the kernel then dropped them all while the table still
// counts them.  Returns 0 or -errno (e.g. -EAGAIN if someone took a
// conflicting lock in the meantime).
int posix_lock_reassert(int fd);

// How many closes are deferred on fd's inode (for tests and diagnostics).
int posix_lock_parked_fds(int fd);

}  // namespace mb
