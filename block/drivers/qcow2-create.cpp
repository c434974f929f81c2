// qcow2 image creation: header (with backing format and feature name table
// extensions), refcount table and blocks, an empty L1 table; the layout
// qemu-img uses (header, refcount table, refcount blocks, L1).
#include <algorithm>
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

// Refcount 1 for entry i of a refcount block of 2^order-bit entries (the
// sub-byte widths fill each byte from its least significant bit, as QEMU's).
void set_refcount_one(uint8_t *blk, int order, uint64_t i) {
    const int bits = 1 << order;
    if (bits < 8) blk[i * bits / 8] |= uint8_t(1u << (i * bits % 8));
    else blk[(i + 1) * (bits / 8) - 1] = 1;
}

}  // namespace

Status write_header_tail(uint8_t *h, uint32_t hlen, int version, int64_t cs, const std::string &backing,
                         const std::string &backing_fmt) {
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
    put_be64(h + 8, 0);
    put_be32(h + 16, 0);
    if (!backing.empty()) {
        memcpy(&hdr[pos], backing.data(), backing.size());
        put_be64(h + 8, pos);
        put_be32(h + 16, uint32_t(backing.size()));
    }
    memcpy(h + hlen, hdr.data() + hlen, cs - hlen);
    return Status::OK();
}

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
    // refcount_bits, lazy_refcounts and preallocation: qemu-img 7.2's rules and texts.
    int refcount_order = 4;
    if (auto v = text("refcount_bits")) {
        auto n = qapi::parse_size(*v);
        if (!n || *n < 1 || *n > 64 || (*n & (*n - 1)))
            return Status::Error(EINVAL, "Refcount width must be a power of two and may not exceed 64 bits");
        refcount_order = __builtin_ctzll(*n);
        if (version < 3 && *n != 16) {
            return Status::Error(EINVAL, "Different refcount widths than 16 bits require compatibility level 1.1 "
                                         "or above (use version=v3 or greater)");
        }
    }
    bool lazy = false;
    if (auto v = text("lazy_refcounts")) {
        if (*v == "on") lazy = true;
        else if (*v != "off") return Status::Error(EINVAL, "Parameter 'lazy_refcounts' expects 'on' or 'off'");
        if (lazy && version < 3) {
            return Status::Error(EINVAL, "Lazy refcounts only supported with compatibility level 1.1 and above "
                                         "(use version=v3 or greater)");
        }
    }
    std::string prealloc = text("preallocation").value_or("off");
    if (prealloc != "off" && prealloc != "metadata" && prealloc != "falloc" && prealloc != "full")
        return Status::Error(EINVAL, "Parameter 'preallocation' does not accept value '" + prealloc + "'");
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
    const uint64_t per_block = uint64_t(cs) * 8 >> refcount_order;
    // Preallocation: after the L1 table, each L2 table followed by the data
    // clusters it maps, as qemu-img lays them out.
    const uint64_t data_clusters = prealloc == "off" ? 0 : (uint64_t(size) + cs - 1) / cs;
    const uint64_t l2_tables = prealloc == "off" ? 0 : l1_entries;
    uint64_t R = 1, B = 1;
    for (;;) {
        uint64_t total = 1 + R + B + l1_clusters + l2_tables + data_clusters;
        uint64_t nb = (total + per_block - 1) / per_block;
        uint64_t nr = std::max<uint64_t>(1, (nb * 8 + cs - 1) / cs);
        if (nb == B && nr == R) break;
        B = nb;
        R = nr;
    }
    const uint64_t meta = 1 + R + B + l1_clusters;  // clusters written from `img`
    const uint64_t total = meta + l2_tables + data_clusters;
    if (total > (uint64_t(1) << (56 - cluster_bits)) || uint64_t(R) * cs > MAX_REFTABLE_BYTES) {
        return Status::Error(EFBIG, "Image size " + std::to_string(size) + " is too large for cluster size " +
                                        std::to_string(cs));
    }
    std::vector<uint8_t> img(meta * cs, 0);

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
    if (lazy) put_be64(h + 80, COMPAT_LAZY_REFCOUNTS);
    if (version == 3) {
        put_be32(h + 96, refcount_order);
        put_be32(h + 100, hlen);
    }
    // Extensions, then the backing file name.
    MB_TRY(write_header_tail(img.data(), hlen, version, cs, backing, backing_fmt));

    // Refcount table and blocks: every metadata cluster has refcount 1.
    for (uint64_t b = 0; b < B; b++) put_be64(&img[cs + b * 8], (1 + R + b) * cs);
    for (uint64_t c = 0; c < total; c++) {
        uint64_t b = c / per_block, i = c % per_block;
        set_refcount_one(&img[(1 + R + b) * cs], refcount_order, i);
    }
    // The L1 entries of preallocated L2 tables, and those tables.
    auto l2_cluster = [&](uint64_t k) { return meta + k * (1 + uint64_t(cs) / 8); };
    for (uint64_t k = 0; k < l2_tables; k++) put_be64(&img[(1 + R + B) * cs + k * 8], l2_cluster(k) * cs | OFLAG_COPIED);

    // The file, preallocated as asked for the whole image (falloc, full),
    // or sparse up to the last data cluster (metadata).
    qapi::OptionDict file_opts;
    if (prealloc == "falloc" || prealloc == "full") file_opts.set_str("preallocation", prealloc);
    MB_TRY(bdrv_create("file", filename, l2_tables ? int64_t(total * cs) : 0, file_opts));
    qapi::OptionDict fo;
    fo.set_str("driver", "file");
    fo.set_str("filename", filename);
    auto blk = BlockBackend::open(fo);
    if (!blk.ok()) return blk.take_status();
    (*blk)->set_allow_write_beyond_eof(true);
    // The file ends after the L1 entries, as qemu-img leaves it.
    int r = (*blk)->pwrite(0, (1 + R + B) * cs + l1_entries * 8, img.data());
    if (r == 0) r = (*blk)->flush();
    std::vector<uint8_t> l2(cs);
    for (uint64_t k = 0; k < l2_tables && r == 0; k++) {
        std::fill(l2.begin(), l2.end(), 0);
        uint64_t first = k * (uint64_t(cs) / 8);
        uint64_t n = std::min<uint64_t>(uint64_t(cs) / 8, data_clusters - first);
        for (uint64_t i = 0; i < n; i++) put_be64(&l2[i * 8], (l2_cluster(k) + 1 + i) * cs | OFLAG_COPIED);
        r = (*blk)->pwrite(l2_cluster(k) * cs, cs, l2.data());
    }
    if (r == 0 && l2_tables) r = (*blk)->flush();
    if (r < 0) return PosixError("Could not write the qcow2 metadata of '" + filename + "'", -r);
    return Status::OK();
}

}  // namespace mb::qcow2
