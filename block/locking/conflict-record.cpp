// The holders named by this thread's last lock conflict, as data for the C
// API's structured errors (holders.h).  Apart from holders.cpp because that
// reads /proc: the record itself is the same on every system (on Windows it
// stays empty, since nobody can be named there).
#include <utility>

#include "block/locking/holders.h"

namespace mb {

namespace {
thread_local std::vector<LockHolder> conflict_holders;
}

void record_conflict_holders(std::vector<LockHolder> holders) { conflict_holders = std::move(holders); }

std::vector<LockHolder> take_conflict_holders() { return std::exchange(conflict_holders, {}); }

}  // namespace mb
