// miniblock-img amend: qemu-img amend's options and texts for qcow2
// (compat, lazy_refcounts, refcount_bits, size).  The image is opened
// read-write (writers elsewhere keep it out, as qemu-img's write lock does);
// size goes through the resize permission as resize does.

#include <cstdio>
#include <cstring>
#include <string>

#include "block/drivers/qcow2.h"
#include "tools/img-commands.h"
#include "tools/img-common.h"
#include "tools/tool-common.h"

namespace mb::tools {

namespace {

// -o help: qemu-img 7.2's list, as far as miniblock amends.
void print_amend_options(FILE *out) {
    fprintf(out,
            "Amend options for 'qcow2':\n"
            "  compat=<str>           - Compatibility level (v2 [0.10] or v3 [1.1])\n"
            "  lazy_refcounts=<bool (on/off)> - Postpone refcount updates\n"
            "  refcount_bits=<num>    - Width of a reference count entry in bits\n"
            "  size=<size>            - Virtual disk size\n");
}

// What only creation takes (qemu-img's creation-only options).
bool creation_only(const std::string &k) {
    static const char *const names[] = {"cluster_size", "preallocation", "extended_l2", "compression_type",
                                        "encryption",   "nocow",         "extent_size_hint"};
    for (const char *n : names)
        if (k == n) return true;
    return false;
}

}  // namespace

int cmd_amend(int argc, char **argv) {
    ImgCommon common;
    // -q and -p are accepted, as qemu-img's: amend prints nothing but errors.
    if (auto st = img_parse_options(argc, argv,
                                    {.name = "amend",
                                     .common = IMG_FORMAT | IMG_IMAGE_OPTS | IMG_CACHE | IMG_QUIET | IMG_OPTIONS,
                                     .own = {img_ignored('p')}},
                                    &common))
        return *st;
    const ImageFlags &flags = common.flags;
    const std::string &o = common.options;
    if (o == "help" || o == "?") {
        print_amend_options(stdout);
        return 0;
    }
    if (o.empty()) return img_bad_usage("Must specify options (-o)");
    if (argc - optind != 1) return img_bad_usage("amend needs exactly one FILE");
    auto parsed = qapi::parse_keyval_options(o);
    if (!parsed.ok()) return img_fail(parsed.status());
    qcow2::AmendOptions ao;
    std::optional<int64_t> size;
    for (const std::string &k : parsed->keys()) {
        std::string v = parsed->get_text(k).value_or("");
        if (k == "compat") {
            if (v == "0.10" || v == "v2") ao.version = 2;
            else if (v == "1.1" || v == "v3") ao.version = 3;
            else return img_fail(Status::Error(EINVAL, "Unknown compatibility level " + qapi::shown_name(v)));
        } else if (k == "lazy_refcounts") {
            if (v != "on" && v != "off") return img_fail(Status::Error(EINVAL, "Parameter 'lazy_refcounts' expects 'on' or 'off'"));
            ao.lazy_refcounts = v == "on";
        } else if (k == "refcount_bits") {
            auto n = qapi::parse_size(v);
            if (!n || *n < 1 || *n > 64 || (*n & (*n - 1)))
                return img_fail(Status::Error(EINVAL, "Refcount width must be a power of two and may not exceed 64 bits"));
            ao.refcount_order = __builtin_ctzll(*n);
        } else if (k == "size") {
            size = qapi::parse_size(v);
            if (!size || *size < 0) {
                return img_fail(Status::Error(EINVAL, "Parameter 'size' expects a non-negative number below 2^64",
                                              "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
                                              "and exabytes, respectively."));
            }
        } else if (k == "backing_file" || k == "backing_fmt") {
            return img_fail(Status::Error(ENOTSUP, "Cannot amend the backing file",
                                          "You can use 'miniblock-img rebase' instead."));
        } else if (creation_only(k)) {
            return img_fail(Status::Error(EINVAL, "Invalid parameter '" + qapi::shown_name(k) + "'",
                                          "This option is only supported for image creation"));
        } else {
            return img_fail(Status::Error(EINVAL, "Invalid parameter '" + qapi::shown_name(k) + "'"));
        }
    }
    std::string image = argv[optind];
    auto blk = open_image(image, flags);
    if (!blk.ok()) return img_fail(Status(blk.status()).prefix("Could not open '" + qapi::shown_name(image) + "'"));
    BlockDriverState *bs = (*blk)->bs();
    if (strcmp(bs->drv->format_name, "qcow2") != 0) {
        return img_fail(Status::Error(ENOTSUP, std::string("Format driver '") + bs->drv->format_name +
                                                   "' does not support option amendment"));
    }
    if (size && *size % 512) return img_fail(Status::Error(EINVAL, "The new size must be a multiple of 512"));
    // As QEMU: the size changes after an upgrade and before a downgrade.
    const bool downgrade = ao.version && *ao.version < int(bs->state<qcow2::State>()->h().version);
    auto resize = [&]() -> Status {
        if (!size || *size == (*blk)->length()) return Status::OK();
        auto r = truncate_with_resize_perm(**blk, *size);
        return r.ok() ? Status::OK() : r.status();
    };
    if (downgrade) {
        if (Status st = resize(); !st.ok()) return img_fail(st);
    }
    if (Status st = qcow2::amend(bs, ao); !st.ok()) return img_fail(st);
    if (!downgrade) {
        if (Status st = resize(); !st.ok()) return img_fail(st);
    }
    if ((*blk)->flush() < 0) return img_fail(Status::Error(EIO, "Could not flush '" + image + "'"));
    return 0;
}

}  // namespace mb::tools
