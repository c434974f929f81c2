/*
 * miniblock driver ABI: write a block driver (protocol, format or filter)
 * in C, outside miniblock's tree, and have miniblock load it.  The guide is
 * docs/plugins.md; this header is the contract.
 *
 * A driver is one `struct mbd_driver` of optional callbacks, declared at the
 * bottom of its source file and handed to miniblock by MBD_REGISTER:
 *
 *   static struct mbd_driver my_driver = {
 *       .name = "my", .kind = MBD_PROTOCOL, .open = my_open, ...
 *   };
 *   MBD_REGISTER(my_driver)
 *
 * Built as a shared object named block-NAME.so and put in the install's
 * module directory or a directory of MINIBLOCK_MODULE_DIR, it is loaded the
 * first time a node asks for driver=NAME (or a filename NAME://..., or
 * NAME+SUFFIX://...).
 *
 * THE ABI PROMISE
 *   - MBD_ABI_VERSION counts incompatible changes; there are none so far.
 *     A driver built against ABI version N loads into every miniblock that
 *     supports N (today: 1 only).  A driver stamped with a version this
 *     miniblock does not know is refused with a message naming the file.
 *   - struct mbd_driver and struct mbd_option only ever grow at the end.
 *     MBD_REGISTER records sizeof(struct mbd_driver) as the plugin saw it;
 *     miniblock treats every field past that size as absent (NULL / 0), so a
 *     plugin built against an older header keeps loading, and a newer
 *     plugin's extra fields are ignored by an older core only if its
 *     abi_version says they may be.
 *   - Functions declared here are never removed or changed; new ones are
 *     added.  Every value a callback returns is checked: an out-of-range
 *     value is an error naming the driver, never a crash of the core.
 *   - Modules built inside miniblock's own tree are also stamped with that
 *     build's identity and refused by any other build (like QEMU's modules);
 *     out-of-tree drivers are not stamped and rely on the promise above.
 *
 * THREADS
 *   Control callbacks (probe, open, close, get_length, permissions, lock
 *   hooks, block_status, create, get_info) run on the thread of
 *   miniblock's event loop.  Data
 *   callbacks depend on .thread_model:
 *     MBD_THREAD_ASYNC      aio_* run on the loop thread and must not block;
 *                           each request is completed exactly once by
 *                           mbd_request_complete(), from any thread, at any
 *                           later time (or before the callback returns).
 *     MBD_THREAD_SERIALIZE  blocking callbacks (pread, pwrite, ...) run on a
 *                           worker thread, one request of a node at a time.
 *     MBD_THREAD_PARALLEL   the same, several requests at once.
 *   A request not completed within the node's request-timeout (seconds,
 *   default 30 or the driver's default_request_timeout_s; an option every
 *   plugin node accepts) fails with ETIMEDOUT.  From then on the caller's
 *   buffer is never touched for it: the blocking models always work on a
 *   buffer of the core's, and an async driver is told (abandon) or given a
 *   buffer of the core's too.
 *
 * ERRORS
 *   Control callbacks return 0 (or a handle) on success and -1 (or NULL) on
 *   failure after calling mbd_error() with a positive errno and a message (a
 *   single phrase naming the offending value, no trailing punctuation).  Data
 *   callbacks return or complete with 0 or a negative errno.
 */
#ifndef MINIBLOCK_DRIVER_H
#define MINIBLOCK_DRIVER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Functions miniblock exports to drivers (part of the library's public API). */
#if defined(__GNUC__)
#define MB_DRIVER_API __attribute__((visibility("default")))
#else
#define MB_DRIVER_API
#endif

#define MBD_ABI_VERSION 1

/* Driver kinds. */
enum {
    MBD_PROTOCOL = 1, /* opens something named by a filename or URI; no children */
    MBD_FORMAT = 2,   /* interprets the bytes of its "file" child */
    MBD_FILTER = 3    /* passes requests to its "file" child, changing some */
};

/* Thread models (see THREADS above). */
enum { MBD_THREAD_ASYNC = 0, MBD_THREAD_SERIALIZE = 1, MBD_THREAD_PARALLEL = 2 };

/* Option types, checked by miniblock's schema engine before open. */
enum {
    MBD_OPT_STR = 1,
    MBD_OPT_INT = 2,  /* decimal or 0x hex, may be negative */
    MBD_OPT_BOOL = 3, /* on/off/true/false */
    MBD_OPT_SIZE = 4  /* bytes with an optional k/M/G/T/P/E suffix */
};
/* Option flags. */
enum { MBD_OPT_REQUIRED = 1 };

/* Permission bits (QEMU's): what a parent does with a child, or lets others do. */
enum {
    MBD_PERM_CONSISTENT_READ = 1,
    MBD_PERM_WRITE = 2,
    MBD_PERM_WRITE_UNCHANGED = 4,
    MBD_PERM_RESIZE = 8,
    MBD_PERM_ALL = 15
};

/* Block status flags. */
enum { MBD_STATUS_DATA = 1, MBD_STATUS_ZERO = 2, MBD_STATUS_ALLOCATED = 8 };

/* Request flags. */
enum { MBD_REQ_FUA = 1 };

/* Child roles. */
enum { MBD_CHILD_FILE = 0, MBD_CHILD_BACKING = 1 };

typedef struct mbd_node mbd_node;       /* a node being opened (valid during open) */
typedef struct mbd_child mbd_child;     /* an edge to a child node, valid until close */
typedef struct mbd_request mbd_request; /* a request to complete (async model) */
typedef struct mbd_create mbd_create;   /* an image being created */
typedef struct mbd_info mbd_info;       /* what `miniblock-img info` shows */

/* One option a driver accepts; an array ends with an entry whose name is NULL. */
struct mbd_option {
    const char *name;
    int type;                  /* MBD_OPT_* */
    int flags;                 /* MBD_OPT_REQUIRED */
    const char *default_value; /* as the user would write it, or NULL */
    const char *help;          /* one line, shown by --help */
    /* Appended (see MBD_OPT_ENUM): the allowed values of an enum option,
     * NULL-terminated; NULL for every other type. */
    const char *const *values;
};

struct mbd_driver {
    /* Stamped by MBD_REGISTER: do not set. */
    uint32_t struct_size;
    uint32_t abi_version;

    const char *name;        /* the driver= value: letters, digits, '-', '_' */
    const char *description; /* one line */
    int kind;                /* MBD_PROTOCOL, MBD_FORMAT, MBD_FILTER */
    int thread_model;        /* MBD_THREAD_* */
    /* Protocols: URI schemes claimed (NULL-terminated), or NULL. */
    const char *const *uri_schemes;
    /* Options beyond the ones every node has; NULL-terminated, or NULL.
     * Formats and filters get a required "file" child, protocols an
     * optional "filename", unless they declare them. */
    const struct mbd_option *options;
    /* Non-zero: several writers may share the data (raw-like); zero: the
     * driver keeps metadata, and lock=shared is refused read-write. */
    int sharable_writes;

    /* Formats: how sure (0..100) that these first bytes are this format. */
    int (*probe)(const uint8_t *buf, size_t len, const char *filename);

    /* Returns the node's handle, passed to every other callback (any
     * non-NULL value), or NULL after mbd_error().  Options are read with
     * mbd_opt_*(); children are opened with mbd_open_child(). */
    void *(*open)(mbd_node *node);
    /* Frees the handle; children are closed by the core afterwards.  Never
     * called while a call of the node is inside the driver: a blocking
     * call still running after its request timed out and its drive was
     * closed delays lock_release and close until it returns; they run then
     * on that worker thread, and child I/O there (and in any call of the
     * node still running) fails with EIO: the children are gone.  An
     * async driver is closed at once, maybe with timed-out
     * requests still pending: completing them later is allowed and
     * ignored, so close must keep what those completions use. */
    void (*close)(void *handle);
    /* Bytes, or a negative errno. */
    int64_t (*get_length)(void *handle);
    /* Formats and filters: what this node asks of child c given what its
     * parents ask of it (perm, shared).  NULL: the core's default (the file
     * child gets the same; a backing child the backing row of the lock
     * table). */
    void (*child_perm)(void *handle, mbd_child *c, uint32_t perm, uint32_t shared,
                       uint32_t *child_perm, uint32_t *child_shared);

    /* Protocols: the lock hooks, all four or none.  prepare takes what
     * (perm, shared) needs while still holding the previous state, and
     * fails (-1 after mbd_error(EAGAIN, ...) naming who is in the way) on a
     * conflict; commit drops what only the previous state needed; abort
     * returns exactly to the previous state; release drops everything
     * (before close).  Without hooks the node takes no locks: lock=auto and
     * lock=off open, lock=shared and lock=exclusive are refused. */
    int (*lock_prepare)(void *handle, uint32_t perm, uint32_t shared);
    void (*lock_commit)(void *handle);
    void (*lock_abort)(void *handle);
    void (*lock_release)(void *handle);

    /* MBD_THREAD_ASYNC data plane: start the request, complete it with
     * mbd_request_complete(req, 0 or -errno).  NULL: not supported. */
    void (*aio_read)(void *handle, mbd_request *req, void *buf, uint64_t count,
                     uint64_t offset, uint32_t flags);
    void (*aio_write)(void *handle, mbd_request *req, const void *buf, uint64_t count,
                      uint64_t offset, uint32_t flags);
    void (*aio_flush)(void *handle, mbd_request *req);
    void (*aio_zero)(void *handle, mbd_request *req, uint64_t count, uint64_t offset,
                     uint32_t flags);
    void (*aio_discard)(void *handle, mbd_request *req, uint64_t count, uint64_t offset);

    /* MBD_THREAD_SERIALIZE / PARALLEL data plane: blocking, 0 or -errno. */
    int (*pread)(void *handle, void *buf, uint64_t count, uint64_t offset, uint32_t flags);
    int (*pwrite)(void *handle, const void *buf, uint64_t count, uint64_t offset,
                  uint32_t flags);
    int (*flush)(void *handle);
    int (*zero)(void *handle, uint64_t count, uint64_t offset, uint32_t flags);
    int (*discard)(void *handle, uint64_t count, uint64_t offset);

    /* The status of [offset, offset + count): MBD_STATUS_* flags, or a
     * negative errno; *pnum (1..count) is how far it holds.  Runs on the
     * loop thread in every model (keep it quick).  NULL: everything is
     * data. */
    int (*block_status)(void *handle, uint64_t offset, uint64_t count, uint64_t *pnum);

    /* Creates an image: reads mbd_create_*(), returns 0 or -1 after
     * mbd_error().  NULL: creation is not supported. */
    int (*create)(mbd_create *c);

    /* Formats: adds fields to `miniblock-img info` with mbd_info_add(). */
    void (*get_info)(void *handle, mbd_info *info);

    /* Stamped by MBD_REGISTER: sizeof(struct mbd_option) as the plugin saw
     * it, the stride of its .options array (absent: the first layout, which
     * ended at .help).  Do not set. */
    uint32_t option_struct_size;

    /* Filters: a format above announced a driver event (QEMU's blkdebug
     * names: "l2_update", "refblock_update", "cluster_alloc", ...; the list
     * is in docs/drivers/blkdebug.md) on its way to its file child.  Loop
     * thread, must not block.  NULL: the event passes on to this node's file
     * child. */
    void (*debug_event)(void *handle, const char *event);

    /* Protocols without lock hooks: why lock=shared and lock=exclusive
     * cannot be honoured (one phrase, e.g. "the NBD protocol carries no
     * locks"), and who must lock instead (a hint line, e.g. "The NBD
     * server holding the image must lock it").  NULL: the core's generic
     * "it implements no lock hooks" and "Nothing takes locks for it". */
    const char *no_locks_reason;
    const char *no_locks_hint;

    /* Conditions of nested options (see NESTED OPTIONS below): pairs of an
     * option name GROUP.KEY and "DISC=VALUE", then NULL.  Such an option
     * exists only when the group's enum member DISC is VALUE (and
     * MBD_OPT_REQUIRED means required then).  NULL: none. */
    const char *const *option_conditions;

    /* MBD_THREAD_ASYNC: the core gave up on req (it did not complete
     * within request-timeout).  Called on the loop thread, once, before
     * the caller sees ETIMEDOUT.  When it returns, the driver must never
     * touch the buffer it was given for req again (the caller may free or
     * reuse it at once): a late read reply goes to scratch memory, a write
     * not yet sent is dropped or sent from a copy.  req itself stays the
     * driver's: complete it later (reported and ignored) or never; do not
     * complete it from inside abandon.
     * NULL: the core gives this driver's aio_read/aio_write a buffer of its
     * own instead of the caller's (one copy per request) and copies between
     * the two only while the request is live, so a late completion can
     * touch nothing of the caller's.  Not called for the blocking models:
     * their pread/pwrite always work on a buffer of the core's. */
    void (*abandon)(void *handle, mbd_request *req);

    /* The node's request-timeout in seconds when the user gives none (1 to
     * 3600); 0: the core's default, 30.  A driver with a timeout of its
     * own (nbd's `timeout`) puts the core's behind it, as a last resort. */
    uint32_t default_request_timeout_s;

    /* New fields go here, at the end, and only here. */
};

/* --- what a driver calls --------------------------------------------------- */

/* Sets the error of the failing control callback (thread-local). */
MB_DRIVER_API void mbd_error(int errnum, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Adds a hint line below the error message. */
MB_DRIVER_API void mbd_error_hint(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* Options of the node being opened (validated, defaults applied), during
 * open only.  str: NULL when absent, valid until open returns (copy what
 * you keep); int (int, size, bool as 0/1): def when absent. */
MB_DRIVER_API const char *mbd_opt_str(mbd_node *node, const char *name);
MB_DRIVER_API int64_t mbd_opt_int(mbd_node *node, const char *name, int64_t def);
/* Non-zero when the node is opened read-only. */
MB_DRIVER_API int mbd_node_read_only(mbd_node *node);
/* Sets the alignment (a power of two) requests to this node must have. */
MB_DRIVER_API void mbd_node_set_alignment(mbd_node *node, uint32_t bytes);

/* Opens the child in option `name` ("file", "backing") with a role
 * (MBD_CHILD_*); NULL after setting the error.  Only during open. */
MB_DRIVER_API mbd_child *mbd_open_child(mbd_node *node, const char *name, int role);
/* The child's length in bytes, or a negative errno. */
MB_DRIVER_API int64_t mbd_child_length(mbd_child *c);
/* The child's file name, for messages. */
MB_DRIVER_API const char *mbd_child_filename(mbd_child *c);
/* Blocking child I/O, 0 or -errno: from open, and from worker threads of
 * the SERIALIZE / PARALLEL models (never from an async callback). */
MB_DRIVER_API int mbd_child_pread(mbd_child *c, void *buf, uint64_t count, uint64_t offset,
                                  uint32_t flags);
MB_DRIVER_API int mbd_child_pwrite(mbd_child *c, const void *buf, uint64_t count,
                                   uint64_t offset, uint32_t flags);
MB_DRIVER_API int mbd_child_flush(mbd_child *c);
/* Asynchronous child I/O from any thread: cb(opaque, 0 or -errno) runs later
 * on the loop thread. */
typedef void mbd_child_cb(void *opaque, int ret);
MB_DRIVER_API void mbd_child_aio_read(mbd_child *c, void *buf, uint64_t count, uint64_t offset,
                                      uint32_t flags, mbd_child_cb *cb, void *opaque);
MB_DRIVER_API void mbd_child_aio_write(mbd_child *c, const void *buf, uint64_t count,
                                       uint64_t offset, uint32_t flags, mbd_child_cb *cb,
                                       void *opaque);
MB_DRIVER_API void mbd_child_aio_flush(mbd_child *c, mbd_child_cb *cb, void *opaque);

/* Completes a request of the async model with 0 or a negative errno; from
 * any thread, exactly once. */
MB_DRIVER_API void mbd_request_complete(mbd_request *req, int ret);
/* The same, `ns` nanoseconds from now (a latency model without a thread). */
MB_DRIVER_API void mbd_request_complete_after(mbd_request *req, int ret, uint64_t ns);

/* Image creation: the target, its size, and the creation options (-o);
 * each option read is consumed, and an option no one read is an error. */
MB_DRIVER_API const char *mbd_create_filename(mbd_create *c);
MB_DRIVER_API int64_t mbd_create_size(mbd_create *c);
MB_DRIVER_API const char *mbd_create_option(mbd_create *c, const char *name);

/* Adds "key: value" to an image's description (get_info only). */
MB_DRIVER_API void mbd_info_add(mbd_info *info, const char *key, const char *value);

/* --- appended: enum options, child write-zeroes and discard ------------------
 *
 * MBD_OPT_ENUM: the value must be one of the option's .values (checked
 * before open; a bad one is refused naming it and the allowed ones, and
 * --help DRIVER lists them).  mbd_opt_str() gives the value, mbd_opt_int()
 * its index in .values.
 *
 * Child write-zeroes and discard, like the other child calls (blocking from
 * open and from worker threads, asynchronous from anywhere).  Zeroes take
 * MBD_REQ_FUA and MBD_REQ_MAY_UNMAP (the range may become a hole that reads
 * as zeroes); a discard is a hint the child may ignore (it then succeeds).
 * An aio_zero callback receives MBD_REQ_MAY_UNMAP only if the driver was
 * built against a header that has it (ignore flag bits you do not know). */
#define MBD_OPT_ENUM 5
#define MBD_REQ_MAY_UNMAP 2
MB_DRIVER_API int mbd_child_pwrite_zeroes(mbd_child *c, uint64_t count, uint64_t offset,
                                          uint32_t flags);
MB_DRIVER_API int mbd_child_discard(mbd_child *c, uint64_t count, uint64_t offset);
MB_DRIVER_API void mbd_child_aio_zero(mbd_child *c, uint64_t count, uint64_t offset,
                                      uint32_t flags, mbd_child_cb *cb, void *opaque);
MB_DRIVER_API void mbd_child_aio_discard(mbd_child *c, uint64_t count, uint64_t offset,
                                         mbd_child_cb *cb, void *opaque);

/* --- appended: the event loop, for asynchronous network protocols -----------
 *
 * A protocol that talks to a server (a socket) lives on the loop of its
 * node: it watches its fds and arms timers there, and completes requests
 * from their callbacks.  mbd_node_loop() gives the loop during open; keep
 * it for the node's life.
 *
 * Every function here is called on the loop's thread: from open, close and
 * the other control callbacks, from the aio_* callbacks of MBD_THREAD_ASYNC,
 * and from fd and timer callbacks (never from the worker threads of the
 * blocking models).  Callbacks run on that thread, never inline in the call
 * that set them up, and never after their watch or timer was removed: a
 * callback may remove its own watch or timer, or others.  Remove every
 * watch and timer in close (before you close their fds).
 *
 * fd callbacks get the MBD_FD_* conditions that hold (MBD_FD_ERROR covers
 * an error or hang-up on the fd, reported whatever was asked); they run
 * again while the condition holds, as poll(2) level-triggered.  A timer
 * fires once, `ns` after mbd_timer_arm(), unless re-armed or cancelled
 * meanwhile. */
typedef struct mbd_loop mbd_loop;
typedef struct mbd_watch mbd_watch;
typedef struct mbd_timer mbd_timer;
#define MBD_FD_READ 1
#define MBD_FD_WRITE 2
#define MBD_FD_ERROR 4
typedef void mbd_fd_cb(void *opaque, int fd, int revents);
typedef void mbd_timer_cb(void *opaque);
MB_DRIVER_API mbd_loop *mbd_node_loop(mbd_node *node);
/* NULL (after mbd_error) for a negative fd or bad events. */
MB_DRIVER_API mbd_watch *mbd_fd_watch(mbd_loop *loop, int fd, int events, mbd_fd_cb *cb,
                                      void *opaque);
/* Changes what is watched (MBD_FD_READ | MBD_FD_WRITE, or 0 for nothing). */
MB_DRIVER_API void mbd_fd_watch_set(mbd_watch *w, int events);
MB_DRIVER_API void mbd_fd_unwatch(mbd_watch *w);
MB_DRIVER_API mbd_timer *mbd_timer_new(mbd_loop *loop, mbd_timer_cb *cb, void *opaque);
/* (Re)arms the timer to fire once, ns nanoseconds from now (at most an hour). */
MB_DRIVER_API void mbd_timer_arm(mbd_timer *t, uint64_t ns);
MB_DRIVER_API void mbd_timer_cancel(mbd_timer *t);
MB_DRIVER_API void mbd_timer_free(mbd_timer *t);
/* Reports what the data plane cannot say with an errno (a server that broke
 * the protocol, a lost connection): one line, shown as "WARNING: ..." or
 * handed to the embedder's log handler.  Any thread. */
MB_DRIVER_API void mbd_warning(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* --- appended: nested options ------------------------------------------------
 *
 * An option named GROUP.KEY (one dot) belongs to the nested options GROUP,
 * written group.key=... in --image-opts and {"group": {"key": ...}} in
 * json: (QEMU's server.type, server.path, ...).  The group itself is
 * optional; MBD_OPT_REQUIRED on a member means required when the group is
 * given.  When .option_conditions gives members a condition DISC=VALUE,
 * GROUP.DISC must be an enum member of the group without one: the group is
 * then a union, a member exists only for its value, and a key of another
 * value is refused as unknown.  mbd_opt_str(node, "group.key") reads a
 * member.
 *
 * mbd_opt_key() gives an option's full key as the user would write it on
 * this node ("file.timeout" for a node opened as file of another), for
 * error messages naming it; valid until open returns. */
MB_DRIVER_API const char *mbd_opt_key(mbd_node *node, const char *name);
/* Protocols opened by options rather than a filename: the name the node is
 * shown by (`image:` in info, messages), e.g. the URI the options amount
 * to.  During open only; ignored when the node has a filename. */
MB_DRIVER_API void mbd_node_set_filename(mbd_node *node, const char *name);

/* --- registration ------------------------------------------------------------ */

#if defined(__GNUC__)
#define MBD_EXPORT __attribute__((visibility("default")))
#else
#define MBD_EXPORT
#endif

/* The entry point miniblock looks up in a module. */
#define MBD_ENTRY_POINT "mbd_driver_init"
typedef struct mbd_driver *mbd_entry_fn(void);

/* Modules built in miniblock's tree carry the build's identity. */
#ifdef __cplusplus
#define MBD_EXTERN_C_ extern "C"
#else
#define MBD_EXTERN_C_
#endif
#if defined(MB_MODULE_BUILD_ID) && defined(__cplusplus)
#define MBD_BUILD_STAMP_                                                      \
    extern "C" {                                                              \
    MBD_EXPORT extern const char mbd_module_build_id[];                       \
    MBD_EXPORT const char mbd_module_build_id[] = MB_MODULE_BUILD_ID;         \
    }
#elif defined(MB_MODULE_BUILD_ID)
#define MBD_BUILD_STAMP_                                                      \
    MBD_EXPORT extern const char mbd_module_build_id[];                       \
    MBD_EXPORT const char mbd_module_build_id[] = MB_MODULE_BUILD_ID;
#else
#define MBD_BUILD_STAMP_
#endif

#define MBD_STAMP_(drv)                                           \
    (drv).struct_size = (uint32_t)sizeof(struct mbd_driver);      \
    (drv).abi_version = MBD_ABI_VERSION;                          \
    (drv).option_struct_size = (uint32_t)sizeof(struct mbd_option); \
    return &(drv);

/* In a driver's source, after its struct: the module's entry point.  (In
 * miniblock's tree, with -DMB_BUILTIN_DRIVER=NAME, a linked-in driver's.) */
#ifdef MB_BUILTIN_DRIVER
#define MBD_CAT2_(a, b) a##b
#define MBD_CAT_(a, b) MBD_CAT2_(a, b)
#define MBD_REGISTER(drv)                                                          \
    MBD_EXTERN_C_ struct mbd_driver *MBD_CAT_(mbd_builtin_, MB_BUILTIN_DRIVER)(void); \
    MBD_EXTERN_C_ struct mbd_driver *MBD_CAT_(mbd_builtin_, MB_BUILTIN_DRIVER)(void) { MBD_STAMP_(drv) }
#else
#define MBD_REGISTER(drv)                                          \
    MBD_BUILD_STAMP_                                               \
    MBD_EXTERN_C_ MBD_EXPORT struct mbd_driver *mbd_driver_init(void);     \
    MBD_EXTERN_C_ MBD_EXPORT struct mbd_driver *mbd_driver_init(void) { MBD_STAMP_(drv) }
#endif

#ifdef __cplusplus
}
#endif

#endif /* MINIBLOCK_DRIVER_H */
