// Who holds QEMU's lock bytes of a file: the diagnostics behind "Failed to get
// "write" lock" and `miniblock-img locks`.
//
// OFD locks show pid -1 in /proc/locks, so their owners are found by scanning
// /proc/PID/fd/* for the file's (st_dev, st_ino) and reading the "lock:"
// lines of /proc/PID/fdinfo/FD.  POSIX locks carry their pid in /proc/locks.
// This process's own holders are named by node: OFD fds through the registry
// below, POSIX locks through the per-process inode table.  Locks seen in
// /proc/locks that no readable process accounts for (another pid namespace,
// another user's process) are reported as one anonymous holder.
//
// Best effort and bounded: unreadable or vanishing /proc entries are skipped
// silently; every read has a size cap.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace mb {

// Bit 4 of LockHolder::use/forbid: bytes 104/204, locked by old QEMUs.
inline constexpr uint32_t LOCK_BIT_GRAPH_MOD = 1u << 4;

struct LockHolder {
    int pid = 0;                // 0: not visible from here
    bool this_process = false;
    std::string node_name;      // this process: the node, when registered
    int fd = -1;                // this process: the fd, when known
    std::string comm;           // /proc/PID/comm, empty when unreadable
    std::string cmdline;        // /proc/PID/cmdline, NULs as spaces, capped
    std::string kind;           // "ofd", "posix" or "ofd+posix"
    uint32_t use = 0;           // bit i: byte 100+i held (bit 4: 104)
    uint32_t forbid = 0;        // bit i: byte 200+i held (bit 4: 204)
    bool write_lock = false;    // some of those bytes is write-locked: not
                                // QEMU's protocol (e.g. a whole-file lock)
};

// Every holder of bytes 100-104/200-204 of fd's file, this process included
// (one entry per node of ours).  Sorted: this process first, then by pid.
std::vector<LockHolder> find_lock_holders(int fd);
std::vector<LockHolder> find_lock_holders(dev_t dev, ino_t ino);

// "consistent read, write", "graph-mod (old QEMU)", or "nothing".
std::string lock_bit_names(uint32_t mask);
// The same as a list, for JSON arrays (empty for no bits).
std::vector<std::string> lock_bit_name_list(uint32_t mask);
// "uses: write, resize / forbids: write, resize"
std::string describe_holder_bits(const LockHolder &h);
// One detail line of a lock conflict, e.g.
//   Held by pid 1234 (qemu-io), command line: qemu-io -r a.img; uses: consistent read; forbids: nothing
//   Held by node 'disk0' of this process (pid 99); uses: ...; forbids: ...
std::string describe_holder(const LockHolder &h);
// The detail line when nobody could be found.
inline constexpr const char *kNoVisibleHolder =
    "No holder is visible from here: it may be on another host or in another pid namespace";

// The holders named by this thread's last lock-conflict error, as data (the
// C API's structured errors hand them out).  Each conflict replaces the
// previous record; take_ empties it.
void record_conflict_holders(std::vector<LockHolder> holders);
std::vector<LockHolder> take_conflict_holders();
// The detail line when the conflicting byte was free again by the time we
// looked for its holder: a racing opener that lost and let go.
inline constexpr const char *kHolderJustGone =
    "The holder let go of the lock before it could be named (another opener racing for "
    "it?): try again";

// The process-wide registry naming our own lock fds after their node.
void register_lock_node(int fd, std::string node_name);
void unregister_lock_node(int fd);

}  // namespace mb
