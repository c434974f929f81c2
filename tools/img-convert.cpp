// miniblock-img convert: copies an image (through its backing chain) into a
// new or existing target, driven by block status as qemu-img convert is:
// ranges that read as zeroes are never read, and on a target that reads as
// zeroes already, never written; data goes through -m requests in flight,
// in order unless -W.

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>

#include "block/aio.h"
#include "block/block_int.h"
#include "tools/img-commands.h"
#include "tools/img-common.h"
#include "tools/tool-common.h"

namespace mb::tools {

void print_img_convert_help(FILE *out);

namespace {

constexpr int64_t BUF_SIZE = 2 << 20;  // per request in flight, as qemu-img
constexpr int MAX_IN_FLIGHT = 16;      // qemu-img's limit for -m

struct Chunk {
    int64_t off, len;
    bool zero;  // reads as zeroes (nothing to read)
};

struct Convert {
    BlockBackend *src, *dst;
    std::vector<Chunk> chunks;
    bool target_zero = true;  // the target reads as zeroes where not written
    bool in_order = true;     // without -W
    int64_t sparse = 4096;    // -S: the zero runs worth skipping (0: none)
    bool progress = false;
    int wflags = 0;           // BDRV_REQ_WRITE_COMPRESSED with -c
    int64_t size = 0, done_bytes = 0;
    size_t next = 0;          // the next chunk to take
    size_t next_write = 0;    // without -W: the chunk whose turn it is to write
    std::map<size_t, std::coroutine_handle<>> waiting;  // chunk -> writer waiting its turn
    int running = 0;
    int error = 0;
    int64_t error_at = 0;
    bool error_read = false;
    bool salvage = false;     // --salvage: unreadable sectors become zeroes
    bool quiet = false;       // -q
};

// Suspends until it is chunk i's turn to write (in-order mode).
struct Turn {
    Convert *c;
    size_t i;
    bool await_ready() const noexcept { return !c->in_order || c->next_write == i || c->error; }
    void await_suspend(std::coroutine_handle<> h) { c->waiting[i] = h; }
    void await_resume() const noexcept {}
};

// The writer whose turn it is now resumes at once, on this stack, rather
// than through the loop: a schedule costs an eventfd write and a wake-up
// per chunk, zero chunks included, which under CPU contention left the
// target idle between in-order writes.  The nesting is bounded by the
// workers (a running worker is never waiting) and ends when the resumed
// one waits for I/O or its own next turn.
void pass_turn(Convert *c) {
    if (!c->in_order) return;
    c->next_write++;
    auto it = c->waiting.find(c->next_write);
    if (it != c->waiting.end()) {
        auto h = it->second;
        c->waiting.erase(it);
        h.resume();
    }
}

void fail(Convert *c, int r, int64_t at, bool read) {
    if (c->error) return;
    c->error = r;
    c->error_at = at;
    c->error_read = read;
    // Writers waiting their turn give up too.
    for (auto &[i, h] : c->waiting) AioContext::main().schedule(h);
    c->waiting.clear();
}

bool all_zero(const uint8_t *p, int64_t n) { return n == 0 || (p[0] == 0 && !memcmp(p, p + 1, n - 1)); }

// Writes buf (chunk k) to the target: zero runs of at least c->sparse bytes
// (on sparse-aligned boundaries) are skipped on a target that reads as
// zeroes, and written as zeroes otherwise; the rest is written as data.
Task<int> write_chunk(Convert *c, const Chunk &k, const uint8_t *buf, int64_t *at) {
    if (k.zero && c->sparse) {
        *at = k.off;
        if (c->target_zero) co_return 0;
        co_return co_await bdrv_co_pwrite_zeroes(c->dst->root(), k.off, k.len, BDRV_REQ_MAY_UNMAP);
    }
    if (!c->sparse) {
        *at = k.off;
        co_return co_await c->dst->co_pwrite(k.off, k.len, buf, c->wflags);
    }
    for (int64_t p = 0; p < k.len;) {
        // The run up to the next sparse boundary, then whole pieces.
        auto piece_end = [&](int64_t q) { return std::min(k.len, ((k.off + q) / c->sparse + 1) * c->sparse - k.off); };
        int64_t q = piece_end(p);
        bool zero = all_zero(buf + p, q - p) && q - p == c->sparse;
        while (q < k.len) {
            int64_t e = piece_end(q);
            bool z = all_zero(buf + q, e - q) && e - q == c->sparse;
            if (z != zero) break;
            q = e;
        }
        *at = k.off + p;
        int r = 0;
        if (!zero) r = co_await c->dst->co_pwrite(k.off + p, q - p, buf + p, c->wflags);
        else if (!c->target_zero) r = co_await bdrv_co_pwrite_zeroes(c->dst->root(), k.off + p, q - p, BDRV_REQ_MAY_UNMAP);
        if (r < 0) co_return r;
        p = q;
    }
    co_return 0;
}

// Page-aligned, so that O_DIRECT (-t none / -T none) needs no bounce buffer.
struct AlignedBuf {
    // GLib's: the Windows CRT has no aligned_alloc.
    uint8_t *p = static_cast<uint8_t *>(g_aligned_alloc(1, BUF_SIZE, 4096));
    ~AlignedBuf() { g_aligned_free(p); }
    uint8_t *data() { return p; }
    uint8_t *begin() { return p; }
};

// --salvage, as qemu-img: a chunk that failed is read again sector by
// sector; a sector that still fails reads as zeroes, with a warning.
Task<int> salvage_read(Convert *c, const Chunk &k, uint8_t *buf) {
    for (int64_t p = 0; p < k.len; p += 512) {
        int64_t n = std::min<int64_t>(512, k.len - p);
        int r = co_await c->src->co_pread(k.off + p, n, buf + p);
        if (r < 0) {
            if (!c->quiet) fprintf(stderr, "%s: warning: error while reading offset %" PRId64 ": %s\n", img_prog, k.off + p, strerror(-r));
            memset(buf + p, 0, n);
        }
    }
    co_return 0;
}

Task<void> worker(Convert *c) {
    AlignedBuf buf;
    while (!c->error && c->next < c->chunks.size()) {
        size_t i = c->next++;
        const Chunk k = c->chunks[i];
        int r = 0;
        if (k.zero && !c->sparse) {
            std::fill(buf.begin(), buf.begin() + k.len, 0);
        } else if (!k.zero) {
            r = co_await c->src->co_pread(k.off, k.len, buf.data());
            if (r < 0 && c->salvage) r = co_await salvage_read(c, k, buf.data());
            if (r < 0) {
                fail(c, r, k.off, true);
                break;
            }
        }
        co_await Turn{c, i};
        if (c->error) break;
        int64_t at = k.off;
        r = co_await write_chunk(c, {k.off, k.len, k.zero && c->sparse != 0}, buf.data(), &at);
        if (r < 0) {
            fail(c, r, at, false);
            break;
        }
        c->done_bytes += k.len;
        if (c->progress) printf("    (%.2f/100%%)\r", c->done_bytes * 100.0 / c->size), fflush(stdout);
        pass_turn(c);
    }
    c->running--;
}

// The chunks to copy: block status down the source's chain.  With a
// backing file for the target (-B), only what the source's top image
// holds; the rest is assumed equal in both backing files, as qemu-img does.
Status plan(Convert *c, BlockDriverState *src, bool top_only) {
    for (int64_t off = 0; off < c->size;) {
        MapEntry e;
        int r = sync_wait(chain_status(src, off, std::min<int64_t>(c->size - off, int64_t(1) << 30), &e));
        if (r < 0) return PosixError("error while reading block status at byte " + std::to_string(off), -r);
        int64_t len = std::max<int64_t>(1, e.length);
        bool skip = top_only && (!e.present || e.depth > 0);
        bool zero = !e.present || e.zero;
        if (!skip) {
            for (int64_t p = 0; p < len; p += BUF_SIZE)
                c->chunks.push_back({off + p, std::min<int64_t>(BUF_SIZE, len - p), zero});
        }
        off += len;
    }
    return Status::OK();
}

// -l NAME (an ID, else a name, as qemu-img) or -l snapshot.id=ID,snapshot.name=NAME.
Status load_snapshot(BlockDriverState *bs, const std::string &arg) {
    Status st;
    if (arg.rfind("snapshot.", 0) == 0) {
        std::string id, name;
        size_t p = 0;
        while (p <= arg.size()) {
            size_t comma = arg.find(',', p);
            std::string kv = arg.substr(p, comma == std::string::npos ? std::string::npos : comma - p);
            size_t eq = kv.find('=');
            std::string k = kv.substr(0, eq), v = eq == std::string::npos ? "" : kv.substr(eq + 1);
            if (k == "snapshot.id" && eq != std::string::npos) id = v;
            else if (k == "snapshot.name" && eq != std::string::npos) name = v;
            else
                return Status::Error(EINVAL, "Invalid parameter '" + qapi::shown_name(k) + "'",
                                     "Failed in parsing snapshot param '" + qapi::shown_name(arg) + "'");
            if (comma == std::string::npos) break;
            p = comma + 1;
        }
        st = qcow2_snapshot_load_tmp(bs, id, name);
    } else {
        st = qcow2_snapshot_load_tmp(bs, arg, "");
        if (st.err() == ENOENT) st = qcow2_snapshot_load_tmp(bs, "", arg);
    }
    return st.prefix("Failed to load snapshot");
}

}  // namespace

int cmd_convert(int argc, char **argv) {
    ImgCommon common;  // the source's flags; -T is its cache mode, -t the target's
    ImageFlags &src_flags = common.flags;
    src_flags.read_only = true;
    std::string out_fmt = "raw", cache, backing;
    bool progress = false, no_create = false, out_of_order = false, compress = false;
    bool salvage = false, target_image_opts = false, out_fmt_given = false;
    std::string snapshot;  // -l: an internal snapshot of the source
    int64_t in_flight = 8, sparse = 4096;
    auto take_in_flight = [&in_flight](const char *arg) {
        auto v = parse_number(arg);
        if (!v || *v < 1 || *v > MAX_IN_FLIGHT) {
            return img_bad_usage("Invalid number of coroutines '" + std::string(arg) +
                                 "'. Allowed number of coroutines is between 1 and 16");
        }
        in_flight = *v;
        return 0;
    };
    auto take_sparse = [&sparse](const char *arg) {
        auto v = parse_number(arg);
        if (!v || *v < 0 || *v % 512 || *v > BUF_SIZE) {
            return img_bad_usage("Invalid buffer size for sparse output specified: '" + std::string(arg) +
                                 "' (a multiple of 512 up to 2M)");
        }
        sparse = *v;
        return 0;
    };
    auto take_out_fmt = [&](const char *arg) {
        out_fmt = arg;
        out_fmt_given = true;
        return 0;
    };
    if (auto st = img_parse_options(
            argc, argv,
            {.name = "convert",
             .common = IMG_OPEN | IMG_QUIET | IMG_OPTIONS,
             .own = {img_value('t', nullptr, &cache), img_value('T', nullptr, &src_flags.cache),
                     {'O', nullptr, required_argument, take_out_fmt}, img_value('B', nullptr, &backing),
                     img_value('l', nullptr, &snapshot), {'m', nullptr, required_argument, take_in_flight},
                     {'S', nullptr, required_argument, take_sparse}, img_flag('p', nullptr, &progress),
                     img_flag('n', nullptr, &no_create), img_flag('c', nullptr, &compress),
                     img_flag('W', nullptr, &out_of_order), img_flag(0, "target-image-opts", &target_image_opts),
                     img_flag(0, "salvage", &salvage)},
             .help = print_img_convert_help},
            &common))
        return *st;
    bool quiet = common.quiet;
    const std::string &o = common.options;
    if (argc - optind != 2) return img_bad_usage("convert needs SOURCE and TARGET");
    if (quiet) progress = false;
    // qemu-img's rules and texts: an option string names an existing target.
    if (target_image_opts && !no_create) return img_fail(Status::Error(EINVAL, "--target-image-opts requires use of -n flag"));
    if (target_image_opts && out_fmt_given) return img_fail(Status::Error(EINVAL, "--image-opts and --format are mutually exclusive"));
    if (!backing.empty() && out_fmt != "qcow2")
        return img_bad_usage("Backing file not supported for file format '" + out_fmt + "'");
    if (!backing.empty() && no_create) return img_bad_usage("-B and -n cannot be used together");
    if (compress && out_fmt != "qcow2") return img_bad_usage("Compression not supported for file format '" + out_fmt + "'");
    std::string src = argv[optind], dst = argv[optind + 1];
    auto in = open_image(src, src_flags);
    if (!in.ok()) return img_fail(Status(in.status()).prefix("Could not open '" + qapi::shown_name(src) + "'"));
    if (!snapshot.empty()) {
        Status st = load_snapshot((*in)->bs(), snapshot);
        if (!st.ok()) return img_fail(st);
    }
    int64_t size = (*in)->length();
    if (size < 0) return img_fail(PosixError("Could not get the size of '" + src + "'", (int)-size));
    if (!no_create) {
        qapi::OptionDict copts;
        if (!o.empty()) {
            auto r = qapi::parse_keyval_options(o);
            if (!r.ok()) return img_fail(r.status());
            copts = std::move(*r);
        }
        if (!backing.empty()) copts.set_str("backing_file", backing);
        // qcow2 sizes are multiples of 512: round up like qemu-img does.
        int64_t tsize = out_fmt == "qcow2" ? (size + 511) & ~int64_t(511) : size;
        Status st = bdrv_create(out_fmt, dst, tsize, copts);
        if (!st.ok()) return img_fail(st.prefix("Could not create '" + dst + "'"));
    }
    ImageFlags dst_flags;
    if (target_image_opts) dst_flags.image_opts = true;
    else dst_flags.format = out_fmt;
    // As qemu-img convert: no flush per allocation (cache=unsafe); -t
    // overrides.
    dst_flags.cache = cache.empty() ? "unsafe" : cache;
    auto out = open_image(dst, dst_flags);
    if (!out.ok()) return img_fail(Status(out.status()).prefix("Could not open '" + qapi::shown_name(dst) + "'"));
    if (no_create && (*out)->length() < size) {
        return img_fail(Status::Error(EINVAL, "Target '" + dst + "' is smaller than the source (" +
                                                  std::to_string((*out)->length()) + " < " + std::to_string(size) +
                                                  " bytes)"));
    }

    Convert c;
    c.src = in->get();
    c.dst = out->get();
    c.size = size;
    // An existing target (-n) may hold anything, and a target over a backing
    // file (-B) shows it: zeroes are written there.
    c.target_zero = !no_create && backing.empty();
    c.in_order = !out_of_order;
    c.sparse = sparse;
    c.progress = progress;
    c.salvage = salvage;
    c.quiet = quiet;
    if (compress) {
        // Compression works on whole target clusters: zero runs are
        // skipped cluster by cluster, and every write is whole clusters.
        int64_t cs = 65536;
        FormatInfo fi;
        if (c.dst->bs()->drv->get_info) c.dst->bs()->drv->get_info(c.dst->bs(), &fi);
        for (auto &[k, v] : fi.fields)
            if (k == "cluster_size") cs = std::stoll(v);
        if (cs > BUF_SIZE) return img_bad_usage("-c needs clusters of at most 2M");
        if (c.sparse) c.sparse = (c.sparse + cs - 1) / cs * cs;
        if (c.sparse > BUF_SIZE) c.sparse = BUF_SIZE;
        c.wflags = BDRV_REQ_WRITE_COMPRESSED;
    }
    Status st = plan(&c, c.src->bs(), !backing.empty());
    if (!st.ok()) return img_fail(st);
    if (progress) printf("    (0.00/100%%)\r"), fflush(stdout);
    c.running = int(std::min<int64_t>(in_flight, std::max<size_t>(1, c.chunks.size())));
    for (int i = 0, n = c.running; i < n; i++) spawn(worker(&c));
    while (c.running > 0) AioContext::main().poll(true);
    if (c.error) {
        return img_fail(PosixError(std::string(c.error_read ? "error while reading at byte " : "error while writing at byte ") +
                                       std::to_string(c.error_at),
                                   -c.error));
    }
    int r = (*out)->flush();
    if (r < 0) return img_fail(PosixError("error while flushing '" + dst + "'", -r));
    if (progress) printf("    (100.00/100%%)\n");
    return 0;
}

void print_img_convert_help(FILE *out) {
    fprintf(out,
            "  convert [-c] [-f FMT] [-O raw|qcow2] [-o OPTIONS] [-B BACKING] [-n] [-m N] [-W] [-S SIZE]\n"
            "          [-t CACHE] [-T SRC_CACHE] [-p] [-q] [-U] [-l SNAPSHOT] [--salvage] [--image-opts]\n"
            "          [--target-image-opts] SOURCE TARGET\n"
            "      copy SOURCE (through its backing chain) into a new TARGET image, or into an\n"
            "      existing one with -n; ranges that read as zeroes are neither read nor\n"
            "      written (-S: zero runs of at least SIZE bytes, default 4k, are skipped;\n"
            "      -S 0: every byte is written); -m: requests in flight (default 8, at most\n"
            "      16); -W: writes out of order; -B: a qcow2 TARGET over BACKING, with only\n"
            "      what SOURCE's top image holds; -c: qcow2 clusters compressed (zlib); -p\n"
            "      shows progress, -q nothing but errors; --salvage: unreadable sectors of\n"
            "      SOURCE become zeroes (a warning each) instead of failing; --target-image-opts:\n"
            "      TARGET is an option string (with -n); -l: a qcow2 internal snapshot of\n"
            "      SOURCE (an ID or name, or snapshot.id=ID,snapshot.name=NAME); the target's\n"
            "      cache mode defaults to unsafe, as qemu-img's\n");
}

}  // namespace mb::tools
