/*
 * miniblock C API: open a disk image through miniblock's block layer, with
 * QEMU-compatible image locking, from C.
 *
 *   char *err = NULL;
 *   mb_drive *d = mb_open("file=disk.img,format=raw,lock=exclusive", &err);
 *   if (!d) { fprintf(stderr, "%s\n", err); mb_free_error(err); return 1; }
 *   if (mb_pwrite(d, buf, 512, 0) < 0) ...
 *   mb_close(d);
 *
 * Data calls return 0 (or a length) on success and a negative errno on
 * failure.  The synchronous calls are thin wrappers over the drive's queue 0
 * (see "Queues" below): they run that queue's own loop context until the
 * request completes.  Nothing runs on GLib's default main context.
 */
#ifndef MINIBLOCK_H
#define MINIBLOCK_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "miniblock/mb-export.h"

/* C99 <time.h> need not declare it (POSIX does): declared here so that the
 * header compiles alone under -std=c99. */
struct timespec;

#ifdef __cplusplus
extern "C" {
#endif

/* The version of these headers; mb_version() is the library's. */
#define MB_VERSION_MAJOR 0
#define MB_VERSION_MINOR 1
#define MB_VERSION_MICRO 0
#define MB_VERSION_STRING "0.1.0"
#define MB_VERSION_NUMBER (MB_VERSION_MAJOR * 10000 + MB_VERSION_MINOR * 100 + MB_VERSION_MICRO)
MB_API const char *mb_version(void);

typedef struct mb_drive mb_drive;

/* Opens a drive from "key=value,..." options, "json:{...}" or a filename.
 * On failure returns NULL and, if errp is not NULL, stores a message
 * (first line QEMU's, then details such as who holds a lock) to be freed
 * with mb_free_error(). */
MB_API mb_drive *mb_open(const char *spec, char **errp);
/* Flushes (if writable), releases every lock and frees the drive. */
MB_API void mb_close(mb_drive *d);

MB_API int mb_pread(mb_drive *d, void *buf, int64_t len, int64_t offset);
MB_API int mb_pwrite(mb_drive *d, const void *buf, int64_t len, int64_t offset);
MB_API int mb_pwrite_zeroes(mb_drive *d, int64_t len, int64_t offset);
MB_API int mb_flush(mb_drive *d);
/* Length in bytes, or a negative errno. */
MB_API int64_t mb_length(mb_drive *d);

/* Migration hand-over.  A target opens its drive with the option
 * "inactive=on" (files open, no locks taken, writes fail with -EPERM).
 * mb_activate takes every lock of the drive's graph in one step; if the
 * source still holds them it returns a negative errno (-EAGAIN for a lock
 * conflict) with nothing changed and, if errp is not NULL, a message naming
 * the holders.  mb_inactivate flushes and drops every lock.  Both return 0
 * when the drive already is in the wanted state. */
MB_API int mb_activate(mb_drive *d, char **errp);
MB_API int mb_inactivate(mb_drive *d, char **errp);
/* 1 if the drive is inactive, 0 if active, a negative errno on error. */
MB_API int mb_is_inactive(mb_drive *d);

MB_API void mb_free_error(char *err);

/* --- Queues: asynchronous I/O in the embedder's own loop ------------------
 *
 * A drive has N queues (the open option "queues=N", default 1; up to 64).
 * Each queue runs on its own loop context (never GLib's default one), owns
 * an eventfd that becomes readable when the queue has work to finish, and
 * delivers completions tagged with the caller's user_data.  In the manner
 * of libblkio:
 *
 *   mb_queue *q = mb_get_queue(d, 0);
 *   mbq_read(q, 0, buf, 4096, my_request, 0);      // only enqueues
 *   mbq_do_io(q, NULL, 0, 0, NULL);                // submits
 *   ... poll(mbq_get_completion_fd(q), POLLIN) in the embedder's loop ...
 *   struct mb_completion c[16];
 *   int n = mbq_do_io(q, c, 0, 16, NULL);          // reaps what is done
 *
 * Threading contract:
 *  - A queue is used by one thread at a time (any thread, but never two at
 *    once).  Different queues of a drive may be used concurrently from
 *    different threads: that is what they are for.
 *  - queues=N with N > 1 needs a graph whose every node can serve several
 *    threads at once: the file protocol, optionally under the raw format.
 *    Such a drive refuses unaligned requests with cache=none (see below).
 *  - The synchronous data calls (mb_pread, mb_pwrite, mb_flush, ...) run on
 *    queue 0: the same rule as queue 0 itself applies to them.
 *  - The control calls (mb_close, mb_reopen, mb_truncate, mb_commit,
 *    mb_activate, mb_inactivate, mb_block_status) wait until no queue has a
 *    request in flight and then change the graph: call them only while no
 *    other thread is inside a call on any queue of the drive.
 *  - Nothing else is shared: no global loop, no global lock on the data path.
 *
 * Errors: a call that refuses its arguments returns a negative errno and
 * leaves a message for mb_last_error() (per thread).  A request that was
 * accepted always completes, with ret 0 or a negative errno and, on error, a
 * message in error_msg.
 *
 * Alignment: with cache=none (O_DIRECT) the buffer, offset and length of a
 * queued request must be multiples of the drive's request alignment
 * (mb_get_alignment); otherwise the call fails with -EINVAL.  The
 * synchronous calls bounce unaligned requests themselves on a single-queue
 * drive. */

typedef struct mb_queue mb_queue;

struct mb_completion {
    void *user_data;       /* as given to the mbq_* call */
    int ret;               /* 0 or a negative errno */
    const char *error_msg; /* NULL on success; valid until the next mbq_do_io on this queue */
};

/* Request flags. */
#define MBQ_REQ_FUA (1u << 0) /* writes: on stable storage when completed */

/* Queue `index` (0 .. queues-1) of the drive, or NULL with mb_last_error()
 * set.  The handle stays valid as memory after mb_close: calls on it then
 * fail with -EBADF instead of touching freed state. */
MB_API mb_queue *mb_get_queue(mb_drive *d, int index);
/* Number of queues of the drive, or a negative errno. */
MB_API int mb_get_num_queues(mb_drive *d);
/* The request alignment (1 without O_DIRECT, else the device's logical
 * block size), or a negative errno. */
MB_API int64_t mb_get_alignment(mb_drive *d);

/* Enqueue a request; 0 on success, a negative errno if refused (closed
 * drive: -EBADF; bad range, flags or alignment: -EINVAL; read-only drive
 * for writes: -EPERM).  Nothing is submitted until mbq_do_io. */
MB_API int mbq_read(mb_queue *q, int64_t offset, void *buf, size_t len, void *user_data, uint32_t flags);
MB_API int mbq_write(mb_queue *q, int64_t offset, const void *buf, size_t len, void *user_data,
              uint32_t flags);
MB_API int mbq_write_zeroes(mb_queue *q, int64_t offset, size_t len, void *user_data, uint32_t flags);
MB_API int mbq_discard(mb_queue *q, int64_t offset, size_t len, void *user_data, uint32_t flags);
MB_API int mbq_flush(mb_queue *q, void *user_data, uint32_t flags);

/* Submits every enqueued request, then waits until at least `min`
 * completions are available (0: does not wait) or `timeout` (relative; NULL
 * waits as long as needed) expires, and stores up to `max` of them in
 * `out`.  Returns the number stored, or a negative errno: -ETIME when the
 * timeout expired before `min` completions (they stay queued for the next
 * call), -EINVAL when min > max or min exceeds the requests in flight.
 * Completions beyond `max` stay queued: call again until fewer than `max`
 * come back.  With min > 0 the call returns as soon as it has `min`: the
 * rest of the same batch stays queued, so a caller keeping a fixed queue
 * depth resubmits without waiting for the whole batch. */
MB_API int mbq_do_io(mb_queue *q, struct mb_completion *out, int min, int max,
              const struct timespec *timeout);

/* A file descriptor that is readable whenever the queue has work to do:
 * wait for it to be readable (poll, epoll, select; level-triggered), then
 * call mbq_do_io(q, out, 0, max, NULL), which does that work and brings
 * the fd up to date (spurious wake-ups happen and return 0 completions).
 * It covers everything the queue's own loop context runs: completions, a
 * protocol's socket (nbd), and its timers (the request-timeout watchdog,
 * nbd's timeout): a timer that falls due makes it readable, so a loop that
 * only waits on this fd and calls mbq_do_io(min = 0) never needs a timeout
 * of its own.  It is an epoll fd (Linux); do not read it or add fds to it.
 * The same fd on every call; closed by mb_close.  -EBADF on a closed drive. */
MB_API int mbq_get_completion_fd(mb_queue *q);
#ifdef _WIN32
/* Windows has no eventfd: the same notification is an event HANDLE (to wait
 * on with WaitForMultipleObjects, or to put in the embedder's loop);
 * mbq_get_completion_fd fails there with -ENOTSUP.  Unlike the Linux fd it
 * covers completions only, not a protocol's sockets or timers: a Windows
 * embedder waits on it with a timeout or uses mbq_attach_glib (which covers
 * everything).  NULL on a closed drive. */
MB_API void *mbq_get_completion_handle(mb_queue *q);
#endif

/* For GLib embedders: completions of `q` are delivered by calling `cb` from
 * a source attached to `ctx` (a GMainContext *), which must be iterated by
 * the thread that uses the queue.  The source runs the queue's whole loop
 * context (its fds and its timers, as the completion fd covers them), so
 * iterating `ctx` is all an nbd drive needs too.  Requests are still
 * submitted with mbq_do_io(q, NULL, 0, 0, NULL).  A completion's error_msg
 * lives until `cb` returns.  `cb` may submit, detach the queue or close the
 * drive: no further callback comes from that dispatch, and after a detach
 * the completions not yet delivered wait for mbq_do_io.  One context per
 * queue; detach with mbq_detach_glib (also done by mb_close: completions
 * that arrive during the close are dropped).  0 or a negative errno. */
typedef void mb_completion_cb(const struct mb_completion *c, void *opaque);
MB_API int mbq_attach_glib(mb_queue *q, void *gmain_context, mb_completion_cb *cb, void *opaque);
MB_API int mbq_detach_glib(mb_queue *q);

/* The message of the last refused call of this thread ("" if none). */
MB_API const char *mb_last_error(void);

/* --- Structured errors ------------------------------------------------------
 *
 * Every call that fails (mb_open, the control calls, a refused mbq_* call)
 * also records, for the calling thread, an errno, the message and, for a
 * lock conflict (errnum EAGAIN), who holds the lock, as data.  Valid until
 * the next failing call of the same thread. */

/* Permission bits of mb_lock_holder.uses/forbids (QEMU's lock bytes 100+i
 * and 200+i). */
#define MB_PERM_CONSISTENT_READ (1u << 0)
#define MB_PERM_WRITE (1u << 1)
#define MB_PERM_WRITE_UNCHANGED (1u << 2)
#define MB_PERM_RESIZE (1u << 3)
#define MB_PERM_GRAPH_MOD (1u << 4) /* bytes 104/204: old QEMU versions */

struct mb_lock_holder {
    int pid;              /* 0: not visible from here (another host or pid namespace) */
    int this_process;     /* 1 if it is a node of this process */
    const char *program;  /* /proc/PID/comm, "" when unknown */
    const char *node;     /* this process: the node name, else "" */
    uint32_t uses;        /* MB_PERM_* it uses */
    uint32_t forbids;     /* MB_PERM_* it forbids to others */
};

struct mb_error {
    int errnum;           /* a positive errno; 0 if no call failed yet */
    const char *message;  /* the whole text: first line QEMU's, then details */
    int n_holders;        /* lock conflicts: the holders in the way (may be 0) */
    const struct mb_lock_holder *holders;
};

/* This thread's last error (never NULL). */
MB_API const struct mb_error *mb_get_error(void);

/* --- Control plane: 0 or a negative errno, details in mb_get_error() ------
 *
 * Like the synchronous calls these run on queue 0 (see the threading
 * contract) and first wait for every request in flight on every queue. */

/* Changes "read-only=on|off" and/or "lock=shared|auto|exclusive" as one
 * permission transaction over the whole graph (QEMU's blockdev-reopen): on
 * failure nothing changed, not a flag, not a lock byte. */
MB_API int mb_reopen(mb_drive *d, const char *options);
/* Resizes the image (needs a writable drive). */
MB_API int mb_truncate(mb_drive *d, int64_t size);
/* Discards a range (a hint: drivers without discard do nothing). */
MB_API int mb_discard(mb_drive *d, int64_t len, int64_t offset);

/* Block status flags. */
#define MB_BLOCK_DATA (1 << 0)      /* reads return data */
#define MB_BLOCK_ZERO (1 << 1)      /* reads return zeroes */
#define MB_BLOCK_ALLOCATED (1 << 3) /* the top layer defines it (else a backing file) */
/* The status of the top layer at `offset`: MB_BLOCK_* flags for the first
 * *pnum bytes (1 <= *pnum <= len), or a negative errno. */
MB_API int mb_block_status(mb_drive *d, int64_t offset, int64_t len, int64_t *pnum);

/* Commits the drive's overlay into its backing file (`base` NULL), or into
 * the file or node `base` deeper in the chain, under a temporary exclusive
 * lock on the base; refused with nothing changed if anyone else uses it.
 * `progress` (may be NULL) is called with bytes done and the total. */
typedef void mb_progress_cb(int64_t done, int64_t total, void *opaque);
MB_API int mb_commit(mb_drive *d, const char *base, mb_progress_cb *progress, void *opaque);

/* Everyone holding QEMU's lock bytes of `path` (this process included):
 * stores a malloc'ed array in *holders (free with mb_free_lock_holders) and
 * returns its length, or a negative errno. */
MB_API int mb_lock_holders(const char *path, struct mb_lock_holder **holders);
MB_API void mb_free_lock_holders(struct mb_lock_holder *holders, int n);

/* Where the library's warnings go (e.g. "a probed raw image ..."): by
 * default stderr as "WARNING: <message>"; `fn` NULL restores that.
 * Process-wide; fn may be called from any thread that calls miniblock. */
typedef void mb_log_fn(const char *message, void *opaque);
MB_API void mb_set_log_handler(mb_log_fn *fn, void *opaque);

#ifdef __cplusplus
}
#endif

#endif /* MINIBLOCK_H */
