#!/bin/bash
# The nbd driver against real servers: qemu-nbd (raw and qcow2 exports,
# read-only and read-write, Unix socket and loopback TCP) and nbdkit (memory
# and file plugins; blocksize-policy, error and delay filters).  Data written
# through miniblock is read back by qemu-io / libnbd and the other way round.
# (libnbd's side is nbdcopy, from libnbd-bin.)  Servers listen only on Unix
# sockets in $T and on 127.0.0.1.
. "$(dirname "$0")/lib.sh"
need qemu-nbd qemu-io qemu-img nbdkit nbdcopy python3 timeout

IO() { timeout 30 "$MINIBLOCK_IO" "$@"; }
IMG() { timeout 30 "$MINIBLOCK_IMG" "$@"; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# qemu-nbd ARGS...: a persistent server (several clients one after the
# other), forked once its socket is ready.
start_qemu_nbd() {
    local pidf="$T/qemu-nbd.$RANDOM.pid"
    qemu-nbd --fork --pid-file="$pidf" -t -e 4 "$@" || { echo "FATAL: qemu-nbd $*"; exit 1; }
    BG_PIDS+=("$(cat "$pidf")")
    LAST_PID=$(cat "$pidf")
}

start_nbdkit() {
    local pidf="$T/nbdkit.$RANDOM.pid"
    nbdkit -P "$pidf" "$@" || { echo "FATAL: nbdkit $*"; exit 1; }
    for _ in $(seq 100); do [ -s "$pidf" ] && break; sleep 0.05; done
    BG_PIDS+=("$(cat "$pidf")")
    LAST_PID=$(cat "$pidf")
}

stop() { kill "$1"; for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done; }

# --- qemu-nbd, raw, read-write, Unix socket -------------------------------------
qemu-img create -q -f raw "$T/a.raw" 16M
start_qemu_nbd -f raw --discard=unmap -k "$T/a.sock" "$T/a.raw"
U="nbd+unix:///?socket=$T/a.sock"
expect_ok "raw: miniblock writes over nbd+unix" \
    IO -f raw -c 'write -P 0xa1 0 64k' -c 'write -P 0xa2 1M 3M' -c 'write -z 8M 1M' -c flush "$U"
expect_ok "raw: qemu-io reads miniblock's data" \
    qemu-io -f raw -c 'read -P 0xa1 0 64k' -c 'read -P 0xa2 1M 3M' -c 'read -P 0 8M 1M' "$U"
expect_ok "raw: qemu-io writes" qemu-io -f raw -c 'write -P 0xb1 12M 128k' "$U"
expect_ok "raw: miniblock reads qemu-io's data (1 MiB requests, unaligned too)" \
    IO -f raw -c 'read -P 0xb1 12M 128k' -c 'read -P 0xa2 1048577 2M' -c 'read -P 0xa1 1 100' "$U"
expect_ok "raw: discard (trim) punches out data" IO -f raw -c 'write -P 0xf1 14M 1M' -c 'discard 14M 1M' "$U"
expect_ok "raw: qemu-io reads zeroes where miniblock discarded" qemu-io -f raw -c 'read -P 0 14M 1M' "$U"
expect_output "raw: probing over nbd finds raw" 'file format: raw' IMG info "$U"
J="json:{\"driver\":\"nbd\",\"filename\":\"$U\"}"
expect_output "info: what the server advertised" 'structured replies: yes' IMG info "$J"
expect_output "info: negotiated with NBD_OPT_GO" 'negotiation: NBD_OPT_GO' IMG info "$J"
expect_output "info: qemu-nbd's flags" 'transmission flags: flush fua trim write-zeroes' IMG info "$J"
expect_output "length over nbd" '^16 MiB$' IO -f raw -c length "$U"
expect_fail "a read past the end fails" 'read failed: Input/output error' IO -f raw -c 'read 16M 512' "$U"

# Locking: the protocol has none, the server must lock.
expect_fail "lock=exclusive on nbd is refused" \
    "^miniblock-io: can't open device .*: lock=exclusive cannot be honoured by driver 'nbd': the NBD protocol carries no locks$" \
    IO -f raw -l exclusive -c 'read 0 512' "$U"
out=$(IO -f raw -l exclusive -c 'read 0 512' "$U" 2>&1)
expect_output "lock=exclusive from the format node: says it was inherited" \
    '^The lock mode was given to a node above this nbd node and applies to it too$' echo "$out"
expect_output "lock=exclusive: the hint" \
    '^The NBD server holding the image must lock it; use lock=auto \(nothing to lock\) or lock=off$' echo "$out"
expect_fail "lock=shared given on the nbd node itself is refused, no inheritance line" \
    "lock=shared cannot be honoured by driver 'nbd': the NBD protocol carries no locks" \
    IO --image-opts -c 'read 0 512' "driver=raw,file.driver=nbd,file.filename=$U,file.lock=shared"
out=$(IO --image-opts -c 'read 0 512' "driver=raw,file.driver=nbd,file.filename=$U,file.lock=shared" 2>&1)
if grep -q 'node above' <<<"$out"; then not_ok "explicit lock: no inheritance line" "$out"; else ok "explicit lock: no inheritance line"; fi
expect_fail "-U (lock=shared) on nbd is refused" "lock=shared cannot be honoured by driver 'nbd': the NBD protocol carries no locks" \
    IO -f raw -r -U -c 'read 0 512' "$U"
expect_ok "lock=auto on nbd: nothing to lock" IO -f raw -l auto -c 'write -P 1 0 512' "$U"
expect_ok "lock=off on nbd" IO -f raw -l off -c 'read -P 1 0 512' "$U"

# Structured options instead of a URI.
expect_ok "server.type=unix options" \
    IO --image-opts -c 'read -P 0xa1 4k 60k' "driver=raw,file.driver=nbd,file.server.type=unix,file.server.path=$T/a.sock"
expect_ok "json: with a nested server" \
    IO -c 'read -P 0xa1 4k 60k' "json:{\"driver\":\"nbd\",\"server\":{\"type\":\"unix\",\"path\":\"$T/a.sock\"},\"export\":\"\"}"
expect_output "info: a server given by options is shown by its URI" "^image: nbd\\+unix:///\\?socket=$T/a.sock\$" \
    IMG info "json:{\"driver\":\"nbd\",\"server\":{\"type\":\"unix\",\"path\":\"$T/a.sock\"}}"
expect_fail "filename and server together are refused" \
    "Parameters 'filename' and 'server' cannot be used together" \
    IO --image-opts -c 'read 0 1' "driver=nbd,filename=$U,server.type=unix,server.path=$T/a.sock"
expect_fail "neither filename nor server" "Parameter 'server' is missing" \
    IO --image-opts -c 'read 0 1' "driver=nbd,export=x"
expect_fail "timeout out of range" "Invalid value '0' for parameter 'file.timeout'" \
    IO --image-opts -c 'read 0 1' "driver=raw,file.driver=nbd,file.filename=$U,file.timeout=0"
# The server union (nested options of the plugin ABI, checked by the schema
# engine before the driver runs): each bad key or value named.
bad_opts() { expect_fail_text "server options: $1" "$2" IO --image-opts -c 'read 0 1' "$3"; }
bad_opts "type missing" "Parameter 'server.type' is missing" "driver=nbd,server.path=$T/a.sock"
bad_opts "bad type" "Invalid value 'vsock' for parameter 'server.type'" "driver=nbd,server.type=vsock"
bad_opts "bad type: the choices" "Valid values: unix, inet" "driver=nbd,server.type=vsock"
bad_opts "a key of the other branch" "Invalid parameter 'server.host'" \
    "driver=nbd,server.type=unix,server.path=$T/a.sock,server.host=h"
bad_opts "the keys of the branch" "Valid parameters for 'server' with type=unix: path, type" \
    "driver=nbd,server.type=unix,server.path=$T/a.sock,server.host=h"
bad_opts "unix needs path" "Parameter 'server.path' is missing" "driver=nbd,server.type=unix"
bad_opts "inet needs host" "Parameter 'server.host' is missing" "driver=nbd,server.type=inet,server.port=1"
bad_opts "server is nested options" "Invalid value '$T/a.sock' for parameter 'server'" "driver=nbd,server=$T/a.sock"
bad_opts "nested, below a format" "Parameter 'file.server.path' is missing" \
    "driver=raw,file.driver=nbd,file.server.type=unix"
bad_opts "timeout is an integer" "Invalid value 'soon' for parameter 'timeout'" "driver=nbd,filename=$U,timeout=soon"
expect_text "--help nbd: the union's members" "  server.path=<str> (required, when server.type=unix)" IMG --help nbd
expect_text "--help nbd: the port's default" "      port number or service name (default 10809)" IMG --help nbd
expect_text "--help nbd: the core's request-timeout stays behind nbd's own timeout" \
    "      seconds a request may take before it fails with ETIMEDOUT, 1 to 3600 (default 60)" IMG --help nbd
stop "$LAST_PID"

# --- qemu-nbd without --persistent: it serves one client, then exits --------------
# Probing opens the export twice in a row; the probe's idle connection is
# handed to the real open, so the server sees one client.
qemu-nbd -f raw -k "$T/once.sock" "$T/a.raw" &
BG_PIDS+=("$!")
for _ in $(seq 100); do [ -S "$T/once.sock" ] && break; sleep 0.05; done
U="nbd+unix:///?socket=$T/once.sock"
expect_ok "one-client qemu-nbd: a probing open works" IO -c 'read -P 0xa1 4k 60k' "$U"

# --- URIs that are wrong ---------------------------------------------------------
expect_fail "nbd+unix without socket" \
    "^miniblock-io: can't open device nbd\+unix:///x: Invalid NBD URI 'nbd\+unix:///x'$" IO -f raw -c 'read 0 1' 'nbd+unix:///x'
expect_output "nbd+unix without socket: the hint line" '^nbd\+unix:// needs \?socket=PATH$' \
    bash -c "'$MINIBLOCK_IO' -f raw -c 'read 0 1' 'nbd+unix:///x' 2>&1; true"
expect_fail "nbd:// without host" "Invalid NBD URI 'nbd:///exp'" IO -f raw -c 'read 0 1' 'nbd:///exp'
expect_fail "nbds:// is refused clearly" 'TLS \(nbds://\) is not supported' IO -f raw -c 'read 0 1' 'nbds://127.0.0.1/x'
expect_fail "unknown query parameter" 'The only query parameter is socket=PATH' \
    IO -f raw -c 'read 0 1' "nbd+unix:///?socket=$T/x&foo=1"
PORT=$(free_port)
expect_fail "nothing listening" "Could not connect to the NBD server at 127.0.0.1:$PORT: Connection refused" \
    IO -f raw -c 'read 0 1' "nbd://127.0.0.1:$PORT/x"

# --- qemu-nbd, read-only export ---------------------------------------------------
start_qemu_nbd -r -f raw -k "$T/ro.sock" "$T/a.raw"
U="nbd+unix:///?socket=$T/ro.sock"
expect_fail "read-only export opened read-write is refused" \
    "^miniblock-io: can't open device .*: The export '' of the NBD server is read-only$" \
    IO -f raw -c 'read 0 512' "$U"
expect_output "read-only export: the hint" '^Open it read-only$' \
    bash -c "'$MINIBLOCK_IO' -f raw -c 'read 0 512' '$U' 2>&1; true"
expect_ok "read-only export opened read-only" IO -f raw -r -c 'read -P 0xb1 12M 128k' "$U"
stop "$LAST_PID"

# --- qemu-nbd, qcow2 export over TCP with an export name ---------------------------
qemu-img create -q -f qcow2 "$T/b.qcow2" 32M
PORT=$(free_port)
start_qemu_nbd -f qcow2 -b 127.0.0.1 -p "$PORT" -x disk "$T/b.qcow2"
U="nbd://127.0.0.1:$PORT/disk"
expect_ok "qcow2 export over TCP: miniblock writes" \
    IO -f raw -c 'write -P 0xc1 4k 60k' -c 'write -P 0xc2 20M 2M' -c flush "$U"
expect_ok "qcow2 export: libnbd (nbdcopy) reads the export" nbdcopy "$U" "$T/copy.raw"
expect_ok "qcow2 export: libnbd saw miniblock's data" \
    qemu-io -f raw -c 'read -P 0 0 4k' -c 'read -P 0xc1 4k 60k' -c 'read -P 0xc2 20M 2M' "$T/copy.raw"
qemu-io -f raw -c 'write -P 0xd1 30M 64k' "$T/copy.raw" >/dev/null
expect_ok "qcow2 export: libnbd (nbdcopy) writes the export" nbdcopy "$T/copy.raw" "$U"
expect_ok "qcow2 export: miniblock reads libnbd's data" IO -f raw -r -c 'read -P 0xd1 30M 64k' -c 'read -P 0xc1 4k 60k' "$U"
expect_fail "unknown export name" "The NBD server has no export 'nope'" IO -f raw -r -c 'read 0 1' "nbd://127.0.0.1:$PORT/nope"
expect_ok "structured options for TCP" IO -r -c 'read -P 0xc2 20M 2M' \
    "json:{\"driver\":\"nbd\",\"server\":{\"type\":\"inet\",\"host\":\"127.0.0.1\",\"port\":\"$PORT\"},\"export\":\"disk\"}"
stop "$LAST_PID"
expect_ok "qcow2 image is consistent after nbd writes" qemu-img check -q "$T/b.qcow2"
expect_ok "qcow2 image holds the data" qemu-io -f qcow2 -c 'read -P 0xc2 20M 2M' -c 'read -P 0xd1 30M 64k' "$T/b.qcow2"

# --- nbdkit memory plugin, with block size constraints ----------------------------
start_nbdkit -U "$T/m.sock" --filter=blocksize-policy memory 8M \
    blocksize-minimum=4096 blocksize-preferred=4096 blocksize-maximum=65536 blocksize-error-policy=error
U="nbd+unix:///?socket=$T/m.sock"
expect_output "nbdkit: block sizes seen" 'block sizes: 4096 4096 65536' \
    IMG info "json:{\"driver\":\"nbd\",\"filename\":\"$U\"}"
expect_ok "nbdkit: a 1 MiB write is split to the 64 KiB maximum" IO -f raw -c 'write -P 0xe1 1M 1M' "$U"
expect_ok "nbdkit: libnbd reads the export" nbdcopy --request-size=65536 "$U" "$T/m.raw"
expect_ok "nbdkit: libnbd saw miniblock's data" qemu-io -f raw -c 'read -P 0xe1 1M 1M' -c 'read -P 0 2M 6M' "$T/m.raw"
expect_ok "nbdkit: unaligned reads are bounced to 4 KiB blocks" \
    IO -f raw -c 'read -P 0xe1 1048577 100' -c 'read -P 0xe1 1M 1M' -c 'read -P 0 1 4095' "$U"
expect_ok "nbdkit: unaligned writes read, merge and write whole blocks" \
    IO -f raw -c 'write -P 0x31 512 512' -c 'write -P 0x32 8191 2' -c 'write -P 0x33 12k 100' -c 'write -P 0x34 16k 16k' -c 'write -z 20000 10000' "$U"
expect_ok "nbdkit: libnbd sees exactly the bytes written" nbdcopy --request-size=65536 "$U" "$T/m2.raw"
expect_ok "nbdkit: ... and nothing around them" qemu-io -f raw \
    -c 'read -P 0 0 512' -c 'read -P 0x31 512 512' -c 'read -P 0 1024 7167' -c 'read -P 0x32 8191 2' \
    -c 'read -P 0 8193 4095' -c 'read -P 0x33 12k 100' -c 'read -P 0 12388 3996' -c 'read -P 0x34 16k 3616' \
    -c 'read -P 0 20000 10000' -c 'read -P 0x34 30000 2768' -c 'read -P 0 32k 64k' "$T/m2.raw"
qemu-io -f raw -c 'write -P 0xe2 400k 8k' "$T/m.raw" >/dev/null
expect_ok "nbdkit: libnbd writes the export" nbdcopy --request-size=65536 "$T/m.raw" "$U"
expect_ok "nbdkit: miniblock reads libnbd's data" IO -f raw -c 'read -P 0xe2 400k 8k' -c 'read -P 0xe1 1M 1M' "$U"
stop "$LAST_PID"

# --- nbdkit file plugin ------------------------------------------------------------
truncate -s 4M "$T/f.img"
start_nbdkit -U "$T/f.sock" file "$T/f.img"
U="nbd+unix:///?socket=$T/f.sock"
expect_ok "nbdkit file: miniblock writes with FUA semantics (cache=writethrough)" \
    IO -f raw -t writethrough -c 'write -P 0x71 0 1M' -c 'write -z 1M 1M' "$U"
expect_ok "nbdkit file: the file holds the data" qemu-io -f raw -r -c 'read -P 0x71 0 1M' -c 'read -P 0 1M 1M' "$T/f.img"
stop "$LAST_PID"

# --- nbdkit log filter: what goes on the wire -------------------------------------
start_nbdkit -U "$T/l.sock" --filter=log --filter=blocksize-policy memory 4M logfile="$T/wire.log" \
    blocksize-maximum=65536
U="nbd+unix:///?socket=$T/l.sock"
expect_ok "log: writes, zeroes, discard, flush" \
    IO -f raw -t writethrough -c 'write -P 1 0 4k' -c 'write -P 2 1M 1M' -c 'write -z 64k 64k' \
    -c 'discard 2M 1M' -c flush "$U"
stop "$LAST_PID"
expect_output "log: cache=writethrough sends FUA" 'Write id=[0-9]+ offset=0x0 count=0x1000 fua=1' cat "$T/wire.log"
n=$(grep -cE 'Write id=[0-9]+ offset=0x1[0-9a-f]{5} count=0x10000 ' "$T/wire.log")
if [ "$n" -eq 16 ]; then ok "log: 1 MiB cut into 16 requests of the 64 KiB maximum"; else not_ok "log: 1 MiB in 16 requests" "$n"; fi
expect_output "log: write -z is NBD_CMD_WRITE_ZEROES" 'Zero id=[0-9]+ offset=0x10000 count=0x10000 trim=0' cat "$T/wire.log"
expect_output "log: flush is NBD_CMD_FLUSH" 'Flush id=' cat "$T/wire.log"
expect_output "log: discard is NBD_CMD_TRIM" 'Trim id=[0-9]+ offset=0x200000 count=0x100000' cat "$T/wire.log"

# --- nbdkit error filter: injected EIO fails the request, not the connection --------
touch "$T/inject"
start_nbdkit -U "$T/e.sock" --filter=error memory 1M error=EIO error-pread-rate=1 error-file="$T/inject"
U="nbd+unix:///?socket=$T/e.sock"
expect_fail "nbdkit error: the read fails with EIO" 'read failed: Input/output error' \
    IO -f raw -c 'read 0 4k' "$U"
# In one session: a failed read, the trigger removed, the next read works.
out=$(printf 'read 0 4k\nsleep 10\n' | IO -f raw "$U" 2>&1; rm -f "$T/inject"; printf 'read -P 0 0 4k\n' | IO -f raw "$U" 2>&1)
expect_output "nbdkit error: later requests work again" 'read 4096/4096 bytes at offset 0' echo "$out"
touch "$T/inject"
out=$( (echo 'read 0 4k'; sleep 0.3; rm -f "$T/inject"; echo 'read -P 0 0 4k') | IO -f raw "$U" 2>&1)
expect_output "nbdkit error: the same connection survives an injected error" \
    'read failed: Input/output error.*\[error\].*read 4096/4096 bytes at offset 0' echo $out
stop "$LAST_PID"

# --- nbdkit delay filter: requests in flight at once, and the timeout ---------------
start_nbdkit -U "$T/d.sock" --filter=delay memory 1M delay-read=1
U="nbd+unix:///?socket=$T/d.sock"
start=$(date +%s.%N)
expect_output "delay: 16 reads of 1 s each, 16 in flight" '^Sending 16 read requests, 4096 bytes each, 16 in parallel' \
    IMG bench -f raw -c 16 -d 16 "$U"
elapsed=$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$start" "$(date +%s.%N)")
if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < 6 else 1)" "$elapsed"; then
    ok "delay: they overlapped (${elapsed}s, not 16 s)"
else
    not_ok "delay: they overlapped" "took ${elapsed}s"
fi
stop "$LAST_PID"
start_nbdkit -U "$T/d2.sock" --filter=delay memory 1M delay-read=5
U="nbd+unix:///?socket=$T/d2.sock"
expect_fail "delay: a silent server times out" \
    "^WARNING: NBD server unix:$T/d2.sock: no reply within 1 seconds \(option 'timeout'\); connection closed$" \
    IO --image-opts -c 'read 0 4k' "driver=raw,file.driver=nbd,file.filename=$U,file.timeout=1"
stop "$LAST_PID"

# --- a qcow2 overlay on local disk over an nbd base --------------------------------
# Locks on the overlay only: the base is the server's to lock.
qemu-img create -q -f raw "$T/base.raw" 4M
qemu-io -f raw -c 'write -P 0x5b 0 1M' "$T/base.raw" >/dev/null
start_qemu_nbd -f raw -r -k "$T/base.sock" "$T/base.raw"
NBD_BASE=$LAST_PID
qemu-img create -q -f qcow2 -b "nbd+unix:///?socket=$T/base.sock" -F raw "$T/ov.qcow2"
expect_output "overlay over nbd: reads the base through nbd" '^read 1048576/1048576 bytes at offset 0$' \
    IO -c 'read -P 0x5b 0 1M' "$T/ov.qcow2"
expect_output "overlay over nbd: lock=exclusive opens (the base gets auto: nothing to lock)" \
    '^read 512/512 bytes at offset 1048576$' IO -l exclusive -c 'write -P 0x6c 1M 512' -c 'read -P 0x6c 1M 512' "$T/ov.qcow2"
coproc OV { IO -l exclusive "$T/ov.qcow2" 2>&1; }
echo length >&"${OV[1]}"
read -r -t 10 _ <&"${OV[0]}"
expect_fail "overlay over nbd: the overlay's file is locked against qemu-io" \
    'Failed to get "consistent read" lock' qemu-io -r -c 'read 0 512' "$T/ov.qcow2"
expect_output "overlay over nbd: miniblock locks only the overlay's file" \
    '^  pid [0-9]+ \(miniblock-io\): uses: consistent read, write, resize / forbids: consistent read, write, write unchanged, resize$' \
    IMG locks "$T/ov.qcow2"
expect_output "overlay over nbd: the base's file is locked by its server" "^  pid $NBD_BASE \\(qemu-nbd\\)" IMG locks "$T/base.raw"
expect_ok "overlay over nbd: and by nobody else" \
    bash -c "! '$MINIBLOCK_IMG' locks '$T/base.raw' | grep -q miniblock-io"
echo quit >&"${OV[1]}"
wait "$OV_PID" 2>/dev/null

finish
