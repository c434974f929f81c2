#!/bin/sh
# Builds GLib for x86_64-w64-mingw32 from Debian 12's own source packages
# (glib2.0, pcre2, libffi; zlib from libz-mingw-w64-dev), once, into a prefix
# outside any build tree, and prints that prefix on its last line.  CMocka
# (for the C API suite built for Windows) goes into the same prefix.
#
# usage: scripts/mingw-glib.sh            (build if needed, print the prefix)
#        scripts/mingw-glib.sh --print    (print the prefix; build nothing)
#
# Debian packages no GLib for mingw, and the Windows build of miniblock needs
# it (its event loop is a GMainContext).  The prefix is keyed on the source
# package versions, /var/cache/miniblock/mingw-glib-<versions>, so a second
# run costs nothing and a new Debian point release builds a new prefix.
# Nothing is downloaded from outside Debian's archive.
#
# Facts this script encodes (each cost time to find):
# - `apt-get source` needs deb-src entries; they mirror the machine's deb
#   entries, are added for the download only, and removed by a trap.
# - pcre2 is pinned to 10.42-1 from bookworm main: the security update's
#   source files are not downloadable from the archive.
# - GLib wants dependency('intl') even with -Dnls=disabled, and its fallback
#   (proxy-libintl) is a network download: a pass-through libintl stub (the
#   messages stay English, as with nls disabled) is built into the prefix.
# - Debian's 01_gettext-desktopfiles.patch and
#   debian/02_gettext-desktopfiles-ubuntu.patch use LC_MESSAGES, which
#   MSVCRT lacks: both are reverse-applied.
# - Meson 1.0 spells the cross-file key `pkgconfig`.
# - No Wine exe_wrapper for GLib's configure: slower, and it would record
#   Wine's C runtime behaviour as the target's.
# - The -posix compilers (std::thread for miniblock); with static libgcc and
#   libstdc++ the only runtime DLL added is libwinpthread-1.dll.
set -eu

HOST=x86_64-w64-mingw32
CACHE=${MINIBLOCK_MINGW_CACHE:-/var/cache/miniblock}
PCRE2_VERSION=10.42-1

# The versions are those of the Linux -dev packages scripts/setup.sh
# installed (dpkg-query: fast, as this is the whole cost of a second run),
# else apt's candidates; the source packages of those versions are built.
candidate() {
    v=$(dpkg-query -W -f='${db:Status-Abbrev} ${Version}' "$1" 2>/dev/null | sed -n 's/^ii  *//p')
    [ -n "$v" ] || v=$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: //p')
    echo "$v"
}
GLIB_VERSION=$(candidate libglib2.0-dev)
FFI_VERSION=$(candidate libffi-dev)
CMOCKA_VERSION=$(candidate libcmocka-dev)
for v in "$GLIB_VERSION" "$FFI_VERSION" "$CMOCKA_VERSION"; do
    if [ -z "$v" ] || [ "$v" = "(none)" ]; then
        echo "mingw-glib: no candidate version for libglib2.0-dev, libffi-dev or libcmocka-dev (apt-get update?)" >&2
        exit 1
    fi
done
PREFIX=$CACHE/mingw-glib-$GLIB_VERSION-pcre2-$PCRE2_VERSION-ffi-$FFI_VERSION-cmocka-$CMOCKA_VERSION

if [ "${1:-}" = --print ]; then
    echo "$PREFIX"
    exit 0
fi
if [ -f "$PREFIX/.complete" ]; then
    echo "$PREFIX"
    exit 0
fi

for tool in $HOST-gcc-posix $HOST-g++-posix dpkg-source meson ninja pkg-config cmake patch; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "mingw-glib: $tool not found (scripts/setup.sh installs it)" >&2
        exit 1
    }
done
[ -f /usr/$HOST/lib/pkgconfig/zlib.pc ] || {
    echo "mingw-glib: /usr/$HOST/lib/pkgconfig/zlib.pc not found (install libz-mingw-w64-dev)" >&2
    exit 1
}

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
start=$(date +%s)
mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/build.XXXXXX")
STAGE=$PREFIX.tmp.$$
SRC_LIST=/etc/apt/sources.list.d/miniblock-mingw-src.sources
cleanup() {
    $SUDO rm -f "$SRC_LIST"
    # MINIBLOCK_MINGW_KEEP=1 keeps the sources, logs and staging prefix of
    # a failed build.
    if [ "${MINIBLOCK_MINGW_KEEP:-0}" = 1 ]; then
        echo "mingw-glib: kept: $WORK $STAGE" >&2
    else
        rm -rf "$WORK" "$STAGE"
    fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

echo "mingw-glib: building GLib $GLIB_VERSION (pcre2 $PCRE2_VERSION, libffi $FFI_VERSION, cmocka $CMOCKA_VERSION) into $PREFIX" >&2

# --- sources, from the archive the machine already uses -------------------
# deb822 files: each "Types: deb" stanza again as deb-src.  A one-line
# sources.list gets the same treatment.
{
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        [ "$f" = "$SRC_LIST" ] && continue
        if grep -q '^Types:.*deb-src' "$f"; then continue; fi
        if grep -qi 'debian' "$f"; then
            sed 's/^Types: deb$/Types: deb-src/' "$f"
            echo
        fi
    done
    if [ -f /etc/apt/sources.list ]; then
        grep -E '^deb ' /etc/apt/sources.list | while read -r _ rest; do
            uri=${rest%% *}; rest=${rest#* }
            suite=${rest%% *}; comps=${rest#* }
            printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: %s\n\n' "$uri" "$suite" "$comps"
        done
    fi
} | $SUDO tee "$SRC_LIST" >/dev/null
$SUDO apt-get update -qq
cd "$WORK"
# apt warns that it downloads as root when _apt can't write here: harmless.
apt-get source -qq --download-only \
    "glib2.0=$GLIB_VERSION" "pcre2=$PCRE2_VERSION" "libffi=$FFI_VERSION" "cmocka=$CMOCKA_VERSION" 2>&1 |
    grep -v 'unsandboxed as root' >&2 || true
$SUDO rm -f "$SRC_LIST"
# apt checked every file against the archive's signed Sources index; the
# .dsc signatures (uploaders' keys, not installed here) add nothing to that.
for dsc in glib2.0_*.dsc pcre2_*.dsc libffi_*.dsc cmocka_*.dsc; do
    [ -f "$dsc" ] || { echo "mingw-glib: source package missing: $dsc" >&2; exit 1; }
    dpkg-source --no-check -x "$dsc" >/dev/null
done

mkdir -p "$STAGE/lib/pkgconfig" "$STAGE/include" "$STAGE/bin"
export PKG_CONFIG_LIBDIR="$STAGE/lib/pkgconfig:/usr/$HOST/lib/pkgconfig"
JOBS=$(nproc)

# --- pcre2 and libffi: static, folded into GLib's DLLs ----------------------
# Side by side: most of their time is configure, one process each.
(cd pcre2-*/ && ./configure -q --host=$HOST --prefix="$STAGE" \
    CC=$HOST-gcc-posix --disable-shared --enable-static \
    --disable-pcre2grep-libz --disable-pcre2grep-libbz2 --disable-pcre2test-libreadline &&
    make -s -j"$JOBS" libpcre2-8.la && make -s install-libLTLIBRARIES install-includeHEADERS \
        install-nodist_includeHEADERS install-pkgconfigDATA) >"$WORK/pcre2.log" 2>&1 &
pcre2_pid=$!
(cd libffi-*/ && ./configure -q --host=$HOST --prefix="$STAGE" \
    CC=$HOST-gcc-posix --disable-shared --enable-static --disable-docs &&
    make -s -j"$JOBS" && make -s install) >"$WORK/libffi.log" 2>&1 &
ffi_pid=$!
wait "$pcre2_pid" || { tail -30 "$WORK/pcre2.log" >&2; exit 1; }
wait "$ffi_pid" || { tail -30 "$WORK/libffi.log" >&2; exit 1; }

# --- the libintl stub -------------------------------------------------------
cat >"$STAGE/include/libintl.h" <<'EOF'
/* Pass-through libintl for miniblock's mingw GLib (scripts/mingw-glib.sh):
 * GLib is built with -Dnls=disabled yet links "intl"; messages stay English. */
#ifndef MINIBLOCK_LIBINTL_STUB_H
#define MINIBLOCK_LIBINTL_STUB_H
#ifdef __cplusplus
extern "C" {
#endif
/* format_arg, as the real libintl.h says: GLib builds with
 * -Werror=format-nonliteral and passes translations as formats. */
#define MB_FMT(n) __attribute__((__format_arg__(n)))
char *gettext(const char *msgid) MB_FMT(1);
char *dgettext(const char *domain, const char *msgid) MB_FMT(2);
char *dcgettext(const char *domain, const char *msgid, int category) MB_FMT(2);
char *ngettext(const char *msgid, const char *plural, unsigned long n) MB_FMT(1) MB_FMT(2);
char *dngettext(const char *domain, const char *msgid, const char *plural, unsigned long n) MB_FMT(2) MB_FMT(3);
char *dcngettext(const char *domain, const char *msgid, const char *plural, unsigned long n, int category) MB_FMT(2) MB_FMT(3);
char *textdomain(const char *domain);
char *bindtextdomain(const char *domain, const char *dir);
char *bind_textdomain_codeset(const char *domain, const char *codeset);
#ifdef __cplusplus
}
#endif
#endif
EOF
cat >"$WORK/intl.c" <<'EOF'
#include <libintl.h>
char *gettext(const char *m) { return (char *)m; }
char *dgettext(const char *d, const char *m) { (void)d; return (char *)m; }
char *dcgettext(const char *d, const char *m, int c) { (void)d; (void)c; return (char *)m; }
char *ngettext(const char *m, const char *p, unsigned long n) { return (char *)(n == 1 ? m : p); }
char *dngettext(const char *d, const char *m, const char *p, unsigned long n) { (void)d; return (char *)(n == 1 ? m : p); }
char *dcngettext(const char *d, const char *m, const char *p, unsigned long n, int c) { (void)d; (void)c; return (char *)(n == 1 ? m : p); }
char *textdomain(const char *d) { return (char *)(d ? d : "messages"); }
char *bindtextdomain(const char *d, const char *dir) { (void)d; return (char *)dir; }
char *bind_textdomain_codeset(const char *d, const char *c) { (void)d; return (char *)c; }
EOF
$HOST-gcc-posix -O2 -I"$STAGE/include" -c "$WORK/intl.c" -o "$WORK/intl.o"
$HOST-ar rcs "$STAGE/lib/libintl.a" "$WORK/intl.o"

# --- GLib ------------------------------------------------------------------
cd "$WORK"/glib2.0-*/
# dpkg-source applied Debian's patches; these two need LC_MESSAGES.
patch -s -R -p1 <debian/patches/debian/02_gettext-desktopfiles-ubuntu.patch
patch -s -R -p1 <debian/patches/01_gettext-desktopfiles.patch
cat >"$WORK/cross.ini" <<EOF
[binaries]
c = '$HOST-gcc-posix'
cpp = '$HOST-g++-posix'
ar = '$HOST-ar'
strip = '$HOST-strip'
windres = '$HOST-windres'
pkgconfig = 'pkg-config'

[properties]
pkg_config_libdir = ['$STAGE/lib/pkgconfig', '/usr/$HOST/lib/pkgconfig']

[built-in options]
c_args = ['-I$STAGE/include']
c_link_args = ['-L$STAGE/lib']
cpp_args = ['-I$STAGE/include']
cpp_link_args = ['-L$STAGE/lib']

[host_machine]
system = 'windows'
cpu_family = 'x86_64'
cpu = 'x86_64'
endian = 'little'
EOF
# Meson's "intl" lookup runs the C++ compiler (GLib enables C++), hence
# the cpp_* arguments in the cross file.
meson setup "$WORK/glib-build" --cross-file "$WORK/cross.ini" --wrap-mode=nodownload \
    --prefix="$STAGE" --libdir=lib --buildtype=release --default-library=shared \
    -Dtests=false -Dinstalled_tests=false -Dnls=disabled -Dman=false -Dgtk_doc=false \
    -Dlibmount=disabled -Dselinux=disabled -Dxattr=false -Dsysprof=disabled \
    -Dlibelf=disabled -Dglib_debug=disabled \
    >"$WORK/glib-setup.log" 2>&1 || { tail -40 "$WORK/glib-setup.log" >&2; exit 1; }
echo "mingw-glib: pcre2, libffi and GLib configured after $(( $(date +%s) - start )) s" >&2
ninja -C "$WORK/glib-build" -j"$JOBS" >"$WORK/glib-build.log" 2>&1 ||
    { tail -40 "$WORK/glib-build.log" >&2; exit 1; }
meson install -C "$WORK/glib-build" --quiet >"$WORK/glib-install.log" 2>&1 ||
    { tail -40 "$WORK/glib-install.log" >&2; exit 1; }

# --- CMocka (the unit tests' framework), shared, with CMake ------------------
# libgcc linked in statically, as everywhere here: no libgcc_s_seh-1.dll.
cd "$WORK"/cmocka-*/
cmake -S . -B "$WORK/cmocka-build" -DCMAKE_SYSTEM_NAME=Windows \
    -DCMAKE_C_COMPILER=$HOST-gcc-posix -DCMAKE_RC_COMPILER=$HOST-windres \
    -DCMAKE_FIND_ROOT_PATH=/usr/$HOST -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_SHARED_LINKER_FLAGS=-static-libgcc \
    -DCMAKE_INSTALL_PREFIX="$STAGE" -DUNIT_TESTING=OFF -DWITH_EXAMPLES=OFF \
    >"$WORK/cmocka.log" 2>&1 &&
    cmake --build "$WORK/cmocka-build" -j "$JOBS" >>"$WORK/cmocka.log" 2>&1 &&
    cmake --install "$WORK/cmocka-build" >>"$WORK/cmocka.log" 2>&1 ||
    { tail -30 "$WORK/cmocka.log" >&2; exit 1; }

# The .pc files name the staging directory: point them at the final prefix.
for pc in "$STAGE"/lib/pkgconfig/*.pc; do
    sed -i "s|$STAGE|$PREFIX|g" "$pc"
done
# zlib (GLib's gio links it) and the winpthread runtime, next to the DLLs so
# that WINEPATH=<prefix>/bin finds every DLL a program needs.
cp /usr/$HOST/lib/zlib1.dll "$STAGE/bin/"
cp "$($HOST-gcc-posix -print-file-name=libwinpthread-1.dll)" "$STAGE/bin/"

# miniblock's cross file for this prefix, used after win32/x86_64-w64-mingw32.ini.
cat >"$STAGE/miniblock-cross.ini" <<EOF
# Generated by scripts/mingw-glib.sh: GLib for mingw in $PREFIX.
# meson setup --cross-file win32/x86_64-w64-mingw32.ini --cross-file $PREFIX/miniblock-cross.ini
[binaries]
pkgconfig = 'pkg-config'

[properties]
pkg_config_libdir = ['$PREFIX/lib/pkgconfig', '/usr/$HOST/lib/pkgconfig']
EOF
cat >"$STAGE/VERSIONS" <<EOF
glib2.0 $GLIB_VERSION
pcre2 $PCRE2_VERSION
libffi $FFI_VERSION
cmocka $CMOCKA_VERSION
zlib $(dpkg-query -W -f='${Version}' libz-mingw-w64-dev)
built in $(( $(date +%s) - start )) s on $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)
EOF
touch "$STAGE/.complete"
rm -rf "$PREFIX"
mv "$STAGE" "$PREFIX"
echo "mingw-glib: done in $(( $(date +%s) - start )) s" >&2
echo "$PREFIX"
