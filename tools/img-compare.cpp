// miniblock-img compare: qemu-img compare's texts and exit codes (0
// identical, 1 different, 2 an error opening, 3 an error while comparing).
// Both images are read as the guest sees them (through their backing
// chains); beyond the smaller one's end, the larger must read as zeroes.

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <vector>

#include "block/aio.h"
#include "block/block_int.h"
#include "tools/img-commands.h"
#include "tools/img-common.h"
#include "tools/tool-common.h"

namespace mb::tools {

namespace {

constexpr int64_t CHUNK = 1 << 20;

// The first differing byte, rounded down to its 512-byte sector as
// qemu-img reports it; -1 if none.
int64_t first_difference(const uint8_t *a, const uint8_t *b, int64_t n) {
    for (int64_t i = 0; i < n; i += 512) {
        int64_t m = std::min<int64_t>(512, n - i);
        if (memcmp(a + i, b + i, m)) return i;
    }
    return -1;
}

int64_t first_nonzero(const uint8_t *a, int64_t n) {
    for (int64_t i = 0; i < n; i += 512) {
        int64_t m = std::min<int64_t>(512, n - i);
        for (int64_t j = 0; j < m; j++)
            if (a[i + j]) return i;
    }
    return -1;
}

// Whether [off, off + *pnum) is allocated in any layer of bs's chain.
Task<int> allocated_above(BlockDriverState *bs, int64_t off, int64_t bytes, int64_t *pnum) {
    int64_t n = bytes;
    for (; bs; bs = bs->backing() ? bs->backing()->bs.get() : nullptr) {
        int64_t len = bdrv_getlength(bs);
        if (len < 0) co_return (int)len;
        if (off >= len) break;
        int64_t p = std::min(n, len - off), map = 0;
        BlockDriverState *file = nullptr;
        int r = BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
        if (bs->drv->co_block_status) r = co_await bs->drv->co_block_status(bs, off, p, &p, &map, &file);
        if (r < 0) co_return r;
        if (p <= 0) co_return -EIO;
        if (r & BDRV_BLOCK_ALLOCATED) {
            *pnum = p;
            co_return 1;
        }
        n = p;
    }
    *pnum = n;
    co_return 0;
}

}  // namespace

int cmd_compare(int argc, char **argv) {
    ImgCommon parsed;
    parsed.flags.read_only = true;
    std::string format2, cache;
    bool strict = false;
    if (auto st = img_parse_options(argc, argv,
                                    {.name = "compare",
                                     .common = IMG_OPEN | IMG_QUIET,
                                     // -p: progress, nothing to show for a local compare
                                     .own = {img_value('F', nullptr, &format2), img_value('T', nullptr, &cache),
                                             img_ignored('p'), img_flag('s', nullptr, &strict)},
                                     .bad_option = [] {
                                         img_bad_usage("invalid option for compare");
                                         return 2;
                                     }},
                                    &parsed))
        return *st;
    // -U, --image-opts and -T apply to both images.
    ImageFlags f1 = parsed.flags;
    f1.cache = cache;
    ImageFlags f2 = f1;
    f2.format = format2;
    const bool quiet = parsed.quiet;
    if (argc - optind != 2) {
        img_bad_usage("compare needs FILE1 and FILE2");
        return 2;
    }
    if (f2.format.empty()) f2.format = f1.format;
    std::string n1 = argv[optind], n2 = argv[optind + 1];
    auto b1 = open_image(n1, f1);
    if (!b1.ok()) {
        img_fail(Status(b1.status()).prefix("Could not open '" + qapi::shown_name(n1) + "'"));
        return 2;
    }
    auto b2 = open_image(n2, f2);
    if (!b2.ok()) {
        img_fail(Status(b2.status()).prefix("Could not open '" + qapi::shown_name(n2) + "'"));
        return 2;
    }
    int64_t len1 = (*b1)->length(), len2 = (*b2)->length();
    if (len1 < 0 || len2 < 0) {
        img_fail(PosixError("Cannot get the image size", -(int)std::min(len1, len2)));
        return 3;
    }
    if (len1 != len2) {
        if (strict) {
            if (!quiet) printf("Strict mode: Image size mismatch!\n");
            return 1;
        }
        if (!quiet) fprintf(stderr, "Warning: Image size mismatch!\n");  // stderr, as qemu-img
    }
    std::vector<uint8_t> a(CHUNK), b(CHUNK);
    const int64_t common = std::min(len1, len2);
    auto read_err = [&](int64_t off, const std::string &name, int r) {
        img_fail(PosixError("Error while reading offset " + std::to_string(off) + " of " + name, -r));
        return 3;
    };
    for (int64_t off = 0; off < common;) {
        int64_t n = std::min(CHUNK, common - off);
        if (strict) {
            // Allocation must agree too, range by range.
            int64_t p1 = 0, p2 = 0;
            int s1 = sync_wait(allocated_above((*b1)->bs(), off, n, &p1));
            int s2 = sync_wait(allocated_above((*b2)->bs(), off, n, &p2));
            if (s1 < 0) return read_err(off, n1, s1);
            if (s2 < 0) return read_err(off, n2, s2);
            if (s1 != s2) {
                if (!quiet) printf("Strict mode: Offset %" PRId64 " block status mismatch!\n", off);
                return 1;
            }
            n = std::min(p1, p2);
        }
        int r = (*b1)->pread(off, n, a.data());
        if (r < 0) return read_err(off, n1, r);
        r = (*b2)->pread(off, n, b.data());
        if (r < 0) return read_err(off, n2, r);
        int64_t d = first_difference(a.data(), b.data(), n);
        if (d >= 0) {
            if (!quiet) printf("Content mismatch at offset %" PRId64 "!\n", off + d);
            return 1;
        }
        off += n;
    }
    // The larger image's tail must read as zeroes.
    BlockBackend *big = len1 > len2 ? b1->get() : b2->get();
    const std::string &big_name = len1 > len2 ? n1 : n2;
    for (int64_t off = common, end = std::max(len1, len2); off < end;) {
        int64_t n = std::min(CHUNK, end - off);
        int r = big->pread(off, n, a.data());
        if (r < 0) return read_err(off, big_name, r);
        int64_t d = first_nonzero(a.data(), n);
        if (d >= 0) {
            if (!quiet) printf("Content mismatch at offset %" PRId64 "!\n", off + d);
            return 1;
        }
        off += n;
    }
    if (!quiet) printf("Images are identical.\n");
    return 0;
}

}  // namespace mb::tools
