// miniblock-img commit: the overlay's data into its backing file, under a
// temporary exclusive lock on the base (block/commit.cpp has the design).

#include <cstdio>
#include <string>

#include "block/block_int.h"
#include "tools/img-commands.h"
#include "tools/img-common.h"
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
    ImgCommon common;
    ImageFlags &flags = common.flags;
    std::string base;
    bool show_progress = false, check = false, keep = false;
    if (auto st = img_parse_options(argc, argv,
                                    {.name = "commit",
                                     .common = IMG_FORMAT | IMG_IMAGE_OPTS | IMG_CACHE | IMG_QUIET,
                                     .own = {img_value('b', nullptr, &base), img_flag('d', nullptr, &keep),
                                             img_flag('p', nullptr, &show_progress), img_flag(0, "check", &check)},
                                     .bad_option = [] {
                                         fprintf(stderr, "Try 'miniblock-img commit --help' for more information.\n");
                                         return 1;
                                     }},
                                    &common))
        return *st;
    const bool quiet = common.quiet;
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
    // As qemu-img: the overlay is emptied (its clusters dropped, so reads
    // fall through to the base that now holds the data) unless -d, or -b
    // named the base explicitly (iotest 097's rule).
    if (!check && !keep && base.empty()) {
        st = bdrv_make_empty((*blk)->bs());
        if (!st.ok()) {
            print_error("miniblock-img", st.prefix("Image committed, but not emptied"));
            return 1;
        }
    }
    if (!quiet) printf(check ? "Commit could take the lock now.\n" : "Image committed.\n");
    return 0;
}
