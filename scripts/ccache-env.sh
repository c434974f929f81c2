# Sourced by build.sh and test.sh.  ccache (setup.sh installs it; meson
# uses it when present) lets the second configuration (build-modules)
# reuse the main build's objects instead of compiling the library again:
# sources are the same and most flags too.  Paths are rewritten relative
# to the tree and the build directory is left out of the hash (debug info
# names it), or no object of the other directory would match.
export CCACHE_BASEDIR="$PWD"
export CCACHE_NOHASHDIR=true
