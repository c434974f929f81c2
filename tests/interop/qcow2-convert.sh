#!/bin/bash
# miniblock-img convert, driven by block status: every result is compared
# with qemu-img compare; what was read is counted with strace; the options
# (-m, -W, -S, -n, -B) and their messages.
source "$(dirname "$0")/lib.sh"
need qemu-img qemu-io strace python3
cd "$T"

# A 64 MiB qcow2, 6 MiB of it allocated: data, a zeroed range (-z), and a
# range of zeroes written as data (allocated, but all zero).
qemu-img create -q -f qcow2 src.qcow2 64M
qemu-io -c 'write -P 0x11 0 1M' -c 'write -P 0x22 5M 2M' -c 'write -z 20M 1M' -c 'write -P 0 30M 1M' \
    -c 'write -P 0x33 62M 1M' src.qcow2 >/dev/null

# Bytes the command reads with pread64/preadv (from any file).
read_bytes() {
    strace -f -qq -e trace=pread64,preadv -o reads.strace "$@" >/dev/null 2>&1 || return 1
    awk '{ n = $NF; if (n ~ /^[0-9]+$/) s += n } END { print s + 0 }' reads.strace
}
rb=$(read_bytes "$MINIBLOCK_IMG" convert -O raw src.qcow2 out.raw)
expect_ok "convert to raw: equal" qemu-img compare -f qcow2 -F raw src.qcow2 out.raw
# 4 MiB of data and the zero-data MiB, plus metadata: not the 64 MiB.
[ "$rb" -le $(((5 << 20) + (1 << 20))) ] && ok "convert reads only allocated ranges ($rb bytes of 64 MiB)" ||
    not_ok "convert reads only allocated ranges" "$rb bytes read"
alloc=$(($(stat -c %b out.raw) * 512))
[ "$alloc" -le $(((4 << 20) + (512 << 10))) ] && ok "raw target sparse: $alloc bytes allocated (4 MiB of data)" ||
    not_ok "raw target sparse" "$alloc bytes allocated"
"$MINIBLOCK_IMG" convert -S 0 -O raw src.qcow2 full.raw
expect_ok "convert -S 0: equal" qemu-img compare -f qcow2 -F raw src.qcow2 full.raw
alloc=$(($(stat -c %b full.raw) * 512))
[ "$alloc" -ge $((64 << 20)) ] && ok "convert -S 0: fully allocated" || not_ok "convert -S 0: fully allocated" "$alloc bytes"

for opts in "-m 1" "-m 16" "-m 3 -W" "-S 64k"; do
    rm -f o.qcow2
    # shellcheck disable=SC2086
    expect_ok "convert $opts -O qcow2" "$MINIBLOCK_IMG" convert $opts -O qcow2 src.qcow2 o.qcow2
    expect_output "convert $opts: qemu-img check clean" "No errors were found" qemu-img check o.qcow2
    expect_ok "convert $opts: equal" qemu-img compare src.qcow2 o.qcow2
done

# -n: an existing target full of 0xff: zero ranges must be written too.
qemu-img create -q -f raw old.raw 64M
qemu-io -f raw -c 'write -P 0xff 0 64M' old.raw >/dev/null
expect_ok "convert -n into a used target" "$MINIBLOCK_IMG" convert -n -O raw src.qcow2 old.raw
expect_ok "convert -n: equal" qemu-img compare -f qcow2 -F raw src.qcow2 old.raw
qemu-img create -q -f raw small.raw 1M
expect_fail "convert -n: target too small" \
    "^miniblock-img: Target 'small.raw' is smaller than the source \(1048576 < 67108864 bytes\)$" \
    "$MINIBLOCK_IMG" convert -n -O raw src.qcow2 small.raw

# -B: an overlay converted over the same backing file keeps only what the
# overlay holds, zeroed ranges included.
qemu-img create -q -f raw base.raw 64M
qemu-io -f raw -c 'write -P 0x44 0 64M' base.raw >/dev/null
qemu-img create -q -f qcow2 -b base.raw -F raw ov.qcow2
qemu-io -c 'write -P 0x55 1M 1M' -c 'write -z 8M 1M' -c 'write -P 0x66 40M 64k' ov.qcow2 >/dev/null
expect_ok "convert -B" "$MINIBLOCK_IMG" convert -O qcow2 -B base.raw ov.qcow2 ovc.qcow2
expect_output "convert -B: qemu-img check clean" "No errors were found" qemu-img check ovc.qcow2
expect_ok "convert -B: equal" qemu-img compare ov.qcow2 ovc.qcow2
top=$(qemu-img map --output=json ovc.qcow2 |
    python3 -c 'import json,sys; print(sum(e["length"] for e in json.load(sys.stdin) if e["depth"] == 0))')
[ "$top" = $(((1 << 20) + (1 << 20) + (64 << 10))) ] && ok "convert -B: only the overlay's ranges in the target" ||
    not_ok "convert -B: only the overlay's ranges" "$top bytes at depth 0"
expect_output "convert -B: qcow2 target records the backing file" "backing file: base.raw" qemu-img info ovc.qcow2

# -c: compressed clusters that qemu-img reads back bit-exact: compressible
# text, incompressible random data (written as normal clusters), zeroes and
# a last partial cluster; then overwritten in part (shared compressed
# clusters lose references one by one).
python3 - <<'PY'
import os, random
r = random.Random(9)
text = b"".join(b"line %d of a compressible source, %s\n" % (i, b"abc" * (i % 7)) for i in range(120000))
d = bytearray(8 << 20)
d[0:len(text[:3 << 20])] = text[:3 << 20]
d[4 << 20:5 << 20] = bytes(r.getrandbits(8) for _ in range(1 << 20))
d[6 << 20:] = text[:(2 << 20)]
d += text[:1000]
open("c.raw", "wb").write(d)
PY
for cs in 4k 64k 2M; do
    for compat in 1.1 0.10; do
        rm -f c.qcow2
        expect_ok "convert -c, cluster $cs, compat $compat" \
            "$MINIBLOCK_IMG" convert -c -f raw -O qcow2 -o cluster_size=$cs,compat=$compat c.raw c.qcow2
        expect_output "convert -c, cluster $cs, compat $compat: qemu-img check clean, compressed clusters" \
            "[1-9][0-9.]*% compressed clusters" qemu-img check c.qcow2
        expect_ok "convert -c, cluster $cs, compat $compat: qemu-img reads it bit-exact" \
            qemu-img compare -f raw -F qcow2 c.raw c.qcow2
    done
    cp c.raw cw.raw
    w=(-c 'write -P 0x71 100k 10k' -c 'write -P 0x72 3M 1M' -c 'write -z 6500k 64k' -c 'write -P 0x73 8M 1000')
    "$MINIBLOCK_IO" "${w[@]}" c.qcow2 >/dev/null
    qemu-io -f raw "${w[@]}" cw.raw >/dev/null
    expect_output "convert -c, cluster $cs: overwritten, qemu-img check clean" "No errors were found" qemu-img check c.qcow2
    expect_ok "convert -c, cluster $cs: overwritten, equal" qemu-img compare -f raw -F qcow2 cw.raw c.qcow2
    # check's cluster counts are qemu-img's: compressed clusters count as
    # fragmented, beside normal ones (the random megabyte, the overwrites).
    want=$(qemu-img check --output=json c.qcow2 | grep -E '"(allocated|fragmented|compressed)-clusters"' | sort | tr -d ' ,\n')
    got=$("$MINIBLOCK_IMG" check --output=json c.qcow2 | grep -E '"(allocated|fragmented|compressed)-clusters"' | sort | tr -d ' ,\n')
    if [[ "$want" == *fragmented* ]] && [ "$want" = "$got" ]; then
        ok "convert -c, cluster $cs: check counts allocated, fragmented and compressed clusters as qemu-img ($want)"
    else
        not_ok "convert -c, cluster $cs: check counts allocated, fragmented and compressed clusters as qemu-img" \
            "qemu-img: $want" "miniblock-img: $got"
    fi
    want=$(qemu-img check c.qcow2 | grep '% fragmented') || want="(qemu-img printed no summary line)"
    expect_text "convert -c, cluster $cs: check's summary line is qemu-img's" "$want" "$MINIBLOCK_IMG" check c.qcow2
done
expect_fail "convert -c to raw" "^miniblock-img: Compression not supported for file format 'raw'$" \
    "$MINIBLOCK_IMG" convert -c -O raw src.qcow2 x.raw

expect_fail "convert -m 17" \
    "^miniblock-img: Invalid number of coroutines '17'. Allowed number of coroutines is between 1 and 16$" \
    "$MINIBLOCK_IMG" convert -m 17 src.qcow2 x.raw
expect_fail "convert -S 1000" \
    "^miniblock-img: Invalid buffer size for sparse output specified: '1000' \(a multiple of 512 up to 2M\)$" \
    "$MINIBLOCK_IMG" convert -S 1000 src.qcow2 x.raw
expect_fail "convert -B with raw" "^miniblock-img: Backing file not supported for file format 'raw'$" \
    "$MINIBLOCK_IMG" convert -B base.raw src.qcow2 x.raw
expect_fail "convert -B with -n" "^miniblock-img: -B and -n cannot be used together$" \
    "$MINIBLOCK_IMG" convert -n -O qcow2 -B base.raw src.qcow2 ovc.qcow2
finish
