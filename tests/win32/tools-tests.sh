#!/bin/bash
# The Windows tools under Wine against real peers: miniblock-io.exe and
# miniblock-img.exe (libminiblock.dll, the whole block graph) with images
# made and checked by the Linux qemu-img/qemu-io, and several Windows
# processes on one file.  Run by run-wine-tests.sh, which exports WINE,
# WINEPREFIX and WINEPATH; prints TAP, then "N passed, M failed".
#
# usage: tests/win32/tools-tests.sh BUILD_DIR
set -u
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$1
: "${WINE:?tools-tests.sh is run by run-wine-tests.sh, which sets WINE and the Wine prefix}"
IO_EXE=$BUILD/tools/miniblock-io.exe
IMG_EXE=$BUILD/tools/miniblock-img.exe
CHILD_EXE=$BUILD/tests/win32/win32-lock-child.exe
# The Linux miniblock-img (meson sets MINIBLOCK_IMG; by hand: build/).
LINUX_IMG=${MINIBLOCK_IMG:-$SRC/build/tools/miniblock-img}
[ -x "$LINUX_IMG" ] || { echo "tools-tests: the Linux miniblock-img ($LINUX_IMG) is not built"; echo "0 passed, 1 failed"; exit 1; }
for t in qemu-img qemu-io; do
    command -v "$t" >/dev/null || { echo "tools-tests: $t not found (scripts/setup.sh installs qemu-utils)"; echo "0 passed, 1 failed"; exit 1; }
done

T=$(mktemp -d /tmp/mb-wine.XXXXXX)
declare -A HPID=()  # the holders' pids (below), killed on any exit
cleanup() {
    for p in "${HPID[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    [ -f "$T/ro.img" ] && chattr -i "$T/ro.img" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

count=0
failed=0
ok() { count=$((count + 1)); echo "ok $count - $1"; }
not_ok() {
    count=$((count + 1)); failed=$((failed + 1))
    echo "not ok $count - $1"
    shift
    for l in "$@"; do printf '%s\n' "$l" | sed 's/^/#   /'; done
}
check() {  # check DESCRIPTION COMMAND...: ok when the command succeeds
    local d=$1; shift
    if "$@"; then ok "$d"; else not_ok "$d"; fi
}

# Runs a Windows program; output (stdout and stderr) in OUT without the
# carriage returns, exit status in RC.
wine_run() {
    OUT=$("$WINE" "$@" 2>&1)
    RC=$?
    OUT=${OUT//$'\r'/}
}
io() { wine_run "$IO_EXE" "$@"; }
img() { wine_run "$IMG_EXE" "$@"; }

# Reads with qemu-io (Linux) and says whether every pattern matched.
qemu_reads() {  # qemu_reads FORMAT IMAGE 'read -P ...'...
    local fmt=$1 image=$2 out c; shift 2
    local args=()
    for c in "$@"; do args+=(-c "$c"); done
    out=$(qemu-io -r -f "$fmt" "${args[@]}" "$image" 2>&1) || { echo "# qemu-io: $out"; return 1; }
    if grep -q 'Pattern verification failed' <<<"$out"; then echo "# qemu-io: $out"; return 1; fi
}

# Holders: Windows programs reading commands from a pipe, so that they keep
# an image open while others try.  Holder A uses fds 7 (to it) and 8 (from
# it), holder B fds 5 and 6.
start_holder() {  # start_holder A|B PROGRAM ARGS...
    local h=$1; shift
    local win=7 wout=8
    [ "$h" = B ] && win=5 wout=6
    mkfifo "$T/$h.in" "$T/$h.out"
    "$WINE" "$@" <"$T/$h.in" >"$T/$h.out" 2>&1 &
    HPID[$h]=$!
    eval "exec $win>\"\$T/$h.in\" $wout<\"\$T/$h.out\""
    rm -f "$T/$h.in" "$T/$h.out"
}
# Sends a line; waits for a reply line starting with WANT (true) or an
# error reply (false).  Every line read is kept in REPLY_LINES.
holder_say() {  # holder_say A|B COMMAND WANT
    local h=$1 line win=7 wout=8
    [ "$h" = B ] && win=5 wout=6
    REPLY_LINES=""
    echo "$2" >&$win
    while IFS= read -r -t 60 line <&$wout; do
        line=${line%$'\r'}
        case $line in
        "$3"*) return 0 ;;
        "[error]"|fail*) return 1 ;;
        *) REPLY_LINES="$REPLY_LINES$line"$'\n' ;;
        esac
    done
    return 1
}
stop_holder() {  # stop_holder A|B
    local h=$1 win=7 wout=8
    [ "$h" = B ] && win=5 wout=6
    echo quit >&$win
    eval "exec $win>&- $wout<&-"
    wait "${HPID[$h]}" 2>/dev/null
    unset "HPID[$h]"
}

# --- 1. the lock matrix with two miniblock-io.exe processes ----------------------
# Each row: a holder in one mode; one opener process tries the eight modes in
# turn (open, close), each open answered [ok] or [error].
DISK=$T/disk.img
qemu-img create -q -f raw "$DISK" 1M
OPENS=""
for m in off shared auto exclusive; do OPENS="$OPENS $m:ro $m:rw"; done
flags() { echo "-f raw -l ${1%:*} $([ "${1#*:}" = ro ] && echo -r)"; }
: >"$T/matrix.got"
matrix_ok=1
for holder in $OPENS; do
    # shellcheck disable=SC2046
    start_holder A "$IO_EXE" $(flags "$holder") "$DISK"
    if ! holder_say A length "[ok]"; then
        not_ok "lock matrix: the holder $holder opens"
        stop_holder A; matrix_ok=0; continue
    fi
    script=""
    for opener in $OPENS; do script="${script}open $(flags "$opener") $DISK"$'\n'"close"$'\n'; done
    out=$(printf '%s' "$script" | "$WINE" "$IO_EXE" 2>&1 | tr -d '\r')
    # The replies of the opens: the 1st, 3rd, ... [ok]/[error] line.
    set -- $(grep -E '^\[(ok|error)\]$' <<<"$out" | awk 'NR % 2 == 1')
    for opener in $OPENS; do
        r=${1:-missing}; shift 2>/dev/null
        echo "$holder | $opener | $([ "$r" = "[ok]" ] && echo yes || echo no)" >>"$T/matrix.got"
    done
    stop_holder A
done
grep -v qemu "$SRC/tests/interop/lock-matrix.expected" >"$T/matrix.want"
if [ $matrix_ok = 1 ] && diff "$T/matrix.want" "$T/matrix.got" >"$T/matrix.diff"; then
    ok "lock matrix of two miniblock-io.exe processes equals lock-matrix.expected ($(wc -l <"$T/matrix.got") cells)"
else
    not_ok "lock matrix of two miniblock-io.exe processes differs from lock-matrix.expected" "$(cat "$T/matrix.diff")"
fi

# The refusal's text, as a user sees it on Windows.
start_holder A "$IO_EXE" -f raw "$DISK"
holder_say A length "[ok]"
io -f raw -r -l exclusive -c length "$DISK"
want="miniblock-io: can't open device $DISK: Failed to get shared \"consistent read\" lock
Is another process using the image [$DISK]?
Windows cannot say which process holds it"
if [ $RC = 1 ] && [ "$OUT" = "$want" ]; then ok "refusal message names the lock and the image"
else not_ok "refusal message" "got: $OUT" "want: $want"; fi
stop_holder A

# --- 2. qcow2 with a backing file, made by qemu-img, read by miniblock-img.exe ----
(
    cd "$T" || exit 1
    qemu-img create -q -f qcow2 base.qcow2 4M
    qemu-io -f qcow2 -c 'write -P 0x11 0 1M' -c 'write -P 0x22 2M 64k' -c 'write -P 0x5a 4032k 64k' base.qcow2
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    qemu-io -f qcow2 -c 'write -P 0x33 512k 1M' -c 'write -z 2M 4k' -c 'write -c -P 0x44 3M 64k' top.qcow2
) >/dev/null
qemu-img convert -O raw "$T/top.qcow2" "$T/want.raw"
img convert -O raw "$T/top.qcow2" "$T/got.raw"
if [ $RC = 0 ] && cmp -s "$T/want.raw" "$T/got.raw"; then
    ok "a qcow2 over a qcow2 backing file (qemu-img) converts bit-exact with miniblock-img.exe"
else
    not_ok "qcow2 with backing file: convert" "exit $RC: $OUT" "$(cmp "$T/want.raw" "$T/got.raw" 2>&1)"
fi
# The same through a Windows-style name (drive letter, backslashes): the
# relative backing name resolves next to it.
winpath=$("$WINE" winepath -w "$T/top.qcow2" 2>/dev/null | tr -d '\r')
img convert -O raw "$winpath" "$T/got2.raw"
if [ $RC = 0 ] && cmp -s "$T/want.raw" "$T/got2.raw"; then
    ok "... and through the Windows name $winpath"
else
    not_ok "qcow2 with backing file through a Windows name" "exit $RC: $OUT"
fi

# The same report as on Linux, byte for byte (the JSON writer of the Windows
# build, win32/json-glib, against json-glib), and the same human one.
# Except the entries of miniblock's "lock-holders": the Linux tool names
# itself there (its own read lock), and Windows cannot name a holder.
no_holders() {
    /usr/bin/python3 -c '
import sys
out, skip = [], None
for line in sys.stdin.read().split("\n"):
    if skip is not None:
        if line.startswith(skip + "]"):
            out.append(line); skip = None
        continue
    out.append(line)
    if line.rstrip().endswith("\"lock-holders\" : ["):
        skip = line[:len(line) - len(line.lstrip())]
print("\n".join(out))'
}
for out in json human; do
    img info --output=$out "$T/top.qcow2"
    win=$(echo "$OUT" | no_holders)
    lin=$("$LINUX_IMG" info --output=$out "$T/top.qcow2" 2>&1 | no_holders)
    if [ $RC = 0 ] && [ "$win" = "$lin" ]; then
        ok "miniblock-img.exe info --output=$out prints what the Linux miniblock-img prints"
    else
        not_ok "info --output=$out as on Linux" "$(diff <(echo "$lin") <(echo "$win"))"
    fi
done

# --- 3. images written by miniblock-io.exe pass qemu-img check ---------------------
img create -f qcow2 "$T/new.qcow2" 8M
io -f qcow2 -c 'write -P 0xab 0 64k' -c 'write -P 0xcd 3M 1M' -c 'write -P 0xef 8380416 4096' \
    -c 'write -P 0x12 100000 333' "$T/new.qcow2"
rc=$RC; out=$OUT
if [ $rc = 0 ] && chk=$(qemu-img check "$T/new.qcow2" 2>&1) &&
   qemu_reads qcow2 "$T/new.qcow2" 'read -P 0xab 0 64k' 'read -P 0xcd 3M 1M' 'read -P 0xef 8380416 4096' \
       'read -P 0x12 100000 333' 'read -P 0 4M 1M'; then
    ok "a qcow2 created and written by the Windows tools passes qemu-img check, data as written"
else
    not_ok "qcow2 written on Windows" "miniblock-io: exit $rc: $out" "qemu-img check: ${chk:-}"
fi
io -f qcow2 -c 'write -P 0x66 1536k 8k' "$T/top.qcow2"
rc=$RC
if [ $rc = 0 ] && qemu-img check -q "$T/top.qcow2" &&
   qemu_reads qcow2 "$T/top.qcow2" 'read -P 0x66 1536k 8k' 'read -P 0x11 0 512k'; then
    ok "a write into the qemu-img overlay passes qemu-img check and reads back over the backing data"
else
    not_ok "write into the qemu-img overlay" "exit $rc"
fi

# cache=none (FILE_FLAG_NO_BUFFERING): unaligned writes go through whole
# sectors, and only the bytes asked for change.
qemu-img create -q -f raw "$T/nocache.img" 1M
qemu-io -f raw -c 'write -P 0x11 0 1M' "$T/nocache.img" >/dev/null
io -f raw -t none -c 'write -P 0x5c 1000 3000' -c 'write -P 0x6d 8192 4096' -c 'read -P 0x5c 1000 3000' "$T/nocache.img"
rc=$RC
if [ $rc = 0 ] && qemu_reads raw "$T/nocache.img" 'read -P 0x11 0 1000' 'read -P 0x5c 1000 3000' \
       'read -P 0x11 4000 4192' 'read -P 0x6d 8192 4096' 'read -P 0x11 12288 1036288'; then
    ok "cache=none: unaligned and aligned writes change exactly their bytes"
else
    not_ok "cache=none writes" "exit $rc: $OUT"
fi

# --- 4. commit: the temporary exclusive base lock on Windows -----------------------
qemu-img create -q -f raw "$T/cbase.raw" 4M
qemu-io -f raw -c 'write -P 0x11 0 4M' "$T/cbase.raw" >/dev/null
(cd "$T" && qemu-img create -q -f qcow2 -b cbase.raw -F raw ctop.qcow2)
io -f qcow2 -c 'write -P 0x77 1M 64k' "$T/ctop.qcow2"
before=$(md5sum <"$T/cbase.raw")
# A reader of the base in another Wine process.
start_holder B "$IO_EXE" -f raw -r "$T/cbase.raw"
holder_say B length "[ok]"
# The one-shot tool, refused.
img commit "$T/ctop.qcow2"
lockmsg="Cannot commit '$T/ctop.qcow2' into '$T/cbase.raw': the base cannot be locked for writing: Failed to get \"write\" lock
Is another process using the image [$T/cbase.raw]?
Windows cannot say which process holds it"
if [ $RC = 1 ] && [ "$OUT" = "miniblock-img: $lockmsg" ]; then
    ok "miniblock-img.exe commit refused while another Wine process reads the base"
else
    not_ok "miniblock-img.exe commit refused while the base is read" "exit $RC" "got: $OUT" "want: miniblock-img: $lockmsg"
fi
# A process that stays: the overlay open (its base locked: use read; forbid
# write, resize), commit refused, then its base locks looked at from outside.
start_holder A "$IO_EXE" -f qcow2 "$T/ctop.qcow2"
holder_say A length "[ok]"
if ! holder_say A commit "[ok]" && [ "$REPLY_LINES" = "commit: $lockmsg"$'\n' ]; then
    ok "commit in a running miniblock-io.exe refused, naming the base"
else
    not_ok "commit in a running miniblock-io.exe refused" "got: $REPLY_LINES" "want: commit: $lockmsg"
fi
check "... the base's bytes are untouched" [ "$(md5sum <"$T/cbase.raw")" = "$before" ]
check "... the reader still reads" holder_say B "read -P 0x11 0 64k" "[ok]"
stop_holder B
# The reader gone, what is left on the base is the committer's own lock,
# as before the commit: writers still kept out, readers let in (the
# temporary "forbid consistent read" is gone).
io -f raw -c length "$T/cbase.raw"
check "... the base's locks are as before: a writer is still refused" [ $RC = 1 ]
io -f raw -r -c 'read -P 0x11 0 4k' "$T/cbase.raw"
check "... and a reader is let in" [ $RC = 0 ]
if holder_say A commit "[ok]" && [ "$REPLY_LINES" = "Image committed."$'\n' ]; then
    ok "with the reader gone, the same process commits"
else
    not_ok "commit once the base is free" "got: $REPLY_LINES"
fi
# Back on its read-only handle, the base has the backing file's locks again.
io -f raw -c length "$T/cbase.raw"
r1=$RC
io -f raw -r -c length "$T/cbase.raw"
check "... after it, the base is locked as a backing file again (writer refused, reader let in)" \
    test "$r1" = 1 -a "$RC" = 0
stop_holder A
if qemu_reads raw "$T/cbase.raw" 'read -P 0x77 1M 64k' 'read -P 0x11 0 1M' &&
   qemu-img compare -q "$T/ctop.qcow2" "$T/cbase.raw"; then
    ok "... the base now holds the overlay's data (qemu-io, qemu-img compare)"
else
    not_ok "the base holds the overlay's data"
fi

# --- 5. bad input: each a clear error ---------------------------------------------------
io -c length "$T/missing.img"
want="miniblock-io: can't open device $T/missing.img: Could not open '$T/missing.img': No such file or directory"
if [ $RC = 1 ] && [ "$OUT" = "$want" ]; then ok "a missing file"; else not_ok "a missing file" "got: $OUT" "want: $want"; fi

mkdir "$T/adir"
io -f raw -c length "$T/adir"
want="miniblock-io: can't open device $T/adir: '$T/adir' is a directory"
if [ $RC = 1 ] && [ "$OUT" = "$want" ]; then ok "a directory"; else not_ok "a directory" "got: $OUT" "want: $want"; fi

qemu-img create -q -f raw "$T/ro.img" 64k
# Wine shows a file without write permission as FILE_ATTRIBUTE_READONLY; as
# root the kernel would still let it be opened for writing, so it is made
# immutable too (the test runs as root in CI).
chmod 444 "$T/ro.img"
[ "$(id -u)" != 0 ] || chattr +i "$T/ro.img"
io -f raw -c 'write 0 512' "$T/ro.img"
want="miniblock-io: can't open device $T/ro.img: Could not open '$T/ro.img': Permission denied"
if [ $RC = 1 ] && [ "$OUT" = "$want" ]; then ok "a read-only file opened read-write"
else not_ok "a read-only file opened read-write" "got: $OUT" "want: $want"; fi
io -f raw -r -c 'read 0 512' "$T/ro.img"
check "... which opens read-only" [ $RC = 0 ]
# Commit into a base that cannot be opened for writing: the reopen fails,
# cleanly, and the base is untouched.
(cd "$T" && qemu-img create -q -f qcow2 -b ro.img -F raw rotop.qcow2 &&
    qemu-io -f qcow2 -c 'write -P 0x42 0 4k' rotop.qcow2 >/dev/null)
before=$(md5sum <"$T/ro.img")
img commit "$T/rotop.qcow2"
want="miniblock-img: Cannot commit into '$T/ro.img': Could not reopen '$T/ro.img' read-write: Permission denied"
if [ $RC = 1 ] && [ "$OUT" = "$want" ] && [ "$(md5sum <"$T/ro.img")" = "$before" ]; then
    ok "commit into a read-only base: the reopen is refused, the base untouched"
else
    not_ok "commit into a read-only base" "got: $OUT" "want: $want"
fi

qemu-img create -q -f raw "$T/whole.img" 64k
start_holder A "$CHILD_EXE" "$T/whole.img"
holder_say A "open rw" "ok" && holder_say A wholefile "ok"
io -f raw -r -c 'read 0 512' "$T/whole.img"
want="miniblock-io: can't open device $T/whole.img: Failed to lock '$T/whole.img': another process locks the whole file
Is another process using the image [$T/whole.img]?
It does not follow QEMU's lock protocol; Windows cannot say which process it is"
if [ $RC = 1 ] && [ "$OUT" = "$want" ]; then
    ok "a file locked whole by another process (another protocol)"
else
    not_ok "a file locked whole by another process" "got: $OUT" "want: $want"
fi
stop_holder A

io -c length "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"file\",\"filename\":\"$DISK\"}}"
want="miniblock-io: can't open device json:{\"driver\":\"raw\",\"file\":{\"driver\":\"file\",\"filename\":\"$DISK\"}}: json: filenames are not supported in this build (it has no json-glib, as on Windows)
Use key=value options instead (--image-opts)"
if [ $RC = 1 ] && [ "$OUT" = "$want" ]; then ok "json: filenames are refused, saying why"
else not_ok "json: filenames" "got: $OUT" "want: $want"; fi

# miniblock-img locks: which bytes another process holds, its owner not
# visible (Windows cannot name it); nothing once it is gone.
start_holder A "$IO_EXE" -f raw "$DISK"
holder_say A length "[ok]"
img locks "$DISK"
want="$DISK:
  not visible from here: uses: consistent read, write / forbids: write, write unchanged, resize"
if [ $RC = 0 ] && [ "$OUT" = "$want" ]; then ok "miniblock-img.exe locks shows the bytes a writer holds"
else not_ok "miniblock-img.exe locks" "got: $OUT" "want: $want"; fi
img locks --output=json "$DISK"
json_ok=$(/usr/bin/python3 -c 'import json, sys
d = json.loads(sys.argv[1])
h = d[0]["holders"]
print(d[0]["filename"] == sys.argv[2] and len(h) == 1 and h[0]["pid"] is None and
      h[0]["uses"] == ["consistent read", "write"] and
      h[0]["forbids"] == ["write", "write unchanged", "resize"])' "$OUT" "$DISK" 2>&1)
check "... and as JSON" [ "$json_ok" = True ]
stop_holder A
img locks "$DISK"
check "... and nothing once the writer is gone" [ "$OUT" = "$DISK:
  no locks held" ]
# What Windows cannot do is said, not faked: miniblock-io's locks would see
# its own bytes and could not tell them from others'.
io -f raw -c locks "$DISK"
want="locks: not available on Windows: Windows cannot say which process holds a byte-range lock"
if [ $RC = 1 ] && [ "$OUT" = "$want" ]; then ok "miniblock-io.exe's locks command says it is not available"
else not_ok "miniblock-io.exe locks" "got: $OUT" "want: $want"; fi

echo "1..$count"
echo "$((count - failed)) passed, $failed failed"
[ "$failed" = 0 ]
