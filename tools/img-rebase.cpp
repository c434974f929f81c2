// miniblock-img rebase: change a qcow2 image's backing file, as qemu-img
// rebase.  Safe mode (the default) first copies into the image every range
// it does not define itself where the old and the new backing files differ,
// so that the guest sees the same data; -u (unsafe) only rewrites the header.
//
// The header is rewritten here with the qcow2 node closed, through the file
// node opened with lock=exclusive: nobody else may have the image open
// while its first cluster changes.  The rewrite follows the on-disk format
// (docs/interop/qcow2.txt): the fixed header, the header extensions kept as
// they were except the backing format one (0xe2792aca), put first as
// qemu-img does, the end marker, then the backing file name, all within the
// first cluster.

#include <algorithm>
#include <cinttypes>
#include <cstdio>
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

constexpr uint32_t EXT_BACKING_FORMAT = 0xe2792aca;

// Rewrites the backing file name and format in the image's first cluster.
Status rewrite_header(const std::string &image, const std::string &backing, const std::string &backing_fmt) {
    qapi::OptionDict fo;
    fo.set_str("driver", "file");
    fo.set_str("filename", image);
    fo.set_str("lock", "exclusive");
    auto blk = BlockBackend::open(fo);
    if (!blk.ok()) return blk.take_status();
    int64_t flen = (*blk)->length();
    if (flen < 0) return PosixError("Could not get the size of '" + image + "'", (int)-flen);
    uint8_t fixed[104] = {};
    if (flen < 72) return Status::Error(EINVAL, "'" + image + "' is not a qcow2 image");
    int r = (*blk)->pread(0, std::min<int64_t>(flen, sizeof(fixed)), fixed);
    if (r < 0) return PosixError("Could not read the header of '" + image + "'", -r);
    using qcow2::be32;
    if (memcmp(fixed, "QFI\xfb", 4) != 0) return Status::Error(EINVAL, "'" + image + "' is not a qcow2 image");
    const uint32_t version = be32(fixed + 4), cluster_bits = be32(fixed + 20);
    if ((version != 2 && version != 3) || cluster_bits < 9 || cluster_bits > 21)
        return Status::Error(EINVAL, "'" + image + "' has a qcow2 header this tool cannot rewrite");
    const int64_t cs = int64_t(1) << cluster_bits;
    const int64_t used = std::min(cs, flen);
    std::vector<uint8_t> c0(used);
    r = (*blk)->pread(0, used, c0.data());
    if (r < 0) return PosixError("Could not read the header of '" + image + "'", -r);
    const uint32_t hdr_len = version == 3 ? be32(fixed + 100) : 72;
    if (hdr_len < 72 || hdr_len > used) return Status::Error(EINVAL, "'" + image + "' has a bad header length");

    // The extensions, kept verbatim but the backing format.
    std::vector<std::pair<uint32_t, std::vector<uint8_t>>> exts;
    int64_t pos = hdr_len;
    for (;;) {
        if (pos + 8 > used) return Status::Error(EINVAL, "'" + image + "' has unterminated header extensions");
        uint32_t type = be32(&c0[pos]), len = be32(&c0[pos + 4]);
        if (type == 0) break;
        if (len > used - pos - 8) return Status::Error(EINVAL, "'" + image + "' has a header extension past its first cluster");
        if (type != EXT_BACKING_FORMAT) exts.emplace_back(type, std::vector<uint8_t>(&c0[pos + 8], &c0[pos + 8] + len));
        pos += 8 + ((int64_t(len) + 7) & ~int64_t(7));
    }
    if (!backing.empty() && !backing_fmt.empty())
        exts.insert(exts.begin(), {EXT_BACKING_FORMAT, std::vector<uint8_t>(backing_fmt.begin(), backing_fmt.end())});

    std::vector<uint8_t> out(used, 0);
    memcpy(out.data(), c0.data(), hdr_len);
    pos = hdr_len;
    auto fits = [&](int64_t n) { return pos + n <= used; };
    for (auto &[type, data] : exts) {
        int64_t n = 8 + ((int64_t(data.size()) + 7) & ~int64_t(7));
        if (!fits(n)) return Status::Error(ENOSPC, "The header extensions and the backing file name do not fit in the first cluster");
        qcow2::put_be32(&out[pos], type);
        qcow2::put_be32(&out[pos + 4], uint32_t(data.size()));
        memcpy(&out[pos + 8], data.data(), data.size());
        pos += n;
    }
    if (!fits(8)) return Status::Error(ENOSPC, "The header extensions and the backing file name do not fit in the first cluster");
    pos += 8;  // the end marker: zeroes
    if (backing.size() > 1023) return Status::Error(EINVAL, "Backing file name is longer than 1023 bytes");
    if (!fits((int64_t)backing.size()))
        return Status::Error(ENOSPC, "The header extensions and the backing file name do not fit in the first cluster");
    memcpy(&out[pos], backing.data(), backing.size());
    qcow2::put_be64(&out[8], backing.empty() ? 0 : uint64_t(pos));
    qcow2::put_be32(&out[16], uint32_t(backing.size()));
    r = (*blk)->pwrite(0, used, out.data());
    if (r == 0) r = (*blk)->flush();
    if (r < 0) return PosixError("Could not write the header of '" + image + "'", -r);
    return Status::OK();
}

// Safe mode: where the image does not define the data itself, the old
// backing chain's data is copied in wherever the new backing file differs.
Status copy_differences(BlockBackend &img, BlockBackend *newb, bool progress) {
    BlockDriverState *top = img.bs();
    const int64_t len = img.length(), nlen = newb ? newb->length() : 0;
    if (len < 0 || nlen < 0) return PosixError("Could not get the image size", EIO);
    constexpr int64_t CHUNK = 1 << 20;
    std::vector<uint8_t> a(CHUNK), b(CHUNK);
    for (int64_t off = 0; off < len;) {
        int64_t n = std::min(CHUNK, len - off), map = 0;
        BlockDriverState *file = nullptr;
        int st = sync_wait(top->drv->co_block_status(top, off, n, &n, &map, &file));
        if (st < 0) return PosixError("Could not inspect '" + top->filename + "'", -st);
        if (n <= 0) return PosixError("Could not inspect '" + top->filename + "'", EIO);
        if (!(st & BDRV_BLOCK_ALLOCATED)) {
            int r = img.pread(off, n, a.data());
            if (r < 0) return PosixError("Could not read the old backing file at " + std::to_string(off), -r);
            std::fill(b.begin(), b.begin() + n, 0);
            if (newb && off < nlen) {
                r = newb->pread(off, std::min(n, nlen - off), b.data());
                if (r < 0) return PosixError("Could not read the new backing file at " + std::to_string(off), -r);
            }
            // Whole 64 KiB pieces that differ are written: cluster-sized.
            for (int64_t p = 0; p < n;) {
                int64_t m = std::min<int64_t>(65536, n - p);
                if (memcmp(a.data() + p, b.data() + p, m)) {
                    r = img.pwrite(off + p, m, a.data() + p);
                    if (r < 0) return PosixError("Could not write '" + top->filename + "'", -r);
                }
                p += m;
            }
        }
        off += n;
        if (progress) printf("    (%.2f/100%%)\r", 100.0 * off / len), fflush(stdout);
    }
    if (progress) printf("    (100.00/100%%)\n");
    int r = img.flush();
    return r < 0 ? PosixError("Could not flush '" + top->filename + "'", -r) : Status::OK();
}

}  // namespace

int cmd_rebase(int argc, char **argv) {
    ImgCommon common;
    ImageFlags &flags = common.flags;
    std::string backing, backing_fmt;
    bool have_b = false, unsafe = false, progress = false, share = false;
    auto take_backing = [&](const char *arg) {
        backing = arg;
        have_b = true;
        return 0;
    };
    if (auto st = img_parse_options(
            argc, argv,
            {.name = "rebase",
             .common = IMG_FORMAT | IMG_CACHE | IMG_QUIET,
             // -T: the backing files' cache mode: they are only read.  -U:
             // the new backing file is read with force share.
             .own = {{'b', nullptr, required_argument, take_backing}, img_value('F', nullptr, &backing_fmt),
                     img_ignored('T', required_argument), img_flag('u', nullptr, &unsafe),
                     img_flag('p', nullptr, &progress), img_flag('U', nullptr, &share)}},
            &common))
        return *st;
    const bool quiet = common.quiet;
    if (argc - optind != 1) return img_bad_usage("rebase needs one FILE");
    if (!have_b) return img_bad_usage("rebase needs -b BACKING (\"\" for none)");
    std::string image = argv[optind];
    // qemu-img 7.2's rule and text; refused before anything is copied.
    if (!backing.empty() && backing_fmt.empty()) {
        return img_fail(Status::Error(EINVAL, "Could not change the backing file to '" + qapi::shown_name(backing) +
                                                  "': backing format must be specified"));
    }
    if (!unsafe) {
        // The image with its old chain, and the new backing file.
        auto img = open_image(image, flags);
        if (!img.ok()) return img_fail(Status(img.status()).prefix("Could not open '" + qapi::shown_name(image) + "'"));
        if (strcmp((*img)->bs()->drv->format_name, "qcow2") != 0)
            return img_fail(Status::Error(ENOTSUP, "'" + image + "': only qcow2 images have a backing file to change"));
        std::unique_ptr<BlockBackend> newb;
        if (!backing.empty()) {
            std::string path = backing;
            size_t slash = image.rfind('/');
            if (backing[0] != '/' && slash != std::string::npos) path = image.substr(0, slash + 1) + backing;
            ImageFlags bf;
            bf.format = backing_fmt;
            bf.read_only = true;
            bf.force_share = share;
            auto b = open_image(path, bf);
            if (!b.ok()) return img_fail(Status(b.status()).prefix("Could not open new backing file '" + qapi::shown_name(path) + "'"));
            newb = std::move(*b);
        }
        Status st = copy_differences(**img, newb.get(), progress && !quiet);
        if (!st.ok()) return img_fail(st);
    }
    // The copy is flushed and the image closed: now its header.
    Status st = rewrite_header(image, backing, backing_fmt);
    if (!st.ok()) return img_fail(st.prefix("Could not change the backing file of '" + qapi::shown_name(image) + "'"));
    return 0;
}

}  // namespace mb::tools
