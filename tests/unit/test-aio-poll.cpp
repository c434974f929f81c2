// The loop's adaptive busy-poll (block/aio-poll.h): the policy on its own,
// then an AioContext waiting for real worker threads, whose window must grow
// while completions come soon and drop to nothing after a wait longer than
// the maximum (what keeps queue depth 1 from burning CPU in a spin).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "block/aio.h"
#include "block/aio-poll.h"

// cmocka last: its macros clash with C++ headers.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
extern "C" {
#include <cmocka.h>
}

using namespace mb;

namespace {

void test_policy(void **) {
    AdaptivePoll p;
    assert_int_equal(p.window(), 0);  // no spin before a wait has been seen
    assert_int_equal(p.max(), 8192);  // about what a blocking wait costs
    p.set_max(32768);                 // QEMU's IOThread default
    p.update(10000);  // a short wait: start polling
    assert_int_equal(p.window(), 4000);
    p.update(10000);  // still longer than the window: grow
    assert_int_equal(p.window(), 8000);
    p.update(7000);  // caught within the window: keep it
    assert_int_equal(p.window(), 8000);
    p.update(20000);
    assert_int_equal(p.window(), 16000);
    p.update(30000);
    assert_int_equal(p.window(), 32000);
    p.update(32500);  // capped at the maximum
    assert_int_equal(p.window(), 32768);
    p.update(30000);  // the sweet spot at the cap
    assert_int_equal(p.window(), 32768);
    p.update(150000);  // longer than the maximum: polling cannot pay
    assert_int_equal(p.window(), 0);
    p.update(150000);
    assert_int_equal(p.window(), 0);

    p.update(1000);
    p.set_max(2000);  // a lower maximum clamps the window at once
    assert_int_equal(p.window(), 2000);
    p.set_max(0);  // MINIBLOCK_POLL_NS=0: never poll
    assert_int_equal(p.window(), 0);
    p.update(100);
    assert_int_equal(p.window(), 0);
    p.set_max(-5);
    assert_int_equal(p.max(), 0);
}

int sleep_job(ThreadPool::Job *j) {
    std::this_thread::sleep_for(std::chrono::milliseconds(j->ret));
    return 0;
}

Task<int> run_job(ThreadPool &pool, ThreadPool::Job &job) { co_return co_await pool.run(job); }

// Waits in ctx's loop for a worker that sleeps `ms` milliseconds.
void wait_job(AioContext &ctx, int ms) {
    ThreadPool::Job job;
    job.fn = sleep_job;
    job.ret = ms;
    assert_int_equal(sync_wait(run_job(ctx.thread_pool(), job), ctx), 0);
}

// The loop's thread, for gated_job.
pid_t loop_tid;

// Whether thread `tid` of this process sleeps in poll(2), GLib's wait (not
// merely asleep: the loop may wait for a mutex a worker holds on its way).
bool thread_waits_in_poll(pid_t tid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", static_cast<int>(tid));
    FILE *f = fopen(path, "r");
    if (!f) return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *paren = strrchr(buf, ')');  // the name may hold anything
    if (!paren || paren[1] != ' ' || paren[2] != 'S') return false;
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", static_cast<int>(tid));
    f = fopen(path, "r");
    if (!f) return false;
    long nr = -1;
    int got = fscanf(f, "%ld", &nr);
    fclose(f);
    return got == 1 && (nr == SYS_poll || nr == SYS_ppoll);
}

// A worker that completes only once the loop has stopped spinning and gone
// to sleep in its poll, and then after `ret` ms more.  A worker that just
// slept was timed against a loop that the scheduler may not have run yet:
// on a loaded machine a 2 ms job could end before the loop began waiting
// (nothing measured, the window did not grow: 1 run in 300 next to a
// full-load stress-ng) or be seen tens of ms late.
int gated_job(ThreadPool::Job *j) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!thread_waits_in_poll(loop_tid) && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    std::this_thread::sleep_for(std::chrono::milliseconds(j->ret));
    return 0;
}

void wait_gated_job(AioContext &ctx, int ms) {
    ThreadPool::Job job;
    job.fn = gated_job;
    job.ret = ms;
    assert_int_equal(sync_wait(run_job(ctx.thread_pool(), job), ctx), 0);
}

void test_loop(void **) {
    // A maximum of 200 ms: a completion that comes as soon as the loop
    // sleeps is well inside it unless the loop is kept off a CPU for that
    // long; one 250 ms after the loop sleeps never is.
    setenv("MINIBLOCK_POLL_NS", "200000000", 1);
    loop_tid = static_cast<pid_t>(syscall(SYS_gettid));
    GMainContext *g = g_main_context_new();
    AioContext ctx(g);
    g_main_context_unref(g);
    AioContext::Scope scope(ctx);
    assert_int_equal(ctx.poll_window(), 0);
    // A worker is worth polling for only while the workers leave a core to
    // the spinning loop: with one core the window must stay shut.
    const bool polls = std::thread::hardware_concurrency() >= 2;
    // (A wait may take more than one loop iteration: GLib wakes a new
    // context once, so the exact window depends on how many.)
    wait_gated_job(ctx, 0);
    int64_t w = ctx.poll_window();
    if (polls) assert_true(w >= AdaptivePoll::kFirstNs);
    else assert_int_equal(w, 0);
    wait_gated_job(ctx, 0);  // longer than the window (it had to sleep): grow
    if (polls) assert_true(ctx.poll_window() > w);
    else assert_int_equal(ctx.poll_window(), 0);
    wait_gated_job(ctx, 250);  // slower than the maximum: stop spinning
    assert_int_equal(ctx.poll_window(), 0);
    wait_gated_job(ctx, 250);
    assert_int_equal(ctx.poll_window(), 0);
    unsetenv("MINIBLOCK_POLL_NS");
}

void test_loop_polling_off(void **) {
    setenv("MINIBLOCK_POLL_NS", "0", 1);
    GMainContext *g = g_main_context_new();
    AioContext ctx(g);
    g_main_context_unref(g);
    AioContext::Scope scope(ctx);
    for (int i = 0; i < 3; i++) {
        wait_job(ctx, 2);
        assert_int_equal(ctx.poll_window(), 0);
    }
    unsetenv("MINIBLOCK_POLL_NS");
}

}  // namespace

int main() {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy),
        cmocka_unit_test(test_loop),
        cmocka_unit_test(test_loop_polling_off),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
