#!/bin/sh
# The main job: set up, build, then show the lock matrix of one raw image.
set -eu
cd "$(dirname "$0")/.."
sh scripts/build.sh
exec bash scripts/lock-matrix.sh "${BUILD:-build}"
