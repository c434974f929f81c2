#!/bin/bash
# The nbd driver against a broken server (nbd-fake-server.py): every
# misbehaviour gives a clear error on the request or at open, never a crash
# or a hang (each command runs under `timeout`; a hang is a failure), and
# after a protocol violation later requests fail cleanly with EIO.
. "$(dirname "$0")/lib.sh"
need python3 timeout
FAKE="$(dirname "$0")/nbd-fake-server.py"

# serve MODE: a fake server on $T/MODE.sock; sets U.
serve() {
    python3 "$FAKE" "$T/$1.sock" "$1" &
    BG_PIDS+=("$!")
    for _ in $(seq 100); do [ -S "$T/$1.sock" ] && break; sleep 0.05; done
    U="nbd+unix:///?socket=$T/$1.sock"
    W="^WARNING: NBD server unix:$T/$1.sock: "
}

# Two reads: the first meets the misbehaviour, the second shows what is left.
two_reads() { timeout 20 "$MINIBLOCK_IO" -f raw -r -c 'read -P 0x5a 0 4k' -c 'read -P 0x5a 4k 4k' "$1"; }

# violation MODE 'WHAT': the first read fails with a protocol violation
# naming WHAT, the connection is closed, the second read fails with EIO too.
violation() {
    serve "$1"
    local out
    out=$(two_reads "$U" 2>&1)
    local rc=$?
    if [ $rc -eq 124 ]; then not_ok "$1: no hang" "$out"; return; fi
    expect_output "$1: the warning" "${W}protocol violation: the server sent $2; connection closed\$" echo "$out"
    local n
    n=$(grep -c '^read failed: Input/output error$' <<<"$out")
    if [ "$rc" -eq 1 ] && [ "$n" -eq 2 ]; then ok "$1: both reads fail with EIO"; else not_ok "$1: both reads fail with EIO" "rc=$rc" "$out"; fi
}

violation bad-magic 'a reply with bad magic 0x12345678'
violation bad-cookie 'a reply to unknown cookie 1001'
violation oversized-chunk 'a data chunk of 2147483632 bytes for a read of 4096'
violation out-of-range 'a data chunk at offset 4096 \(4096 bytes\) outside the read at 0 \(4096 bytes\)'
violation overlap 'overlapping chunks in the reply to one read'
violation error-bogus-len 'an error chunk whose message \(500 bytes\) exceeds the chunk \(11 bytes\)'

for m in drop-header drop-data; do
    serve $m
    out=$(two_reads "$U" 2>&1)
    expect_output "$m: the warning" "${W}the server closed the connection in the middle of a reply; connection closed\$" echo "$out"
    expect_output "$m: the read fails with EIO" '^read failed: Input/output error$' echo "$out"
done

# A request-level failure leaves the stream in step: the next read works.
serve error-chunk
out=$(two_reads "$U" 2>&1)
expect_output "error chunk: the server's message" "${W}the server reported: injected failure\$" echo "$out"
expect_output "error chunk: the read fails, the next one works" \
    'read failed: Input/output error read 4096/4096 bytes at offset 4096' echo $out
serve short-cover
out=$(two_reads "$U" 2>&1)
expect_output "short cover: said" "${W}the server's reply covers 2048 of 4096 bytes read\$" echo "$out"
expect_output "short cover: the read fails, the next one works" \
    'read failed: Input/output error read 4096/4096 bytes at offset 4096' echo $out

# Correct but unusual servers.
# The hole chunk for [1k, 2k) comes first, the data chunk for [0, 1k) last.
serve hole
out=$(timeout 20 "$MINIBLOCK_IO" -f raw -r -c 'read -v 0 2k' -c 'read -P 0x5a 4k 4k' "$U" 2>&1)
expect_output "hole chunk: data where the data chunk says" '^000003f0:  5a 5a 5a' echo "$out"
expect_output "hole chunk: zeroes where the hole chunk says" '^00000400:  00 00 00' echo "$out"
expect_output "hole chunk: up to its end" '^000007f0:  00 00 00' echo "$out"
expect_output "hole chunk: the next read" '^read 4096/4096 bytes at offset 4096$' echo "$out"
serve no-structured
expect_ok "simple replies only" timeout 20 "$MINIBLOCK_IO" -f raw -c 'write -P 0x11 0 8k' -c 'read -P 0x11 0 8k' "$U"
expect_output "simple replies only: info says so" 'structured replies: no' \
    timeout 20 "$MINIBLOCK_IMG" info "json:{\"driver\":\"nbd\",\"filename\":\"$U\"}"
serve no-go
expect_output "NBD_OPT_EXPORT_NAME fallback" 'negotiation: NBD_OPT_EXPORT_NAME' \
    timeout 20 "$MINIBLOCK_IMG" info "json:{\"driver\":\"nbd\",\"filename\":\"$U\"}"
expect_ok "NBD_OPT_EXPORT_NAME fallback: reads" two_reads "$U"
serve readonly
expect_fail "read-only export" "The export '' of the NBD server is read-only" \
    timeout 20 "$MINIBLOCK_IO" -f raw -c 'read 0 1' "$U"

# Handshakes that go wrong fail the open.
P="^miniblock-io: can't open device nbd\\+unix:///\\?socket=$T/"
serve bad-nbdmagic
expect_fail "not an NBD server" "${P}bad-nbdmagic.sock: NBD server at unix:$T/bad-nbdmagic.sock: The server is not an NBD server \\(bad magic 0x485454502f312e31\\)\$" \
    timeout 20 "$MINIBLOCK_IO" -f raw -r -c 'read 0 1' "$U"
serve oldstyle
expect_fail "oldstyle" 'The NBD server speaks the oldstyle protocol, which is not supported$' \
    timeout 20 "$MINIBLOCK_IO" -f raw -r -c 'read 0 1' "$U"
serve no-fixed
expect_fail "no fixed newstyle" 'The NBD server does not support the fixed newstyle handshake$' \
    timeout 20 "$MINIBLOCK_IO" -f raw -r -c 'read 0 1' "$U"
serve unknown-export
out=$(timeout 20 "$MINIBLOCK_IO" -f raw -r -c 'read 0 1' "$U" 2>&1)
expect_output "unknown export" "NBD server at unix:$T/unknown-export.sock: The NBD server has no export ''\$" echo "$out"
expect_output "unknown export: the server's message" '^Server message: no such export, sorry$' echo "$out"
serve bad-block-size
expect_fail "bad block size" 'Protocol violation by the NBD server: minimum block size 3$' \
    timeout 20 "$MINIBLOCK_IO" -f raw -r -c 'read 0 1' "$U"

serve mute
start=$SECONDS
expect_fail "mute server: the handshake times out" \
    "NBD server at unix:$T/mute.sock: The NBD server did not answer the handshake in time\$" \
    timeout 20 "$MINIBLOCK_IO" --image-opts -r -c 'read 0 4k' "driver=raw,file.driver=nbd,file.filename=$U,file.timeout=1"
if [ $((SECONDS - start)) -le 5 ]; then ok "mute server: gave up in time"; else not_ok "mute server: gave up in time" "$((SECONDS - start)) s"; fi

# A server that never answers: the timeout, not a hang.
serve silent
start=$SECONDS
expect_fail "silent server: timeout" "${W}no reply within 1 seconds \\(option 'timeout'\\); connection closed\$" \
    timeout 20 "$MINIBLOCK_IO" --image-opts -r -c 'read 0 4k' "driver=raw,file.driver=nbd,file.filename=$U,file.timeout=1"
if [ $((SECONDS - start)) -le 5 ]; then ok "silent server: gave up in time"; else not_ok "silent server: gave up in time" "$((SECONDS - start)) s"; fi

finish
