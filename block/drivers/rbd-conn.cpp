// Connecting to a Ceph cluster, parsing rbd: filenames, naming lock holders.
#include "block/drivers/rbd-conn.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <unistd.h>

namespace mb::rbd {

std::string Spec::describe() const {
    return "rbd:" + pool + "/" + image + (snapshot.empty() ? "" : "@" + snapshot);
}

namespace {

Status bad_filename(const std::string &fn, const std::string &why) {
    return Status::Error(EINVAL, "Invalid rbd filename '" + fn + "'",
                         why + "; expected rbd:POOL/IMAGE[@SNAPSHOT][:conf=PATH][:id=USER]");
}

// Splits at the first unescaped `sep` in s (from `pos`); unescapes the part.
std::string next_part(const std::string &s, size_t *pos, const char *seps, char *found) {
    std::string out;
    *found = 0;
    while (*pos < s.size()) {
        char c = s[*pos];
        if (c == '\\' && *pos + 1 < s.size()) {
            out += s[*pos + 1];
            *pos += 2;
            continue;
        }
        if (strchr(seps, c)) {
            *found = c;
            (*pos)++;
            return out;
        }
        out += c;
        (*pos)++;
    }
    return out;
}

}  // namespace

Status parse_filename(const std::string &fn, Spec *spec) {
    if (fn.rfind("rbd:", 0) != 0) return bad_filename(fn, "It does not start with 'rbd:'");
    size_t pos = 4;
    char sep;
    std::string pool = next_part(fn, &pos, "/@:", &sep);
    if (pool.empty()) return bad_filename(fn, "The pool name is missing");
    if (sep != '/') return bad_filename(fn, "The image name is missing");
    std::string image = next_part(fn, &pos, "@:/", &sep);
    if (sep == '/') return bad_filename(fn, "RBD namespaces (POOL/NAMESPACE/IMAGE) are not supported");
    if (image.empty()) return bad_filename(fn, "The image name is missing");
    std::string snap;
    if (sep == '@') {
        snap = next_part(fn, &pos, ":", &sep);
        if (snap.empty()) return bad_filename(fn, "The snapshot name after '@' is missing");
    }
    bool seen_conf = false, seen_id = false;
    while (sep == ':') {
        std::string kv = next_part(fn, &pos, ":", &sep);
        size_t eq = kv.find('=');
        if (eq == std::string::npos || eq == 0)
            return bad_filename(fn, "'" + kv + "' is not KEY=VALUE");
        std::string key = kv.substr(0, eq), val = kv.substr(eq + 1);
        if (val.empty()) return bad_filename(fn, "The value of '" + key + "' is empty");
        if (key == "conf" && !seen_conf) {
            seen_conf = true;
            spec->conf = val;
        } else if (key == "id" && !seen_id) {
            seen_id = true;
            spec->user = val;
        } else if (key == "conf" || key == "id") {
            return bad_filename(fn, "'" + key + "' is given twice");
        } else {
            return bad_filename(fn, "Unknown key '" + key + "' (known: conf, id)");
        }
    }
    spec->pool = pool;
    spec->image = image;
    spec->snapshot = snap;
    return Status::OK();
}

// --- the connection ---------------------------------------------------------

namespace {

std::string conf_get(rados_t c, const char *key) {
    char buf[512] = {};
    if (api().rados_conf_get(c, key, buf, sizeof(buf) - 1) < 0) return {};
    return buf;
}

Status rados_error(const std::string &what, int r) {
    return PosixError(what, -r);
}

}  // namespace

Conn::~Conn() {
    if (image_) api().rbd_close(image_);
    if (ioctx_) api().rados_ioctx_destroy(ioctx_);
    if (cluster_) api().rados_shutdown(cluster_);
}

std::string Conn::client_name() const {
    return cluster_ ? "client." + std::to_string(api().rados_get_instance_id(cluster_)) : "client.?";
}

Status Conn::connect(const Spec &spec) {
    // The first connection of the process loads librbd (rbd-lib.h).
    MB_TRY(load());
    spec_ = spec;
    const std::string user = spec.user.empty() ? "admin" : spec.user;
    if (user.rfind("client.", 0) == 0) {
        return Status::Error(EINVAL, "Invalid RBD user '" + spec.user + "'",
                             "Give the name without 'client.': id=" + user.substr(7));
    }
    int r = api().rados_create(&cluster_, user.c_str());
    if (r < 0) return rados_error("Could not create a RADOS client for user '" + user + "'", r);
    // Our own errors say what went wrong; librados should not print its own.
    api().rados_conf_set(cluster_, "log_to_stderr", "false");
    api().rados_conf_set(cluster_, "err_to_stderr", "false");
    if (!spec.conf.empty()) {
        if (access(spec.conf.c_str(), R_OK) != 0)
            return PosixError("Could not read the Ceph configuration '" + spec.conf + "'", errno);
        r = api().rados_conf_read_file(cluster_, spec.conf.c_str());
        if (r < 0) return rados_error("Could not read the Ceph configuration '" + spec.conf + "'", r);
    } else {
        // $CEPH_CONF, then /etc/ceph/ceph.conf, ~/.ceph/config, ./ceph.conf.
        r = api().rados_conf_read_file(cluster_, nullptr);
        if (r < 0) {
            return Status::Error(-r, "No Ceph configuration found for " + spec.describe(),
                                 "Give conf=PATH (or :conf=PATH in the filename), or set CEPH_CONF");
        }
    }
    const std::string mons = conf_get(cluster_, "mon_host");
    if (mons.empty()) {
        return Status::Error(EINVAL, "The Ceph configuration names no monitor (mon_host) for " +
                                         spec.describe());
    }
    // As QEMU does: the host-cache setting becomes librbd's cache.
    api().rados_conf_set(cluster_, "rbd_cache", spec.cache ? "true" : "false");
    const std::string t = std::to_string(spec.timeout_s);
    api().rados_conf_set(cluster_, "client_mount_timeout", t.c_str());
    api().rados_conf_set(cluster_, "rados_mon_op_timeout", t.c_str());
    r = api().rados_connect(cluster_);
    if (r == -ETIMEDOUT) {
        return Status::Error(ETIMEDOUT, "No Ceph monitor answered within " + t + " s at " + mons,
                             "Check that the cluster is up and mon_host in the configuration");
    }
    if (r == -ENOENT) {
        // librados found no keyring with a key for the user, so it had no
        // way to authenticate (cephx) and never asked the cluster.
        return Status::Error(ENOENT, "No key for user 'client." + user + "' to authenticate to the Ceph cluster at " +
                                         mons + ": no keyring found at " + conf_get(cluster_, "keyring"),
                             "Give the user's keyring (keyring = PATH in the configuration), or check id=USER");
    }
    if (r == -EACCES || r == -EPERM || r == -EINVAL) {
        return Status::Error(-r, "The Ceph cluster at " + mons + " refused user 'client." + user +
                                     "': " + strerror(-r),
                             "Check id=USER and its keyring");
    }
    if (r < 0) return rados_error("Could not connect to the Ceph cluster at " + mons, r);
    r = api().rados_ioctx_create(cluster_, spec.pool.c_str(), &ioctx_);
    if (r == -ENOENT) return Status::Error(ENOENT, "Pool '" + spec.pool + "' does not exist");
    if (r < 0) return rados_error("Could not open pool '" + spec.pool + "'", r);
    return Status::OK();
}

namespace {

int submit_open(Aio *a, rbd_completion_t c) {
    return a->flags ? api().rbd_aio_open_read_only(a->io, a->name, a->out, a->snap, c)
                    : api().rbd_aio_open(a->io, a->name, a->out, a->snap, c);
}

// Opening reads the image's header objects: asynchronously, so the loop
// (and whatever else an embedder runs on it) keeps going meanwhile.
Task<int> open_task(rados_ioctx_t io, const char *name, const char *snap, bool ro,
                    rbd_image_t *out) {
    Aio a{AioContext::main(), submit_open};
    a.io = io;
    a.name = name;
    a.snap = snap;
    a.flags = ro;
    a.out = out;
    co_return int(co_await a);
}

}  // namespace

Status Conn::open_image() {
    const char *snap = spec_.snapshot.empty() ? nullptr : spec_.snapshot.c_str();
    int r = sync_wait(open_task(ioctx_, spec_.image.c_str(), snap, read_only_, &image_));
    if (r < 0) image_ = nullptr;  // librbd has freed a handle that failed to open
    if (r == -ENOENT) {
        if (snap) {
            return Status::Error(ENOENT, "Image '" + spec_.image + "' or its snapshot '" +
                                             spec_.snapshot + "' does not exist in pool '" +
                                             spec_.pool + "'");
        }
        return Status::Error(ENOENT,
                             "Image '" + spec_.image + "' does not exist in pool '" + spec_.pool + "'");
    }
    if (r < 0) return rados_error("Could not open " + spec_.describe(), r);
    return Status::OK();
}

Result<std::unique_ptr<Conn>> Conn::open(const Spec &spec) {
    std::unique_ptr<Conn> c(new Conn());
    // A read-only node still opens a writable handle: only such a handle
    // watches the image and can hold its lock (auto keeps writers out of a
    // read-only open too), and commit can then write without reopening.
    // The block layer refuses writes to a read-only node.  A snapshot
    // handle is read-only by nature.
    c->read_only_ = !spec.snapshot.empty();
    MB_TRY(c->connect(spec));
    MB_TRY(c->open_image());
    return c;
}

Result<std::unique_ptr<Conn>> Conn::open_pool(const Spec &spec) {
    std::unique_ptr<Conn> c(new Conn());
    MB_TRY(c->connect(spec));
    return c;
}

Status Conn::reopen_image() {
    if (image_) api().rbd_close(image_);
    image_ = nullptr;
    return open_image();
}

// --- holders ----------------------------------------------------------------

std::string Holders::client_at(const std::string &addr) const {
    for (const Watcher &w : watchers)
        if (w.addr == addr) return "client." + std::to_string(w.id);
    return {};
}

namespace {

std::vector<std::string> split_nul(const std::vector<char> &buf, size_t len) {
    std::vector<std::string> out;
    size_t i = 0;
    while (i < len) {
        std::string s(&buf[i]);
        i += s.size() + 1;
        out.push_back(std::move(s));
    }
    return out;
}

}  // namespace

Result<Holders> holders(rbd_image_t image) {
    Holders h;
    rbd_lock_mode_t mode;
    char *owners[8];
    size_t n = 8;
    int r = api().rbd_lock_get_owners(image, &mode, owners, &n);
    if (r == 0) {
        for (size_t i = 0; i < n; i++) h.owners.emplace_back(owners[i]);
        api().rbd_lock_get_owners_cleanup(owners, n);
    } else if (r != -ENOENT && r != -EOPNOTSUPP && r != -EINVAL && r != -EBUSY) {
        // (EBUSY: the lock is an advisory one, listed below.)
        return PosixError("Could not list the lock owners", -r);
    }
    rbd_image_watcher_t w[32];
    size_t nw = 32;
    r = api().rbd_watchers_list(image, w, &nw);
    if (r == 0) {
        for (size_t i = 0; i < nw; i++) h.watchers.push_back({w[i].id, w[i].addr});
        api().rbd_watchers_list_cleanup(w, nw);
    }
    // Advisory locks: NUL-separated lists in caller buffers (ERANGE: grow).
    size_t tag_len = 256, clients_len = 1024, cookies_len = 1024, addrs_len = 1024;
    for (int tries = 0; tries < 3; tries++) {
        std::vector<char> tag(tag_len), clients(clients_len), cookies(cookies_len), addrs(addrs_len);
        int exclusive = 0;
        ssize_t nl = api().rbd_list_lockers(image, &exclusive, tag.data(), &tag_len, clients.data(),
                                      &clients_len, cookies.data(), &cookies_len, addrs.data(),
                                      &addrs_len);
        if (nl == -ERANGE) continue;
        if (nl < 0) break;
        auto cl = split_nul(clients, clients_len), co = split_nul(cookies, cookies_len),
             ad = split_nul(addrs, addrs_len);
        const std::string t(tag.data());
        for (ssize_t i = 0; i < nl && size_t(i) < cl.size() && size_t(i) < co.size() &&
                            size_t(i) < ad.size();
             i++) {
            // The managed lock is itself a cls lock (tag "internal", cookie
            // "auto N"): it is listed above as an owner, not as advisory.
            if (t == "internal" && co[i].rfind("auto ", 0) == 0) continue;
            h.lockers.push_back({cl[i], co[i], ad[i], t, exclusive != 0});
        }
        break;
    }
    return h;
}

std::vector<std::string> describe_holders(const Holders &h, const std::string &skip_addr) {
    std::vector<std::string> out;
    for (const std::string &o : h.owners) {
        if (o == skip_addr) continue;
        std::string who = h.client_at(o);
        out.push_back("Held by " + (who.empty() ? "a client" : who) + " at " + o +
                      ": the RBD exclusive lock");
    }
    for (const AdvisoryLock &l : h.lockers) {
        out.push_back("Held by " + l.client + " at " + l.addr + ": an advisory " +
                      (l.exclusive ? "exclusive" : "shared") + " lock, cookie '" + l.cookie +
                      "'" + (l.tag.empty() ? "" : ", tag '" + l.tag + "'"));
    }
    return out;
}

}  // namespace mb::rbd
