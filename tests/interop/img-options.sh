#!/bin/bash
# miniblock-img's option parsing, command by command, pinned against a
# recorded table (img-options.expected): which short and long options each
# subcommand accepts, which take an argument, what getopt and the command
# say about an unknown, incomplete or abbreviated option, what --output and
# the argument checks say of a bad value, and the exit status of each.
#
# Why a table: the subcommands share one option parser (tools/img-common.cpp),
# so a change to it changes every command at once; the table says exactly
# where.  Each probe gives no image (or a name that does not exist, in an
# empty directory), so nothing is opened or created.  Recorded from the
# tools as they were before the shared parser; after a deliberate change,
# regenerate with MB_REGEN=1 and review the diff line by line.
. "$(dirname "$0")/lib.sh"
EXPECTED=$MINIBLOCK_SOURCE/tests/interop/img-options.expected
export LC_ALL=C  # getopt's messages are translated

commands="amend bench check commit compare convert create dd info locks map measure rebase resize snapshot"
# Every letter a subcommand uses, and three no subcommand uses.
letters="a b c d f h i l m n o p q r s t u w B F O S T U W x z V"
# Every long option a subcommand has, each also abbreviated (getopt_long
# takes any unambiguous prefix).
longs="format force-share image-opts output backing-chain check random size repair shrink
       target-image-opts salvage break help"

# probe ARGS...: one block of the table: the command line, the exit status,
# stderr in full and stdout's first line (help texts end with the driver
# list, which differs between builds with and without modules).
# (Files named after the command: the commands are probed in parallel.)
probe() {
    local rc=0
    (cd "$T/empty" && "$MINIBLOCK_IMG" "$@" >"$T/out.$1" 2>"$T/err.$1" </dev/null) || rc=$?
    echo "\$ $*"
    echo "status $rc"
    sed 's/^/err: /' "$T/err.$1"
    head -n 1 "$T/out.$1" | sed 's/^/out: /'
}

# probe_command CMD: the table's part for one subcommand.
probe_command() {
    local c=$1 l n prefixes
    prefixes=$(for l in $longs; do
                   for n in 1 2 3; do [ ${#l} -gt $n ] && echo "${l:0:$n}"; done
               done | sort -u)
    for l in $letters; do
        probe "$c" "-$l"
        # An option that takes an argument: once more with a bad one.
        grep -q "requires an argument" "$T/err.$c" && probe "$c" "-$l" zz
    done
    for l in $prefixes; do probe "$c" "--$l"; done
    for l in $longs; do
        probe "$c" "--$l"
        probe "$c" "--$l=zz"
    done
    probe "$c" --output=json
}

mkdir "$T/empty"
for c in $commands; do probe_command "$c" >"$T/table.$c" & done
wait
for c in $commands; do cat "$T/table.$c"; done >"$T/table"
if [ "${MB_REGEN:-}" = 1 ]; then
    cp "$T/table" "$EXPECTED"
    echo "# wrote $EXPECTED"
fi
if diff -u "$EXPECTED" "$T/table" >"$T/diff"; then
    ok "every subcommand's options as recorded ($(grep -c '^\$ ' "$T/table") command lines)"
else
    not_ok "the subcommands' options differ from img-options.expected" "$(head -n 80 "$T/diff")"
fi
[ -z "$(ls -A "$T/empty")" ] && ok "no probe created a file" || not_ok "a probe created a file" "$(ls -A "$T/empty")"
finish
