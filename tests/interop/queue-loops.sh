#!/bin/bash
# A queue driven only by the embedder's own loop (queue-loops.c): attached
# to the embedder's GMainContext, or through the completion fd in poll().
# Real nbdkit servers: a plain one (data must flow both ways) and one whose
# reads answer after 3 s under request-timeout=1 (each read must fail with
# ETIMEDOUT within a few seconds: the core's watchdog is a timer on the
# queue's own loop context, which only the embedder's loop runs), or under
# nbd's own timeout=1 (a timer of the driver, on the same context).  Every
# run is under `timeout`: a hang is a failure.
. "$(dirname "$0")/lib.sh"
need nbdkit timeout
QL() { timeout 40 "$QUEUE_LOOPS" "$@"; }

start_nbdkit() {
    local pidf="$T/nbdkit.$RANDOM.pid"
    nbdkit -P "$pidf" "$@" || { echo "FATAL: nbdkit $*"; exit 1; }
    for _ in $(seq 100); do [ -s "$pidf" ] && break; sleep 0.05; done
    BG_PIDS+=("$(cat "$pidf")")
}

# A slow server of its own for every run: nbdkit 1.32's server can abort
# ("connections.c:402: raw_send_socket: Assertion `sock >= 0' failed")
# when a client hangs up while delayed replies are pending, which each run
# against it does on purpose; a later run would find no server.
N=0
slow() {
    N=$((N + 1))
    start_nbdkit -U "$T/slow$N.sock" --filter=delay memory 1M rdelay=3
    SLOW="driver=nbd,server.type=unix,server.path=$T/slow$N.sock"
    TIMED="$SLOW,request-timeout=1"
}

start_nbdkit -U "$T/plain.sock" memory 1M
PLAIN="driver=nbd,server.type=unix,server.path=$T/plain.sock"

for mode in glib fd; do
    expect_text "$mode: nbd writes and reads complete from the embedder's loop alone" \
        "$mode: 8 of 8 writes and 8 of 8 reads completed, 8 blocks read back intact" QL $mode "$PLAIN" data
    slow
    expect_text "$mode: a read the server answers too late fails with ETIMEDOUT (request-timeout=1)" \
        "$mode: 4 of 4 reads completed, after less than 5 s, with less than 0.5 s of CPU" QL $mode "$TIMED" timeout
    slow
    expect_text "$mode: ... with the request's own message" \
        'request 0: Connection timed out (Read of 4096 bytes at offset 0 failed: Connection timed out)' \
        QL $mode "$TIMED" timeout
    # nbd's own `timeout` is a timer of the nbd driver on the same context.
    slow
    expect_text "$mode: nbd's own timeout=1 fails the reads from the embedder's loop alone" \
        "$mode: 4 of 4 reads completed, after less than 5 s, with less than 0.5 s of CPU" QL $mode "$SLOW,timeout=1" timeout
    slow
    expect_text "$mode: ... with nbd's warning" \
        "WARNING: NBD server unix:$T/slow$N.sock: no reply within 1 seconds (option 'timeout'); connection closed" \
        QL $mode "$SLOW,timeout=1" timeout
done
slow
expect_text "glib: detach with reads in flight: no callback afterwards, mbq_do_io completes them" \
    'glib: 0 callbacks before detach, 0 after it; 4 of 4 reads completed by mbq_do_io, with less than 0.5 s of CPU' QL glib "$SLOW" detach
slow
expect_text "glib: mb_close with reads in flight and the source attached" \
    'glib: 0 callbacks before close, 0 after it; then mbq_detach_glib: -9 (mbq_detach_glib: queue 0 belongs to a closed drive)' \
    QL glib "$SLOW" close
expect_text "glib: mb_close from inside the callback: the other completions never come" \
    'glib: 1 callback, then mb_close in it; 0 callbacks after it, 0 completions left for mbq_do_io' \
    QL glib "$PLAIN" close-in-callback
expect_text "glib: mbq_detach_glib from inside the callback: the others are left for mbq_do_io" \
    'glib: 1 callback, then mbq_detach_glib in it; 0 callbacks after it, 7 completions left for mbq_do_io' \
    QL glib "$PLAIN" detach-in-callback
finish
