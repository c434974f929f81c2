// A lock protocol: how one protocol node turns its cumulative (perm, shared)
// into locks on its file, as one step of a graph-wide permission transaction.
//
//   prepare(perm, shared)  take the new bytes *in addition to* those held,
//                          then test for conflicts (lock, then test: two racing
//                          openers may both fail, never both succeed).  On
//                          failure the byte map is exactly as before the call.
//   commit()               drop the bytes the new state no longer needs.
//   abort()                drop what prepare took: the byte map is exactly as
//                          before prepare.
//
// Implementations: block/locking/qemu-bytes.cpp (QEMU's byte protocol over
// OFD locks, or POSIX locks with a per-process inode table),
// block/locking/whole-file.cpp (the 2009 patch), block/locking/win32.cpp.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "block/permissions.h"
#include "miniblock/status.h"

namespace mb {

class LockProtocol {
public:
    virtual ~LockProtocol() = default;
    virtual Status prepare(uint32_t perm, uint32_t shared) = 0;
    virtual void commit() = 0;
    virtual void abort() = 0;
    // Drops every lock this node holds (inactivate, close).
    virtual void release() = 0;
    // What this node holds now.
    virtual LockBits held() const = 0;
};

}  // namespace mb
