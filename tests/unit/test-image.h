/* The preamble the plain-C suites share (test-capi.c, test-control.c,
 * test-queue.c): one raw image file per test, created by setup and removed
 * by teardown, and drive() to name it with extra options.  Include after
 * <cmocka.h>, <fcntl.h>, <stdio.h> and <unistd.h>; test-capi.c, which is also
 * built for Windows, defines O_CLOEXEC there first. */
#ifndef MB_TEST_IMAGE_H
#define MB_TEST_IMAGE_H

static char path[256];
static char spec[512];

/* Creates path = DIR/mb-NAME-PID.img, SIZE bytes of zeroes.  Returns the file
 * open read-write (the caller fills and closes it), or -1. */
static int create_image(const char *dir, const char *name, long size) {
    snprintf(path, sizeof(path), "%s/mb-%s-%d.img", dir, name, (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0 && ftruncate(fd, size) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int teardown(void **state) {
    (void)state;
    unlink(path);
    return 0;
}

/* "file=PATH,format=raw[,EXTRA]" */
static const char *drive(const char *extra) {
    snprintf(spec, sizeof(spec), "file=%s,format=raw%s%s", path, *extra ? "," : "", extra);
    return spec;
}

#endif
