// The nbd protocol driver: a client of an NBD server (docs/drivers/nbd.md).
//
// The server is named by a URI (nbd://HOST[:PORT]/EXPORT,
// nbd+unix:///EXPORT?socket=PATH) or by structured options (server.type,
// server.path / server.host, server.port, export).  The handshake runs
// synchronously at open (control plane, bounded by `timeout`); requests then
// run on the event loop through nbd-client.h, many in flight at once.
//
// Requests are cut to the server's maximum block size; reads that are not
// aligned to its minimum block size go through a bounce buffer, and writes
// that are not read, merge and write whole blocks, serialized against this
// node's other writes.
//
// Locking: the NBD protocol carries no locks, so this node takes none; the
// server holding the image is the one that must lock it.  lock=auto (or off)
// means "nothing to lock"; lock=shared or lock=exclusive, given on this node
// or on a node above it whose file child this is, is refused at open since
// it cannot be honoured.
#include <glib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "block/aio.h"
#include "block/block_int.h"
#include "block/drivers/nbd-client.h"

namespace mb {

namespace {

using nbd::Address;

constexpr int DEFAULT_TIMEOUT = 30;

struct NbdState : NodeState {
    Address addr;
    std::string export_name;
    int timeout_s = DEFAULT_TIMEOUT;
    std::shared_ptr<nbd::Client> client;
    // Aligned writes share it; a read-modify-write of an unaligned one
    // holds it alone, so no write of ours lands inside its blocks meanwhile.
    CoRwLock write_lock;
    ~NbdState() override {
        if (client) client->shutdown();
    }
};

// Opening without a format probes it through a first nbd node, closed just
// before the real one opens; a qemu-nbd without --persistent exits when its
// only client goes.  So a closing node parks its idle connection here for a
// moment, and the next open of the same server and export takes it over.
struct Parked {
    std::string key;
    std::shared_ptr<nbd::Client> client;
    GSource *expiry = nullptr;
    int64_t until_us = 0;  // also checked on reuse: the loop may not have run

    void drop() {
        if (expiry) {
            g_source_destroy(expiry);
            g_source_unref(expiry);
            expiry = nullptr;
        }
        if (client) client->shutdown();
        client.reset();
        key.clear();
    }
};

constexpr guint PARK_MS = 1000;

Parked &parked() {
    static Parked *p = new Parked();  // leaked, like the AioContext it uses
    return *p;
}

std::string park_key(const NbdState &s) {
    return s.addr.describe() + '\n' + s.export_name + '\n' + std::to_string(s.timeout_s);
}

void park(std::shared_ptr<nbd::Client> c, std::string key) {
    Parked &p = parked();
    p.drop();
    if (c->dead()) return;
    p.key = std::move(key);
    p.client = std::move(c);
    p.until_us = g_get_monotonic_time() + PARK_MS * 1000;
    p.expiry = g_timeout_source_new(PARK_MS);
    g_source_set_callback(
        p.expiry,
        [](gpointer) -> gboolean {
            Parked &p = parked();
            // drop() destroys this source: keep it alive until we return.
            GSource *self = g_source_ref(p.expiry);
            p.drop();
            g_source_unref(self);
            return G_SOURCE_REMOVE;
        },
        nullptr, nullptr);
    g_source_attach(p.expiry, AioContext::main().gcontext());
}

std::shared_ptr<nbd::Client> unpark(const std::string &key) {
    Parked &p = parked();
    if (!p.client || p.key != key || p.client->dead() || g_get_monotonic_time() > p.until_us) {
        p.drop();
        return nullptr;
    }
    auto c = std::move(p.client);
    p.client.reset();
    p.drop();
    return c;
}

Status bad_uri(const std::string &uri, const std::string &why) {
    return Status::Error(EINVAL, "Invalid NBD URI '" + uri + "'").add_detail(why);
}

// nbd://HOST[:PORT]/EXPORT, nbd+tcp://..., nbd+unix:///EXPORT?socket=PATH.
Status parse_uri(const std::string &s, Address *a, std::string *export_name) {
    GError *err = nullptr;
    GUri *u = g_uri_parse(s.c_str(), GUriFlags(G_URI_FLAGS_ENCODED_QUERY | G_URI_FLAGS_NON_DNS), &err);
    if (!u) {
        std::string why = err->message;
        g_error_free(err);
        return bad_uri(s, why);
    }
    std::unique_ptr<GUri, void (*)(GUri *)> guard(u, g_uri_unref);
    std::string scheme = g_uri_get_scheme(u);
    const char *host = g_uri_get_host(u);
    const char *query = g_uri_get_query(u);
    if (scheme == "nbds" || scheme == "nbds+unix" || scheme == "nbds+tcp")
        return bad_uri(s, "TLS (nbds://) is not supported");
    if (scheme != "nbd" && scheme != "nbd+tcp" && scheme != "nbd+unix")
        return bad_uri(s, "Expected nbd://, nbd+tcp:// or nbd+unix://");
    if (g_uri_get_userinfo(u) || g_uri_get_fragment(u))
        return bad_uri(s, "User names and fragments are not allowed");
    std::string path = g_uri_get_path(u);
    *export_name = path.empty() ? "" : path.substr(path[0] == '/' ? 1 : 0);
    if (scheme == "nbd+unix") {
        if (host && *host) return bad_uri(s, "nbd+unix:// takes no host: nbd+unix:///EXPORT?socket=PATH");
        if (!query) return bad_uri(s, "nbd+unix:// needs ?socket=PATH");
        GHashTable *params = g_uri_parse_params(query, -1, "&", G_URI_PARAMS_NONE, &err);
        if (!params) {
            std::string why = err->message;
            g_error_free(err);
            return bad_uri(s, why);
        }
        std::unique_ptr<GHashTable, void (*)(GHashTable *)> pg(params, g_hash_table_unref);
        auto *sock = static_cast<const char *>(g_hash_table_lookup(params, "socket"));
        if (!sock || !*sock) return bad_uri(s, "nbd+unix:// needs ?socket=PATH");
        if (g_hash_table_size(params) != 1) return bad_uri(s, "The only query parameter is socket=PATH");
        a->is_unix = true;
        a->path = sock;
        return Status::OK();
    }
    if (!host || !*host) return bad_uri(s, "No host: nbd://HOST[:PORT]/EXPORT");
    if (query) return bad_uri(s, "nbd:// takes no query parameters");
    a->is_unix = false;
    a->host = host;
    int port = g_uri_get_port(u);
    a->port = std::to_string(port > 0 ? port : 10809);
    return Status::OK();
}

// The server and export from `filename` or from server.* and export.
Status parse_server(qapi::OptionDict &opts, Address *a, std::string *export_name) {
    auto fn = opts.get_str("filename");
    const qapi::OptionDict *server = opts.dict("server");
    if (fn && (server || opts.has("export"))) {
        return Status::Error(EINVAL, "Parameters 'filename' and 'server' cannot be used together",
                             "Give an NBD URI or server.* and export, not both");
    }
    if (fn) return parse_uri(*fn, a, export_name);
    if (!server) {
        return Status::Error(EINVAL, "Parameter 'server' is missing",
                             "Give an NBD URI (nbd://HOST[:PORT]/EXPORT or "
                             "nbd+unix:///EXPORT?socket=PATH) or server.type=unix|inet");
    }
    // The schema has checked the union: type, and path or host.
    std::string type = server->get_str("type").value_or("");
    if (type == "unix") {
        a->is_unix = true;
        a->path = server->get_str("path").value_or("");
    } else {
        a->is_unix = false;
        a->host = server->get_str("host").value_or("");
        a->port = server->get_str("port").value_or("10809");
    }
    *export_name = opts.get_str("export").value_or("");
    return Status::OK();
}

Status nbd_open(BlockDriverState *bs, qapi::OptionDict &opts) {
    if (bs->lock_mode == qapi::LockMode::Shared || bs->lock_mode == qapi::LockMode::Exclusive) {
        std::string mode = bs->lock_mode == qapi::LockMode::Shared ? "shared" : "exclusive";
        Status st = Status::Error(EINVAL, "lock=" + mode + " cannot be honoured over NBD: the NBD protocol carries no locks");
        if (!opts.has("lock")) st.add_detail("The lock mode was given to a node above this NBD node and applies to it too");
        st.add_detail("The NBD server holding the image must lock it; use lock=auto (nothing to lock) or lock=off");
        return st;
    }
    auto s = std::make_unique<NbdState>();
    MB_TRY(parse_server(opts, &s->addr, &s->export_name));
    if (auto t = opts.get_int("timeout")) {
        if (*t < 1 || *t > 3600) {
            return Status::Error(EINVAL, "Invalid value '" + std::to_string(*t) + "' for parameter '" +
                                             bdrv_option_name(bs, "timeout") + "'",
                                 "Expected seconds from 1 to 3600");
        }
        s->timeout_s = int(*t);
    }
    if (bs->filename.empty()) {
        bs->filename = s->addr.is_unix ? "nbd+unix:///" + s->export_name + "?socket=" + s->addr.path
                                       : "nbd://" + s->addr.host + ":" + s->addr.port + "/" + s->export_name;
    }

    s->client = unpark(park_key(*s));
    if (!s->client) {
        auto fd = nbd::connect_to(s->addr, s->timeout_s);
        if (!fd.ok()) return fd.take_status();
        auto info = nbd::handshake_fd(fd->get(), s->export_name, s->timeout_s);
        if (!info.ok()) {
            Status st = info.take_status();
            return st.prefix("NBD server at " + s->addr.describe());
        }
        s->client = nbd::Client::create(std::move(*fd), *info, s->addr.describe(), s->timeout_s);
    }
    const nbd::ExportInfo &info = s->client->info();
    if ((info.flags & nbd::TF_READ_ONLY) && !bs->read_only) {
        park(std::move(s->client), park_key(*s));
        return Status::Error(EROFS, "The export '" + s->export_name + "' of the NBD server is read-only",
                             "Open it read-only");
    }
    bs->request_alignment = info.min_block;
    bs->opaque = std::move(s);
    return Status::OK();
}

void nbd_close(BlockDriverState *bs) {
    if (auto *s = bs->state<NbdState>(); s && s->client) {
        if (s->client->idle()) park(std::move(s->client), park_key(*s));
        else s->client->shutdown();
        s->client.reset();
    }
}

int64_t nbd_getlength(BlockDriverState *bs) {
    return int64_t(bs->state<NbdState>()->client->info().size);
}

int check_range(BlockDriverState *bs, int64_t offset, int64_t bytes) {
    int64_t size = nbd_getlength(bs);
    if (offset > size || bytes > size - offset) return -EINVAL;
    return 0;
}

bool aligned(const nbd::ExportInfo &i, int64_t offset, int64_t bytes) {
    return offset % i.min_block == 0 && bytes % i.min_block == 0;
}

// Cuts [offset, offset + bytes) into requests of at most `max` bytes, one
// after the other (concurrency comes from the callers' requests).
Task<int> split_rw(nbd::Client *c, uint16_t cmd, uint16_t flags, int64_t offset, int64_t bytes,
                   const uint8_t *wbuf, uint8_t *rbuf, int64_t max) {
    while (bytes > 0) {
        uint32_t n = uint32_t(std::min(bytes, max));
        int r = co_await c->request(cmd, flags, offset, n, wbuf, rbuf);
        if (r < 0) co_return r;
        offset += n;
        bytes -= n;
        if (wbuf) wbuf += n;
        if (rbuf) rbuf += n;
    }
    co_return 0;
}

Task<int> nbd_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes, uint8_t *buf, int) {
    auto c = bs->state<NbdState>()->client;
    if (int r = check_range(bs, offset, bytes)) co_return r;
    const auto &i = c->info();
    if (aligned(i, offset, bytes))
        co_return co_await split_rw(c.get(), nbd::CMD_READ, 0, offset, bytes, nullptr, buf, i.max_block);
    // Bounce through whole blocks; the export's size is a multiple of the
    // minimum block size, so the rounded range stays inside it.
    int64_t start = offset - offset % i.min_block;
    int64_t end = (offset + bytes + i.min_block - 1) / i.min_block * i.min_block;
    std::vector<uint8_t> bounce(end - start);
    int r = co_await split_rw(c.get(), nbd::CMD_READ, 0, start, end - start, nullptr, bounce.data(), i.max_block);
    if (r < 0) co_return r;
    memcpy(buf, bounce.data() + (offset - start), bytes);
    co_return 0;
}

Task<int> nbd_co_flush(BlockDriverState *bs);

// FUA natively when the server has it, else a flush after the write.
Task<int> finish_fua(BlockDriverState *bs, int flags, int r) {
    const auto &i = bs->state<NbdState>()->client->info();
    if (r == 0 && (flags & BDRV_REQ_FUA) && !(i.flags & nbd::TF_SEND_FUA)) r = co_await nbd_co_flush(bs);
    co_return r;
}

uint16_t fua_flag(const nbd::ExportInfo &i, int flags) {
    return (flags & BDRV_REQ_FUA) && (i.flags & nbd::TF_SEND_FUA) ? nbd::CMD_FLAG_FUA : 0;
}

// An unaligned write: read the partial head and tail blocks, merge, write
// the whole blocks.  Serialized against our other writes (write_lock); other
// clients of the export are the server's business, as with any overlap.
Task<int> write_unaligned(BlockDriverState *bs, nbd::Client *c, int64_t offset, int64_t bytes,
                          const uint8_t *buf, uint16_t fua) {
    const auto &i = c->info();
    const int64_t m = i.min_block;
    int64_t start = offset - offset % m;
    int64_t end = (offset + bytes + m - 1) / m * m;
    if (end > nbd_getlength(bs)) co_return -EINVAL;  // a size that is not whole blocks
    std::vector<uint8_t> bounce(end - start);
    if (start != offset) {
        int r = co_await c->request(nbd::CMD_READ, 0, start, uint32_t(m), nullptr, bounce.data());
        if (r < 0) co_return r;
    }
    if (end != offset + bytes && (end - m > start || start == offset)) {
        int r = co_await c->request(nbd::CMD_READ, 0, end - m, uint32_t(m), nullptr, bounce.data() + (end - m - start));
        if (r < 0) co_return r;
    }
    memcpy(bounce.data() + (offset - start), buf, bytes);
    co_return co_await split_rw(c, nbd::CMD_WRITE, fua, start, end - start, bounce.data(), nullptr, i.max_block);
}

Task<int> nbd_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes, const uint8_t *buf, int flags) {
    auto *s = bs->state<NbdState>();
    auto c = s->client;
    if (int r = check_range(bs, offset, bytes)) co_return r;
    const auto &i = c->info();
    int r;
    if (aligned(i, offset, bytes)) {
        co_await s->write_lock.lock_shared();
        r = co_await split_rw(c.get(), nbd::CMD_WRITE, fua_flag(i, flags), offset, bytes, buf, nullptr, i.max_block);
    } else {
        co_await s->write_lock.lock_exclusive();
        r = co_await write_unaligned(bs, c.get(), offset, bytes, buf, fua_flag(i, flags));
    }
    s->write_lock.unlock();
    co_return co_await finish_fua(bs, flags, r);
}

// Trim and write-zeroes carry no payload: pieces of up to 1 GiB.
constexpr int64_t NO_PAYLOAD_MAX = 1LL << 30;

Task<int> nbd_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes, int flags) {
    auto c = bs->state<NbdState>()->client;
    if (int r = check_range(bs, offset, bytes)) co_return r;
    const auto &i = c->info();
    // -ENOTSUP: the block layer falls back to writing zeroes.
    if (!(i.flags & nbd::TF_SEND_WRITE_ZEROES) || !aligned(i, offset, bytes)) co_return -ENOTSUP;
    uint16_t f = fua_flag(i, flags) | ((flags & BDRV_REQ_MAY_UNMAP) ? 0 : nbd::CMD_FLAG_NO_HOLE);
    int64_t max = NO_PAYLOAD_MAX - NO_PAYLOAD_MAX % i.min_block;
    auto *s = bs->state<NbdState>();
    co_await s->write_lock.lock_shared();
    int r = co_await split_rw(c.get(), nbd::CMD_WRITE_ZEROES, f, offset, bytes, nullptr, nullptr, max);
    s->write_lock.unlock();
    co_return co_await finish_fua(bs, flags, r);
}

Task<int> nbd_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes) {
    auto c = bs->state<NbdState>()->client;
    if (int r = check_range(bs, offset, bytes)) co_return r;
    const auto &i = c->info();
    if (!(i.flags & nbd::TF_SEND_TRIM)) co_return 0;  // a hint the server does not take
    // Only the whole blocks inside the range.
    int64_t start = (offset + i.min_block - 1) / i.min_block * i.min_block;
    int64_t end = (offset + bytes) / i.min_block * i.min_block;
    if (end <= start) co_return 0;
    int64_t max = NO_PAYLOAD_MAX - NO_PAYLOAD_MAX % i.min_block;
    auto *s = bs->state<NbdState>();
    co_await s->write_lock.lock_shared();
    int r = co_await split_rw(c.get(), nbd::CMD_TRIM, 0, start, end - start, nullptr, nullptr, max);
    s->write_lock.unlock();
    co_return r;
}

Task<int> nbd_co_flush(BlockDriverState *bs) {
    auto c = bs->state<NbdState>()->client;
    if (!(c->info().flags & nbd::TF_SEND_FLUSH) || (bs->open_flags & BDRV_O_NO_FLUSH)) co_return 0;
    co_return co_await c->request(nbd::CMD_FLUSH, 0, 0, 0, nullptr, nullptr);
}

void nbd_get_info(BlockDriverState *bs, FormatInfo *info) {
    auto *s = bs->state<NbdState>();
    const auto &i = s->client->info();
    info->fields.emplace_back("server", s->addr.describe());
    info->fields.emplace_back("export", "'" + s->export_name + "'");
    std::string f;
    auto add = [&](uint16_t bit, const char *name) {
        if (i.flags & bit) f += (f.empty() ? "" : " ") + std::string(name);
    };
    add(nbd::TF_READ_ONLY, "read-only");
    add(nbd::TF_SEND_FLUSH, "flush");
    add(nbd::TF_SEND_FUA, "fua");
    add(nbd::TF_SEND_TRIM, "trim");
    add(nbd::TF_SEND_WRITE_ZEROES, "write-zeroes");
    add(nbd::TF_CAN_MULTI_CONN, "multi-conn");
    info->fields.emplace_back("transmission flags", f.empty() ? "none" : f);
    info->fields.emplace_back("block sizes", std::to_string(i.min_block) + " " + std::to_string(i.pref_block) +
                                                 " " + std::to_string(i.max_block));
    info->fields.emplace_back("structured replies", i.structured ? "yes" : "no");
    info->fields.emplace_back("negotiation", i.used_go ? "NBD_OPT_GO" : "NBD_OPT_EXPORT_NAME");
    if (s->client->dead()) info->fields.emplace_back("connection", "closed: " + s->client->error());
}

const char *const nbd_protocols[] = {"nbd", "nbd+unix", "nbd+tcp", "nbds", "nbds+unix", "nbds+tcp", nullptr};

}  // namespace

extern const BlockDriver bdrv_nbd;
const BlockDriver bdrv_nbd = {
    .format_name = "nbd",
    .is_protocol = true,
    .sharable_writes = true,
    // nbds: claimed so that the user hears "TLS is not supported" rather
    // than "no such file".
    .protocols = nbd_protocols,
    .probe = nullptr,
    .open = nbd_open,
    .close = nbd_close,
    .child_perm = nullptr,
    // No locks: the NBD protocol has none (DESIGN section 5).
    .check_perm = nullptr,
    .set_perm = nullptr,
    .abort_perm_update = nullptr,
    .co_preadv = nbd_co_preadv,
    .co_pwritev = nbd_co_pwritev,
    .co_pwrite_zeroes = nbd_co_pwrite_zeroes,
    .co_pdiscard = nbd_co_pdiscard,
    .co_flush = nbd_co_flush,
    .co_truncate = nullptr,
    .co_block_status = nullptr,
    .getlength = nbd_getlength,
    .get_allocated_size = nullptr,
    .get_info = nbd_get_info,
    .create = nullptr,
};

}  // namespace mb
