// The qcow2 driver: open (tables and the backing chain), reads, block
// status, info, and the driver table.  See qcow2.h for the file map.
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "block/aio.h"
#include "block/drivers/qcow2.h"
#include "block/file-id.h"
#include "block/warn.h"

namespace mb {

using namespace qcow2;

namespace {

// The chain being opened, to refuse loops (opening is synchronous and
// recursive through bdrv_open_child, so a stack is enough).
std::vector<FileId> g_opening;
// How many images a chain may have (the option max-chain-depth of the top
// image sets it for the whole open).  Opening recurses once per image, so
// the ceiling is what the default 8 MiB stack was measured to hold with
// room to spare (3000 images open in 1.9 s).
constexpr int64_t DEFAULT_CHAIN_DEPTH = 2048;
constexpr int64_t MAX_CHAIN_DEPTH = 3000;
int64_t g_chain_limit = DEFAULT_CHAIN_DEPTH;

struct ChainGuard {
    bool pushed = false;
    ~ChainGuard() {
        if (pushed) g_opening.pop_back();
    }
};

int qcow2_probe(const uint8_t *buf, size_t len, const char *) {
    if (len >= 8 && be32(buf) == QCOW2_MAGIC && (be32(buf + 4) == 2 || be32(buf + 4) == 3)) return 100;
    return 0;
}

Status read_file(BlockDriverState *bs, uint64_t off, uint64_t len, uint8_t *buf, const char *what) {
    int r = sync_wait(bdrv_co_preadv(bs->file(), off, len, buf));
    if (r < 0) return PosixError(std::string("Could not read ") + what, -r);
    return Status::OK();
}

#ifdef _WIN32
// Windows names take either slash, and a drive letter makes them absolute.
constexpr const char *kSlashes = "/\\";
bool is_absolute(const std::string &p) {
    return p[0] == '/' || p[0] == '\\' || (p.size() > 1 && p[1] == ':');
}
#else
constexpr const char *kSlashes = "/";
bool is_absolute(const std::string &p) { return p[0] == '/'; }
#endif

std::string dirname_of(const std::string &path) {
    size_t slash = path.find_last_of(kSlashes);
    if (slash == std::string::npos) return "";
    return path.substr(0, slash + 1);
}

// Copies every entry of `from` into `to`, replacing what is there; nested
// options (backing.file.lock-protocol=...) merge into the nested tree.
void merge_options(qapi::OptionDict &to, const qapi::OptionDict &from) {
    for (const std::string &k : from.keys()) {
        switch (*from.type(k)) {
        case qapi::OptionType::Dict:
            if (qapi::OptionDict *d = to.dict(k)) merge_options(*d, *from.dict(k));
            else to.set_dict(k, *from.dict(k));
            break;
        case qapi::OptionType::Int: to.set_int(k, *from.get_int(k)); break;
        case qapi::OptionType::Bool: to.set_bool(k, *from.get_bool(k)); break;
        case qapi::OptionType::Null: to.set_null(k); break;
        default: to.set_str(k, *from.get_text(k)); break;
        }
    }
}

Status open_backing(BlockDriverState *bs, State *s, qapi::OptionDict &opts) {
    // Per-node overrides such as backing.lock=exclusive name no file: the
    // header still says which file, and the overrides apply to it.
    qapi::OptionDict overrides;
    if (const qapi::OptionDict *d = opts.dict("backing")) {
        const qapi::OptionDict *f = d->dict("file");
        const bool names_file = d->has("filename") || d->has("driver") ||
                                (d->has("file") && (!f || f->has("filename") || f->has("driver")));
        if (!names_file && !s->img.backing_file.empty()) {
            overrides = *d;
            opts.erase("backing");
        }
    }
    if (opts.has("backing")) {
        if (opts.is_null("backing")) return Status::OK();
    } else if (!s->img.backing_file.empty()) {
        std::string name = s->img.backing_file;
        std::string path = name;
        // A protocol name (nbd://..., rbd:pool/image) is not a relative path.
        if (!is_absolute(name) && !bdrv_find_protocol(name))
            path = dirname_of(bs->file()->bs->filename) + name;
        qapi::OptionDict b, f;
        f.set_str("filename", path);
        b.set_dict("file", f);
        // Never probe a recorded format into another one.
        if (!s->img.backing_format.empty()) b.set_str("driver", s->img.backing_format);
        merge_options(b, overrides);
        opts.set_dict("backing", b);
    } else {
        return Status::OK();
    }
    auto c = bdrv_open_child(bs, opts, "backing", ChildRole::Backing);
    if (!c.ok()) {
        // Said once for the whole chain, not once per image above the one
        // that failed.
        Status st = c.take_status();
        if (st.message().rfind("Could not open backing file", 0) == 0) return st;
        return st.prefix("Could not open backing file");
    }
    BlockDriverState *b = (*c)->bs.get();
    if (s->strict_backing && (b->open_flags & BDRV_O_PROBED)) {
        return Status::Error(EINVAL, "Backing file '" + b->filename + "' has no recorded format",
                             "probing guessed raw; strict-backing refuses a guessed raw backing file "
                             "(record the format with qemu-img rebase -F)");
    }
    return Status::OK();
}

// Reads the header, the L1 and the refcount table into a new State: at open,
// and again when a migration target activates (the source may have written
// since this node was opened inactive).
Status load_state(BlockDriverState *bs, const qapi::OptionDict &opts, int64_t file_len,
                  std::unique_ptr<State> *out) {
    auto s = std::make_unique<State>();
    // The fixed header first (to learn the cluster size), then the cluster.
    std::vector<uint8_t> buf(std::min<int64_t>(file_len, 112));
    MB_TRY(read_file(bs, 0, buf.size(), buf.data(), "qcow2 header"));
    if (buf.size() >= 24 && be32(buf.data()) == QCOW2_MAGIC) {
        uint32_t cb = be32(buf.data() + 20);
        if (cb >= MIN_CLUSTER_BITS && cb <= MAX_CLUSTER_BITS) {
            buf.resize(std::min<int64_t>(file_len, int64_t(1) << cb));
            MB_TRY(read_file(bs, 0, buf.size(), buf.data(), "qcow2 header"));
        }
    }
    MB_TRY(parse_header(buf.data(), buf.size(), file_len, &s->img));
    Header &h = s->h();
    s->cluster_bits = h.cluster_bits;
    s->cluster_size = int64_t(1) << h.cluster_bits;
    s->l2_bits = h.cluster_bits - 3;
    s->refcount_bits = 1 << h.refcount_order;
    s->rb_bits = h.cluster_bits + 3 - h.refcount_order;
    s->csize_shift = 62 - (h.cluster_bits - 8);
    s->csize_mask = (1ull << (h.cluster_bits - 8)) - 1;
    s->coffset_mask = (1ull << s->csize_shift) - 1;
    s->backing_display = s->img.backing_file;

    if (bs->writable()) {
        // check -r (check-repair=on) opens it to repair it, as QEMU's BDRV_O_CHECK.
        if ((h.incompatible & INCOMPAT_CORRUPT) && !opts.get_bool("check-repair").value_or(false)) {
            return Status::Error(EACCES, "qcow2: Image is corrupt; cannot be opened read/write",
                                 "Run 'qemu-img check -r all' to repair it");
        }
        // A dirty image (lazy refcounts in use, not closed) is repaired
        // before its first write: repair_dirty (qcow2-repair.cpp).
    }

    // Options.
    // Cache sizes in bytes, rounded down to whole tables, never below a
    // floor: a refcount update can touch two blocks at once (a range that
    // crosses a block boundary), so the refcount cache holds at least two.
    auto tables = [&](const char *name, int64_t dflt, int64_t floor) -> Result<size_t> {
        int64_t v = opts.get_int(name).value_or(dflt);
        if (v < 0 || v > (int64_t(1) << 32)) {
            return Status::Error(EINVAL, "Invalid value '" + std::to_string(v) + "' for parameter '" +
                                             bdrv_option_name(bs, name) + "'",
                                 "Expected 0 to 4G bytes");
        }
        return size_t(std::max<int64_t>(floor, v / s->cluster_size));
    };
    auto l2_tables = tables("l2-cache-size", 1 << 20, 1);
    if (!l2_tables.ok()) return l2_tables.take_status();
    auto rb_tables = tables("refcount-cache-size", 256 << 10, 2);
    if (!rb_tables.ok()) return rb_tables.take_status();
    s->l2_cache = TableCache(*l2_tables);
    s->rb_cache = TableCache(*rb_tables);
    s->strict_backing = opts.get_bool("strict-backing").value_or(false);

    // L1 and refcount tables (bounded and inside the file: parse_header).
    if (h.l1_size) {
        std::vector<uint8_t> t(uint64_t(h.l1_size) * 8);
        MB_TRY(read_file(bs, h.l1_table_offset, t.size(), t.data(), "L1 table"));
        s->l1.resize(h.l1_size);
        for (uint32_t i = 0; i < h.l1_size; i++) {
            s->l1[i] = be64(&t[i * 8]);
            uint64_t o = s->l1[i] & L1E_OFFSET_MASK;
            if (o) s->l2_offsets.insert(o);
        }
    }
    // The refcount table only matters for writes (and checks, which load
    // it themselves): a backing file's stays on disk, so a chain costs
    // memory for its L1 tables only.
    if (!bs->read_only) {
        s->reftable_loaded = true;
        std::vector<uint8_t> t(uint64_t(h.refcount_table_clusters) * s->cluster_size);
        MB_TRY(read_file(bs, h.refcount_table_offset, t.size(), t.data(), "refcount table"));
        s->reftable.resize(t.size() / 8);
        for (size_t i = 0; i < s->reftable.size(); i++) {
            s->reftable[i] = be64(&t[i * 8]);
            uint64_t o = s->reftable[i] & REFT_OFFSET_MASK;
            if (o) s->rb_offsets.insert(o);
        }
    }
    *out = std::move(s);
    return Status::OK();
}

Status qcow2_open(BlockDriverState *bs, qapi::OptionDict &opts) {
    auto child = bdrv_open_child(bs, opts, "file", ChildRole::File);
    if (!child.ok()) return child.take_status();
    BlockDriverState *fbs = (*child)->bs.get();
    int64_t file_len = bdrv_getlength(fbs);
    if (file_len < 0) return PosixError("Could not get the length of '" + fbs->filename + "'", (int)-file_len);

    // Loops: the same file twice in the chain being opened.
    ChainGuard guard;
    std::optional<FileId> id;
    if (!fbs->filename.empty() && (id = file_id(fbs->filename))) {
        for (auto &e : g_opening) {
            if (e == *id) {
                return Status::Error(ELOOP, "Backing chain loop: '" + fbs->filename +
                                                "' is its own backing file");
            }
        }
        if (g_opening.empty()) {
            int64_t lim = opts.get_int("max-chain-depth").value_or(DEFAULT_CHAIN_DEPTH);
            if (lim < 1 || lim > MAX_CHAIN_DEPTH) {
                return Status::Error(EINVAL, "Invalid value '" + std::to_string(lim) + "' for parameter '" +
                                                 bdrv_option_name(bs, "max-chain-depth") + "'",
                                     "Expected 1 to " + std::to_string(MAX_CHAIN_DEPTH));
            }
            g_chain_limit = lim;
        }
        if (int64_t(g_opening.size()) >= g_chain_limit) {
            return Status::Error(ELOOP, "Backing chain longer than " + std::to_string(g_chain_limit) +
                                            " images: stopped at '" + fbs->filename + "'",
                                 "Raise the limit with max-chain-depth (at most " +
                                     std::to_string(MAX_CHAIN_DEPTH) + ")");
        }
        g_opening.push_back(*id);
        guard.pushed = true;
    }

    std::unique_ptr<State> s;
    MB_TRY(load_state(bs, opts, file_len, &s));
    bs->opaque = std::move(s);
    State *sp = bs->state<State>();
    return open_backing(bs, sp, opts);
}

Status qcow2_invalidate_cache(BlockDriverState *bs) {
    int64_t file_len = bdrv_getlength(bs->file()->bs.get());
    if (file_len < 0) return PosixError("Could not get the length of '" + bs->filename + "'", (int)-file_len);
    std::unique_ptr<State> s;
    MB_TRY(load_state(bs, bs->options, file_len, &s));
    State *old = bs->state<State>();
    s->backing_display = old->backing_display;
    bs->opaque = std::move(s);
    return Status::OK();
}

int64_t qcow2_getlength(BlockDriverState *bs) { return int64_t(bs->state<State>()->h().size); }

// Decompresses the cluster described by `desc` into s->zcache.
Task<int> load_compressed(BlockDriverState *bs, uint64_t desc) {
    State *s = bs->state<State>();
    uint64_t coff = desc & s->coffset_mask;
    if (s->zcache_offset == coff) co_return 0;
    uint64_t nsec = ((desc >> s->csize_shift) & s->csize_mask) + 1;
    int64_t file_len = bdrv_getlength(bs->file()->bs.get());
    if (file_len < 0) co_return (int)file_len;
    if (coff < uint64_t(s->cluster_size) || coff >= uint64_t(file_len)) co_return -EIO;
    uint64_t clen = nsec * 512 - (coff & 511);
    clen = std::min<uint64_t>(clen, uint64_t(file_len) - coff);
    std::vector<uint8_t> in(clen);
    bdrv_debug_event(bs->file(), "read_compressed");
    int r = co_await bdrv_co_preadv(bs->file(), coff, clen, in.data());
    if (r < 0) co_return r;
    s->zcache_offset = UINT64_MAX;
    s->zcache.assign(s->cluster_size, 0);
    z_stream z{};
    if (inflateInit2(&z, -12) != Z_OK) co_return -ENOMEM;
    z.next_in = in.data();
    z.avail_in = clen;
    z.next_out = s->zcache.data();
    z.avail_out = s->cluster_size;
    int zr = inflate(&z, Z_FINISH);
    bool ok = (zr == Z_STREAM_END || zr == Z_BUF_ERROR) && z.avail_out == 0;
    inflateEnd(&z);
    if (!ok) co_return -EIO;
    s->zcache_offset = coff;
    co_return 0;
}

Task<int> qcow2_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes, uint8_t *buf, int) {
    State *s = bs->state<State>();
    if (uint64_t(offset) > s->h().size || uint64_t(bytes) > s->h().size - offset) co_return -EINVAL;
    co_return co_await read_range(bs, offset, bytes, buf, false);
}

Task<int> qcow2_co_block_status(BlockDriverState *bs, int64_t offset, int64_t bytes, int64_t *pnum,
                                int64_t *map, BlockDriverState **file) {
    State *s = bs->state<State>();
    Mapping m;
    co_await s->lock.lock();
    int r;
    {
        CoLockGuard g(s->lock);
        r = co_await get_mapping(bs, offset, bytes, &m);
    }
    if (r < 0) co_return r;
    *pnum = m.bytes;
    switch (m.type) {
    case ClusterType::Unallocated: co_return 0;
    case ClusterType::ZeroPlain:
    case ClusterType::ZeroAlloc: co_return BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED;
    case ClusterType::Compressed: co_return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED | BDRV_BLOCK_COMPRESSED;
    case ClusterType::Normal:
        *map = m.host;
        *file = bs->file()->bs.get();
        co_return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED | BDRV_BLOCK_OFFSET_VALID;
    }
    co_return -EIO;
}

Task<int> qcow2_co_flush(BlockDriverState *bs) {
    // Dirty tables go to the file in dependency order; the generic layer
    // then flushes the file.
    State *s = bs->state<State>();
    co_await s->lock.lock();
    CoLockGuard g(s->lock);
    co_return co_await write_back_all(bs);
}

// Closing writes back what the cache holds (and flushes it, as QEMU's
// close does): an image must not depend on a last flush from the user.
void qcow2_close(BlockDriverState *bs) {
    State *s = bs->state<State>();
    if (!s || !bs->writable() || (bs->open_flags & BDRV_O_INACTIVE)) return;
    if (!s->l2_cache.has_dirty() && !s->rb_cache.has_dirty() && s->prealloc_end < 0) return;
    int r = sync_wait(qcow2_co_flush(bs));
    if (r == 0) r = sync_wait(trim_preallocation(bs));
    if (r == 0) r = sync_wait(bdrv_co_flush(bs->file()->bs.get()));
    if (r < 0) {
        warn_report("qcow2: could not write back the metadata of '" + bs->filename + "' on close: " +
                    strerror(-r));
    }
}

// A node that stops writing (its last writer goes, it closes, reopens
// read-only) first gives back the file's preallocated tail: the file child
// still has its old permissions here (children are committed after their
// parent), which the truncation needs.  Best effort: the tail only costs
// space.
void qcow2_set_perm(BlockDriverState *bs, PermPair cum) {
    State *s = bs->state<State>();
    if (!s || s->prealloc_end < 0 || (cum.perm & BLK_PERM_WRITE) || !bs->writable()) return;
    (void)sync_wait(trim_preallocation(bs));
}

void qcow2_get_info(BlockDriverState *bs, FormatInfo *info) {
    State *s = bs->state<State>();
    const Header &h = s->h();
    auto &f = info->fields;
    f.emplace_back("cluster_size", std::to_string(s->cluster_size));
    if (!s->backing_display.empty()) {
        f.emplace_back("backing file", s->backing_display);
        if (!s->img.backing_format.empty()) f.emplace_back("backing file format", s->img.backing_format);
    }
    f.emplace_back("compat", h.version == 2 ? "0.10" : "1.1");
    if (h.version == 3) {
        f.emplace_back("compression type", "zlib");
        f.emplace_back("lazy refcounts", h.compatible & COMPAT_LAZY_REFCOUNTS ? "true" : "false");
        f.emplace_back("refcount bits", std::to_string(s->refcount_bits));
        f.emplace_back("corrupt", h.incompatible & INCOMPAT_CORRUPT ? "true" : "false");
        f.emplace_back("extended l2", "false");
    }
    if (h.incompatible & INCOMPAT_DIRTY) f.emplace_back("dirty", "true");
}

Status qcow2_create(const std::string &filename, int64_t size, qapi::OptionDict &opts) {
    return qcow2::create(filename, size, opts);
}

}  // namespace

namespace qcow2 {

Task<int> read_range(BlockDriverState *bs, int64_t offset, int64_t bytes, uint8_t *buf, bool locked) {
    State *s = bs->state<State>();
    while (bytes > 0) {
        Mapping m;
        int r;
        if (!locked) co_await s->lock.lock();
        r = co_await get_mapping(bs, offset, bytes, &m);
        if (!locked) s->lock.unlock();
        if (r < 0) co_return r;
        int64_t n = m.bytes;
        switch (m.type) {
        case ClusterType::Unallocated: {
            int64_t blen = 0;
            if (BdrvChild *b = bs->backing()) {
                blen = bdrv_getlength(b->bs.get());
                if (blen < 0) co_return (int)blen;
            }
            int64_t from_backing = std::clamp<int64_t>(blen - offset, 0, n);
            if (from_backing) {
                bdrv_debug_event(bs->file(), "read_backing_aio");
                r = co_await bdrv_co_preadv(bs->backing(), offset, from_backing, buf);
                if (r < 0) co_return r;
            }
            memset(buf + from_backing, 0, n - from_backing);
            break;
        }
        case ClusterType::ZeroPlain:
        case ClusterType::ZeroAlloc: memset(buf, 0, n); break;
        case ClusterType::Normal:
            bdrv_debug_event(bs->file(), "read_aio");
            r = co_await bdrv_co_preadv(bs->file(), m.host, n, buf);
            if (r < 0) co_return r;
            break;
        case ClusterType::Compressed: {
            // Decompression shares s->zcache: hold the lock while using it.
            if (!locked) co_await s->lock.lock();
            r = co_await load_compressed(bs, m.host);
            if (r == 0) memcpy(buf, s->zcache.data() + (offset & (s->cluster_size - 1)), n);
            if (!locked) s->lock.unlock();
            if (r < 0) co_return r;
            break;
        }
        }
        offset += n;
        bytes -= n;
        buf += n;
    }
    co_return 0;
}

}  // namespace qcow2

Status qcow2_check(BlockDriverState *bs, int fix, qcow2::CheckResult *res) {
    if (!bs->drv || strcmp(bs->drv->format_name, "qcow2") != 0) {
        return Status::Error(ENOTSUP, "This image format does not support checks");
    }
    int r = sync_wait(qcow2::check(bs, fix, res));
    if (r < 0) return PosixError("Check failed", -r);  // qemu-img's text
    return Status::OK();
}

extern const BlockDriver bdrv_qcow2;
const BlockDriver bdrv_qcow2 = {
    .format_name = "qcow2",
    .is_protocol = false,
    .sharable_writes = false,
    .protocols = nullptr,
    .probe = qcow2_probe,
    .open = qcow2_open,
    .close = qcow2_close,
    .child_perm = nullptr,
    .check_perm = nullptr,
    .set_perm = qcow2_set_perm,
    .abort_perm_update = nullptr,
    .co_preadv = qcow2_co_preadv,
    .co_pwritev = qcow2::co_pwritev,
    .co_pwrite_zeroes = qcow2::co_pwrite_zeroes,
    .co_pdiscard = qcow2::co_pdiscard,
    .co_flush = qcow2_co_flush,
    .co_truncate = qcow2::co_truncate,
    .co_block_status = qcow2_co_block_status,
    .getlength = qcow2_getlength,
    .get_allocated_size = nullptr,
    .get_info = qcow2_get_info,
    .create = qcow2_create,
    .reopen_rw = nullptr,
    .invalidate_cache = qcow2_invalidate_cache,
    .can_compress = true,
};

}  // namespace mb
