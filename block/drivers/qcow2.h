// The qcow2 format driver (QEMU's docs/interop/qcow2.txt, versions 2 and 3).
//
//   qcow2.cpp          header parsing, open/close, reads, block status, info
//   qcow2-cluster.cpp  guest -> host mapping (L1/L2), allocating writes, zeroes
//   qcow2-refcount.cpp refcounts, cluster allocation, refcount table growth, check
//   qcow2-cache.cpp    the LRU cache of L2 tables and refcount blocks, and
//                      their write-back in dependency order
//   qcow2-create.cpp   image creation
//
// Metadata changes are serialized by one CoMutex (s->lock).  L2 tables and
// refcount blocks change in the cache and are written back later, whole,
// ordered so that a crash at any point leaves at most leaked clusters:
// refcount increments before the L2 entries using them, L2 entries before
// the decrements of what they no longer use, a new L2 table before its L1
// entry (written at once, from the in-memory L1 table).
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "block/block_int.h"

namespace mb::qcow2 {

inline constexpr uint32_t QCOW2_MAGIC = 0x514649fb;  // "QFI\xfb"
inline constexpr int MIN_CLUSTER_BITS = 9;
inline constexpr int MAX_CLUSTER_BITS = 21;
inline constexpr uint32_t V2_HEADER_LENGTH = 72;
inline constexpr uint32_t V3_MIN_HEADER_LENGTH = 104;
inline constexpr uint32_t MAX_BACKING_NAME = 1023;
inline constexpr uint64_t MAX_L1_BYTES = 32 << 20;        // as QEMU's limit
inline constexpr uint64_t MAX_REFTABLE_BYTES = 8 << 20;   // as QEMU's limit
inline constexpr uint32_t MAX_SNAPSHOTS = 65536;

inline constexpr uint32_t EXT_END = 0;
inline constexpr uint32_t EXT_BACKING_FORMAT = 0xe2792aca;
inline constexpr uint32_t EXT_FEATURE_TABLE = 0x6803f857;

inline constexpr uint64_t INCOMPAT_DIRTY = 1ull << 0;
inline constexpr uint64_t INCOMPAT_CORRUPT = 1ull << 1;
inline constexpr uint64_t INCOMPAT_DATA_FILE = 1ull << 2;
inline constexpr uint64_t INCOMPAT_COMPRESSION = 1ull << 3;
inline constexpr uint64_t INCOMPAT_EXTL2 = 1ull << 4;
inline constexpr uint64_t COMPAT_LAZY_REFCOUNTS = 1ull << 0;

inline constexpr uint64_t OFLAG_COPIED = 1ull << 63;
inline constexpr uint64_t OFLAG_COMPRESSED = 1ull << 62;
inline constexpr uint64_t OFLAG_ZERO = 1ull << 0;
inline constexpr uint64_t L1E_OFFSET_MASK = 0x00fffffffffffe00ull;
inline constexpr uint64_t L2E_OFFSET_MASK = 0x00fffffffffffe00ull;
inline constexpr uint64_t REFT_OFFSET_MASK = 0xfffffffffffffe00ull;

inline uint64_t be64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[i];
    return v;
}
inline uint32_t be32(const uint8_t *p) { return uint32_t(p[0]) << 24 | p[1] << 16 | p[2] << 8 | p[3]; }
inline uint16_t be16(const uint8_t *p) { return uint16_t(p[0] << 8 | p[1]); }
inline void put_be64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = uint8_t(v);
}
inline void put_be32(uint8_t *p, uint32_t v) {
    for (int i = 3; i >= 0; i--, v >>= 8) p[i] = uint8_t(v);
}
inline void put_be16(uint8_t *p, uint16_t v) {
    p[0] = uint8_t(v >> 8);
    p[1] = uint8_t(v);
}

std::string hex(uint64_t v);

struct Header {
    uint32_t version = 0;
    uint64_t backing_file_offset = 0;
    uint32_t backing_file_size = 0;
    uint32_t cluster_bits = 0;
    uint64_t size = 0;
    uint32_t crypt_method = 0;
    uint32_t l1_size = 0;
    uint64_t l1_table_offset = 0;
    uint64_t refcount_table_offset = 0;
    uint32_t refcount_table_clusters = 0;
    uint32_t nb_snapshots = 0;
    uint64_t snapshots_offset = 0;
    uint64_t incompatible = 0, compatible = 0, autoclear = 0;
    uint32_t refcount_order = 4;
    uint32_t header_length = V2_HEADER_LENGTH;
    uint8_t compression_type = 0;
};

struct ParsedImage {
    Header h;
    std::string backing_file;    // empty: none
    std::string backing_format;  // empty: not recorded
    std::map<uint64_t, std::string> feature_names;  // (type << 8 | bit) -> name
};

// Parses and checks the first cluster of an image (buf holds
// min(cluster, file) bytes, or at least the fixed header when that is all
// there is).  Every field is bounded against `file_len`.  Pure: the fuzz
// target calls it directly.
Status parse_header(const uint8_t *buf, size_t len, uint64_t file_len, ParsedImage *out);

// An LRU cache of cluster-sized tables keyed by host offset
// (qcow2-cache.cpp).  Entries are shared_ptrs so that a table in use by a
// suspended coroutine survives; such a table, and a dirty one, is never
// evicted (the cache may run over its capacity until write-back).
class TableCache {
public:
    using Table = std::shared_ptr<std::vector<uint8_t>>;
    explicit TableCache(size_t capacity) : capacity_(capacity ? capacity : 1) {}
    Table find(uint64_t offset);
    void insert(uint64_t offset, Table t, bool dirty = false);
    void erase(uint64_t offset);
    // The table changed in memory: it must be written back.
    void mark_dirty(uint64_t offset, const Table &t);
    void mark_clean(uint64_t offset, const Table &t);
    std::vector<std::pair<uint64_t, Table>> dirty_tables() const;  // by offset
    bool has_dirty() const { return dirty_ > 0; }
    bool full_of_dirty() const { return lru_.size() >= capacity_ && dirty_ > 0; }
    void shrink();  // drops clean, unused tables down to the capacity
    void clear() { lru_.clear(); map_.clear(); dirty_ = 0; }
    size_t capacity() const { return capacity_; }

private:
    struct Entry {
        uint64_t offset;
        Table t;
        bool dirty;
    };
    size_t capacity_;
    size_t dirty_ = 0;
    std::list<Entry> lru_;  // front = most recent
    std::unordered_map<uint64_t, std::list<Entry>::iterator> map_;
};

// An allocating write between taking its clusters and linking them in its
// L2 table: requests for the same guest clusters wait on `done`.
struct InFlight {
    uint64_t first = 0, n = 0;  // guest clusters
    CoMutex done;               // held by the writer until it is linked in
};

enum class ClusterType { Unallocated, ZeroPlain, ZeroAlloc, Normal, Compressed };

struct State : NodeState {
    ParsedImage img;
    Header &h() { return img.h; }
    int cluster_bits = 16;
    int64_t cluster_size = 65536;
    int l2_bits = 13;           // entries per L2 table = 1 << l2_bits
    int rb_bits = 15;           // refcounts per block = 1 << rb_bits
    int refcount_bits = 16;
    int csize_shift = 0;        // compressed descriptor: sector-count field start
    uint64_t csize_mask = 0;
    uint64_t coffset_mask = 0;
    std::vector<uint64_t> l1;        // host-endian copy of the active L1 table
    std::vector<uint64_t> reftable;  // host-endian copy of the refcount table
    bool reftable_loaded = false;    // read-only opens load it when needed (load_reftable)
    TableCache l2_cache{16};
    TableCache rb_cache{4};
    std::set<uint64_t> l2_offsets;   // metadata clusters, for the overlap check
    std::set<uint64_t> rb_offsets;
    CoMutex lock;                    // metadata updates and lookups
    std::list<std::shared_ptr<InFlight>> in_flight;  // allocating writes (s->lock)
    // Write-back dependencies (qcow2-cache.cpp): dirty L2 tables may point
    // at clusters whose refcounts are not on disk yet / dirty refcount
    // blocks hold decrements whose L2 entries are not on disk yet.
    bool l2_needs_rb = false;
    bool rb_needs_l2 = false;
    // Dirty L2 tables point at new clusters whose data (the guest's write
    // or a copy-on-write) may not be on disk yet: a flush goes first, or a
    // power failure could leave an entry pointing past the end of the file
    // or at a cluster without its backing data (QEMU's depends_on_flush).
    bool l2_needs_data = false;
    int64_t free_index = -1;         // every cluster >= this has refcount 0 (-1: unknown)
    // The file is grown ahead of allocations, in chunks, with zero-range
    // fallocate (qcow2-refcount.cpp, preallocate): data writes into new
    // clusters then do not extend the file, which file systems serialize
    // (ext4 takes the inode lock exclusively and waits for extending
    // O_DIRECT writes).  Close truncates the file back to free_index.
    int64_t prealloc_end = -1;       // the file's length after our last growth (-1: never grown)
    bool prealloc_off = false;       // the file cannot do it cheaply (no zero-range)
    bool header_updated = false;     // autoclear bits dropped on first write
    bool strict_backing = false;
    bool corrupt = false;            // a corruption was found: no more writes
    uint64_t comp_next = 0;          // where the next compressed cluster may go (0: a new cluster)
    // The last decompressed cluster.
    uint64_t zcache_offset = UINT64_MAX;
    std::vector<uint8_t> zcache;
    std::string backing_display;     // the header's name, as recorded
};

// --- qcow2-cache / mapping (qcow2-cluster.cpp) ---------------------------------

// Loads (through the cache) the L2 table or refcount block at `offset`.
Task<int> load_table(BlockDriverState *bs, TableCache &cache, uint64_t offset,
                     TableCache::Table *out);
// Write-back (qcow2-cache.cpp); the caller holds s->lock.  Each writes its
// cache's dirty tables after what they depend on; none flushes the file at
// the end (the caller or the generic flush does).
Task<int> write_back_l2(BlockDriverState *bs);
Task<int> write_back_rb(BlockDriverState *bs);
Task<int> write_back_all(BlockDriverState *bs);
// Called before refcounts rise for clusters that tables will point at /
// before refcounts drop for references that tables just dropped: record
// the dependency (resolving the opposite one first).
Task<int> refs_will_point_at_new(BlockDriverState *bs);
Task<int> refs_will_drop(BlockDriverState *bs);
// An L2 table now points at new clusters just written (data, a copy-on-
// write, compressed data): dirty, and not written back before a flush has
// put that data on disk (l2_needs_data).  Caller holds s->lock.
void l2_points_at_new_data(State *s, uint64_t l2_off, const TableCache::Table &t);
// Flushes the file below (the orderings' barrier).
Task<int> flush_file(BlockDriverState *bs);

struct Mapping {
    ClusterType type = ClusterType::Unallocated;
    uint64_t host = 0;     // byte offset in the file of `offset` (Normal); descriptor (Compressed)
    int64_t bytes = 0;     // how far this mapping holds (> 0)
    bool copied = false;   // the L2 entry has OFLAG_COPIED (Normal)
};
// Maps [offset, offset + bytes) as far as one kind of mapping holds, within
// one L2 table.  Caller holds s->lock.  Negative errno on corrupt tables.
Task<int> get_mapping(BlockDriverState *bs, int64_t offset, int64_t bytes, Mapping *m);

Task<int> co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes, const uint8_t *buf,
                     int flags);
Task<int> co_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes, int flags);
// For other parts of the write path (caller holds s->lock): drops the
// stale autoclear bits once; waits out overlapping allocations in flight
// (true: it waited, look again); the L2 table for a guest offset.
Task<int> prepare_write(BlockDriverState *bs);
Task<bool> wait_for_overlapping(State *s, uint64_t first, uint64_t n);
Task<int> ensure_l2_for(BlockDriverState *bs, int64_t guest, TableCache::Table *t, uint64_t *l2_off);
// Whole clusters, compressed (qcow2-compress.cpp).
Task<int> write_compressed(BlockDriverState *bs, int64_t offset, int64_t bytes, const uint8_t *buf);
Task<int> co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes);
// Reads guest data; `locked`: the caller holds s->lock (copy-on-write).
Task<int> read_range(BlockDriverState *bs, int64_t offset, int64_t bytes, uint8_t *buf,
                     bool locked);
// Whether [off, off + len) in the file overlaps metadata other than tables
// of kind `self` (data is never written over metadata, nor one table over
// another kind).
enum class MetaKind { Data, L2, Refblock };
bool overlaps_metadata(State *s, uint64_t off, uint64_t len, MetaKind self);

// --- overlap checks and the corrupt flag (qcow2-overlap.cpp) ------------------

// The structure [off, off + len) overlaps, by QEMU's names ("active L1
// table", "refcount block", ...), or nullptr.
const char *metadata_overlap(State *s, uint64_t off, uint64_t len, MetaKind self);
// Marks the image corrupt (once, with a warning naming `what`); returns -EIO.
Task<int> signal_corruption(BlockDriverState *bs, const std::string &what);
// 0, or the corruption signal for a `verb` ("write on", "free of", "discard
// of") that would touch metadata.
Task<int> check_overlap(BlockDriverState *bs, const char *verb, uint64_t off, uint64_t len, MetaKind self);
// Before L2 entries are replaced: what they reference may be freed (no
// metadata, enough references), so the replacement cannot fail halfway.
Task<int> check_release(BlockDriverState *bs, const std::vector<uint64_t> &old, const char *verb);
// The host byte range an L2 entry holds (len 0: none).
void entry_range(State *s, uint64_t e, uint64_t *off, uint64_t *len);

// --- refcounts (qcow2-refcount.cpp) --------------------------------------------

// Reads the refcount table if this node has not yet (opened read-only, as
// backing files are; commit may make it writable later).
Task<int> load_reftable(BlockDriverState *bs);
Task<int> get_refcount(BlockDriverState *bs, int64_t cluster, uint64_t *out);
Task<int> update_refcount(BlockDriverState *bs, int64_t cluster, int delta);
// Allocates n contiguous clusters with refcount 1; returns the byte offset or
// negative errno.  Caller holds s->lock.
Task<int64_t> alloc_clusters(BlockDriverState *bs, int64_t n);
// Sets entry i of a refcount block whose entries are `bits` wide.
void refcount_entry_set(int bits, uint8_t *blk, uint64_t i, uint64_t v);
// Grows the file to at least `end` (and a chunk more) ahead of data writes
// to new clusters (see State::prealloc_end); best effort.
Task<void> preallocate(BlockDriverState *bs, int64_t end);
// Gives the preallocated tail back on close (see State::prealloc_end).
Task<int> trim_preallocation(BlockDriverState *bs);
// Drops one reference of each host cluster in [off, off + len).
Task<int> free_range(BlockDriverState *bs, uint64_t off, uint64_t len);

struct CheckResult {
    int64_t corruptions = 0, leaks = 0, check_errors = 0;
    int64_t corruptions_fixed = 0, leaks_fixed = 0;
    int64_t image_end_offset = 0, total_clusters = 0;
    int64_t allocated_clusters = 0, fragmented_clusters = 0, compressed_clusters = 0;
    std::vector<std::string> messages;  // "Leaked cluster 5 refcount=1 reference=0", ...
};
// What check may repair (qemu-img check -r leaks: leaks; -r all: both).
enum CheckFix { CHECK_FIX_LEAKS = 1, CHECK_FIX_ERRORS = 2 };
// Cross-checks every reference against the refcounts (qemu-img check's
// rules and detail lines); `fix` (CheckFix bits) repairs as qemu-img does:
// leaked refcounts dropped, missing ones raised, COPIED flags corrected,
// the refcount structure rebuilt when a used cluster has refcount 0.
Task<int> check(BlockDriverState *bs, int fix, CheckResult *res);
Task<int> check_locked(BlockDriverState *bs, int fix, CheckResult *res);  // caller holds s->lock

// --- resize and repair (qcow2-resize.cpp, qcow2-repair.cpp) --------------------

// The driver's co_truncate: grow (L1 growth as needed) or shrink (clusters
// past the end released, the file cut); the size a multiple of 512.
Task<int> co_truncate(BlockDriverState *bs, int64_t size);
// check -r all's refcount rebuild: a fresh refcount table and blocks
// holding `refs` (one count per host cluster; grows with what it places),
// placed first-fit in clusters nobody references, as QEMU's.  Caller holds
// s->lock.
// write_header false: the header is left to the caller (amend writes it
// with a new refcount width in the same write).
Task<int> rebuild_refcounts(BlockDriverState *bs, std::vector<uint32_t> &refs, bool write_header = true);
// The references to each host cluster, counted as check counts them
// (qcow2-refcount.cpp).  Caller holds s->lock.
Task<int> count_references(BlockDriverState *bs, std::vector<uint32_t> &refs);
// The first write to an image with the dirty bit (lazy refcounts were in
// use when it was last closed uncleanly): repair it as QEMU does at open,
// then clear the bit.  Caller holds s->lock.
Task<int> repair_dirty(BlockDriverState *bs);

// --- create (qcow2-create.cpp) --------------------------------------------------

Status create(const std::string &filename, int64_t size, qapi::OptionDict &opts);
// The first cluster `h` (cs bytes, the fixed header of hlen bytes filled in)
// gets what follows the fixed header as qemu-img 7.2 lays it out: the
// backing format and (v3) feature table extensions, the end marker, the
// backing file name (its offset and size set in the fixed header).
Status write_header_tail(uint8_t *h, uint32_t hlen, int version, int64_t cs, const std::string &backing,
                         const std::string &backing_fmt);

// --- amend (qcow2-amend.cpp) ----------------------------------------------------

// qemu-img amend's changes to an image open read-write (an exclusive lock):
// unset fields are left as they are.  Errors are qemu-img 7.2's texts.
struct AmendOptions {
    std::optional<int> version;         // compat: 2 (0.10) or 3 (1.1)
    std::optional<bool> lazy_refcounts;
    std::optional<int> refcount_order;  // refcount_bits = 1 << order
};
Status amend(BlockDriverState *bs, const AmendOptions &o);

}  // namespace mb::qcow2

namespace mb {
// For tools: the qcow2 check of a node opened with driver qcow2.
// fix: qcow2::CheckFix bits (true: leaks only).
Status qcow2_check(BlockDriverState *bs, int fix, qcow2::CheckResult *res);
}  // namespace mb
