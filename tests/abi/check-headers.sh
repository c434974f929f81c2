#!/bin/sh
# Every installed header compiles on its own, in C and in C++, seeing only
# the other installed headers (copied into an include directory of their
# own, as after installation): so none needs a header that is not installed.
#   check-headers.sh CC CXX HEADER...
set -eu
cc=$1
cxx=$2
shift 2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/include/miniblock"
for h in "$@"; do cp "$h" "$dir/include/miniblock/"; done
status=0
for h in "$@"; do
    name=$(basename "$h")
    printf '#include <miniblock/%s>\n#include <miniblock/%s>\nint main(void) { return 0; }\n' \
        "$name" "$name" > "$dir/t.c"
    cp "$dir/t.c" "$dir/t.cpp"
    if ! $cc -std=c99 -Wall -Wextra -Werror -pedantic -I"$dir/include" -c "$dir/t.c" -o "$dir/t.o"; then
        echo "check-headers: $name does not compile alone as C" >&2
        status=1
    fi
    if ! $cxx -std=c++11 -Wall -Wextra -Werror -pedantic -I"$dir/include" -c "$dir/t.cpp" -o "$dir/t.o"; then
        echo "check-headers: $name does not compile alone as C++" >&2
        status=1
    fi
done
[ $status -eq 0 ] && echo "check-headers: $# headers compile alone in C and C++"
exit $status
