#!/bin/sh
# Runs the example embedder on a fresh 1 MiB image, checks what it printed
# and that docs/api.md quotes embedder.c verbatim.
#   run-embedder.sh EMBEDDER EMBEDDER.C API.MD
set -eu
img=$(mktemp /var/tmp/mb-embedder.XXXXXX.img)
out=$(mktemp)
trap 'rm -f "$img" "$out"' EXIT
truncate -s 1M "$img"
"$1" "$img" > "$out"
cat "$out"
grep -q '^second open refused as expected: 1 holder(s), first pid [0-9][0-9]*$' "$out"
grep -qx '8 writes completed' "$out"
grep -qx "block 3 starts with 'd'" "$out"
# The doc's code block is the file itself.
awk '/^```c embedder.c$/ { on = 1; next } /^```$/ { on = 0 } on' "$3" | diff -u "$2" - ||
    { echo "run-embedder: docs/api.md does not quote examples/embedder.c verbatim" >&2; exit 1; }
