// Coroutines for the data plane: mb::Task<T>, a lazily started C++20
// coroutine that resumes its awaiter by symmetric transfer.
//
// A request is a Task: format drivers co_await their children's Tasks, the
// file driver suspends on an I/O completion (thread pool or libaio) and is
// resumed from the event loop (block/aio.h).  Tasks are single-owner and
// never cross threads: everything runs in the thread of the AioContext.
// No exceptions cross a driver callback; an escaping one terminates.
#pragma once

#include <coroutine>
#include <cstddef>
#include <cstdlib>
#include <new>
#include <deque>
#include <exception>
#include <optional>
#include <utility>

namespace mb {

template <class T>
class Task;

namespace detail {

// Coroutine frames come and go once per request per layer: recycle them
// through per-thread free lists by size class instead of malloc each time.
class FramePool {
public:
    static void *allocate(std::size_t n) {
        std::size_t c = size_class(n);
        if (c < CLASSES) {
            auto &fl = lists()[c];
            if (fl) {
                Free *f = fl;
                fl = f->next;
                return f;
            }
            return ::operator new((c + 1) * GRAIN);
        }
        return ::operator new(n);
    }
    static void deallocate(void *p, std::size_t n) {
        std::size_t c = size_class(n);
        if (c < CLASSES) {
            auto *f = static_cast<Free *>(p);
            f->next = lists()[c];
            lists()[c] = f;
            return;
        }
        ::operator delete(p);
    }

private:
    struct Free {
        Free *next;
    };
    static constexpr std::size_t GRAIN = 64, CLASSES = 32;  // frames up to 2 KiB
    static std::size_t size_class(std::size_t n) { return (n + GRAIN - 1) / GRAIN - 1; }
    static Free **lists() {
        thread_local Free *l[CLASSES] = {};
        return l;
    }
};

struct PromiseBase {
    static void *operator new(std::size_t n) { return FramePool::allocate(n); }
    static void operator delete(void *p, std::size_t n) { FramePool::deallocate(p, n); }

    std::coroutine_handle<> continuation = std::noop_coroutine();

    std::suspend_always initial_suspend() noexcept { return {}; }
    struct FinalAwaiter {
        bool await_ready() noexcept { return false; }
        template <class P>
        std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
            return h.promise().continuation;
        }
        void await_resume() noexcept {}
    };
    FinalAwaiter final_suspend() noexcept { return {}; }
    void unhandled_exception() noexcept { std::terminate(); }
};

}  // namespace detail

// Ownership of a coroutine frame, shared by Task<T> and Task<void>.
template <class Promise>
class TaskBase {
public:
    TaskBase(TaskBase &&o) noexcept : h_(std::exchange(o.h_, {})) {}
    TaskBase &operator=(TaskBase &&o) noexcept {
        if (this != &o) {
            if (h_) h_.destroy();
            h_ = std::exchange(o.h_, {});
        }
        return *this;
    }
    ~TaskBase() {
        if (h_) h_.destroy();
    }

    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiter) noexcept {
        h_.promise().continuation = awaiter;
        return h_;
    }
    // For sync_wait / detached starts: the raw handle.
    std::coroutine_handle<Promise> handle() const { return h_; }
    bool done() const { return h_ && h_.done(); }

protected:
    explicit TaskBase(std::coroutine_handle<Promise> h) : h_(h) {}
    std::coroutine_handle<Promise> h_;
};

template <class T>
struct TaskPromise : detail::PromiseBase {
    std::optional<T> value;
    Task<T> get_return_object();
    template <class U>
    void return_value(U &&v) { value.emplace(std::forward<U>(v)); }
};

template <>
struct TaskPromise<void> : detail::PromiseBase {
    Task<void> get_return_object();
    void return_void() {}
};

template <class T>
class [[nodiscard]] Task : public TaskBase<TaskPromise<T>> {
public:
    using promise_type = TaskPromise<T>;
    T await_resume() { return std::move(*this->h_.promise().value); }
    T &result() { return *this->h_.promise().value; }

private:
    friend promise_type;
    explicit Task(std::coroutine_handle<promise_type> h) : TaskBase<promise_type>(h) {}
};

template <>
class [[nodiscard]] Task<void> : public TaskBase<TaskPromise<void>> {
public:
    using promise_type = TaskPromise<void>;
    void await_resume() {}

private:
    friend promise_type;
    explicit Task(std::coroutine_handle<promise_type> h) : TaskBase<promise_type>(h) {}
};

template <class T>
Task<T> TaskPromise<T>::get_return_object() {
    return Task<T>(std::coroutine_handle<TaskPromise<T>>::from_promise(*this));
}
inline Task<void> TaskPromise<void>::get_return_object() {
    return Task<void>(std::coroutine_handle<TaskPromise<void>>::from_promise(*this));
}

// A mutex for coroutines of one thread (e.g. serializing read-modify-write of
// an unaligned O_DIRECT write, or qcow2 metadata updates).  FIFO, no
// spinning: waiters are resumed by unlock().
class CoMutex {
public:
    struct LockAwaiter {
        CoMutex &m;
        bool await_ready() noexcept {
            if (!m.locked_) {
                m.locked_ = true;
                return true;
            }
            return false;
        }
        void await_suspend(std::coroutine_handle<> h) { m.waiters_.push_back(h); }
        void await_resume() noexcept {}
    };
    LockAwaiter lock() { return LockAwaiter{*this}; }
    void unlock();
    bool locked() const { return locked_; }

private:
    bool locked_ = false;
    std::deque<std::coroutine_handle<>> waiters_;
};

// RAII guard: `auto g = co_await CoLockGuard::take(m);` is awkward in C++20,
// so use: `co_await m.lock(); CoLockGuard g(m);`
class CoLockGuard {
public:
    explicit CoLockGuard(CoMutex &m) : m_(&m) {}
    ~CoLockGuard() { if (m_) m_->unlock(); }
    CoLockGuard(const CoLockGuard &) = delete;
    CoLockGuard &operator=(const CoLockGuard &) = delete;

private:
    CoMutex *m_;
};

}  // namespace mb

namespace mb {

// A reader/writer lock for coroutines of one thread: many shared holders or
// one exclusive.  Writers are not starved: once one waits, new readers queue.
class CoRwLock {
public:
    struct Awaiter {
        CoRwLock &l;
        bool exclusive;
        bool await_ready() noexcept { return l.try_take(exclusive); }
        void await_suspend(std::coroutine_handle<> h) { l.waiters_.push_back({h, exclusive}); }
        void await_resume() noexcept {}
    };
    Awaiter lock_shared() { return Awaiter{*this, false}; }
    Awaiter lock_exclusive() { return Awaiter{*this, true}; }
    void unlock();

private:
    bool try_take(bool exclusive) {
        if (!waiters_.empty() || writer_ || (exclusive && readers_ > 0)) return false;
        if (exclusive) writer_ = true; else readers_++;
        return true;
    }
    struct Waiter {
        std::coroutine_handle<> h;
        bool exclusive;
    };
    int readers_ = 0;
    bool writer_ = false;
    std::deque<Waiter> waiters_;
};

}  // namespace mb
