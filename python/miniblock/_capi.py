"""The C API of libminiblock (include/miniblock/miniblock.h) through cffi in
ABI mode: declarations only, no compiler at build or run time."""
import os

import cffi

ffi = cffi.FFI()
# The declarations of miniblock.h that the binding uses, as cffi reads
# them (no macros with expressions, no includes).  test_binding.py checks
# every function here is exported by the library.
CDEF = """
typedef struct mb_drive mb_drive;
typedef struct mb_queue mb_queue;
struct timespec { long tv_sec; long tv_nsec; };

const char *mb_version(void);
mb_drive *mb_open(const char *spec, char **errp);
void mb_close(mb_drive *d);
int mb_pread(mb_drive *d, void *buf, int64_t len, int64_t offset);
int mb_pwrite(mb_drive *d, const void *buf, int64_t len, int64_t offset);
int mb_pwrite_zeroes(mb_drive *d, int64_t len, int64_t offset);
int mb_flush(mb_drive *d);
int64_t mb_length(mb_drive *d);
int mb_activate(mb_drive *d, char **errp);
int mb_inactivate(mb_drive *d, char **errp);
int mb_is_inactive(mb_drive *d);
void mb_free_error(char *err);

struct mb_completion { void *user_data; int ret; const char *error_msg; };
mb_queue *mb_get_queue(mb_drive *d, int index);
int mb_get_num_queues(mb_drive *d);
int64_t mb_get_alignment(mb_drive *d);
int mbq_read(mb_queue *q, int64_t offset, void *buf, size_t len, void *user_data, uint32_t flags);
int mbq_write(mb_queue *q, int64_t offset, const void *buf, size_t len, void *user_data, uint32_t flags);
int mbq_write_zeroes(mb_queue *q, int64_t offset, size_t len, void *user_data, uint32_t flags);
int mbq_discard(mb_queue *q, int64_t offset, size_t len, void *user_data, uint32_t flags);
int mbq_flush(mb_queue *q, void *user_data, uint32_t flags);
int mbq_do_io(mb_queue *q, struct mb_completion *out, int min, int max, const struct timespec *timeout);
int mbq_get_completion_fd(mb_queue *q);
const char *mb_last_error(void);

struct mb_lock_holder {
    int pid; int this_process; const char *program; const char *node;
    uint32_t uses; uint32_t forbids;
};
struct mb_error { int errnum; const char *message; int n_holders; const struct mb_lock_holder *holders; };
const struct mb_error *mb_get_error(void);
int mb_reopen(mb_drive *d, const char *options);
int mb_truncate(mb_drive *d, int64_t size);
int mb_discard(mb_drive *d, int64_t len, int64_t offset);
int mb_block_status(mb_drive *d, int64_t offset, int64_t len, int64_t *pnum);
int mb_commit(mb_drive *d, const char *base, void (*progress)(int64_t, int64_t, void *), void *opaque);
int mb_lock_holders(const char *path, struct mb_lock_holder **holders);
void mb_free_lock_holders(struct mb_lock_holder *holders, int n);
"""
ffi.cdef(CDEF)


def _library_path():
    # MINIBLOCK_LIBRARY: a build tree's library (the tests); else the one
    # Meson installed beside this package's configuration.
    path = os.environ.get("MINIBLOCK_LIBRARY")
    if path:
        return path
    from . import _config
    return _config.LIBRARY


lib = ffi.dlopen(_library_path())
