// The rbd driver's connection to a Ceph cluster and what it knows of an
// image's lock holders (docs/drivers/rbd.md, docs/locking.md section 12).
//
// Connecting is control plane and bounded: librados waits for a monitor at
// most `timeout` seconds (client_mount_timeout) and then we say which
// monitor address did not answer.  Each connection is its own RADOS client
// (client.ID): two nodes of one process are two clients to the cluster, as
// two processes would be.
#pragma once

#include "block/drivers/rbd-lib.h"

#include <cerrno>
#include <coroutine>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "block/aio.h"
#include "block/coroutine.h"
#include "miniblock/status.h"

namespace mb::rbd {

// co_await Aio{ctx, submit, ...}: submit(this, completion) starts one librbd
// asynchronous call.  Its callback runs in a librbd thread: it stores the
// result and hands the waiting coroutine to ctx's loop thread
// (AioContext::schedule is thread-safe), which resumes it.
struct Aio {
    AioContext &ctx;
    int (*submit)(Aio *, rbd_completion_t);
    rbd_image_t image = nullptr;
    uint64_t off = 0, len = 0;
    char *buf = nullptr;
    int flags = 0;
    // rbd_aio_open
    rados_ioctx_t io = nullptr;
    const char *name = nullptr, *snap = nullptr;
    rbd_image_t *out = nullptr;

    ssize_t ret = 0;
    std::coroutine_handle<> waiter;

    static void done(rbd_completion_t c, void *arg) {
        auto *a = static_cast<Aio *>(arg);
        a->ret = api().rbd_aio_get_return_value(c);
        api().rbd_aio_release(c);
        a->ctx.schedule(a->waiter);
    }
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h) {
        waiter = h;
        rbd_completion_t c;
        int r = api().rbd_aio_create_completion(this, done, &c);
        if (r < 0) {
            ret = r;
            return false;  // resume now with the error
        }
        r = submit(this, c);
        if (r < 0) {
            api().rbd_aio_release(c);
            ret = r;
            return false;
        }
        return true;
    }
    ssize_t await_resume() const noexcept { return ret; }
};

struct Spec {
    std::string pool, image, snapshot;
    std::string conf;  // empty: $CEPH_CONF, then librados' default places
    std::string user;  // without "client."; empty: admin
    int timeout_s = 10;
    bool cache = true;  // librbd's cache (rbd_cache); off for cache=none/directsync
    // "rbd:pool/image[@snap]" for messages (QEMU's spelling, no options).
    std::string describe() const;
};

// rbd:pool/image[@snap][:conf=PATH][:id=USER], as QEMU's; '\' escapes ':',
// '@', '/' and '\' in names.  Fills the fields it finds; others stay.
Status parse_filename(const std::string &filename, Spec *spec);

// One client's handles; closes them in order.
class Conn {
public:
    // Connects and opens the image (a snapshot read-only).
    static Result<std::unique_ptr<Conn>> open(const Spec &spec);
    // Connects and opens the pool only (image creation).
    static Result<std::unique_ptr<Conn>> open_pool(const Spec &spec);
    ~Conn();
    Conn(const Conn &) = delete;
    Conn &operator=(const Conn &) = delete;

    rbd_image_t image() const { return image_; }
    rados_ioctx_t ioctx() const { return ioctx_; }
    // Closes and opens the image again: a handle whose lock_acquire failed
    // stays in manual lock mode and gets EROFS on every write until then.
    Status reopen_image();
    // client.ID of this connection.
    std::string client_name() const;

private:
    Conn() = default;
    Status connect(const Spec &spec);
    Status open_image();

    Spec spec_;
    bool read_only_ = false;
    rados_t cluster_ = nullptr;
    rados_ioctx_t ioctx_ = nullptr;
    rbd_image_t image_ = nullptr;
};

// Who holds what on an image.
struct Watcher {
    int64_t id = 0;  // client.ID
    std::string addr;
};
struct AdvisoryLock {
    std::string client, cookie, addr, tag;
    bool exclusive = false;
};
struct Holders {
    std::vector<std::string> owners;  // managed exclusive lock owners (addresses)
    std::vector<Watcher> watchers;
    std::vector<AdvisoryLock> lockers;
    // The client watching from `addr`, or empty when its watch has gone.
    std::string client_at(const std::string &addr) const;
};
Result<Holders> holders(rbd_image_t image);

// Detail lines naming each holder, e.g.
//   Held by client.4119 at 127.0.0.1:0/2521233581: the RBD exclusive lock
// ("a client" when the owner no longer watches the image)
//   Held by client.4125 at 127.0.0.1:0/8041: an advisory shared lock, cookie 'c', tag 't'
std::vector<std::string> describe_holders(const Holders &h, const std::string &skip_addr = {});

// `miniblock-img locks rbd:...`: prints the managed lock's owners, the
// watchers and the advisory locks of the image.  With do_break, breaks the
// advisory locks (and a managed lock) whose holder no longer watches the
// image, saying that librbd blocklists the dead client; refuses, naming it,
// while a holder's watch is alive.  Returns 0, or 1 after printing errors.
int report_locks(const std::string &filename, bool do_break, const char *prog);

}  // namespace mb::rbd
