// miniblock-img measure: how many host bytes a new image would need, with
// qemu-img 7.2's arithmetic and output (tests/interop/img-commands.sh
// compares the JSON key for key).  The qcow2 sizes follow the on-disk
// format's own layout: one header cluster, L2 tables for every cluster, an
// L1 table for the L2 tables, and refcount blocks and table for all of it.
#include <json-glib/json-glib.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <string>

#include "block/aio.h"
#include "block/block_int.h"
#include "tools/img-commands.h"
#include "tools/img-common.h"
#include "tools/tool-common.h"

namespace mb::tools {

namespace {

int64_t div_round_up(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return div_round_up(a, b) * b; }

// Refcount blocks and table covering `clusters` clusters and themselves.
int64_t refcount_metadata_size(int64_t clusters, int64_t cluster_size, int refcount_order) {
    const int64_t per_table_cluster = cluster_size / 8;
    const int64_t per_block = cluster_size * 8 / (1 << refcount_order);
    int64_t table = 0, blocks = 0, n = 0, last;
    do {
        last = n;
        blocks = div_round_up(clusters + table + blocks, per_block);
        table = div_round_up(blocks, per_table_cluster);
        n = clusters + blocks + table;
    } while (n != last);
    return (blocks + table) * cluster_size;
}

// Every cluster written, metadata included.
int64_t qcow2_fully_allocated(int64_t size, int64_t cluster_size, int refcount_order) {
    int64_t aligned = round_up(size, cluster_size);
    int64_t meta = cluster_size;  // header
    int64_t nl2e = round_up(aligned / cluster_size, cluster_size / 8);
    meta += nl2e * 8;
    int64_t nl1e = round_up(nl2e * 8 / cluster_size, cluster_size / 8);
    meta += nl1e * 8;
    meta += refcount_metadata_size((meta + aligned) / cluster_size, cluster_size, refcount_order);
    return meta + aligned;
}

// Bytes of data clusters the source really has (not zero, not a hole in
// every layer), each rounded to whole target clusters, as qemu-img counts.
Result<int64_t> data_bytes(BlockDriverState *top, int64_t len, int64_t cluster_size) {
    int64_t required = 0;
    std::vector<uint8_t> buf;
    for (int64_t off = 0; off < len;) {
        int64_t pnum = len - off;
        int status = 0;  // 0: a hole through every layer
        for (BlockDriverState *bs = top; bs; bs = bs->backing() ? bs->backing()->bs.get() : nullptr) {
            int64_t blen = bdrv_getlength(bs);
            if (blen < 0) return PosixError("Could not get the size of '" + bs->filename + "'", (int)-blen);
            if (off >= blen) break;
            int64_t p = std::min(pnum, blen - off), map = 0;
            BlockDriverState *file = nullptr;
            int r = BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
            if (bs->drv->co_block_status) r = sync_wait(bs->drv->co_block_status(bs, off, p, &p, &map, &file));
            if (r < 0) return PosixError("Could not inspect '" + bs->filename + "'", -r);
            if (p <= 0) return PosixError("Could not inspect '" + bs->filename + "'", EIO);
            pnum = p;
            if (r & BDRV_BLOCK_ALLOCATED) {
                status = r;
                break;
            }
        }
        if (!(status & BDRV_BLOCK_ZERO) && (status & BDRV_BLOCK_DATA)) {
            pnum = round_up(off + pnum, cluster_size) - off;
            required += off % cluster_size + pnum;
        }
        off += pnum;
    }
    return required;
}

}  // namespace

int cmd_measure(int argc, char **argv) {
    ImgCommon common;
    common.flags.read_only = true;
    std::string out_fmt = "raw";
    std::optional<int64_t> size;
    auto take_size = [&size](const char *arg) {
        size = parse_number(arg);
        if (!size || *size < 0) return img_fail(Status::Error(EINVAL, "Invalid image size specified"));
        return 0;
    };
    if (auto st = img_parse_options(argc, argv,
                                    {.name = "measure",
                                     .common = IMG_OPEN | IMG_OPTIONS | IMG_OUTPUT,
                                     .own = {img_value('O', nullptr, &out_fmt), {0, "size", required_argument, take_size}}},
                                    &common))
        return *st;
    const ImageFlags &flags = common.flags;
    const bool json = common.json;
    const std::string &o = common.options;
    int nargs = argc - optind;
    if (size && nargs) return img_fail(Status::Error(EINVAL, "--size N cannot be used together with a filename"));
    if (!size && nargs != 1) return img_fail(Status::Error(EINVAL, "Either --size N or one filename must be specified"));
    if (out_fmt != "raw" && out_fmt != "qcow2")
        return img_fail(Status::Error(ENOTSUP, "Format driver '" + out_fmt + "' does not support size measurement"));
    int64_t cluster_size = 65536;
    int refcount_order = 4;
    bool v3 = true;
    if (!o.empty()) {
        auto r = qapi::parse_keyval_options(o);
        if (!r.ok()) return img_fail(r.status());
        for (auto &k : r->keys()) {
            std::string v = r->get_text(k).value_or("");
            if (out_fmt == "qcow2" && k == "cluster_size") {
                auto n = parse_number(v);
                if (!n || *n < 512 || *n > (2 << 20) || (*n & (*n - 1)))
                    return img_fail(Status::Error(EINVAL, "Cluster size must be a power of two between 512 and 2048k"));
                cluster_size = *n;
            } else if (out_fmt == "qcow2" && k == "refcount_bits") {
                auto n = parse_number(v);
                if (!n || *n < 1 || *n > 64 || (*n & (*n - 1)))
                    return img_fail(Status::Error(EINVAL, "Refcount width must be a power of two and may not exceed 64 bits"));
                refcount_order = __builtin_ctzll(*n);
            } else if (out_fmt == "qcow2" && k == "compat") {
                if (v != "0.10" && v != "v2" && v != "1.1" && v != "v3")
                    return img_fail(Status::Error(EINVAL, "Invalid parameter '" + qapi::shown_name(v) + "'"));
                v3 = v == "1.1" || v == "v3";
            } else {
                return img_fail(Status::Error(EINVAL, "Invalid parameter '" + qapi::shown_name(k) + "'",
                                              "Driver '" + out_fmt + "' has no such creation option"));
            }
        }
    }
    int64_t virtual_size = 0, required = 0;
    bool bitmaps = false;
    std::unique_ptr<BlockBackend> src;
    if (!size) {
        auto b = open_image(argv[optind], flags);
        if (!b.ok()) return img_fail(Status(b.status()).prefix("Could not open '" + qapi::shown_name(argv[optind]) + "'"));
        src = std::move(*b);
        virtual_size = src->length();
        if (virtual_size < 0) return img_fail(PosixError("Could not get the image size", (int)-virtual_size));
        // qemu-img names persistent bitmaps (none here) when both ends can hold them.
        bitmaps = out_fmt == "qcow2" && v3 && !strcmp(src->bs()->drv->format_name, "qcow2");
    } else {
        virtual_size = *size;
    }
    int64_t fully;
    if (out_fmt == "raw") {
        fully = required = size ? round_up(virtual_size, 512) : virtual_size;
    } else {
        virtual_size = round_up(virtual_size, cluster_size);
        if (src) {
            auto d = data_bytes(src->bs(), src->length(), cluster_size);
            if (!d.ok()) return img_fail(d.status());
            required = *d;
        }
        fully = qcow2_fully_allocated(virtual_size, cluster_size, refcount_order);
        required = fully - virtual_size + required;
    }
    if (json) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        if (bitmaps) {
            json_builder_set_member_name(b, "bitmaps");
            json_builder_add_int_value(b, 0);
        }
        json_builder_set_member_name(b, "required");
        json_builder_add_int_value(b, required);
        json_builder_set_member_name(b, "fully-allocated");
        json_builder_add_int_value(b, fully);
        json_builder_end_object(b);
        print_json(b);
        g_object_unref(b);
    } else {
        printf("required size: %" PRId64 "\nfully allocated size: %" PRId64 "\n", required, fully);
        if (bitmaps) printf("bitmaps size: 0\n");
    }
    return 0;
}

}  // namespace mb::tools
