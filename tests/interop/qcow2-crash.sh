#!/bin/bash
# Crash consistency: a miniblock writer doing allocating writes (new L2
# tables, new refcount blocks, copy-on-write over a backing file) is killed
# with SIGKILL at random points (300 times); qemu-img check must then report at most
# leaked clusters, never corruption, and the next writer must carry on
# without growing the file past the tail the killed one preallocated.
source "$(dirname "$0")/lib.sh"
need qemu-img qemu-io python3
cd "$T"

qemu-img create -q -f raw base.raw 8M
qemu-io -f raw -c 'write -P 0x3c 0 8M' base.raw >/dev/null

# Four command lists (3000 random writes each), reused round-robin: the
# image differs at every kill, and so does the point where it dies.
for k in 0 1 2 3; do
    python3 -c "
import random
r = random.Random($RANDOM)
for _ in range(3000):
    ln = r.randint(1, 70000)
    print('write -P %d %d %d' % (r.randint(1, 255), r.randint(0, 8*1024*1024 - ln), ln))" >cmds$k
done

KILLS=${KILLS:-100}
for cs in 512 4k 64k; do
    rm -f ov.qcow2
    csb=$(numfmt --from=iec "${cs^^}")
    "$MINIBLOCK_IMG" create -f qcow2 -o cluster_size=$cs -b base.raw -F raw ov.qcow2 >/dev/null
    bad=0 leaky=0 largest=0
    for i in $(seq "$KILLS"); do
        # A cache of two L2 tables: tables are written back (in dependency
        # order) all the time, not only at exit.
        "$MINIBLOCK_IO" --image-opts "driver=qcow2,file.filename=ov.qcow2,l2-cache-size=$((2 * csb))" \
            <cmds$((i % 4)) >/dev/null 2>&1 &
        pid=$!
        sleep "0.$((RANDOM % 2))$((RANDOM % 10))$((RANDOM % 10))"
        kill -9 $pid 2>/dev/null
        wait $pid 2>/dev/null
        qemu-img check ov.qcow2 >check.out 2>&1
        rc=$?
        sz=$(stat -c %s ov.qcow2)
        [ "$sz" -gt "$largest" ] && largest=$sz
        case $rc in
        0) ;;
        3) leaky=$((leaky + 1)) ;;
        *)
            # The first corruption stops this cluster size with what it
            # takes to study it: the image (also where the build keeps its
            # logs: $T goes away with the test), the command list, the
            # whole check output.
            bad=$i
            keep=("$T/crash-corrupt-$cs-kill$i")
            logs=${MESON_BUILD_ROOT:-${MINIBLOCK_BUILD:-}}
            if [ -n "$logs" ] && [ -d "$logs" ]; then
                mkdir -p "$logs/meson-logs"
                keep+=("$logs/meson-logs/qcow2-crash-corrupt-$cs-kill$i")
            fi
            for k in "${keep[@]}"; do cp ov.qcow2 "$k.qcow2"; cp cmds$((i % 4)) "$k.cmds"; done
            break
            ;;
        esac
    done
    if [ $bad -eq 0 ]; then
        ok "cluster_size=$cs: $KILLS kills, no corruption ($leaky left leaks)"
    else
        not_ok "cluster_size=$cs: corruption after kill $bad of $KILLS (command list cmds$((bad % 4)), $(stat -c %s ov.qcow2) bytes; kept as ${keep[*]/%/.qcow2})" \
            "qemu-img check exit $rc:" "$(cat check.out)"
    fi
    # Each writer grows the file 32 MiB ahead of its allocations, and is
    # killed with that tail in place; the next one gives the tail back and
    # allocates from the last refcounted cluster on.  8 MiB of guest data,
    # the metadata, what the kills leaked (at most one request's clusters
    # each) and one tail (33 MiB with its alignment) stay under 64 MiB;
    # allocating past each tail grew the file by 32 MiB a kill.
    if [ "$largest" -le $((64 << 20)) ]; then
        ok "cluster_size=$cs: the file stayed within 64 MiB over the kills (largest $largest bytes)"
    else
        not_ok "cluster_size=$cs: the file stayed within 64 MiB over the kills" "largest $largest bytes"
    fi
    # Leaks are repairable and the image stays usable.
    expect_output "cluster_size=$cs: miniblock-img check -r leaks repairs" "No errors were found" \
        "$MINIBLOCK_IMG" check -r leaks ov.qcow2
    expect_output "cluster_size=$cs: qemu-img agrees after repair" "No errors were found" qemu-img check ov.qcow2
done

finish
