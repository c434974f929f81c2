#!/bin/bash
# QEMU's iotest 153 ("Test image locking") and the holder case of 182, run
# with QEMU's tools and with miniblock's substituted on each side.
#
# 153 launches a QEMU holding a qcow2 overlay (read-write, read-only, or
# read-only with force-share) and runs every utility command against it,
# with and without -U.  QEMU's system emulator is not installed here, so the
# holder is a long-running qemu-io with the same drive options (the lock
# bytes are the same: the block layer takes them, not the device).  Each
# case runs four ways:
#   QEMU holder  + QEMU opener       the reference (153.out's outcomes)
#   miniblock holder + QEMU opener
#   QEMU holder  + miniblock opener
#   miniblock holder + miniblock opener
# and must succeed or fail as the reference does, except the differences
# listed in KNOWN below, each with its reason (docs/locking.md names the
# locking ones).  The counts are printed at the end.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io
MI=$MINIBLOCK_IMG
IO=$MINIBLOCK_IO
cd "$T" || exit 1
IMG=$T/t.qcow2
BASE=$T/t.qcow2.base

source "$(dirname "$0")/iotest-cases.sh"

# Known differences: "HOLDER OPENER OPTS L CASE" globs, and why.
KNOWN=(
    "* mb ro_U - commit|stricter (docs/locking.md section 11): commit locks the base exclusively, and the holder's force-share read of its backing file keeps it out"
    "* mb ro_U * rebase|stricter (docs/locking.md section 11): rebase rewrites the image's first cluster under an exclusive lock, not under a force-share reader's feet"
    "* mb ro_U - create|stricter (docs/locking.md section 11): create takes an exclusive lock before truncating, so it does not recreate an image a force-share reader has open"
)
known_reason() {  # known_reason "HOLDER OPENER OPTS L CASE"
    local k pat
    for k in "${KNOWN[@]}"; do
        pat=${k%%|*}
        # shellcheck disable=SC2053
        read -r h o op l c <<<"$pat"
        read -r H O OP LL C <<<"$1"
        [[ $H == $h && $O == $o && $OP == $op && $LL == $l && $C == $c ]] && { echo "${k#*|}"; return 0; }
    done
    return 1
}

declare -A R
OPTS=(rw ro ro_U)
flags_of() { case $1 in rw) echo "" ;; ro) echo "-r" ;; ro_U) echo "-r -U" ;; esac; }
for holder in qemu mb; do
    for opts in "${OPTS[@]}"; do
        rm -f "$IMG" "$BASE"
        qemu-img create -q -f qcow2 "$BASE" 32M
        qemu-img create -q -f qcow2 -b "$BASE" -F qcow2 "$IMG"
        # shellcheck disable=SC2046
        if [ $holder = qemu ]; then
            hold "h$holder$opts" qemu-io $(flags_of $opts) -f qcow2 "$IMG"
            echo length >&"$HOLD_FD"; wait_for "$T/hold-h$holder$opts.out" 'MiB' || not_ok "holder $holder $opts started"
        else
            hold "h$holder$opts" "$IO" $(flags_of $opts) -f qcow2 "$IMG"
            echo length >&"$HOLD_FD"; wait_for "$T/hold-h$holder$opts.out" '\[ok\]' || not_ok "holder $holder $opts started"
        fi
        for L in "" "-U"; do
            for c in "${CASES[@]}"; do
                for opener in qemu mb; do
                    if [ $opener = qemu ]; then QI=qemu-io QM=qemu-img; else QI=$IO QM=$MI; fi
                    # 153 runs create without -U only.
                    [ "$c" = create ] && [ -n "$L" ] && continue
                    run_case "$L" "$c" >"$T/case.out" 2>&1
                    rc=$?
                    R["$holder $opener $opts ${L:--} $c"]=$([ $rc = 0 ] && echo ok || echo fail)
                    # The error that decided it, for the report.
                    R["$holder $opener $opts ${L:--} $c why"]=$(grep -m1 -E 'lock|rror|not found|invalid|nrecognized' "$T/case.out" | cut -c1-100)
                done
            done
        done
        echo quit >&"$HOLD_FD"; wait "$HOLD_PID" 2>/dev/null
    done
done

same=0 known=0 unexpected=0
for holder in qemu mb; do
    for opener in qemu mb; do
        [ $holder = qemu ] && [ $opener = qemu ] && continue
        for opts in "${OPTS[@]}"; do
            for L in - -U; do
                for c in "${CASES[@]}"; do
                    ref=${R["qemu qemu $opts $L $c"]:-}
                    [ -z "$ref" ] && continue
                    got=${R["$holder $opener $opts $L $c"]}
                    key="$holder $opener $opts $L $c"
                    if [ "$got" = "$ref" ]; then
                        same=$((same + 1))
                    elif why=$(known_reason "$key"); then
                        known=$((known + 1))
                        echo "# known difference: $key: QEMU $ref, miniblock $got: $why"
                    else
                        unexpected=$((unexpected + 1))
                        not_ok "153 case $key: QEMU $ref, got $got" "QEMU: ${R["qemu qemu $opts $L $c why"]}" "got: ${R["$key why"]}"
                    fi
                done
            done
        done
    done
done
total=$((same + known + unexpected))
echo "# iotest 153: $total comparisons: $same behave as with QEMU, $known known differences, $unexpected unexpected"
[ "$unexpected" = 0 ] && ok "iotest 153: every case behaves as with QEMU but the known differences ($same of $total the same)"

# iotest 182's first case: a second opener of an image held with
# file.locking=on fails, whoever holds and whoever opens.
qemu-img create -q -f qcow2 "$T/l.qcow2" 32M
for holder in qemu mb; do
    if [ $holder = qemu ]; then
        hold "l$holder" qemu-io --image-opts "driver=qcow2,file.filename=$T/l.qcow2,file.locking=on"
        echo length >&"$HOLD_FD"; wait_for "$T/hold-l$holder.out" 'MiB'
    else
        hold "l$holder" "$IO" --image-opts "driver=qcow2,file.filename=$T/l.qcow2,file.locking=on"
        echo length >&"$HOLD_FD"; wait_for "$T/hold-l$holder.out" '\[ok\]'
    fi
    expect_fail "182: $holder holds with file.locking=on, qemu-io opens: refused" 'Failed to get "write" lock' \
        qemu-io --image-opts -c 'read 0 512' "driver=qcow2,file.filename=$T/l.qcow2,file.locking=on"
    expect_fail "182: $holder holds with file.locking=on, miniblock-io opens: refused" 'Failed to get "write" lock' \
        "$IO" --image-opts -c 'read 0 512' "driver=qcow2,file.filename=$T/l.qcow2,file.locking=on"
    echo quit >&"$HOLD_FD"; wait "$HOLD_PID" 2>/dev/null
done
finish
