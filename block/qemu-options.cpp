// QEMU's -blockdev vocabulary beside miniblock's own (docs/options.md,
// "QEMU's option names").  The schema accepts both spellings; this file
// turns QEMU's keys of one node into miniblock's settings once, right after
// validation, so that the rest of the block layer knows one vocabulary.  A
// QEMU key and a miniblock key that say different things about the same
// setting are an error, never a silent override.
#include <unistd.h>
#include <fcntl.h>
#ifdef _WIN32
#include <glib/gstdio.h>
#endif

#include <cerrno>

#include "block/block_int.h"

namespace mb {

using qapi::OptionDict;

namespace {

Status conflict(std::string_view pfx, const std::string &a, const std::string &b,
                std::string hint) {
    return Status::Error(EINVAL,
                         "Parameter '" + option_path_join(pfx, a) + "' conflicts with '" +
                             option_path_join(pfx, b) + "'",
                         std::move(hint));
}

// cache.direct / cache.no-flush -> a cache mode.
Status translate_cache(OptionDict &opts, std::string_view pfx) {
    const OptionDict *c = opts.dict("cache");
    if (!c) return Status::OK();
    bool direct = c->get_bool("direct").value_or(false);
    bool no_flush = c->get_bool("no-flush").value_or(false);
    if (direct && no_flush) {
        return Status::Error(EINVAL,
                             "'" + option_path_join(pfx, "cache.direct") + "=on' with '" +
                                 option_path_join(pfx, "cache.no-flush") +
                                 "=on' has no miniblock cache mode",
                             "Use cache.direct=on (cache=none) or cache.no-flush=on (cache=unsafe)");
    }
    opts.set_str("cache", direct ? "none" : no_flush ? "unsafe" : "writeback");
    return Status::OK();
}

}  // namespace

Status bdrv_translate_qemu_options(OptionDict &opts, const InheritedOptions &inh,
                                   std::string_view pfx, int *flags) {
    MB_TRY(translate_cache(opts, pfx));
    const bool read_only = opts.get_bool("read-only").value_or(inh.read_only);
    auto lock = opts.get_str("lock");

    // force-share=on: QEMU's rule first (its text), then our spelling.
    if (opts.get_bool("force-share").value_or(false)) {
        if (!read_only) {
            return Status::Error(EINVAL, "force-share=on can only be used with read-only images");
        }
        if (lock && *lock != "shared") {
            return conflict(pfx, "lock=" + *lock, "force-share=on",
                            "force-share=on is lock=shared; give one of them");
        }
        opts.set_str("lock", "shared");
    }

    // locking (file nodes): off takes no locks on this file only; a
    // backing chain is other nodes and stays locked, as in QEMU.
    if (auto l = opts.get_str("locking")) {
        if (*l == "off") {
            if (lock && *lock != "off") {
                return conflict(pfx, "lock=" + *lock, "locking=off",
                                "locking=off is lock=off; give one of them");
            }
            opts.set_str("lock", "off");
        } else if (lock && *lock == "off") {
            return conflict(pfx, "lock=off", "locking=" + *l,
                            "locking=" + *l + " takes locks; give one of them");
        }
    }

    // auto-read-only: a protocol node without write access opens read-only
    // (QEMU's file-posix falls back on EACCES and EROFS the same way).
    if (opts.get_bool("auto-read-only").value_or(false) && !read_only) {
        if (auto fn = opts.get_str("filename"); fn && opts.get_str("driver") == "file") {
#ifdef _WIN32
            if (g_access(fn->c_str(), W_OK) < 0 &&
#else
            if (faccessat(AT_FDCWD, fn->c_str(), W_OK, AT_EACCESS) < 0 &&
#endif
                (errno == EACCES || errno == EROFS || errno == EPERM)) {
                opts.set_bool("read-only", true);
            }
        }
    }

    // discard / detect-zeroes: request flags of this node.
    bool unmap = opts.get_str("discard").value_or("unmap") == "unmap";
    if (!unmap) *flags |= BDRV_O_DISCARD_IGNORE;
    auto dz = opts.get_str("detect-zeroes").value_or("off");
    if (dz == "unmap" && !unmap) {
        // QEMU's text; miniblock's default (unmap) satisfies it.
        return Status::Error(EINVAL, "setting detect-zeroes to unmap is not allowed without "
                                     "setting discard operation to unmap");
    }
    if (dz != "off") *flags |= BDRV_O_DETECT_ZEROES;
    if (dz == "unmap") *flags |= BDRV_O_DETECT_ZEROES_UNMAP;
    return Status::OK();
}

}  // namespace mb
