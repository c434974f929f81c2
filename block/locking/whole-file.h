// The whole-file lock protocol (lock-protocol=whole-file): the 2009 patch's
// semantics, one fcntl lock over the whole file (l_start 0, l_len 0).
//
//   F_RDLCK  shared: any number of holders; keeps out anyone wanting F_WRLCK
//   F_WRLCK  exclusive: nobody else holds anything
//
// A node's (perm, shared) maps onto these (docs/locking.md, "Whole-file
// protocol", has the table and the reasoning):
//
//   nothing used, nothing forbidden                    no lock
//   forbids consistent read (exclusive modes)          F_WRLCK
//   writes and forbids other writers (auto, writable)  F_WRLCK
//   anything else (shared modes, read-only auto)       F_RDLCK
//
// The protocol cannot say "readers yes, writers no" for a writer, so a
// writable auto node is stricter here than under QEMU's byte protocol: it
// keeps readers out too.
//
// Locks are OFD locks only: a second F_OFD_SETLK on the same open file
// description converts the lock atomically (F_RDLCK to F_WRLCK for commit, and
// back after it); on failure the old lock is still held.  Classic POSIX
// whole-file locks would be dropped by any close of the file in this process
// and cannot be moved between fds, so locking-api=posix (or a kernel without
// OFD locks) is refused rather than weakened.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "block/locking/lock_protocol.h"
#include "miniblock/status.h"
#include "qapi-types.h"

namespace mb {

enum class WholeFileMode { None = 0, Read = 1, Write = 2 };

// The mapping above.
WholeFileMode whole_file_mode_for(uint32_t perm, uint32_t shared);

// A whole-file lock for one protocol node on `fd` (owned by the caller; it
// must outlive the object).  Takes no lock until prepare()/commit().
Result<std::unique_ptr<LockProtocol>> whole_file_lock_new(int fd, std::string path,
                                                          std::string node_name,
                                                          qapi::LockingApi api);

// The mode a lock made by whole_file_lock_new() holds now.
WholeFileMode whole_file_lock_mode(const LockProtocol &lock);

// Moves the lock to another fd of the same file (reopen for commit): the new
// description takes the same F_RDLCK first (no moment without it), then the
// old one lets go.  A F_WRLCK cannot be moved: the old description's lock
// conflicts with the new one's, and dropping it first would open a window;
// commit therefore reopens before it upgrades and after it downgrades.
// Refused while a prepare is pending.
Status whole_file_lock_move_fd(LockProtocol &lock, int new_fd);

}  // namespace mb
