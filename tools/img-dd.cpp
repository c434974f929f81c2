// miniblock-img dd: qemu-img dd's operands (bs=, count=, skip=, if=, of=).
// The output is a new image (-O, default raw) of the copied length: the
// input's, cut to count blocks, less the skipped ones.

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "block/block_int.h"
#include "tools/img-commands.h"
#include "tools/img-common.h"
#include "tools/tool-common.h"

namespace mb::tools {

int cmd_dd(int argc, char **argv) {
    ImgCommon common;
    ImageFlags &in_flags = common.flags;
    in_flags.read_only = true;
    std::string out_fmt = "raw";
    if (auto st = img_parse_options(argc, argv,
                                    {.name = "dd", .common = IMG_OPEN, .own = {img_value('O', nullptr, &out_fmt)}},
                                    &common))
        return *st;
    int64_t bs = 512, count = -1, skip = 0;
    std::string in, out;
    for (int i = optind; i < argc; i++) {
        std::string a = argv[i];
        size_t eq = a.find('=');
        if (eq == std::string::npos) return img_fail(Status::Error(EINVAL, "unrecognized operand " + qapi::shown_name(a)));
        std::string k = a.substr(0, eq), v = a.substr(eq + 1);
        auto num = [&](int64_t *dst, int64_t min) {
            auto n = parse_number(v);
            if (!n || *n < min) return false;
            *dst = *n;
            return true;
        };
        if (k == "if") in = v;
        else if (k == "of") out = v;
        else if (k == "bs") {
            if (!num(&bs, 1) || bs > (64 << 20)) return img_fail(Status::Error(EINVAL, "invalid number: '" + qapi::shown_name(v) + "'"));
        } else if (k == "count") {
            if (!num(&count, 0)) return img_fail(Status::Error(EINVAL, "invalid number: '" + qapi::shown_name(v) + "'"));
        } else if (k == "skip") {
            if (!num(&skip, 0)) return img_fail(Status::Error(EINVAL, "invalid number: '" + qapi::shown_name(v) + "'"));
        } else {
            return img_fail(Status::Error(EINVAL, "unrecognized operand " + qapi::shown_name(a)));
        }
    }
    if (in.empty()) return img_fail(Status::Error(EINVAL, "Must specify an input file with if=INPUT"));
    if (out.empty()) return img_fail(Status::Error(EINVAL, "Must specify an output file with of=OUTPUT"));
    auto src = open_image(in, in_flags);
    if (!src.ok()) return img_fail(Status(src.status()).prefix("Could not open '" + qapi::shown_name(in) + "'"));
    int64_t size = (*src)->length();
    if (size < 0) return img_fail(PosixError("Failed to get size for '" + qapi::shown_name(in) + "'", (int)-size));
    if (count >= 0 && count <= INT64_MAX / bs && size > count * bs) size = count * bs;
    const int64_t start = skip > INT64_MAX / bs ? INT64_MAX : skip * bs;
    const int64_t out_size = start >= size ? 0 : size - start;
    // qcow2 sizes are whole sectors: rounded up as the copy never reaches the tail.
    int64_t create_size = out_fmt == "qcow2" ? (out_size + 511) & ~int64_t(511) : out_size;
    Status st = bdrv_create(out_fmt, out, create_size, {});
    if (!st.ok()) return img_fail(st.prefix("Could not create '" + qapi::shown_name(out) + "'"));
    ImageFlags out_flags;
    out_flags.format = out_fmt;
    out_flags.cache = "unsafe";  // a new file: flushed once at the end
    auto dst = open_image(out, out_flags);
    if (!dst.ok()) return img_fail(Status(dst.status()).prefix("Could not open '" + qapi::shown_name(out) + "'"));
    std::vector<uint8_t> buf(bs);
    for (int64_t pos = start, out_pos = 0; pos < size; pos += bs, out_pos += bs) {
        int64_t n = std::min(bs, size - pos);
        int r = (*src)->pread(pos, n, buf.data());
        if (r < 0) return img_fail(PosixError("error while reading from input image file", -r));
        r = (*dst)->pwrite(out_pos, n, buf.data());
        if (r < 0) return img_fail(PosixError("error while writing to output image file", -r));
    }
    int r = (*dst)->flush();
    if (r < 0) return img_fail(PosixError("error while flushing '" + qapi::shown_name(out) + "'", -r));
    return 0;
}

}  // namespace mb::tools
