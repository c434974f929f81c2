#!/usr/bin/python3
# Simulated power failures during allocating qcow2 writes (crash-sim.sh).
#
#   crash-sim-run.py MINIBLOCK_IO DIR CRASHES BACKING(0|1) SEED
#
# Each run is a miniblock-io writing at random offsets and sizes, several
# requests in flight (aio_write, then aio_flush), sometimes a discard or a
# zero write (references dropped), a compressed write, a guest flush,
# through driver=crash-sim under qcow2; the power fails at a random request
# (or flush) and a random subset of the unflushed writes reaches the file,
# some torn.  qemu-img check then runs: leaks are allowed (exit 3),
# corruption (exit 2) or a failed check is not.  A fresh image every few
# runs keeps the writes allocating (new L2 tables, new refcount blocks).
# Prints one line of counts; exit 1 on any corruption or unexpected exit.
# The first corruption stops the runs: its image and command list are kept
# (the paths are printed) with the whole qemu-img check output.
import os
import random
import re
import shutil
import subprocess
import sys

io, d, want, backing, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", int(sys.argv[5])
r = random.Random(seed)
SIZE = 32 << 20
FAR_SIZE = 1 << 30
EPOCH = 20  # runs per image
CRASH_EXIT = 75
img = d + "/crash.qcow2"

crashes = runs = leaky = corrupt = unexpected = 0
fates = [0, 0, 0, 0]  # unflushed, kept, torn, dropped
first_bad = None
cs = 0
while crashes < want and runs < 3 * want:
    if runs % EPOCH == 0:
        compressed_used = set()  # clusters a compressed write was given
        # Small clusters put several refcount blocks and many L2 tables in
        # reach; 64k is the default most images have.  One image in four
        # is "far": 512-byte clusters, 1 GiB spread over, and the file first
        # grown to just short of what its one-cluster refcount table
        # describes (64 blocks of 256 clusters: 8 MiB), so that the runs
        # grow the refcount table and hook in new refcount blocks all the
        # time (a refcount block every 128 KiB of file).
        far = r.random() < 0.25
        cs = 512 if far else r.choice([512, 4096, 65536])
        size = FAR_SIZE if far else SIZE
        cmd = ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=%d" % cs]
        if backing:
            cmd += ["-b", d + "/base.raw", "-F", "raw"]
        subprocess.run(cmd + [img, str(size)], check=True)
        if far:
            # qemu-io leaves 8.2 to 8.38 MB of file (of the 8 MiB = 8.39 MB
            # its table describes), with the table still one cluster.
            fill = r.randint(7800000, 7959552) // 512 * 512
            subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x77 0 %d" % fill, img],
                           check=True, capture_output=True)
            shutil.copyfile(img, img + ".far")
    elif far and r.random() < 0.7:
        # Most runs start over from that file, so most of them cross the
        # refcount table's reach (a copy costs less than qemu-io).
        shutil.copyfile(img + ".far", img)
        compressed_used = set()
    runs += 1
    cmds = []
    data_end = size // 8 * 7  # data writes below, compressed ones above
    for _ in range(r.randint(4, 10)):
        for _ in range(r.randint(1, 8)):  # the queue depth of this batch
            ln = r.randint(1, 3 * cs) if r.random() < 0.7 else r.randint(1, 256 << 10)
            off = r.randint(0, data_end - ln)
            if r.random() < 0.5:
                off &= ~511
            cmds.append("aio_write -q -P %d %d %d" % (r.randint(1, 255), off, ln))
        cmds.append("aio_flush")
        # Discards and zero writes drop references: refcount decrements,
        # which must reach the disk after the L2 entries that no longer
        # use the clusters.
        if r.random() < 0.3:
            ln = r.randint(1, 16) * cs
            cmds.append("%s %d %d" % (r.choice(["discard", "write -z"]), r.randint(0, (size - ln) // cs) * cs, ln))
        if r.random() < 0.3:
            cmds.append("flush")
        # Compressed clusters (several share a host cluster), in the last
        # eighth of the disk: a compressed write needs clusters never
        # allocated (EIO otherwise, as QEMU's), so data writes stay out of
        # it and no cluster is given twice; discards and zero writes free
        # them.
        if r.random() < 0.2:
            n = r.randint(1, 4)
            first = r.randint(data_end // cs, size // cs - n)
            if not compressed_used & set(range(first, first + n)):
                compressed_used |= set(range(first, first + n))
                cmds.append("write -c -q -P %d %d %d" % (r.randint(1, 255), first * cs, n * cs))
    on_flush = r.random() < 0.25
    after = r.randint(0, 6) if on_flush else r.randint(0, 100)
    # Half the runs with a cache of two L2 tables (written back all the
    # time), half with the default (written back at flushes); and a third
    # with two refcount blocks, which are then written back all the time
    # too, decrements included (after the L2 tables they wait for).
    cache = ",l2-cache-size=%d" % (2 * cs) if r.random() < 0.5 else ""
    if r.random() < 0.33:
        cache += ",refcount-cache-size=%d" % (2 * cs)
    opts = ("driver=qcow2%s,file.driver=crash-sim,file.seed=%d,file.crash-after=%d,"
            "file.crash-on=%s,file.file.driver=file,file.file.filename=%s"
            % (cache, r.randint(0, 1 << 30), after, "flush" if on_flush else "request", img))
    p = subprocess.run([io, "--image-opts", opts], input="\n".join(cmds) + "\n",
                       capture_output=True, text=True, timeout=60)
    out = p.stdout + p.stderr
    if p.returncode == CRASH_EXIT:
        m = re.search(r"crash-sim: simulated power failure at request \d+: (\d+) unflushed writes, "
                      r"(\d+) kept, (\d+) torn, (\d+) dropped", out)
        if not m:
            unexpected += 1
            first_bad = first_bad or "exit %d without the crash-sim message:\n%s" % (p.returncode, out)
            continue
        crashes += 1
        for i in range(4):
            fates[i] += int(m.group(i + 1))
    elif p.returncode != 0 or "failed" in out:
        # Without a power failure every write must succeed.
        unexpected += 1
        first_bad = first_bad or "exit %d, options %s:\n%s" % (p.returncode, opts, out[-2000:])
    c = subprocess.run(["qemu-img", "check", img], capture_output=True, text=True)
    if c.returncode == 3 and "leaked clusters were found" in c.stdout:
        leaky += 1
    elif c.returncode != 0:
        corrupt += 1
        # The first corruption ends the run with everything needed to study
        # it: the image, the commands, the options (with crash-sim's seed)
        # and the whole check output.  The temporary directory goes away
        # with the test, so a copy also goes where the build keeps its logs.
        name = "crash-sim-corrupt-seed%d-run%d" % (seed, runs)
        kept = [d + "/" + name]
        logs = os.environ.get("MESON_BUILD_ROOT") or os.environ.get("MINIBLOCK_BUILD")
        if logs and os.path.isdir(logs):
            os.makedirs(logs + "/meson-logs", exist_ok=True)
            kept.append(logs + "/meson-logs/" + name)
        for k in kept:
            shutil.copyfile(img, k + ".qcow2")
            with open(k + ".cmds", "w") as f:
                f.write("# miniblock-io --image-opts '%s'\n%s\n" % (opts, "\n".join(cmds)))
        first_bad = ("qemu-img check exit %d after run %d (seed %d, cluster_size %d, options %s); "
                     "image and commands kept as %s:\n%s" % (
                         c.returncode, runs, seed, cs, opts, " and ".join(k + ".{qcow2,cmds}" for k in kept),
                         c.stdout + c.stderr))
        break

print("failures simulated: %d, checks finding leaks: %d, corruptions: %d, unexpected exits: %d "
      "(%d runs; unflushed writes at the failures: %d, kept %d, torn %d, dropped %d)"
      % (crashes, leaky, corrupt, unexpected, runs, fates[0], fates[1], fates[2], fates[3]))
if first_bad:
    print("first problem: " + first_bad)
sys.exit(0 if crashes >= want and corrupt == 0 and unexpected == 0 else 1)
