// Internal: the eight bytes of QEMU's protocol we lock, as LockBits.
//
// Byte 0 (libvirt) and 104/204 (graph-mod, old QEMU) are deliberately not in
// this list: nothing here can name them, so nothing here can lock them.
#pragma once

#include <array>
#include <cstdint>

#include "block/permissions.h"

namespace mb::lockbytes {

// Locking order: our "use" bytes, then our "forbid" bytes.
inline constexpr std::array<int64_t, 8> kOrder = {100, 101, 102, 103, 200, 201, 202, 203};

inline bool is_use_byte(int64_t off) { return off < LOCK_FORBID_BASE; }
inline int bit_of(int64_t off) {
    return static_cast<int>(off - (is_use_byte(off) ? LOCK_USE_BASE : LOCK_FORBID_BASE));
}
// Index 0..7 into kOrder, for per-byte counters.
inline int index_of(int64_t off) { return (is_use_byte(off) ? 0 : 4) + bit_of(off); }

inline bool has(LockBits b, int64_t off) {
    return ((is_use_byte(off) ? b.use : b.forbid) >> bit_of(off)) & 1;
}
inline void set(LockBits &b, int64_t off, bool on) {
    uint32_t &m = is_use_byte(off) ? b.use : b.forbid;
    const uint32_t bit = 1u << bit_of(off);
    m = on ? (m | bit) : (m & ~bit);
}
inline LockBits minus(LockBits a, LockBits b) { return {a.use & ~b.use, a.forbid & ~b.forbid}; }
inline LockBits unite(LockBits a, LockBits b) { return {a.use | b.use, a.forbid | b.forbid}; }
inline bool empty(LockBits b) { return b.use == 0 && b.forbid == 0; }

// The bytes of others that a ConflictTest probes, as LockBits of *their* side.
inline LockBits as_bits(ConflictTest t) { return {t.their_use, t.their_forbid}; }

}  // namespace mb::lockbytes
