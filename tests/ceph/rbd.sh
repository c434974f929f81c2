#!/bin/bash
# The rbd driver on a real Ceph cluster, started once for this script by
# scripts/ceph-cluster.sh and always stopped (trap), with miniblock, QEMU
# (qemu-io, qemu-img with rbd:) and the rbd CLI as peers.  Never skips: the
# setup script installs Ceph.
. "$MINIBLOCK_SOURCE/tests/interop/lib.sh"
need ceph-mon ceph-osd rbd qemu-io qemu-img
[ -f /usr/lib/x86_64-linux-gnu/qemu/block-rbd.so ] ||
    { echo "FATAL: qemu-block-extra is missing (run scripts/setup.sh)"; exit 1; }

CLUSTER="$MINIBLOCK_SOURCE/scripts/ceph-cluster.sh"
CDIR="$T/ceph"
trap '"$CLUSTER" stop "$CDIR"; cleanup' EXIT
t0=$(date +%s.%N)
"$CLUSTER" start "$CDIR" >/dev/null || { echo "FATAL: the Ceph cluster did not start"; exit 1; }
echo "# cluster up in $(echo "$(date +%s.%N) - $t0" | bc) s"
export CEPH_CONF="$CDIR/ceph.conf"
IMG=rbd:rbd/a

# mbhold NAME ARGS...: a miniblock-io holding IMAGE open, driven over stdin.
mbhold() {
    local name=$1; shift
    mkfifo "$T/$name.in"
    "$MINIBLOCK_IO" "$@" <"$T/$name.in" >"$T/$name.out" 2>&1 &
    eval "PID_$name=$!"
    BG_PIDS+=("$!")
    exec {fd}>"$T/$name.in"
    eval "FD_$name=$fd"
    echo length >&"$fd"
    wait_for "$T/$name.out" '^\[(ok|error)\]$'
}
# mbsend NAME CMD: one command to a holder; waits for its reply.
mbsend() {
    local name=$1 fd n
    eval "fd=\$FD_$name"
    n=$(grep -cE '^\[(ok|error)\]$' "$T/$name.out")
    echo "$2" >&"$fd"
    for _ in $(seq 200); do
        [ "$(grep -cE '^\[(ok|error)\]$' "$T/$name.out")" -gt "$n" ] && return 0
        sleep 0.05
    done
    return 1
}
mbquit() {
    local name=$1 fd pid
    eval "fd=\$FD_$name; pid=\$PID_$name"
    echo quit >&"$fd"
    exec {fd}>&-
    wait "$pid" 2>/dev/null
}
# The client.ID of the one watcher of an image other than `rbd status`.
watcher_id() { rbd status "$1" | sed -n 's/.*watcher=\([^ ]*\) client\.\([0-9]*\) .*/\2/p' | head -1; }

# --- create, write, read, as QEMU sees it -----------------------------------------
expect_ok "miniblock-img create -f raw rbd:rbd/a 16M" "$MINIBLOCK_IMG" create -f raw "$IMG" 16M
expect_output "rbd info: 16 MiB with the exclusive-lock feature" 'size 16 MiB.*exclusive-lock' \
    bash -c "rbd info rbd/a | tr '\n' ' '"
expect_output "miniblock-io writes through librbd" 'wrote 65536/65536' \
    "$MINIBLOCK_IO" -f raw -c "write -P 0x42 0 64k" -c flush "$IMG"
expect_output "qemu-io reads what miniblock wrote" 'read 65536/65536' \
    qemu-io -f raw -c "read -P 0x42 0 64k" "$IMG"
expect_output "write zeroes, discard, length" 'read 4096/4096.*16 MiB' \
    bash -c "'$MINIBLOCK_IO' -f raw -c 'write -z 64k 4k' -c 'discard 128k 64k' \
             -c 'read -P 0 64k 4k' -c length '$IMG' | tr '\n' ' '"
expect_output "options instead of a filename (pool, image, conf)" 'read 512/512' \
    "$MINIBLOCK_IO" --image-opts -c "read -P 0x42 0 512" \
    "driver=raw,file.driver=rbd,file.pool=rbd,file.image=a,file.conf=$CEPH_CONF"

# --- exclusive against exclusive, QEMU, readers ---------------------------------------
mbhold H1 -f raw -l exclusive "$IMG"
H1ID=$(watcher_id rbd/a)
expect_fail "exclusive vs exclusive: refused with QEMU's first line" \
    '^miniblock-io: can.t open device .*: Failed to get "write" lock$' \
    "$MINIBLOCK_IO" -f raw -l exclusive -c "read 0 512" "$IMG"
expect_fail "the refusal names the holder: client id and address" \
    "^Held by client\\.$H1ID at 127\\.0\\.0\\.1:[0-9]+/[0-9]+: the RBD exclusive lock$" \
    "$MINIBLOCK_IO" -f raw -l exclusive -c "read 0 512" "$IMG"
expect_fail "auto read-write is refused next to an exclusive holder too" \
    'Failed to get "write" lock' "$MINIBLOCK_IO" -f raw -c "read 0 512" "$IMG"
expect_fail "a QEMU writer's write is refused across the cluster" \
    'write failed: Read-only file system' qemu-io -f raw -c "write -P 0x66 0 4k" "$IMG"
head -c 65536 /dev/urandom >"$T/src.raw"
expect_fail "qemu-img convert into the image is refused" 'Read-only file system' \
    qemu-img convert -n -O raw -f raw "$T/src.raw" "$IMG"
expect_fail "a miniblock writer with lock=shared is refused on its write" \
    'Read-only file system' "$MINIBLOCK_IO" -f raw -l shared -c "write -P 0x66 0 4k" "$IMG"
expect_output "qemu-io reads next to the exclusive holder" 'read 4096/4096' \
    qemu-io -f raw -r -c "read -P 0x42 0 4k" "$IMG"
expect_output "miniblock reads next to it with lock=shared" 'read 4096/4096' \
    "$MINIBLOCK_IO" -f raw -r -l shared -c "read -P 0x42 0 4k" "$IMG"
mbsend H1 "read -P 0x42 0 64k"
expect_output "the holder's data is intact after the refused writes" 'read 65536/65536' cat "$T/H1.out"
mbsend H1 "write -P 0x43 0 4k"
expect_output "the holder itself writes" 'wrote 4096/4096' cat "$T/H1.out"
expect_output "miniblock-img locks lists the owner" \
    "exclusive lock owner: client\\.$H1ID at 127\\.0\\.0\\.1" "$MINIBLOCK_IMG" locks "$IMG"
expect_fail "locks --break refuses while the owner's watch is alive" \
    "Refusing to break the exclusive lock of client\\.$H1ID .*still watches the image" \
    "$MINIBLOCK_IMG" locks --break "$IMG"
mbquit H1
# A QEMU writer that has written owns the lock (librbd's transparent mode):
# a miniblock open must be refused, not take it over and fail QEMU's writes.
qemu-io -f raw -c "write -P 0x42 0 4k" -c "sleep 4000" -c "write -P 0x42 4k 4k" "$IMG" \
    >"$T/qemu-writer.out" 2>&1 &
QW=$!
BG_PIDS+=("$QW")
# (qemu-io's output to a file is buffered until it exits: watch the lock.)
for _ in $(seq 100); do rbd lock ls rbd/a | grep -q ' auto ' && break; sleep 0.1; done
expect_fail "a QEMU writer owning the lock is not robbed: exclusive refused, QEMU named" \
    "^Held by client\\.[0-9]+ at 127\\.0\\.0\\.1:[0-9]+/[0-9]+: the RBD exclusive lock$" \
    "$MINIBLOCK_IO" -f raw -l exclusive -c "read 0 512" "$IMG"
wait "$QW"
expect_output "and QEMU's next write still works" '^wrote 4096/4096 bytes at offset 4096$' \
    cat "$T/qemu-writer.out"
expect_output "closed: the lock is free for QEMU" 'wrote 4096/4096' \
    qemu-io -f raw -c "write -P 0x44 4k 4k" "$IMG"

# --- auto, read-only: keeps writers out (the managed lock), one holder at a time ---
mbhold R1 -f raw -r "$IMG"
expect_fail "auto read-only keeps a QEMU writer out" 'write failed: Read-only file system' \
    qemu-io -f raw -c "write -P 0x66 0 4k" "$IMG"
expect_fail "a second auto reader is refused (RBD has one holder), the first named" \
    "^Held by client\\.[0-9]+ at 127\\.0\\.0\\.1:[0-9]+/[0-9]+: the RBD exclusive lock$" \
    "$MINIBLOCK_IO" -f raw -r -c "read 0 512" "$IMG"
expect_output "a reader with lock=shared reads next to it" 'read 512/512' \
    "$MINIBLOCK_IO" -f raw -r -l shared -c "read 0 512" "$IMG"
mbquit R1

# --- a SIGKILLed holder ----------------------------------------------------------------
mbhold K -f raw -l exclusive "$IMG"
mbsend K "write -P 0x55 0 8k"
mbsend K flush
KID=$(watcher_id rbd/a)
kill -KILL "$PID_K"; wait "$PID_K" 2>/dev/null
s=$(date +%s.%N)
expect_fail "right after the SIGKILL Ceph still counts the holder (its watch): refused, named" \
    "^Held by client\\.$KID at 127\\.0\\.0\\.1:[0-9]+/[0-9]+: the RBD exclusive lock$" \
    "$MINIBLOCK_IO" -f raw -l exclusive -c "read 0 512" "$IMG"
got=""
for _ in $(seq 60); do
    if out=$("$MINIBLOCK_IO" -f raw -l exclusive -c "read -P 0x55 0 8k" "$IMG" 2>&1); then got=$out; break; fi
    sleep 0.5
done
if grep -q 'read 8192/8192' <<<"$got"; then
    ok "after SIGKILL the lock comes free once the watch times out; data intact"
else
    not_ok "after SIGKILL the lock comes free once the watch times out" "last output: $out"
fi
echo "# lock taken $(echo "$(date +%s.%N) - $s" | bc) s after the SIGKILL (osd_client_watch_timeout = 5)"
expect_output "the dead client is blocklisted" '127\.0\.0\.1' ceph osd blocklist ls
# Once the dead holder's watch has expired, locks --break breaks its lock on
# purpose (before anyone's acquire would).
mbhold K2 -f raw -l exclusive "$IMG"
K2ID=$(watcher_id rbd/a)
kill -KILL "$PID_K2"; wait "$PID_K2" 2>/dev/null
for _ in $(seq 100); do rbd status rbd/a | grep -q "client.$K2ID " || break; sleep 0.2; done
expect_output "locks shows an owner without a watch" \
    '^  exclusive lock owner: a client at 127\.0\.0\.1:[0-9]+/[0-9]+ \(no watch: dead or stalled\)$' \
    "$MINIBLOCK_IMG" locks "$IMG"
expect_output "locks --break breaks it and says it will be blocklisted" \
    '^breaking the exclusive lock of the client at 127\.0\.0\.1:[0-9]+/[0-9]+: it no longer watches the image; it will be blocklisted, so it cannot write if it wakes up$' \
    "$MINIBLOCK_IMG" locks --break "$IMG"
expect_output "then nothing is held" '^  no locks held, no other watchers$' "$MINIBLOCK_IMG" locks "$IMG"
expect_output "and --break has nothing to break" '^nothing to break$' "$MINIBLOCK_IMG" locks --break "$IMG"
expect_fail "--break is for rbd: images" '--break is only for rbd: images' \
    "$MINIBLOCK_IMG" locks --break "$T/src.raw"

# --- advisory locks: named in refusals, broken on purpose ---------------------------------
expect_ok "miniblock-img create rbd:rbd/b" "$MINIBLOCK_IMG" create -f raw rbd:rbd/b 4M
expect_ok "rbd lock add (an advisory lock, as a crashed tool leaves it)" \
    rbd lock add --shared mytag rbd/b mycookie
expect_fail "an advisory lock blocks exclusive, named with cookie and tag" \
    "^Held by client\\.[0-9]+ at 127\\.0\\.0\\.1:[0-9]+/[0-9]+: an advisory shared lock, cookie 'mycookie', tag 'mytag'$" \
    "$MINIBLOCK_IO" -f raw -l exclusive -c "read 0 512" rbd:rbd/b
expect_fail "... and says why" '^The image carries an advisory lock \(rbd lock ls\)$' \
    "$MINIBLOCK_IO" -f raw -l exclusive -c "read 0 512" rbd:rbd/b
expect_output "miniblock-img locks lists the advisory locker" \
    "advisory shared lock: client\\.[0-9]+ at .*cookie 'mycookie', tag 'mytag'" \
    "$MINIBLOCK_IMG" locks rbd:rbd/b
expect_output "locks --break breaks a stale advisory lock and says the client is blocklisted" \
    "breaking the advisory lock of client\\.[0-9]+ .*will be blocklisted" \
    "$MINIBLOCK_IMG" locks --break rbd:rbd/b
expect_output "the advisory lock is gone" '^$' rbd lock ls rbd/b
expect_output "exclusive now works on rbd/b" 'read 512/512' \
    "$MINIBLOCK_IO" -f raw -l exclusive -c "read 0 512" rbd:rbd/b
# A live advisory holder: Python's rbd module holds the image open (a watch).
/usr/bin/python3 - "$CEPH_CONF" >"$T/py.out" 2>&1 <<'PY' &
import rados, rbd, sys, time
c = rados.Rados(conffile=sys.argv[1]); c.connect()
img = rbd.Image(c.open_ioctx('rbd'), 'b')
img.lock_exclusive('livecookie')
print('ready', flush=True)
time.sleep(60)
PY
PYPID=$!
BG_PIDS+=("$PYPID")
wait_for "$T/py.out" ready
expect_fail "locks --break refuses an advisory lock whose holder still watches" \
    "Refusing to break the advisory lock of client\\.[0-9]+ .*cookie 'livecookie'.*alive" \
    "$MINIBLOCK_IMG" locks --break rbd:rbd/b
kill "$PYPID"; wait "$PYPID" 2>/dev/null

# --- the image without the exclusive-lock feature --------------------------------------------
rbd create --size 4M --image-feature layering rbd/nolock
expect_fail "exclusive refused where RBD cannot keep writers out, with the reason" \
    "lock=exclusive cannot be honoured on rbd:rbd/nolock: the image has no exclusive-lock feature" \
    "$MINIBLOCK_IO" -f raw -l exclusive -c "read 0 512" rbd:rbd/nolock
expect_output "lock=shared works there" 'wrote 512/512' \
    "$MINIBLOCK_IO" -f raw -l shared -c "write 0 512" rbd:rbd/nolock

# --- lock-wait: a refused exclusive lock is retried until the holder goes ---------
"$MINIBLOCK_IO" -f raw -l exclusive -c "sleep 2000" "$IMG" >/dev/null 2>&1 &
LW=$!
for _ in $(seq 100); do rbd lock ls rbd/a | grep -q ' auto ' && break; sleep 0.1; done
expect_output "lock-wait=20 waits for the holder to close, then gets the lock" 'read 512/512' \
    "$MINIBLOCK_IO" --image-opts -c "read 0 512" \
    "driver=raw,file.driver=rbd,file.pool=rbd,file.image=a,lock=exclusive,lock-wait=20"
wait "$LW"

# --- two miniblock clients racing for exclusive ------------------------------------------------
one=0 other=0
for round in $(seq 10); do
    "$MINIBLOCK_IO" -f raw -l exclusive -c "sleep 1500" "$IMG" >/dev/null 2>&1 &
    p1=$!
    "$MINIBLOCK_IO" -f raw -l exclusive -c "sleep 1500" "$IMG" >/dev/null 2>&1 &
    p2=$!
    wait $p1; r1=$?
    wait $p2; r2=$?
    if [ $((r1 == 0)) -ne $((r2 == 0)) ]; then one=$((one + 1)); else other=$((other + 1)); fi
done
echo "# rbd race, 10 rounds: one winner $one, otherwise $other"
if [ "$other" -eq 0 ]; then ok "rbd race: exactly one winner in 10 of 10 rounds"; else
    not_ok "rbd race: exactly one winner" "rounds with 0 or 2 winners: $other"; fi

# --- commit into a base on RBD ----------------------------------------------------------------
expect_ok "base on RBD" "$MINIBLOCK_IMG" create -f raw rbd:rbd/base 4M
expect_ok "base data" "$MINIBLOCK_IO" -f raw -c "write -P 0x11 0 1M" rbd:rbd/base
expect_ok "a local qcow2 overlay on the RBD base, larger than the base" \
    qemu-img create -q -f qcow2 -b rbd:rbd/base -F raw "$T/ov.qcow2" 8M
expect_ok "write into the overlay" "$MINIBLOCK_IO" -f qcow2 -c "write -P 0x22 0 64k" "$T/ov.qcow2"
expect_output "commit the overlay into the RBD base" '' "$MINIBLOCK_IMG" commit "$T/ov.qcow2"
expect_output "the base on RBD has the committed data (qemu-io)" 'read 65536/65536' \
    qemu-io -f raw -c "read -P 0x22 0 64k" rbd:rbd/base
expect_output "and the rest of the base is intact" 'read 65536/65536' \
    qemu-io -f raw -c "read -P 0x11 64k 64k" rbd:rbd/base
expect_output "commit grew the base to the overlay's size (truncate through librbd)" \
    'size 8 MiB' rbd info rbd/base
expect_output "commit dropped its exclusive lock on the base" '^$' \
    bash -c "rbd lock ls rbd/base; rbd status rbd/base | grep watcher= || true"

# --- bad input: clear errors, no hang --------------------------------------------------------
expect_fail "a missing pool" "Pool 'nopool' does not exist" \
    timeout 30 "$MINIBLOCK_IO" -f raw -c "read 0 512" rbd:nopool/a
expect_fail "a missing image" "Image 'nosuch' does not exist in pool 'rbd'" \
    timeout 30 "$MINIBLOCK_IO" -f raw -c "read 0 512" rbd:rbd/nosuch
expect_fail "a missing conf" "Could not read the Ceph configuration '/nonexistent.conf': No such file or directory" \
    timeout 30 "$MINIBLOCK_IO" -f raw -c "read 0 512" rbd:rbd/a:conf=/nonexistent.conf
expect_fail "no pool in the filename" "Invalid rbd filename 'rbd:/a'" \
    "$MINIBLOCK_IO" -f raw -c "read 0 512" rbd:/a
expect_fail "an unknown filename key" "Unknown key 'mon_host' \\(known: conf, id\\)" \
    "$MINIBLOCK_IO" -f raw -c "read 0 512" rbd:rbd/a:mon_host=1.2.3.4
expect_fail "a user named with client." "Invalid RBD user 'client.admin'" \
    timeout 30 "$MINIBLOCK_IO" -f raw -c "read 0 512" rbd:rbd/a:id=client.admin
expect_fail "filename and pool together" "^miniblock-io: can.t open device .*: Parameters 'filename' and 'pool' cannot be used together$" \
    "$MINIBLOCK_IO" --image-opts -c "read 0 512" "driver=raw,file.driver=rbd,file.filename=rbd:rbd/a,file.pool=rbd"
expect_fail "no pool" "Parameter 'file.pool' is missing" \
    "$MINIBLOCK_IO" --image-opts -c "read 0 512" "driver=raw,file.driver=rbd,file.image=a"
expect_fail "no image" "Parameter 'file.image' is missing" \
    "$MINIBLOCK_IO" --image-opts -c "read 0 512" "driver=raw,file.driver=rbd,file.pool=rbd"
expect_fail "a timeout out of range" "Invalid value '0' for parameter 'file.timeout'" \
    "$MINIBLOCK_IO" --image-opts -c "read 0 512" "driver=raw,file.driver=rbd,file.pool=rbd,file.image=a,file.timeout=0"
expect_fail "create over an existing image" "Image rbd:rbd/a exists already" \
    "$MINIBLOCK_IMG" create -f raw "$IMG" 1M
expect_fail "create a snapshot name" "Cannot create a snapshot as an image: rbd:rbd/a@s" \
    "$MINIBLOCK_IMG" create -f raw rbd:rbd/a@s 1M
expect_ok "rbd snap create rbd/a@s1" rbd snap create rbd/a@s1
expect_output "a snapshot reads read-only (nothing to lock)" 'read 4096/4096' \
    "$MINIBLOCK_IO" -f raw -r -l exclusive -c "read 0 4k" rbd:rbd/a@s1
expect_fail "a snapshot refuses read-write" "The snapshot rbd:rbd/a@s1 is read-only" \
    "$MINIBLOCK_IO" -f raw -c "read 0 4k" rbd:rbd/a@s1
expect_fail "a missing snapshot" "Image 'a' or its snapshot 'nosnap' does not exist in pool 'rbd'" \
    "$MINIBLOCK_IO" -f raw -r -c "read 0 4k" rbd:rbd/a@nosnap
mkdir -p "$T/empty"
expect_fail "no configuration anywhere" "No Ceph configuration found for rbd:rbd/a" \
    bash -c "cd '$T/empty' && env -u CEPH_CONF HOME='$T/empty' '$MINIBLOCK_IO' -f raw -c 'read 0 512' rbd:rbd/a"
printf '[global]\nauth_client_required = none\n' >"$T/nomon.conf"
expect_fail "a configuration without a monitor" "The Ceph configuration names no monitor \\(mon_host\\) for rbd:rbd/a" \
    "$MINIBLOCK_IO" -f raw -c "read 0 512" "rbd:rbd/a:conf=$T/nomon.conf"
# A wrong user, for real: the cluster's clients use auth none (which accepts
# any name), but its mon and osd accept cephx too (scripts/ceph-cluster.sh).
# A conf demanding cephx, with a key per user: the cluster knows "tester"
# (the control: it reads), not "intruder" (a key of its own making), and
# knows "tester" under another key than "forger" presents; "nokey" has no
# keyring at all (librados does not even ask the cluster).
ceph auth get-or-create client.tester mon 'profile rbd' osd 'profile rbd pool=rbd' \
    -o "$T/tester.keyring" >/dev/null 2>&1
ceph-authtool --create-keyring "$T/intruder.keyring" --gen-key -n client.intruder >/dev/null
ceph-authtool --create-keyring "$T/forger.keyring" --gen-key -n client.tester >/dev/null
MONS=$(sed -n 's/^mon_host = //p' "$CEPH_CONF")
{ cat "$CEPH_CONF"; printf '[client]\nauth_client_required = cephx\nkeyring = %s\n[client.tester]\nkeyring = %s\n[client.intruder]\nkeyring = %s\n' \
    "$T/missing.keyring" "$T/tester.keyring" "$T/intruder.keyring"; } >"$T/cephx.conf"
sed "s|keyring = $T/tester.keyring|keyring = $T/forger.keyring|" "$T/cephx.conf" >"$T/forger.conf"
expect_output "cephx: a user the cluster knows, with its key, reads" '^read 512/512 bytes at offset 0$' \
    timeout 30 "$MINIBLOCK_IO" -f raw -r -l shared -c "read 0 512" "rbd:rbd/a:conf=$T/cephx.conf:id=tester"
s=$(date +%s)
expect_fail "a user the cluster does not know is refused, named, at once" \
    "^miniblock-io: can.t open device rbd:rbd/a:conf=$T/cephx\\.conf:id=intruder: The Ceph cluster at $MONS refused user 'client\\.intruder': Permission denied$" \
    timeout 30 "$MINIBLOCK_IO" -f raw -r -l shared -c "read 0 512" "rbd:rbd/a:conf=$T/cephx.conf:id=intruder"
if [ $(($(date +%s) - s)) -le 5 ]; then ok "the refusal comes within 5 s (no hang)"; else
    not_ok "the refusal comes within 5 s" "took $(($(date +%s) - s)) s"; fi
expect_fail "... with a hint" '^Check id=USER and its keyring$' \
    timeout 30 "$MINIBLOCK_IO" -f raw -r -l shared -c "read 0 512" "rbd:rbd/a:conf=$T/cephx.conf:id=intruder"
expect_fail "a known user with a wrong key is refused, named" \
    "The Ceph cluster at $MONS refused user 'client\\.tester': Permission denied$" \
    timeout 30 "$MINIBLOCK_IO" -r --image-opts -c "read 0 512" \
    "driver=raw,file.driver=rbd,file.pool=rbd,file.image=a,file.conf=$T/forger.conf,file.user=tester,lock=shared"
expect_fail "a user with no keyring: no key, the keyring searched named (not a refusal)" \
    "^miniblock-io: can.t open device rbd:rbd/a:conf=$T/cephx\\.conf:id=nokey: No key for user 'client\\.nokey' to authenticate to the Ceph cluster at $MONS: no keyring found at $T/missing\\.keyring$" \
    timeout 30 "$MINIBLOCK_IO" -f raw -r -l shared -c "read 0 512" "rbd:rbd/a:conf=$T/cephx.conf:id=nokey"
sed "s/^mon_host = .*/mon_host = v2:127.0.0.1:9/" "$CEPH_CONF" >"$T/dead.conf"
s=$(date +%s)
expect_fail "an unreachable monitor: bounded by timeout, the address named" \
    "No Ceph monitor answered within 2 s at v2:127.0.0.1:9" \
    timeout 30 "$MINIBLOCK_IO" --image-opts -c "read 0 512" \
    "driver=raw,file.driver=rbd,file.pool=rbd,file.image=a,file.conf=$T/dead.conf,file.timeout=2"
echo "# unreachable monitor reported after $(($(date +%s) - s)) s"

finish
