// mb-dump SPEC OUTPUT: reads a whole drive through the library and writes its
// bytes to OUTPUT, so interop tests can compare an image's content with what
// a peer (qemu-img convert -O raw) reads.  SPEC is a -drive option string.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "miniblock/block.h"

int main(int argc, char **argv) {
    if (argc != 3 || !strcmp(argv[1], "--help")) {
        fprintf(argc == 2 ? stdout : stderr, "Usage: mb-dump SPEC OUTPUT\n");
        return argc == 2 ? 0 : 1;
    }
    auto blk = mb::BlockBackend::open(argv[1]);
    if (!blk.ok()) {
        fprintf(stderr, "mb-dump: %s\n", blk.status().to_string().c_str());
        return 1;
    }
    int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        perror(argv[2]);
        return 1;
    }
    int64_t len = (*blk)->length();
    std::vector<uint8_t> buf(1 << 20);
    for (int64_t off = 0; off < len;) {
        int64_t n = std::min<int64_t>(len - off, int64_t(buf.size()));
        // Odd chunk sizes on purpose: requests straddle compressed blocks.
        n = std::min<int64_t>(n, 777 * 1024 + 13);
        if (int r = (*blk)->pread(off, n, buf.data())) {
            fprintf(stderr, "mb-dump: read at %lld: %s\n", (long long)off, strerror(-r));
            close(fd);
            return 1;
        }
        if (write(fd, buf.data(), size_t(n)) != n) {
            perror("write");
            close(fd);
            return 1;
        }
        off += n;
    }
    return close(fd) == 0 ? 0 : 1;
}
