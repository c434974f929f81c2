#include "tools/tool-common.h"

#include <cerrno>
#include <fcntl.h>
#include <unistd.h>
#ifdef _WIN32
#include <glib.h>  // g_mkstemp, g_get_tmp_dir
#endif

#include <cinttypes>
#include <cstdio>
#include <cstdlib>

#include "block/block_int.h"

namespace mb::tools {

namespace {

// Whether the top node's options set a lock mode -U would contradict:
// lock= anything but shared, or QEMU's force-share=off.
bool image_options_conflict_with_share(const qapi::OptionDict &opts) {
    if (auto l = opts.get_str("lock"); l && *l != "shared") return true;
    if (auto f = opts.get_str("force-share"); f && (*f == "off" || *f == "false")) return true;
    if (auto f = opts.get_bool("force-share"); f && !*f) return true;
    return false;
}

}  // namespace

Result<qapi::OptionDict> image_options(std::string_view image, const ImageFlags &flags) {
    qapi::OptionDict opts;
    if (flags.image_opts) {
        auto r = qapi::parse_keyval_options(image);
        if (!r.ok()) return r.take_status();
        opts = std::move(*r);
    } else {
        // A plain filename, never parsed as options (it may contain commas),
        // except json: pseudo-filenames, which qemu-img accepts too.
        if (image.substr(0, 5) == "json:") {
            auto r = qapi::parse_drive_options(image);
            if (!r.ok()) return r.take_status();
            opts = std::move(*r);
        } else {
            qapi::OptionDict file;
            file.set_str("filename", std::string(image));
            opts.set_dict("file", file);
        }
        if (!flags.format.empty()) opts.set_str("driver", flags.format);
    }
    if (flags.read_only) opts.set_str("read-only", "on");
    if (!flags.cache.empty()) opts.set_str("cache", flags.cache);
    if (!flags.aio.empty()) {
        if (qapi::OptionDict *f = opts.dict("file")) f->set_str("aio", flags.aio);
        else opts.set_str("aio", flags.aio);
    }
    if (!flags.lock.empty()) opts.set_str("lock", flags.lock);
    if (flags.inactive) opts.set_str("inactive", "on");
    if (flags.force_share) {
        if (!flags.lock.empty() && flags.lock != "shared") {
            return Status::Error(EINVAL, "-U (force-share) conflicts with --lock=" + flags.lock);
        }
        // An explicit lock mode in the image's own options other than the
        // one -U means is a contradiction, not something -U may override
        // silently (qemu-img's rule and text, for its force-share=off).
        if (flags.lock.empty() && image_options_conflict_with_share(opts)) {
            return Status::Error(EINVAL, "--force-share/-U conflicts with image options");
        }
        opts.set_str("lock", "shared");
    }
    return opts;
}

namespace {

Result<std::unique_ptr<BlockBackend>> open_snapshot(std::string_view image, ImageFlags flags) {
    flags.snapshot = false;
    flags.read_only = false;  // a backing file is read-only anyway
    auto img = image_options(image, flags);
    if (!img.ok()) return img.take_status();
    qapi::OptionDict img_opts = *img;
    img_opts.erase("read-only");
    int64_t size;
    {
        // The overlay's size is the image's: learn it without taking a lock.
        qapi::OptionDict probe = img_opts;
        probe.set_str("lock", "off");
        probe.set_str("read-only", "on");
        auto blk = BlockBackend::open(probe);
        if (!blk.ok()) return blk.take_status();
        size = (*blk)->length();
        if (size < 0) return PosixError("Could not get the size of '" + std::string(image) + "'", (int)-size);
    }
    // qcow2 sizes are whole sectors: as QEMU's -snapshot, the overlay is
    // rounded up (its tail beyond the image reads as zeroes).
    size = (size + 511) & ~int64_t(511);
#ifdef _WIN32
    std::string tmpl = std::string(g_get_tmp_dir()) + "\\miniblock-snapshot.XXXXXX";
    int fd = g_mkstemp(tmpl.data());
#else
    const char *dir = getenv("TMPDIR");
    std::string tmpl = std::string(dir && *dir ? dir : "/tmp") + "/miniblock-snapshot.XXXXXX";
    int fd = mkostemp(tmpl.data(), O_CLOEXEC);
#endif
    if (fd < 0) return PosixError("Could not create a temporary overlay in '" + tmpl + "'", errno);
    close(fd);
    Status st = bdrv_create("qcow2", tmpl, size, {});
    if (!st.ok()) {
        unlink(tmpl.c_str());
        return st.prefix("Could not create the temporary overlay");
    }
    qapi::OptionDict file, top;
    file.set_str("driver", "file");
    file.set_str("filename", tmpl);
    top.set_str("driver", "qcow2");
    top.set_dict("file", file);
    // The overlay is a private file: nobody else has any business with it.
    top.set_str("lock", "exclusive");
    if (!flags.cache.empty()) top.set_str("cache", flags.cache);
    top.set_dict("backing", img_opts);
    auto blk = BlockBackend::open(top);
    // Deleted at once: the open fd keeps it alive until the drive closes
    // (on Windows too: the file driver's handle allows FILE_SHARE_DELETE).
    unlink(tmpl.c_str());
    return blk;
}

}  // namespace

Result<std::unique_ptr<BlockBackend>> open_image(std::string_view image, const ImageFlags &flags) {
    if (flags.snapshot) return open_snapshot(image, flags);
    auto opts = image_options(image, flags);
    if (!opts.ok()) return opts.take_status();
    return BlockBackend::open(*opts);
}

std::optional<int64_t> parse_number(std::string_view s) {
    if (auto r = qapi::parse_size(s)) return *r;
    // qemu-img's decimal sizes: "1.5M" (a fraction needs a suffix; the
    // result is truncated to whole bytes).
    size_t dot = s.find('.');
    if (dot == std::string_view::npos || s.size() < 3) return std::nullopt;
    char suffix = s.back();
    auto unit = qapi::parse_size(std::string("1") + suffix);
    if (!unit || *unit == 1) return std::nullopt;
    std::string_view whole = s.substr(0, dot), frac = s.substr(dot + 1, s.size() - dot - 2);
    if (frac.empty() || frac.size() > 12 || frac.find_first_not_of("0123456789") != std::string_view::npos)
        return std::nullopt;
    auto w = whole.empty() ? std::optional<int64_t>(0) : qapi::parse_size(whole);
    if (!w || whole.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
    if (*w > INT64_MAX / *unit) return std::nullopt;
    int64_t f = 0, scale = 1;
    for (char c : frac) f = f * 10 + (c - '0'), scale *= 10;
    // unit * f / scale without overflow: unit is a power of 1024, f < 10^12.
    long double part = (long double)*unit * f / scale;
    if ((long double)(*w * *unit) + part > (long double)INT64_MAX) return std::nullopt;
    return *w * *unit + (int64_t)part;
}

Result<int64_t> truncate_with_resize_perm(BlockBackend &blk, int64_t size) {
    if (blk.read_only()) return Status::Error(EPERM, "The image is read-only");
    BdrvChild *root = blk.root();
    const PermPair old = root->perm;
    if (!(old.perm & BLK_PERM_RESIZE)) {
        // Resizing is a permission like writing: others may forbid it, and
        // the transaction names them with every lock as before.
        MB_TRY(bdrv_child_try_set_perm(root, {old.perm | BLK_PERM_RESIZE, old.shared}));
    }
    int r = blk.truncate(size);
    Status back = bdrv_child_try_set_perm(root, old);  // gives it back: releases only
    (void)back;
    if (r < 0) return PosixError("Could not resize the image", -r);
    return blk.length();
}

std::string human_size(int64_t bytes) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = static_cast<double>(bytes);
    int u = 0;
    while (v >= 1024 && u < 6) {
        v /= 1024;
        u++;
    }
    char buf[64];
    if (u == 0) snprintf(buf, sizeof(buf), "%" PRId64 " B", bytes);
    else if (v == static_cast<int64_t>(v)) snprintf(buf, sizeof(buf), "%" PRId64 " %s", static_cast<int64_t>(v), units[u]);
    else snprintf(buf, sizeof(buf), "%.3g %s", v, units[u]);
    return buf;
}

#ifndef MINIBLOCK_VERSION
#define MINIBLOCK_VERSION "unknown"
#endif

void print_version(const char *prog) {
    printf("%s version " MINIBLOCK_VERSION "\n"
           "miniblock: a QEMU-style block layer that locks images correctly\n", prog);
}

void print_error(const char *prog, const Status &st) {
    fprintf(stderr, "%s: %s\n", prog, st.to_string().c_str());
}

std::string protocol_filename(const BlockBackend &blk) {
    BlockDriverState *bs = blk.bs();
    while (bs && !bs->drv->is_protocol && bs->file()) bs = bs->file()->bs.get();
    return bs ? bs->filename : std::string();
}

}  // namespace mb::tools
