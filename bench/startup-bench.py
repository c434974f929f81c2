#!/usr/bin/python3
"""Start-up cost of the tools, not a test: miniblock-img / miniblock-io
against qemu-img / qemu-io 7.2 on the same work, each a fresh process.

Cases (the same command line for both tools):
  version   TOOL --version
  info      TOOL info -f qcow2 X.qcow2          (a small empty qcow2)
  length    TOOL -f qcow2 -c length X.qcow2     (miniblock-io vs qemu-io)

Each round runs every case once per tool, interleaved, the order
alternating each round; reported are the median, min and max of the wall
time (time.perf_counter around subprocess.run) and of the CPU time
(user + system, from the child's rusage), and the ratio of the medians
miniblock / qemu (<= 1.0: miniblock starts at least as fast).

  bench/startup-bench.py [BUILD_DIR] [--rounds N] [--other NAME=DIR]

--other NAME=DIR adds a third column: miniblock-img and miniblock-io from
DIR (e.g. the binaries of an older build, to compare before and after).
The machine may be shared: read the ratios, and the load printed first.
"""
import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def run_once(argv):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit("startup-bench: failed (%d): %s\n%s" % (p.returncode, " ".join(argv),
                                                         p.stderr.decode(errors="replace")))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall * 1000.0, cpu * 1000.0


def fmt(vals):
    return "%6.2f (%6.2f-%6.2f)" % (statistics.median(vals), min(vals), max(vals))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build", nargs="?", default="build")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--other", action="append", default=[], metavar="NAME=DIR")
    args = ap.parse_args()
    if args.rounds < 3:
        sys.exit("startup-bench: --rounds must be at least 3")

    tools = {"qemu": ("qemu-img", "qemu-io"),
             "miniblock": (os.path.join(args.build, "tools", "miniblock-img"),
                           os.path.join(args.build, "tools", "miniblock-io"))}
    for o in args.other:
        name, _, d = o.partition("=")
        if not name or not d:
            sys.exit("startup-bench: --other wants NAME=DIR, not '%s'" % o)
        tools[name] = (os.path.join(d, "miniblock-img"), os.path.join(d, "miniblock-io"))
    for img, io in tools.values():
        for t in (img, io):
            if not shutil.which(t):
                sys.exit("startup-bench: %s not found" % t)

    w = tempfile.mkdtemp(prefix="mb-startup-bench.")
    try:
        qcow2 = os.path.join(w, "x.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", qcow2, "64M"], check=True)
        cases = {
            "version": lambda img, io: [img, "--version"],
            "info": lambda img, io: [img, "info", "-f", "qcow2", qcow2],
            "length": lambda img, io: [io, "-f", "qcow2", "-c", "length", qcow2],
        }
        res = {(c, t): ([], []) for c in cases for t in tools}
        names = list(tools)
        for r in range(args.rounds):
            order = names if r % 2 == 0 else names[::-1]
            for c, mk in cases.items():
                for t in order:
                    wall, cpu = run_once(mk(*tools[t]))
                    res[(c, t)][0].append(wall)
                    res[(c, t)][1].append(cpu)
    finally:
        shutil.rmtree(w)

    print("startup-bench: %d rounds, %d CPUs, load %s" %
          (args.rounds, os.cpu_count(), " ".join(open("/proc/loadavg").read().split()[:3])))
    print("qemu: " + subprocess.run(["qemu-img", "--version"], capture_output=True,
                                    text=True).stdout.splitlines()[0])
    print("ms per run: median (min-max)")
    print("%-8s %-10s %-22s %-22s %s" % ("case", "tool", "wall ms", "cpu ms", "wall ratio to qemu"))
    for c in cases:
        qw = statistics.median(res[(c, "qemu")][0])
        for t in names:
            wall, cpu = res[(c, t)]
            print("%-8s %-10s %-22s %-22s %.2f" % (c, t, fmt(wall), fmt(cpu),
                                                  statistics.median(wall) / qw))


if __name__ == "__main__":
    main()
