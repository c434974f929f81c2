#!/bin/bash
# A throwaway single-node Ceph cluster for the rbd tests and benchmarks:
# 1 mon, 1 osd, no mgr, memstore (RAM only), auth none for clients (cephx
# accepted too, see below), pool "rbd" of size 1,
# everything in one temporary directory.  About 2.5 s to a usable pool.
#
#   scripts/ceph-cluster.sh start DIR   start it; DIR must not exist yet
#   scripts/ceph-cluster.sh env DIR     print CEPH_CONF=... (eval it)
#   scripts/ceph-cluster.sh stop DIR    kill its daemons, remove DIR
#
# Facts that cost time to find (issue #13):
# - paxos_propose_interval = 0.1, or the start takes 7-10 s;
# - stop with SIGKILL (a SIGTERMed osd waits 5 s for a monitor), and only the
#   pids in the cluster's own pid files;
# - daemons inherit the caller's open fds: close every fd above 2 and give
#   them /dev/null, or a test runner waiting for EOF on its pipe hangs;
# - a random free port, and a new one when the bind loses a race
#   (ms_bind_retry_count = 1 makes a lost bind fail at once).
# A watchdog stops the cluster when the process that started it (the caller
# of "start") is gone without calling "stop": a test runner that SIGKILLs a
# timed-out test leaks no daemons (they daemonize out of its process group).
# The watch timeout is 5 s (default 30), so that a SIGKILLed client's
# exclusive lock comes free within the tests' patience.
# Clients use auth none (no keyring needed), but the mon and the osd accept
# cephx too, so that a test can check what a user the cluster does not know
# gets: a conf with auth_client_required = cephx and a user's keyring (the
# osd has a key of its own, so a known cephx user's I/O works as well).  A
# cluster with auth none would accept any user name.  Costs ~0.3 s of start.
set -eu

die() { echo "ceph-cluster: $*" >&2; exit 1; }

# Runs "$@" in the background as a daemon with no fd of ours but 0-2, and
# those on /dev/null and a log file.
spawn() {
    local log=$1; shift
    (
        for fd in /proc/$BASHPID/fd/*; do
            fd=${fd##*/}
            [ "$fd" -gt 2 ] && eval "exec $fd>&-"
        done
        exec "$@" </dev/null >>"$log" 2>&1
    ) 2>/dev/null
}

# ceph CLI against this cluster, never waiting forever.
c() { timeout 20 ceph -c "$DIR/ceph.conf" --connect-timeout 10 "$@"; }

write_conf() {
    cat >"$DIR/ceph.conf" <<EOF
[global]
fsid = $FSID
mon_host = v2:127.0.0.1:$PORT
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
ms_bind_retry_count = 1
ms_bind_retry_delay = 0
run_dir = $DIR
pid_file = $DIR/\$name.pid
mon_data = $DIR/mon
osd_data = $DIR/osd
osd_objectstore = memstore
memstore_device_bytes = 1073741824
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_crush_chooseleaf_type = 0
paxos_propose_interval = 0.1
osd_client_watch_timeout = 5
mon_osd_adjust_heartbeat_grace = false
rbd_default_features = 61
client_mount_timeout = 10
rados_mon_op_timeout = 10
rados_osd_op_timeout = 30

# Daemons: pid files, sockets and logs in DIR.  Clients (every miniblock,
# qemu-io and rbd process of the tests): no admin socket (they would fight
# over one name) and no log file.
[mon]
auth_service_required = cephx, none
auth_cluster_required = cephx, none
keyring = $DIR/mon.keyring
admin_socket = $DIR/\$name.asok
log_file = $DIR/\$name.log
[osd]
auth_service_required = cephx, none
auth_cluster_required = cephx
admin_socket = $DIR/\$name.asok
log_file = $DIR/\$name.log
[client]
admin_socket =
log_file =
EOF
}

# Starts the mon on a random port; returns 1 if the bind lost a race.
start_mon() {
    PORT=$((20000 + RANDOM % 40000))
    write_conf
    rm -rf "$DIR/mon" "$DIR/monmap"
    monmaptool --create --clobber --fsid "$FSID" --addv a "[v2:127.0.0.1:$PORT]" \
        "$DIR/monmap" >/dev/null
    # cephx on the mon needs its own key from the start.
    [ -f "$DIR/mon.keyring" ] ||
        ceph-authtool --create-keyring "$DIR/mon.keyring" --gen-key -n mon. --cap mon "allow *" >/dev/null
    ceph-mon --mkfs -i a -c "$DIR/ceph.conf" --monmap "$DIR/monmap" >>"$DIR/setup.log" 2>&1 ||
        die "ceph-mon --mkfs failed: $(tail -3 "$DIR/setup.log")"
    spawn "$DIR/mon.out" ceph-mon -i a -c "$DIR/ceph.conf"
    # Up when its pid file is there and it answers; gone when it lost the bind.
    for _ in $(seq 100); do
        if grep -q "unable to bind" "$DIR/mon.a.log" 2>/dev/null; then return 1; fi
        if [ -s "$DIR/mon.a.pid" ] && timeout 5 ceph -c "$DIR/ceph.conf" --connect-timeout 2 \
            mon stat >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.05
    done
    die "the monitor did not come up: $(tail -3 "$DIR/mon.a.log" 2>/dev/null)"
}

start() {
    [ -e "$DIR" ] && die "$DIR exists already"
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    start_watchdog "$PPID"
    FSID=$(cat /proc/sys/kernel/random/uuid)
    local tries=0
    until start_mon; do
        tries=$((tries + 1))
        [ "$tries" -lt 5 ] || die "no free port for the monitor after 5 tries"
        kill_daemons
    done
    local id
    id=$(c osd create) || die "ceph osd create failed"
    mkdir -p "$DIR/osd"
    # The osd talks cephx to the mon (to check cephx clients' tickets): a key
    # of its own (--mkkey, osd_data/keyring), registered before it starts.
    ceph-osd -i "$id" --mkfs --mkkey --no-mon-config -c "$DIR/ceph.conf" >>"$DIR/setup.log" 2>&1 ||
        die "ceph-osd --mkfs failed: $(tail -3 "$DIR/setup.log")"
    c auth add "osd.$id" osd "allow *" mon "allow profile osd" -i "$DIR/osd/keyring" >/dev/null 2>&1 ||
        die "ceph auth add osd.$id failed"
    spawn "$DIR/osd.out" ceph-osd -i "$id" -c "$DIR/ceph.conf"
    c osd pool create rbd 8 >/dev/null 2>&1 || die "pool create failed"
    c osd pool set rbd size 1 --yes-i-really-mean-it >/dev/null 2>&1 || true
    c osd pool application enable rbd rbd >/dev/null 2>&1 || die "application enable failed"
    # Usable when an object can be written: the osd is up and the PGs active.
    for _ in $(seq 300); do
        if echo x | timeout 5 rados -c "$DIR/ceph.conf" -p rbd put probe - 2>/dev/null; then
            timeout 5 rados -c "$DIR/ceph.conf" -p rbd rm probe 2>/dev/null || true
            echo "$DIR/ceph.conf"
            return 0
        fi
        sleep 0.05
    done
    die "the rbd pool did not become usable: $(tail -3 "$DIR/osd.$id.log" 2>/dev/null)"
}

# Polls the owner once a second; stops the cluster when it has gone.
start_watchdog() {
    local owner=$1
    spawn /dev/null setsid -f bash -c '
        while kill -0 "$1" 2>/dev/null && [ -d "$2" ]; do sleep 1; done
        [ -d "$2" ] && exec "$3" stop "$2"' watchdog "$owner" "$DIR" "$(readlink -f "$0")"
}

kill_daemons() {
    local f pid
    for f in "$DIR"/*.pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f" 2>/dev/null) || continue
        case "$pid" in '' | *[!0-9]*) continue ;; esac
        # Only a ceph daemon of ours: a stale pid file must not kill a stranger.
        if grep -qs -- "$DIR/ceph.conf" "/proc/$pid/cmdline"; then
            kill -KILL "$pid" 2>/dev/null || true
            # Gone, or a zombie nobody reaps yet (its memory is freed).
            for _ in $(seq 100); do
                [ -e "/proc/$pid" ] || break
                case "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" in Z | X | '') break ;; esac
                sleep 0.02
            done
        fi
        rm -f "$f"
    done
}

stop() {
    [ -f "$DIR/ceph.conf" ] || { rm -rf "$DIR"; return 0; }
    kill_daemons
    rm -rf "$DIR"
}

[ $# -eq 2 ] || die "usage: $0 start|stop|env DIR"
DIR=$2
case "$1" in
    start)
        # A start that fails half-way leaves no daemon behind.
        trap kill_daemons EXIT
        start
        trap - EXIT
        ;;
    stop) stop ;;
    env) echo "CEPH_CONF=$DIR/ceph.conf" ;;
    *) die "unknown command '$1' (start, stop, env)" ;;
esac
