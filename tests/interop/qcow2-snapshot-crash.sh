#!/bin/bash
# Crash ordering of miniblock-img snapshot -c/-a/-d: every write from the
# Nth on fails (blkdebug write:after=N, so the file holds exactly what was
# written before the "crash"), for N = 0, 1, ... until the operation
# succeeds.  After each: no data lost (the active state and every snapshot
# read as before, or as after, the operation), qemu-img check finds nothing
# but leaked clusters and COPIED flags that disagree with a refcount in the
# safe direction (a snapshot's refcounts raised before its table is
# published: an extra copy at worst), and check -r all makes it clean.
source "$(dirname "$0")/lib.sh"
need qemu-img qemu-io
cd "$T"
MI=$MINIBLOCK_IMG
MIO=$MINIBLOCK_IO

opts() { echo "driver=qcow2,file.driver=blkdebug,file.rules=write:after=$1,file.file.driver=file,file.file.filename=$2"; }
same() { qemu-img compare -q "$@" >/dev/null 2>&1; }
snap_same() {  # snap_same IMG SNAP REF
    rm -f s.raw
    qemu-img convert -l "snapshot.name=$2" -O raw "$1" s.raw 2>/dev/null && same -f raw -F raw s.raw "$3"
}
has_snap() { qemu-img snapshot -l "$1" | grep -qE "^[0-9]+ +$2 "; }
# No error in qemu-img check but leaks and safe COPIED disagreements.
check_safe() {
    local out
    out=$(qemu-img check "$1" 2>&1)
    case $? in
    0|3) return 0 ;;
    2) ! grep -E "^ERROR" <<<"$out" | grep -vq "OFLAG_COPIED" ;;
    *) return 1 ;;
    esac
}

# Small clusters: several L2 tables and refcount blocks, so that every step
# takes several writes.
qemu-img create -q -f qcow2 -o cluster_size=4k img.qcow2 8M
qemu-io -c 'write -P 1 0 3M' -c 'write -P 9 7M 64k' img.qcow2 >/dev/null
qemu-img convert -O raw img.qcow2 ref0.raw
"$MI" snapshot -c s0 img.qcow2
"$MIO" -c 'write -P 2 4k 8k' -c 'write -P 3 2M 2M' img.qcow2 >/dev/null
qemu-img convert -O raw img.qcow2 refA.raw

# crash_loop OP ARG CHECK: runs `snapshot OP ARG` on a copy of img.qcow2 with
# writes failing from N on; CHECK (a function of the copy) must hold after
# every crash.  Leaves the successful result in img.qcow2.
crash_loop() {
    local op=$1 arg=$2 check=$3 n bad=0 done=0
    for n in $(seq 0 200); do
        cp img.qcow2 w.qcow2
        if "$MI" snapshot "$op" "$arg" --image-opts "$(opts "$n" w.qcow2)" >out 2>&1; then
            done=1
            break
        fi
        if ! check_safe w.qcow2; then
            bad=$((bad + 1)); not_ok "snapshot $op $arg, writes failing from $((n + 1)): qemu-img check" "$(qemu-img check w.qcow2 2>&1 | head)"
            continue
        fi
        if ! $check w.qcow2; then
            bad=$((bad + 1)); not_ok "snapshot $op $arg, writes failing from $((n + 1)): data lost"
            continue
        fi
        qemu-img check -q -r all w.qcow2 >/dev/null 2>&1
        if ! qemu-img check w.qcow2 >/dev/null 2>&1 || ! $check w.qcow2; then
            bad=$((bad + 1)); not_ok "snapshot $op $arg, writes failing from $((n + 1)): not clean after check -r all"
        fi
    done
    [ $done = 1 ] || not_ok "snapshot $op $arg: never succeeded"
    [ $bad = 0 ] && ok "snapshot $op $arg: a crash after each of its $n writes loses nothing"
    cp w.qcow2 img.qcow2
}

after_create() {
    same -F raw "$1" refA.raw && snap_same "$1" s0 ref0.raw && { ! has_snap "$1" s1 || snap_same "$1" s1 refA.raw; }
}
crash_loop -c s1 after_create
expect_output "-c s1 done" "^2 +s1 " qemu-img snapshot -l img.qcow2

after_apply() {
    { same -F raw "$1" refA.raw || same -F raw "$1" ref0.raw; } && snap_same "$1" s0 ref0.raw && snap_same "$1" s1 refA.raw
}
crash_loop -a s0 after_apply
expect_ok "-a s0 done" same -F raw img.qcow2 ref0.raw

after_delete() {
    same -F raw "$1" ref0.raw && snap_same "$1" s1 refA.raw && { ! has_snap "$1" s0 || snap_same "$1" s0 ref0.raw; }
}
crash_loop -d s0 after_delete
expect_output "qemu-img check clean at the end" "No errors were found" qemu-img check img.qcow2

# The copy-on-write of a shared L2 table and of shared clusters, crashed too.
after_write() {
    snap_same "$1" s1 refA.raw
}
qemu-io -c 'write -P 4 0 8M' img.qcow2 >/dev/null  # qemu copies every shared table: start over from s1
"$MI" snapshot -a s1 img.qcow2
bad=0
for n in $(seq 0 40); do
    cp img.qcow2 w.qcow2
    "$MIO" -c 'write -P 5 8k 4k' -c 'write -P 6 4M 8k' -c 'flush' --image-opts "$(opts "$n" w.qcow2)" >out 2>&1 && break
    { check_safe w.qcow2 && after_write w.qcow2; } || { bad=$((bad + 1)); qemu-img check w.qcow2 | head -5; }
done
[ $bad = 0 ] && ok "a write over a snapshot: a crash after each of its $n writes loses nothing" ||
    not_ok "a write over a snapshot: $bad crashes lost data or corrupted the image"

finish
