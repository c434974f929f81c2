// miniblock-img: qemu-img's counterpart for miniblock images.
//
//   create   make an image          info    describe one (human or JSON)
//   locks    who holds lock bytes   bench   requests per second, like qemu-img bench
#include <getopt.h>
#include <json-glib/json-glib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "block/aio.h"
#include "block/block_int.h"
#ifndef _WIN32  // /proc-based; Windows cannot name a lock's holder
#include "block/locking/holders.h"
#else
#include "block/locking/win32.h"
#endif
#include "tools/img-commands.h"
#include "tools/tool-common.h"

using namespace mb;
using namespace mb::tools;

int img_cmd_commit(int argc, char **argv);  // tools/img-commit.cpp

namespace {


void usage(FILE *out) {
    fprintf(out,
            "Usage: miniblock-img COMMAND [OPTIONS]... ARGS...\n"
            "Create, inspect and measure disk images through miniblock's block layer.\n"
            "\n"
            "Commands:\n"
            "  create [-f FMT] [-b BACKING [-F BACKING_FMT]] [-o OPTIONS] FILE [SIZE]\n"
            "      create an image of SIZE bytes (k, M, G, T suffixes); FMT defaults to raw;\n"
            "      -b: a qcow2 overlay of BACKING (SIZE defaults to the backing file's)\n"
            "  info [-f FMT] [-U] [--image-opts] [--backing-chain] [--output=human|json] FILE\n"
            "      describe an image (opened read-only, with the default lock unless -U);\n"
            "      --backing-chain: every image of its backing chain\n"
            "  locks [--output=human|json] FILE...\n"
            "      list every process (and node of this process) holding lock bytes on each\n"
            "      file, with what it uses and forbids; takes no lock itself\n"
            "  bench [-c COUNT] [-d DEPTH] [-f FMT] [-i AIO] [-o OFFSET] [-s SIZE] [-S STEP]\n"
            "        [-t CACHE] [-w] [-U] [--image-opts] FILE\n"
            "      send COUNT requests (default 75000) of SIZE bytes (default 4 KiB), DEPTH in\n"
            "      parallel (default 64), starting at OFFSET, STEP apart (default SIZE),\n"
            "      reads unless -w, and print the time and requests per second\n"
            "  commit [-f FMT] [-t CACHE] [-b BASE] [-d] [-p] [-q] [--check] [--image-opts] FILE\n"
            "      copy an overlay's data into its backing file under a temporary exclusive\n"
            "      lock on it; --check only says whether that lock could be taken now\n"
            );
    mb::tools::print_img_qcow2_help(out);
    fprintf(out,
            "\n"
            "Common options:\n"
            "  -f FMT          image format; probed when absent\n"
            "  -t CACHE        cache mode: writeback, none, writethrough, directsync, unsafe\n"
            "  -i AIO          aio mode: threads, native (native needs -t none)\n"
            "  -U              force share: open with lock=shared\n"
            "  --image-opts    FILE is an option string (driver=raw,file.filename=a.img,...)\n"
            "  -h, --help      show this help\n");
}

// Options shared by the subcommands.
enum { OPT_OUTPUT = 256, OPT_IMAGE_OPTS, OPT_BACKING_CHAIN };

// --- create ----------------------------------------------------------------------

int cmd_create(int argc, char **argv) {
    std::string fmt = "raw", o, backing, backing_fmt;
    int c;
    static const struct option longopts[] = {{"help", no_argument, nullptr, 'h'}, {nullptr, 0, nullptr, 0}};
    while ((c = getopt_long(argc, argv, "f:o:b:F:h", longopts, nullptr)) != -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'o': o = o.empty() ? optarg : o + "," + optarg; break;
        case 'b': backing = optarg; break;
        case 'F': backing_fmt = optarg; break;
        case 'h': usage(stdout); return 0;
        default: return img_bad_usage("invalid option for create");
        }
    }
    int nargs = argc - optind;
    if (nargs != 2 && !(nargs == 1 && !backing.empty())) return img_bad_usage("create needs FILE and SIZE");
    std::string file = argv[optind];
    std::optional<int64_t> size;
    if (nargs == 2) {
        size = parse_number(argv[optind + 1]);
        if (!size || *size < 0) {
            return img_fail(Status::Error(EINVAL, std::string("Invalid image size '") + argv[optind + 1] + "'",
                                      "Expected bytes with an optional k, M, G, T, P or E suffix"));
        }
    }
    qapi::OptionDict opts;
    if (!o.empty()) {
        auto r = qapi::parse_keyval_options(o);
        if (!r.ok()) return img_fail(r.status());
        opts = std::move(*r);
    }
    if (!backing.empty()) {
        opts.set_str("backing_file", backing);
        if (!backing_fmt.empty()) opts.set_str("backing_fmt", backing_fmt);
        // The backing file must open (relative names are relative to FILE's
        // directory); its size is the default size.
        std::string path = backing;
        size_t slash = file.rfind('/');
        if (backing[0] != '/' && slash != std::string::npos) path = file.substr(0, slash + 1) + backing;
        ImageFlags bf;
        bf.format = backing_fmt;
        bf.read_only = true;
        bf.force_share = true;
        auto b = open_image(path, bf);
        if (!b.ok()) return img_fail(Status(b.status()).prefix("Could not open backing file '" + path + "'"));
        if (!size) size = (*b)->length();
    } else if (!backing_fmt.empty()) {
        return img_bad_usage("-F needs -b");
    }
    printf("Formatting '%s', fmt=%s size=%" PRId64 "\n", file.c_str(), fmt.c_str(), *size);
    Status st = bdrv_create(fmt, file, *size, opts);
    if (!st.ok()) return img_fail(st);
    return 0;
}

// --- info ---------------------------------------------------------------------------

int cmd_info(int argc, char **argv) {
    ImageFlags flags;
    flags.read_only = true;
    bool json = false, chain = false;
    static const struct option longopts[] = {
        {"output", required_argument, nullptr, OPT_OUTPUT},
        {"backing-chain", no_argument, nullptr, OPT_BACKING_CHAIN},
        {"image-opts", no_argument, nullptr, OPT_IMAGE_OPTS},
        {"force-share", no_argument, nullptr, 'U'},
        {"format", required_argument, nullptr, 'f'},
        {"help", no_argument, nullptr, 'h'},
        {nullptr, 0, nullptr, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "f:Uh", longopts, nullptr)) != -1) {
        switch (c) {
        case 'f': flags.format = optarg; break;
        case 'U': flags.force_share = true; break;
        case OPT_IMAGE_OPTS: flags.image_opts = true; break;
        case OPT_BACKING_CHAIN: chain = true; break;
        case OPT_OUTPUT:
            if (!parse_output(optarg, &json)) return img_bad_usage(std::string("--output must be human or json, not '") + optarg + "'");
            break;
        case 'h': usage(stdout); return 0;
        default: return img_bad_usage("invalid option for info");
        }
    }
    if (argc - optind != 1) return img_bad_usage("info needs exactly one FILE");
    std::string image = argv[optind];
    auto blk = open_image(image, flags);
    if (!blk.ok()) return img_fail(Status(blk.status()).prefix("Could not open '" + image + "'"));
    // With --backing-chain, every image down the chain (JSON: an array).
    JsonBuilder *arr = nullptr;
    if (json && chain) {
        arr = json_builder_new();
        json_builder_begin_array(arr);
    }
    for (BlockDriverState *bs = (*blk)->bs(); bs; bs = chain && bs->backing() ? bs->backing()->bs.get() : nullptr) {
    if (!json && bs != (*blk)->bs()) printf("\n");
    int64_t vsize = bdrv_getlength(bs);
    BlockDriverState *proto = bs;
    while (!proto->drv->is_protocol && proto->file()) proto = proto->file()->bs.get();
    int64_t actual = proto->drv->get_allocated_size ? proto->drv->get_allocated_size(proto) : -1;
    FormatInfo fi;
    if (bs->drv->get_info) bs->drv->get_info(bs, &fi);

    if (json) {
        JsonBuilder *b = arr ? arr : json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "virtual-size");
        json_builder_add_int_value(b, vsize);
        json_builder_set_member_name(b, "filename");
        json_builder_add_string_value(b, bs->filename.c_str());
        json_builder_set_member_name(b, "format");
        json_builder_add_string_value(b, bs->drv->format_name);
        if (actual >= 0) {
            json_builder_set_member_name(b, "actual-size");
            json_builder_add_int_value(b, actual);
        }
        if (!fi.fields.empty()) {
            json_builder_set_member_name(b, "format-specific");
            json_builder_begin_object(b);
            for (auto &[k, v] : fi.fields) {
                json_builder_set_member_name(b, k.c_str());
                json_builder_add_string_value(b, v.c_str());
            }
            json_builder_end_object(b);
        }
        json_builder_set_member_name(b, "dirty-flag");
        json_builder_add_boolean_value(b, FALSE);
        json_builder_end_object(b);
        if (!arr) {
            print_json(b);
            g_object_unref(b);
        }
        continue;
    }
    printf("image: %s\n", bs->filename.c_str());
    printf("file format: %s\n", bs->drv->format_name);
    printf("virtual size: %s (%" PRId64 " bytes)\n", human_size(vsize).c_str(), vsize);
    if (actual >= 0) printf("disk size: %s\n", human_size(actual).c_str());
    if (!fi.fields.empty()) {
        printf("Format specific information:\n");
        for (auto &[k, v] : fi.fields) printf("    %s: %s\n", k.c_str(), v.c_str());
    }
    }
    if (arr) {
        json_builder_end_array(arr);
        print_json(arr);
        g_object_unref(arr);
    }
    return 0;
}

// --- locks --------------------------------------------------------------------------

#ifdef _WIN32
// Windows cannot name a lock's holder: what can be seen is which of QEMU's
// bytes other handles hold, reported as one holder "not visible from here",
// the way Linux reports locks whose owner it cannot see.
int win32_cmd_locks(int argc, char **argv, bool json) {
    int ret = 0;
    JsonBuilder *b = json ? json_builder_new() : nullptr;
    if (b) json_builder_begin_array(b);
    auto names = [&](uint32_t bits) {
        json_builder_begin_array(b);
        for (int i = 0; i < BLK_PERM_COUNT; i++)
            if (bits & (1u << i)) json_builder_add_string_value(b, perm_name(i));
        json_builder_end_array(b);
    };
    for (int i = optind; i < argc; i++) {
        const char *path = argv[i];
        auto held = win32_lock_bytes_held(path);
        if (!held.ok()) {
            print_error(img_prog, held.status());
            ret = 1;
            continue;
        }
        const bool any = held->use || held->forbid;
        if (b) {
            json_builder_begin_object(b);
            json_builder_set_member_name(b, "filename");
            json_builder_add_string_value(b, path);
            json_builder_set_member_name(b, "holders");
            json_builder_begin_array(b);
            if (any) {
                json_builder_begin_object(b);
                json_builder_set_member_name(b, "pid");
                json_builder_add_null_value(b);
                json_builder_set_member_name(b, "kind");
                json_builder_add_string_value(b, "LockFileEx");
                json_builder_set_member_name(b, "uses");
                names(held->use);
                json_builder_set_member_name(b, "forbids");
                names(held->forbid);
                json_builder_end_object(b);
            }
            json_builder_end_array(b);
            json_builder_end_object(b);
            continue;
        }
        printf("%s:\n", path);
        if (!any) printf("  no locks held\n");
        else printf("  not visible from here: uses: %s / forbids: %s\n", perm_names(held->use).c_str(),
                    perm_names(held->forbid).c_str());
    }
    if (b) {
        json_builder_end_array(b);
        print_json(b);
        g_object_unref(b);
    }
    return ret;
}
#endif

int cmd_locks(int argc, char **argv) {
    bool json = false;
    static const struct option longopts[] = {{"output", required_argument, nullptr, OPT_OUTPUT},
                                             {"help", no_argument, nullptr, 'h'},
                                             {nullptr, 0, nullptr, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, nullptr)) != -1) {
        switch (c) {
        case OPT_OUTPUT:
            if (!parse_output(optarg, &json)) return img_bad_usage(std::string("--output must be human or json, not '") + optarg + "'");
            break;
        case 'h': usage(stdout); return 0;
        default: return img_bad_usage("invalid option for locks");
        }
    }
    if (optind >= argc) return img_bad_usage("locks needs at least one FILE");
#ifdef _WIN32
    return win32_cmd_locks(argc, argv, json);
#else
    int ret = 0;
    JsonBuilder *b = json ? json_builder_new() : nullptr;
    if (b) json_builder_begin_array(b);
    for (int i = optind; i < argc; i++) {
        const char *path = argv[i];
        struct stat st;
        // stat, not open: looking must not disturb anyone's locks.
        if (stat(path, &st) < 0) {
            print_error(img_prog, PosixError(std::string("Could not stat '") + path + "'", errno));
            ret = 1;
            continue;
        }
        auto holders = find_lock_holders(st.st_dev, st.st_ino);
        if (b) {
            json_builder_begin_object(b);
            json_builder_set_member_name(b, "filename");
            json_builder_add_string_value(b, path);
            json_builder_set_member_name(b, "holders");
            json_builder_begin_array(b);
            for (auto &h : holders) {
                json_builder_begin_object(b);
                json_builder_set_member_name(b, "pid");
                if (h.pid) json_builder_add_int_value(b, h.pid);
                else json_builder_add_null_value(b);
                json_builder_set_member_name(b, "program");
                json_builder_add_string_value(b, h.comm.c_str());
                json_builder_set_member_name(b, "command-line");
                json_builder_add_string_value(b, h.cmdline.c_str());
                json_builder_set_member_name(b, "kind");
                json_builder_add_string_value(b, h.kind.c_str());
                json_builder_set_member_name(b, "uses");
                json_builder_begin_array(b);
                for (auto &n : lock_bit_name_list(h.use)) json_builder_add_string_value(b, n.c_str());
                json_builder_end_array(b);
                json_builder_set_member_name(b, "forbids");
                json_builder_begin_array(b);
                for (auto &n : lock_bit_name_list(h.forbid)) json_builder_add_string_value(b, n.c_str());
                json_builder_end_array(b);
                json_builder_set_member_name(b, "write-lock");
                json_builder_add_boolean_value(b, h.write_lock);
                json_builder_end_object(b);
            }
            json_builder_end_array(b);
            json_builder_end_object(b);
            continue;
        }
        printf("%s:\n", path);
        if (holders.empty()) printf("  no locks held\n");
        for (auto &h : holders) {
            std::string who = h.pid ? "pid " + std::to_string(h.pid) : std::string("not visible from here");
            if (!h.comm.empty()) who += " (" + h.comm + ")";
            printf("  %s: %s\n", who.c_str(), describe_holder_bits(h).c_str());
            if (!h.cmdline.empty()) printf("    command line: %s\n", h.cmdline.c_str());
            if (h.write_lock) printf("    holds a write lock (not QEMU's protocol, e.g. a whole-file lock)\n");
        }
    }
    if (b) {
        json_builder_end_array(b);
        print_json(b);
        g_object_unref(b);
    }
    return ret;
#endif
}

// --- bench --------------------------------------------------------------------------

struct Bench {
    BlockBackend *blk;
    int64_t count, size, step, offset, image_size;
    bool write;
    int64_t issued = 0, done = 0;
    int error = 0;
};

Task<void> bench_worker(Bench *b, uint8_t *buf) {
    while (b->issued < b->count && !b->error) {
        int64_t i = b->issued++;
        // Wrap around the image, as qemu-img bench does.
        int64_t span = b->image_size - b->size + 1;
        int64_t off = span > 0 ? (b->offset + i * b->step) % span : 0;
        int r = b->write ? co_await b->blk->co_pwrite(off, b->size, buf)
                         : co_await b->blk->co_pread(off, b->size, buf);
        if (r < 0 && !b->error) b->error = r;
        b->done++;
    }
}

int cmd_bench(int argc, char **argv) {
    ImageFlags flags;
    int64_t count = 75000, depth = 64, size = 4096, offset = 0, step = -1;
    bool write = false;
    static const struct option longopts[] = {{"image-opts", no_argument, nullptr, OPT_IMAGE_OPTS},
                                             {"help", no_argument, nullptr, 'h'},
                                             {nullptr, 0, nullptr, 0}};
    auto num = [](const char *opt, const char *arg, int64_t *out, int64_t min) {
        auto v = parse_number(arg);
        if (!v || *v < min) {
            fprintf(stderr, "%s: Invalid value '%s' for -%s\n", img_prog, arg, opt);
            return false;
        }
        *out = *v;
        return true;
    };
    int c;
    while ((c = getopt_long(argc, argv, "c:d:f:i:no:s:S:t:wUh", longopts, nullptr)) != -1) {
        switch (c) {
        case 'c': if (!num("c", optarg, &count, 1)) return 1; break;
        case 'd': if (!num("d", optarg, &depth, 1)) return 1; break;
        case 's': if (!num("s", optarg, &size, 1)) return 1; break;
        case 'S': if (!num("S", optarg, &step, 0)) return 1; break;
        case 'o': if (!num("o", optarg, &offset, 0)) return 1; break;
        case 'f': flags.format = optarg; break;
        case 'i': flags.aio = optarg; break;
        case 'n': flags.aio = "native"; break;
        case 't': flags.cache = optarg; break;
        case 'w': write = true; break;
        case 'U': flags.force_share = true; break;
        case OPT_IMAGE_OPTS: flags.image_opts = true; break;
        case 'h': usage(stdout); return 0;
        default: return img_bad_usage("invalid option for bench");
        }
    }
    if (argc - optind != 1) return img_bad_usage("bench needs exactly one FILE");
    if (depth > 4096) return img_bad_usage("-d must be at most 4096");
    if (size > (64 << 20)) return img_bad_usage("-s must be at most 64M");
    if (step < 0) step = size;
    flags.read_only = !write;
    auto blk = open_image(argv[optind], flags);
    if (!blk.ok()) return img_fail(Status(blk.status()).prefix(std::string("Could not open '") + argv[optind] + "'"));
    Bench b{blk->get(), count, size, step, offset, (*blk)->length(), write};
    if (b.image_size < size) return img_fail(Status::Error(EINVAL, "The image is smaller than one request"));

    printf("Sending %" PRId64 " %s requests, %" PRId64 " bytes each, %" PRId64
           " in parallel (starting at offset %" PRId64 ", step size %" PRId64 ")\n",
           count, write ? "write" : "read", size, depth, offset, step);
    std::vector<uint8_t *> bufs;
    for (int64_t i = 0; i < depth; i++) {
#ifdef _WIN32  // the CRT has no aligned_alloc; _aligned_malloc pairs with _aligned_free
        auto *p = static_cast<uint8_t *>(_aligned_malloc((size + 4095) / 4096 * 4096, 4096));
#else
        auto *p = static_cast<uint8_t *>(std::aligned_alloc(4096, (size + 4095) / 4096 * 4096));
#endif
        memset(p, write ? 0xa5 : 0, size);
        bufs.push_back(p);
    }
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < depth; i++) spawn(bench_worker(&b, bufs[i]));
    while (b.done < count && !(b.error && b.done == b.issued)) AioContext::main().poll(true);
    // Let stragglers finish before their buffers go.
    while (b.done < b.issued) AioContext::main().poll(true);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
#ifdef _WIN32
    for (auto *p : bufs) _aligned_free(p);
#else
    for (auto *p : bufs) std::free(p);
#endif
    if (b.error) return img_fail(PosixError("Benchmark request failed", -b.error));
    printf("Run completed in %.3f seconds.\n", secs);
    printf("%.0f requests/s\n", count / secs);
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 2) return img_bad_usage("a command is needed");
    std::string cmd = argv[1];
    if (cmd == "-h" || cmd == "--help" || cmd == "help") {
        usage(stdout);
        return 0;
    }
    setvbuf(stdout, nullptr, _IOLBF, 0);
    std::map<std::string, std::function<int(int, char **)>> cmds = {
        {"create", cmd_create}, {"info", cmd_info}, {"locks", cmd_locks}, {"bench", cmd_bench},
        {"check", mb::tools::cmd_check}, {"map", mb::tools::cmd_map}, {"convert", mb::tools::cmd_convert},
        {"commit", img_cmd_commit}};
    auto it = cmds.find(cmd);
    if (it == cmds.end()) return img_bad_usage("Command not found: " + cmd);
    // getopt sees the subcommand as argv[0].
    return it->second(argc - 1, argv + 1);
}
