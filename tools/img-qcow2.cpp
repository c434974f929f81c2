// miniblock-img check and map (registered in miniblock-img.cpp's
// command map; their help is in tools/img-commands.h).
#include <json-glib/json-glib.h>

#include <cinttypes>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "block/aio.h"
#include "block/block_int.h"
#include "block/drivers/qcow2.h"
#include "tools/img-commands.h"
#include "tools/img-common.h"
#include "tools/tool-common.h"

namespace mb::tools {

namespace {

// --- check -------------------------------------------------------------------

void print_check(const qcow2::CheckResult &r, const std::string &file, bool json, bool repaired,
                 const qcow2::CheckResult *first) {
    if (json) {
        // qemu-img's spacing and its key order, which is that of QEMU's
        // QDict hash table (bucket order of its tdb-style hash, 512
        // buckets); zero counts left out as it does.
        std::vector<std::pair<const char *, std::string>> v;
        auto num = [&](const char *k, int64_t x, bool always) {
            if (x || always) v.emplace_back(k, std::to_string(x));
        };
        num("image-end-offset", r.image_end_offset, false);
        num("total-clusters", r.total_clusters, false);
        num("corruptions", r.corruptions, false);
        num("check-errors", r.check_errors, true);
        num("leaks", r.leaks, false);
        if (repaired && first) {
            num("corruptions-fixed", first->corruptions_fixed, false);
            num("leaks-fixed", first->leaks_fixed, false);
        }
        num("allocated-clusters", r.allocated_clusters, false);
        num("fragmented-clusters", r.fragmented_clusters, false);
        num("compressed-clusters", r.compressed_clusters, false);
        JsonNode *fn = json_node_new(JSON_NODE_VALUE);
        json_node_set_string(fn, file.c_str());
        gchar *fs = json_to_string(fn, FALSE);
        v.emplace_back("filename", fs);
        v.emplace_back("format", "\"qcow2\"");
        g_free(fs);
        json_node_unref(fn);
        auto bucket = [](const char *k) {
            uint32_t h = 0x238F13AFu * uint32_t(strlen(k));
            for (size_t i = 0; k[i]; i++) h += uint32_t(uint8_t(k[i])) << (i * 5 % 24);
            return (1103515243u * h + 12345u) % 512;
        };
        std::stable_sort(v.begin(), v.end(), [&](auto &a, auto &b) { return bucket(a.first) < bucket(b.first); });
        printf("{\n");
        for (size_t i = 0; i < v.size(); i++)
            printf("    \"%s\": %s%s\n", v[i].first, v[i].second.c_str(), i + 1 < v.size() ? "," : "");
        printf("}\n");
        return;
    }
    if (repaired && first && (first->leaks_fixed || first->corruptions_fixed)) {
        printf("The following inconsistencies were found and repaired:\n\n"
               "    %" PRId64 " leaked clusters\n    %" PRId64 " corruptions\n\n"
               "Double checking the fixed image now...\n",
               first->leaks_fixed, first->corruptions_fixed);
    }
    if (!r.corruptions && !r.leaks && !r.check_errors) printf("No errors were found on the image.\n");
    if (r.corruptions) {
        printf("\n%" PRId64 " errors were found on the image.\n"
               "Data may be corrupted, or further writes to the image may corrupt it.\n",
               r.corruptions);
    }
    if (r.leaks) {
        printf("\n%" PRId64 " leaked clusters were found on the image.\n"
               "This means waste of disk space, but no harm to data.\n",
               r.leaks);
    }
    if (r.check_errors) printf("\n%" PRId64 " internal errors have occurred during the check.\n", r.check_errors);
    if (r.total_clusters && r.allocated_clusters) {
        printf("%" PRId64 "/%" PRId64 " = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
               r.allocated_clusters, r.total_clusters, r.allocated_clusters * 100.0 / r.total_clusters,
               r.fragmented_clusters * 100.0 / r.allocated_clusters,
               r.compressed_clusters * 100.0 / r.allocated_clusters);
    }
    if (r.image_end_offset) printf("Image end offset: %" PRId64 "\n", r.image_end_offset);
}

}  // namespace

// --- map -----------------------------------------------------------------------

Task<int> chain_status(BlockDriverState *bs, int64_t off, int64_t bytes, MapEntry *e) {
    int depth = 0;
    for (;;) {
        int64_t pnum = bytes, map = 0;
        BlockDriverState *file = nullptr;
        int ret;
        if (bs->drv->co_block_status) {
            ret = co_await bs->drv->co_block_status(bs, off, bytes, &pnum, &map, &file);
            if (ret < 0) co_return ret;
        } else {
            ret = BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED | BDRV_BLOCK_OFFSET_VALID;
            map = off;
            file = bs;
            while (file->file()) file = file->file()->bs.get();
        }
        bytes = pnum;
        if (ret & BDRV_BLOCK_ALLOCATED) {
            *e = MapEntry{off, pnum, depth, true, bool(ret & BDRV_BLOCK_ZERO), bool(ret & BDRV_BLOCK_DATA),
                          bool(ret & BDRV_BLOCK_OFFSET_VALID) && file, map, file ? file->filename : ""};
            co_return 0;
        }
        BdrvChild *b = bs->backing();
        int64_t blen = b ? bdrv_getlength(b->bs.get()) : 0;
        if (!b || off >= blen) {
            *e = MapEntry{off, pnum, depth, false, true, false, false, 0, ""};
            co_return 0;
        }
        bytes = std::min(bytes, blen - off);
        bs = b->bs.get();
        depth++;
    }
}


int cmd_check(int argc, char **argv) {
    ImgCommon common;
    std::string repair;
    if (auto st = img_parse_options(argc, argv,
                                    {.name = "check",
                                     .common = IMG_OPEN | IMG_FORMAT_LONG | IMG_OUTPUT,
                                     .own = {img_value('r', "repair", &repair)},
                                     .help = print_img_qcow2_help},
                                    &common))
        return *st;
    ImageFlags &flags = common.flags;
    const bool json = common.json;
    if (argc - optind != 1) return img_bad_usage("check needs exactly one FILE");
    if (!repair.empty() && repair != "leaks" && repair != "all")
        return img_bad_usage("Unknown option value for -r (expecting 'leaks' or 'all'): " + repair);
    if (!repair.empty() && flags.force_share) return img_bad_usage("-r and -U are mutually exclusive");
    flags.read_only = repair.empty();
    std::string image = argv[optind];
    auto blk = open_image(image, flags);
    if (!blk.ok() && !repair.empty() && blk.status().message().find("Image is corrupt") != std::string::npos) {
        // A qcow2 image marked corrupt opens read-write only to be repaired.
        auto opts = image_options(image, flags);
        if (!opts.ok()) return img_fail(opts.status());
        opts->set_str("check-repair", "on");
        blk = BlockBackend::open(*opts);
    }
    if (!blk.ok()) return img_fail(Status(blk.status()).prefix("Could not open '" + qapi::shown_name(image) + "'"));
    BlockDriverState *bs = (*blk)->bs();
    if (strcmp(bs->drv->format_name, "qcow2") != 0) {
        fprintf(stderr, "%s: This image format does not support checks\n", img_prog);
        return 63;
    }
    qcow2::CheckResult first, r;
    const int fix = repair.empty() ? 0 : repair == "leaks" ? qcow2::CHECK_FIX_LEAKS
                                                          : qcow2::CHECK_FIX_LEAKS | qcow2::CHECK_FIX_ERRORS;
    Status st = qcow2_check(bs, fix, &first);
    for (auto &m : first.messages) fprintf(stderr, "%s\n", m.c_str());
    if (!st.ok()) return img_fail(st);
    r = first;
    // As qemu-img: what was repaired is checked again, and that is reported.
    if (fix && (first.leaks_fixed || first.corruptions_fixed)) {
        r = qcow2::CheckResult{};
        st = qcow2_check(bs, 0, &r);
        if (!st.ok()) return img_fail(st);
    }
    print_check(r, image, json, !repair.empty(), &first);
    if (r.check_errors) return 1;
    if (r.corruptions) return 2;
    if (r.leaks) return 3;
    return 0;
}

int cmd_map(int argc, char **argv) {
    ImgCommon common;
    common.flags.read_only = true;
    if (auto st = img_parse_options(argc, argv,
                                    {.name = "map", .common = IMG_OPEN | IMG_FORMAT_LONG | IMG_OUTPUT, .help = print_img_qcow2_help},
                                    &common))
        return *st;
    const ImageFlags &flags = common.flags;
    const bool json = common.json;
    if (argc - optind != 1) return img_bad_usage("map needs exactly one FILE");
    std::string image = argv[optind];
    auto blk = open_image(image, flags);
    if (!blk.ok()) return img_fail(Status(blk.status()).prefix("Could not open '" + qapi::shown_name(image) + "'"));
    BlockDriverState *bs = (*blk)->bs();
    int64_t len = (*blk)->length();
    std::vector<MapEntry> out;
    for (int64_t off = 0; off < len;) {
        MapEntry e;
        int r = sync_wait(chain_status(bs, off, std::min<int64_t>(len - off, int64_t(1) << 30), &e));
        if (r < 0) return img_fail(PosixError("Could not read the image mapping at offset " + std::to_string(off), -r));
        if (!out.empty()) {
            MapEntry &p = out.back();
            if (p.depth == e.depth && p.present == e.present && p.zero == e.zero && p.data == e.data &&
                p.has_offset == e.has_offset && p.file == e.file &&
                (!p.has_offset || p.offset + p.length == e.offset)) {
                p.length += e.length;
                off += e.length;
                continue;
            }
        }
        out.push_back(e);
        off += e.length;
    }
    if (json) {
        printf("[");
        for (size_t i = 0; i < out.size(); i++) {
            auto &e = out[i];
            printf("%s{ \"start\": %" PRId64 ", \"length\": %" PRId64 ", \"depth\": %d, \"present\": %s, "
                   "\"zero\": %s, \"data\": %s",
                   i ? ",\n" : "", e.start, e.length, e.depth, e.present ? "true" : "false",
                   e.zero ? "true" : "false", e.data ? "true" : "false");
            if (e.has_offset) printf(", \"offset\": %" PRId64, e.offset);
            printf("}");
        }
        printf("]\n");
        return 0;
    }
    printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    auto hx = [](int64_t v) {
        char b[32];
        snprintf(b, sizeof b, "%#" PRIx64, v);
        return std::string(b);
    };
    for (auto &e : out) {
        if (!e.data || !e.has_offset) continue;
        printf("%-16s%-16s%-16s%s\n", hx(e.start).c_str(), hx(e.length).c_str(), hx(e.offset).c_str(),
               e.file.c_str());
    }
    return 0;
}

void print_img_qcow2_help(FILE *out) {
    fprintf(out,
            "  check [-f FMT] [-r leaks|all] [-U] [--image-opts] [--output=human|json] FILE\n"
            "      check a qcow2 image's metadata; exit 0 clean, 1 check failed, 2 corruptions,\n"
            "      3 leaked clusters only; -r leaks drops the refcount of leaked clusters, -r all\n"
            "      also repairs refcount errors (rebuilding the refcount structure if need be)\n"
            "  map [-f FMT] [-U] [--image-opts] [--output=human|json] FILE\n"
            "      show where each range of the image is stored (layer of the backing chain,\n"
            "      offset in which file), or that it reads as zeroes\n");
}

}  // namespace mb::tools
