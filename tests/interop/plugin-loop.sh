#!/bin/bash
# The event-loop services of the driver ABI (mbd_fd_watch, mbd_timer_*):
# tests/plugins/nbdmini.c, an NBD client written against the public header
# only, against a real qemu-nbd (data both ways, 32 requests in flight on
# one socket) and against the broken server of nbd-hostile.sh (a silent
# server times out through the plugin's timer, a bogus reply fails every
# request cleanly).  Every command runs under `timeout`: a hang is a failure.
. "$(dirname "$0")/lib.sh"
need qemu-nbd qemu-io qemu-img python3 timeout
export MINIBLOCK_MODULE_DIR=$MINIBLOCK_TEST_PLUGINS${MINIBLOCK_MODULE_DIR:+:$MINIBLOCK_MODULE_DIR}
IO() { timeout 30 "$MINIBLOCK_IO" "$@"; }
IMG() { timeout 60 "$MINIBLOCK_IMG" "$@"; }
FAKE="$(dirname "$0")/nbd-fake-server.py"

# --- a real server: qemu-nbd ---------------------------------------------------------
qemu-img create -q -f raw "$T/a.raw" 16M
qemu-io -f raw -c 'write -P 0xa1 0 1M' -c 'write -P 0xa2 1M 1M' "$T/a.raw" >/dev/null
pidf="$T/qemu-nbd.pid"
qemu-nbd --fork --pid-file="$pidf" -t -f raw -k "$T/q.sock" "$T/a.raw" || { echo "FATAL: qemu-nbd"; exit 1; }
NBD_PID=$(cat "$pidf")
BG_PIDS+=("$NBD_PID")
M="driver=raw,file.driver=nbdmini,file.path=$T/q.sock"
expect_ok "the plugin reads what qemu-io wrote, through qemu-nbd" \
    IO -c 'read -P 0xa1 0 1M' -c 'read -P 0xa2 1M 1M' -c 'read -P 0 2M 2M' --image-opts "$M"
expect_ok "... writes and flushes through its fd watch" \
    IO -c 'write -P 0xb3 512k 1M' -c 'write -P 0xb4 3M 4k' -c flush --image-opts "$M"
expect_ok "... qemu-io reads them from the image" qemu-io -f raw -r -U \
    -c 'read -P 0xa1 0 512k' -c 'read -P 0xb3 512k 1M' -c 'read -P 0xa2 1536k 512k' -c 'read -P 0xb4 3M 4k' "$T/a.raw"
# 4095 writes of 0xa5 at 4k steps fill all but the last 4k (bench stops before
# the last whole request, where it would wrap).
expect_output "... 32 writes in flight on one socket (bench -d 32 -w)" '^Run completed' \
    IMG bench -c 4095 -d 32 -s 4k -w --image-opts "$M"
expect_output "... 32 reads in flight, replies in any order" '^Run completed' \
    IMG bench -c 4096 -d 32 -s 4k --image-opts "$M"
kill "$NBD_PID"
for _ in $(seq 100); do kill -0 "$NBD_PID" 2>/dev/null || break; sleep 0.05; done
expect_ok "... every one of them reached the image (qemu-io)" qemu-io -f raw -r -c 'read -P 0xa5 0 16380k' -c 'read -P 0 16380k 4k' "$T/a.raw"

# --- a broken server -----------------------------------------------------------------
serve() {
    python3 "$FAKE" "$T/$1.sock" "$1" &
    BG_PIDS+=("$!")
    for _ in $(seq 100); do [ -S "$T/$1.sock" ] && break; sleep 0.05; done
    F="driver=raw,file.driver=nbdmini,file.path=$T/$1.sock,file.timeout=1"
}
serve silent
start=$(date +%s)
expect_fail "a silent server: the plugin's timer fails the read" '^read failed: Connection timed out$' \
    IO -r -c 'read 0 4k' --image-opts "$F"
if [ $(($(date +%s) - start)) -lt 10 ]; then
    ok "... after its 1 s timeout, not the core's 30 s request-timeout"
else
    not_ok "... after its 1 s timeout, not the core's 30 s request-timeout" "took $(($(date +%s) - start)) s"
fi
expect_output "... with the plugin's warning (mbd_warning)" \
    "^WARNING: nbdmini: server $T/silent.sock: silent for too long; connection closed\$" \
    sh -c 'timeout 30 "$0" -r -c "read 0 4k" --image-opts "$1" 2>&1; true' "$MINIBLOCK_IO" "$F"
serve bad-cookie
out=$(IO -r -c 'read -P 0x5a 0 4k' -c 'read -P 0x5a 4k 4k' --image-opts "$F" 2>&1)
if [ "$out" = "WARNING: nbdmini: server $T/bad-cookie.sock: protocol violation; connection closed"$'\nread failed: Protocol error\nread failed: Protocol error' ]; then
    ok "a reply to no request fails it and every later one (EPROTO), no crash, no hang"
else
    not_ok "a reply to no request fails it and every later one (EPROTO), no crash, no hang" "$out"
fi
serve unknown-export
expect_fail "a refused export fails the open with the plugin's message" \
    "The server refused export '' \(error 0x80000006\)" IO -r -c 'read 0 4k' --image-opts "$F"
finish
