// Loading librados and librbd on first use: see rbd-lib.h for why.
#include "block/drivers/rbd-lib.h"

#include <dlfcn.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace mb::rbd {

namespace {

// The sonames Debian's librados2 and librbd1 ship (and QEMU's block-rbd.so
// links against): an ABI break would change them.
constexpr const char *kRadosSoname = "librados.so.2";
constexpr const char *kRbdSoname = "librbd.so.1";

Status load_error(const char *soname, const std::string &what) {
    return Status::Error(ELIBACC,
                         std::string("Could not load ") + soname + " (needed by the rbd driver): " + what,
                         "Install Ceph's client libraries (Debian: librbd1 and librados2)");
}

// Opens one library: RTLD_LOCAL keeps Ceph's many symbols out of the global
// namespace (where a module's own could bind to them); RTLD_NOW finds a
// broken installation here rather than at some later call.
Status open_lib(const char *soname, void **handle) {
    *handle = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (!*handle) {
        const char *e = dlerror();
        return load_error(soname, e ? e : "dlopen failed without saying why");
    }
    return Status::OK();
}

Status resolve(void *h, const char *soname, const char *name, void **out) {
    dlerror();  // clear an earlier error: the text below is this call's
    *out = dlsym(h, name);
    if (!*out) {
        // NULL without an error would be a symbol whose value is 0: no
        // function to call either.
        const char *e = dlerror();
        return load_error(soname, e ? std::string(e) : std::string(name) + ": resolves to NULL");
    }
    return Status::OK();
}

struct Handle {
    const char *soname;
    void *h = nullptr;
};

Status load_now(Lib *lib) {
    // Named as MB_RBD_FUNCTIONS names the library of each function.
    Handle rados{kRadosSoname}, rbd{kRbdSoname};
    // librados first: librbd needs it (DT_NEEDED) and a broken librados
    // should be named as such, not as librbd's failure.
    MB_TRY(open_lib(rados.soname, &rados.h));
    MB_TRY(open_lib(rbd.soname, &rbd.h));
    // The handles stay open for the life of the process, failure or not:
    // Ceph's libraries start threads and do not support being unloaded, as
    // QEMU never unloads a module.
#define MB_RBD_RESOLVE(l, name)                                 \
    {                                                           \
        void *p;                                                \
        MB_TRY(resolve(l.h, l.soname, #name, &p));              \
        lib->name = reinterpret_cast<decltype(&::name)>(p);     \
    }
    MB_RBD_FUNCTIONS(MB_RBD_RESOLVE)
#undef MB_RBD_RESOLVE
    return Status::OK();
}

struct Loaded {
    Lib lib;
    Status status;
};

const Loaded &loaded() {
    // A function-local static: initialised once, thread-safe (C++11), and
    // only from a complete table; on failure the table stays all null and
    // is never handed out.
    static const Loaded l = [] {
        Loaded x;
        Lib tmp;
        x.status = load_now(&tmp);
        if (x.status.ok()) x.lib = tmp;
        return x;
    }();
    return l;
}

}  // namespace

Status load() { return loaded().status; }

const Lib &api() {
    const Loaded &l = loaded();
    if (!l.status.ok()) {
        // Unreachable: every caller has a connection, made after load().
        fprintf(stderr, "rbd: librbd used before it was loaded: %s\n", l.status.message().c_str());
        abort();
    }
    return l.lib;
}

}  // namespace mb::rbd
