// Fuzz target: qcow2 header, extension and table parsing, and the I/O paths
// over whatever tables the input describes.  The input is the whole image
// file (in a memfd); it is parsed directly, then opened read-write without
// its backing file, read, checked and written.  Seeds: qcow2-seeds/, made by
// make-qcow2-seeds.sh with qemu-img (512-byte clusters keep them small).
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "block/block_int.h"
#include "block/drivers/qcow2.h"
#include "block/warn.h"
#include "miniblock/block.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    using namespace mb;
    static bool quiet = (set_warning_handler([](const std::string &) {}), true);  // warnings are expected
    (void)quiet;
    {
        qcow2::ParsedImage img;
        (void)qcow2::parse_header(data, size, size, &img);
    }
    int fd = memfd_create("fuzz-qcow2", MFD_CLOEXEC);
    if (fd < 0) return 0;
    if (write(fd, data, size) != ssize_t(size)) {
        close(fd);
        return 0;
    }
    std::string path = "/proc/self/fd/" + std::to_string(fd);
    qapi::OptionDict opts, file;
    file.set_str("driver", "file");
    file.set_str("filename", path);
    file.set_str("lock", "off");
    opts.set_str("driver", "qcow2");
    opts.set_str("lock", "off");
    opts.set_null("backing");
    opts.set_dict("file", file);
    {
    auto blk = BlockBackend::open(opts);  // closed at the end of this scope, before the fd
    if (blk.ok()) {
        int64_t len = (*blk)->length();
        std::vector<uint8_t> buf(64 << 10);
        // Reads across the start, the middle and the end.
        for (int64_t off : {int64_t(0), len / 2, len - int64_t(buf.size())}) {
            if (off < 0) off = 0;
            int64_t n = std::min<int64_t>(buf.size(), len - off);
            if (n > 0) (void)(*blk)->pread(off, n, buf.data());
        }
        qcow2::CheckResult res;
        (void)qcow2_check((*blk)->bs(), false, &res);
        // Writes: allocation, copy-on-write, zero clusters.
        if (len >= 8192) {
            std::fill(buf.begin(), buf.begin() + 4096, 0x5a);
            (void)(*blk)->pwrite(1000, 3000, buf.data());
            (void)(*blk)->pwrite(len / 2 & ~int64_t(511), 4096, buf.data());
            (void)(*blk)->pwrite_zeroes(0, 8192);
            (void)(*blk)->pread(0, 8192, buf.data());
        }
    }
    }
    close(fd);
    return 0;
}
