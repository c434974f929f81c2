// The rbd protocol driver: a Ceph RBD image through librbd (docs/drivers/rbd.md).
//
// Named as QEMU names it, rbd:POOL/IMAGE[@SNAP][:conf=PATH][:id=USER], or by
// options pool, image, snapshot, conf, user.  Opening connects (bounded by
// `timeout`) and opens the image; requests then go to librbd's asynchronous
// calls, whose completion callbacks run in librbd's own threads and hand the
// result back to our loop thread through AioContext::schedule (thread-safe).
// Truncate has no asynchronous call and runs in the thread pool.
//
// Locking (docs/locking.md section 12): a lock on a local file stops at the
// host; an RBD image is shared by every host, so the lock must be RBD's own.
// Whenever the node forbids others to write (auto, exclusive; read-write or
// read-only) it takes RBD's managed exclusive lock in manual mode
// (rbd_lock_acquire): every other client's write then fails with EROFS at
// once, QEMU's included, while reads still work.  That needs the image's
// exclusive-lock feature; without it such a mode is refused, never quietly
// weaker.  shared and off take nothing.  A snapshot cannot change: nothing
// to lock.
#include <glib.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "block/aio.h"
#include "block/block_int.h"
#include "block/drivers/rbd-conn.h"

namespace mb {

namespace {

struct RbdState : NodeState {
    rbd::Spec spec;
    std::unique_ptr<rbd::Conn> conn;
    bool has_lock_feature = false;
    bool lock_held = false;       // we hold the managed lock (manual mode)
    bool acquired_now = false;    // ... taken by the pending transaction
    bool want_pending = false;
};

// --- asynchronous librbd calls (rbd::Aio, rbd-conn.h) -------------------------

using rbd::Aio;

int submit_read(Aio *a, rbd_completion_t c) {
    return rbd::api().rbd_aio_read(a->image, a->off, a->len, a->buf, c);
}
int submit_write(Aio *a, rbd_completion_t c) {
    return rbd::api().rbd_aio_write(a->image, a->off, a->len, a->buf, c);
}
int submit_discard(Aio *a, rbd_completion_t c) {
    return rbd::api().rbd_aio_discard(a->image, a->off, a->len, c);
}
int submit_zeroes(Aio *a, rbd_completion_t c) {
    return rbd::api().rbd_aio_write_zeroes(a->image, a->off, a->len, c, a->flags, 0);
}
int submit_flush(Aio *a, rbd_completion_t c) { return rbd::api().rbd_aio_flush(a->image, c); }

Aio call(BlockDriverState *bs, int (*submit)(Aio *, rbd_completion_t), int64_t off, int64_t len,
         char *buf, int flags = 0) {
    Aio a{AioContext::main(), submit};
    a.image = bs->state<RbdState>()->conn->image();
    a.off = uint64_t(off);
    a.len = uint64_t(len);
    a.buf = buf;
    a.flags = flags;
    return a;
}

// --- options ------------------------------------------------------------------

Status parse_spec(BlockDriverState *bs, qapi::OptionDict &opts, rbd::Spec *spec) {
    if (auto fn = opts.get_str("filename")) {
        for (const char *k : {"pool", "image", "snapshot"}) {
            if (opts.has(k)) {
                return Status::Error(EINVAL, std::string("Parameters 'filename' and '") + k +
                                                 "' cannot be used together",
                                     "Give rbd:POOL/IMAGE[@SNAPSHOT] or pool, image, snapshot");
            }
        }
        MB_TRY(rbd::parse_filename(*fn, spec));
    } else {
        spec->pool = opts.get_str("pool").value_or("");
        spec->image = opts.get_str("image").value_or("");
        spec->snapshot = opts.get_str("snapshot").value_or("");
        if (spec->pool.empty()) {
            return Status::Error(EINVAL, "Parameter '" + bdrv_option_name(bs, "pool") + "' is missing",
                                 "Give rbd:POOL/IMAGE or pool=POOL,image=IMAGE");
        }
        if (spec->image.empty()) {
            return Status::Error(EINVAL, "Parameter '" + bdrv_option_name(bs, "image") + "' is missing",
                                 "Give rbd:POOL/IMAGE or pool=POOL,image=IMAGE");
        }
    }
    // Options given beside the filename win over its :conf= / :id=.
    if (auto c = opts.get_str("conf")) spec->conf = *c;
    if (auto u = opts.get_str("user")) spec->user = *u;
    if (auto t = opts.get_int("timeout")) {
        if (*t < 1 || *t > 3600) {
            return Status::Error(EINVAL, "Invalid value '" + std::to_string(*t) + "' for parameter '" +
                                             bdrv_option_name(bs, "timeout") + "'",
                                 "Expected seconds from 1 to 3600");
        }
        spec->timeout_s = int(*t);
    }
    return Status::OK();
}

Status rbd_open_node(BlockDriverState *bs, qapi::OptionDict &opts) {
    auto s = std::make_unique<RbdState>();
    MB_TRY(parse_spec(bs, opts, &s->spec));
    if (!s->spec.snapshot.empty() && !bs->read_only) {
        return Status::Error(EROFS, "The snapshot " + s->spec.describe() + " is read-only",
                             "Open it read-only");
    }
    s->spec.cache = !(bs->open_flags & BDRV_O_NOCACHE);
    if (bs->filename.empty() || bs->filename.rfind("rbd:", 0) != 0) bs->filename = s->spec.describe();
    auto c = rbd::Conn::open(s->spec);
    if (!c.ok()) return c.take_status();
    s->conn = std::move(*c);
    uint64_t features = 0;
    if (rbd::api().rbd_get_features(s->conn->image(), &features) == 0)
        s->has_lock_feature = features & RBD_FEATURE_EXCLUSIVE_LOCK;
    bs->opaque = std::move(s);
    return Status::OK();
}

void rbd_close_node(BlockDriverState *bs) {
    auto *s = bs->state<RbdState>();
    if (!s) return;
    if (s->lock_held) rbd::api().rbd_lock_release(s->conn->image());
    s->conn.reset();
}

// --- locking ------------------------------------------------------------------

// Whether (perm, shared) asks RBD to keep other writers out.
bool wants_lock(const BlockDriverState *bs, PermPair cum) {
    auto *s = bs->state<RbdState>();
    if (!s->spec.snapshot.empty()) return false;  // cannot change
    if (bs->open_flags & BDRV_O_INACTIVE) return false;
    return cum.perm != 0 && !(cum.shared & BLK_PERM_WRITE);
}

std::string our_addr(BlockDriverState *bs) {
    // The managed lock's owner is named by the client's address; ours is in
    // the watcher list under our instance id.
    auto *s = bs->state<RbdState>();
    auto h = rbd::holders(s->conn->image());
    if (!h.ok()) return {};
    const std::string me = s->conn->client_name();
    for (const auto &w : h->watchers)
        if ("client." + std::to_string(w.id) == me) return w.addr;
    return {};
}

Status refusal(BlockDriverState *bs, int err, const std::string &why) {
    auto *s = bs->state<RbdState>();
    Status st = Status::Error(err ? err : EAGAIN, "Failed to get \"write\" lock");
    st.add_detail("Is another process using the image [" + bs->filename + "]?");
    if (!why.empty()) st.add_detail(why);
    auto h = rbd::holders(s->conn->image());
    int shown = 0;
    if (h.ok()) {
        for (const std::string &line : rbd::describe_holders(*h, our_addr(bs))) {
            st.add_detail(line);
            shown++;
        }
    }
    if (!shown) st.add_detail("The holder let go of the lock before it could be named: try again");
    return st;
}

Status acquire(BlockDriverState *bs) {
    auto *s = bs->state<RbdState>();
    if (!s->has_lock_feature) {
        const char *mode = bs->lock_mode == qapi::LockMode::Exclusive ? "exclusive" : "auto";
        return Status::Error(
            ENOTSUP,
            std::string("lock=") + mode + " cannot be honoured on " + bs->filename +
                ": the image has no exclusive-lock feature, and without it RBD cannot keep "
                "other clients' writes out",
            "Enable it (rbd feature enable " + s->spec.pool + "/" + s->spec.image +
                " exclusive-lock), or open with lock=shared to share the image with writers");
    }
    // Advisory locks and the managed lock do not mix (a holder's own write
    // can hang): an advisory lock on the image is somebody else's claim.
    auto h = rbd::holders(s->conn->image());
    if (h.ok() && !h->lockers.empty())
        return refusal(bs, EAGAIN, "The image carries an advisory lock (rbd lock ls)");
    // A live owner is using the image: librbd would ask it to hand the lock
    // over, and a QEMU writer would, then fail every write while we hold
    // it.  As with a file's writer, we are the one refused.  An owner whose
    // watch has expired is dead: librbd breaks its lock (and blocklists it).
    if (h.ok()) {
        const std::string me = our_addr(bs);
        for (const std::string &o : h->owners)
            if (o != me && !h->client_at(o).empty()) return refusal(bs, EAGAIN, {});
    }
    // Blocks while a dead owner's watch has not yet timed out; a live owner
    // in manual mode answers at once: EROFS or EBUSY.
    int r = rbd::api().rbd_lock_acquire(s->conn->image(), RBD_LOCK_MODE_EXCLUSIVE);
    if (r == 0) return Status::OK();
    Status st = refusal(bs, -r, {});
    // The failed handle stays in manual mode (EROFS on every write): a
    // fresh one behaves as before the attempt.
    Status re = s->conn->reopen_image();
    if (!re.ok()) st.add_detail("And reopening the image failed: " + re.to_string());
    return st;
}

Status rbd_check_perm(BlockDriverState *bs, PermPair cum) {
    auto *s = bs->state<RbdState>();
    s->acquired_now = false;
    s->want_pending = wants_lock(bs, cum);
    if (!s->want_pending || s->lock_held) return Status::OK();
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(bs->lock_wait_ms);
    for (;;) {
        Status st = acquire(bs);
        if (st.ok()) break;
        if ((st.err() != EAGAIN && st.err() != EROFS && st.err() != EBUSY) ||
            std::chrono::steady_clock::now() >= deadline)
            return st;
        g_usleep(200 * 1000);
    }
    s->lock_held = s->acquired_now = true;
    return Status::OK();
}

void rbd_set_perm(BlockDriverState *bs, PermPair) {
    auto *s = bs->state<RbdState>();
    if (s->lock_held && !s->want_pending) {
        rbd::api().rbd_lock_release(s->conn->image());
        s->lock_held = false;
    }
    s->acquired_now = false;
}

void rbd_abort_perm_update(BlockDriverState *bs) {
    auto *s = bs->state<RbdState>();
    if (s->acquired_now) {
        rbd::api().rbd_lock_release(s->conn->image());
        s->lock_held = false;
    }
    s->acquired_now = false;
}

// --- data plane -----------------------------------------------------------------

int64_t rbd_getlength(BlockDriverState *bs) {
    uint64_t size = 0;
    int r = rbd::api().rbd_get_size(bs->state<RbdState>()->conn->image(), &size);
    return r < 0 ? r : int64_t(size);
}

Task<int> rbd_co_flush(BlockDriverState *bs) {
    if (bs->open_flags & BDRV_O_NO_FLUSH) co_return 0;
    ssize_t r = co_await call(bs, submit_flush, 0, 0, nullptr);
    co_return r < 0 ? int(r) : 0;
}

Task<int> rbd_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes, uint8_t *buf, int) {
    ssize_t r = co_await call(bs, submit_read, offset, bytes, reinterpret_cast<char *>(buf));
    if (r < 0) co_return int(r);
    // librbd refuses reads past the end (EINVAL) and fills what it reads;
    // a short count would be a bug of its own: read it as zeroes, not garbage.
    if (r < bytes) memset(buf + r, 0, size_t(bytes - r));
    co_return 0;
}

Task<int> rbd_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes, const uint8_t *buf,
                         int flags) {
    ssize_t r = co_await call(bs, submit_write, offset, bytes,
                              reinterpret_cast<char *>(const_cast<uint8_t *>(buf)));
    if (r < 0) co_return int(r);  // librbd completes a write with 0, not a count
    if (flags & BDRV_REQ_FUA) co_return co_await rbd_co_flush(bs);
    co_return 0;
}

Task<int> rbd_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes, int flags) {
    // Without MAY_UNMAP the zeroes must stay allocated (thick).
    int zf = (flags & BDRV_REQ_MAY_UNMAP) ? 0 : RBD_WRITE_ZEROES_FLAG_THICK_PROVISION;
    ssize_t r = co_await call(bs, submit_zeroes, offset, bytes, nullptr, zf);
    if (r < 0) co_return int(r);
    if (flags & BDRV_REQ_FUA) co_return co_await rbd_co_flush(bs);
    co_return 0;
}

Task<int> rbd_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes) {
    ssize_t r = co_await call(bs, submit_discard, offset, bytes, nullptr);
    co_return r < 0 ? int(r) : 0;
}

struct ResizeJob : ThreadPool::Job {
    rbd_image_t image;
    uint64_t size;
};

Task<int> rbd_co_truncate(BlockDriverState *bs, int64_t size) {
    // librbd has no asynchronous resize: a worker thread waits for it.
    ResizeJob job;
    job.image = bs->state<RbdState>()->conn->image();
    job.size = uint64_t(size);
    job.fn = [](ThreadPool::Job *j) {
        auto *rj = static_cast<ResizeJob *>(j);
        return rbd::api().rbd_resize(rj->image, rj->size);
    };
    co_return co_await AioContext::main().thread_pool().run(job);
}

int64_t rbd_get_allocated_size(BlockDriverState *) { return -ENOTSUP; }

// Commit writes into a read-only backing node: the handle is writable
// already (Conn::open) and the lock, if any, stays where it is.
Status rbd_reopen_rw(BlockDriverState *bs, bool writable) {
    if (writable && !bs->state<RbdState>()->spec.snapshot.empty())
        return Status::Error(EROFS, "The snapshot " + bs->filename + " is read-only");
    return Status::OK();
}

void rbd_get_info(BlockDriverState *bs, FormatInfo *info) {
    auto *s = bs->state<RbdState>();
    info->fields.emplace_back("pool", s->spec.pool);
    info->fields.emplace_back("image", s->spec.image);
    if (!s->spec.snapshot.empty()) info->fields.emplace_back("snapshot", s->spec.snapshot);
    info->fields.emplace_back("client", s->conn->client_name());
    info->fields.emplace_back("exclusive-lock feature", s->has_lock_feature ? "yes" : "no");
    info->fields.emplace_back("exclusive lock held", s->lock_held ? "yes" : "no");
}

Status rbd_create_image(const std::string &filename, int64_t size, qapi::OptionDict &opts) {
    rbd::Spec spec;
    MB_TRY(rbd::parse_filename(filename, &spec));
    MB_TRY(bdrv_create_options_done("rbd", opts));
    if (!spec.snapshot.empty())
        return Status::Error(EINVAL, "Cannot create a snapshot as an image: " + spec.describe());
    auto c = rbd::Conn::open_pool(spec);
    if (!c.ok()) return c.take_status();
    int order = 0;  // librbd's default object size
    int r = rbd::api().rbd_create2((*c)->ioctx(), spec.image.c_str(), uint64_t(size),
                        RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK, &order);
    if (r == -EEXIST) return Status::Error(EEXIST, "Image " + spec.describe() + " exists already");
    if (r < 0) return PosixError("Could not create " + spec.describe(), -r);
    return Status::OK();
}

const char *const rbd_protocols[] = {"rbd:", nullptr};

}  // namespace

extern const BlockDriver bdrv_rbd;
const BlockDriver bdrv_rbd = {
    .format_name = "rbd",
    .is_protocol = true,
    .sharable_writes = true,
    .protocols = rbd_protocols,
    .probe = nullptr,
    .open = rbd_open_node,
    .close = rbd_close_node,
    .child_perm = nullptr,
    .check_perm = rbd_check_perm,
    .set_perm = rbd_set_perm,
    .abort_perm_update = rbd_abort_perm_update,
    .co_preadv = rbd_co_preadv,
    .co_pwritev = rbd_co_pwritev,
    .co_pwrite_zeroes = rbd_co_pwrite_zeroes,
    .co_pdiscard = rbd_co_pdiscard,
    .co_flush = rbd_co_flush,
    .co_truncate = rbd_co_truncate,
    .co_block_status = nullptr,
    .getlength = rbd_getlength,
    .get_allocated_size = rbd_get_allocated_size,
    .get_info = rbd_get_info,
    .create = rbd_create_image,
    .reopen_rw = rbd_reopen_rw,
};

}  // namespace mb
