#!/bin/bash
# miniblock-img's compare, resize, measure, dd and create's qemu-img flags,
# each with qemu-img 7.2 as the oracle: the same exit status and output on
# the same images, and images that qemu-img reads back the same.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io python3
MI=$MINIBLOCK_IMG
IO=$MINIBLOCK_IO
cd "$T" || exit 1

# same_as_qemu NAME ARGS...: `miniblock-img ARGS` and `qemu-img ARGS` exit
# alike and print the same stdout (stderr with the program name aside).
same_as_qemu() {
    local name=$1; shift
    local qo qr mo mr
    qo=$(qemu-img "$@" 2>q.err); qr=$?
    mo=$("$MI" "$@" 2>m.err); mr=$?
    if [ "$qr" != "$mr" ] || [ "$qo" != "$mo" ]; then
        not_ok "$name" "qemu-img: exit $qr: $qo $(cat q.err)" "miniblock-img: exit $mr: $mo $(cat m.err)"
    else
        ok "$name (exit $mr)"
    fi
}

# --- compare ----------------------------------------------------------------------
qemu-img create -q -f raw a.raw 1M
qemu-img create -q -f raw big.raw 2M
qemu-img create -q -f qcow2 a.qcow2 1M
qemu-io -f raw -c 'write -P 7 64k 64k' a.raw >/dev/null
qemu-io -f qcow2 -c 'write -P 7 64k 64k' a.qcow2 >/dev/null
cp a.raw d.raw; qemu-io -f raw -c 'write -P 8 100k 1' d.raw >/dev/null
cp big.raw tail.raw; qemu-io -f raw -c 'write -P 1 1536k 512' tail.raw >/dev/null
qemu-img create -q -f qcow2 z.qcow2 1M; qemu-io -f qcow2 -c 'write -z 0 64k' z.qcow2 >/dev/null
qemu-img create -q -f qcow2 e.qcow2 1M
same_as_qemu "compare: identical raw and qcow2" compare a.raw a.qcow2
same_as_qemu "compare: a byte differs" compare a.raw d.raw
same_as_qemu "compare: -q" compare -q a.raw d.raw
same_as_qemu "compare: sizes differ, the tail is zero" compare -f raw a.raw big.raw
same_as_qemu "compare: sizes differ, the tail is not zero" compare -f raw a.raw tail.raw
same_as_qemu "compare -s: sizes differ" compare -s -f raw a.raw big.raw
same_as_qemu "compare -s: allocated zeroes against a hole" compare -s z.qcow2 e.qcow2
same_as_qemu "compare: allocated zeroes against a hole" compare z.qcow2 e.qcow2
same_as_qemu "compare: -f and -F" compare -f raw -F qcow2 a.raw a.qcow2
same_as_qemu "compare: a missing image (exit 2)" compare a.raw nothere.raw
expect_fail "compare: the open error" "^miniblock-img: Could not open 'nothere.raw': Could not open 'nothere.raw': No such file or directory$" \
    "$MI" compare a.raw nothere.raw

# --- resize ------------------------------------------------------------------------
for t in q m; do qemu-img create -q -f raw r$t.raw 1M; done
qemu-img resize -f raw rq.raw +1M >q.out; "$MI" resize -f raw rm.raw +1M >m.out
if diff q.out m.out >/dev/null && [ "$(stat -c %s rm.raw)" = 2097152 ]; then ok "resize +1M: $(cat m.out)"; else not_ok "resize +1M" "$(cat q.out m.out)"; fi
expect_fail "resize: shrinking needs --shrink (qemu-img's text)" '^miniblock-img: Use the --shrink option to perform a shrink operation.$' \
    "$MI" resize -f raw rm.raw 1M
expect_fail "qemu-img says the same" 'Use the --shrink option to perform a shrink operation.' qemu-img resize -f raw rq.raw 1M
expect_output "resize --shrink" '^Image resized.$' "$MI" resize -f raw --shrink rm.raw 512k
expect_output "resize -1k with --shrink" '^Image resized.$' "$MI" resize -f raw --shrink rm.raw -- -1k
expect_output "qemu-img sees the size" '"virtual-size": 523264' qemu-img info --output=json -f raw rm.raw
expect_output "resize -q" '^$' "$MI" resize -q -f raw rm.raw 1M
# Resizing takes part in locking: a running writer keeps it out, and the
# refused resize changes none of the holder's lock bytes.
hold w "$IO" -f raw rm.raw
echo length >&"$HOLD_FD"; wait_for "$T/hold-w.out" '\[ok\]'
before=$("$MI" locks rm.raw)
expect_fail "resize next to a running writer: refused" 'Failed to get "write" lock' "$MI" resize -f raw rm.raw 2M
expect_fail "qemu-img resize is refused too" 'Failed to get "write" lock' qemu-img resize -f raw rm.raw 2M
after=$("$MI" locks rm.raw)
if [ "$before" = "$after" ]; then ok "the refused resize changed no lock byte"; else not_ok "the refused resize changed no lock byte" "$before" "$after"; fi
echo quit >&"$HOLD_FD"; wait "$HOLD_PID" 2>/dev/null
# --- measure -------------------------------------------------------------------------
same_json() {
    local name=$1; shift
    qemu-img measure --output=json "$@" >q.json 2>&1; "$MI" measure --output=json "$@" >m.json 2>&1
    if python3 -c 'import json,sys; sys.exit(json.load(open("q.json")) != json.load(open("m.json")))' 2>/dev/null; then
        ok "$name"
    else
        not_ok "$name" "qemu-img: $(cat q.json)" "miniblock-img: $(cat m.json)"
    fi
}
qemu-img create -q -f qcow2 data.qcow2 8M
qemu-io -f qcow2 -c 'write -P 1 0 100k' -c 'write -P 2 3M 1M' -c 'write -z 6M 64k' data.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b data.qcow2 -F qcow2 ov.qcow2
qemu-io -f qcow2 -c 'write -P 3 7M 4k' ov.qcow2 >/dev/null
same_json "measure --size 1G (raw)" --size 1G
same_json "measure --size 1G -O qcow2" --size 1G -O qcow2
same_json "measure --size 100G -O qcow2 -o cluster_size=4k" --size 100G -O qcow2 -o cluster_size=4k
same_json "measure --size 1000 (raw rounds to sectors)" --size 1000
same_json "measure a qcow2 image -O qcow2" -O qcow2 data.qcow2
same_json "measure a qcow2 image -O qcow2 -o cluster_size=512" -O qcow2 -o cluster_size=512 data.qcow2
same_json "measure an overlay's chain -O qcow2" -O qcow2 ov.qcow2
same_json "measure a qcow2 image -O raw" -O raw data.qcow2
same_json "measure an empty qcow2 image" -O qcow2 e.qcow2
same_as_qemu "measure (human)" measure --size 1G -O qcow2
expect_fail "measure: --size with a file" '^miniblock-img: --size N cannot be used together with a filename$' "$MI" measure --size 1M a.raw
# A raw source: qemu-img asks the file system for holes; miniblock counts every
# cluster of a raw file (docs/tools/miniblock-img.md): the same keys and types.
qemu-img measure --output=json -O qcow2 a.raw >q.json; "$MI" measure --output=json -O qcow2 a.raw >m.json
if python3 -c '
import json
q, m = json.load(open("q.json")), json.load(open("m.json"))
assert sorted(q) == sorted(m) and all(type(q[k]) is type(m[k]) for k in q)
assert q["fully-allocated"] == m["fully-allocated"] and m["required"] >= q["required"]'; then
    ok "measure a raw image: qemu-img's keys and types, never less required"
else
    not_ok "measure a raw image" "$(cat q.json m.json)"
fi

# --- dd -----------------------------------------------------------------------------------
for args in "" "bs=4k" "bs=4k count=10" "bs=64k skip=1" "bs=1k count=100 skip=60"; do
    rm -f dq.raw dm.raw
    # shellcheck disable=SC2086
    qemu-img dd -f qcow2 -O raw $args if=data.qcow2 of=dq.raw 2>&1
    # shellcheck disable=SC2086
    "$MI" dd -f qcow2 -O raw $args if=data.qcow2 of=dm.raw
    if [ "$(stat -c %s dq.raw)" = "$(stat -c %s dm.raw)" ] && qemu-img compare -q -f raw -F raw dq.raw dm.raw; then
        ok "dd $args: as qemu-img's ($(stat -c %s dm.raw) bytes)"
    else
        not_ok "dd $args" "sizes $(stat -c %s dq.raw) $(stat -c %s dm.raw)"
    fi
done
rm -f dm.qcow2
"$MI" dd -f raw -O qcow2 bs=64k if=a.raw of=dm.qcow2
expect_output "dd -O qcow2: qemu-img compare" '^Images are identical.$' qemu-img compare a.raw dm.qcow2
expect_output "dd -O qcow2: qemu-img check" '^No errors were found on the image.$' qemu-img check dm.qcow2
expect_fail "dd: an unknown operand" "^miniblock-img: unrecognized operand conv=sync$" "$MI" dd if=a.raw of=x.raw conv=sync
expect_fail "dd: no input" "^miniblock-img: Must specify an input file with if=INPUT$" "$MI" dd of=x.raw

# --- rebase: -u rewrites the header as qemu-img does (byte for byte); the safe
# mode copies what the new backing file would change ------------------------------------
qemu-img create -q -f raw b1.raw 4M; qemu-img create -q -f raw b2.raw 4M
qemu-io -f raw -c 'write -P 1 0 128k' -c 'write -P 5 2M 64k' b1.raw >/dev/null
qemu-io -f raw -c 'write -P 2 64k 128k' b2.raw >/dev/null
qemu-img create -q -f qcow2 -b b1.raw -F raw rb.qcow2
qemu-io -f qcow2 -c 'write -P 9 1M 64k' rb.qcow2 >/dev/null
for mode in "-u -b b2.raw -F raw" "-u -b b2.raw" "-u -b ''" "-b b2.raw -F raw" "-b ''"; do
    cp rb.qcow2 q.qcow2; cp rb.qcow2 m.qcow2
    eval "qemu-img rebase $mode q.qcow2" >/dev/null 2>&1
    eval "'$MI' rebase $mode m.qcow2"
    if cmp -s -n 65536 q.qcow2 m.qcow2; then ok "rebase $mode: the header as qemu-img's, byte for byte"
    else not_ok "rebase $mode: the header as qemu-img's" "$(cmp -n 65536 q.qcow2 m.qcow2 2>&1)"; fi
    if [ "${mode#-u}" = "$mode" ]; then
        expect_output "rebase $mode: the guest sees the same data" '^Images are identical.$' qemu-img compare rb.qcow2 m.qcow2
        if diff <(qemu-img map --output=json q.qcow2) <(qemu-img map --output=json m.qcow2) >/dev/null; then
            ok "rebase $mode: the same ranges copied as qemu-img"
        else
            not_ok "rebase $mode: the same ranges copied as qemu-img" "$(diff <(qemu-img map --output=json q.qcow2) <(qemu-img map --output=json m.qcow2))"
        fi
    fi
    expect_output "rebase $mode: qemu-img check is clean" '^No errors were found on the image.$' qemu-img check m.qcow2
done
expect_fail "rebase -b without -F: qemu-img's text" "^miniblock-img: Could not change the backing file to 'b2.raw': backing format must be specified$" \
    "$MI" rebase -b b2.raw rb.qcow2
hold rbw "$IO" -f qcow2 rb.qcow2
echo length >&"$HOLD_FD"; wait_for "$T/hold-rbw.out" '\[ok\]'
expect_fail "rebase -u of an image in use: refused" 'Failed to get "write" lock' "$MI" rebase -u -b b2.raw -F raw rb.qcow2
echo quit >&"$HOLD_FD"; wait "$HOLD_PID" 2>/dev/null
expect_output "and the header is untouched" '"backing-filename": "b1.raw"' qemu-img info --output=json rb.qcow2

# --- create: -q, -u, 1.5M, -o help, -b without -F -------------------------------------------
same_as_qemu "create 1.5M" create -f raw c15.raw 1.5M
expect_output "1.5M is 1572864 bytes" '^1572864$' stat -c %s c15.raw
same_as_qemu "create -q" create -q -f raw cq.raw 1M
rm -f nf.qcow2
expect_fail "create -b without -F: refused as qemu-img" "^miniblock-img: nf.qcow2: Backing file specified without backing format$" \
    "$MI" create -f qcow2 -b a.raw nf.qcow2
expect_output "the detected format in the detail" '^Detected format of raw.$' bash -c "'$MI' create -f qcow2 -b a.raw nf.qcow2 2>&1; true"
expect_fail "qemu-img refuses it too" 'Backing file specified without backing format' qemu-img create -f qcow2 -b a.raw nf.qcow2
expect_fail "create -u without a size" "^miniblock-img: u.qcow2: Image creation needs a size parameter$" \
    "$MI" create -f qcow2 -u -b nothere.raw -F raw u.qcow2
expect_output "create -u: the backing file is not opened" "^Formatting 'u.qcow2', fmt=qcow2 size=1048576$" \
    "$MI" create -f qcow2 -u -b nothere.raw -F raw u.qcow2 1M
expect_output "qemu-img reads the header" '"backing-filename": "nothere.raw"' qemu-img info --output=json -U u.qcow2
"$MI" create -f raw -o help >m.txt; qemu-img create -f raw -o help | head -2 >q.txt
if diff q.txt m.txt >/dev/null; then ok "create -o help (raw): qemu-img's lines"; else not_ok "create -o help (raw)" "$(diff q.txt m.txt)"; fi
expect_output "create -o help (qcow2)" '^  cluster_size=<size>    - qcow2 cluster size$' "$MI" create -f qcow2 -o help
finish
