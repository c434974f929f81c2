#!/bin/sh
# The exported symbols of libminiblock.so must be exactly the checked-in
# list: the public C API, nothing of the C++ block layer.  A new public call
# is added to the list on purpose; anything else appearing is a leak.
#   check-symbols.sh LIBRARY EXPECTED-LIST
set -eu
lib=$1
expected=$2
actual=$(mktemp)
trap 'rm -f "$actual"' EXIT
# Defined, global, in the dynamic symbol table; versions and the linker's
# own symbols left out.
nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVWiu]$/ { print $3 }' | sed 's/@.*//' |
    grep -v -E '^(_init|_fini|_edata|_end|__bss_start)$' | sort -u > "$actual"
if ! diff -u "$expected" "$actual"; then
    echo "check-symbols: the exported symbols of $lib differ from $expected (- expected, + exported)" >&2
    exit 1
fi
echo "check-symbols: $(wc -l < "$actual") symbols, as listed"
