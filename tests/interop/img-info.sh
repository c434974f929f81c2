#!/bin/bash
# miniblock-img info against qemu-img info 7.2 (the oracle): the same JSON,
# key for key, with the same types and nesting, for raw and qcow2, with and
# without a backing file, and with --backing-chain; miniblock's extras only
# under "miniblock".  Then info next to a running writer, and commit's
# emptying of the overlay, both as qemu-img.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io python3
MI=$MINIBLOCK_IMG
cd "$T" || exit 1

# same_json NAME ARGS...: miniblock-img info ARGS and qemu-img info ARGS give
# equal JSON once "miniblock" is set aside (which must be there).
same_json() {
    local name=$1; shift
    "$MI" info --output=json "$@" >"$T/mb.json" 2>"$T/mb.err" || { not_ok "$name" "miniblock-img failed: $(cat "$T/mb.err")"; return; }
    qemu-img info --output=json "$@" >"$T/q.json" 2>&1 || { not_ok "$name" "qemu-img failed: $(cat "$T/q.json")"; return; }
    local diff
    if diff=$(python3 - "$T/mb.json" "$T/q.json" <<'PY'
import json, sys
mb, q = (json.load(open(p)) for p in sys.argv[1:3])
def strip(v):
    if isinstance(v, list):
        return [strip(x) for x in v]
    assert "miniblock" in v, "no \"miniblock\" key"
    v = dict(v); del v["miniblock"]
    return v
mb = strip(mb)
def cmp(a, b, path):
    if type(a) is not type(b):
        print(f"{path}: {type(a).__name__} {a!r} vs qemu-img's {type(b).__name__} {b!r}"); return False
    if isinstance(a, dict):
        ok = True
        for k in sorted(set(a) | set(b)):
            if k not in a: print(f"{path}.{k}: missing (qemu-img: {b[k]!r})"); ok = False
            elif k not in b: print(f"{path}.{k}: extra ({a[k]!r})"); ok = False
            else: ok = cmp(a[k], b[k], f"{path}.{k}") and ok
        return ok
    if isinstance(a, list):
        if len(a) != len(b): print(f"{path}: {len(a)} entries vs {len(b)}"); return False
        return all([cmp(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b))])
    if a != b: print(f"{path}: {a!r} vs qemu-img's {b!r}"); return False
    return True
sys.exit(0 if cmp(mb, q, "$") else 1)
PY
    ); then ok "$name"; else not_ok "$name" "$diff"; fi
}

qemu-img create -f raw base.raw 1M >/dev/null
qemu-img create -f qcow2 plain.qcow2 1M >/dev/null
qemu-img create -f qcow2 -o compat=0.10 v2.qcow2 1M >/dev/null
qemu-img create -f qcow2 -b base.raw -F raw top.qcow2 >/dev/null
mkdir sub
qemu-img create -f qcow2 sub/base.qcow2 1M >/dev/null
qemu-img create -f qcow2 -b base.qcow2 -F qcow2 sub/top2.qcow2 >/dev/null
qemu-io -f qcow2 -c 'write -P 7 0 64k' top.qcow2 >/dev/null

same_json "info: raw" -f raw base.raw
same_json "info: raw, probed" base.raw
same_json "info: qcow2" plain.qcow2
same_json "info: qcow2 v2 (compat 0.10)" v2.qcow2
same_json "info: qcow2 over raw" top.qcow2
same_json "info: qcow2 over raw, --backing-chain" --backing-chain top.qcow2
same_json "info: a relative backing file in another directory" sub/top2.qcow2
same_json "info: --backing-chain there" --backing-chain sub/top2.qcow2
same_json "info: by absolute path" "$T/top.qcow2"
expect_output "info: the lock holders are under \"miniblock\"" '"lock-holders" : \[' "$MI" info --output=json base.raw

# The human form: qemu-img's lines for the same images.
for args in "top.qcow2" "-f raw base.raw" "v2.qcow2" "--backing-chain top.qcow2" "--backing-chain sub/top2.qcow2"; do
    # shellcheck disable=SC2086
    "$MI" info $args >mb.txt 2>&1; qemu-img info $args >q.txt 2>&1
    if diff -u q.txt mb.txt >d.txt; then ok "info $args (human): qemu-img's lines"; else not_ok "info $args (human): qemu-img's lines" "$(cat d.txt)"; fi
done

# Next to a running writer: raw opens without locks (as qemu-img), qcow2 is
# refused while a writer holds it (as qemu-img).
hold w qemu-io -f raw base.raw
echo 'length' >&"$HOLD_FD"; wait_for "$T/hold-w.out" 'MiB'
expect_output "info on a raw image a writer holds: works, as qemu-img" '^virtual size: 1 MiB' "$MI" info -f raw base.raw
expect_output "qemu-img info there too" '^virtual size: 1 MiB' qemu-img info -f raw base.raw
echo quit >&"$HOLD_FD"; wait "$HOLD_PID" 2>/dev/null
hold w2 qemu-io -f qcow2 plain.qcow2
echo 'length' >&"$HOLD_FD"; wait_for "$T/hold-w2.out" 'MiB'
expect_fail "info on a qcow2 image a writer holds: refused, as qemu-img" 'Failed to get shared "write" lock' "$MI" info plain.qcow2
expect_fail "qemu-img info is refused too" 'Failed to get shared "write" lock' qemu-img info plain.qcow2
expect_output "info -U: works" '^file format: qcow2$' "$MI" info -U plain.qcow2
echo quit >&"$HOLD_FD"; wait "$HOLD_PID" 2>/dev/null

# commit empties the overlay, as qemu-img; -d keeps it.
for tool in miniblock qemu; do
    rm -f b.raw o.qcow2
    qemu-img create -f raw b.raw 1M >/dev/null
    qemu-img create -f qcow2 -b b.raw -F raw o.qcow2 >/dev/null
    qemu-io -f qcow2 -c 'write -P 0x33 0 128k' -c 'write -P 0x44 512k 64k' o.qcow2 >/dev/null
    if [ $tool = miniblock ]; then "$MI" commit -q o.qcow2; else qemu-img commit -q o.qcow2; fi
    qemu-img map --output=json o.qcow2 | python3 -c 'import json,sys; print(sum(1 for e in json.load(sys.stdin) if e["depth"] == 0))' >"$T/map.$tool"
done
if [ "$(cat map.miniblock)" = 0 ] && [ "$(cat map.qemu)" = 0 ]; then
    ok "commit: the overlay is emptied (no range at depth 0), as by qemu-img"
else
    not_ok "commit: the overlay is emptied" "miniblock: $(cat map.miniblock) ranges at depth 0, qemu-img: $(cat map.qemu)"
fi
expect_output "commit: the overlay reads the base's data" 'read 131072/131072' qemu-io -f qcow2 -c 'read -P 0x33 0 128k' -c 'read -P 0x44 512k 64k' -c 'read -P 0 128k 384k' o.qcow2
expect_output "commit: the base has it" 'read 131072/131072' qemu-io -f raw -c 'read -P 0x33 0 128k' -c 'read -P 0x44 512k 64k' b.raw
expect_output "commit: qemu-img check is clean" '^No errors were found on the image.$' qemu-img check o.qcow2
expect_output "commit: qemu-img compare says identical" '^Images are identical.$' qemu-img compare o.qcow2 b.raw
rm -f b.raw o.qcow2
qemu-img create -f raw b.raw 1M >/dev/null
qemu-img create -f qcow2 -b b.raw -F raw o.qcow2 >/dev/null
qemu-io -f qcow2 -c 'write -P 0x33 0 128k' o.qcow2 >/dev/null
"$MI" commit -q -d o.qcow2
n=$(qemu-img map --output=json o.qcow2 | python3 -c 'import json,sys; print(sum(1 for e in json.load(sys.stdin) if e["depth"] == 0 and e["data"]))')
if [ "$n" -gt 0 ]; then ok "commit -d: the overlay keeps its data"; else not_ok "commit -d: the overlay keeps its data" "$n ranges"; fi
# With a holder of the base, commit is refused and the overlay is untouched.
qemu-io -f qcow2 -c 'write -P 0x55 0 64k' o.qcow2 >/dev/null
hold r qemu-io -r -f raw b.raw
echo 'length' >&"$HOLD_FD"; wait_for "$T/hold-r.out" 'MiB'
expect_fail "commit refused next to a reader of the base" 'the base cannot be locked for writing: Failed to get shared "consistent read" lock' "$MI" commit o.qcow2
echo quit >&"$HOLD_FD"; wait "$HOLD_PID" 2>/dev/null
expect_output "the refused commit left the overlay as it was" 'read 65536/65536' qemu-io -f qcow2 -c 'read -P 0x55 0 64k' o.qcow2
finish
