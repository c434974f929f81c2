// miniblock-img commit: the overlay's data into its backing file, under a
// temporary exclusive lock on the base (block/commit.cpp has the design).
#include <getopt.h>

#include <cstdio>
#include <string>

#include "tools/tool-common.h"

using namespace mb;
using namespace mb::tools;

namespace {

void progress(int64_t done, int64_t total, void *) {
    printf("    (%.2f/100%%)\r", total ? 100.0 * done / total : 100.0);
    fflush(stdout);
}

}  // namespace

// Called from miniblock-img's command table.
int img_cmd_commit(int argc, char **argv) {
    enum { OPT_IMAGE_OPTS = 256, OPT_CHECK };
    static const struct option longopts[] = {
        {"image-opts", no_argument, nullptr, OPT_IMAGE_OPTS},
        {"check", no_argument, nullptr, OPT_CHECK},
        {"help", no_argument, nullptr, 'h'},
        {nullptr, 0, nullptr, 0},
    };
    ImageFlags flags;
    std::string base;
    bool show_progress = false, check = false, quiet = false;
    int c;
    while ((c = getopt_long(argc, argv, "f:t:b:dpqh", longopts, nullptr)) != -1) {
        switch (c) {
        case 'f': flags.format = optarg; break;
        case 't': flags.cache = optarg; break;
        case 'b': base = optarg; break;
        case 'd': break;  // the overlay is never emptied (see the --help text)
        case 'p': show_progress = true; break;
        case 'q': quiet = true; break;
        case OPT_CHECK: check = true; break;
        case OPT_IMAGE_OPTS: flags.image_opts = true; break;
        case 'h':
            printf("Usage: miniblock-img commit [-f FMT] [-t CACHE] [-b BASE] [-d] [-p] [-q] [--check]\n"
                   "                            [--image-opts] OVERLAY\n"
                   "Copy OVERLAY's data into its backing file (or into BASE, deeper in its chain).\n"
                   "The base is locked exclusively for the duration (use consistent read, write,\n"
                   "resize; forbid all) and drops back to its previous locks afterwards; if anyone\n"
                   "else uses it, commit is refused naming them, with every lock as before.\n"
                   "\n"
                   "  -b BASE     commit into BASE (a file name in the chain); the images in between\n"
                   "              are not readable consistently by others meanwhile\n"
                   "  -d          accepted for qemu-img compatibility: the overlay is never emptied\n"
                   "  -p          show progress\n"
                   "  -q          quiet\n"
                   "  --check     dry run: say whether the lock on the base could be taken now and,\n"
                   "              if not, who is in the way (exit status 1)\n");
            return 0;
        default:
            fprintf(stderr, "Try 'miniblock-img commit --help' for more information.\n");
            return 1;
        }
    }
    if (argc - optind != 1) {
        fprintf(stderr, "miniblock-img: commit needs one OVERLAY\n"
                        "Try 'miniblock-img commit --help' for more information.\n");
        return 1;
    }
    // A dry run needs no write access to the overlay.
    if (check) flags.read_only = true;
    auto blk = open_image(argv[optind], flags);
    if (!blk.ok()) {
        print_error("miniblock-img", blk.status());
        return 1;
    }
    Status st = (*blk)->commit(base, check, show_progress && !quiet ? progress : nullptr, nullptr);
    if (show_progress && !quiet) printf("\n");
    if (!st.ok()) {
        print_error("miniblock-img", st);
        return 1;
    }
    if (!quiet) printf(check ? "Commit could take the lock now.\n" : "Image committed.\n");
    return 0;
}
