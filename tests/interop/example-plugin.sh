#!/bin/bash
# The out-of-tree example driver (examples/pattern-driver) built the way a
# stranger would build it: miniblock installed into a temporary root, the
# driver compiled with make against the installed header through
# pkg-config only, loaded through MINIBLOCK_MODULE_DIR, used by miniblock-io.
. "$(dirname "$0")/lib.sh"
need meson make cc pkg-config
DEST="$T/root"
if meson install -C "$MINIBLOCK_BUILD" --no-rebuild --destdir "$DEST" >"$T/install.log" 2>&1; then
    ok "meson install into a temporary root"
else
    not_ok "meson install into a temporary root" "$(tail -5 "$T/install.log")"
fi
PC=$(dirname "$(find "$DEST" -name miniblock.pc | head -1)")
if [ -f "$(find "$DEST" -path '*/include/miniblock/driver.h' | head -1)" ]; then
    ok "driver.h is installed"
else
    not_ok "driver.h is installed"
fi
cp -r "$MINIBLOCK_SOURCE/examples/pattern-driver" "$T/src"
# Only the installed tree: no -I into the source or build directories.
if PKG_CONFIG_PATH="$PC" PKG_CONFIG_SYSROOT_DIR="$DEST" make -C "$T/src" >"$T/make.log" 2>&1; then
    ok "the example builds against the installed header via pkg-config"
else
    not_ok "the example builds against the installed header via pkg-config" "$(cat "$T/make.log")"
fi
if grep -q -- "-I$DEST" "$T/make.log" && ! grep -q -- "$MINIBLOCK_SOURCE\|$MINIBLOCK_BUILD" "$T/make.log"; then
    ok "the compile line names the installed include directory only"
else
    not_ok "the compile line names the installed include directory only" "$(cat "$T/make.log")"
fi
export MINIBLOCK_MODULE_DIR="$T/src${MINIBLOCK_MODULE_DIR:+:$MINIBLOCK_MODULE_DIR}"
expect_ok "miniblock-io reads the pattern through the module" \
    "$MINIBLOCK_IO" -c 'read -P 0x5a 0 4096' -c 'read -P 0x5a 1044480 4096' \
    --image-opts driver=raw,file.driver=pattern,file.byte=0x5a
expect_output "its size option has its declared default (1M)" '^1 MiB' \
    "$MINIBLOCK_IO" -c length --image-opts driver=raw,file.driver=pattern
expect_fail "its own error reaches the user" 'byte 300 is not from 0 to 255' \
    "$MINIBLOCK_IO" -c length --image-opts driver=raw,file.driver=pattern,file.byte=300
expect_fail "it has no write callback: writes are not supported" 'Operation not supported' \
    "$MINIBLOCK_IO" -c 'write 0 512' --image-opts driver=raw,file.driver=pattern
expect_output "miniblock-img --help lists it as a module" 'Supported formats from modules:.* pattern' \
    "$MINIBLOCK_IMG" --help
finish
