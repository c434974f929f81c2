// The nbd protocol driver: a client of an NBD server (docs/drivers/nbd.md).
//
// Written against the public driver ABI only (include/miniblock/driver.h),
// like cloop: linked in by default, block-nbd.so with -Dmodules=enabled.
// It is docs/plugins.md's example of a network protocol plugin.
//
// The server is named by a URI (nbd://HOST[:PORT]/EXPORT,
// nbd+unix:///EXPORT?socket=PATH) or by nested options (server.type,
// server.path / server.host, server.port, export).  The handshake runs
// blocking at open (control plane, bounded by `timeout`); requests then run
// on the node's loop through nbd-client.h (fd watch and timers of the ABI),
// many in flight at once (thread model async).
//
// Requests are cut to the server's maximum block size; reads that are not
// aligned to its minimum block size go through a bounce buffer, and writes
// that are not read, merge and write whole blocks, serialized against this
// node's other writes.
//
// Locking: the NBD protocol carries no locks, so this driver has no lock
// hooks; the server holding the image is the one that must lock it.  The
// core opens lock=auto (nothing to lock) and lock=off, and refuses
// lock=shared and lock=exclusive (given on this node or on a node above it)
// with the reason and hint this driver gives (no_locks_reason/_hint).
#include <glib.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

// Linked into the library unless built as a module (-Dmodules=enabled).
#ifndef MB_BUILD_AS_MODULE
#define MB_BUILTIN_DRIVER nbd
#endif
#include "block/drivers/nbd-client.h"
#include "miniblock/driver.h"

namespace {

using mb::Status;
namespace nbd = mb::nbd;
using nbd::Address;
using nbd::Client;
using Done = std::function<void(int)>;

constexpr int kDefaultTimeout = 30;
// Trim and write-zeroes carry no payload: pieces of up to 1 GiB.
constexpr uint64_t kNoPayloadMax = 1ULL << 30;

// Hands a Status to the core as this callback's error.
void set_error(const Status &st) {
    mbd_error(st.err(), "%s", st.message().c_str());
    if (!st.detail().empty()) mbd_error_hint("%s", st.detail().c_str());
}

// Aligned writes share it; the read-modify-write of an unaligned one holds
// it alone, so no write of ours lands inside its blocks meanwhile.  First
// come, first served.
class WriteGate {
public:
    void acquire(bool exclusive, std::function<void()> go) {
        if (waiters_.empty() && fits(exclusive)) {
            take(exclusive);
            return go();
        }
        waiters_.push_back({exclusive, std::move(go)});
    }
    void release(bool exclusive) {
        if (exclusive) exclusive_ = false;
        else shared_--;
        while (!waiters_.empty() && fits(waiters_.front().exclusive)) {
            Waiter w = std::move(waiters_.front());
            waiters_.pop_front();
            take(w.exclusive);
            w.go();
        }
    }

private:
    struct Waiter {
        bool exclusive;
        std::function<void()> go;
    };
    bool fits(bool exclusive) const { return exclusive ? !exclusive_ && shared_ == 0 : !exclusive_; }
    void take(bool exclusive) {
        if (exclusive) exclusive_ = true;
        else shared_++;
    }
    bool exclusive_ = false;
    int shared_ = 0;
    std::deque<Waiter> waiters_;
};

struct Nbd {
    Address addr;
    std::string export_name;
    int timeout_s = kDefaultTimeout;
    mbd_loop *loop = nullptr;
    std::shared_ptr<Client> client;
    WriteGate gate;
    // Requests the core timed out (abandon): their caller's buffer is gone.
    // Until they complete, nothing more of theirs is sent, and nothing is
    // copied to or from that buffer.
    std::unordered_set<mbd_request *> abandoned;
    const nbd::ExportInfo &info() const { return client->info(); }
    bool gone(mbd_request *req) const { return !abandoned.empty() && abandoned.count(req); }
};

// Every completion of a request goes through here.
void complete(Nbd *s, mbd_request *req, int r) {
    if (!s->abandoned.empty()) s->abandoned.erase(req);
    mbd_request_complete(req, r);
}

// Opening without a format probes it through a first nbd node, closed just
// before the real one opens; a qemu-nbd without --persistent exits when its
// only client goes.  So a closing node parks its idle connection here for a
// moment, and the next open of the same server and export takes it over.
// The parked connection's watch and expiry timer stay on the loop (which
// outlives its nodes) until it is taken over or expires.
struct Parked {
    std::string key;
    std::shared_ptr<Client> client;
    mbd_timer *expiry = nullptr;
    int64_t until_ns = 0;  // also checked on reuse: the loop may not have run

    void drop() {
        if (expiry) mbd_timer_free(std::exchange(expiry, nullptr));
        if (client) client->shutdown();
        client.reset();
        key.clear();
    }
};

constexpr int64_t kParkNs = 1'000'000'000;

int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

Parked &parked() {
    static Parked *p = new Parked();  // leaked: nothing to do at exit
    return *p;
}

std::string park_key(const Nbd &s) {
    return s.addr.describe() + '\n' + s.export_name + '\n' + std::to_string(s.timeout_s);
}

void park(std::shared_ptr<Client> c, std::string key, mbd_loop *loop) {
    Parked &p = parked();
    p.drop();
    if (c->dead()) return;
    p.key = std::move(key);
    p.client = std::move(c);
    p.until_ns = now_ns() + kParkNs;
    p.expiry = mbd_timer_new(loop, [](void *) { parked().drop(); }, nullptr);
    if (p.expiry) mbd_timer_arm(p.expiry, uint64_t(kParkNs));
}

std::shared_ptr<Client> unpark(const std::string &key) {
    Parked &p = parked();
    if (!p.client || p.key != key || p.client->dead() || now_ns() > p.until_ns) {
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
Status parse_server(mbd_node *node, Address *a, std::string *export_name) {
    const char *fn = mbd_opt_str(node, "filename");
    const char *type = mbd_opt_str(node, "server.type");  // required in server: given iff server is
    const char *exp = mbd_opt_str(node, "export");
    if (fn && (type || exp)) {
        return Status::Error(EINVAL, "Parameters 'filename' and 'server' cannot be used together",
                             "Give an NBD URI or server.* and export, not both");
    }
    if (fn) return parse_uri(fn, a, export_name);
    if (!type) {
        return Status::Error(EINVAL, "Parameter 'server' is missing",
                             "Give an NBD URI (nbd://HOST[:PORT]/EXPORT or "
                             "nbd+unix:///EXPORT?socket=PATH) or server.type=unix|inet");
    }
    // The schema has checked the union: type, and path or host.
    auto str = [&](const char *name) {
        const char *v = mbd_opt_str(node, name);
        return std::string(v ? v : "");
    };
    a->is_unix = strcmp(type, "unix") == 0;
    if (a->is_unix) {
        a->path = str("server.path");
    } else {
        a->host = str("server.host");
        a->port = str("server.port");
    }
    *export_name = exp ? exp : "";
    return Status::OK();
}

void *nbd_open(mbd_node *node) {
    auto s = std::make_unique<Nbd>();
    if (Status st = parse_server(node, &s->addr, &s->export_name); !st.ok()) {
        set_error(st);
        return nullptr;
    }
    int64_t t = mbd_opt_int(node, "timeout", kDefaultTimeout);
    if (t < 1 || t > 3600) {
        mbd_error(EINVAL, "Invalid value '%lld' for parameter '%s'", (long long)t, mbd_opt_key(node, "timeout"));
        mbd_error_hint("Expected seconds from 1 to 3600");
        return nullptr;
    }
    s->timeout_s = int(t);
    s->loop = mbd_node_loop(node);
    // Shown by the URI the server options amount to.
    std::string uri = s->addr.is_unix ? "nbd+unix:///" + s->export_name + "?socket=" + s->addr.path
                                      : "nbd://" + s->addr.host + ":" + s->addr.port + "/" + s->export_name;
    mbd_node_set_filename(node, uri.c_str());

    s->client = unpark(park_key(*s));
    if (!s->client) {
        auto fd = nbd::connect_to(s->addr, s->timeout_s);
        if (!fd.ok()) {
            set_error(fd.status());
            return nullptr;
        }
        auto info = nbd::handshake_fd(fd->get(), s->export_name, s->timeout_s);
        if (!info.ok()) {
            Status st = info.take_status();
            set_error(st.prefix("NBD server at " + s->addr.describe()));
            return nullptr;
        }
        s->client = Client::create(s->loop, std::move(*fd), *info, s->addr.describe(), s->timeout_s);
        if (!s->client) return nullptr;  // the error is set
    }
    const nbd::ExportInfo &info = s->info();
    if ((info.flags & nbd::TF_READ_ONLY) && !mbd_node_read_only(node)) {
        park(std::move(s->client), park_key(*s), s->loop);
        mbd_error(EROFS, "The export '%s' of the NBD server is read-only", s->export_name.c_str());
        mbd_error_hint("Open it read-only");
        return nullptr;
    }
    mbd_node_set_alignment(node, info.min_block);
    return s.release();
}

void nbd_close(void *handle) {
    std::unique_ptr<Nbd> s(static_cast<Nbd *>(handle));
    if (!s->client) return;
    // Not idle: only after the core timed requests out (it drains a node
    // before closing it); their callbacks point into *s.
    if (s->client->idle()) park(std::move(s->client), park_key(*s), s->loop);
    else s->client->abandon();
}

int64_t nbd_get_length(void *handle) { return int64_t(static_cast<Nbd *>(handle)->info().size); }

int check_range(Nbd *s, uint64_t offset, uint64_t bytes) {
    uint64_t size = s->info().size;
    return offset > size || bytes > size - offset ? -EINVAL : 0;
}

bool aligned(const nbd::ExportInfo &i, uint64_t offset, uint64_t bytes) {
    return offset % i.min_block == 0 && bytes % i.min_block == 0;
}

// Cuts [offset, offset + bytes) into requests of at most `max` bytes, one
// after the other (concurrency comes from the callers' requests), each
// tagged with the core's request `req`.  Once req is abandoned the rest is
// not sent: its buffer is gone.
void split(Nbd *s, mbd_request *req, uint16_t cmd, uint16_t flags, uint64_t offset, uint64_t bytes,
           const uint8_t *wbuf, uint8_t *rbuf, uint64_t max, Done done) {
    if (bytes == 0) return done(0);
    if (s->gone(req)) return done(-ETIMEDOUT);
    uint32_t n = uint32_t(std::min(bytes, max));
    std::shared_ptr<Client> c = s->client;
    c->request(cmd, flags, offset, n, wbuf, rbuf,
               [c, s, req, cmd, flags, offset, bytes, wbuf, rbuf, max, n, done = std::move(done)](int r) mutable {
                   if (r < 0) return done(r);
                   split(s, req, cmd, flags, offset + n, bytes - n, wbuf ? wbuf + n : nullptr,
                         rbuf ? rbuf + n : nullptr, max, std::move(done));
               },
               req);
}

Done completer(Nbd *s, mbd_request *req) {
    return [s, req](int r) { complete(s, req, r); };
}

void nbd_aio_read(void *handle, mbd_request *req, void *buf, uint64_t count, uint64_t offset, uint32_t) {
    auto *s = static_cast<Nbd *>(handle);
    if (int r = check_range(s, offset, count)) return mbd_request_complete(req, r);
    const auto &i = s->info();
    if (aligned(i, offset, count))
        return split(s, req, nbd::CMD_READ, 0, offset, count, nullptr, static_cast<uint8_t *>(buf),
                     i.max_block, completer(s, req));
    // Bounce through whole blocks; the export's size is a multiple of the
    // minimum block size, so the rounded range stays inside it.
    uint64_t start = offset - offset % i.min_block;
    uint64_t end = (offset + count + i.min_block - 1) / i.min_block * i.min_block;
    auto bounce = std::make_shared<std::vector<uint8_t>>(end - start);
    split(s, req, nbd::CMD_READ, 0, start, end - start, nullptr, bounce->data(), i.max_block,
          [s, req, bounce, skip = offset - start, buf, count](int r) {
              if (r == 0 && !s->gone(req)) memcpy(buf, bounce->data() + skip, count);
              complete(s, req, r);
          });
}

void do_flush(Nbd *s, Done done) {
    if (!(s->info().flags & nbd::TF_SEND_FLUSH)) return done(0);
    s->client->request(nbd::CMD_FLUSH, 0, 0, 0, nullptr, nullptr, std::move(done));
}

void nbd_aio_flush(void *handle, mbd_request *req) {
    auto *s = static_cast<Nbd *>(handle);
    do_flush(s, completer(s, req));
}

// FUA natively when the server has it, else a flush after the write.
Done fua_then(Nbd *s, uint32_t flags, mbd_request *req) {
    return [s, flags, req](int r) {
        if (r == 0 && (flags & MBD_REQ_FUA) && !(s->info().flags & nbd::TF_SEND_FUA))
            return do_flush(s, completer(s, req));
        complete(s, req, r);
    };
}

uint16_t fua_flag(const nbd::ExportInfo &i, uint32_t flags) {
    return (flags & MBD_REQ_FUA) && (i.flags & nbd::TF_SEND_FUA) ? nbd::CMD_FLAG_FUA : 0;
}

// An unaligned write: read the partial head and tail blocks, merge, write
// the whole blocks.  Runs holding the write gate alone; other clients of
// the export are the server's business, as with any overlap.
struct Rmw {
    Nbd *s;
    mbd_request *req;
    uint64_t offset, bytes, start, end;
    const uint8_t *buf;
    uint16_t fua;
    std::vector<uint8_t> bounce;
    Done done;
};

void rmw_write(std::shared_ptr<Rmw> w) {
    if (w->s->gone(w->req)) return w->done(-ETIMEDOUT);  // the caller's data is gone
    memcpy(w->bounce.data() + (w->offset - w->start), w->buf, w->bytes);
    uint8_t *data = w->bounce.data();
    split(w->s, w->req, nbd::CMD_WRITE, w->fua, w->start, w->end - w->start, data, nullptr,
          w->s->info().max_block, [w](int r) { w->done(r); });
}

void rmw_tail(std::shared_ptr<Rmw> w) {
    const uint64_t m = w->s->info().min_block;
    if (w->end == w->offset + w->bytes || (w->end - m <= w->start && w->start != w->offset)) return rmw_write(w);
    uint8_t *dst = w->bounce.data() + (w->end - m - w->start);
    w->s->client->request(
        nbd::CMD_READ, 0, w->end - m, uint32_t(m), nullptr, dst,
        [w](int r) {
            if (r < 0) return w->done(r);
            rmw_write(w);
        },
        w->req);
}

void write_unaligned(Nbd *s, mbd_request *req, uint64_t offset, uint64_t bytes, const uint8_t *buf, uint16_t fua,
                     Done done) {
    const uint64_t m = s->info().min_block;
    auto w = std::make_shared<Rmw>();
    w->s = s;
    w->req = req;
    w->offset = offset;
    w->bytes = bytes;
    w->start = offset - offset % m;
    w->end = (offset + bytes + m - 1) / m * m;
    w->buf = buf;
    w->fua = fua;
    w->done = std::move(done);
    if (w->end > s->info().size) return w->done(-EINVAL);  // a size that is not whole blocks
    w->bounce.resize(w->end - w->start);
    if (w->start == offset) return rmw_tail(w);
    s->client->request(
        nbd::CMD_READ, 0, w->start, uint32_t(m), nullptr, w->bounce.data(),
        [w](int r) {
            if (r < 0) return w->done(r);
            rmw_tail(w);
        },
        req);
}

void nbd_aio_write(void *handle, mbd_request *req, const void *buf, uint64_t count, uint64_t offset,
                   uint32_t flags) {
    auto *s = static_cast<Nbd *>(handle);
    if (int r = check_range(s, offset, count)) return mbd_request_complete(req, r);
    const auto &i = s->info();
    const auto *p = static_cast<const uint8_t *>(buf);
    Done finish = fua_then(s, flags, req);
    uint16_t fua = fua_flag(i, flags);
    if (aligned(i, offset, count)) {
        s->gate.acquire(false, [=] {
            split(s, req, nbd::CMD_WRITE, fua, offset, count, p, nullptr, s->info().max_block,
                  [s, finish](int r) {
                      s->gate.release(false);
                      finish(r);
                  });
        });
    } else {
        s->gate.acquire(true, [=] {
            write_unaligned(s, req, offset, count, p, fua, [s, finish](int r) {
                s->gate.release(true);
                finish(r);
            });
        });
    }
}

// Whole blocks only; the pieces are payload-less requests, cut to 1 GiB.
void no_payload(Nbd *s, mbd_request *req, uint16_t cmd, uint16_t flags, uint64_t start, uint64_t bytes,
                Done done) {
    const auto &i = s->info();
    uint64_t max = kNoPayloadMax - kNoPayloadMax % i.min_block;
    s->gate.acquire(false, [=] {
        split(s, req, cmd, flags, start, bytes, nullptr, nullptr, max, [s, done](int r) {
            s->gate.release(false);
            done(r);
        });
    });
}

void nbd_aio_zero(void *handle, mbd_request *req, uint64_t count, uint64_t offset, uint32_t flags) {
    auto *s = static_cast<Nbd *>(handle);
    if (int r = check_range(s, offset, count)) return mbd_request_complete(req, r);
    const auto &i = s->info();
    // -ENOTSUP: the block layer falls back to writing zeroes.
    if (!(i.flags & nbd::TF_SEND_WRITE_ZEROES) || !aligned(i, offset, count))
        return mbd_request_complete(req, -ENOTSUP);
    uint16_t f = fua_flag(i, flags) | ((flags & MBD_REQ_MAY_UNMAP) ? 0 : nbd::CMD_FLAG_NO_HOLE);
    no_payload(s, req, nbd::CMD_WRITE_ZEROES, f, offset, count, fua_then(s, flags, req));
}

void nbd_aio_discard(void *handle, mbd_request *req, uint64_t count, uint64_t offset) {
    auto *s = static_cast<Nbd *>(handle);
    if (int r = check_range(s, offset, count)) return mbd_request_complete(req, r);
    const auto &i = s->info();
    if (!(i.flags & nbd::TF_SEND_TRIM)) return mbd_request_complete(req, 0);  // a hint the server does not take
    uint64_t start = (offset + i.min_block - 1) / i.min_block * i.min_block;
    uint64_t end = (offset + count) / i.min_block * i.min_block;
    if (end <= start) return mbd_request_complete(req, 0);
    no_payload(s, req, nbd::CMD_TRIM, 0, start, end - start, completer(s, req));
}

// The core timed req out (request-timeout): from now on nothing reads or
// writes the buffer it came with.  What is in flight of it keeps going, on
// scratch memory and copies (the stream cannot skip a reply or half a
// payload); its next pieces are not sent; it completes when the last reply
// comes, which the core reports and ignores.
void nbd_abandon(void *handle, mbd_request *req) {
    auto *s = static_cast<Nbd *>(handle);
    s->abandoned.insert(req);
    s->client->forget(req);
}

void nbd_get_info(void *handle, mbd_info *out) {
    auto *s = static_cast<Nbd *>(handle);
    const auto &i = s->info();
    mbd_info_add(out, "server", s->addr.describe().c_str());
    mbd_info_add(out, "export", ("'" + s->export_name + "'").c_str());
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
    mbd_info_add(out, "transmission flags", f.empty() ? "none" : f.c_str());
    mbd_info_add(out, "block sizes",
                 (std::to_string(i.min_block) + " " + std::to_string(i.pref_block) + " " + std::to_string(i.max_block)).c_str());
    mbd_info_add(out, "structured replies", i.structured ? "yes" : "no");
    mbd_info_add(out, "negotiation", i.used_go ? "NBD_OPT_GO" : "NBD_OPT_EXPORT_NAME");
    if (s->client->dead()) mbd_info_add(out, "connection", ("closed: " + s->client->error()).c_str());
}

// nbds: claimed so that the user hears "TLS is not supported" rather than
// "no such file".
const char *const nbd_schemes[] = {"nbd", "nbd+unix", "nbd+tcp", "nbds", "nbds+unix", "nbds+tcp", nullptr};
const char *const server_types[] = {"unix", "inet", nullptr};

// QEMU's names: filename, or server.{type,path,host,port} and export.
const mbd_option nbd_options[] = {
    {"filename", MBD_OPT_STR, 0, nullptr,
     "an NBD URI: nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH (instead of server and export)",
     nullptr},
    {"server.type", MBD_OPT_ENUM, MBD_OPT_REQUIRED, nullptr,
     "how to reach the server: a Unix domain socket, or TCP (a host and a port)", server_types},
    {"server.path", MBD_OPT_STR, MBD_OPT_REQUIRED, nullptr, "path of the socket", nullptr},
    {"server.host", MBD_OPT_STR, MBD_OPT_REQUIRED, nullptr, "host name or address", nullptr},
    {"server.port", MBD_OPT_STR, 0, "10809", "port number or service name", nullptr},
    {"export", MBD_OPT_STR, 0, nullptr, "the export name (default: the empty name)", nullptr},
    {"timeout", MBD_OPT_INT, 0, "30",
     "seconds to wait for the server to connect, answer the handshake or make progress on pending "
     "requests, 1 to 3600",
     nullptr},
    {nullptr, 0, 0, nullptr, nullptr, nullptr},
};

// server is a union on server.type, as QEMU's.
const char *const nbd_option_conditions[] = {
    "server.path", "type=unix", "server.host", "type=inet", "server.port", "type=inet", nullptr,
};

mbd_driver nbd_driver = [] {
    mbd_driver d{};
    d.name = "nbd";
    d.description = "The nbd protocol: a client of an NBD server (no locks: the server must lock the image; "
                    "lock=shared and lock=exclusive are refused)";
    d.kind = MBD_PROTOCOL;
    d.thread_model = MBD_THREAD_ASYNC;
    d.uri_schemes = nbd_schemes;
    d.options = nbd_options;
    d.option_conditions = nbd_option_conditions;
    d.sharable_writes = 1;
    d.open = nbd_open;
    d.close = nbd_close;
    d.get_length = nbd_get_length;
    d.aio_read = nbd_aio_read;
    d.aio_write = nbd_aio_write;
    d.aio_flush = nbd_aio_flush;
    d.aio_zero = nbd_aio_zero;
    d.aio_discard = nbd_aio_discard;
    d.get_info = nbd_get_info;
    d.abandon = nbd_abandon;
    // The core's request-timeout is a last resort behind this driver's own
    // `timeout` (30 s of no progress): a slow server making progress is
    // not cut off at 30 s.
    d.default_request_timeout_s = 2 * kDefaultTimeout;
    // No lock hooks: the NBD protocol has none (DESIGN section 5).
    d.no_locks_reason = "the NBD protocol carries no locks";
    d.no_locks_hint = "The NBD server holding the image must lock it";
    return d;
}();

}  // namespace

MBD_REGISTER(nbd_driver)
