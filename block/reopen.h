// Reopen of a drive's own layer (the top node and the file nodes under it,
// never its backing chain): read-only <-> read-write and a lock mode change,
// as one permission transaction (QEMU's blockdev-reopen).
#pragma once

#include <optional>

#include "block/block_int.h"

namespace mb {

struct ReopenParams {
    std::optional<bool> read_only;
    std::optional<qapi::LockMode> lock;
};

// On failure every node's flags, fds and lock bytes are exactly as before.
Status bdrv_reopen(BdrvChild *root, const ReopenParams &p);

}  // namespace mb
