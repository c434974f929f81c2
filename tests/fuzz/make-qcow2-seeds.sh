#!/bin/bash
# Regenerates tests/fuzz/qcow2-seeds/ with qemu-img: small images (512-byte
# clusters) covering v2, v3, data, zero and compressed clusters, a backing
# name and a backing format.  Run from anywhere; needs qemu-img and qemu-io.
set -eu
out=$(cd "$(dirname "$0")" && pwd)/qcow2-seeds
mkdir -p "$out"
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
cd "$t"
qemu-img create -q -f qcow2 -o cluster_size=512 "$out/v3-empty.qcow2" 64k
qemu-img create -q -f qcow2 -o cluster_size=512,compat=0.10 v2.qcow2 64k
qemu-io -c 'write -P 1 0 1536' -c 'write -P 2 30000 700' v2.qcow2 >/dev/null
cp v2.qcow2 "$out/v2-data.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=512 v3.qcow2 64k
qemu-io -c 'write -P 3 512 2048' -c 'write -z 8192 1024' -c 'write -c -P 4 16384 512' v3.qcow2 >/dev/null
cp v3.qcow2 "$out/v3-data-zero-compressed.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=512 -b base.raw -F raw -u "$out/v3-backing.qcow2" 64k
qemu-img create -q -f qcow2 -o cluster_size=1k,refcount_bits=1 "$out/v3-refcount1.qcow2" 32k
