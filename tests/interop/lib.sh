# Shared helpers for interop tests: sourced by each tests/interop/*.sh.
# Tests run real peers (qemu-img, qemu-io, qemu-nbd, nbdkit, ...) against
# miniblock's tools; a missing peer is a failure, never a skip: the setup
# script installs them.
#
# The tools come from the environment meson sets: $MINIBLOCK_IMG, $MINIBLOCK_IO
# (and $MINIBLOCK_BUILD, the build directory).
set -u

T=$(mktemp -d /tmp/mb-interop.XXXXXX)
PASSED=0
FAILED=0
BG_PIDS=()

cleanup() {
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

need() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "FATAL: $tool is missing (run scripts/setup.sh)"; exit 1; }
    done
}

ok() { PASSED=$((PASSED + 1)); echo "ok - $1"; }
not_ok() { FAILED=$((FAILED + 1)); echo "not ok - $1"; shift; for l in "$@"; do echo "#   $l"; done; }

# expect_ok NAME CMD...: CMD exits 0.
expect_ok() {
    local name=$1; shift
    local out
    if out=$("$@" 2>&1); then ok "$name"; else not_ok "$name" "command: $*" "output: $out"; fi
}

# expect_check WANT HOW NAME PATTERN CMD...: the four checks below.  WANT:
# "fail" (CMD must exit non-zero) or "ok" (0); HOW: E (its output matches
# the grep -E PATTERN) or F (its output has PATTERN verbatim).
expect_check() {
    local want=$1 how=$2 name=$3 pattern=$4; shift 4
    local out rc=0
    out=$("$@" 2>&1) || rc=$?
    if [ "$want" = fail ] && [ "$rc" -eq 0 ]; then
        not_ok "$name" "command succeeded but should have failed: $*" "output: $out"
    elif [ "$want" = ok ] && [ "$rc" -ne 0 ]; then
        not_ok "$name" "command failed: $*" "output: $out"
    elif ! grep -q"$how" -- "$pattern" <<<"$out"; then
        if [ "$how" = F ]; then
            not_ok "$name" "output lacks: $pattern" "output: $out"
        else
            not_ok "$name" "output does not match '$pattern'" "output: $out"
        fi
    else
        ok "$name"
    fi
}

# expect_fail NAME 'PATTERN' CMD...: CMD exits non-zero and its output matches
# the grep -E PATTERN.
expect_fail() { expect_check fail E "$@"; }
# expect_output NAME 'PATTERN' CMD...: CMD exits 0 and its output matches.
expect_output() { expect_check ok E "$@"; }
# expect_fail_text NAME TEXT CMD...: CMD exits non-zero and its output has
# the line fragment TEXT verbatim.
expect_fail_text() { expect_check fail F "$@"; }
# expect_text NAME TEXT CMD...: CMD exits 0 and its output has TEXT.
expect_text() { expect_check ok F "$@"; }

# hold NAME CMD...: starts CMD in the background (a process holding an image)
# and waits until it has the image open: CMD must print READY_PATTERN
# ($HOLD_READY, default "\[ok\]") on stdout.  Sets HOLD_PID.
hold() {
    local name=$1; shift
    local fifo="$T/hold-$name"
    mkfifo "$fifo.in"
    # Appending: a test may empty the file (: >FILE) to wait for new output
    # only, and the next reply must then start at its beginning, not at the
    # old offset behind a run of zero bytes.
    : >"$fifo.out"
    "$@" <"$fifo.in" >>"$fifo.out" 2>&1 &
    HOLD_PID=$!
    BG_PIDS+=("$HOLD_PID")
    exec {HOLD_FD}>"$fifo.in"
    eval "HOLD_FD_$name=$HOLD_FD"
    eval "HOLD_PID_$name=$HOLD_PID"
}

# Waits (up to 10 s) until FILE contains PATTERN.
wait_for() {
    local file=$1 pattern=$2 i
    for i in $(seq 100); do
        grep -qE -- "$pattern" "$file" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "# timed out waiting for '$pattern' in $file:"; sed 's/^/#   /' "$file"
    return 1
}

# Lock snapshots never read /proc/locks: it lists every lock of the machine
# and comes in page-sized reads, each resuming by position in a list that
# other processes' lock calls shift meanwhile, so while anything else on the
# machine takes and drops locks, lines repeat or go missing (blkdebug once
# saw every byte twice).  Pinned next to a process churning locks, blkdebug
# failed 18 of 20 runs so.  The two helpers below ask the kernel per file.

# held_locks PID FILE: the locks process PID holds on FILE, one
# "KIND TYPE START END" line each (KIND OFDLCK or POSIX), sorted, from the
# fdinfo of each of PID's fds open on FILE (one fd's fdinfo is made in one go
# under the inode's lock).  A byte held through two fds shows twice.
held_locks() {
    local pid=$1 want fd
    want=$(stat -L -c '%d:%i' "$2") || return 1
    for fd in /proc/"$pid"/fd/*; do
        [ "$(stat -L -c '%d:%i' "$fd" 2>/dev/null)" = "$want" ] || continue
        sed -n 's/^lock:[[:space:]]*[0-9]*:[[:space:]]*//p' /proc/"$pid"/fdinfo/"${fd##*/}"
    done | awk '{print $1, $3, $6, $7}' | sort
}

# locked_bytes FILE: the bytes 0-511 of FILE that anyone holds a lock on, as
# "100 101 201 ...": a write-lock probe per byte (F_OFD_GETLK, as QEMU tests
# bytes) from a description of our own, which every other lock conflicts with.
locked_bytes() {
    /usr/bin/python3 - "$1" <<'PY'
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
held = []
for b in range(512):
    # struct flock: l_type, l_whence, l_start, l_len, l_pid
    fl = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, b, 1, 0)
    if struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_OFD_GETLK, fl))[0] != fcntl.F_UNLCK:
        held.append(str(b))
print(" ".join(held))
PY
}

# patch_image SRC DST [OFFSET FORMAT VALUE]...: DST is a copy of SRC with
# each VALUE packed at OFFSET by Python's struct FORMAT (">Q", ">I", "B", ...);
# the copy grows with zeroes if a field lies past its end.  For crafting
# damaged images from good ones.
patch_image() {
    python3 - "$@" <<'PY'
import struct, sys
d = bytearray(open(sys.argv[1], 'rb').read())
a = sys.argv[3:]
for i in range(0, len(a), 3):
    off, fmt, val = int(a[i], 0), a[i + 1], int(a[i + 2], 0)
    if off + struct.calcsize(fmt) > len(d):
        d += bytes(off + struct.calcsize(fmt) - len(d))
    struct.pack_into(fmt, d, off, val)
open(sys.argv[2], 'wb').write(d)
PY
}

# The closing line meson and CI read.
finish() {
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
}
