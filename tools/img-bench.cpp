// miniblock-img bench: requests per second, as qemu-img bench measures them.
// Kept in a file of its own so that its I/O path can change without touching
// the other subcommands.
#include <getopt.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "block/aio.h"
#include "block/block_int.h"
#include "tools/img-commands.h"
#include "tools/tool-common.h"

namespace mb::tools {

void print_img_bench_help(FILE *out);

namespace {

enum { OPT_IMAGE_OPTS = 400 };

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

}  // namespace

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
        case 'h': print_img_bench_help(stdout); return 0;
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
        auto *p = static_cast<uint8_t *>(std::aligned_alloc(4096, (size + 4095) / 4096 * 4096));
        memset(p, write ? 0xa5 : 0, size);
        bufs.push_back(p);
    }
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < depth; i++) spawn(bench_worker(&b, bufs[i]));
    while (b.done < count && !(b.error && b.done == b.issued)) AioContext::main().poll(true);
    // Let stragglers finish before their buffers go.
    while (b.done < b.issued) AioContext::main().poll(true);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (auto *p : bufs) std::free(p);
    if (b.error) return img_fail(PosixError("Benchmark request failed", -b.error));
    printf("Run completed in %.3f seconds.\n", secs);
    printf("%.0f requests/s\n", count / secs);
    return 0;
}


void print_img_bench_help(FILE *out) {
    fprintf(out,
            "  bench [-c COUNT] [-d DEPTH] [-f FMT] [-i AIO] [-o OFFSET] [-s SIZE] [-S STEP]\n"
            "        [-t CACHE] [-w] [-U] [--image-opts] FILE\n"
            "      send COUNT requests (default 75000) of SIZE bytes (default 4 KiB), DEPTH in\n"
            "      parallel (default 64), starting at OFFSET, STEP apart (default SIZE),\n"
            "      reads unless -w, and print the time and requests per second\n"
            );
}

}  // namespace mb::tools
