// How long the loop busy-polls for completions before it blocks: QEMU's
// adaptive polling (util/aio-posix.c, the poll-max-ns / poll-grow /
// poll-shrink properties of an IOThread), the same policy on every system
// (AioContext::poll in block/aio-common.cpp).
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
    // QEMU's IOThreads default to 32768 ns, which buys latency with a CPU
    // of their own; qemu-img's main loop does not poll at all.  A spin
    // longer than a blocking wait costs (a poll, an eventfd read, a
    // wake-up: a few us) spends more CPU than it saves: at queue depth 1 on
    // the virtio disk here, where completions come 20-30 us after
    // io_submit returns, a 32 us window caught them and cost 33 us of CPU
    // per request against qemu-img's 30 and 20 us without it
    // (bench/queue-bench.sh DEPTH=1).
    static constexpr int64_t kDefaultMaxNs = 8192;
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
