#!/bin/bash
# crash-sim (block/drivers/crash-sim.c): simulated power failures.  First
# what the filter itself promises (unflushed writes are dropped, kept or torn
# in whole sectors; flushed ones survive; nothing reaches the disk after the
# failure; its options are checked), then the acceptance run: >= 500 power
# failures during allocating qcow2 writes, with and without a backing file,
# qemu-img check after each: leaks are allowed, corruption is not.
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)
IO=$MINIBLOCK_IO
HERE=$(dirname "$0")

R="$T/r.raw"
raw() { echo "driver=raw,file.driver=crash-sim,$1,file.file.driver=file,file.file.filename=$R"; }

# --- options ---------------------------------------------------------------------
qemu-img create -q -f raw "$R" 1M
expect_fail "crash-after below -1 is refused" "Invalid crash-after -5" \
    "$IO" -c 'read 0 512' --image-opts "$(raw file.crash-after=-5)"
expect_fail "a bad crash-on is named" "Invalid crash-on 'sometimes'" \
    "$IO" -c 'read 0 512' --image-opts "$(raw file.crash-on=sometimes)"
expect_fail "... and the valid values given" "Valid values: request, flush" \
    "$IO" -c 'read 0 512' --image-opts "$(raw file.crash-on=sometimes)"
expect_fail "a seed that is not a number is refused by the schema" "Invalid value 'abc' for parameter 'file.seed'" \
    "$IO" -c 'read 0 512' --image-opts "$(raw file.seed=abc)"

# --- semantics -------------------------------------------------------------------
expect_ok "without a failure, reads see unflushed writes" \
    "$IO" -c 'write -P 0x11 0 4k' -c 'read -P 0x11 0 4k' --image-opts "$(raw file.seed=1)"
expect_ok "... and a close writes them out" qemu-io -f raw -c 'read -P 0x11 0 4k' "$R"

# exit=off: the failure at the first flush, then every request fails.
qemu-img create -q -f raw "$R" 1M
out=$("$IO" -c 'write -P 0x22 0 8k' -c 'flush' -c 'read 0 512' -c 'write 0 512' \
    --image-opts "$(raw file.crash-on=flush,file.crash-after=0,file.exit=off)" 2>&1)
if grep -qE '^crash-sim: simulated power failure at request 1: 1 unflushed writes, [01] kept, [01] torn, [01] dropped$' <<<"$out" &&
    grep -q 'flush failed: Input/output error' <<<"$out" && grep -q 'read failed: Input/output error' <<<"$out" &&
    grep -q 'write failed: Input/output error' <<<"$out"; then
    ok "exit=off: the power fails at the flush, which fails, and so does every later request"
else
    not_ok "exit=off: the power fails at the flush, which fails, and so does every later request" "$out"
fi

# exit=on: the process ends with status 75 at the failure.
"$IO" -c 'write -P 0x33 0 4k' -c 'write -P 0x44 4k 4k' -c 'write -P 0x55 8k 4k' \
    --image-opts "$(raw file.crash-after=2)" >"$T/out" 2>&1
rc=$?
if [ $rc -eq 75 ] && grep -qE '^crash-sim: simulated power failure at request 3: 2 unflushed writes' "$T/out" &&
    ! grep -q 'wrote 4096/4096 bytes at offset 8192' "$T/out"; then
    ok "crash-after=2: the third request finds the power gone and the process ends with 75"
else
    not_ok "crash-after=2: the third request finds the power gone and the process ends with 75" "exit $rc" "$(cat "$T/out")"
fi
expect_ok "... nothing of the request that met the failure reached the disk" \
    qemu-io -f raw -c 'read -P 0 8k 4k' "$R"

# A flushed write survives; unflushed ones are each dropped, kept or torn,
# in whole 512-byte sectors.  Over 40 seeds every fate shows up.
cat >"$T/fate.py" <<'EOF'
import sys
d = open(sys.argv[1], "rb").read()
if d[:4096] != b"\x11" * 4096:
    print("flushed"); sys.exit()
out = []
for base, pat in ((4096, 0x22), (65536, 0x33)):
    secs = [d[o:o + 512] for o in range(base, base + 16384, 512)]
    if any(s not in (bytes(512), bytes([pat]) * 512) for s in secs):
        print("mixed-sector"); sys.exit()
    n = sum(s != bytes(512) for s in secs)
    out.append("dropped" if n == 0 else "kept" if n == len(secs) else "torn")
print(" ".join(out))
EOF
declare -A seen=()
bad=""
for seed in $(seq 40); do
    qemu-img create -q -f raw "$R" 1M
    "$IO" -c 'write -P 0x11 0 4k' -c 'flush' -c 'write -P 0x22 4k 16k' -c 'write -P 0x33 64k 16k' -c 'flush' \
        --image-opts "$(raw file.seed=$seed,file.crash-on=flush,file.crash-after=1)" >/dev/null 2>&1
    for f in $("$PY" "$T/fate.py" "$R"); do seen[$f]=1; done
done
if [ -z "${seen[flushed]:-}" ] && [ -z "${seen[mixed-sector]:-}" ]; then
    ok "40 failures: the flushed write always survived, no sector was half written"
else
    not_ok "40 failures: the flushed write always survived, no sector was half written" "${!seen[*]}"
fi
if [ -n "${seen[dropped]:-}" ] && [ -n "${seen[kept]:-}" ] && [ -n "${seen[torn]:-}" ]; then
    ok "... unflushed writes were dropped, kept and torn"
else
    not_ok "... unflushed writes were dropped, kept and torn" "seen: ${!seen[*]}"
fi
# The same seed makes the same choices.
for i in 1 2; do
    qemu-img create -q -f raw "$R" 1M
    "$IO" -c 'write -P 0x22 0 64k' -c 'write -P 0x33 64k 64k' -c 'flush' \
        --image-opts "$(raw file.seed=7,file.crash-on=flush,file.crash-after=0)" >/dev/null 2>&1
    sum[$i]=$(md5sum <"$R")
done
if [ "${sum[1]}" = "${sum[2]}" ]; then ok "the same seed tears the same way"; else not_ok "the same seed tears the same way"; fi

# max-unflushed: past it the oldest writes go to the disk early.
qemu-img create -q -f raw "$R" 1M
"$IO" -c 'write -P 0x11 0 64k' -c 'write -P 0x22 64k 64k' -c 'flush' \
    --image-opts "$(raw file.max-unflushed=64k,file.crash-on=flush,file.crash-after=0)" >"$T/out" 2>&1
if grep -q 'crash-sim: simulated power failure at request 1: 1 unflushed writes' "$T/out" &&
    qemu-io -f raw -c 'read -P 0x11 0 64k' "$R" >/dev/null; then
    ok "max-unflushed=64k: the first 64k write went to the disk when the second came"
else
    not_ok "max-unflushed=64k: the first 64k write went to the disk when the second came" "$(cat "$T/out")"
fi

# --- the acceptance run: power failures during allocating qcow2 writes ---------------
qemu-img create -q -f raw "$T/base.raw" 32M
qemu-io -f raw -c 'write -P 0x5a 0 32M' "$T/base.raw" >/dev/null
N=${CRASHES:-250}
for backing in 0 1; do
    what=$([ $backing = 1 ] && echo "over a backing file" || echo "without a backing file")
    # A failure names its seed: crash-sim-run.py with it repeats the run.
    seed=${CRASH_SEED:-$RANDOM}
    if out=$("$PY" "$HERE/crash-sim-run.py" "$IO" "$T" "$N" "$backing" "$seed" 2>&1); then
        ok "qcow2 $what (seed $seed): $(head -1 <<<"$out")"
    else
        not_ok "qcow2 $what (seed $seed)" "$out"
    fi
done

finish
