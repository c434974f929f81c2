// miniblock-io's info, map, alloc, truncate and reopen (qemu-io's output).
//
// truncate and reopen change permissions, so they go through the
// permission transaction: refused, naming who is in the way, with every
// lock byte as before.  reopen is done here, in the tool, from the block
// layer's own steps (the file driver's reopen_rw, which moves a lock to a
// new fd without a gap, and bdrv_child_try_set_perm), in the order commit
// uses them: a file becomes writable before the write permission is taken,
// and read-only only after it is given back.
#include <algorithm>
#include <cinttypes>
#include <cstring>

#include "block/aio.h"
#include "block/block_int.h"
#include "tools/io-common.h"
#include "tools/tool-common.h"

namespace mb::tools::io {

namespace {

// Whether [off, off + *pnum) is allocated in top or (above_base) any layer
// below it: 1, 0 or -errno; *pnum is how far that answer holds.
Task<int> is_allocated(BlockDriverState *top, int64_t off, int64_t bytes, bool above, int64_t *pnum) {
    int64_t n = bytes;
    for (BlockDriverState *bs = top; bs; bs = above && bs->backing() ? bs->backing()->bs.get() : nullptr) {
        int64_t len = bdrv_getlength(bs);
        if (len < 0) co_return (int)len;
        if (off >= len) break;  // beyond a shorter backing file: reads as zeroes
        int64_t p = 0;
        int r = co_await bdrv_co_layer_status(bs, off, std::min(n, len - off), &p);
        if (r < 0) co_return r;
        if (r & BDRV_BLOCK_ALLOCATED) {
            *pnum = p;
            co_return 1;
        }
        n = p;
        if (!above) break;
    }
    *pnum = n;
    co_return 0;
}

// The nodes that share the top's read-only flag and lock mode: the top and
// its file children (a backing chain keeps its own).
std::vector<BlockDriverState *> file_chain(BlockDriverState *bs) {
    std::vector<BlockDriverState *> v;
    for (; bs; bs = bs->file() ? bs->file()->bs.get() : nullptr) v.push_back(bs);
    return v;
}

}  // namespace

bool cmd_info(Session &s, const Words &w) {
    if (!io_need_image(s, w[0])) return false;
    BlockDriverState *bs = s.blk->bs();
    FormatInfo fi;
    if (bs->drv->get_info) bs->drv->get_info(bs, &fi);
    int64_t cluster = 0;
    std::vector<std::pair<std::string, std::string>> specific;
    for (auto &[k, v] : fi.fields) {
        if (k == "cluster_size") cluster = std::stoll(v);
        else if (k != "backing file" && k != "backing file format") specific.emplace_back(k, v);
    }
    // qcow2 keeps VM state after the last L1 entry the disk needs.
    int64_t vmstate = 0;
    if (cluster > 0) {
        int64_t cover = cluster * (cluster / 8), len = s.blk->length();
        vmstate = (len + cover - 1) / cover * cover;
    }
    printf("format name: %s\n", bs->drv->format_name);
    printf("cluster size: %s\n", cvtstr((double)cluster).c_str());
    printf("vm state offset: %s\n", cvtstr((double)vmstate).c_str());
    if (!specific.empty()) {
        printf("Format specific information:\n");
        for (auto &[k, v] : specific) printf("    %s: %s\n", k.c_str(), v.c_str());
    }
    return true;
}

bool cmd_map(Session &s, const Words &w) {
    if (w.size() != 1) return io_error("map: no arguments expected\n");
    if (!io_need_image(s, w[0])) return false;
    int64_t len = s.blk->length();
    if (len < 0) return io_error("map: %s\n", strerror((int)-len));
    for (int64_t off = 0; off < len;) {
        // Merge runs of the same state into one line, as qemu-io does.
        int64_t run = 0;
        int first = -1;
        while (off + run < len) {
            int64_t n = 0;
            // The top layer only, as qemu-io's map (bdrv_is_allocated).
            int r = sync_wait(is_allocated(s.blk->bs(), off + run, len - off - run, false, &n));
            if (r < 0) {
                printf("map failed: %s\n", strerror(-r));
                return false;
            }
            if (first >= 0 && r != first) break;
            first = r;
            run += n;
        }
        printf("%s (0x%" PRIx64 ") bytes %s at offset %s (0x%" PRIx64 ")\n", cvtstr((double)run).c_str(), run,
               first ? "    allocated" : "not allocated", cvtstr((double)off).c_str(), off);
        off += run;
    }
    return true;
}

bool cmd_alloc(Session &s, const Words &w) {
    if (w.size() < 2 || w.size() > 3) return io_error("alloc: expected OFFSET [LENGTH]\n");
    auto off = parse_number(w[1]);
    auto count = w.size() == 3 ? parse_number(w[2]) : std::optional<int64_t>(512);
    if (!off) return io_error("alloc: invalid offset '%s'\n", w[1].c_str());
    if (!count || *count <= 0) return io_error("alloc: invalid length '%s'\n", w[2].c_str());
    if (!io_need_image(s, w[0])) return false;
    int64_t len = s.blk->length();
    if (len < 0) return io_error("alloc: %s\n", strerror((int)-len));
    int64_t sum = 0;
    for (int64_t done = 0; done < *count;) {
        if (*off + done >= len) {
            *count = done;  // beyond the end: qemu-io counts only what it covered
            break;
        }
        int64_t n = 0;
        int r = sync_wait(is_allocated(s.blk->bs(), *off + done, std::min(*count - done, len - *off - done), false, &n));
        if (r < 0) {
            printf("is_allocated failed: %s\n", strerror(-r));
            return false;
        }
        if (r) sum += n;
        done += n;
    }
    printf("%" PRId64 "/%" PRId64 " bytes allocated at offset %s\n", sum, *count, cvtstr((double)*off).c_str());
    return true;
}

bool cmd_truncate(Session &s, const Words &w) {
    if (w.size() != 2) return io_error("truncate: expected one SIZE\n");
    auto size = parse_number(w[1]);
    if (!size) return io_error("truncate: invalid size '%s'\n", w[1].c_str());
    if (!io_need_image(s, w[0])) return false;
    io_reap_aio(s, true);
    if (s.blk->read_only()) return io_error("truncate: %s: the image is read-only\n", strerror(EPERM));
    auto r = truncate_with_resize_perm(*s.blk, *size);
    if (!r.ok()) return io_error("truncate: %s\n", r.status().to_string().c_str());
    return true;
}

bool cmd_reopen(Session &s, const Words &w) {
    CmdOpts o;
    std::string err;
    if (!parse_cmd(w, "o", "rw", &o, &err) || !o.args.empty())
        return io_error("reopen: %s\n", err.empty() ? "unexpected argument" : err.c_str());
    std::optional<bool> ro;
    std::optional<qapi::LockMode> lock;
    for (auto &[c, v] : o.flags) {
        if (c == 'r' || c == 'w') {
            if (ro && *ro != (c == 'r')) return io_error("reopen: -r and -w are mutually exclusive\n");
            ro = c == 'r';
            continue;
        }
        auto opts = qapi::parse_keyval_options(v);
        if (!opts.ok()) return io_error("reopen: %s\n", opts.status().to_string().c_str());
        for (auto &k : opts->keys()) {
            auto val = opts->get_text(k).value_or("");
            if (k == "lock") {
                auto m = qapi::parse_LockMode(val);
                if (!m) return io_error("reopen: Invalid value '%s' for parameter 'lock'\n", qapi::shown_name(val).c_str());
                lock = *m;
            } else if (k == "read-only") {
                if (val != "on" && val != "off") return io_error("reopen: Invalid value '%s' for parameter 'read-only'\n", qapi::shown_name(val).c_str());
                ro = val == "on";
            } else {
                return io_error("reopen: Cannot change option '%s' on reopen\n", qapi::shown_name(k).c_str());
            }
        }
    }
    if (!io_need_image(s, w[0])) return false;
    io_reap_aio(s, true);
    BlockDriverState *top = s.blk->bs();
    if (top->open_flags & BDRV_O_INACTIVE) return io_error("reopen: the image is inactive\n");
    auto chain = file_chain(top);
    struct Saved {
        BlockDriverState *bs;
        bool read_only;
        int flags;
        qapi::LockMode lock;
    };
    std::vector<Saved> saved;
    for (auto *n : chain) saved.push_back({n, n->read_only, n->open_flags, n->lock_mode});
    const bool to_rw = ro && !*ro && top->read_only, to_ro = ro && *ro && !top->read_only;
    if (to_ro && s.blk->flush() < 0) return io_error("reopen: flush failed\n");

    // 1. Files become writable before the write permission is taken.
    std::vector<BlockDriverState *> switched;
    auto undo_files = [&]() {
        for (auto *n : switched) (void)n->drv->reopen_rw(n, !n->read_only);
    };
    if (to_rw) {
        for (auto *n : chain) {
            if (!n->drv->is_protocol) continue;
            if (!n->drv->reopen_rw) return io_error("reopen: driver '%s' cannot switch to read-write\n", n->drv->format_name);
            Status st = n->drv->reopen_rw(n, true);
            if (!st.ok()) {
                undo_files();
                return io_error("reopen: %s\n", st.to_string().c_str());
            }
            switched.push_back(n);
        }
    }
    // 2. The new flags and lock mode, then one permission transaction.
    auto restore = [&]() {
        for (auto &sv : saved) {
            sv.bs->read_only = sv.read_only;
            sv.bs->open_flags = sv.flags;
            sv.bs->lock_mode = sv.lock;
        }
    };
    for (auto *n : chain) {
        if (ro) {
            n->read_only = *ro;
            if (*ro) n->open_flags &= ~BDRV_O_RDWR;
            else n->open_flags |= BDRV_O_RDWR;
        }
        if (lock) n->lock_mode = *lock;
    }
    auto perms = bdrv_table_perms(top);
    Status st = perms.ok() ? bdrv_child_try_set_perm(s.blk->root(), *perms) : perms.take_status();
    if (!st.ok()) {
        // The transaction put every lock back; the flags and files follow.
        restore();
        undo_files();
        return io_error("reopen: %s\n", st.to_string().c_str());
    }
    // 3. Files become read-only only once nothing may write.
    if (to_ro) {
        for (auto *n : chain) {
            if (n->drv->is_protocol && n->drv->reopen_rw) (void)n->drv->reopen_rw(n, false);
        }
    }
    return true;
}

}  // namespace mb::tools::io
