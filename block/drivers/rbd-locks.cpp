// `miniblock-img locks rbd:...`: who holds what on an RBD image, and breaking
// a stale lock on purpose (docs/locking.md section 12).
//
// A holder is alive while it watches the image (its watch is renewed every
// few seconds and expires after osd_client_watch_timeout).  A lock whose
// holder still watches is never broken here: that client may be writing.
// Breaking one makes librbd blocklist its client
// (rbd_blocklist_on_break_lock), so a holder that was only stalled cannot
// wake up and write.
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "block/drivers/rbd-conn.h"

namespace mb::rbd {

namespace {

void print_err(const char *prog, const Status &s) {
    fprintf(stderr, "%s: %s\n", prog, s.to_string().c_str());
}

}  // namespace

int report_locks(const std::string &filename, bool do_break, const char *prog) {
    Spec spec;
    Status st = parse_filename(filename, &spec);
    if (!st.ok()) {
        print_err(prog, st);
        return 1;
    }
    auto c = Conn::open(spec);
    if (!c.ok()) {
        print_err(prog, c.status());
        return 1;
    }
    rbd_image_t img = (*c)->image();
    const std::string me = (*c)->client_name();
    auto h = holders(img);
    if (!h.ok()) {
        print_err(prog, h.status());
        return 1;
    }
    printf("%s:\n", filename.c_str());
    int shown = 0;
    for (const std::string &o : h->owners) {
        std::string who = h->client_at(o);
        printf("  exclusive lock owner: %s at %s%s\n", who.empty() ? "a client" : who.c_str(),
               o.c_str(), who.empty() ? " (no watch: dead or stalled)" : "");
        shown++;
    }
    for (const AdvisoryLock &l : h->lockers) {
        printf("  advisory %s lock: %s at %s, cookie '%s'%s%s\n",
               l.exclusive ? "exclusive" : "shared", l.client.c_str(), l.addr.c_str(),
               l.cookie.c_str(), l.tag.empty() ? "" : ", tag '",
               l.tag.empty() ? "" : (l.tag + "'").c_str());
        shown++;
    }
    for (const Watcher &w : h->watchers) {
        if ("client." + std::to_string(w.id) == me) continue;  // this look
        printf("  watcher: client.%lld at %s\n", (long long)w.id, w.addr.c_str());
        shown++;
    }
    if (!shown) printf("  no locks held, no other watchers\n");
    if (!do_break) return 0;

    int ret = 0, broken = 0;
    auto alive = [&](const std::string &addr) { return !h->client_at(addr).empty(); };
    for (const AdvisoryLock &l : h->lockers) {
        if (alive(l.addr)) {
            fprintf(stderr,
                    "%s: Refusing to break the advisory lock of %s at %s (cookie '%s'): it "
                    "still watches the image, so it is alive\n",
                    prog, l.client.c_str(), l.addr.c_str(), l.cookie.c_str());
            ret = 1;
            continue;
        }
        printf("breaking the advisory lock of %s at %s (cookie '%s'): it no longer watches "
               "the image; %s will be blocklisted, so it cannot write if it wakes up\n",
               l.client.c_str(), l.addr.c_str(), l.cookie.c_str(), l.client.c_str());
        int r = api().rbd_break_lock(img, l.client.c_str(), l.cookie.c_str());
        if (r < 0 && r != -ENOENT) {
            fprintf(stderr, "%s: Could not break the advisory lock of %s: %s\n", prog,
                    l.client.c_str(), strerror(-r));
            ret = 1;
            continue;
        }
        broken++;
    }
    for (const std::string &o : h->owners) {
        if (alive(o)) {
            fprintf(stderr,
                    "%s: Refusing to break the exclusive lock of %s at %s: it still watches "
                    "the image, so it is alive\n",
                    prog, h->client_at(o).c_str(), o.c_str());
            ret = 1;
            continue;
        }
        printf("breaking the exclusive lock of the client at %s: it no longer watches the "
               "image; it will be blocklisted, so it cannot write if it wakes up\n",
               o.c_str());
        int r = api().rbd_lock_break(img, RBD_LOCK_MODE_EXCLUSIVE, o.c_str());
        if (r < 0 && r != -ENOENT) {
            fprintf(stderr, "%s: Could not break the exclusive lock of %s: %s\n", prog, o.c_str(),
                    strerror(-r));
            ret = 1;
            continue;
        }
        broken++;
    }
    if (!broken && !ret) printf("nothing to break\n");
    return ret;
}

}  // namespace mb::rbd
