#!/bin/sh
# Sets up (packages), configures and builds into ./build (or $BUILD).
set -eu
cd "$(dirname "$0")/.."
. scripts/ccache-env.sh
sh scripts/setup.sh
BUILD=${BUILD:-build}
if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD"
fi
ninja -C "$BUILD" -j"$(nproc)"
