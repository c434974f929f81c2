// miniblock-img resize: qemu-img resize's texts.  Resizing needs the resize
// permission, which the lock table gives no drive by default: it is taken
// for the duration in one transaction, so resize takes part in locking (a
// running VM that forbids resizing, as QEMU and miniblock writers do, keeps
// it out, named in the error) and changes no lock byte when refused.

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>

#include "tools/img-commands.h"
#include "tools/img-common.h"
#include "tools/tool-common.h"

namespace mb::tools {

int cmd_resize(int argc, char **argv) {
    ImgCommon common;
    bool shrink = false;
    // A size such as "-1M" looks like an option: getopt stops at the image
    // name only if told the argument order, so take the last word first.
    if (argc >= 3 && argv[argc - 1][0] == '-' && argv[argc - 1][1] >= '0' && argv[argc - 1][1] <= '9') argc--;
    std::string size_arg = argv[argc] ? argv[argc] : "";
    bool size_taken = !size_arg.empty() && size_arg[0] == '-';
    if (auto st = img_parse_options(argc, argv,
                                    {.name = "resize",
                                     .common = IMG_FORMAT | IMG_IMAGE_OPTS | IMG_QUIET,
                                     .own = {img_flag(0, "shrink", &shrink)}},
                                    &common))
        return *st;
    const ImageFlags &flags = common.flags;
    const bool quiet = common.quiet;
    if (argc - optind != (size_taken ? 1 : 2)) return img_bad_usage("resize needs FILE and SIZE");
    std::string image = argv[optind];
    if (!size_taken) size_arg = argv[optind + 1];
    int sign = 0;
    std::string num = size_arg;
    if (!num.empty() && (num[0] == '+' || num[0] == '-')) {
        sign = num[0] == '+' ? 1 : -1;
        num.erase(0, 1);
    }
    auto n = parse_number(num);
    if (!n) return img_fail(Status::Error(EINVAL, "Invalid image size specified"));
    auto blk = open_image(image, flags);
    if (!blk.ok()) return img_fail(Status(blk.status()).prefix("Could not open '" + qapi::shown_name(image) + "'"));
    int64_t cur = (*blk)->length();
    if (cur < 0) return img_fail(PosixError("Could not get the image size", (int)-cur));
    int64_t want = sign == 0 ? *n : sign > 0 ? cur + *n : cur - *n;
    if (want <= 0 || (sign > 0 && want < cur)) return img_fail(Status::Error(EINVAL, "New image size must be positive"));
    if (want < cur && !shrink) {
        // qemu-img 7.2's two lines, the error first.
        img_fail(Status::Error(EINVAL, "Use the --shrink option to perform a shrink operation."));
        fprintf(stderr, "%s: warning: Shrinking an image will delete all data beyond the shrunken image's end. "
                        "Before performing such an operation, make sure there is no important data there.\n",
                img_prog);
        return 1;
    }
    // qcow2 sizes are whole sectors (its driver's rule and text in QEMU).
    if (!strcmp((*blk)->bs()->drv->format_name, "qcow2") && want % 512)
        return img_fail(Status::Error(EINVAL, "The new size must be a multiple of 512"));
    auto r = truncate_with_resize_perm(**blk, want);
    if (!r.ok()) return img_fail(r.status());
    if (!quiet) printf("Image resized.\n");
    return 0;
}

}  // namespace mb::tools
