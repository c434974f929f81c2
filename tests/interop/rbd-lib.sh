#!/bin/bash
# librbd is loaded on the rbd driver's first use, never at start
# (block/drivers/rbd-lib.h): no binary links Ceph's libraries, and when they
# cannot be loaded an rbd: open fails with one clear error naming the
# library, while every other image still opens.  The broken libraries are
# real files found by the real dynamic loader (LD_LIBRARY_PATH), no Ceph
# cluster needed: loading fails before any connection.
. "$(dirname "$0")/lib.sh"
need ldd cc qemu-img

SCENARIO=$MINIBLOCK_BUILD/tools/miniblock-scenario
LIBMB=$MINIBLOCK_BUILD/libminiblock.so

# --- nothing links librbd, librados or libceph-common ---------------------
for bin in "$LIBMB" "$MINIBLOCK_IMG" "$MINIBLOCK_IO" "$SCENARIO" "$MINIBLOCK_DUMP"; do
    name=$(basename "$bin")
    if [ ! -e "$bin" ]; then
        not_ok "$name: exists" "missing: $bin"
        continue
    fi
    out=$(ldd "$bin" 2>&1)
    if grep -Eq 'librbd|librados|libceph-common' <<<"$out"; then
        not_ok "$name links no Ceph library" "$(grep -E 'librbd|librados|libceph' <<<"$out")"
    elif ! grep -q 'libc\.so' <<<"$out"; then
        not_ok "$name: ldd lists its libraries" "$out"  # (a check that cannot fail is none)
    else
        ok "$name links no Ceph library"
    fi
done

# And a start does not load them either (a dlopen at start would hide from ldd).
maps=$(LD_DEBUG=files "$MINIBLOCK_IMG" --version 2>&1 >/dev/null)
if grep -Eq 'file=(librbd|librados)' <<<"$maps"; then
    not_ok "miniblock-img --version loads no Ceph library" "$(grep -E 'file=(librbd|librados)' <<<"$maps" | head -3)"
elif ! grep -q 'file=libglib' <<<"$maps"; then
    not_ok "LD_DEBUG=files lists what miniblock-img loads" "$maps"
else
    ok "miniblock-img --version loads no Ceph library"
fi

IMG=$T/a.raw
qemu-img create -f raw "$IMG" 1M >/dev/null

# expect_exit NAME RC TEXT CMD...: CMD exits with RC and its output has the
# line TEXT (whole line, verbatim).
expect_exit() {
    local name=$1 want=$2 text=$3; shift 3
    local out rc=0
    out=$("$@" 2>&1) || rc=$?
    if [ "$rc" -ne "$want" ]; then
        not_ok "$name" "exit status $rc, expected $want: $*" "output: $out"
    elif ! grep -qxF -- "$text" <<<"$out"; then
        not_ok "$name" "output lacks the line: $text" "output: $out"
    else
        ok "$name"
    fi
}

HINT="Install Ceph's client libraries (Debian: librbd1 and librados2)"

# --- librbd.so.1 is not an ELF file ----------------------------------------
BAD=$T/not-elf
mkdir "$BAD"
# Longer than an ELF header, so the loader reads it and says what is wrong.
printf 'this is not a shared library, only text long enough to be read as an ELF header\n' \
    >"$BAD/librbd.so.1"
MSG="Could not load librbd.so.1 (needed by the rbd driver): $BAD/librbd.so.1: invalid ELF header"
expect_exit "miniblock-io: librbd.so.1 not ELF" 1 "miniblock-io: can't open device rbd:rbd/disk: $MSG" \
    env LD_LIBRARY_PATH="$BAD" "$MINIBLOCK_IO" -f raw -c length rbd:rbd/disk
expect_exit "miniblock-io: the hint" 1 "$HINT" \
    env LD_LIBRARY_PATH="$BAD" "$MINIBLOCK_IO" -f raw -c length rbd:rbd/disk
expect_exit "miniblock-img create: librbd.so.1 not ELF" 1 "miniblock-img: $MSG" \
    env LD_LIBRARY_PATH="$BAD" "$MINIBLOCK_IMG" create -f raw rbd:rbd/disk 1M
expect_exit "miniblock-img locks: librbd.so.1 not ELF" 1 "miniblock-img: $MSG" \
    env LD_LIBRARY_PATH="$BAD" "$MINIBLOCK_IMG" locks rbd:rbd/disk
expect_exit "--image-opts driver=rbd: librbd.so.1 not ELF" 1 \
    "miniblock-io: can't open device driver=rbd,pool=rbd,image=disk: $MSG" \
    env LD_LIBRARY_PATH="$BAD" "$MINIBLOCK_IO" --image-opts -c length "driver=rbd,pool=rbd,image=disk"
# The same environment: images that need no librbd are untouched.
expect_exit "a raw file opens beside a broken librbd" 0 "1 MiB" \
    env LD_LIBRARY_PATH="$BAD" "$MINIBLOCK_IO" -f raw -c length "$IMG"
expect_exit "miniblock-img info beside a broken librbd" 0 "virtual size: 1 MiB (1048576 bytes)" \
    env LD_LIBRARY_PATH="$BAD" "$MINIBLOCK_IMG" info -f raw "$IMG"
# The failure is remembered, never half-done: a second rbd open in the same
# process fails the same way, and the file image opened after it works.
out=$(printf 'open -f raw rbd:rbd/disk\nopen -f raw rbd:rbd/disk\nopen -f raw %s\nlength\n' "$IMG" |
      LD_LIBRARY_PATH="$BAD" "$MINIBLOCK_IO" 2>"$T/stdin.err")
errs=$(grep -cxF "miniblock-io: can't open device rbd:rbd/disk: $MSG" "$T/stdin.err")
if [ "$(echo $out)" = "[error] [error] [ok] 1 MiB [ok]" ] && [ "$errs" = 2 ]; then
    ok "one process: rbd fails twice, then a file opens"
else
    not_ok "one process: rbd fails twice, then a file opens" "stdout: $out" "stderr: $(cat "$T/stdin.err")"
fi

# --- librados.so.2 is too short to be ELF: named as librados's failure ------
SHORT=$T/short
mkdir "$SHORT"
printf 'ELF' >"$SHORT/librados.so.2"
expect_exit "librados.so.2 too short" 1 \
    "miniblock-io: can't open device rbd:rbd/disk: Could not load librados.so.2 (needed by the rbd driver): $SHORT/librados.so.2: file too short" \
    env LD_LIBRARY_PATH="$SHORT" "$MINIBLOCK_IO" -f raw -c length rbd:rbd/disk

# --- a real librbd.so.1 that lacks the functions ----------------------------
NOSYM=$T/no-symbols
mkdir "$NOSYM"
echo 'int rbd_not_what_we_need(void) { return 0; }' >"$T/nosym.c"
if cc -shared -fPIC -Wl,-soname,librbd.so.1 -o "$NOSYM/librbd.so.1" "$T/nosym.c" 2>"$T/cc.log"; then
    expect_exit "librbd.so.1 without rbd_* functions" 1 \
        "miniblock-io: can't open device rbd:rbd/disk: Could not load librbd.so.1 (needed by the rbd driver): $NOSYM/librbd.so.1: undefined symbol: rbd_aio_create_completion" \
        env LD_LIBRARY_PATH="$NOSYM" "$MINIBLOCK_IO" -f raw -c length rbd:rbd/disk
else
    not_ok "build a librbd.so.1 without the functions" "$(cat "$T/cc.log")"
fi

finish
