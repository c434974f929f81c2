// qcow2 header and header extensions: parsing that trusts nothing.
//
// Every field is bounded before it is used: offsets against the file length
// and their alignment, sizes against QEMU's limits, so that a hostile header
// gives an error naming the bad value and never a huge allocation.
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "block/drivers/qcow2.h"

namespace mb::qcow2 {

std::string hex(uint64_t v) {
    char b[24];
    snprintf(b, sizeof b, "0x%" PRIx64, v);
    return b;
}

namespace {

Status invalid(std::string msg) { return Status::Error(EINVAL, std::move(msg)); }

// Names of the incompatible bits we know but do not support.
const char *known_incompat_name(int bit) {
    switch (bit) {
    case 2: return "external data file";
    case 3: return "compression type";
    case 4: return "extended L2 entries";
    default: return nullptr;
    }
}

// A table [offset, offset + bytes) must be cluster aligned, after the
// header cluster, and inside the file.
Status check_table(const char *what, uint64_t offset, uint64_t bytes, uint64_t cluster_size,
                   uint64_t file_len) {
    if (offset % cluster_size) {
        return invalid(std::string(what) + " offset " + hex(offset) + " is not cluster aligned");
    }
    if (bytes && offset < cluster_size) {
        return invalid(std::string(what) + " offset " + hex(offset) + " overlaps the image header");
    }
    if (offset > file_len || bytes > file_len - offset) {
        return invalid(std::string(what) + " (offset " + hex(offset) + ", " + std::to_string(bytes) +
                       " bytes) lies past the end of the file (" + std::to_string(file_len) +
                       " bytes)");
    }
    return Status::OK();
}

}  // namespace

Status parse_header(const uint8_t *buf, size_t len, uint64_t file_len, ParsedImage *out) {
    if (len < V2_HEADER_LENGTH || file_len < V2_HEADER_LENGTH) {
        return invalid("Image is too short for a qcow2 header (" + std::to_string(file_len) + " bytes)");
    }
    Header &h = out->h;
    if (be32(buf) != QCOW2_MAGIC) return invalid("Image is not in qcow2 format");
    h.version = be32(buf + 4);
    if (h.version != 2 && h.version != 3) {
        return Status::Error(ENOTSUP, "Unsupported qcow2 version " + std::to_string(h.version));
    }
    h.backing_file_offset = be64(buf + 8);
    h.backing_file_size = be32(buf + 16);
    h.cluster_bits = be32(buf + 20);
    h.size = be64(buf + 24);
    h.crypt_method = be32(buf + 32);
    h.l1_size = be32(buf + 36);
    h.l1_table_offset = be64(buf + 40);
    h.refcount_table_offset = be64(buf + 48);
    h.refcount_table_clusters = be32(buf + 56);
    h.nb_snapshots = be32(buf + 60);
    h.snapshots_offset = be64(buf + 64);

    if (h.cluster_bits < MIN_CLUSTER_BITS || h.cluster_bits > MAX_CLUSTER_BITS) {
        return invalid("Unsupported cluster size: 2^" + std::to_string(h.cluster_bits));
    }
    const uint64_t cs = 1ull << h.cluster_bits;

    if (h.version == 3) {
        if (len < V3_MIN_HEADER_LENGTH || file_len < V3_MIN_HEADER_LENGTH) {
            return invalid("Image is too short for a qcow2 version 3 header (" +
                           std::to_string(file_len) + " bytes)");
        }
        h.incompatible = be64(buf + 72);
        h.compatible = be64(buf + 80);
        h.autoclear = be64(buf + 88);
        h.refcount_order = be32(buf + 96);
        h.header_length = be32(buf + 100);
        if (h.header_length < V3_MIN_HEADER_LENGTH) {
            return invalid("qcow2 header length " + std::to_string(h.header_length) + " is too short");
        }
        if (h.header_length > cs || h.header_length > len) {
            return invalid("qcow2 header length " + std::to_string(h.header_length) +
                           " exceeds the first cluster");
        }
        if (h.header_length > 104) h.compression_type = buf[104];
    }
    if (h.refcount_order > 6) {
        return invalid("Refcount order " + std::to_string(h.refcount_order) + " is out of range (0..6)");
    }
    if (h.crypt_method) {
        return Status::Error(ENOTSUP, "Encrypted qcow2 images are not supported (crypt_method " +
                                          std::to_string(h.crypt_method) + ")");
    }

    // Extensions, up to the end marker or the end of the first cluster.
    size_t ext_end = std::min<uint64_t>(cs, len);
    size_t pos = h.header_length;
    if (h.backing_file_offset && h.backing_file_offset < ext_end) ext_end = h.backing_file_offset;
    while (pos + 8 <= ext_end) {
        uint32_t type = be32(buf + pos), elen = be32(buf + pos + 4);
        pos += 8;
        if (type == EXT_END) break;
        if (elen > ext_end - pos) {
            return invalid("Header extension " + hex(type) + " (" + std::to_string(elen) +
                           " bytes) exceeds the first cluster");
        }
        if (type == EXT_BACKING_FORMAT) {
            if (elen == 0 || elen > 15) {
                return invalid("Backing format name length " + std::to_string(elen) + " is out of range (1..15)");
            }
            out->backing_format.assign(reinterpret_cast<const char *>(buf + pos), elen);
            if (out->backing_format.find('\0') != std::string::npos) {
                return invalid("Backing format name contains a NUL byte");
            }
        } else if (type == EXT_FEATURE_TABLE) {
            for (size_t i = 0; i + 48 <= elen; i += 48) {
                const uint8_t *e = buf + pos + i;
                std::string name(reinterpret_cast<const char *>(e + 2), strnlen(reinterpret_cast<const char *>(e + 2), 46));
                out->feature_names[uint64_t(e[0]) << 8 | e[1]] = name;
            }
        }
        // Other extensions (bitmaps, encryption, data file, unknown ones)
        // are left alone: we never rewrite this area, so they are preserved.
        pos += (uint64_t(elen) + 7) & ~7ull;
    }

    // Incompatible features: dirty and corrupt are ours to handle at open;
    // anything else is refused.
    uint64_t unsupported = h.incompatible & ~(INCOMPAT_DIRTY | INCOMPAT_CORRUPT);
    if (h.compression_type != 0 && !(h.incompatible & INCOMPAT_COMPRESSION)) {
        return invalid("Compression type " + std::to_string(h.compression_type) +
                       " is set without the compression type feature bit");
    }
    if (unsupported) {
        std::string names;
        for (int bit = 0; bit < 64; bit++) {
            if (!(unsupported >> bit & 1)) continue;
            auto it = out->feature_names.find(uint64_t(0) << 8 | bit);
            std::string n = it != out->feature_names.end() && !it->second.empty() ? it->second
                            : known_incompat_name(bit) ? known_incompat_name(bit)
                                                       : "Unknown incompatible feature: " + hex(1ull << bit);
            names += (names.empty() ? "" : ", ") + n;
        }
        return Status::Error(ENOTSUP, "Unsupported qcow2 feature(s): " + names);
    }

    // Backing file name: inside the first cluster, bounded.
    if (h.backing_file_offset) {
        if (h.backing_file_size > MAX_BACKING_NAME) {
            return invalid("Backing file name length " + std::to_string(h.backing_file_size) +
                           " is too long (at most " + std::to_string(MAX_BACKING_NAME) + " bytes)");
        }
        if (h.backing_file_offset > cs || h.backing_file_size > cs - h.backing_file_offset ||
            h.backing_file_offset + h.backing_file_size > len) {
            return invalid("Backing file name (offset " + hex(h.backing_file_offset) + ", " +
                           std::to_string(h.backing_file_size) + " bytes) lies outside the first cluster");
        }
        out->backing_file.assign(reinterpret_cast<const char *>(buf + h.backing_file_offset),
                                 h.backing_file_size);
        if (out->backing_file.find('\0') != std::string::npos) {
            return invalid("Backing file name contains a NUL byte");
        }
    }

    // Tables.
    const int l2_bits = h.cluster_bits - 3;
    if (h.l1_size > MAX_L1_BYTES / 8) {
        return invalid("Active L1 table size " + std::to_string(h.l1_size) + " is too large");
    }
    // The image size must be reachable through the L1 table.
    const int shift = h.cluster_bits + l2_bits;
    if (h.size > (uint64_t(h.l1_size) << shift)) {
        // Also covers absurd sizes: l1_size < 2^22 entries bounds it.
        return invalid("Image size " + std::to_string(h.size) + " needs a larger L1 table than " +
                       std::to_string(h.l1_size) + " entries");
    }
    MB_TRY(check_table("Active L1 table", h.l1_table_offset, uint64_t(h.l1_size) * 8, cs, file_len));
    if (h.refcount_table_clusters == 0) return invalid("Refcount table is empty");
    if (uint64_t(h.refcount_table_clusters) * cs > MAX_REFTABLE_BYTES) {
        return invalid("Refcount table size " + std::to_string(h.refcount_table_clusters) +
                       " clusters is too large");
    }
    MB_TRY(check_table("Refcount table", h.refcount_table_offset,
                       uint64_t(h.refcount_table_clusters) * cs, cs, file_len));
    if (h.nb_snapshots > MAX_SNAPSHOTS) {
        return invalid("Snapshot count " + std::to_string(h.nb_snapshots) + " is too large");
    }
    if (h.nb_snapshots && (h.snapshots_offset % cs || h.snapshots_offset < cs ||
                           h.snapshots_offset >= file_len)) {
        return invalid("Snapshot table offset " + hex(h.snapshots_offset) + " is invalid");
    }
    return Status::OK();
}

}  // namespace mb::qcow2
