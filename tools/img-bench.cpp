// miniblock-img bench: requests per second, as qemu-img bench measures them.
// Kept in a file of its own so that its I/O path can change without touching
// the other subcommands.
//
// The I/O goes through the public queue API (include/miniblock/miniblock.h:
// mb_open, mb_get_queue, mbq_read/mbq_write, mbq_do_io), as an embedder
// does it, so that the figure is what an embedder gets (issue 10): DEPTH
// requests in flight on queue 0, each completion's slot refilled, the new
// requests submitted by the next mbq_do_io together.

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <glib.h>

#include "miniblock/miniblock.h"
#include "tools/img-commands.h"
#include "tools/img-common.h"
#include "tools/tool-common.h"

namespace mb::tools {

void print_img_bench_help(FILE *out);

namespace {

// --- bench --------------------------------------------------------------------------

struct Bench {
    int64_t count, size, step, offset, image_size;
    bool write;
    bool random = false;
    uint64_t rng = 0;      // xorshift64 state (random mode)
    int64_t next = 0;      // the next request's offset (stride mode)
    int64_t issued = 0, done = 0;
    int error = 0;
};

// The offset of the next request.  Stride mode follows qemu-img bench
// exactly (same offsets, so the two can be compared request for request):
// the first request at OFFSET, then each STEP further, wrapping modulo the
// last offset where a whole request fits (image_size - size; an image of
// at most one request always uses offset 0).  qemu-img 7.2 wrapped modulo
// image_size, which is the same as long as the run does not wrap; bench
// scripts choose COUNT * STEP <= image_size - size so that it never does.
// Random mode (our extension): offsets drawn uniformly from OFFSET +
// k * STEP that leave room for a whole request, from a seeded xorshift64
// generator, so a run is reproducible.
int64_t next_offset(Bench *b) {
    const int64_t span = b->image_size - b->size;
    if (b->random) {
        uint64_t x = b->rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b->rng = x;
        uint64_t slots = uint64_t((span - b->offset) / b->step) + 1;
        return b->offset + int64_t(x % slots) * b->step;
    }
    int64_t off = b->next;
    b->next = span <= 0 ? 0 : (b->next + b->step) % span;
    return off;
}

// Enqueues the next request into buffer `slot` (its user_data); false with
// the queue's message in mb_last_error() if the queue refused it.
bool issue(Bench *b, mb_queue *q, const std::vector<uint8_t *> &bufs, size_t slot) {
    int64_t off = next_offset(b);
    void *tag = reinterpret_cast<void *>(uintptr_t(slot));
    int r = b->write ? mbq_write(q, off, bufs[slot], size_t(b->size), tag, 0)
                     : mbq_read(q, off, bufs[slot], size_t(b->size), tag, 0);
    if (r < 0) return false;
    b->issued++;
    return true;
}

// Runs the requests; 0, or 1 after printing why it stopped.
int run(Bench *b, mb_queue *q, const std::vector<uint8_t *> &bufs) {
    std::vector<mb_completion> done(bufs.size());
    std::string refused;
    for (size_t i = 0; i < bufs.size() && b->issued < b->count; i++) {
        if (!issue(b, q, bufs, i)) {
            refused = mb_last_error();
            break;
        }
    }
    // Until every request is back, also after an error: the buffers must
    // outlive the requests that use them.
    while (b->done < b->issued) {
        int n = mbq_do_io(q, done.data(), 1, int(done.size()), nullptr);
        if (n < 0) {
            fprintf(stderr, "%s: %s\n", img_prog, mb_last_error());
            return 1;
        }
        for (int i = 0; i < n; i++) {
            b->done++;
            if (done[i].ret < 0 && !b->error) b->error = done[i].ret;
            if (b->error || !refused.empty() || b->issued >= b->count) continue;
            if (!issue(b, q, bufs, uintptr_t(done[i].user_data))) refused = mb_last_error();
        }
    }
    if (!refused.empty()) {
        fprintf(stderr, "%s: %s\n", img_prog, refused.c_str());
        return 1;
    }
    return 0;
}

}  // namespace

int cmd_bench(int argc, char **argv) {
    ImgCommon common;
    ImageFlags &flags = common.flags;
    int64_t count = 75000, depth = 64, size = 4096, offset = 0, step = -1;
    int64_t seed = -1;
    bool write = false;
    // -c, -d, -s, -S, -o: a number of at least `min`.
    auto num = [](char opt, int64_t *out, int64_t min) {
        return ImgOption{opt, nullptr, required_argument, [opt, out, min](const char *arg) {
                             auto v = parse_number(arg);
                             if (!v || *v < min) {
                                 fprintf(stderr, "%s: Invalid value '%s' for -%c\n", img_prog, arg, opt);
                                 return 1;
                             }
                             *out = *v;
                             return 0;
                         }};
    };
    auto random = [&seed](const char *arg) {
        seed = 1;
        if (arg) {
            // Long options print with their dashes.
            auto v = parse_number(arg);
            if (!v || *v < 0) {
                fprintf(stderr, "%s: Invalid value '%s' for --random\n", img_prog, arg);
                return 1;
            }
            seed = *v;
        }
        return 0;
    };
    if (auto st = img_parse_options(
            argc, argv,
            {.name = "bench",
             .common = IMG_FORMAT | IMG_SHARE | IMG_IMAGE_OPTS | IMG_CACHE,
             .own = {num('c', &count, 1), num('d', &depth, 1), num('s', &size, 1), num('S', &step, 0),
                     num('o', &offset, 0), img_value('i', nullptr, &flags.aio),
                     {'n', nullptr, no_argument, [&flags](const char *) { flags.aio = "native"; return 0; }},
                     img_flag('w', nullptr, &write), {0, "random", optional_argument, random}},
             .help = print_img_bench_help},
            &common))
        return *st;
    if (argc - optind != 1) return img_bad_usage("bench needs exactly one FILE");
    if (depth > 4096) return img_bad_usage("-d must be at most 4096");
    if (size > (64 << 20)) return img_bad_usage("-s must be at most 64M");
    if (step < 0) step = size;
    if (seed >= 0 && step == 0) return img_bad_usage("--random needs a step (-S) of at least 1");
    flags.read_only = !write;
    // The tool's options, handed to mb_open as a json: specification.
    auto opts = image_options(argv[optind], flags);
    if (!opts.ok()) return img_fail(Status(opts.status()).prefix(std::string("Could not open '") + argv[optind] + "'"));
    char *err = nullptr;
    mb_drive *d = mb_open(("json:" + opts->to_json()).c_str(), &err);
    if (!d) {
        fprintf(stderr, "%s: Could not open '%s': %s\n", img_prog, argv[optind], err);
        mb_free_error(err);
        return 1;
    }
    struct Closer {
        mb_drive *d;
        ~Closer() { mb_close(d); }
    } closer{d};
    Bench b{count, size, step, offset, mb_length(d), write};
    if (b.image_size < 0) return img_fail(PosixError("Could not get the image size", int(-b.image_size)));
    if (b.image_size < size) return img_fail(Status::Error(EINVAL, "The image is smaller than one request"));
    b.next = offset;
    if (seed >= 0) {
        if (offset > b.image_size - size) {
            return img_fail(Status::Error(EINVAL, "Offset " + std::to_string(offset) +
                                                      " leaves no room for a request of " + std::to_string(size) +
                                                      " bytes"));
        }
        b.random = true;
        // xorshift64 must not start at 0; mix the seed so that nearby seeds differ.
        b.rng = (uint64_t(seed) + 1) * 0x9e3779b97f4a7c15ull;
        printf("Sending %" PRId64 " %s requests, %" PRId64 " bytes each, %" PRId64
               " in parallel (random offsets from %" PRId64 ", multiples of %" PRId64 ", seed %" PRId64 ")\n",
               count, write ? "write" : "read", size, depth, offset, step, seed);
    } else {
        printf("Sending %" PRId64 " %s requests, %" PRId64 " bytes each, %" PRId64
               " in parallel (starting at offset %" PRId64 ", step size %" PRId64 ")\n",
               count, write ? "write" : "read", size, depth, offset, step);
    }
    std::vector<uint8_t *> bufs;
    for (int64_t i = 0; i < depth; i++) {
        // GLib's: the Windows CRT has no aligned_alloc.
        auto *p = static_cast<uint8_t *>(g_aligned_alloc(1, (size + 4095) / 4096 * 4096, 4096));
        memset(p, write ? 0xa5 : 0, size);
        bufs.push_back(p);
    }
    auto t0 = std::chrono::steady_clock::now();
    int failed = run(&b, mb_get_queue(d, 0), bufs);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (auto *p : bufs) g_aligned_free(p);
    if (failed) return failed;
    if (b.error) return img_fail(PosixError("Benchmark request failed", -b.error));
    printf("Run completed in %.3f seconds.\n", secs);
    printf("%.0f requests/s\n", count / secs);
    return 0;
}


void print_img_bench_help(FILE *out) {
    fprintf(out,
            "  bench [-c COUNT] [-d DEPTH] [-f FMT] [-i AIO] [-o OFFSET] [-s SIZE] [-S STEP]\n"
            "        [-t CACHE] [-w] [-U] [--random[=SEED]] [--image-opts] FILE\n"
            "      send COUNT requests (default 75000) of SIZE bytes (default 4 KiB), DEPTH in\n"
            "      parallel (default 64), starting at OFFSET, STEP apart (default SIZE),\n"
            "      wrapping at the last offset where a whole request fits (as qemu-img),\n"
            "      reads unless -w, and print the time and requests per second;\n"
            "      --random (not in qemu-img): offsets drawn from OFFSET + k * STEP instead,\n"
            "      from a generator seeded with SEED (default 1), the same for every run\n"
            );
}

}  // namespace mb::tools
