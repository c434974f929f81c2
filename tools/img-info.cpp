// miniblock-img info: qemu-img info's output, human and JSON.  The JSON has
// qemu-img 7.2's keys, types and nesting (tests/interop/img-info.sh compares
// them key for key); miniblock's extras are under "miniblock".
//
// As qemu-img, info opens the image without I/O on its data: a raw image is
// opened without locks, so info works next to a running writer; a format
// with metadata (qcow2) keeps writers out while its tables are read, as
// qemu-img does (it is refused next to a running writer).
#include <json-glib/json-glib.h>
#include <sys/stat.h>

#include <cinttypes>
#include <cstdio>
#include <string>
#include <vector>

#include "block/block_int.h"
#ifndef _WIN32  // /proc-based; Windows cannot name a lock's holder
#include "block/locking/holders.h"
#endif
#include "tools/img-commands.h"
#include "tools/img-common.h"
#include "tools/tool-common.h"

namespace mb::tools {

namespace {

// One node's facts, from the generic fields and the driver's get_info.
struct NodeInfo {
    std::string filename, format;
    int64_t vsize = -1, actual = -1, cluster_size = -1;
    std::string backing, full_backing, backing_fmt;
    bool dirty = false;
    // format-specific data (qcow2), typed as qemu-img's.
    std::vector<std::pair<std::string, std::string>> specific;
    std::vector<qcow2::SnapshotInfo> snapshots;  // internal snapshots (qcow2)
};

BlockDriverState *protocol_of(BlockDriverState *bs) {
    while (!bs->drv->is_protocol && bs->file()) bs = bs->file()->bs.get();
    return bs;
}

NodeInfo node_info(BlockDriverState *bs) {
    NodeInfo n;
    n.filename = bs->filename;
    n.format = bs->drv->format_name;
    n.vsize = bdrv_getlength(bs);
    BlockDriverState *proto = protocol_of(bs);
    n.actual = proto->drv->get_allocated_size ? proto->drv->get_allocated_size(proto) : -1;
    FormatInfo fi;
    if (bs->drv->get_info) bs->drv->get_info(bs, &fi);
    for (auto &[k, v] : fi.fields) {
        if (k == "cluster_size") n.cluster_size = std::stoll(v);
        else if (k == "backing file") n.backing = v;
        else if (k == "backing file format") n.backing_fmt = v;
        else if (k == "dirty") n.dirty = v == "true";
        else n.specific.emplace_back(k, v);
    }
    if (!n.backing.empty()) {
        // qemu-img's full-backing-filename: relative names are relative to
        // the overlay's directory.
        n.full_backing = n.backing;
        size_t slash = n.filename.rfind('/');
        if (n.backing[0] != '/' && slash != std::string::npos && n.filename.rfind("json:", 0) != 0)
            n.full_backing = n.filename.substr(0, slash + 1) + n.backing;
    }
    // An unreadable snapshot table is said, and info goes on without it.
    if (auto sn = qcow2_snapshot_list(bs); sn.ok()) n.snapshots = std::move(*sn);
    else print_error(img_prog, sn.status());
    // qemu-img names qcow2 v2's implicit properties too.
    if (n.format == "qcow2" && n.specific.size() == 1 && n.specific[0].second == "0.10") {
        n.specific.emplace_back("compression type", "zlib");
        n.specific.emplace_back("refcount bits", "16");
    }
    return n;
}

// "lazy refcounts" -> "lazy-refcounts"
std::string json_key(std::string k) {
    for (char &c : k)
        if (c == ' ') c = '-';
    return k;
}

void add_typed(JsonBuilder *b, const std::string &v) {
    if (v == "true" || v == "false") {
        json_builder_add_boolean_value(b, v == "true");
        return;
    }
    bool digits = !v.empty() && v.find_first_not_of("0123456789") == std::string::npos;
    if (digits && v.size() < 19) json_builder_add_int_value(b, std::stoll(v));
    else json_builder_add_string_value(b, v.c_str());
}

void add_holders(JsonBuilder *b, BlockDriverState *bs) {
    // miniblock's extra: who holds lock bytes on the image's file.
    json_builder_set_member_name(b, "miniblock");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "lock-holders");
    json_builder_begin_array(b);
#ifndef _WIN32  // Windows cannot name holders: the list stays empty there
    struct stat st;
    BlockDriverState *proto = protocol_of(bs);
    if (proto->drv->protocols == nullptr && stat(proto->filename.c_str(), &st) == 0) {
        for (auto &h : find_lock_holders(st.st_dev, st.st_ino)) add_lock_holder_json(b, h, false);
    }
#else
    (void)bs;
#endif
    json_builder_end_array(b);
    json_builder_end_object(b);
}

// qemu-img 7.2's key order.
void add_json(JsonBuilder *b, BlockDriverState *bs, const NodeInfo &n) {
    json_builder_begin_object(b);
    if (!n.backing_fmt.empty()) {
        json_builder_set_member_name(b, "backing-filename-format");
        json_builder_add_string_value(b, n.backing_fmt.c_str());
    }
    if (!n.snapshots.empty()) {
        json_builder_set_member_name(b, "snapshots");
        add_snapshots_json(b, n.snapshots);
    }
    json_builder_set_member_name(b, "virtual-size");
    json_builder_add_int_value(b, n.vsize);
    json_builder_set_member_name(b, "filename");
    json_builder_add_string_value(b, n.filename.c_str());
    if (n.cluster_size > 0) {
        json_builder_set_member_name(b, "cluster-size");
        json_builder_add_int_value(b, n.cluster_size);
    }
    json_builder_set_member_name(b, "format");
    json_builder_add_string_value(b, n.format.c_str());
    if (n.actual >= 0) {
        json_builder_set_member_name(b, "actual-size");
        json_builder_add_int_value(b, n.actual);
    }
    if (!n.specific.empty()) {
        json_builder_set_member_name(b, "format-specific");
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "type");
        json_builder_add_string_value(b, n.format.c_str());
        json_builder_set_member_name(b, "data");
        json_builder_begin_object(b);
        for (auto &[k, v] : n.specific) {
            json_builder_set_member_name(b, json_key(k).c_str());
            if (k == "compat" || k == "compression type") json_builder_add_string_value(b, v.c_str());
            else add_typed(b, v);
        }
        json_builder_end_object(b);
        json_builder_end_object(b);
    }
    if (!n.backing.empty()) {
        json_builder_set_member_name(b, "full-backing-filename");
        json_builder_add_string_value(b, n.full_backing.c_str());
        json_builder_set_member_name(b, "backing-filename");
        json_builder_add_string_value(b, n.backing.c_str());
    }
    json_builder_set_member_name(b, "dirty-flag");
    json_builder_add_boolean_value(b, n.dirty);
    add_holders(b, bs);
    json_builder_end_object(b);
}

void print_human(const NodeInfo &n) {
    printf("image: %s\n", n.filename.c_str());
    printf("file format: %s\n", n.format.c_str());
    printf("virtual size: %s (%" PRId64 " bytes)\n", human_size(n.vsize).c_str(), n.vsize);
    if (n.actual >= 0) printf("disk size: %s\n", human_size(n.actual).c_str());
    if (n.cluster_size > 0) printf("cluster_size: %" PRId64 "\n", n.cluster_size);
    if (!n.backing.empty()) {
        printf("backing file: %s", n.backing.c_str());
        if (n.full_backing != n.backing) printf(" (actual path: %s)", n.full_backing.c_str());
        printf("\n");
    }
    if (!n.backing_fmt.empty()) printf("backing file format: %s\n", n.backing_fmt.c_str());
    if (n.dirty) printf("cleanly shut down: no\n");
    print_snapshot_list(n.snapshots);
    if (!n.specific.empty()) {
        printf("Format specific information:\n");
        for (auto &[k, v] : n.specific) printf("    %s: %s\n", k.c_str(), v.c_str());
    }
}

}  // namespace

int cmd_info(int argc, char **argv) {
    ImgCommon common;
    common.flags.read_only = true;
    bool chain = false;
    if (auto st = img_parse_options(argc, argv,
                                    {.name = "info",
                                     .common = IMG_OPEN | IMG_FORMAT_LONG | IMG_OUTPUT,
                                     .own = {img_flag(0, "backing-chain", &chain)}},
                                    &common))
        return *st;
    const ImageFlags &flags = common.flags;
    const bool json = common.json;
    if (argc - optind != 1) return img_bad_usage("info needs exactly one FILE");
    std::string image = argv[optind];
    // Without I/O on the data, as qemu-img: first without locks; a format
    // with metadata is then opened again with the default lock, which keeps
    // writers out while its tables are read (qemu-img's rule too).  An
    // explicit lock mode (-U, lock= in --image-opts) is used as given.
    auto blk = open_image(image, [&] {
        ImageFlags f = flags;
        if (!f.force_share && f.lock.empty() && !f.image_opts) f.lock = "off";
        return f;
    }());
    if (blk.ok() && !flags.force_share && !flags.image_opts && !(*blk)->bs()->drv->sharable_writes) {
        blk->reset();
        blk = open_image(image, flags);
    }
    if (!blk.ok()) return img_fail(Status(blk.status()).prefix("Could not open '" + qapi::shown_name(image) + "'"));
    JsonBuilder *b = json ? json_builder_new() : nullptr;
    if (b && chain) json_builder_begin_array(b);
    for (BlockDriverState *bs = (*blk)->bs(); bs; bs = chain && bs->backing() ? bs->backing()->bs.get() : nullptr) {
        NodeInfo n = node_info(bs);
        if (b) {
            add_json(b, bs, n);
            continue;
        }
        if (bs != (*blk)->bs()) printf("\n");
        print_human(n);
    }
    if (b) {
        if (chain) json_builder_end_array(b);
        print_json(b);
        g_object_unref(b);
    }
    return 0;
}

}  // namespace mb::tools
