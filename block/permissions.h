// The permission model (docs/locking.md, DESIGN section 3 and 4).
//
// Every edge asks its child for `perm` (what I will do) and `shared` (what I
// let others do).  The bits and their order are QEMU's, because protocol nodes
// turn them into QEMU's lock bytes (100+i: "I use bit i", 200+i: "I forbid
// bit i") so that miniblock and QEMU processes exclude each other.
//
// This header is free of GLib: the Windows build uses it too.
#pragma once

#include <cstdint>
#include <string>

#include "miniblock/status.h"
#include "qapi-types.h"

namespace mb {

enum : uint32_t {
    BLK_PERM_CONSISTENT_READ = 1u << 0,
    BLK_PERM_WRITE = 1u << 1,
    BLK_PERM_WRITE_UNCHANGED = 1u << 2,
    BLK_PERM_RESIZE = 1u << 3,
    BLK_PERM_ALL = 0xfu,
};
inline constexpr int BLK_PERM_COUNT = 4;

// "consistent read", "write", "write unchanged", "resize"
const char *perm_name(int bit);
// "consistent read, write" (or "nothing")
std::string perm_names(uint32_t perms);

struct PermPair {
    uint32_t perm = 0;
    uint32_t shared = BLK_PERM_ALL;
    bool operator==(const PermPair &) const = default;
};

// Where a node sits, for the lock-mode table.
enum class NodeRole {
    Top,      // opened by a user (a drive)
    Backing,  // a backing file under an overlay
};

// The DESIGN lock-mode table: what a node opened in `mode` uses and shares.
// `raw_format` is true for raw images and protocol nodes opened directly.
// Fails for lock=shared on a writable non-raw image.
Result<PermPair> lock_mode_perms(qapi::LockMode mode, bool read_only, bool raw_format,
                                 NodeRole role);

// The mode a backing file gets when its own was not given: off stays off,
// shared stays shared, auto and exclusive become auto.
qapi::LockMode backing_lock_mode(qapi::LockMode overlay_mode);

// The lock bytes a (perm, shared) pair maps to: `use` = bits whose 100+i byte
// is locked, `forbid` = bits whose 200+i byte is locked.  Forbidding write
// also forbids write-unchanged (the 2021 compatibility rule: whoever locks 201
// locks 202).
struct LockBits {
    uint32_t use = 0;
    uint32_t forbid = 0;
    bool operator==(const LockBits &) const = default;
};
LockBits lock_bits_for(uint32_t perm, uint32_t shared);

// The bytes to test for conflicts when holding `bits`, as bit masks of the
// *other side's* bytes: others' "forbid" bytes that stop our uses, and
// others' "use" bytes that stop our forbids.  A held 102 counts as write, a
// held 202 as forbidding write.
struct ConflictTest {
    uint32_t their_forbid = 0;  // test 200+i
    uint32_t their_use = 0;     // test 100+i
};
ConflictTest conflict_test_for(LockBits bits);

// QEMU's lock byte offsets.
inline constexpr int64_t LOCK_USE_BASE = 100;
inline constexpr int64_t LOCK_FORBID_BASE = 200;

}  // namespace mb
