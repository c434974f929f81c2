#!/bin/sh
# Installs every Debian package that miniblock's build, tests and interop
# peers need.  Idempotent, non-interactive, and quick when all is present.
set -eu

PACKAGES="
  g++ meson ninja-build pkg-config python3 make
  libglib2.0-dev libjson-glib-dev libaio-dev libcmocka-dev zlib1g-dev
  qemu-utils fio nbdkit libnbd-bin cloop-utils strace time
  python3-cffi python3-pytest
  pandoc man-db
  g++-mingw-w64-x86-64 wine64
  ceph-mon ceph-osd ceph-common librbd-dev librados-dev qemu-block-extra
  g++-mingw-w64-x86-64-posix libz-mingw-w64-dev dpkg-dev patch cmake e2fsprogs
  qemu-system-x86
  ccache
"

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -n "$missing" ]; then
    echo "setup: installing:$missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
echo "setup: all packages present"

# GLib for the Windows build, from Debian's source packages, built once into
# /var/cache/miniblock (a few minutes the first time, nothing afterwards).
sh "$(dirname "$0")/mingw-glib.sh" >/dev/null
