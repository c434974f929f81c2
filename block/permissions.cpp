#include "block/permissions.h"

#include <cerrno>

namespace mb {

using qapi::LockMode;

const char *perm_name(int bit) {
    static const char *const names[BLK_PERM_COUNT] = {"consistent read", "write",
                                                      "write unchanged", "resize"};
    return bit >= 0 && bit < BLK_PERM_COUNT ? names[bit] : "unknown";
}

std::string perm_names(uint32_t perms) {
    std::string s;
    for (int i = 0; i < BLK_PERM_COUNT; i++) {
        if (!(perms & (1u << i))) continue;
        if (!s.empty()) s += ", ";
        s += perm_name(i);
    }
    return s.empty() ? "nothing" : s;
}

Result<PermPair> lock_mode_perms(LockMode mode, bool read_only, bool raw_format, NodeRole role) {
    constexpr uint32_t R = BLK_PERM_CONSISTENT_READ, W = BLK_PERM_WRITE,
                       RS = BLK_PERM_RESIZE;
    if (role == NodeRole::Backing) read_only = true;

    uint32_t perm = R;
    if (!read_only) perm |= raw_format ? W : (W | RS);

    switch (mode) {
    case LockMode::Off:
    case LockMode::Shared:
        if (mode == LockMode::Shared && !read_only && !raw_format) {
            return Status::Error(EINVAL, "lock=shared is not possible on a writable non-raw image",
                                 "Two writers would both update the image's metadata and corrupt "
                                 "it; use lock=auto, or open the image read-only");
        }
        // Off takes no locks at all (the protocol node skips locking); the
        // perms still describe what the node does for in-graph checks.
        return PermPair{perm, BLK_PERM_ALL};
    case LockMode::Auto:
        return PermPair{perm, R};
    case LockMode::Exclusive:
        return PermPair{perm, 0};
    }
    return Status::Error(EINVAL, "unknown lock mode");
}

LockMode backing_lock_mode(LockMode overlay_mode) {
    switch (overlay_mode) {
    case LockMode::Off: return LockMode::Off;
    case LockMode::Shared: return LockMode::Shared;
    case LockMode::Auto:
    case LockMode::Exclusive: return LockMode::Auto;
    }
    return LockMode::Auto;
}

LockBits lock_bits_for(uint32_t perm, uint32_t shared) {
    LockBits b;
    b.use = perm & BLK_PERM_ALL;
    b.forbid = ~shared & BLK_PERM_ALL;
    if (b.forbid & BLK_PERM_WRITE) b.forbid |= BLK_PERM_WRITE_UNCHANGED;
    return b;
}

ConflictTest conflict_test_for(LockBits bits) {
    ConflictTest t;
    t.their_forbid = bits.use;
    t.their_use = bits.forbid;
    // 202 held by others forbids write; 102 held by others is a write.
    if (bits.use & BLK_PERM_WRITE) t.their_forbid |= BLK_PERM_WRITE_UNCHANGED;
    if (bits.forbid & BLK_PERM_WRITE) t.their_use |= BLK_PERM_WRITE_UNCHANGED;
    return t;
}

}  // namespace mb
