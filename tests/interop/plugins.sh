#!/bin/bash
# The plugin framework (docs/plugins.md): null-co through the public driver
# ABI against QEMU's null-co, modules loaded on first use from
# MINIBLOCK_MODULE_DIR, every way a module can be refused, and plugins that
# misbehave on purpose (tests/plugins/*.c, real shared objects).
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io cmp
IMG=$MINIBLOCK_IMG
IO=$MINIBLOCK_IO
P=$MINIBLOCK_TEST_PLUGINS

# --- null-co: one option string, two block layers --------------------------
O=driver=raw,file.driver=null-co,file.size=1073741824
expect_text "qemu-img opens the null-co option string" "virtual size: 1 GiB (1073741824 bytes)" \
    qemu-img info --image-opts "$O"
expect_text "miniblock-img opens the same string" "virtual size: 1 GiB (1073741824 bytes)" \
    "$IMG" info --image-opts "$O"
expect_text "null-co's default size is QEMU's (1 GiB)" "1 GiB" \
    "$IO" -c length --image-opts driver=raw,file.driver=null-co
expect_text "null-co:// names the protocol" "1 GiB" "$IO" -f raw -c length null-co://
Z=driver=raw,file.driver=null-co,file.size=1M,file.read-zeroes=on
expect_ok "qemu-io reads zeroes with read-zeroes=on" qemu-io -c 'read -P 0 0 1M' --image-opts "$Z"
expect_ok "miniblock-io reads the same zeroes" "$IO" -c 'read -P 0 0 1M' --image-opts "$Z"
qemu-img convert -O raw --image-opts "$Z" "$T/qemu.raw"
"$MINIBLOCK_DUMP" "$Z" "$T/mb.raw" >/dev/null 2>&1
if cmp -s "$T/qemu.raw" "$T/mb.raw" && [ "$(stat -c %s "$T/mb.raw")" = 1048576 ]; then
    ok "null-co reads bit-identical to qemu-img convert"
else
    not_ok "null-co reads bit-identical to qemu-img convert"
fi
expect_ok "a write is dropped: zeroes read back" \
    "$IO" -c 'write -P 0x55 0 4096' -c 'read -P 0 0 4096' --image-opts "$Z"
expect_text "latency-ns delays each request (QEMU's option)" "read 4096/4096" \
    "$IO" -c 'read 0 4096' --image-opts "$Z,file.latency-ns=2000000"
expect_fail_text "a bad size names the option" "Invalid value 'big' for parameter 'file.size'" \
    "$IO" -c length --image-opts driver=raw,file.driver=null-co,file.size=big
expect_fail_text "a misspelt option names it" "Invalid parameter 'file.sise'" \
    "$IO" -c length --image-opts driver=raw,file.driver=null-co,file.sise=1M
expect_fail_text "... and lists null-co's options" \
    "Valid parameters for driver 'null-co': auto-read-only, cache, detect-zeroes, discard, driver, filename, force-share, inactive, latency-ns, lock, lock-wait, node-name, read-only, read-zeroes, request-timeout, size" \
    "$IO" -c length --image-opts driver=raw,file.driver=null-co,file.sise=1M
expect_fail_text "a bad boolean names the option" "Invalid value 'maybe' for parameter 'file.read-zeroes'" \
    "$IO" -c length --image-opts driver=raw,file.driver=null-co,file.read-zeroes=maybe
expect_fail_text "latency-ns must not be negative" "latency-ns must be a non-negative integer, not -1" \
    "$IO" -c length --image-opts driver=raw,file.driver=null-co,file.latency-ns=-1

# No lock hooks: auto and off open, shared and exclusive are refused (as nbd).
expect_ok "lock=off opens null-co" "$IO" -c length --image-opts "$O,lock=off"
expect_fail_text "lock=exclusive is refused" \
    "lock=exclusive cannot be honoured by driver 'null-co': it implements no lock hooks" \
    "$IO" -c length --image-opts "$O,file.lock=exclusive"
expect_fail_text "... saying what to use" \
    "Nothing takes locks for it; use lock=auto (nothing to lock) or lock=off" \
    "$IO" -c length --image-opts "$O,file.lock=exclusive"
expect_fail_text "lock=shared given above is refused too, and says so" \
    "The lock mode was given to a node above this null-co node and applies to it too" \
    "$IO" -c length --image-opts "$O,lock=shared"

# --- modules: loaded on first use ----------------------------------------------
export MINIBLOCK_MODULE_DIR="$P${MINIBLOCK_MODULE_DIR:+:$MINIBLOCK_MODULE_DIR}"
expect_text "a module loads on first use of its name" "read 4096/4096 bytes at offset 0" \
    "$IO" -c 'read -P 0x5a 0 4096' --image-opts driver=raw,file.driver=hostile
expect_fail_text "a name no module provides lists the directories searched" \
    "No module block-nosuch.so in $P, " "$IO" -c length --image-opts driver=raw,file.driver=nosuch
expect_fail_text "... after the usual message" "Unknown driver 'nosuch' for parameter 'file.driver'" \
    "$IO" -c length --image-opts driver=raw,file.driver=nosuch
mkdir "$T/cwd" && cp "$P/block-hostile.so" "$T/cwd/"
expect_fail_text "never from the current directory (relative entries are ignored)" \
    "Unknown driver 'hostile'" \
    env -C "$T/cwd" MINIBLOCK_MODULE_DIR=.:: "$IO" -c length --image-opts driver=raw,file.driver=hostile
expect_fail_text "an ABI from the future is refused" \
    "Module '$P/block-abinew.so' needs driver ABI version 99, newer than this miniblock's (1)" \
    "$IO" -c length --image-opts driver=raw,file.driver=abinew
expect_fail_text "an ABI from the past is refused" \
    "Module '$P/block-abiold.so' has driver ABI version 0, older than any this miniblock supports (1 to 1)" \
    "$IO" -c length --image-opts driver=raw,file.driver=abiold
expect_fail_text "a module without the entry point is refused" \
    "Module '$P/block-noentry.so' has no entry point 'mbd_driver_init'" \
    "$IO" -c length --image-opts driver=raw,file.driver=noentry
expect_fail_text "a module registering a taken name is refused" \
    "Module '$P/block-dup.so' registers driver 'raw', which is already registered" \
    "$IO" -c length --image-opts driver=raw,file.driver=dup
expect_fail_text "a module named after another driver is refused" \
    "Module '$P/block-misnamed.so' provides driver 'other-name', not 'misnamed'" \
    "$IO" -c length --image-opts driver=raw,file.driver=misnamed
expect_fail_text "a module of another build is refused" \
    "Module '$P/block-otherbuild.so' comes from another build of miniblock (build 0123456789abcdef; this is build " \
    "$IO" -c length --image-opts driver=raw,file.driver=otherbuild
expect_fail_text "an enum option without values is refused" \
    "Module '$P/block-enumempty.so' is not a usable driver: option 'mode' of driver 'enumempty' is an enum without values" \
    "$IO" -c length --image-opts driver=raw,file.driver=enumempty
expect_fail_text "an enum option listing a value twice is refused" \
    "Module '$P/block-enumdup.so' is not a usable driver: option 'mode' of driver 'enumdup' lists the value 'fast' twice" \
    "$IO" -c length --image-opts driver=raw,file.driver=enumdup
expect_fail_text "a nested option's condition must name a value of its group's enum" \
    "Module '$P/block-condbad.so': Option 'server.x' of driver 'condbad' has the condition 'kind=c', but 'c' is not a value of 'server.kind'" \
    "$IO" -c length --image-opts driver=raw,file.driver=condbad
expect_fail_text "an enum option whose default is not a value is refused" \
    "Module '$P/block-enumdefault.so' is not a usable driver: option 'mode' of driver 'enumdefault' has the default 'medium', which is not one of its values" \
    "$IO" -c length --image-opts driver=raw,file.driver=enumdefault
expect_fail_text "an impossible struct mbd_option size is refused" \
    "Module '$P/block-optsize.so' is not a usable driver: driver 'optsize' says its struct mbd_option is 12 bytes" \
    "$IO" -c length --image-opts driver=raw,file.driver=optsize
expect_fail_text "a default request-timeout out of range is refused" \
    "Module '$P/block-reqtimeout.so' is not a usable driver: driver 'reqtimeout' has default_request_timeout_s 7200 (expected 0, or 1 to 3600)" \
    "$IO" -c length --image-opts driver=raw,file.driver=reqtimeout
mkdir "$T/mods" && head -c 4096 /dev/zero | tr "\\0" x >"$T/mods/block-garbage.so"
expect_fail_text "a file dlopen refuses gives dlopen's reason" \
    "Could not load module '$T/mods/block-garbage.so': $T/mods/block-garbage.so: invalid ELF header" \
    env MINIBLOCK_MODULE_DIR="$T/mods" "$IO" -c length --image-opts driver=raw,file.driver=garbage

expect_fail_text "an older plugin's shorter struct loads; fields past its end are absent" \
    "write failed: Operation not supported" \
    "$IO" -c length -c 'write 0 512' --image-opts driver=raw,file.driver=short

# A build with -Dmodules=enabled has cloop as a module (tests/meson.build
# points MINIBLOCK_MODULE_DIR at it).
# ... and nbd (block-nbd.so).
if [ -e "$MINIBLOCK_BUILD/block/plugin/block-cloop.so" ]; then
    linked="blkdebug crash-sim file null-co qcow2 raw" modules="abinew abiold cloop condbad dup enumdefault enumdup enumempty"
    nbd_module="nbd "
else
    linked="blkdebug cloop crash-sim file nbd null-co qcow2 raw" modules="abinew abiold condbad dup enumdefault enumdup enumempty"
    nbd_module=""
fi
expect_text "--help ends with the linked-in formats" "Supported formats: $linked" "$IMG" --help
expect_text "... and says which come from modules" \
    "Supported formats from modules: $modules hostile late-abandon late-async late-parallel late-serialize lockfile misnamed ${nbd_module}nbdmini noentry optsize otherbuild passthru reqtimeout short" \
    "$IMG" --help
expect_text "... and where modules are looked for" "Module directories: $P, " "$IMG" --help
expect_text "--help DRIVER shows a module driver's declared options" \
    "      how to misbehave (default none)" "$IMG" --help hostile
expect_text "--help null-co shows QEMU's option names" "read-zeroes=<bool>" "$IMG" --help null-co
expect_text "--help DRIVER shows the core's default request-timeout" \
    "      seconds a request may take before it fails with ETIMEDOUT, 1 to 3600 (default 30)" "$IMG" --help hostile

# --- hostile plugins ---------------------------------------------------------------
H=driver=raw,file.driver=hostile
expect_fail_text "open failing: the plugin's message and hint" "Hostile device refuses to open" \
    "$IO" -c length --image-opts "$H,file.misbehave=open-fails"
expect_fail_text "open failing silently: the core says so" \
    "Driver 'hostile' failed without saying why (no mbd_error())" \
    "$IO" -c length --image-opts "$H,file.misbehave=open-silent"
expect_fail_text "a length out of range" \
    "Driver 'hostile' returned -5000 from get_length, which is neither a length nor a negative errno" \
    "$IO" -c length --image-opts "$H,file.misbehave=bad-length"
expect_fail_text "a completion out of range is EIO, named" \
    "Driver 'hostile' completed a read at offset 0 with 7, which is neither 0 nor a negative errno" \
    "$IO" -c 'read 0 512' --image-opts "$H,file.misbehave=bad-ret"
expect_text "a completion called twice is reported and ignored" \
    "Driver 'hostile' completed a request that was already completed; ignored" \
    "$IO" -c 'read -P 0x5a 0 512' -c 'read -P 0x5a 512 512' --image-opts "$H,file.misbehave=double-complete"
expect_fail_text "a request never completed times out with a message" \
    "Driver 'hostile' did not complete a read at offset 0 within 1 s; the request fails with ETIMEDOUT and the node with EIO from now on" \
    "$IO" -c 'read 0 512' --image-opts "$H,file.misbehave=never,file.request-timeout=1"
out=$("$IO" -c 'read 0 512' -c 'sleep 3000' --image-opts "$H,file.misbehave=late,file.request-timeout=1" 2>&1)
if grep -qF "Driver 'hostile' completed a read at offset 0 after it had timed out; ignored" <<<"$out"; then
    ok "a late completion after the timeout is reported, not a crash"
else
    not_ok "a late completion after the timeout is reported, not a crash" "output: $out"
fi
expect_fail_text "a block status beyond the query is EIO, named" \
    "Driver 'hostile' returned status 9 for 1052672 bytes at offset 0 of a 1048576-byte query, which is out of range" \
    "$IMG" map --image-opts driver=hostile,misbehave=bad-status
expect_fail_text "request-timeout is bounded" \
    "Invalid value '0' for parameter 'file.request-timeout'" \
    "$IO" -c length --image-opts "$H,file.request-timeout=0"

# --- a protocol plugin with lock hooks takes part in the transaction -----------------
qemu-img create -q -f raw "$T/lf.raw" 4M
L="driver=raw,file.driver=lockfile,file.filename=$T/lf.raw"
hold lf "$IO" --image-opts "$L"
echo "write -P 0x21 0 4096" >&"$HOLD_FD_lf"
if wait_for "$T/hold-lf.out" '\[ok\]'; then ok "miniblock-io holds an image through the lockfile plugin"; else not_ok "miniblock-io holds an image through the lockfile plugin"; fi
# The kernel merges adjacent bytes: 100-101 and 201-203.
bytes=$(held_locks "$HOLD_PID_lf" "$T/lf.raw" | awk '{print $3 "-" $4}' | tr '\n' ' ')
if [ "$bytes" = "100-101 201-203 " ]; then
    ok "its lock hooks hold QEMU's bytes for read-write auto: use 100 101, forbid 201 202 203"
else
    not_ok "its lock hooks hold QEMU's bytes for read-write auto: use 100 101, forbid 201 202 203" "bytes: $bytes" "$(held_locks "$HOLD_PID_lf" "$T/lf.raw")"
fi
expect_fail "qemu-io's writer is kept out by the plugin's bytes" 'Failed to get "write" lock' \
    qemu-io -f raw -c 'write 0 512' "$T/lf.raw"
expect_ok "qemu-io's reader is let in" qemu-io -r -U -f raw -c 'read -P 0x21 0 4096' "$T/lf.raw"
expect_fail_text "a second writer through the plugin gets the plugin's message" 'Failed to get "write" lock' \
    "$IO" -c 'read 0 512' --image-opts "$L"
expect_ok "lock=off through the plugin takes no bytes" "$IO" -r -c 'read 0 512' --image-opts "$L,lock=off"
eval "exec $HOLD_FD_lf>&-"
wait "$HOLD_PID_lf"
left=$(locked_bytes "$T/lf.raw")
if [ -z "$left" ]; then ok "lock_release on close drops every byte"; else not_ok "lock_release on close drops every byte" "$left"; fi

expect_ok "a plugin's create callback makes the image" "$IMG" create -f lockfile "$T/created.raw" 3M
if [ "$(stat -c %s "$T/created.raw" 2>/dev/null)" = 3145728 ]; then ok "... of the size asked for"; else not_ok "... of the size asked for"; fi
expect_fail_text "creation options must be the driver's declared ones" \
    "Valid creation options for driver 'lockfile': none" \
    "$IMG" create -f lockfile -o cluster_size=64k "$T/created2.raw" 3M
if [ ! -e "$T/created2.raw" ]; then ok "... and nothing was created"; else not_ok "... and nothing was created"; fi
expect_fail_text "a driver without create says so" "Driver 'null-co' does not support image creation" \
    "$IMG" create -f null-co "$T/created3.raw" 3M

# An aborted transaction: commit raises the base's locks while a qemu-io
# reader holds the base; the whole transaction, the plugin's prepare
# included, is rolled back to exactly the bytes held before.
qemu-img create -q -f raw "$T/lb.raw" 4M
qemu-img create -q -f qcow2 -b "$T/lb.raw" -F raw "$T/lt.qcow2"
hold lt "$IO" --image-opts "driver=qcow2,file.driver=lockfile,file.filename=$T/lt.qcow2"
echo "write -P 0x31 0 4096" >&"$HOLD_FD_lt"
wait_for "$T/hold-lt.out" '\[ok\]' || true
HOLD_READY=x hold qr qemu-io -r -f raw "$T/lb.raw"
echo "read 0 512" >&"$HOLD_FD_qr"
wait_for "$T/hold-qr.out" 'read 512/512' || true
before=$(held_locks "$HOLD_PID_lt" "$T/lt.qcow2")
echo "commit" >&"$HOLD_FD_lt"
if wait_for "$T/hold-lt.out" 'the base cannot be locked for writing'; then
    ok "commit is refused while qemu-io reads the base"
else
    not_ok "commit is refused while qemu-io reads the base"
fi
if [ -n "$before" ] && [ "$before" = "$(held_locks "$HOLD_PID_lt" "$T/lt.qcow2")" ]; then
    ok "the plugin's bytes on the overlay are exactly as before the aborted transaction"
else
    not_ok "the plugin's bytes on the overlay are exactly as before the aborted transaction" \
        "before: $before" "after: $(held_locks "$HOLD_PID_lt" "$T/lt.qcow2")"
fi
eval "exec $HOLD_FD_qr>&-"
wait "$HOLD_PID_qr"
eval "exec $HOLD_FD_lt>&-"
wait "$HOLD_PID_lt"
expect_ok "... and the overlay is consistent" qemu-img check "$T/lt.qcow2"

# --- a blocking-model filter over file keeps the file's locks -------------------------
qemu-img create -f raw "$T/disk.raw" 4M >/dev/null
qemu-io -f raw -c 'write -P 0x33 0 1M' "$T/disk.raw" >/dev/null
F="driver=passthru,file.driver=file,file.filename=$T/disk.raw"
expect_ok "the passthru filter reads what qemu-io wrote" "$IO" -c 'read -P 0x33 0 1M' --image-opts "$F"
expect_ok "... and writes through its worker threads" "$IO" -c 'write -P 0x44 1M 1M' -c flush --image-opts "$F"
expect_ok "qemu-io reads the filter's write" qemu-io -f raw -c 'read -P 0x44 1M 1M' "$T/disk.raw"
hold pt "$IO" --image-opts "$F"
echo "read 0 512" >&"$HOLD_FD_pt"
if wait_for "$T/hold-pt.out" '\[ok\]'; then ok "miniblock-io holds the image through the filter"; else not_ok "miniblock-io holds the image through the filter"; fi
expect_fail "qemu-io writer refused while the filter's file node holds it" \
    'Failed to get "write" lock' qemu-io -f raw -c 'write 0 512' "$T/disk.raw"
eval "exec $HOLD_FD_pt>&-"
wait "$HOLD_PID_pt"
expect_ok "the writer gets in once the filter is closed" qemu-io -f raw -c 'write 0 512' "$T/disk.raw"

# --- the blocking filter forwards write-zeroes and discard ------------------------------
# qemu-img compare against an image qemu-io made the same way, and the
# file's extents: zeroes and discards must arrive as holes, not as data.
qemu-img create -q -f raw "$T/zd.raw" 1M
qemu-io -f raw -c 'write -P 0x21 0 1M' "$T/zd.raw" >/dev/null
cp "$T/zd.raw" "$T/zd-ref.raw"
expect_ok "passthru forwards write -z -u and discard" "$IO" -c 'write -z -u 64k 64k' -c 'discard 512k 256k' \
    --image-opts "driver=passthru,file.driver=file,file.filename=$T/zd.raw"
qemu-io -f raw -c 'write -z -u 64k 64k' -c 'discard 512k 256k' "$T/zd-ref.raw" >/dev/null
expect_ok "... the result is what qemu-io's is (qemu-img compare)" qemu-img compare -f raw -F raw "$T/zd.raw" "$T/zd-ref.raw"
want=$(qemu-img map --output=json -f raw "$T/zd-ref.raw") got=$(qemu-img map --output=json -f raw "$T/zd.raw")
if [ "$got" = "$want" ] && grep -q '"data": false' <<<"$got"; then
    ok "... with the same holes (qemu-img map)"
else
    not_ok "... with the same holes (qemu-img map)" "want: $want" "got: $got"
fi

# --- an older plugin's options array (the first struct mbd_option layout) -------------
expect_text "an older plugin's options are read with its own stride" \
    "  second=<int>" "$IMG" --help short
expect_fail_text "... the value of its second option is checked as an int" \
    "Invalid value 'x' for parameter 'file.second'" \
    "$IO" -c length --image-opts driver=raw,file.driver=short,file.second=x

finish
