#!/bin/bash
# The RBD scenario of the main job: locks across machines.  A throwaway
# Ceph cluster (scripts/ceph-cluster.sh), one image, and three clients that
# could be on three hosts: miniblock holding it with lock=exclusive (RBD's
# managed exclusive lock), a second miniblock client refused with the holder
# named, and a QEMU writer whose write the cluster refuses.  QEMU's own rbd
# driver takes no lock at all: two qemu-io writers on one image both write.
#
#   scripts/rbd-scenario.sh [BUILD_DIR]
set -u
BUILD=${1:-build}
cd "$(dirname "$0")/.."
IO=$BUILD/tools/miniblock-io
IMG=$BUILD/tools/miniblock-img
T=$(mktemp -d /tmp/mb-rbd-scenario.XXXXXX)
HOLDER=
trap '[ -n "$HOLDER" ] && kill "$HOLDER" 2>/dev/null; scripts/ceph-cluster.sh stop "$T/ceph"; rm -rf "$T"' EXIT
fail() { echo "rbd scenario: FAILED: $*"; exit 1; }

echo "== RBD: locks across machines (docs/locking.md section 12) =="
scripts/ceph-cluster.sh start "$T/ceph" >/dev/null || fail "the Ceph cluster did not start"
export CEPH_CONF=$T/ceph/ceph.conf
"$IMG" create -f raw rbd:rbd/disk 64M >/dev/null || fail "create"
"$IO" -f raw -c "write -P 0x42 0 1M" rbd:rbd/disk >/dev/null || fail "write"

echo "-- QEMU alone: two qemu-io writers with the image open at once both write"
echo "   (RBD's exclusive lock passes from one to the other transparently)"
qemu-io -f raw -c "write -P 0x01 0 4k" -c "sleep 1500" -c "write -P 0x01 8k 4k" rbd:rbd/disk \
    2>&1 | grep -E "^wrote|failed" | sed 's/^/   qemu-io A: /' &
QA=$!
sleep 0.7
qemu-io -f raw -c "write -P 0x02 4k 4k" rbd:rbd/disk 2>&1 | grep -E "^wrote|failed" |
    sed 's/^/   qemu-io B: /'
wait "$QA"
"$IO" -f raw -c "write -P 0x42 0 1M" rbd:rbd/disk >/dev/null || fail "write"

echo "-- client 1: miniblock-io -l exclusive rbd:rbd/disk (holds RBD's exclusive lock)"
mkfifo "$T/in"
"$IO" -f raw -l exclusive rbd:rbd/disk <"$T/in" >"$T/out" 2>&1 &
HOLDER=$!
exec 3>"$T/in"
echo length >&3
for _ in $(seq 200); do grep -qs '^\[ok\]' "$T/out" && break; sleep 0.05; done
grep -q '^\[ok\]' "$T/out" || fail "client 1 did not open: $(cat "$T/out")"
"$IMG" locks rbd:rbd/disk

echo "-- client 2: miniblock-io rbd:rbd/disk (another host, as far as Ceph knows)"
"$IO" -f raw -c "read 0 512" rbd:rbd/disk 2>&1 && fail "client 2 got in"
echo "-- client 3: QEMU writing: qemu-io -c 'write -P 0x66 0 4k' rbd:rbd/disk"
out=$(qemu-io -f raw -c "write -P 0x66 0 4k" rbd:rbd/disk 2>&1)
echo "$out" | grep -v "rbd request failed"
grep -q "Read-only file system" <<<"$out" || fail "QEMU's write was not refused"
echo "-- QEMU may still read: qemu-io -r -c 'read -P 0x42 0 4k'"
qemu-io -f raw -r -c "read -P 0x42 0 4k" rbd:rbd/disk | head -1
echo "-- client 1 still sees its data: read -P 0x42 0 1M"
echo "read -P 0x42 0 1M" >&3
echo quit >&3
exec 3>&-
wait "$HOLDER"
HOLDER=
grep "^read" "$T/out" || fail "client 1's data changed"
echo "rbd scenario: OK"
