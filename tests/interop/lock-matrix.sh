#!/bin/bash
# The lock matrix of the main job, cell by cell, against the DESIGN table
# worked out by hand (lock-matrix.expected): 8 holders x (8 openers + 3 real
# QEMU third parties).
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io
got=$(bash "$MINIBLOCK_SOURCE/scripts/lock-matrix.sh" --cells "$MINIBLOCK_BUILD")
while IFS= read -r want; do
    cell=${want% | *}
    line=$(grep -F -- "$cell | " <<<"$got" | head -1)
    if [ "$line" = "$want" ]; then ok "$want"; else not_ok "$cell" "want: $want" "got:  $line"; fi
done <"$(dirname "$0")/lock-matrix.expected"
finish
