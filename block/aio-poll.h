// How long the loop busy-polls for completions before it blocks: QEMU's
// adaptive polling (util/aio-posix.c, the poll-max-ns / poll-grow /
// poll-shrink properties of an IOThread), the same policy on every system.
//
// Polling pays only when the next completion comes within the window: then
// it saves the system calls and the wake-up of a blocking wait.  When it
// does not (a slow device, queue depth 1, completions that arrive in bursts
// hundreds of microseconds apart) every spin is CPU burnt for nothing, a
// fixed window costs more CPU per request than not polling at all.  So the
// window starts at zero and follows what each blocking wait measured:
//   - the wait ended within the window: polling caught it, keep the window;
//   - it took longer than the maximum: polling would not have caught it,
//     shrink (to zero, QEMU's default poll-shrink);
//   - it ended within the maximum but after the window: grow (4 us first,
//     then double, QEMU's default poll-grow), up to the maximum.
#pragma once

#include <cstdint>

namespace mb {

class AdaptivePoll {
public:
    static constexpr int64_t kDefaultMaxNs = 32768;  // QEMU's IOThread default
    static constexpr int64_t kFirstNs = 4000;

    // The window to spin for now; 0: do not poll.
    int64_t window() const { return ns_; }
    int64_t max() const { return max_ns_; }
    // 0 turns polling off (MINIBLOCK_POLL_NS=0).
    void set_max(int64_t max_ns) {
        max_ns_ = max_ns < 0 ? 0 : max_ns;
        if (ns_ > max_ns_) ns_ = max_ns_;
    }

    // After a wait that may have blocked: `block_ns` is the time from the
    // start of polling to the end of the wait.
    void update(int64_t block_ns) {
        if (max_ns_ == 0) return;
        if (block_ns <= ns_) return;  // the sweet spot
        if (block_ns > max_ns_) {
            ns_ = 0;
        } else if (ns_ < max_ns_) {
            ns_ = ns_ ? ns_ * 2 : kFirstNs;
            if (ns_ > max_ns_) ns_ = max_ns_;
        }
    }

private:
    int64_t ns_ = 0;
    int64_t max_ns_ = kDefaultMaxNs;
};

}  // namespace mb
