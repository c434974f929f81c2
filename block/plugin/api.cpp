// The functions a plugin driver calls (include/miniblock/driver.h).  They
// are the library's public ABI: exported, C linkage, never changed.
#include <cerrno>
#include <condition_variable>
#include <cstdarg>
#include <cstring>
#include <deque>

#include "block/aio.h"
#include "block/plugin/plugin.h"
#include "block/warn.h"
#include "qapi/schema.h"

namespace mb {

namespace {

thread_local PluginError tls_error;

std::string vformat(const char *fmt, va_list ap) {
    char small[512];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    std::string out;
    if (n < 0) {
        out = fmt;
    } else if (size_t(n) < sizeof small) {
        out.assign(small, size_t(n));
    } else {
        out.resize(size_t(std::min(n, 1 << 16)));
        vsnprintf(out.data(), out.size() + 1, fmt, ap2);
    }
    va_end(ap2);
    return out;
}

PluginOpenCtx *ctx_of(mbd_node *n) { return reinterpret_cast<PluginOpenCtx *>(n); }
BdrvChild *child_of(mbd_child *c) { return reinterpret_cast<BdrvChild *>(c); }

const mbd_option *declared(const PluginDriver *pd, const char *name) {
    for (const mbd_option &o : pd->options)
        if (strcmp(o.name, name) == 0) return &o;
    return nullptr;
}

// Where option `name` lives: "group.key" (nested options, driver.h) is
// key in the dict group; nullptr when the group is absent.
std::pair<const qapi::OptionDict *, std::string> opt_place(PluginOpenCtx *ctx, std::string_view name) {
    size_t dot = name.find('.');
    if (dot == std::string_view::npos) return {ctx->opts, std::string(name)};
    return {ctx->opts->dict(name.substr(0, dot)), std::string(name.substr(dot + 1))};
}

std::optional<std::string> opt_text(PluginOpenCtx *ctx, std::string_view name) {
    auto [dict, key] = opt_place(ctx, name);
    if (!dict) return std::nullopt;
    return dict->get_text(key);
}

// A self-destroying coroutine started by resuming its handle on the loop:
// child I/O asked for from a thread that is not the loop's.
struct Detached {
    struct promise_type {
        Detached get_return_object() {
            return Detached{std::coroutine_handle<promise_type>::from_promise(*this)};
        }
        std::suspend_always initial_suspend() noexcept { return {}; }
        std::suspend_never final_suspend() noexcept { return {}; }
        void return_void() {}
        void unhandled_exception() noexcept { std::terminate(); }
    };
    std::coroutine_handle<promise_type> h;
};

enum class ChildOp { Read, Write, Flush, Zero, Discard };

Task<int> child_io(BdrvChild *c, ChildOp op, void *buf, uint64_t count, uint64_t offset, uint32_t flags) {
    if (count > uint64_t(INT64_MAX) || offset > uint64_t(INT64_MAX)) co_return -EINVAL;
    int f = ((flags & MBD_REQ_FUA) ? BDRV_REQ_FUA : 0) | ((flags & MBD_REQ_MAY_UNMAP) ? BDRV_REQ_MAY_UNMAP : 0);
    if (op != ChildOp::Zero) f &= ~BDRV_REQ_MAY_UNMAP;  // only zeroes may unmap
    switch (op) {
    case ChildOp::Read:
        co_return co_await bdrv_co_preadv(c, int64_t(offset), int64_t(count), static_cast<uint8_t *>(buf), f);
    case ChildOp::Write:
        co_return co_await bdrv_co_pwritev(c, int64_t(offset), int64_t(count),
                                           static_cast<const uint8_t *>(buf), f);
    case ChildOp::Flush: co_return co_await bdrv_co_flush(c->bs.get());
    case ChildOp::Zero: co_return co_await bdrv_co_pwrite_zeroes(c, int64_t(offset), int64_t(count), f);
    case ChildOp::Discard: co_return co_await bdrv_co_pdiscard(c, int64_t(offset), int64_t(count));
    }
    co_return -EINVAL;
}

struct Waiter {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    int ret = 0;
};

Detached child_io_signal(BdrvChild *c, ChildOp op, void *buf, uint64_t count, uint64_t offset,
                         uint32_t flags, Waiter *w, PluginHandle *core) {
    int r = co_await child_io(c, op, buf, count, offset, flags);
    if (core) {  // alive: the waiting worker holds it
        std::lock_guard<std::mutex> g(core->child_lock);
        core->child_inflight--;
    }
    std::lock_guard<std::mutex> g(w->m);
    w->ret = r;
    w->done = true;
    w->cv.notify_one();  // under the lock: w lives on the waiting thread's stack
}

Detached child_io_cb(BdrvChild *c, ChildOp op, void *buf, uint64_t count, uint64_t offset, uint32_t flags,
                     mbd_child_cb *cb, void *opaque) {
    int r = co_await child_io(c, op, buf, count, offset, flags);
    cb(opaque, r);
}

int child_blocking(mbd_child *mc, ChildOp op, void *buf, uint64_t count, uint64_t offset, uint32_t flags) {
    if (plugin_children_gone()) return -EIO;
    BdrvChild *c = child_of(mc);
    if (!c) return -EINVAL;
    if (plugin_on_loop_thread()) return sync_wait(child_io(c, op, buf, count, offset, flags));
    // Another thread: the loop runs the request, this thread waits for it.
    // A worker's request runs on the loop of the request the worker runs
    // for, and only while its node is open: plugin_close waits for those
    // in flight, and the node's children go right after it.
    PluginHandle *core = plugin_worker_core();
    AioContext *loop = plugin_worker_loop();
    if (core) {
        std::lock_guard<std::mutex> g(core->child_lock);
        if (core->node_gone) return -EIO;
        core->child_inflight++;
        core->child_loop = loop;
    }
    Waiter w;
    Detached d = child_io_signal(c, op, buf, count, offset, flags, &w, core);
    (loop ? *loop : AioContext::main()).schedule(d.h);
    std::unique_lock<std::mutex> g(w.m);
    w.cv.wait(g, [&] { return w.done; });
    return w.ret;
}

void child_async(mbd_child *mc, ChildOp op, void *buf, uint64_t count, uint64_t offset, uint32_t flags,
                 mbd_child_cb *cb, void *opaque) {
    BdrvChild *c = child_of(mc);
    Detached d = child_io_cb(c, op, buf, count, offset, flags, cb, opaque);
    // Always from the loop, never inline: the plugin is told "later".
    AioContext::main().schedule(d.h);
}

struct CreateCtx {
    const PluginDriver *pd;
    std::string filename;
    int64_t size;
    qapi::OptionDict *opts;
    std::deque<std::string> values;
};

}  // namespace

PluginError &plugin_error() { return tls_error; }

void plugin_error_clear() { tls_error = PluginError{}; }

Status plugin_error_status(const PluginDriver *pd, const std::string &fallback, int def_err) {
    PluginError e = std::move(tls_error);
    tls_error = PluginError{};
    if (e.message.empty()) {
        return Status::Error(def_err, fallback,
                             "Driver '" + pd->name + "' failed without saying why (no mbd_error())");
    }
    int err = e.err > 0 && e.err < 4096 ? e.err : def_err;
    return Status::Error(err, e.message, e.hints);
}

Status plugin_create(const PluginDriver *pd, const std::string &filename, int64_t size,
                     qapi::OptionDict &opts) {
    if (!pd->c.create)
        return Status::Error(ENOTSUP, "Driver '" + pd->name + "' does not support image creation");
    std::vector<std::string> names;
    for (const mbd_option &o : pd->options) names.push_back(o.name);
    for (const std::string &k : opts.keys()) {
        if (!declared(pd, k.c_str())) {
            std::string valid;
            for (const std::string &n : names) valid += (valid.empty() ? "" : ", ") + n;
            return Status::Error(EINVAL, "Invalid parameter '" + k + "'",
                                 "Valid creation options for driver '" + pd->name +
                                     "': " + (valid.empty() ? "none" : valid));
        }
    }
    CreateCtx ctx{pd, filename, size, &opts, {}};
    plugin_note_loop_thread();
    plugin_error_clear();
    int r = pd->c.create(reinterpret_cast<mbd_create *>(&ctx));
    if (r == 0) return Status::OK();
    return plugin_error_status(pd, "Driver '" + pd->name + "' could not create '" + filename + "'", EIO);
}

}  // namespace mb

using namespace mb;

extern "C" {

MB_DRIVER_API void mbd_error(int errnum, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    tls_error.err = errnum;
    tls_error.message = vformat(fmt, ap);
    va_end(ap);
}

MB_DRIVER_API void mbd_warning(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::string msg = vformat(fmt, ap);
    va_end(ap);
    warn_report(msg);
}

MB_DRIVER_API void mbd_error_hint(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (!tls_error.hints.empty()) tls_error.hints += "\n";
    tls_error.hints += vformat(fmt, ap);
    va_end(ap);
}

MB_DRIVER_API const char *mbd_opt_str(mbd_node *node, const char *name) {
    PluginOpenCtx *ctx = ctx_of(node);
    if (auto v = opt_text(ctx, name)) return ctx->kept.emplace_back(std::move(*v)).c_str();
    const mbd_option *o = declared(ctx->pd, name);
    return o ? o->default_value : nullptr;
}

MB_DRIVER_API int64_t mbd_opt_int(mbd_node *node, const char *name, int64_t def) {
    PluginOpenCtx *ctx = ctx_of(node);
    if (const mbd_option *o = declared(ctx->pd, name); o && o->type == MBD_OPT_ENUM) {
        // The index of the value in .values (validated: it is one of them).
        auto v = opt_text(ctx, name);
        const char *want = v ? v->c_str() : o->default_value;
        if (!want) return def;
        for (int64_t i = 0; o->values[i]; i++)
            if (strcmp(o->values[i], want) == 0) return i;
        return def;
    }
    auto [dict, key] = opt_place(ctx, name);
    if (dict) {
        if (auto v = dict->get_int(key)) return *v;
        if (auto b = dict->get_bool(key)) return *b;
    }
    const mbd_option *o = declared(ctx->pd, name);
    if (!o || !o->default_value) return def;
    std::string_view d = o->default_value;
    if (o->type == MBD_OPT_BOOL) return d == "on" || d == "true";
    if (auto v = qapi::parse_size(d)) return *v;
    char *end;
    long long v = strtoll(o->default_value, &end, 0);
    return *end ? def : v;
}

MB_DRIVER_API const char *mbd_opt_key(mbd_node *node, const char *name) {
    PluginOpenCtx *ctx = ctx_of(node);
    return ctx->kept.emplace_back(bdrv_option_name(ctx->bs, name ? name : "")).c_str();
}

MB_DRIVER_API void mbd_node_set_filename(mbd_node *node, const char *name) {
    PluginOpenCtx *ctx = ctx_of(node);
    // The core named an unnamed protocol node "DRIVER://" before open.
    if (name && *name && ctx->pd->c.kind == MBD_PROTOCOL && !ctx->opts->has("filename"))
        ctx->bs->filename = name;
}

MB_DRIVER_API int mbd_node_read_only(mbd_node *node) { return ctx_of(node)->bs->read_only; }

MB_DRIVER_API void mbd_node_set_alignment(mbd_node *node, uint32_t bytes) {
    if (bytes && !(bytes & (bytes - 1)) && bytes <= (1u << 20)) ctx_of(node)->bs->request_alignment = bytes;
}

MB_DRIVER_API mbd_child *mbd_open_child(mbd_node *node, const char *name, int role) {
    PluginOpenCtx *ctx = ctx_of(node);
    if (role != MBD_CHILD_FILE && role != MBD_CHILD_BACKING) {
        mbd_error(EINVAL, "mbd_open_child: invalid role %d", role);
        return nullptr;
    }
    auto r = bdrv_open_child(ctx->bs, *ctx->opts, name,
                             role == MBD_CHILD_FILE ? ChildRole::File : ChildRole::Backing);
    if (!r.ok()) {
        Status st = r.take_status();
        tls_error.err = st.err();
        tls_error.message = st.message();
        tls_error.hints = st.detail();
        return nullptr;
    }
    return reinterpret_cast<mbd_child *>(*r);
}

MB_DRIVER_API int64_t mbd_child_length(mbd_child *c) {
    if (plugin_children_gone()) return -EIO;
    return c ? bdrv_getlength(child_of(c)->bs.get()) : -EINVAL;
}

MB_DRIVER_API const char *mbd_child_filename(mbd_child *c) {
    return c && !plugin_children_gone() ? child_of(c)->bs->filename.c_str() : "";
}

MB_DRIVER_API int mbd_child_pread(mbd_child *c, void *buf, uint64_t count, uint64_t offset, uint32_t flags) {
    return child_blocking(c, ChildOp::Read, buf, count, offset, flags);
}

MB_DRIVER_API int mbd_child_pwrite(mbd_child *c, const void *buf, uint64_t count, uint64_t offset,
                                   uint32_t flags) {
    return child_blocking(c, ChildOp::Write, const_cast<void *>(buf), count, offset, flags);
}

MB_DRIVER_API int mbd_child_flush(mbd_child *c) { return child_blocking(c, ChildOp::Flush, nullptr, 0, 0, 0); }

MB_DRIVER_API void mbd_child_aio_read(mbd_child *c, void *buf, uint64_t count, uint64_t offset,
                                      uint32_t flags, mbd_child_cb *cb, void *opaque) {
    child_async(c, ChildOp::Read, buf, count, offset, flags, cb, opaque);
}

MB_DRIVER_API void mbd_child_aio_write(mbd_child *c, const void *buf, uint64_t count, uint64_t offset,
                                       uint32_t flags, mbd_child_cb *cb, void *opaque) {
    child_async(c, ChildOp::Write, const_cast<void *>(buf), count, offset, flags, cb, opaque);
}

MB_DRIVER_API void mbd_child_aio_flush(mbd_child *c, mbd_child_cb *cb, void *opaque) {
    child_async(c, ChildOp::Flush, nullptr, 0, 0, 0, cb, opaque);
}

MB_DRIVER_API int mbd_child_pwrite_zeroes(mbd_child *c, uint64_t count, uint64_t offset, uint32_t flags) {
    return child_blocking(c, ChildOp::Zero, nullptr, count, offset, flags);
}

MB_DRIVER_API int mbd_child_discard(mbd_child *c, uint64_t count, uint64_t offset) {
    return child_blocking(c, ChildOp::Discard, nullptr, count, offset, 0);
}

MB_DRIVER_API void mbd_child_aio_zero(mbd_child *c, uint64_t count, uint64_t offset, uint32_t flags,
                                      mbd_child_cb *cb, void *opaque) {
    child_async(c, ChildOp::Zero, nullptr, count, offset, flags, cb, opaque);
}

MB_DRIVER_API void mbd_child_aio_discard(mbd_child *c, uint64_t count, uint64_t offset, mbd_child_cb *cb,
                                         void *opaque) {
    child_async(c, ChildOp::Discard, nullptr, count, offset, 0, cb, opaque);
}

MB_DRIVER_API void mbd_info_add(mbd_info *info, const char *key, const char *value) {
    if (!info || !key || !value) return;
    reinterpret_cast<FormatInfo *>(info)->fields.emplace_back(key, value);
}

MB_DRIVER_API const char *mbd_create_filename(mbd_create *c) {
    return reinterpret_cast<CreateCtx *>(c)->filename.c_str();
}

MB_DRIVER_API int64_t mbd_create_size(mbd_create *c) { return reinterpret_cast<CreateCtx *>(c)->size; }

MB_DRIVER_API const char *mbd_create_option(mbd_create *mc, const char *name) {
    auto *c = reinterpret_cast<CreateCtx *>(mc);
    if (auto v = c->opts->get_text(name)) return c->values.emplace_back(std::move(*v)).c_str();
    const mbd_option *o = declared(c->pd, name);
    return o ? o->default_value : nullptr;
}

}  // extern "C"
