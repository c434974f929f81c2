// librados and librbd, loaded on the rbd driver's first use (docs/drivers/rbd.md).
//
// Why not linked: librbd pulls in librados, libceph-common and a dozen of
// their dependencies (boost, ssl, ...), about half the libraries a tool
// would load; relocating them costs every start of every tool several
// milliseconds, though only an rbd: image needs them.  QEMU keeps rbd in a
// module (block-rbd.so) for the same reason.  So the driver calls librbd
// through one table of function pointers, filled by dlopen/dlsym the first
// time a connection is made (Conn::connect) and kept for the life of the
// process: Ceph's libraries start threads and are never unloaded.
//
// The table's types come from the real headers (decltype of each
// prototype), so a mismatch with librbd-dev is a compile error; the headers
// stay a build dependency, the libraries do not.
#pragma once

#include <rados/librados.h>
#include <rbd/librbd.h>

#include "miniblock/status.h"

namespace mb::rbd {

// Every librados/librbd function the driver calls: X(library, name).  A
// call to one missing here does not link (the libraries are not linked).
#define MB_RBD_FUNCTIONS(X)                 \
    X(rados, rados_create)                  \
    X(rados, rados_conf_set)                \
    X(rados, rados_conf_read_file)          \
    X(rados, rados_conf_get)                \
    X(rados, rados_connect)                 \
    X(rados, rados_ioctx_create)            \
    X(rados, rados_ioctx_destroy)           \
    X(rados, rados_shutdown)                \
    X(rados, rados_get_instance_id)         \
    X(rbd, rbd_aio_create_completion)       \
    X(rbd, rbd_aio_get_return_value)        \
    X(rbd, rbd_aio_release)                 \
    X(rbd, rbd_aio_open)                    \
    X(rbd, rbd_aio_open_read_only)          \
    X(rbd, rbd_aio_read)                    \
    X(rbd, rbd_aio_write)                   \
    X(rbd, rbd_aio_discard)                 \
    X(rbd, rbd_aio_write_zeroes)            \
    X(rbd, rbd_aio_flush)                   \
    X(rbd, rbd_close)                       \
    X(rbd, rbd_create2)                     \
    X(rbd, rbd_resize)                      \
    X(rbd, rbd_get_size)                    \
    X(rbd, rbd_get_features)                \
    X(rbd, rbd_lock_acquire)                \
    X(rbd, rbd_lock_release)                \
    X(rbd, rbd_lock_break)                  \
    X(rbd, rbd_lock_get_owners)             \
    X(rbd, rbd_lock_get_owners_cleanup)     \
    X(rbd, rbd_watchers_list)               \
    X(rbd, rbd_watchers_list_cleanup)       \
    X(rbd, rbd_list_lockers)                \
    X(rbd, rbd_break_lock)

struct Lib {
#define MB_RBD_FIELD(lib, name) decltype(&::name) name = nullptr;
    MB_RBD_FUNCTIONS(MB_RBD_FIELD)
#undef MB_RBD_FIELD
};

// Loads librados.so.2 and librbd.so.1 and resolves every function, once per
// process (thread-safe); later calls return the first call's outcome.  On
// failure nothing is published (no half-filled table) and the error names
// the library and dlerror()'s text:
//   Could not load librbd.so.1 (needed by the rbd driver): <dlerror text>
Status load();

// The table; only after load() has succeeded (every caller holds a Conn,
// whose connect() loaded it).
const Lib &api();

}  // namespace mb::rbd
