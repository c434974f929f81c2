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

/* Migration hand-over.  A target opens its drive with the option
 * "inactive=on" (files open, no locks taken, writes fail with -EPERM).
 * mb_activate takes every lock of the drive's graph in one step; if the
 * source still holds them it returns a negative errno (-EAGAIN for a lock
 * conflict) with nothing changed and, if errp is not NULL, a message naming
 * the holders.  mb_inactivate flushes and drops every lock.  Both return 0
 * when the drive already is in the wanted state. */
int mb_activate(mb_drive *d, char **errp);
int mb_inactivate(mb_drive *d, char **errp);
/* 1 if the drive is inactive, 0 if active, a negative errno on error. */
int mb_is_inactive(mb_drive *d);

void mb_free_error(char *err);

#ifdef __cplusplus
}
#endif

#endif /* MINIBLOCK_H */
