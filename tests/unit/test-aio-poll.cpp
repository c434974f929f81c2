// The loop's adaptive busy-poll (block/aio-poll.h): the policy on its own,
// then an AioContext waiting for real worker threads, whose window must grow
// while completions come soon and drop to nothing after a wait longer than
// the maximum (what keeps queue depth 1 from burning CPU in a spin).
#include <stdlib.h>
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

void test_loop(void **) {
    // A maximum of 50 ms: a worker that sleeps 2 ms is well inside it even
    // on a loaded machine (and still in flight when the loop starts to
    // wait), one that sleeps 80 ms never is.
    setenv("MINIBLOCK_POLL_NS", "50000000", 1);
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
    wait_job(ctx, 2);
    int64_t w = ctx.poll_window();
    if (polls) assert_true(w >= AdaptivePoll::kFirstNs);
    else assert_int_equal(w, 0);
    wait_job(ctx, 2);  // longer than the window: grow
    if (polls) assert_true(ctx.poll_window() > w);
    else assert_int_equal(ctx.poll_window(), 0);
    wait_job(ctx, 80);  // slower than the maximum: stop spinning
    assert_int_equal(ctx.poll_window(), 0);
    wait_job(ctx, 80);
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
