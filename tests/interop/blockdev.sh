#!/bin/bash
# The file driver on a real block device (a loop device): length from the
# device, O_DIRECT alignment from its logical block size, libaio, discard,
# and locks on the device node against qemu-io.
. "$(dirname "$0")/lib.sh"
need losetup qemu-io
truncate -s 16M "$T/backing.img"
DEV=$(losetup -f --show --sector-size 4096 "$T/backing.img") || { echo "FATAL: losetup failed"; exit 1; }
trap 'losetup -d "$DEV"; cleanup' EXIT

expect_output "length of a block device" '^16 MiB$' "$MINIBLOCK_IO" -f raw -c length "$DEV"
# With 4 KiB sectors, a 512-byte direct write at 512 fails with EINVAL unless
# the driver found the device's block size and bounced the request.
expect_output "sector-sized requests on a 4 KiB-sector device (alignment from BLKSSZGET)" \
    '^wrote 512/512 bytes at offset 512$' "$MINIBLOCK_IO" -t none -c "write -P 0x11 512 512" \
    --image-opts "driver=file,filename=$DEV"
expect_output "unaligned writes and reads through O_DIRECT and libaio" '^read 1000/1000 bytes at offset 5000$' \
    "$MINIBLOCK_IO" -f raw -t none -i native -c "write -P 0x61 5000 1000" -c "read -P 0x61 5000 1000" "$DEV"
expect_output "neighbours of the unaligned write are intact" '^read 904/904 bytes at offset 4096$' \
    "$MINIBLOCK_IO" -f raw -t none -c "read -P 0 4096 904" "$DEV"
expect_output "qemu-io sees the data on the device" 'read 1000/1000 bytes' qemu-io -f raw -c "read -P 0x61 5000 1000" "$DEV"
expect_output "write-zeroes on a device" '^read 8192/8192 bytes at offset 0$' \
    "$MINIBLOCK_IO" -f raw -c "write -z 0 8k" -c "read -P 0 0 8k" "$DEV"

coproc H { "$MINIBLOCK_IO" -f raw -l exclusive "$DEV"; }
echo length >&"${H[1]}"
read -r -t 10 _ <&"${H[0]}"
expect_fail "qemu-io refused by an exclusive holder of the device" 'Failed to get "consistent read" lock' \
    qemu-io -f raw -r -c "read 0 512" "$DEV"
echo quit >&"${H[1]}"
wait "$H_PID" 2>/dev/null
finish
