// The graph: opening nodes, edges, and the permission transaction.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <map>
#include <set>

#include "block/aio.h"
#include "block/block_int.h"
#include "block/plugin/plugin.h"
#include "block/warn.h"

namespace mb {

using qapi::CacheMode;
using qapi::LockMode;
using qapi::OptionDict;

// --- opening -----------------------------------------------------------------

namespace {

int next_node_id = 0;

// The base options a node reads before its driver is known (to probe, the
// file child must be opened with what it inherits).  Values that do not
// parse are left to validation, which names them properly.
InheritedOptions lenient_base(const OptionDict &opts, const InheritedOptions &inh) {
    InheritedOptions o = inh;
    if (auto ro = opts.get_bool("read-only")) o.read_only = *ro;
    if (auto s = opts.get_str("read-only")) o.read_only = (*s == "on" || *s == "true");
    if (auto s = opts.get_str("cache"))
        if (auto c = qapi::parse_CacheMode(*s)) o.cache = *c;
    if (auto s = opts.get_str("lock"))
        if (auto l = qapi::parse_LockMode(*s)) o.lock = *l;
    return o;
}

// Opens the file child alone, read-only and without locks, to read the
// first bytes of the image; the node is closed again before the real open.
Result<const BlockDriver *> probe_format(const OptionDict &file_opts, const InheritedOptions &inh,
                                         std::string_view path, std::string *filename) {
    InheritedOptions pinh = inh;
    pinh.read_only = true;
    auto child = bdrv_open(file_opts, pinh, option_path_join(path, "file"));
    if (!child.ok()) return child.take_status();
    BlockDriverState *fbs = child->get();
    *filename = fbs->filename;
    int64_t len = bdrv_getlength(fbs);
    if (len < 0) return PosixError("Could not get the length of '" + fbs->filename + "'", (int)-len);
    std::vector<uint8_t> buf(BDRV_PROBE_BYTES, 0);
    size_t n = std::min<int64_t>(len, BDRV_PROBE_BYTES);
    // Reads are aligned for O_DIRECT by the file driver itself.
    int ret = sync_wait(fbs->drv->co_preadv(fbs, 0, n, buf.data(), 0));
    if (ret < 0) return PosixError("Could not read image for determining its format", -ret);
    const BlockDriver *drv = bdrv_probe_format(buf.data(), n, fbs->filename.c_str());
    return drv;
}

}  // namespace

Result<BdrvRef> bdrv_open(OptionDict opts, const InheritedOptions &inh, std::string_view path) {
    std::string pfx(path);
    bool probed = false;
    std::string probed_name;

    // 1. The driver: given, implied by a protocol filename, or probed.
    const BlockDriver *drv = nullptr;
    auto driver_name = opts.get_str("driver");
    std::string searched;  // module directories, for an unknown driver
    if (driver_name) {
        auto found = bdrv_find_or_load_driver(*driver_name, &searched);
        if (!found.ok()) return found.take_status();
        drv = *found;
        // Unknown names are reported by validation, with the valid list.
    } else if (auto fn = opts.get_str("filename")) {
        auto found = bdrv_find_or_load_protocol(*fn);
        if (!found.ok()) return found.take_status();
        drv = *found;
        if (!drv) drv = bdrv_find_driver("file");
        opts.set_str("driver", drv->format_name);
    } else if (OptionDict *file = opts.dict("file")) {
        std::string fname;
        auto p = probe_format(*file, lenient_base(opts, inh), pfx, &fname);
        if (!p.ok()) return p.take_status();
        drv = *p;
        if (!drv) {
            drv = bdrv_find_driver("raw");
            probed = true;
            probed_name = fname;
        }
        opts.set_str("driver", drv->format_name);
    }
    if (Status st = qapi::validate_node_options(opts, opts.get_str("driver").value_or(""), pfx);
        !st.ok()) {
        if (!drv && !searched.empty()) st.add_detail(searched);
        return st;
    }
    int qemu_flags = 0;
    MB_TRY(bdrv_translate_qemu_options(opts, inh, pfx, &qemu_flags));
    if (!drv) drv = bdrv_find_driver(*opts.get_str("driver"));
    if (!drv) return Status::Error(EINVAL, "Unknown driver '" + *opts.get_str("driver") + "'");

    // 2. The node and what it inherits.  (Messages name options by their
    // full path: "backing.file.aio".)
    auto *bs = new BlockDriverState();
    BdrvRef ref(bs);
    bs->drv = drv;
    bs->options = opts;
    bs->option_path = pfx;
    bs->role = inh.role;
    bs->node_name = opts.get_str("node-name").value_or(
        inh.node_name.empty() ? "#block" + std::to_string(next_node_id++) : inh.node_name);
    bs->read_only = opts.get_bool("read-only").value_or(inh.read_only);
    if (inh.role == NodeRole::Backing && !opts.has("read-only")) bs->read_only = true;
    bs->cache_mode = inh.cache;
    if (auto c = opts.get_str("cache")) bs->cache_mode = *qapi::parse_CacheMode(*c);
    bs->lock_mode = inh.lock;
    if (auto l = opts.get_str("lock")) bs->lock_mode = *qapi::parse_LockMode(*l);
    if (auto w = opts.get_int("lock-wait")) {
        if (*w < 0 || *w > 86400) {
            return Status::Error(EINVAL, "Invalid value '" + std::to_string(*w) +
                                             "' for parameter '" + option_path_join(pfx, "lock-wait") + "'",
                                 "Expected seconds from 0 to 86400");
        }
        bs->lock_wait_ms = *w * 1000;
    }
    if (!bs->read_only) bs->open_flags |= BDRV_O_RDWR;
    switch (bs->cache_mode) {
    case CacheMode::None: bs->open_flags |= BDRV_O_NOCACHE; break;
    case CacheMode::Directsync: bs->open_flags |= BDRV_O_NOCACHE | BDRV_O_WRITETHROUGH; break;
    case CacheMode::Writethrough: bs->open_flags |= BDRV_O_WRITETHROUGH; break;
    case CacheMode::Unsafe: bs->open_flags |= BDRV_O_NO_FLUSH; break;
    case CacheMode::Writeback: break;
    }
    if (inh.inactive || opts.get_bool("inactive").value_or(false)) bs->open_flags |= BDRV_O_INACTIVE;
    if (probed) bs->open_flags |= BDRV_O_PROBED;
    bs->open_flags |= qemu_flags;
    // As QEMU's raw driver: the warning only where a write could hit
    // sector 0.  A read-only open (info, check, -r) stays silent, so that
    // `--output=json 2>&1` remains JSON.
    if (probed && !bs->read_only) {
        warn_report("Image format was not specified for '" + probed_name +
                    "' and probing guessed raw.\n"
                    "         Automatically detecting the format is dangerous for raw "
                    "images, write operations on block 0 will be restricted.\n"
                    "         Specify the 'raw' format explicitly to remove the "
                    "restrictions.");
    }
    if (auto fn = opts.get_str("filename")) bs->filename = *fn;

    // 3. The driver opens, and opens its children through bdrv_open_child.
    Status st = drv->open(bs, opts);
    if (!st.ok()) {
        bs->drv = nullptr;  // close() is only for opened nodes
        if (bs->filename.empty() && bs->file()) bs->filename = bs->file()->bs->filename;
        return st;
    }
    if (bs->filename.empty() && bs->file()) bs->filename = bs->file()->bs->filename;
    bs->options = opts;
    return ref;
}

Result<BdrvChild *> bdrv_open_child(BlockDriverState *bs, OptionDict &opts, std::string_view name,
                                    ChildRole role) {
    std::string key(name);
    OptionDict child_opts;
    if (OptionDict *d = opts.dict(key)) {
        child_opts = *d;
    } else if (auto s = opts.get_str(key)) {
        child_opts.set_str("filename", *s);  // a BlockdevRef given as a filename
    } else {
        return Status::Error(EINVAL, "Parameter '" + key + "' is missing");
    }
    InheritedOptions inh;
    inh.read_only = bs->read_only || role == ChildRole::Backing;
    inh.cache = bs->cache_mode;
    inh.lock = role == ChildRole::Backing ? backing_lock_mode(bs->lock_mode) : bs->lock_mode;
    inh.role = role == ChildRole::Backing ? NodeRole::Backing : bs->role;
    inh.inactive = bs->open_flags & BDRV_O_INACTIVE;
    inh.node_name = option_path_join(bs->node_name, key);  // counts long backing runs
    auto child = bdrv_open(std::move(child_opts), inh,
                           bdrv_option_name(bs, key));
    if (!child.ok()) return child.take_status();
    if (role == ChildRole::File) {
        // The protocol's lock-wait follows its format's unless set.
        if (!(*child)->options.has("lock-wait")) (*child)->lock_wait_ms = bs->lock_wait_ms;
    }
    return bdrv_attach_child(bs, std::move(*child), key, role, bdrv_describe(bs));
}

BdrvChild *bdrv_attach_child(BlockDriverState *parent, BdrvRef child, std::string name,
                             ChildRole role, std::string parent_name) {
    auto c = std::make_unique<BdrvChild>();
    c->name = std::move(name);
    c->role = role;
    c->parent_bs = parent;
    c->parent_name = std::move(parent_name);
    c->bs = std::move(child);
    c->bs->parents.push_back(c.get());
    BdrvChild *raw = c.get();
    if (parent) parent->children.push_back(std::move(c));
    else c.release();  // a root edge is owned by its BlockBackend
    return raw;
}

void bdrv_detach_child(BlockDriverState *parent, BdrvChild *c) {
    BdrvRef child = c->bs;
    auto &v = parent->children;
    v.erase(std::remove_if(v.begin(), v.end(), [c](auto &p) { return p.get() == c; }), v.end());
    Status st = bdrv_refresh_perms(child.get());
    (void)st;  // fewer permissions only release locks
}

Status bdrv_create(std::string_view driver, const std::string &filename, int64_t size,
                   OptionDict opts) {
    const BlockDriver *drv = bdrv_find_driver(driver);
    if (!drv) return Status::Error(EINVAL, "Unknown driver '" + std::string(driver) + "'");
    if (size < 0) return Status::Error(EINVAL, "Invalid image size " + std::to_string(size));
    if (const PluginDriver *pd = plugin_of(drv)) return plugin_create(pd, filename, size, opts);
    if (!drv->create) return Status::Error(ENOTSUP, "Driver '" + std::string(driver) + "' does not support image creation");
    if (size < 0) return Status::Error(EINVAL, "Invalid image size " + std::to_string(size));
    return drv->create(filename, size, opts);
}


// --- permissions ---------------------------------------------------------------

Result<PermPair> bdrv_table_perms(const BlockDriverState *bs) {
    auto r = lock_mode_perms(bs->lock_mode, bs->read_only, bs->drv->sharable_writes, bs->role);
    if (!r.ok()) {
        Status st = r.take_status();
        return st.prefix(bs->filename.empty() ? bdrv_describe(bs) : "'" + bs->filename + "'");
    }
    return r;
}

namespace {

// The nodes below (and including) bs, parents before children.
std::vector<BlockDriverState *> topo_order(BlockDriverState *bs) {
    std::set<BlockDriverState *> seen;
    std::vector<BlockDriverState *> stack{bs}, all;
    while (!stack.empty()) {
        auto *n = stack.back();
        stack.pop_back();
        if (!seen.insert(n).second) continue;
        all.push_back(n);
        for (auto &c : n->children) stack.push_back(c->bs.get());
    }
    std::map<BlockDriverState *, int> indeg;
    for (auto *n : all)
        for (auto *p : n->parents)
            if (p->parent_bs && seen.count(p->parent_bs)) indeg[n]++;
    std::vector<BlockDriverState *> order, ready;
    for (auto *n : all)
        if (!indeg[n]) ready.push_back(n);
    while (!ready.empty()) {
        auto *n = ready.back();
        ready.pop_back();
        order.push_back(n);
        for (auto &c : n->children)
            if (--indeg[c->bs.get()] == 0) ready.push_back(c->bs.get());
    }
    return order;
}

PermPair edge_perm(const BdrvChild *c) { return c->has_pending ? c->pending : c->perm; }

Status default_child_perm(BlockDriverState *bs, BdrvChild *c, PermPair cum, PermPair *out) {
    (void)bs;
    if (c->role == ChildRole::Backing) {
        auto r = bdrv_table_perms(c->bs.get());
        if (!r.ok()) return r.take_status();
        *out = *r;
    } else {
        *out = cum;
    }
    return Status::OK();
}

void clear_pending(const std::vector<BlockDriverState *> &order) {
    for (auto *n : order)
        for (auto &c : n->children) c->has_pending = false;
}

}  // namespace

Status bdrv_refresh_perms(BlockDriverState *bs) {
    std::vector<BlockDriverState *> order = topo_order(bs);

    // 1. Compute: each node's cumulative perms from its parents, checked
    // against each other, then what it asks of its children.
    for (auto *n : order) {
        PermPair cum{0, BLK_PERM_ALL};
        for (auto *p : n->parents) {
            PermPair e = edge_perm(p);
            cum.perm |= e.perm;
            cum.shared &= e.shared;
        }
        for (auto *a : n->parents) {
            for (auto *b : n->parents) {
                if (a == b) continue;
                uint32_t bad = edge_perm(a).perm & ~edge_perm(b).shared;
                if (!bad) continue;
                int bit = __builtin_ctz(bad);
                clear_pending(order);
                return Status::Error(EPERM, "Conflicts with use by " + b->parent_name + " as '" +
                                                b->name + "', which does not allow '" +
                                                perm_name(bit) + "' on " + bdrv_describe(n));
            }
        }
        n->new_perm = cum;
        for (auto &c : n->children) {
            PermPair out;
            Status st;
            if (c->pinned) out = edge_perm(c.get());
            else if (n->drv->child_perm) n->drv->child_perm(n, c.get(), cum, &out);
            else st = default_child_perm(n, c.get(), cum, &out);
            if (!st.ok()) {
                clear_pending(order);
                return st;
            }
            c->pending = out;
            c->has_pending = true;
        }
    }

    // 2. Prepare every node (protocols take their new locks) or abort all.
    std::vector<BlockDriverState *> prepared;
    for (auto *n : order) {
        if (!n->drv->check_perm) continue;
        Status st = n->drv->check_perm(n, n->new_perm);
        if (!st.ok()) {
            for (auto it = prepared.rbegin(); it != prepared.rend(); ++it)
                (*it)->drv->abort_perm_update(*it);
            clear_pending(order);
            return st;
        }
        prepared.push_back(n);
    }

    // 3. Commit.
    for (auto *n : order) {
        if (n->drv->set_perm) n->drv->set_perm(n, n->new_perm);
        n->cur_perm = n->new_perm;
        for (auto &c : n->children) {
            c->perm = c->pending;
            c->has_pending = false;
        }
    }
    return Status::OK();
}

// --- migration hand-over ---------------------------------------------------------

namespace {

// Every node below (and including) bs.
std::vector<BlockDriverState *> subtree(BlockDriverState *bs) {
    std::vector<BlockDriverState *> all{bs};
    std::set<BlockDriverState *> seen{bs};
    for (size_t i = 0; i < all.size(); i++)
        for (auto &c : all[i]->children)
            if (seen.insert(c->bs.get()).second) all.push_back(c->bs.get());
    return all;
}

}  // namespace

Status bdrv_activate(BlockDriverState *bs) {
    auto nodes = subtree(bs);
    std::vector<int> saved;
    for (auto *n : nodes) saved.push_back(n->open_flags);
    for (auto *n : nodes) n->open_flags &= ~BDRV_O_INACTIVE;
    // One transaction takes every lock of the graph; if any is refused
    // (the source still runs), all abort and the nodes are inactive again.
    Status st = bdrv_refresh_perms(bs);
    if (!st.ok()) {
        for (size_t i = 0; i < nodes.size(); i++) nodes[i]->open_flags = saved[i];
        return st;
    }
    // Now that nobody else may write, forget what was read while the source
    // still could: children first, so a format re-reads through fresh ones.
    for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
        BlockDriverState *n = *it;
        if (!n->drv->invalidate_cache) continue;
        st = n->drv->invalidate_cache(n);
        if (st.ok()) continue;
        // Back to inactive: flags as before, locks released again.
        for (size_t i = 0; i < nodes.size(); i++) nodes[i]->open_flags = saved[i];
        (void)bdrv_refresh_perms(bs);
        return st.prefix("Could not reload " + bdrv_describe(n));
    }
    return Status::OK();
}

Status bdrv_inactivate(BlockDriverState *bs) {
    // Whatever is cached must reach the file before the target may use it.
    int r = sync_wait(bdrv_co_flush(bs));
    if (r < 0) return PosixError("Could not flush " + bdrv_describe(bs), -r);
    auto nodes = subtree(bs);
    std::vector<int> saved;
    for (auto *n : nodes) saved.push_back(n->open_flags);
    for (auto *n : nodes) n->open_flags |= BDRV_O_INACTIVE;
    // Inactive protocol nodes want no bytes: the transaction only releases.
    Status st = bdrv_refresh_perms(bs);
    if (!st.ok()) {
        for (size_t i = 0; i < nodes.size(); i++) nodes[i]->open_flags = saved[i];
        return st;
    }
    return Status::OK();
}

bool bdrv_is_inactive(const BlockDriverState *bs) { return bs->open_flags & BDRV_O_INACTIVE; }

Status bdrv_child_try_set_perm(BdrvChild *c, PermPair p) {
    c->pending = p;
    c->has_pending = true;
    Status st = bdrv_refresh_perms(c->bs.get());
    if (st.ok()) c->perm = p;
    c->has_pending = false;
    return st;
}

}  // namespace mb
