#!/bin/bash
# The tools' user-visible messages, verbatim, and the installed C API found
# through pkg-config by a real compiler.
. "$(dirname "$0")/lib.sh"
need qemu-img cc pkg-config
IMG=$T/a.img

expect_output "miniblock-img --help" '^Usage: miniblock-img COMMAND' "$MINIBLOCK_IMG" --help
expect_output "miniblock-img --he (an abbreviation, as getopt_long's)" '^Usage: miniblock-img COMMAND' "$MINIBLOCK_IMG" --he
expect_output "miniblock-img --vers" '^miniblock-img version ' "$MINIBLOCK_IMG" --vers
expect_output "miniblock-img info --he" '^Usage: miniblock-img info ' "$MINIBLOCK_IMG" info --he
expect_output "miniblock-io --help" '^Usage: miniblock-io \[OPTIONS\]' "$MINIBLOCK_IO" --help
expect_output "create" "^Formatting '$IMG', fmt=raw size=1048576$" "$MINIBLOCK_IMG" create "$IMG" 1M
expect_output "qemu-img sees the size" '"virtual-size": 1048576' qemu-img info --output=json -f raw "$IMG"
expect_fail "create: bad size" "^miniblock-img: Invalid image size '1Q'$" "$MINIBLOCK_IMG" create "$T/b.img" 1Q
expect_fail "create: the hint" '^Expected bytes with an optional k, M, G, T, P or E suffix$' "$MINIBLOCK_IMG" create "$T/b.img" 1Q
expect_fail "create: unknown option" "^miniblock-img: Invalid parameter 'bogus'$" \
    "$MINIBLOCK_IMG" create -o bogus=1 "$T/b.img" 1M
expect_fail "unknown command" '^miniblock-img: Command not found: frob$' "$MINIBLOCK_IMG" frob
expect_fail "bad --output" "^miniblock-img: --output must be human or json, not 'yaml'$" "$MINIBLOCK_IMG" info --output=yaml "$IMG"
expect_output "info" '^virtual size: 1 MiB \(1048576 bytes\)$' "$MINIBLOCK_IMG" info -f raw "$IMG"
expect_output "info --output=json" '"virtual-size" : 1048576' "$MINIBLOCK_IMG" info -f raw --output=json "$IMG"
expect_output "probing guesses raw, with QEMU's warning where writes are possible" \
    "^WARNING: Image format was not specified for '$IMG' and probing guessed raw.$" "$MINIBLOCK_IO" -c 'read 0 512' "$IMG"
expect_output "locks: nobody" '^  no locks held$' "$MINIBLOCK_IMG" locks "$IMG"
expect_fail "locks: missing file" "^miniblock-img: Could not stat '$T/nope': No such file or directory$" \
    "$MINIBLOCK_IMG" locks "$T/nope"
expect_output "bench" '^Sending 100 read requests, 4096 bytes each, 8 in parallel \(starting at offset 0, step size 4096\)$' \
    "$MINIBLOCK_IMG" bench -c 100 -d 8 -f raw "$IMG"
expect_output "bench -w with aio=native" 'requests/s$' "$MINIBLOCK_IMG" bench -w -c 100 -d 8 -t none -i native -f raw "$IMG"

expect_output "write and read back a pattern" '^read 4096/4096 bytes at offset 4096$' \
    "$MINIBLOCK_IO" -f raw -c "write -P 0x3c 4k 4k" -c "read -P 0x3c 4k 4k" "$IMG"
expect_output "qemu-io reads what miniblock-io wrote" 'read 4096/4096 bytes' qemu-io -f raw -c "read -P 0x3c 4k 4k" "$IMG"
expect_fail "pattern mismatch" '^Pattern verification failed at offset 4096, 4096 bytes$' \
    "$MINIBLOCK_IO" -f raw -c "read -P 0x3d 4k 4k" "$IMG"
expect_fail "write on read-only" '^write failed: Operation not permitted$' "$MINIBLOCK_IO" -r -f raw -c "write 0 512" "$IMG"
expect_fail "unknown command" '^command "frob" not found$' "$MINIBLOCK_IO" -f raw -c frob "$IMG"
expect_fail "bad length" "^read: invalid length '1G1'$" "$MINIBLOCK_IO" -f raw -c "read 0 1G1" "$IMG"
expect_fail "bad pattern" "^write: invalid pattern '300': expected a byte value from 0 to 255$" \
    "$MINIBLOCK_IO" -f raw -c "write -P 300 0 512" "$IMG"
expect_fail "missing image" "^miniblock-io: can't open device $T/none.img: Could not open '$T/none.img': No such file or directory$" \
    "$MINIBLOCK_IO" -f raw -c length "$T/none.img"
expect_fail "bad lock mode" "^miniblock-io: can't open device $IMG: Invalid value 'exclusiv' for parameter 'lock'$" \
    "$MINIBLOCK_IO" -f raw -l exclusiv -c length "$IMG"
expect_output "stdin mode: one reply per command, each ending in [ok] or [error]" \
    '^1 MiB \[ok\] command "x" not found \[error\]$' \
    bash -c "printf 'length\nx\n' | '$MINIBLOCK_IO' -f raw '$IMG' 2>&1 | tr '\n' ' ' | sed 's/ \$//'"
expect_output "--image-opts" '^1 MiB$' "$MINIBLOCK_IO" --image-opts -c length "driver=raw,file.driver=file,file.filename=$IMG"
expect_output "json: pseudo-filename" '^1 MiB$' "$MINIBLOCK_IO" -c length \
    "json:{\"driver\": \"raw\", \"file\": {\"driver\": \"file\", \"filename\": \"$IMG\"}}"

# The installed library, found by pkg-config, from a plain C program.
DEST=$T/root
if meson install -C "$MINIBLOCK_BUILD" --destdir "$DEST" --no-rebuild >"$T/install.log" 2>&1; then
    # The man pages, made by pandoc at build time, are installed and render.
    for page in man1/miniblock-img.1 man1/miniblock-io.1 man1/miniblock-scenario.1 man7/miniblock.7; do
        f=$(find "$DEST" -path "*/man/$page" | head -1)
        name=$(basename "$page" | sed 's/\.[17]$//')
        expect_output "man page $page installed" "^ +$name - " bash -c "[ -n '$f' ] && MANWIDTH=100 man -l '$f' 2>/dev/null"
    done
    pcdir=$(dirname "$(find "$DEST" -name miniblock.pc | head -1)")
    cat >"$T/embed.c" <<'C'
#include <miniblock/miniblock.h>
#include <stdio.h>
int main(int argc, char **argv) {
    char *err = NULL;
    mb_drive *d = mb_open(argv[1], &err);
    if (!d) { printf("%s\n", err); mb_free_error(err); return 1; }
    printf("length %lld\n", (long long)mb_length(d));
    mb_close(d);
    return 0;
}
C
    if PKG_CONFIG_PATH=$pcdir PKG_CONFIG_SYSROOT_DIR=$DEST \
        cc "$T/embed.c" -o "$T/embed" $(PKG_CONFIG_PATH=$pcdir PKG_CONFIG_SYSROOT_DIR=$DEST pkg-config --cflags --libs miniblock) 2>"$T/cc.log"; then
        libdir=$(dirname "$(find "$DEST" -name 'libminiblock.so.0' | head -1)")
        expect_output "an embedder built with pkg-config opens an image" '^length 1048576$' \
            env LD_LIBRARY_PATH="$libdir" "$T/embed" "file=$IMG,format=raw"
    else
        not_ok "an embedder builds with pkg-config" "$(cat "$T/cc.log")"
    fi
else
    not_ok "meson install" "$(cat "$T/install.log")"
fi
finish
