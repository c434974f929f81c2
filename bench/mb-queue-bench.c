/* 4 KiB-style read benchmark through the public queue API only (what an
 * embedder gets): keeps DEPTH reads in flight on one queue, offsets
 * advancing by STRIDE from 0 and wrapping as qemu-img bench does, waits in
 * mbq_do_io.  Prints requests/s and CPU time per request.
 *
 *   mb-queue-bench SPEC COUNT DEPTH SIZE STRIDE [REAP]
 *
 * REAP (default DEPTH) is the most completions taken per mbq_do_io: 1
 * resubmits after every completion, as qemu-img bench does.
 *
 * Run by bench/queue-bench.sh. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "miniblock/miniblock.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* qemu-img bench's rule, so that both read the same offsets. */
static int64_t next_offset(int64_t offset, int64_t stride, int64_t len, size_t size) {
    if (len <= (int64_t)size) return 0;
    return (offset + stride) % (len - (int64_t)size);
}

int main(int argc, char **argv) {
    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: %s SPEC COUNT DEPTH SIZE STRIDE [REAP]\n", argv[0]);
        return 2;
    }
    const char *spec = argv[1];
    long count = atol(argv[2]);
    int depth = atoi(argv[3]);
    size_t size = (size_t)atol(argv[4]);
    int64_t stride = atoll(argv[5]);
    int reap = argc == 7 ? atoi(argv[6]) : depth;
    if (count <= 0 || depth <= 0 || depth > 1024 || size == 0 || reap <= 0 || reap > depth) {
        fprintf(stderr, "mb-queue-bench: bad arguments\n");
        return 2;
    }
    char *err = NULL;
    mb_drive *d = mb_open(spec, &err);
    if (!d) {
        fprintf(stderr, "mb-queue-bench: %s\n", err);
        return 1;
    }
    mb_queue *q = mb_get_queue(d, 0);
    int64_t len = mb_length(d);
    unsigned char *bufs;
    if (posix_memalign((void **)&bufs, 4096, (size_t)depth * size)) return 1;
    struct mb_completion *c = calloc((size_t)depth, sizeof(*c));

    int64_t offset = 0;
    long issued = 0, done = 0;
    double t0 = now(), c0 = cpu();
    /* Fill the queue; then each completion frees its slot for the next. */
    for (int i = 0; i < depth && issued < count; i++, issued++) {
        if (mbq_read(q, offset, bufs + (size_t)i * size, size, (void *)(intptr_t)i, 0) < 0) {
            fprintf(stderr, "mb-queue-bench: %s\n", mb_last_error());
            return 1;
        }
        offset = next_offset(offset, stride, len, size);
    }
    while (done < count) {
        int n = mbq_do_io(q, c, 1, reap, NULL);
        if (n < 0) {
            fprintf(stderr, "mb-queue-bench: %s\n", mb_last_error());
            return 1;
        }
        for (int i = 0; i < n; i++) {
            if (c[i].ret < 0) {
                fprintf(stderr, "mb-queue-bench: %s\n", c[i].error_msg);
                return 1;
            }
            done++;
            if (issued < count) {
                int slot = (int)(intptr_t)c[i].user_data;
                if (mbq_read(q, offset, bufs + (size_t)slot * size, size, c[i].user_data, 0) < 0) {
                    fprintf(stderr, "mb-queue-bench: %s\n", mb_last_error());
                    return 1;
                }
                issued++;
                offset = next_offset(offset, stride, len, size);
            }
        }
    }
    double secs = now() - t0, cpus = cpu() - c0;
    printf("%ld requests in %.3f s: %.0f requests/s, %.2f us CPU per request\n", count, secs, count / secs,
           cpus * 1e6 / count);
    free(c);
    free(bufs);
    mb_close(d);
    return 0;
}
