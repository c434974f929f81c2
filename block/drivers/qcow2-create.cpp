// qcow2 image creation: header (with backing format and feature name table
// extensions), refcount table and blocks, an empty L1 table; the layout
// qemu-img uses (header, refcount table, refcount blocks, L1).
#include <cerrno>
#include <cstring>

#include "block/aio.h"
#include "block/drivers/qcow2.h"
#include "miniblock/block.h"

namespace mb::qcow2 {

namespace {

struct Feature {
    uint8_t type, bit;
    const char *name;
};
// The names qemu-img 7.2 records (type 0 incompatible, 1 compatible, 2 autoclear).
const Feature kFeatures[] = {
    {0, 0, "dirty bit"},          {0, 1, "corrupt bit"},   {0, 2, "external data file"},
    {0, 3, "compression type"},   {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
    {2, 0, "bitmaps"},            {2, 1, "raw external data"},
};

void put_ext(std::vector<uint8_t> &h, size_t *pos, uint32_t type, const uint8_t *data, uint32_t len) {
    put_be32(&h[*pos], type);
    put_be32(&h[*pos + 4], len);
    if (len) memcpy(&h[*pos + 8], data, len);
    *pos += 8 + ((uint64_t(len) + 7) & ~7ull);
}

}  // namespace

Status create(const std::string &filename, int64_t size, qapi::OptionDict &opts) {
    // Options: strings from -o, or typed values from a caller.
    auto text = [&](const char *k) -> std::optional<std::string> {
        auto v = opts.get_text(k);
        opts.erase(k);
        return v;
    };
    int64_t cs = 65536;
    if (auto v = text("cluster_size")) {
        auto n = qapi::parse_size(*v);
        if (!n || *n < 512 || *n > (2 << 20) || (*n & (*n - 1))) {
            return Status::Error(EINVAL, "Invalid cluster_size '" + *v + "'",
                                 "Cluster size must be a power of two between 512 and 2M");
        }
        cs = *n;
    }
    int version = 3;
    if (auto v = text("compat")) {
        if (*v == "0.10" || *v == "v2") version = 2;
        else if (*v == "1.1" || *v == "v3") version = 3;
        else return Status::Error(EINVAL, "Invalid compat '" + *v + "'", "Expected 0.10 or 1.1");
    }
    std::string backing = text("backing_file").value_or("");
    std::string backing_fmt = text("backing_fmt").value_or("");
    if (auto v = text("refcount_bits"); v && *v != "16") {
        return Status::Error(ENOTSUP, "Invalid refcount_bits '" + *v + "'", "Only 16 bit refcounts are created");
    }
    if (auto v = text("lazy_refcounts"); v && *v != "off" && *v != "false") {
        return Status::Error(ENOTSUP, "Invalid lazy_refcounts '" + *v + "'", "Lazy refcounts are not supported");
    }
    MB_TRY(bdrv_create_options_done("qcow2", opts));
    if (size % 512) {
        return Status::Error(EINVAL, "Image size " + std::to_string(size) + " is not a multiple of 512 bytes");
    }
    if (backing.size() > MAX_BACKING_NAME) {
        return Status::Error(EINVAL, "Backing file name is longer than " + std::to_string(MAX_BACKING_NAME) + " bytes");
    }
    if (backing_fmt.size() > 15) return Status::Error(EINVAL, "Backing format '" + backing_fmt + "' is too long");
    if (!backing_fmt.empty() && backing.empty()) {
        return Status::Error(EINVAL, "backing_fmt is set without backing_file");
    }

    // Layout.
    const int cluster_bits = __builtin_ctzll(cs);
    const uint64_t l2_cover = uint64_t(cs) * (cs / 8);
    uint64_t l1_entries = (uint64_t(size) + l2_cover - 1) / l2_cover;
    if (l1_entries * 8 > MAX_L1_BYTES) {
        return Status::Error(EFBIG, "Image size " + std::to_string(size) + " is too large for cluster size " +
                                        std::to_string(cs));
    }
    uint64_t l1_clusters = (l1_entries * 8 + cs - 1) / cs;
    const uint64_t per_block = cs / 2;  // 16-bit refcounts
    uint64_t R = 1, B = 1;
    for (;;) {
        uint64_t total = 1 + R + B + l1_clusters;
        uint64_t nb = (total + per_block - 1) / per_block;
        uint64_t nr = std::max<uint64_t>(1, (nb * 8 + cs - 1) / cs);
        if (nb == B && nr == R) break;
        B = nb;
        R = nr;
    }
    const uint64_t total = 1 + R + B + l1_clusters;
    std::vector<uint8_t> img(total * cs, 0);

    // Header.
    const uint32_t hlen = version == 3 ? 112 : V2_HEADER_LENGTH;
    uint8_t *h = img.data();
    put_be32(h, QCOW2_MAGIC);
    put_be32(h + 4, version);
    put_be32(h + 20, cluster_bits);
    put_be64(h + 24, size);
    put_be32(h + 36, uint32_t(l1_entries));
    put_be64(h + 40, l1_entries ? (1 + R + B) * cs : 0);
    put_be64(h + 48, 1 * cs);
    put_be32(h + 56, uint32_t(R));
    if (version == 3) {
        put_be32(h + 96, 4);
        put_be32(h + 100, hlen);
    }
    // Extensions, then the backing file name.
    std::vector<uint8_t> hdr(cs, 0);
    size_t pos = hlen;
    auto room = [&](size_t need) { return pos + need + 8 + backing.size() < size_t(cs); };
    if (!backing_fmt.empty()) {
        if (pos + 8 + 16 + 8 + backing.size() > size_t(cs)) {
            return Status::Error(EINVAL, "The header does not fit in one cluster");
        }
        put_ext(hdr, &pos, EXT_BACKING_FORMAT, reinterpret_cast<const uint8_t *>(backing_fmt.data()),
                uint32_t(backing_fmt.size()));
    }
    const size_t ftlen = sizeof kFeatures / sizeof kFeatures[0] * 48;
    // qemu-img 7.2 writes the table with clusters of 8k and more (observed).
    if (version == 3 && cs >= 8192 && room(8 + ftlen)) {
        std::vector<uint8_t> ft(ftlen, 0);
        for (size_t i = 0; i < sizeof kFeatures / sizeof kFeatures[0]; i++) {
            ft[i * 48] = kFeatures[i].type;
            ft[i * 48 + 1] = kFeatures[i].bit;
            memcpy(&ft[i * 48 + 2], kFeatures[i].name, strlen(kFeatures[i].name));
        }
        put_ext(hdr, &pos, EXT_FEATURE_TABLE, ft.data(), uint32_t(ftlen));
    }
    if (pos + 8 + backing.size() > size_t(cs)) {
        return Status::Error(EINVAL, "The backing file name does not fit in the header cluster");
    }
    pos += 8;  // end marker (zeroes)
    if (!backing.empty()) {
        memcpy(&hdr[pos], backing.data(), backing.size());
        put_be64(h + 8, pos);
        put_be32(h + 16, uint32_t(backing.size()));
    }
    memcpy(img.data() + hlen, hdr.data() + hlen, cs - hlen);

    // Refcount table and blocks: every metadata cluster has refcount 1.
    for (uint64_t b = 0; b < B; b++) put_be64(&img[cs + b * 8], (1 + R + b) * cs);
    for (uint64_t c = 0; c < total; c++) {
        uint64_t b = c / per_block, i = c % per_block;
        put_be16(&img[(1 + R + b) * cs + i * 2], 1);
    }

    MB_TRY(bdrv_create("file", filename, 0, qapi::OptionDict()));
    qapi::OptionDict fo;
    fo.set_str("driver", "file");
    fo.set_str("filename", filename);
    auto blk = BlockBackend::open(fo);
    if (!blk.ok()) return blk.take_status();
    (*blk)->set_allow_write_beyond_eof(true);
    // The file ends after the L1 entries, as qemu-img leaves it.
    int r = (*blk)->pwrite(0, (1 + R + B) * cs + l1_entries * 8, img.data());
    if (r == 0) r = (*blk)->flush();
    if (r < 0) return PosixError("Could not write the qcow2 metadata of '" + filename + "'", -r);
    return Status::OK();
}

}  // namespace mb::qcow2
