#!/bin/bash
# Speaking QEMU (issue 12): the rough edges a QEMU user stumbles on, and
# QEMU's -blockdev option names beside miniblock's.  qemu-img and qemu-io
# are the oracle wherever they do the same thing.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io strace runuser python3
IMG=$T/a.img
IO=$MINIBLOCK_IO
MI=$MINIBLOCK_IMG
qemu-img create -f raw "$IMG" 1M >/dev/null

# --- reads and writes past the end: EIO, and the file never grows ------------
expect_fail "write past the end: qemu-io's text" '^write failed: Input/output error$' "$IO" -f raw -c 'write 2M 4k' "$IMG"
expect_fail "qemu-io says the same" '^write failed: Input/output error$' qemu-io -f raw -c 'write 2M 4k' "$IMG"
expect_fail "a write across the end" '^write failed: Input/output error$' "$IO" -f raw -c 'write 1020k 8k' "$IMG"
expect_fail "read past the end" '^read failed: Input/output error$' "$IO" -f raw -c 'read 1M 512' "$IMG"
expect_fail "zero write past the end" '^write failed: Input/output error$' "$IO" -f raw -c 'write -z 1M 512' "$IMG"
size=$(stat -c %s "$IMG")
if [ "$size" = 1048576 ]; then ok "the file did not grow"; else not_ok "the file did not grow" "size $size"; fi
expect_output "the last sector is still writable" '^wrote 512/512 bytes at offset 1048064$' "$IO" -f raw -c 'write 1048064 512' "$IMG"

# --- miniblock-io's errors go to stderr, as qemu-io's ------------------------
out=$("$IO" -f raw -c 'read 0 1' "$T/none.img" 2>/dev/null)
err=$("$IO" -f raw -c 'read 0 1' "$T/none.img" 2>&1 >/dev/null)
if [ -z "$out" ] && [[ "$err" == "miniblock-io: can't open device $T/none.img: Could not open '$T/none.img': No such file or directory" ]]; then
    ok "can't open device goes to stderr"
else
    not_ok "can't open device goes to stderr" "stdout: $out" "stderr: $err"
fi
err=$("$IO" -f raw -c frob "$IMG" 2>&1 >/dev/null)
if [ "$err" = 'command "frob" not found' ]; then ok "command not found goes to stderr"; else not_ok "command not found goes to stderr" "stderr: $err"; fi
out=$("$IO" -f raw -c 'write 2M 512' "$IMG" 2>/dev/null)
if [ "$out" = 'write failed: Input/output error' ]; then ok "a failed request is on stdout, as qemu-io's"; else not_ok "a failed request is on stdout, as qemu-io's" "stdout: $out"; fi

# --- -U against an explicit lock mode ------------------------------------------
expect_fail "-U with lock=exclusive in --image-opts" \
    "^miniblock-io: can't open device driver=raw,file.filename=$IMG,lock=exclusive: --force-share/-U conflicts with image options$" \
    "$IO" -U --image-opts -c 'read 0 512' "driver=raw,file.filename=$IMG,lock=exclusive"
expect_fail "-U with lock=exclusive in open -o" \
    "^miniblock-io: can't open device driver=raw,file.filename=$IMG,lock=exclusive: --force-share/-U conflicts with image options$" \
    "$IO" -c "open -U -o driver=raw,file.filename=$IMG,lock=exclusive"
expect_fail "qemu-img's text for its own conflict" '^qemu-img: --force-share/-U conflicts with image options$' \
    qemu-img info -U --image-opts "driver=raw,file.filename=$IMG,force-share=off"
expect_fail "-U with force-share=off, as qemu-img" '--force-share/-U conflicts with image options$' \
    "$MI" info -U --image-opts "driver=raw,file.filename=$IMG,force-share=off"
expect_output "-U with lock=shared agrees" '^read 512/512 bytes at offset 0$' \
    "$IO" -U --image-opts -c 'read 0 512' "driver=raw,file.filename=$IMG,lock=shared"

# --- the probed-raw warning: only where writes are possible ------------------
out=$("$MI" info "$IMG" 2>&1)
if ! grep -q WARNING <<<"$out"; then ok "info on a probed raw image: no warning (as qemu-img)"; else not_ok "info: no warning" "$out"; fi
if "$MI" info --output=json "$IMG" 2>&1 | python3 -m json.tool >/dev/null; then ok "info --output=json 2>&1 is JSON"; else not_ok "info --output=json 2>&1 is JSON"; fi
out=$("$IO" -r -c 'read 0 512' "$IMG" 2>&1)
if ! grep -q WARNING <<<"$out"; then ok "a read-only open is silent"; else not_ok "a read-only open is silent" "$out"; fi
expect_output "a writable open warns" "^WARNING: Image format was not specified for '$IMG' and probing guessed raw.$" \
    "$IO" -c 'read 0 512' "$IMG"

# --- long values are quoted shortened -------------------------------------------
long=$(head -c 1000000 /dev/zero | tr '\0' a)
n=$(printf 'open -o driver=raw,file.filename=%s,lock=%s\n' "$IMG" "$long" | "$IO" 2>&1 | wc -c)
if [ "$n" -lt 5000 ]; then ok "a 1 MB option string gives a short error ($n bytes)"; else not_ok "a 1 MB option string gives a short error" "$n bytes"; fi
n=$(printf 'open -f raw %s\n' "$long" | "$IO" 2>&1 | wc -c)
if [ "$n" -lt 10000 ]; then ok "a 1 MB file name gives a short error ($n bytes)"; else not_ok "a 1 MB file name gives a short error" "$n bytes"; fi
expect_fail "the value is cut with ..." "Invalid value 'a{60}\.\.\.' for parameter 'lock'$" \
    "$IO" --image-opts -c 'read 0 1' "driver=raw,file.filename=$IMG,lock=${long:0:5000}"

# --- snapshot mode on a size that is not a multiple of 512 -----------------------
qemu-img create -f raw "$T/odd.img" 1000 >/dev/null
qemu-io -f raw -c 'write -P 0x11 0 1000' "$T/odd.img" >/dev/null
expect_output "-s on a 1000-byte image" '^read 1000/1000 bytes at offset 0$' \
    "$IO" -s -f raw -c 'write -P 0x22 0 512' -c 'read -P 0x22 0 512' -c 'read -P 0x11 512 488' -c 'read 0 1000' "$T/odd.img"
expect_output "the image is untouched" '^read 1000/1000 bytes at offset 0$' qemu-io -f raw -c 'read -P 0x11 0 1000' "$T/odd.img"

# --- --version and per-command --help ------------------------------------------
for tool in "$MI" "$IO" "$MINIBLOCK_BUILD/tools/miniblock-scenario"; do
    name=$(basename "$tool")
    expect_output "$name --version" "^$name version [0-9]+\.[0-9]+\.[0-9]+$" "$tool" --version
done
for cmd in check map convert commit info create; do
    expect_output "$cmd --help is its own" "^Usage: miniblock-img $cmd " "$MI" "$cmd" --help
    expect_output "help $cmd" "^Usage: miniblock-img $cmd " "$MI" help "$cmd"
done
expect_output "check -f qcow2 --help: still check's own" '^Usage: miniblock-img check ' "$MI" check -f qcow2 --help
a=$("$MI" check --help); b=$("$MI" map --help)
if [ "$a" != "$b" ]; then ok "check and map have different help"; else not_ok "check and map have different help"; fi

# --- QEMU's option names -------------------------------------------------------------
expect_fail "force-share=on needs read-only: QEMU's text" \
    ": force-share=on can only be used with read-only images$" \
    "$IO" --image-opts -c 'read 0 512' "driver=raw,file.filename=$IMG,force-share=on"
expect_fail "qemu-io says the same" 'force-share=on can only be used with read-only images$' \
    qemu-io --image-opts -c 'read 0 512' "driver=raw,file.filename=$IMG,force-share=on"
expect_fail "lock=exclusive with force-share=on" \
    ": Parameter 'lock=exclusive' conflicts with 'force-share=on'$" \
    "$IO" --image-opts -c 'read 0 512' "driver=raw,file.filename=$IMG,force-share=on,read-only=on,lock=exclusive"
expect_output "the hint" '^force-share=on is lock=shared; give one of them$' \
    bash -c "'$IO' --image-opts -c 'read 0 512' 'driver=raw,file.filename=$IMG,force-share=on,read-only=on,lock=exclusive' 2>&1; true"
expect_fail "locking=off with lock=exclusive" \
    ": Parameter 'file.lock=exclusive' conflicts with 'file.locking=off'$" \
    "$IO" --image-opts -c 'read 0 512' "driver=raw,file.filename=$IMG,file.locking=off,file.lock=exclusive"
expect_fail "cache.direct=on with cache.no-flush=on" \
    ": 'cache.direct=on' with 'cache.no-flush=on' has no miniblock cache mode$" \
    "$IO" --image-opts -c 'read 0 512' "driver=raw,file.filename=$IMG,cache.direct=on,cache.no-flush=on"
expect_fail "detect-zeroes=unmap with discard=ignore: QEMU's text" \
    ": setting detect-zeroes to unmap is not allowed without setting discard operation to unmap$" \
    "$IO" --image-opts -c 'read 0 512' "driver=raw,file.filename=$IMG,detect-zeroes=unmap,discard=ignore"
expect_fail "qemu-io's text for it" 'setting detect-zeroes to unmap is not allowed without setting discard operation to unmap' \
    qemu-io --image-opts -c 'read 0 512' "driver=raw,file.filename=$IMG,detect-zeroes=unmap,discard=ignore"

# force-share=on,read-only=on: a reader next to a writer, as QEMU's -U.
hold w "$IO" -f raw "$IMG"
echo 'length' >&"$HOLD_FD"; wait_for "$T/hold-w.out" '\[ok\]'
expect_output "force-share=on reads next to a writer" '^read 512/512 bytes at offset 0$' \
    "$IO" --image-opts -c 'read 0 512' "driver=raw,file.filename=$IMG,force-share=on,read-only=on"
expect_fail "without it, refused" 'Failed to get shared "write" lock' \
    "$IO" --image-opts -c 'read 0 512' "driver=raw,file.filename=$IMG,read-only=on"
expect_output "info next to a running writer works on raw, as qemu-img's" '^file format: raw$' "$MI" info -f raw "$IMG"
expect_output "qemu-img info there too" '^file format: raw$' qemu-img info -f raw "$IMG"
echo quit >&"$HOLD_FD"; wait "$HOLD_PID" 2>/dev/null

# locking=off on a file node: that file is unlocked, its backing chain is not
# (QEMU's semantics, checked against qemu-io holding the same options).
qemu-img create -f raw "$T/base.raw" 1M >/dev/null
qemu-img create -f qcow2 -b "$T/base.raw" -F raw "$T/top.qcow2" >/dev/null
for holder in miniblock qemu; do
    if [ $holder = miniblock ]; then
        hold lo$holder "$IO" --image-opts "driver=qcow2,file.filename=$T/top.qcow2,file.locking=off"
        echo length >&"$HOLD_FD"; wait_for "$T/hold-lo$holder.out" '\[ok\]'
    else
        hold lo$holder qemu-io --image-opts "driver=qcow2,file.filename=$T/top.qcow2,file.locking=off"
        echo 'length' >&"$HOLD_FD"; wait_for "$T/hold-lo$holder.out" 'MiB'
    fi
    expect_output "locking=off ($holder): the top file has no lock" '^  no locks held$' "$MI" locks "$T/top.qcow2"
    expect_output "locking=off ($holder): the backing file is still locked" 'uses: consistent read' "$MI" locks "$T/base.raw"
    if [ $holder = miniblock ]; then
        expect_fail "locking=off ($holder): a writer of the base is refused" 'Failed to get "write" lock' \
            qemu-io -f raw -c 'write 0 512' "$T/base.raw"
    else
        # docs/locking.md: QEMU 7.2 leaves a raw base open to writers; we do not.
        expect_output "locking=off ($holder): QEMU leaves a raw base open to writers" '^wrote 512/512' \
            qemu-io -f raw -c 'write 0 512' "$T/base.raw"
    fi
    echo quit >&"$HOLD_FD"; wait "$HOLD_PID" 2>/dev/null
done
# A -drive string's top-level locking=off goes to the file node, as QEMU's
# -drive passes it down: next to a writer, only that opens.
hold lw qemu-io -f qcow2 "$T/top.qcow2"
echo 'length' >&"$HOLD_FD"; wait_for "$T/hold-lw.out" 'MiB'
expect_ok "-drive ...,locking=off reads next to a writer" \
    "$MINIBLOCK_DUMP" "file=$T/top.qcow2,format=qcow2,read-only=on,locking=off" "$T/dump"
expect_fail "without it, refused" 'Failed to get shared "write" lock' \
    "$MINIBLOCK_DUMP" "file=$T/top.qcow2,format=qcow2,read-only=on" "$T/dump"
echo quit >&"$HOLD_FD"; wait "$HOLD_PID" 2>/dev/null

# cache.direct=on opens O_DIRECT (seen in the holder's fdinfo); no-flush
# drops the flushes (seen by strace: no fdatasync).
hold cd "$IO" --image-opts "driver=raw,file.filename=$IMG,cache.direct=on"
echo length >&"$HOLD_FD"; wait_for "$T/hold-cd.out" '\[ok\]'
direct=no
for fd in /proc/$HOLD_PID/fd/*; do
    [ "$(readlink "$fd")" = "$IMG" ] || continue
    flags=$(awk '/^flags:/ {print $2}' /proc/$HOLD_PID/fdinfo/${fd##*/})
    (( 8#$flags & 8#40000 )) && direct=yes
done
if [ $direct = yes ]; then ok "cache.direct=on: the file is open O_DIRECT"; else not_ok "cache.direct=on: the file is open O_DIRECT"; fi
echo quit >&"$HOLD_FD"; wait "$HOLD_PID" 2>/dev/null
n=$(strace -f -e trace=fdatasync,fsync -o "$T/st1" "$IO" --image-opts -c 'write 0 4k' -c flush "driver=raw,file.filename=$IMG,cache.no-flush=on" >/dev/null 2>&1; grep -cE 'f(data)?sync\(' "$T/st1")
m=$(strace -f -e trace=fdatasync,fsync -o "$T/st2" "$IO" --image-opts -c 'write 0 4k' -c flush "driver=raw,file.filename=$IMG,cache.no-flush=off" >/dev/null 2>&1; grep -cE 'f(data)?sync\(' "$T/st2")
if [ "$n" = 0 ] && [ "$m" -gt 0 ]; then ok "cache.no-flush=on: no fsync (off: $m)"; else not_ok "cache.no-flush=on: no fsync" "on: $n, off: $m"; fi

# discard=ignore keeps the data; unmap (miniblock's default) punches a hole.
"$IO" -f raw -c 'write -P 0x5a 0 64k' "$IMG" >/dev/null
expect_output "discard=ignore: the data stays" '^read 65536/65536 bytes at offset 0$' \
    "$IO" --image-opts -c 'discard 0 64k' -c 'read -P 0x5a 0 64k' "driver=raw,file.filename=$IMG,discard=ignore"
expect_output "discard=unmap: the range reads as zeroes" '^read 65536/65536 bytes at offset 0$' \
    "$IO" --image-opts -c 'discard 0 64k' -c 'read -P 0 0 64k' "driver=raw,file.filename=$IMG,discard=unmap"

# detect-zeroes=on: a write of zeroes becomes a zero write (fallocate, not pwrite).
strace -f -e trace=pwrite64,fallocate -o "$T/st3" "$IO" --image-opts -c 'write -P 0 0 64k' \
    "driver=raw,file.filename=$IMG,detect-zeroes=on" >/dev/null 2>&1
strace -f -e trace=pwrite64,fallocate -o "$T/st4" "$IO" --image-opts -c 'write -P 0 0 64k' \
    "driver=raw,file.filename=$IMG" >/dev/null 2>&1
if grep -q 'fallocate(' "$T/st3" && ! grep -q 'pwrite64(.*65536' "$T/st3" && grep -q 'pwrite64(.*65536' "$T/st4"; then
    ok "detect-zeroes=on: zeroes become a zero write"
else
    not_ok "detect-zeroes=on: zeroes become a zero write" "$(cat "$T/st3")"
fi

# auto-read-only: a file we may not write opens read-only instead of failing.
chmod 755 "$T"; chmod 644 "$IMG"
# nobody may not reach the build tree (a clone under /root): a copy of the
# tool and its library in $T, found through the tool's rpath ($ORIGIN/..).
mkdir -p "$T/bin"; cp "$IO" "$T/bin/"
find "$MINIBLOCK_BUILD" -maxdepth 1 -name 'libminiblock.so*' ! -type d -exec cp -P {} "$T/" \;
chmod -R a+rX "$T/bin"; chmod a+r "$T"/libminiblock.so*
NIO=$T/bin/$(basename "$IO")
expect_fail "without auto-read-only: refused" "Could not open '$IMG': Permission denied" \
    runuser -u nobody -- "$NIO" --image-opts -c 'read 0 512' "driver=file,filename=$IMG"
expect_output "auto-read-only=on: opens read-only" '^read 512/512 bytes at offset 0$' \
    runuser -u nobody -- "$NIO" --image-opts -c 'read 0 512' "driver=file,filename=$IMG,auto-read-only=on"
expect_fail "auto-read-only=on: and stays read-only" '^write failed: Operation not permitted$' \
    runuser -u nobody -- "$NIO" --image-opts -c 'write 0 512' "driver=file,filename=$IMG,auto-read-only=on"

# A -blockdev tree as libvirt writes it (storage node nested in the format
# node) opens unchanged, in miniblock and in QEMU.
qemu-img create -f qcow2 "$T/vm.qcow2" 1M >/dev/null
LV='{"driver": "qcow2", "node-name": "libvirt-1-format", "read-only": false, "discard": "unmap",
 "cache": {"direct": false, "no-flush": false},
 "file": {"driver": "file", "filename": "'$T/vm.qcow2'", "node-name": "libvirt-1-storage",
          "auto-read-only": true, "discard": "unmap", "cache": {"direct": false, "no-flush": false}},
 "backing": null}'
LV=$(tr -d '\n' <<<"$LV")
expect_output "libvirt's -blockdev JSON opens in miniblock" '^read 512/512 bytes at offset 512$' \
    "$IO" -c 'write -P 0x42 512 512' -c 'read -P 0x42 512 512' "json:$LV"
expect_output "and in qemu-io, which reads what miniblock wrote" '^read 512/512 bytes at offset 512$' \
    qemu-io -c 'read -P 0x42 512 512' "json:$LV"

# --- miniblock-scenario: --wide, and a step count without setup lines ---------------
cat >"$T/w.scn" <<'SCN'
title wide table
image disk.img raw 1M
actor t run
t: miniblock-io -f raw -c "write -P 0x11 0 512" -c "read -P 0x11 0 512" -c "read -P 0x11 0 512" disk.img => ok
t: miniblock-io -f raw -c length disk.img => ok output /1 MiB/
SCN
SC=$MINIBLOCK_BUILD/tools/miniblock-scenario
expect_output "scenario: 2 steps (the image line is not one)" '^2 steps, 0 mismatched$' "$SC" "$T/w.scn"
expect_output "scenario: the default table cuts the command" 'miniblock-io -f raw -c "write -P 0x11 0 5\.\.\.' "$SC" "$T/w.scn"
expect_output "scenario --wide: the whole command" '-c "read -P 0x11 0 512" disk.img +ok +ok$' "$SC" --wide "$T/w.scn"
finish
