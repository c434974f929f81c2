#!/bin/bash
# The parts of QEMU's iotests 153 and 182 that need a running QEMU: the
# system emulator (qemu-system-x86_64, no guest: -machine none, or a pc
# stopped with -S when a device must attach), driven over QMP on a unix
# socket (tests/interop/qmp.py), killed by lib.sh's trap whatever happens.
#
#   153: QEMU holds a qcow2 overlay with -drive (read-write, read-only,
#        read-only with force-share) and every utility command of 153 runs
#        beside it, with and without -U: QEMU's tools (the reference) and
#        miniblock's must succeed or fail alike.
#   182: a second opener of an image QEMU holds with file.locking=on fails
#        (a second QEMU, qemu-io, miniblock-io), and the reverse: a
#        second QEMU cannot open what miniblock-io (or qemu-io) holds; then
#        the reopen case (blockdev-add of a file node, blockdev-snapshot-sync
#        reopening it read-only, blockdev-add again, device_add) with QEMU's
#        and miniblock's tools opening the image at every step.
# Outcomes are compared; a difference is either known (listed with its
# reason) or a failure.  The counts are printed at the end.
source "$(dirname "$0")/lib.sh"
need qemu-img qemu-io qemu-system-x86_64
MI=$MINIBLOCK_IMG
IO=$MINIBLOCK_IO
QMP="/usr/bin/python3 $(cd "$(dirname "$0")" && pwd)/qmp.py"
cd "$T" || exit 1
IMG=$T/t.qcow2
BASE=$T/t.qcow2.base
SAME=0 KNOWN_N=0 UNEXPECTED=0
declare -A R

# start_qemu NAME ARGS...: a QEMU with QMP on $T/NAME.qmp, ready when QMP answers.
start_qemu() {
    local name=$1; shift
    qemu-system-x86_64 -nodefaults -display none -qmp "unix:$T/$name.qmp,server=on,wait=off" "$@" \
        >"$T/$name.log" 2>&1 &
    QEMU_PID=$!
    BG_PIDS+=("$QEMU_PID")
    QEMU_SOCK=$T/$name.qmp
    if ! $QMP "$QEMU_SOCK" query-status >/dev/null; then
        not_ok "QEMU $name started" "$(cat "$T/$name.log")"
        return 1
    fi
}
stop_qemu() {  # quit over QMP; killed if it has not exited within 5 s
    local i
    $QMP "$QEMU_SOCK" quit >/dev/null 2>&1
    for i in $(seq 50); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.1; done
    kill "$QEMU_PID" 2>/dev/null
    wait "$QEMU_PID" 2>/dev/null
}
qmp() { $QMP "$QEMU_SOCK" "$@"; }

# compare KEY REASON-IF-DIFFERENT QEMU-CMD MB-CMD: both run now (QEMU's
# first); the same outcome counts as same, else the difference is known
# when a reason is given, unexpected (a failure) when not.
compare() {
    local key=$1 reason=$2 q=$3 m=$4 qr mr
    eval "$q" >"$T/cmp.q" 2>&1 </dev/null; qr=$?
    eval "$m" >"$T/cmp.m" 2>&1 </dev/null; mr=$?
    [ $qr = 0 ] && qr=ok || qr=fail
    [ $mr = 0 ] && mr=ok || mr=fail
    if [ $qr = $mr ]; then
        SAME=$((SAME + 1))
    elif [ -n "$reason" ]; then
        KNOWN_N=$((KNOWN_N + 1))
        echo "# known difference: $key: QEMU $qr, miniblock $mr: $reason"
    else
        UNEXPECTED=$((UNEXPECTED + 1))
        not_ok "$key: QEMU $qr, miniblock $mr" "QEMU: $(head -c 300 "$T/cmp.q")" "miniblock: $(head -c 300 "$T/cmp.m")"
    fi
}

# --- 153: a QEMU process holds the overlay ----------------------------------------
# The utility commands of 153, as tests/interop/iotest-153.sh runs them.
source "$(dirname "$0")/iotest-cases.sh"
# Known differences ("OPTS L CASE" globs) and why: the same as with a
# qemu-io holder (tests/interop/iotest-153.sh).
KNOWN=(
    "ro_U - commit|stricter (docs/locking.md section 11): commit locks the base exclusively, and the holder's force-share read of its backing file keeps it out"
    "ro_U * rebase|stricter (docs/locking.md section 11): rebase rewrites the image's first cluster under an exclusive lock, not under a force-share reader's feet"
    "ro_U - create|stricter (docs/locking.md section 11): create takes an exclusive lock before truncating, so it does not recreate an image a force-share reader has open"
)
known_153() {  # known_153 OPTS L CASE
    local k op l c
    for k in "${KNOWN[@]}"; do
        read -r op l c <<<"${k%%|*}"
        # shellcheck disable=SC2053
        [[ $1 == $op && $2 == $l && $3 == $c ]] && { echo "${k#*|}"; return 0; }
    done
    return 0
}
case_cmd() { echo "QI='$1' QM='$2' run_case '$3' '$4'"; }

declare -A DRIVE=([rw]="" [ro]=",read-only=on" [ro_U]=",read-only=on,force-share=on")
for opts in rw ro ro_U; do
    rm -f "$IMG" "$BASE"
    qemu-img create -q -f qcow2 "$BASE" 32M
    qemu-img create -q -f qcow2 -b "$BASE" -F qcow2 "$IMG"
    start_qemu "h153$opts" -machine none -drive "if=none,id=drive0,file=$IMG,format=qcow2${DRIVE[$opts]}" || continue
    for L in "" "-U"; do
        for c in "${CASES[@]}"; do
            # 153 creates only without -U (create has no -U).
            [ "$c" = create ] && [ -n "$L" ] && continue
            compare "153 qemu-system holds ($opts), ${L:--} $c" "$(known_153 "$opts" "${L:--}" "$c")" \
                "$(case_cmd qemu-io qemu-img "$L" "$c")" "$(case_cmd "$IO" "$MI" "$L" "$c")"
        done
    done
    stop_qemu
done

# --- 153: "Launching another QEMU" ------------------------------------------------
# Each holder (a QEMU, or miniblock-io with the same flags) beside a second
# QEMU opening the image read-write, read-only, read-only with force-share;
# and beside a QEMU holder, a second QEMU (the reference) and miniblock-io
# as the second opener.
declare -A IOFLAGS=([rw]="" [ro]="-r" [ro_U]="-r -U")
another_qemu() {  # another_qemu OPTS2: a second QEMU that quits at once (exit 1 if refused)
    echo quit | timeout 20 qemu-system-x86_64 -nodefaults -display none -machine none -monitor stdio \
        -drive "file=$IMG,if=none,format=qcow2${DRIVE[$1]}" >/dev/null
}
rm -f "$IMG" "$BASE"
qemu-img create -q -f qcow2 "$BASE" 32M
qemu-img create -q -f qcow2 -b "$BASE" -F qcow2 "$IMG"
for opts1 in rw ro ro_U; do
    start_qemu "a$opts1" -machine none -drive "if=none,id=drive0,file=$IMG,format=qcow2${DRIVE[$opts1]}" || continue
    for opts2 in rw ro ro_U; do
        another_qemu "$opts2" 2>/dev/null && R["q $opts1 $opts2"]=ok || R["q $opts1 $opts2"]=fail
        # shellcheck disable=SC2086
        compare "153 another opener: QEMU holds ($opts1), QEMU / miniblock-io opens ($opts2)" "" \
            "another_qemu $opts2" "$IO ${IOFLAGS[$opts2]} -f qcow2 -c 'read 0 512' $IMG"
    done
    stop_qemu
    # shellcheck disable=SC2086
    hold "a$opts1" "$IO" ${IOFLAGS[$opts1]} -f qcow2 "$IMG"
    echo length >&"$HOLD_FD"; wait_for "$T/hold-a$opts1.out" '\[ok\]' || not_ok "miniblock-io holds ($opts1)"
    for opts2 in rw ro ro_U; do
        compare "153 another QEMU: QEMU / miniblock-io holds ($opts1), QEMU opens ($opts2)" "" \
            "[ ${R["q $opts1 $opts2"]} = ok ]" "another_qemu $opts2"
    done
    echo quit >&"$HOLD_FD"; wait "$HOLD_PID" 2>/dev/null
done

# --- 153: active commit to an intermediate layer while the base is in use ----------
# t <- a (a QEMU device uses a), t <- b <- c: committing c into b needs no
# lock the QEMU forbids: qemu-img's and miniblock-img's commit both work.
for tool in qemu mb; do
    rm -f "$T"/t.img "$T"/t.img.[abc]
    qemu-img create -q -f qcow2 "$T/t.img" 32M
    qemu-img create -q -f qcow2 -b "$T/t.img" -F qcow2 "$T/t.img.a"
    qemu-img create -q -f qcow2 -b "$T/t.img" -F qcow2 "$T/t.img.b"
    qemu-img create -q -f qcow2 -b "$T/t.img.b" -F qcow2 "$T/t.img.c"
    qemu-io -c 'write -P 0x5c 0 64k' "$T/t.img.c" >/dev/null
    start_qemu "commit$tool" -machine pc -S -drive "format=qcow2,file=$T/t.img.a,id=drive0,if=none" \
        -device virtio-blk-pci,drive=drive0 || continue
    if [ $tool = qemu ]; then
        expect_ok "153: qemu-img commit -b b c beside a QEMU using a" qemu-img commit -b "$T/t.img.b" "$T/t.img.c"
    else
        expect_ok "153: miniblock-img commit -b b c beside a QEMU using a" "$MI" commit -b "$T/t.img.b" "$T/t.img.c"
    fi
    expect_ok "153: ... the data reached b ($tool)" qemu-io -U -r -f qcow2 -c 'read -P 0x5c 0 64k' "$T/t.img.b"
    stop_qemu
done

# --- 153: drive_add / drive_del in a running QEMU ----------------------------------
# The image used by drives a QEMU adds and deletes at run time (HMP through
# QMP); at each step QEMU's tools and miniblock's must agree.
hmp() { qmp human-monitor-command "{\"command-line\": \"$1\"}" >/dev/null; }
rm -f "$T"/t.img*
qemu-img create -q -f qcow2 "$T/t.img" 32M
start_qemu drives -machine none
hmp "drive_add 0 if=none,id=d0,file=$T/t.img"
compare "153 drive d0 added: writer" "" "qemu-io -c 'write 0 512' $T/t.img" "$IO -c 'write 0 512' $T/t.img"
compare "153 drive d0 added: overlay created over it (allowed while the guest runs)" "" \
    "rm -f $T/t.img.o; qemu-img create -f qcow2 -b $T/t.img -F qcow2 $T/t.img.o" \
    "rm -f $T/t.img.o; $MI create -f qcow2 -b $T/t.img -F qcow2 $T/t.img.o"
hmp "drive_del d0"
compare "153 drive d0 deleted (closing unlocks): writer" "" "qemu-io -c 'write 0 512' $T/t.img" \
    "$IO -c 'write 0 512' $T/t.img"
hmp "drive_add 0 if=none,id=d0,file=$T/t.img,readonly=on"
hmp "drive_add 0 if=none,id=d1,file=$T/t.img,readonly=on"
compare "153 two read-only drives: info" "" "qemu-img info $T/t.img" "$MI info $T/t.img"
hmp "drive_del d0"
compare "153 one read-only drive left: writer" "" "qemu-io -c 'write 0 512' $T/t.img" "$IO -c 'write 0 512' $T/t.img"
hmp "drive_del d1"
compare "153 both closed: writer" "" "qemu-io -c 'write 0 512' $T/t.img" "$IO -c 'write 0 512' $T/t.img"
stop_qemu

# --- 182: a second opener of an image held with file.locking=on -------------------
qemu-img create -q -f qcow2 "$T/l.qcow2" 32M
LDRIVE="file=$T/l.qcow2,if=none,id=drive0,file.locking=on"
# 182's second QEMU: fails at startup (its exit status), or quits at once.
second_qemu_out() {
    echo quit | timeout 20 qemu-system-x86_64 -nodefaults -display none -machine pc -S -monitor stdio \
        -drive "$LDRIVE" -device virtio-blk-pci,drive=drive0 2>&1 | tee "$T/second.out"
    return "${PIPESTATUS[1]}"
}
start_qemu h182 -machine pc -S -drive "$LDRIVE" -device virtio-blk-pci,drive=drive0
expect_fail "182: a second QEMU cannot open what QEMU holds (182.out's text)" \
    "^qemu-system-x86_64: -drive $LDRIVE: Failed to get \"write\" lock$" second_qemu_out
compare "182 qemu-system holds, second opener (qemu-io / miniblock-io)" "" \
    "qemu-io --image-opts -c 'read 0 512' driver=qcow2,file.filename=$T/l.qcow2,file.locking=on" \
    "$IO --image-opts -c 'read 0 512' driver=qcow2,file.filename=$T/l.qcow2,file.locking=on"
compare "182 qemu-system holds, read-only -U opener" "" \
    "qemu-io -r -U -c 'read 0 512' $T/l.qcow2" "$IO -r -U -c 'read 0 512' $T/l.qcow2"
merr=$("$IO" --image-opts -c 'read 0 512' "driver=qcow2,file.filename=$T/l.qcow2,file.locking=on" 2>&1 | head -2)
qerr=$(qemu-io --image-opts -c 'read 0 512' "driver=qcow2,file.filename=$T/l.qcow2,file.locking=on" 2>&1 | head -2)
[ "${merr#*: }" != "$merr" ] && grep -q 'Failed to get "write" lock' <<<"$merr" &&
    grep -q "Is another process using the image \[$T/l.qcow2\]?" <<<"$merr" &&
    ok "182: miniblock-io's refusal names the lock and the image as qemu-io's" ||
    not_ok "182: miniblock-io's refusal names the lock and the image as qemu-io's" "ours: $merr" "qemu-io: $qerr"
stop_qemu

# The reverse: miniblock-io (or, as the reference, qemu-io) holds; a QEMU opens.
for holder in qemu mb; do
    if [ $holder = qemu ]; then
        hold "r$holder" qemu-io --image-opts "driver=qcow2,file.filename=$T/l.qcow2,file.locking=on"
        echo length >&"$HOLD_FD"; wait_for "$T/hold-r$holder.out" 'MiB' || not_ok "qemu-io holds"
    else
        hold "r$holder" "$IO" --image-opts "driver=qcow2,file.filename=$T/l.qcow2,file.locking=on"
        echo length >&"$HOLD_FD"; wait_for "$T/hold-r$holder.out" '\[ok\]' || not_ok "miniblock-io holds"
    fi
    expect_fail "182: a QEMU cannot open what $holder holds (182.out's text)" \
        "^qemu-system-x86_64: -drive $LDRIVE: Failed to get \"write\" lock$" second_qemu_out
    expect_output "182: ... with the hint" "^Is another process using the image \[$T/l.qcow2\]\?$" cat "$T/second.out"
    # A QEMU that only reads, sharing writes (read-only=on,force-share=on), coexists.
    start_qemu "r$holder" -machine none -drive "file=$T/l.qcow2,if=none,id=d0,read-only=on,force-share=on" &&
        ok "182: a force-share QEMU reader opens beside $holder" && stop_qemu
    echo quit >&"$HOLD_FD"; wait "$HOLD_PID" 2>/dev/null
done

# --- 182: reopen must not unshare what it should not -----------------------------
# At each step QEMU's tools and miniblock's open the image and must agree.
openers() {  # openers STEP
    compare "182 reopen, $1: writer" "" "qemu-io -f qcow2 -c 'read 0 512' $T/l.qcow2" "$IO -f qcow2 -c 'read 0 512' $T/l.qcow2"
    compare "182 reopen, $1: reader" "" "qemu-io -f qcow2 -r -c 'read 0 512' $T/l.qcow2" \
        "$IO -f qcow2 -r -c 'read 0 512' $T/l.qcow2"
    compare "182 reopen, $1: -U reader" "" "qemu-io -f qcow2 -r -U -c 'read 0 512' $T/l.qcow2" \
        "$IO -f qcow2 -r -U -c 'read 0 512' $T/l.qcow2"
    compare "182 reopen, $1: info" "" "qemu-img info $T/l.qcow2" "$MI info $T/l.qcow2"
}
rm -f "$T/l.qcow2.overlay"
start_qemu reopen -machine pc -S
openers "no node"
expect_ok "182: blockdev-add of the file node" \
    qmp blockdev-add "{\"node-name\": \"node0\", \"driver\": \"file\", \"filename\": \"$T/l.qcow2\", \"locking\": \"on\"}"
openers "file node added"
expect_ok "182: blockdev-snapshot-sync (reopens node0 read-only)" \
    qmp blockdev-snapshot-sync "{\"node-name\": \"node0\", \"snapshot-file\": \"$T/l.qcow2.overlay\", \"snapshot-node-name\": \"node1\", \"format\": \"qcow2\"}"
openers "after the snapshot"
expect_ok "182: blockdev-add of the same file again" \
    qmp blockdev-add "{\"node-name\": \"node2\", \"driver\": \"file\", \"filename\": \"$T/l.qcow2\", \"locking\": \"on\"}"
expect_ok "182: device_add over it (nothing was unshared)" qmp device_add '{"driver": "virtio-blk-pci", "drive": "node2", "id": "vd0"}'
openers "with a device"
stop_qemu
# And with miniblock as the other user: a miniblock writer keeps the
# device out, as a qemu-io writer does.
for holder in qemu mb; do
    if [ $holder = qemu ]; then
        hold "w$holder" qemu-io -f raw "$T/l.qcow2"
        echo length >&"$HOLD_FD"; wait_for "$T/hold-w$holder.out" 'iB' || not_ok "qemu-io holds"
    else
        hold "w$holder" "$IO" -f raw "$T/l.qcow2"
        echo length >&"$HOLD_FD"; wait_for "$T/hold-w$holder.out" '\[ok\]' || not_ok "miniblock-io holds"
    fi
    start_qemu "w$holder" -machine pc -S
    # The outcomes are compared; the texts may differ (a raw writer
    # forbids other writers under miniblock, not under qemu-io: QEMU then
    # names another byte first).
    qmp blockdev-add "{\"node-name\": \"node0\", \"driver\": \"file\", \"filename\": \"$T/l.qcow2\", \"locking\": \"on\"}" \
        >"$T/add.$holder.out" 2>&1
    echo "rc=$?" >"$T/add.$holder"
    qmp device_add '{"driver": "virtio-blk-pci", "drive": "node0", "id": "vd0"}' >"$T/dev.$holder.out" 2>&1
    echo "rc=$?" >"$T/dev.$holder"
    stop_qemu
    echo quit >&"$HOLD_FD"; wait "$HOLD_PID" 2>/dev/null
done
cmp -s "$T/add.qemu" "$T/add.mb" && SAME=$((SAME + 1)) ||
    { UNEXPECTED=$((UNEXPECTED + 1)); not_ok "182: blockdev-add beside a writer" "qemu-io: $(cat "$T/add.qemu"*)" "miniblock: $(cat "$T/add.mb"*)"; }
if cmp -s "$T/dev.qemu" "$T/dev.mb"; then
    SAME=$((SAME + 1))
else
    UNEXPECTED=$((UNEXPECTED + 1))
    not_ok "182: device_add beside a writer" "qemu-io: $(cat "$T/dev.qemu"*)" "miniblock: $(cat "$T/dev.mb"*)"
fi

total=$((SAME + KNOWN_N + UNEXPECTED))
echo "# iotests 153/182 with qemu-system: $total comparisons: $SAME the same, $KNOWN_N known differences, $UNEXPECTED unexpected"
[ "$UNEXPECTED" = 0 ] && ok "153/182 with qemu-system: no unexpected difference ($SAME of $total the same)"
finish
