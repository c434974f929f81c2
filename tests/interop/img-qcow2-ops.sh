#!/bin/bash
# qemu-img parity for qcow2 (issue 12), qemu-img 7.2 as the oracle:
#   create -o preallocation / lazy_refcounts / refcount_bits (byte-identical
#     to qemu-img's images, its error texts, every width written correctly);
#   resize of qcow2 images (grow with L1 growth, --shrink, locking);
#   check -r all on images damaged from qemu-img-made ones (the same detail
#     lines, summary, JSON and exit status as qemu-img check -r all);
#   the dirty bit (QEMU's lazy refcounts after a crash) repaired on open.
source "$(dirname "$0")/lib.sh"
need qemu-img qemu-io python3
cd "$T"
MI=$MINIBLOCK_IMG
IO=$MINIBLOCK_IO

# identical NAME ARGS... SIZE: qemu-img create and miniblock-img create make the same bytes.
identical() {
    local name=$1; shift
    local size=${*: -1}
    set -- "${@:1:$#-1}"
    rm -f q.img m.img
    qemu-img create -q "$@" q.img "$size"
    "$MI" create -q "$@" m.img "$size"
    if cmp -s q.img m.img; then ok "create $name: byte-identical to qemu-img"
    else not_ok "create $name: byte-identical to qemu-img" "$(cmp q.img m.img 2>&1)"; fi
}
# info_same NAME IMG-Q IMG-M: qemu-img info --output=json of both, key for key
# (but the file name and the host's allocation).
info_same() {
    qemu-img info --output=json "$2" >q.json; "$MI" info --output=json "$3" >m.json
    if python3 - <<'PY'
import json, sys
q, m = json.load(open("q.json")), json.load(open("m.json"))
for d in (q, m):
    for k in ("filename", "actual-size", "miniblock"): d.pop(k, None)
sys.exit(q != m)
PY
    then ok "$1: info --output=json as qemu-img's"; else not_ok "$1: info --output=json" "$(diff q.json m.json)"; fi
}

# --- create ----------------------------------------------------------------------
for rb in 1 2 4 8 16 32 64; do identical "refcount_bits=$rb" -f qcow2 -o refcount_bits=$rb 1M; done
identical "refcount_bits=1, 4k clusters, 1G" -f qcow2 -o refcount_bits=1,cluster_size=4k 1G
identical "lazy_refcounts=on" -f qcow2 -o lazy_refcounts=on 1M
info_same "lazy_refcounts=on" q.img m.img
identical "refcount_bits=64,lazy_refcounts=on" -f qcow2 -o refcount_bits=64,lazy_refcounts=on 1M
info_same "refcount_bits=64,lazy_refcounts=on" q.img m.img
for p in off metadata; do identical "preallocation=$p" -f qcow2 -o preallocation=$p 1M; done
# falloc and full: qemu-img moves its refcount table while preallocating
# (another layout); what counts is the same: every cluster allocated and
# on disk, clean, reading zeroes.
for p in falloc full; do
    rm -f q.img m.img
    qemu-img create -q -f qcow2 -o preallocation=$p q.img 5M; "$MI" create -q -f qcow2 -o preallocation=$p m.img 5M
    if out=$(qemu-img check m.img 2>&1) && grep -q "^80/80 = 100.00% allocated" <<<"$out" &&
        [ "$(stat -c %b m.img)" -ge 10240 ] && qemu-img compare q.img m.img >/dev/null; then
        ok "create preallocation=$p: clean, all allocated and on disk, as qemu-img's to the guest"
    else not_ok "create preallocation=$p" "$out" "$(stat -c %b m.img)"; fi
    info_same "preallocation=$p" q.img m.img
done
identical "preallocation=metadata, 4k clusters, 3M" -f qcow2 -o preallocation=metadata,cluster_size=4k 3M
identical "preallocation=metadata,refcount_bits=1,lazy_refcounts=on" -f qcow2 \
    -o preallocation=metadata,refcount_bits=1,lazy_refcounts=on 1M
identical "raw, preallocation=full" -f raw -o preallocation=full 1M
identical "raw, preallocation=falloc" -f raw -o preallocation=falloc 1M
[ "$(stat -c %b m.img)" -ge 2048 ] && ok "raw falloc: the blocks are allocated" || not_ok "raw falloc: the blocks are allocated" "$(stat -c %b m.img)"
# Larger preallocated images: valid and the same to the guest as qemu-img's.
"$MI" create -q -f qcow2 -o preallocation=metadata m.qcow2 3G
expect_output "preallocation=metadata 3G: qemu-img check" "^No errors were found on the image.$" qemu-img check m.qcow2
expect_output "preallocation=metadata 3G: all allocated" "^49152/49152 = 100.00% allocated" qemu-img check m.qcow2
expect_output "preallocation=metadata 3G: reads zeroes" "^read 65536/65536 bytes" qemu-io -r -c 'read -P 0 3221159936 64k' m.qcow2

c() { "$MI" create -q -f qcow2 "$@"; }
expect_fail "refcount_bits=3" "^miniblock-img: Refcount width must be a power of two and may not exceed 64 bits$" c -o refcount_bits=3 x.qcow2 1M
expect_fail "refcount_bits=128" "^miniblock-img: Refcount width must be a power of two and may not exceed 64 bits$" c -o refcount_bits=128 x.qcow2 1M
expect_fail "refcount_bits=8 with compat=0.10" \
    "^miniblock-img: Different refcount widths than 16 bits require compatibility level 1.1 or above \(use version=v3 or greater\)$" \
    c -o refcount_bits=8,compat=0.10 x.qcow2 1M
expect_fail "lazy_refcounts with compat=0.10" \
    "^miniblock-img: Lazy refcounts only supported with compatibility level 1.1 and above \(use version=v3 or greater\)$" \
    c -o lazy_refcounts=on,compat=0.10 x.qcow2 1M
expect_fail "lazy_refcounts=maybe" "^miniblock-img: Parameter 'lazy_refcounts' expects 'on' or 'off'$" c -o lazy_refcounts=maybe x.qcow2 1M
expect_fail "preallocation=bogus" "^miniblock-img: Parameter 'preallocation' does not accept value 'bogus'$" c -o preallocation=bogus x.qcow2 1M
expect_fail "raw preallocation=metadata" "^miniblock-img: Unsupported preallocation mode: metadata$" \
    "$MI" create -q -f raw -o preallocation=metadata x.raw 1M
expect_output "create -o help: preallocation" "^  preallocation=<str>    - Preallocation mode \(allowed values: off, metadata, falloc, full\)$" \
    "$MI" create -f qcow2 -o help

# Every refcount width is written right: miniblock fills images of each
# width (its own and qemu-img's) and qemu-img finds them clean and equal.
for rb in 1 4 8 32 64; do
    for maker in q m; do
        rm -f w.qcow2
        if [ $maker = q ]; then qemu-img create -q -f qcow2 -o refcount_bits=$rb,cluster_size=4k w.qcow2 8M
        else "$MI" create -q -f qcow2 -o refcount_bits=$rb,cluster_size=4k w.qcow2 8M; fi
        "$IO" -c 'write -P 7 0 3M' -c 'write -P 8 5M 1M' -c 'discard 1M 512k' w.qcow2 >/dev/null
        if out=$(qemu-img check w.qcow2 2>&1) && qemu-io -r -c 'read -P 7 0 1M' -c 'read -P 0 1M 512k' \
                -c 'read -P 7 1536k 1536k' -c 'read -P 8 5M 1M' w.qcow2 >/dev/null; then
            ok "refcount_bits=$rb ($maker-made): written by miniblock, clean and read back by qemu"
        else not_ok "refcount_bits=$rb ($maker-made)" "$out"; fi
    done
done
# A 1-bit refcount cannot count two references: qemu-img's image with a
# cluster referenced twice is an error miniblock reports, not a wrap-around.
qemu-img create -q -f qcow2 -o refcount_bits=1 one.qcow2 1M
qemu-io -c 'write -P 1 0 64k' one.qcow2 >/dev/null
patch_image one.qcow2 one2.qcow2 0x40008 '>Q' 0x8000000000050000
cp one2.qcow2 one3.qcow2
qemu-img check -r all one2.qcow2 >q.out 2>q.err; qrc=$?
"$MI" check -r all one3.qcow2 >m.out 2>m.err; mrc=$?
[ $qrc = $mrc ] && [ $mrc != 0 ] && ok "refcount_bits=1, two references: check -r all fails as qemu-img's ($mrc)" \
    || not_ok "refcount_bits=1, two references" "qemu-img $qrc: $(cat q.out q.err)" "miniblock $mrc: $(cat m.out m.err)"

# --- resize ------------------------------------------------------------------------
qemu-img create -q -f qcow2 r.qcow2 1M
qemu-io -c 'write -P 1 0 1M' r.qcow2 >/dev/null
# same_resize NAME ARGS...: qemu-img resize and miniblock-img resize on copies
# of r.qcow2: the same output and exit status, images equal for qemu-img
# compare, both clean.
same_resize() {
    local name=$1; shift
    cp r.qcow2 q.qcow2; cp r.qcow2 m.qcow2
    qemu-img resize "$@" >q.out 2>q.err; local qrc=$?
    local margs=("${@//q.qcow2/m.qcow2}")
    "$MI" resize "${margs[@]}" >m.out 2>m.err; local mrc=$?
    sed -i 's/^qemu-img: /miniblock-img: /' q.err
    if [ $qrc != $mrc ] || ! diff q.out m.out >/dev/null || ! diff q.err m.err >/dev/null; then
        not_ok "resize $name: as qemu-img" "qemu-img $qrc: $(cat q.out q.err)" "miniblock $mrc: $(cat m.out m.err)"
    elif ! qemu-img compare q.qcow2 m.qcow2 >/dev/null 2>&1; then
        not_ok "resize $name: contents" "$(qemu-img compare q.qcow2 m.qcow2 2>&1)"
    elif ! qemu-img check m.qcow2 >/dev/null 2>&1; then
        not_ok "resize $name: qemu-img check" "$(qemu-img check m.qcow2 2>&1)"
    elif ! cmp -s q.qcow2 m.qcow2; then
        not_ok "resize $name: byte-identical to qemu-img's" "$(cmp q.qcow2 m.qcow2 2>&1)"
    else
        ok "resize $name: as qemu-img (exit $mrc, byte-identical)"
    fi
}
same_resize "+1M" q.qcow2 +1M
same_resize "10G (the L1 table grows)" q.qcow2 10G
same_resize "--shrink 300k" --shrink q.qcow2 300k
same_resize "--shrink 0" --shrink q.qcow2 0
same_resize "shrink without --shrink" q.qcow2 512k
same_resize "--shrink to 1000 bytes" --shrink q.qcow2 1000
# Shrink, then grow again: the clusters past the end are gone (zeroes), the
# rest of the last kept cluster keeps its bytes, as with qemu-img.
cp r.qcow2 sg.qcow2; cp r.qcow2 sgq.qcow2
"$MI" resize -q --shrink sg.qcow2 100k && "$MI" resize -q sg.qcow2 4G
qemu-img resize -q --shrink sgq.qcow2 100k && qemu-img resize -q sgq.qcow2 4G
expect_output "shrink then grow: clusters past the old end read as zeroes" "^read 819200/819200 bytes" \
    qemu-io -r -c 'read -P 1 0 100k' -c 'read -P 0 128k 800k' sg.qcow2
expect_output "shrink then grow: as qemu-img's" "^Images are identical.$" qemu-img compare sgq.qcow2 sg.qcow2
expect_output "shrink then grow: qemu-img check" "^No errors were found on the image.$" qemu-img check sg.qcow2
# Growing an overlay over a longer backing file: the new range reads as
# zeroes, as with qemu-img (not the backing file's data).
qemu-img create -q -f raw base.raw 4M
qemu-io -f raw -c 'write -P 9 0 4M' base.raw >/dev/null
for t in q m; do qemu-img create -q -f qcow2 -b base.raw -F raw ov$t.qcow2 1M; done
qemu-img resize -q ovq.qcow2 3M; "$MI" resize -q ovm.qcow2 3M
expect_output "grow over a longer backing file: zeroes" "^read 2097152/2097152 bytes" qemu-io -r -c 'read -P 0 1M 2M' ovm.qcow2
expect_output "grow over a longer backing file: as qemu-img's" "^Images are identical.$" qemu-img compare ovq.qcow2 ovm.qcow2
# Locking: a running writer forbids resizing; the refused resize changes
# no lock byte.
cp r.qcow2 l.qcow2
hold w "$IO" l.qcow2
echo length >&"$HOLD_FD"; wait_for "$T/hold-w.out" '\[ok\]'
before=$("$MI" locks l.qcow2)
expect_fail "resize of a qcow2 image next to a running writer: refused" 'Failed to get "write" lock' "$MI" resize l.qcow2 2M
after=$("$MI" locks l.qcow2)
[ "$before" = "$after" ] && ok "the refused resize changed no lock byte" || not_ok "the refused resize changed no lock byte" "$before" "$after"
echo quit >&"$HOLD_FD"; wait "$HOLD_PID" 2>/dev/null
expect_output "resize once the writer is gone" "^Image resized.$" "$MI" resize l.qcow2 2M

# --- check -r all ------------------------------------------------------------------
# 64k clusters: header 0, refcount table 0x10000, refcount block 0x20000,
# L1 0x30000, L2 0x40000, data 0x50000, 0x60000 (and 0x70000 at 512k).
qemu-img create -q -f qcow2 g.qcow2 1M
qemu-io -c 'write -P 9 0 128k' -c 'write -P 8 512k 64k' g.qcow2 >/dev/null
# same NAME IMG [ARGS]: qemu-img check and miniblock-img check on copies of
# IMG: the same exit status, stdout and detail lines; afterwards qemu-img
# check finds both in the same state, and they read the same.
same() {
    local name=$1 img=$2
    shift 2
    cp "$img" q-$img; cp "$img" m-$img
    qemu-img check "$@" q-$img >q.out 2>q.err; local qrc=$?
    "$MI" check "$@" m-$img >m.out 2>m.err; local mrc=$?
    sed -i "s/q-$img/IMG/; s/^qemu-img: /miniblock-img: /" q.out q.err
    sed -i "s/m-$img/IMG/" m.out m.err
    qemu-img check q-$img >q.after 2>&1; qemu-img check m-$img >m.after 2>&1
    if [ $qrc != $mrc ]; then
        not_ok "$name: exit status" "qemu-img $qrc, miniblock-img $mrc" "$(cat m.out m.err)"
    elif ! diff q.out m.out >/dev/null; then
        not_ok "$name: output" "$(diff q.out m.out)"
    elif ! diff q.err m.err >/dev/null; then
        not_ok "$name: detail lines" "$(diff q.err m.err)"
    elif ! diff q.after m.after >/dev/null; then
        not_ok "$name: qemu-img check afterwards" "$(diff q.after m.after)"
    elif ! qemu-img compare q-$img m-$img >/dev/null 2>&1; then
        not_ok "$name: contents afterwards" "$(qemu-img compare q-$img m-$img 2>&1)"
    else
        ok "$name: exit $mrc, output and result as qemu-img"
    fi
}
same "clean, -r all" g.qcow2 -r all
# Leaks and a refcount too high (-r leaks is enough).
patch_image g.qcow2 leak.qcow2 0x2000c '>H' 2 0x20012 '>H' 1 0x9fffe '>H' 0
same "leaks" leak.qcow2
same "leaks, -r leaks" leak.qcow2 -r leaks
same "leaks, -r all" leak.qcow2 -r all
# A refcount too low but not zero: a cluster referenced twice (two L2
# entries) with refcount 1; -r all raises it, then fixes the COPIED flags.
patch_image g.qcow2 twice.qcow2 0x40018 '>Q' 0x8000000000050000
same "a cluster referenced twice" twice.qcow2
same "a cluster referenced twice, -r leaks" twice.qcow2 -r leaks
same "a cluster referenced twice, -r all" twice.qcow2 -r all
same "a cluster referenced twice, -r all, json" twice.qcow2 -r all --output=json
# Clusters in use with refcount 0: the refcount structure is rebuilt.
patch_image g.qcow2 zero.qcow2 0x2000a '>H' 0 0x2000e '>H' 0 0x9fffe '>H' 0 0x20012 '>H' 1
same "refcount 0 for clusters in use" zero.qcow2
same "refcount 0, -r leaks (needs a rebuild)" zero.qcow2 -r leaks
same "refcount 0, -r all (rebuild)" zero.qcow2 -r all
same "refcount 0, -r all (rebuild), json" zero.qcow2 -r all --output=json
# Hostile: the refcount table lost its only block.
patch_image g.qcow2 noblock.qcow2 0x10000 '>Q' 0
same "no refcount block, -r all" noblock.qcow2 -r all
# A COPIED flag missing on an L1 entry.
patch_image g.qcow2 l1copied.qcow2 0x30000 '>Q' 0x40000
same "L1 entry without COPIED, -r all" l1copied.qcow2 -r all
# Damaged images of another width.
qemu-img create -q -f qcow2 -o refcount_bits=4 g4.qcow2 1M
qemu-io -c 'write -P 9 0 128k' g4.qcow2 >/dev/null
patch_image g4.qcow2 z4.qcow2 0x20002 'B' 0x01
same "refcount_bits=4, refcount 0 for clusters in use, -r all" z4.qcow2 -r all
# The corrupt bit (set when a corruption was detected): check -r opens the
# image anyway and clears the bit once nothing is left wrong, as qemu-img.
patch_image g.qcow2 cbit.qcow2 72 '>Q' 2
same "the corrupt bit, -r all" cbit.qcow2 -r all
expect_output "... the bit is gone" '"corrupt": false' qemu-img info --output=json m-cbit.qcow2
patch_image leak.qcow2 cbitleak.qcow2 72 '>Q' 2
same "the corrupt bit and leaks, -r leaks" cbitleak.qcow2 -r leaks
patch_image zero.qcow2 cbitzero.qcow2 72 '>Q' 2
same "the corrupt bit and refcount 0, -r leaks (the bit stays)" cbitzero.qcow2 -r leaks
expect_fail "... the image still refuses writes" "qcow2: Image is corrupt; cannot be opened read/write" \
    "$IO" -c 'write 0 4k' m-cbitzero.qcow2
# A refcount block that cannot be read: every cluster it covers is a check
# error, as with qemu-img.
BD="driver=qcow2,file.driver=blkdebug,file.file.driver=file,file.file.filename=g.qcow2,file.rules=read@131072:EIO"
"$MI" check --image-opts "$BD" >m.out 2>m.err; mrc=$?
if [ $mrc = 1 ] && grep -q "^Can't get refcount for cluster 0: Input/output error$" m.err &&
    grep -q "^8 internal errors have occurred during the check.$" m.out; then
    ok "an unreadable refcount block: check errors (exit 1)"
else not_ok "an unreadable refcount block" "exit $mrc" "$(head -3 m.err)" "$(cat m.out)"; fi
expect_fail "check -r with a bad mode (qemu-img's text)" \
    "^miniblock-img: Unknown option value for -r \(expecting 'leaks' or 'all'\): foo$" "$MI" check -r foo g.qcow2

# --- the dirty bit -----------------------------------------------------------------
# QEMU with lazy refcounts, killed before closing: the dirty bit is set and
# refcounts lag behind.  Opening read-write repairs it (as QEMU does), read-only
# opens do not touch it.
qemu-img create -q -f qcow2 -o lazy_refcounts=on d.qcow2 1M
qemu-io -c 'write -P 3 0 256k' -c abort d.qcow2 >/dev/null 2>&1
expect_output "qemu crashed with lazy refcounts: dirty" '"dirty-flag": true' qemu-img info --output=json d.qcow2
expect_output "read-only open of a dirty image" "^read 262144/262144 bytes" "$IO" -r -c 'read -P 3 0 256k' d.qcow2
expect_output "... leaves it dirty" '"dirty-flag": true' qemu-img info --output=json -U d.qcow2
expect_output "read-write open repairs it" "^wrote 65536/65536 bytes" "$IO" -c 'write -P 4 256k 64k' d.qcow2
expect_output "... and clears the bit" '"dirty-flag": false' qemu-img info --output=json d.qcow2
expect_output "... qemu-img check finds it clean" "^No errors were found on the image.$" qemu-img check d.qcow2
expect_output "... the data is there" "^read 65536/65536 bytes" qemu-io -r -c 'read -P 3 0 256k' -c 'read -P 4 256k 64k' d.qcow2
# A repair that cannot write fails the write and says why; the image stays dirty.
qemu-img create -q -f qcow2 -o lazy_refcounts=on d2.qcow2 1M
qemu-io -c 'write -P 3 0 256k' -c abort d2.qcow2 >/dev/null 2>&1
expect_fail "a dirty image whose repair fails" "^WARNING: qcow2: Could not repair dirty image 'd2.qcow2': Input/output error$" \
    "$IO" --image-opts -c 'write 512k 4k' \
    "driver=qcow2,file.driver=blkdebug,file.file.driver=file,file.file.filename=d2.qcow2,file.rules=write:EIO"
expect_output "... and it stays dirty" '"dirty-flag": true' qemu-img info --output=json d2.qcow2

# --- amend ---------------------------------------------------------------------------
# same_amend NAME CREATE-OPTS AMEND-OPTS: an image made and filled by qemu,
# amended by qemu-img and by miniblock-img: both clean, equal to the guest,
# info --output=json key for key the same (and the same bytes where qemu-img's
# layout is deterministic: BYTES=1).
same_amend() {
    local name=$1 copts=$2 aopts=$3
    rm -f a0.qcow2; qemu-img create -q -f qcow2 -o "$copts" a0.qcow2 1M
    qemu-io -c 'write -P 1 0 64k' -c 'write -z 128k 64k' -c 'write -P 2 512k 64k' -c 'write -z -u 512k 4k' \
        a0.qcow2 >/dev/null 2>&1
    cp a0.qcow2 aq.qcow2; cp a0.qcow2 am.qcow2
    qemu-img amend -o "$aopts" aq.qcow2 >q.out 2>&1; local qrc=$?
    "$MI" amend -o "$aopts" am.qcow2 >m.out 2>&1; local mrc=$?
    if [ $qrc != 0 ] || [ $mrc != 0 ]; then not_ok "amend $name" "qemu-img $qrc: $(cat q.out)" "miniblock $mrc: $(cat m.out)"; return; fi
    if ! out=$(qemu-img check am.qcow2 2>&1); then not_ok "amend $name: qemu-img check" "$out"; return; fi
    if ! out=$(qemu-img compare aq.qcow2 am.qcow2 2>&1); then not_ok "amend $name: contents" "$out"; return; fi
    if [ "${BYTES:-0}" = 1 ] && ! cmp -s aq.qcow2 am.qcow2; then not_ok "amend $name: byte-identical" "$(cmp aq.qcow2 am.qcow2 2>&1)"; return; fi
    ok "amend $name: clean and as qemu-img's"
    info_same "amend $name" aq.qcow2 am.qcow2
}
BYTES=1 same_amend "lazy_refcounts=on" compat=1.1 lazy_refcounts=on
BYTES=1 same_amend "lazy_refcounts=off" lazy_refcounts=on lazy_refcounts=off
same_amend "compat=0.10 (zero clusters expanded)" compat=1.1 compat=0.10
BYTES=1 same_amend "compat=1.1" compat=0.10 compat=1.1
same_amend "compat=0.10 drops lazy refcounts" lazy_refcounts=on compat=0.10
same_amend "refcount_bits=1" compat=1.1 refcount_bits=1
same_amend "refcount_bits=64" refcount_bits=8 refcount_bits=64
same_amend "compat=0.10,refcount_bits=16 from 8 bits" refcount_bits=8 compat=0.10,refcount_bits=16
same_amend "size=4G" compat=1.1 size=4G
same_amend "size=256k (a shrink)" compat=1.1 size=256k
# A downgrade over a backing file: zero clusters must keep hiding it.
qemu-img create -q -f raw ab.raw 1M; qemu-io -f raw -c 'write -P 7 0 1M' ab.raw >/dev/null
qemu-img create -q -f qcow2 -b ab.raw -F raw ao.qcow2 1M; qemu-io -c 'write -z 0 128k' ao.qcow2 >/dev/null
"$MI" amend -o compat=0.10 ao.qcow2
expect_output "compat=0.10 over a backing file: zeroes stay zeroes" "^read 131072/131072 bytes" qemu-io -r -c 'read -P 0 0 128k' -c 'read -P 7 128k 64k' ao.qcow2
expect_output "... and qemu-img check is clean" "^No errors were found on the image.$" qemu-img check ao.qcow2
am() { "$MI" amend "$@"; }
cp a0.qcow2 e.qcow2
expect_fail "amend: no -o" "^miniblock-img: Must specify options \(-o\)$" am e.qcow2
expect_fail "amend: cluster_size" "^miniblock-img: Invalid parameter 'cluster_size'$" am -o cluster_size=4k e.qcow2
expect_fail "amend: cluster_size, the hint" "^This option is only supported for image creation$" am -o cluster_size=4k e.qcow2
expect_fail "amend: backing_file" "^miniblock-img: Cannot amend the backing file$" am -o backing_file=x e.qcow2
expect_fail "amend: unknown option" "^miniblock-img: Invalid parameter 'foo'$" am -o foo=1 e.qcow2
expect_fail "amend: compat=2" "^miniblock-img: Unknown compatibility level 2$" am -o compat=2 e.qcow2
expect_fail "amend: lazy_refcounts=x" "^miniblock-img: Parameter 'lazy_refcounts' expects 'on' or 'off'$" am -o lazy_refcounts=x e.qcow2
expect_fail "amend: lazy_refcounts with compat=0.10" \
    "^miniblock-img: Lazy refcounts only supported with compatibility level 1.1 and above \(use compat=1.1 or greater\)$" \
    am -o lazy_refcounts=on,compat=0.10 e.qcow2
expect_fail "amend: refcount_bits=3" "^miniblock-img: Refcount width must be a power of two and may not exceed 64 bits$" am -o refcount_bits=3 e.qcow2
expect_fail "amend: size=1000" "^miniblock-img: The new size must be a multiple of 512$" am -o size=1000 e.qcow2
expect_fail "amend: size=foo" "^miniblock-img: Parameter 'size' expects a non-negative number below 2\^64$" am -o size=foo e.qcow2
qemu-img create -q -f qcow2 -o refcount_bits=8 e8.qcow2 1M
expect_fail "amend: compat=0.10 with 8-bit refcounts" "^miniblock-img: compat=0.10 requires refcount_bits=16$" am -o compat=0.10 e8.qcow2
qemu-img create -q -f qcow2 -o compat=0.10 e2.qcow2 1M
expect_fail "amend: refcount_bits=8 on compat=0.10" \
    "^miniblock-img: Refcount widths other than 16 bits require compatibility level 1.1 or above \(use compat=1.1 or greater\)$" \
    am -o refcount_bits=8 e2.qcow2
qemu-img create -q -f raw e.raw 1M
expect_fail "amend: a raw image" "^miniblock-img: Format driver 'raw' does not support option amendment$" am -f raw -o size=2M e.raw
expect_fail "amend refcount_bits=1 with a cluster referenced twice" \
    "^miniblock-img: Could not change the refcount width: Numerical result out of range$" am -o refcount_bits=1 twice.qcow2
expect_output "amend -o help" "^  lazy_refcounts=<bool \(on/off\)> - Postpone refcount updates$" am -o help e.qcow2
cmp -s a0.qcow2 e.qcow2 && ok "refused amends changed nothing" || not_ok "refused amends changed nothing"
# amend takes part in locking: a running writer keeps it out.
hold aw "$IO" e.qcow2
echo length >&"$HOLD_FD"; wait_for "$T/hold-aw.out" '\[ok\]'
expect_fail "amend next to a running writer: refused" 'Failed to get "write" lock' am -o lazy_refcounts=on e.qcow2
echo quit >&"$HOLD_FD"; wait "$HOLD_PID" 2>/dev/null

# --- convert -q, --salvage, --target-image-opts ----------------------------------------
qemu-img create -q -f raw s.raw 1M
qemu-io -f raw -c 'write -P 5 0 1M' s.raw >/dev/null
# The sector at 51200 fails to read (blkdebug in both).
QSRC="driver=raw,file.driver=blkdebug,file.image.filename=s.raw,file.inject-error.0.event=read_aio,file.inject-error.0.sector=100,file.inject-error.0.once=off"
MSRC="driver=raw,file.driver=blkdebug,file.file.driver=file,file.file.filename=s.raw,file.rules=read@51200:EIO"
qemu-img convert --salvage --image-opts -O raw "$QSRC" sq.raw 2>q.err; qrc=$?
"$MI" convert --salvage --image-opts -O raw "$MSRC" sm.raw 2>m.err; mrc=$?
sed -i 's/^qemu-img: /miniblock-img: /' q.err
if [ $qrc = 0 ] && [ $mrc = 0 ] && diff q.err m.err >/dev/null && cmp -s sq.raw sm.raw; then
    ok "convert --salvage: the same warning and the same copy as qemu-img ($(cat m.err))"
else not_ok "convert --salvage" "qemu-img $qrc: $(cat q.err)" "miniblock $mrc: $(cat m.err)" "$(cmp sq.raw sm.raw 2>&1)"; fi
expect_output "convert --salvage: the bad sector reads zeroes, the rest is copied" "^read 996864/996864 bytes" \
    qemu-io -f raw -r -c 'read -P 5 0 51200' -c 'read -P 0 51200 512' -c 'read -P 5 51712 996864' sm.raw
expect_fail "convert without --salvage fails" "^miniblock-img: error while reading at byte 0: Input/output error$" \
    "$MI" convert --image-opts -O raw "$MSRC" sm2.raw
"$MI" convert -q --salvage --image-opts -O raw "$MSRC" sm3.raw >m.out 2>&1
[ $? = 0 ] && [ ! -s m.out ] && ok "convert -q --salvage: silent" || not_ok "convert -q --salvage: silent" "$(cat m.out)"
expect_output "convert -q -p prints nothing" "^$" "$MI" convert -q -p -f raw -O raw s.raw sm4.raw
qemu-img create -q -f qcow2 tq.qcow2 1M
expect_ok "convert -n --target-image-opts" "$MI" convert -n --target-image-opts -f raw s.raw driver=qcow2,file.filename=tq.qcow2
expect_output "... the target holds the copy" "^Images are identical.$" qemu-img compare -f raw -F qcow2 s.raw tq.qcow2
expect_fail "--target-image-opts without -n" "^miniblock-img: --target-image-opts requires use of -n flag$" \
    "$MI" convert --target-image-opts -f raw s.raw driver=qcow2,file.filename=tq.qcow2
expect_fail "--target-image-opts with -O" "^miniblock-img: --image-opts and --format are mutually exclusive$" \
    "$MI" convert -n -O qcow2 --target-image-opts -f raw s.raw driver=qcow2,file.filename=tq.qcow2

finish
