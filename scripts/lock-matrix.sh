#!/bin/bash
# The lock matrix: one raw image, a holder process (row) in each lock mode,
# and a second process (column) trying every mode, then real QEMU tools as
# third parties.  Prints who got in and, for each refusal, its message.
#
#   scripts/lock-matrix.sh [BUILD_DIR]          print the matrix
#   scripts/lock-matrix.sh --cells [BUILD_DIR]  one line per cell (for tests)
set -u
cells=0
if [ "${1:-}" = "--cells" ]; then cells=1; shift; fi
BUILD=${1:-build}
IO=$BUILD/tools/miniblock-io
IMG_TOOL=$BUILD/tools/miniblock-img
for t in "$IO" "$IMG_TOOL" qemu-io qemu-img; do
    command -v "$t" >/dev/null || { echo "lock-matrix: $t not found (build first; run scripts/setup.sh)" >&2; exit 1; }
done

T=$(mktemp -d /tmp/mb-matrix.XXXXXX)
trap 'rm -rf "$T"' EXIT
IMG=$T/disk.img
"$IMG_TOOL" create "$IMG" 1M >/dev/null

MODES="off shared auto exclusive"
OPENS=()
for m in $MODES; do OPENS+=("$m:ro" "$m:rw"); done
flags() {  # mode:access -> miniblock-io flags
    local m=${1%:*} a=${1#*:}
    echo "-f raw -l $m $([ "$a" = ro ] && echo -r)"
}
label() { local m=${1%:*} a=${1#*:}; printf '%s %s' "$m" "$([ "$a" = ro ] && echo read-only || echo read-write)"; }

declare -A MSG_NUM
MSGS=()
note() {  # a refusal's first line -> its footnote number, in $NOTE
    local m=$1
    if [ -z "${MSG_NUM[$m]:-}" ]; then MSGS+=("$m"); MSG_NUM[$m]=${#MSGS[@]}; fi
    NOTE=${MSG_NUM[$m]}
}

THIRD=("qemu-io" "qemu-io -r" "qemu-img info")
third_cmd() {
    case $1 in
    "qemu-io") qemu-io -f raw -c "read 0 512" "$IMG" ;;
    "qemu-io -r") qemu-io -f raw -r -c "read 0 512" "$IMG" ;;
    "qemu-img info") qemu-img info -f raw "$IMG" ;;
    esac
}

# Pulls the first line after "prog: ...: " of a refusal.
first_line() { grep -m1 -E 'Failed to|Could not|error' | sed -E 's/^.*(Failed to get [^"]*"[^"]*" lock).*$/\1/'; }

declare -A RESULT
for holder in "${OPENS[@]}"; do
    # shellcheck disable=SC2046
    coproc H { "$IO" $(flags "$holder") "$IMG" 2>&1; }
    echo length >&"${H[1]}"
    ready=0
    while read -r -t 10 line <&"${H[0]}"; do [ "$line" = "[ok]" ] && { ready=1; break; }; done
    [ $ready = 1 ] || { echo "lock-matrix: the holder $(label "$holder") did not open" >&2; exit 1; }
    for opener in "${OPENS[@]}"; do
        # shellcheck disable=SC2046
        if out=$("$IO" $(flags "$opener") -c length "$IMG" 2>&1); then
            RESULT[$holder,$opener]=yes
        else
            note "$(first_line <<<"$out")"
            RESULT[$holder,$opener]="no[$NOTE]"
        fi
    done
    for t in "${THIRD[@]}"; do
        if out=$(third_cmd "$t" 2>&1); then RESULT[$holder,$t]=yes
        else note "$(first_line <<<"$out")"; RESULT[$holder,$t]="no[$NOTE]"; fi
    done
    echo quit >&"${H[1]}"
    wait "$H_PID" 2>/dev/null
done

if [ $cells = 1 ]; then
    for holder in "${OPENS[@]}"; do
        for opener in "${OPENS[@]}" "${THIRD[@]}"; do
            r=${RESULT[$holder,$opener]}
            echo "$holder | $opener | ${r%%[*}"
        done
    done
    exit 0
fi

echo "Who gets in: a miniblock-io holds one raw image open (row); a second process tries (column)."
echo "yes = opened; no[N] = refused with message N below.  Columns: lock mode, then ro = read-only, rw = read-write."
echo
printf '%-22s|' "holder \\ opener"
for o in "${OPENS[@]}"; do o=${o/exclusive/excl}; printf ' %-9s' "${o/:/\/}"; done
printf '|'
for t in "${THIRD[@]}"; do printf ' %-14s' "$t"; done
echo
printf '%s\n' "$(printf -- '-%.0s' $(seq 1 150))"
for holder in "${OPENS[@]}"; do
    printf '%-22s|' "$(label "$holder")"
    for o in "${OPENS[@]}"; do printf ' %-9s' "${RESULT[$holder,$o]}"; done
    printf '|'
    for t in "${THIRD[@]}"; do printf ' %-14s' "${RESULT[$holder,$t]}"; done
    echo
done
echo
echo "Refusals (each followed by 'Is another process using the image [PATH]?' and the holder's pid, program and bytes):"
for i in "${!MSGS[@]}"; do echo "  [$((i + 1))] ${MSGS[$i]}"; done
echo
echo "An example refusal in full (holder: auto read-write; opener: exclusive read-only):"
coproc H { "$IO" -f raw "$IMG" 2>&1; }
echo length >&"${H[1]}"
while read -r -t 10 line <&"${H[0]}"; do [ "$line" = "[ok]" ] && break; done
"$IO" -f raw -l exclusive -r -c length "$IMG" 2>&1 | sed "s|$T/||; s/^/    /"
echo quit >&"${H[1]}"
wait "$H_PID" 2>/dev/null
