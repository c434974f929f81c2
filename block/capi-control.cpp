// The C API's control plane (include/miniblock/miniblock.h): structured
// errors, reopen, truncate, discard, block status, commit, lock holders,
// the version and the log handler.
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "block/block_int.h"
#include "block/capi-internal.h"
#include "block/locking/holders.h"
#include "block/reopen.h"
#include "block/warn.h"
#include "miniblock/options.h"

namespace mb::capi {

namespace {

// This thread's last error: the strings the public struct points into live
// here until the next failure replaces them.
struct ErrorRecord {
    mb_error pub{0, "", 0, nullptr};
    std::string message;
    std::vector<std::string> strings;  // programs and node names
    std::vector<mb_lock_holder> holders;
};
thread_local ErrorRecord record;

mb_lock_holder to_public(const LockHolder &h, const char *program, const char *node) {
    return {h.pid, h.this_process ? 1 : 0, program, node, h.use, h.forbid};
}

}  // namespace

void set_error(int err, std::string msg, std::vector<LockHolder> holders) {
    ErrorRecord &r = record;
    r.message = std::move(msg);
    r.strings.clear();
    r.holders.clear();
    r.strings.reserve(2 * holders.size());  // no reallocation: holders point into it
    for (const LockHolder &h : holders) {
        r.strings.push_back(h.comm);
        const char *prog = r.strings.back().c_str();
        r.strings.push_back(h.node_name);
        r.holders.push_back(to_public(h, prog, r.strings.back().c_str()));
    }
    r.pub = {err, r.message.c_str(), int(r.holders.size()), r.holders.empty() ? nullptr : r.holders.data()};
}

const char *last_message() { return record.message.c_str(); }

int fail_status(const Status &st) {
    int err = st.err() ? st.err() : EIO;
    // The holders as data: only a lock conflict names them.
    std::vector<LockHolder> holders = take_conflict_holders();
    if (err != EAGAIN) holders.clear();
    set_error(err, st.to_string(), std::move(holders));
    return -err;
}

void wait_idle(mb_drive *d) {
    for (auto &q : d->impls) {
        AioContext::Scope scope(*q->ctx);
        while (q->in_flight > 0) q->ctx->poll(true);
    }
}

}  // namespace mb::capi

using namespace mb;
using namespace mb::capi;

namespace {

// Parses "on"/"off" and their synonyms as the option parser does.
std::optional<bool> parse_bool(const std::string &v) {
    if (v == "on" || v == "true" || v == "yes") return true;
    if (v == "off" || v == "false" || v == "no") return false;
    return std::nullopt;
}

mb_log_fn *log_fn = nullptr;
void *log_opaque = nullptr;

}  // namespace

extern "C" {

const char *mb_version(void) { return MB_VERSION_STRING; }

const struct mb_error *mb_get_error(void) { return &record.pub; }

int mb_reopen(mb_drive *d, const char *options) {
    if (!d) return fail(EINVAL, "mb_reopen: no drive was given");
    if (!options) return fail(EINVAL, "mb_reopen: no options were given");
    auto opts = qapi::parse_keyval_options(options);
    if (!opts.ok()) return fail_status(opts.status());
    ReopenParams p;
    for (const std::string &k : opts->keys()) {
        auto v = opts->get_text(k);
        if (k == "read-only") {
            p.read_only = v ? parse_bool(*v) : std::nullopt;
            if (!p.read_only)
                return fail(EINVAL, "Invalid value '" + v.value_or("") + "' for parameter 'read-only'\n"
                                    "Valid values: on, off");
        } else if (k == "lock") {
            p.lock = v ? qapi::parse_LockMode(*v) : std::nullopt;
            if (!p.lock)
                return fail(EINVAL, "Invalid value '" + v.value_or("") + "' for parameter 'lock'\n"
                                    "Valid values: off, shared, auto, exclusive");
        } else {
            return fail(EINVAL, "Invalid parameter '" + k + "' for reopen\nValid parameters: read-only, lock");
        }
    }
    wait_idle(d);
    AioContext::Scope scope(*d->impls[0]->ctx);
    (void)take_conflict_holders();
    Status st = bdrv_reopen(d->blk->root(), p);
    if (!st.ok()) return fail_status(st);
    d->read_only = d->blk->read_only();
    return 0;
}

int mb_truncate(mb_drive *d, int64_t size) {
    if (!d) return fail(EINVAL, "mb_truncate: no drive was given");
    if (size < 0) return fail(EINVAL, "mb_truncate: size " + std::to_string(size) + " must not be negative");
    wait_idle(d);
    AioContext::Scope scope(*d->impls[0]->ctx);
    (void)take_conflict_holders();
    BdrvChild *root = d->blk->root();
    if (d->read_only || d->blk->inactive())
        return fail(EPERM, "Cannot resize '" + d->blk->bs()->filename + "': the drive is " +
                               (d->read_only ? "read-only" : "inactive"));
    // Resize is taken for the call only (QEMU's blk_truncate does the
    // same): one transaction up, one down.
    PermPair before = root->perm;
    bool raise = !(before.perm & BLK_PERM_RESIZE);
    if (raise) {
        Status st = bdrv_child_try_set_perm(root, {before.perm | BLK_PERM_RESIZE, before.shared});
        if (!st.ok()) return fail_status(st.prefix("Cannot resize '" + d->blk->bs()->filename + "'"));
    }
    int r = d->blk->truncate(size);
    if (raise) (void)bdrv_child_try_set_perm(root, before);  // fewer permissions: cannot fail
    if (r < 0) return fail(-r, "Cannot resize '" + d->blk->bs()->filename + "' to " + std::to_string(size) +
                                   " bytes: " + strerror(-r));
    d->length = d->blk->length();
    return 0;
}

int mb_discard(mb_drive *d, int64_t len, int64_t offset) {
    if (!d) return fail(EINVAL, "mb_discard: no drive was given");
    Req r{ReqOp::Discard, offset, nullptr, len, nullptr, 0};
    int ret = run_sync(d, r);
    return ret < 0 ? fail(-ret, "Discard of " + std::to_string(len) + " bytes at offset " +
                                    std::to_string(offset) + " failed: " + strerror(-ret))
                   : 0;
}

int mb_block_status(mb_drive *d, int64_t offset, int64_t len, int64_t *pnum) {
    if (!d || !pnum) return fail(EINVAL, "mb_block_status: a drive and pnum are needed");
    if (offset < 0 || len <= 0 || offset > d->blk->length() - len)
        return fail(EINVAL, "mb_block_status: range of " + std::to_string(len) + " bytes at offset " +
                                std::to_string(offset) + " is not inside the drive");
    wait_idle(d);
    AioContext::Scope scope(*d->impls[0]->ctx);
    BlockDriverState *bs = d->blk->bs();
    if (!bs->drv->co_block_status) {
        *pnum = len;
        return MB_BLOCK_DATA | MB_BLOCK_ALLOCATED;
    }
    int64_t map = 0;
    BlockDriverState *file = nullptr;
    int r = sync_wait(bs->drv->co_block_status(bs, offset, len, pnum, &map, &file));
    if (r < 0) return fail(-r, "Block status at offset " + std::to_string(offset) + " failed: " + strerror(-r));
    if (*pnum <= 0 || *pnum > len) return fail(EIO, "Block status: the driver returned a bad length");
    return r & (MB_BLOCK_DATA | MB_BLOCK_ZERO | MB_BLOCK_ALLOCATED);
}

int mb_commit(mb_drive *d, const char *base, mb_progress_cb *progress, void *opaque) {
    if (!d) return fail(EINVAL, "mb_commit: no drive was given");
    wait_idle(d);
    AioContext::Scope scope(*d->impls[0]->ctx);
    (void)take_conflict_holders();
    Status st = d->blk->commit(base ? base : "", false, progress, opaque);
    return st.ok() ? 0 : fail_status(st);
}

int mb_lock_holders(const char *path, struct mb_lock_holder **out) {
    if (!path || !out) return fail(EINVAL, "mb_lock_holders: a path and an output pointer are needed");
    *out = nullptr;
#ifdef _WIN32
    return fail(ENOTSUP, "mb_lock_holders: Windows cannot say which process holds a byte-range lock");
#else
    // stat, not open: opening and closing an fd would drop this process's
    // POSIX locks on the file (docs/locking.md).
    struct stat st;
    if (stat(path, &st) < 0) return fail_status(PosixError(std::string("Could not stat '") + path + "'", errno));
    std::vector<LockHolder> hs = find_lock_holders(st.st_dev, st.st_ino);
    if (hs.empty()) return 0;
    auto *arr = static_cast<mb_lock_holder *>(calloc(hs.size(), sizeof(mb_lock_holder)));
    if (!arr) return fail(ENOMEM, "mb_lock_holders: out of memory");
    for (size_t i = 0; i < hs.size(); i++)
        arr[i] = to_public(hs[i], strdup(hs[i].comm.c_str()), strdup(hs[i].node_name.c_str()));
    *out = arr;
    return int(hs.size());
#endif
}

void mb_free_lock_holders(struct mb_lock_holder *holders, int n) {
    if (!holders) return;
    for (int i = 0; i < n; i++) {
        free(const_cast<char *>(holders[i].program));
        free(const_cast<char *>(holders[i].node));
    }
    free(holders);
}

void mb_set_log_handler(mb_log_fn *fn, void *opaque) {
    log_fn = fn;
    log_opaque = opaque;
    if (!fn) {
        set_warning_handler(nullptr);
        return;
    }
    set_warning_handler([](const std::string &m) { log_fn(m.c_str(), log_opaque); });
}

}  // extern "C"
