/*
 * miniblock C API: open a disk image through miniblock's block layer, with
 * QEMU-compatible image locking, from C.
 *
 *   char *err = NULL;
 *   mb_drive *d = mb_open("file=disk.img,format=raw,lock=exclusive", &err);
 *   if (!d) { fprintf(stderr, "%s\n", err); mb_free_error(err); return 1; }
 *   if (mb_pwrite(d, buf, 512, 0) < 0) ...
 *   mb_close(d);
 *
 * Data calls return 0 (or a length) on success and a negative errno on
 * failure.  Calls run miniblock's event loop, which is attached to GLib's
 * default main context, until the request completes; an emulator running a
 * GLib main loop on that context has miniblock as one more source.
 */
#ifndef MINIBLOCK_H
#define MINIBLOCK_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mb_drive mb_drive;

/* Opens a drive from "key=value,..." options, "json:{...}" or a filename.
 * On failure returns NULL and, if errp is not NULL, stores a message
 * (first line QEMU's, then details such as who holds a lock) to be freed
 * with mb_free_error(). */
mb_drive *mb_open(const char *spec, char **errp);
/* Flushes (if writable), releases every lock and frees the drive. */
void mb_close(mb_drive *d);

int mb_pread(mb_drive *d, void *buf, int64_t len, int64_t offset);
int mb_pwrite(mb_drive *d, const void *buf, int64_t len, int64_t offset);
int mb_pwrite_zeroes(mb_drive *d, int64_t len, int64_t offset);
int mb_flush(mb_drive *d);
/* Length in bytes, or a negative errno. */
int64_t mb_length(mb_drive *d);

void mb_free_error(char *err);

#ifdef __cplusplus
}
#endif

#endif /* MINIBLOCK_H */
