#!/bin/bash
# qcow2 images written by miniblock are valid for qemu-img 7.2: random
# writes of random sizes (data and zeroes, partial clusters over a backing
# file, rounds by miniblock and qemu-io in turn) leave no errors and no
# leaks in `qemu-img check`, and `qemu-img compare` finds the image equal to
# the same writes applied to a raw copy.  Small clusters make the refcount
# table grow.
source "$(dirname "$0")/lib.sh"
need qemu-img qemu-io python3
cd "$T"

# cmds N SIZE SEED MAXLEN ZERO: N random write commands inside SIZE bytes.
cmds() {
    python3 - "$@" <<'PY'
import random, sys
n, size, seed, maxlen, zero = map(int, sys.argv[1:])
r = random.Random(seed)
for i in range(n):
    ln = r.randint(1, maxlen)
    off = r.randint(0, size - ln)
    if zero and r.random() < 0.2:
        print("write -z %d %d" % (off, ln))
    else:
        print("write -P %d %d %d" % (r.randint(1, 255), off, ln))
PY
}

# run TOOL FMT IMG CMDFILE: applies the commands with miniblock-io or qemu-io.
run() {
    local tool=$1 fmt=$2 img=$3 file=$4 args=()
    while read -r l; do args+=(-c "$l"); done <"$file"
    if [ "$tool" = mb ]; then "$MINIBLOCK_IO" -f "$fmt" "${args[@]}" "$img" >/dev/null
    else qemu-io -f "$fmt" "${args[@]}" "$img" >/dev/null; fi
}

# scenario NAME CREATE-OPTS BASE-KIND SIZE WRITES MAXLEN
scenario() {
    local name=$1 opts=$2 base=$3 size=$4 n=$5 maxlen=$6 seed=$RANDOM
    rm -f base.* ov.qcow2 ref.raw
    case $base in
    raw)
        qemu-img create -q -f raw base.raw $((size * 3 / 4))
        qemu-io -f raw -c "write -P 0x5a 0 $((size / 2))" base.raw >/dev/null
        "$MINIBLOCK_IMG" create -f qcow2 -o "$opts" -b base.raw -F raw ov.qcow2 $size >/dev/null
        qemu-img convert -O raw ov.qcow2 ref.raw ;;
    qcow2)
        qemu-img create -q -f qcow2 base.qcow2 $size
        qemu-io -c "write -P 0x6b 0 $((size / 3))" -c "write -z $((size / 2)) 64k" base.qcow2 >/dev/null
        "$MINIBLOCK_IMG" create -f qcow2 -o "$opts" -b base.qcow2 -F qcow2 ov.qcow2 >/dev/null
        qemu-img convert -O raw ov.qcow2 ref.raw ;;
    none)
        "$MINIBLOCK_IMG" create -f qcow2 -o "$opts" ov.qcow2 $size >/dev/null
        qemu-img create -q -f raw ref.raw $size ;;
    esac
    local zero=1
    [[ $opts == *compat=0.10* ]] && zero=1
    for round in 1 2 3 4; do
        cmds $n $size $((seed + round)) $maxlen $zero >c$round
        local tool=mb
        [ $round = 3 ] && tool=qemu
        run $tool qcow2 ov.qcow2 c$round || { not_ok "$name: round $round ($tool) failed (seed $seed)"; return; }
        run qemu raw ref.raw c$round
    done
    local out
    if out=$(qemu-img check ov.qcow2 2>&1) && grep -q "No errors were found" <<<"$out"; then
        ok "$name: qemu-img check clean"
    else
        not_ok "$name: qemu-img check clean (seed $seed)" "$out"
    fi
    if out=$(qemu-img compare -f qcow2 -F raw ov.qcow2 ref.raw 2>&1); then
        ok "$name: equals the raw copy"
    else
        not_ok "$name: equals the raw copy (seed $seed)" "$out"
    fi
    expect_output "$name: miniblock-img check clean" "No errors were found" "$MINIBLOCK_IMG" check ov.qcow2
}

scenario "v3 64k over raw" "cluster_size=64k" raw $((12 << 20)) 60 300000
scenario "v2 512 over raw (refcount table grows)" "compat=0.10,cluster_size=512" raw $((16 << 20)) 80 400000
scenario "v3 4k over qcow2" "cluster_size=4k" qcow2 $((8 << 20)) 80 100000
scenario "v3 2M over qcow2" "cluster_size=2M" qcow2 $((16 << 20)) 30 3000000
scenario "v3 512 no backing" "cluster_size=512" none $((4 << 20)) 80 50000
scenario "v2 64k no backing" "compat=0.10" none $((8 << 20)) 60 200000

# Concurrent allocating writes (64 in flight, straddling clusters, over a
# backing file) against qemu-img bench doing the same on a raw copy.
qemu-img create -q -f raw cb.raw 32M
qemu-io -f raw -c 'write -P 0x11 0 32M' cb.raw >/dev/null
"$MINIBLOCK_IMG" create -f qcow2 -o cluster_size=4k -b cb.raw -F raw cc.qcow2 >/dev/null
cp cb.raw cref.raw
"$MINIBLOCK_IMG" bench -w -c 3000 -d 64 -s 5000 -S 7000 cc.qcow2 >/dev/null
qemu-img bench -f raw -w -c 3000 -d 64 -s 5000 -S 7000 --pattern=0xa5 cref.raw >/dev/null
expect_output "concurrent writes: qemu-img check clean" "No errors were found" qemu-img check cc.qcow2
expect_ok "concurrent writes: equal to the raw copy" qemu-img compare -f qcow2 -F raw cc.qcow2 cref.raw

# Random concurrent allocating writes at QD32 (unaligned, overlapping,
# straddling clusters, some twice), with and without a backing file, against
# the same requests on a raw copy: no leaks, same content.
for cs in 4k 64k; do
    for bk in none raw; do
        rm -f rc.qcow2 rc.raw
        if [ $bk = raw ]; then
            "$MINIBLOCK_IMG" create -f qcow2 -o cluster_size=$cs -b cb.raw -F raw rc.qcow2 >/dev/null
            cp cb.raw rc.raw
        else
            "$MINIBLOCK_IMG" create -f qcow2 -o cluster_size=$cs rc.qcow2 32M >/dev/null
            qemu-img create -q -f raw rc.raw 32M
        fi
        "$MINIBLOCK_IMG" bench -f qcow2 -w -c 4000 -d 32 -s 5000 -S 3000 --random=$RANDOM rc.qcow2 >rc.out
        seed=$(sed -n 's/.*seed \([0-9]*\))$/\1/p' rc.out)
        "$MINIBLOCK_IMG" bench -f raw -w -c 4000 -d 32 -s 5000 -S 3000 --random="$seed" rc.raw >/dev/null
        expect_output "QD32 random allocating writes, cluster $cs, backing $bk: qemu-img check clean, no leaks" \
            "No errors were found" qemu-img check rc.qcow2
        expect_ok "QD32 random allocating writes, cluster $cs, backing $bk: equal to raw" \
            qemu-img compare -f qcow2 -F raw rc.qcow2 rc.raw
    done
done

# Metadata write-back: 200 allocating writes make exactly qemu-img bench's
# pwrite64 calls (whole tables, no read-modify-write of entries) and a few
# fdatasyncs, not one per allocation; cache=writethrough still syncs every
# write.
need strace
# syscalls TOOL CACHE: "pwrite64 fdatasync" counts of 200 strided 4 KiB
# allocating writes into a new 64 MiB qcow2.
syscalls() {
    rm -f sc.qcow2
    qemu-img create -q -f qcow2 sc.qcow2 64M
    local cmd=("$MINIBLOCK_IMG")
    [ "$1" = qemu ] && cmd=(qemu-img)
    strace -f -qq -c -o sc.strace "${cmd[@]}" bench -f qcow2 -t "$2" -w -c 200 -d 8 -s 4k -S 69632 sc.qcow2 >/dev/null
    awk '$NF == "pwrite64" { w = $4 } $NF == "fdatasync" { f = $4 } END { print w + 0, f + 0 }' sc.strace
}
for cache in writeback none; do
    read -r qw qf <<<"$(syscalls qemu $cache)"
    read -r mw mf <<<"$(syscalls mb $cache)"
    [ "$mw" = "$qw" ] && ok "cache=$cache: $mw pwrite64 calls, as qemu-img" ||
        not_ok "cache=$cache: pwrite64 calls as qemu-img" "miniblock $mw, qemu-img $qw"
    [ "$mf" -le 5 ] && ok "cache=$cache: $mf fdatasync calls for 200 allocations (qemu-img: $qf)" ||
        not_ok "cache=$cache: at most 5 fdatasync calls" "miniblock $mf, qemu-img $qf"
done
read -r mw mf <<<"$(syscalls mb writethrough)"
[ "$mf" -ge 200 ] && ok "cache=writethrough: a sync per write ($mf for 200)" ||
    not_ok "cache=writethrough: a sync per write" "$mf fdatasync calls for 200 writes"
expect_output "write-back on close: qemu-img check clean" "No errors were found" qemu-img check sc.qcow2

# The refcount table really grew in the 512-byte scenario above.
"$MINIBLOCK_IMG" create -f qcow2 -o cluster_size=512 grow.qcow2 32M >/dev/null
"$MINIBLOCK_IO" -c 'write -P 1 0 12M' grow.qcow2 >/dev/null
expect_output "512-byte clusters: refcount table moved and grew" 'refcount_table_clusters *[2-9]|refcount_table_clusters *[1-9][0-9]' \
    python3 -c "
import struct
h = open('grow.qcow2','rb').read(72)
print('refcount_table_clusters', struct.unpack('>I', h[56:60])[0])"
expect_output "512-byte clusters: qemu-img check clean after growth" "No errors were found" qemu-img check grow.qcow2
expect_ok "512-byte clusters: data intact" qemu-io -c 'read -P 1 0 12M' -c 'read -P 0 12M 20M' grow.qcow2

# Zero clusters: v3 writes the zero flag (no data cluster for the range).
"$MINIBLOCK_IMG" create -f qcow2 z.qcow2 4M >/dev/null
"$MINIBLOCK_IO" -c 'write -P 7 0 4M' -c 'write -z 1M 2M' z.qcow2 >/dev/null
expect_output "write -z: qemu-img map shows zero clusters" '"start": 1048576, "length": 2097152, "depth": 0, "present": true, "zero": true, "data": false' \
    qemu-img map --output=json z.qcow2
expect_output "write -z: qemu-img check clean" "No errors were found" qemu-img check z.qcow2

# Preallocation: while a writer has the image open, the file is grown ahead
# of new clusters (zero-range fallocate), so that data writes do not extend
# it; closing gives the tail back, and a writer killed with the tail in
# place leaves an image qemu-img finds clean, whose tail the next writer
# gives back before it allocates from the last refcounted cluster on.
"$MINIBLOCK_IMG" create -f qcow2 pre.qcow2 256M >/dev/null
"$MINIBLOCK_IO" -t none -f qcow2 -c 'write -P 3 0 1M' -c flush -c 'sleep 20000' pre.qcow2 >/dev/null &
pre_pid=$!
grown=0
for _ in $(seq 100); do
    [ "$(stat -c %s pre.qcow2)" -ge $((32 << 20)) ] && { grown=1; break; }
    sleep 0.05
done
if [ $grown = 1 ]; then ok "preallocation: the open file grew ahead of its clusters"
else not_ok "preallocation: the open file grew ahead of its clusters" "size: $(stat -c %s pre.qcow2)"; fi
kill -KILL $pre_pid; wait $pre_pid 2>/dev/null || true
expect_output "preallocation: killed with the tail in place, qemu-img check is clean" "No errors were found" \
    qemu-img check pre.qcow2
"$MINIBLOCK_IO" -t none -f qcow2 -c 'write -P 4 1M 3M' pre.qcow2 >/dev/null
end=$(qemu-img check --output=json pre.qcow2 | sed -n 's/.*"image-end-offset": \([0-9]*\).*/\1/p')
if [ -n "$end" ] && [ "$end" -lt $((5 << 20)) ] && [ "$(stat -c %s pre.qcow2)" = "$end" ]; then
    ok "preallocation: the next writer allocated where the first one's clusters end, not past its tail"
else
    not_ok "preallocation: the next writer allocated where the first one's clusters end, not past its tail" \
        "size $(stat -c %s pre.qcow2), image end offset '$end'"
fi
expect_ok "preallocation: the next writer's data and the first's read back" \
    qemu-io -f qcow2 -c 'read -P 3 0 1M' -c 'read -P 4 1M 3M' -c 'read -P 0 4M 252M' pre.qcow2
expect_output "preallocation: qemu-img check clean after the next writer" "No errors were found" qemu-img check pre.qcow2
"$MINIBLOCK_IMG" create -f qcow2 pre2.qcow2 256M >/dev/null
"$MINIBLOCK_IO" -t none -f qcow2 -c 'write -P 5 0 5M' pre2.qcow2 >/dev/null
end=$(qemu-img check --output=json pre2.qcow2 | sed -n 's/.*"image-end-offset": \([0-9]*\).*/\1/p')
if [ -n "$end" ] && [ "$(stat -c %s pre2.qcow2)" = "$end" ]; then ok "preallocation: closing truncates the file to its last cluster"
else not_ok "preallocation: closing truncates the file to its last cluster" "size $(stat -c %s pre2.qcow2), image end offset '$end'"; fi

finish
