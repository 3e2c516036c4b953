#!/usr/bin/env bash
# make check-package: the Debian package, built as a user would build it
# and tested as installed.  As root, on a Debian 12 machine with
# install-deps' packages:
#
#   - a fresh clone of the committed tree builds with dpkg-buildpackage
#     (one job unless DEB_BUILD_OPTIONS says otherwise), its version is
#     configure.ac's, and lintian reports no error;
#   - the package holds the filter and plugin in nbdkit's own directories,
#     nbdzone, the three manual pages, the units and the configuration;
#   - installed (dpkg -i), it starts nothing; the installed units verify
#     clean with their manual pages; the system nbdkit finds the filter
#     and plugin by name and serves an encrypted emulated image that
#     nbdcopy writes and reads back, /usr/bin/nbdzone reports its zones,
#     and the image holds no plaintext;
#   - dpkg --purge removes every file it installed.
#
# The package must not be installed before: the test installs and purges
# it.  Prints "check-package: N passed, 0 failed" at the end.
set -euo pipefail

top_srcdir="${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}"
pkg=nbdkit-zoned

fail () { echo "check-package: FAIL: $*" >&2; exit 1; }
passed=0
ok () { echo "check-package: ok: $*"; passed=$((passed + 1)); }

[ "$(id -u)" = 0 ] || fail "run as root (it installs and removes the package)"
for tool in dpkg-buildpackage dh lintian systemd-analyze nbdkit nbdcopy nbdinfo git; do
    command -v "$tool" >/dev/null || fail "$tool is missing: run ./install-deps"
done
if dpkg-query -W -f '${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed; then
    fail "$pkg is installed already; this test installs and purges it"
fi

work="$(mktemp -d)"
installed=
cleanup ()
{
    local status=$?
    [ -n "${server:-}" ] && { kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || :; }
    [ -n "$installed" ] && dpkg --purge "$pkg" >/dev/null 2>&1
    rm -rf "$work"
    exit $status
}
server=
trap cleanup EXIT

# ---- Build from a clone: what is committed, nothing of this tree's build
start=$(date +%s)
git clone -q "$top_srcdir" "$work/src"
version="$(sed -n 's/^AC_INIT(\[nbdkit-zoned\], \[\([^]]*\)\]).*/\1/p' "$work/src/configure.ac")"
[ -n "$version" ] || fail "no version in configure.ac's AC_INIT"
(cd "$work/src" &&
     DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-parallel=1}" \
     dpkg-buildpackage -b -us -uc) > "$work/build.log" 2>&1 ||
    { tail -n 60 "$work/build.log"; fail "dpkg-buildpackage failed"; }
deb="$work/${pkg}_${version}_$(dpkg --print-architecture).deb"
[ -f "$deb" ] || { ls "$work"; fail "no $deb: is debian/changelog's version configure.ac's ($version)?"; }
ok "dpkg-buildpackage built $(basename "$deb") in $(( $(date +%s) - start )) s"

# lintian: errors fail, warnings are shown.
lintian --tag-display-limit 0 "$work/${pkg}_${version}_"*.changes > "$work/lintian.log" 2>&1 || :
cat "$work/lintian.log"
grep -q '^E: ' "$work/lintian.log" && fail "lintian reports errors"
grep -q '^W: ' "$work/lintian.log" && echo "check-package: lintian warnings above"
ok "lintian: no errors"

# ---- What the package holds
filterdir="$(pkg-config --variable=filterdir nbdkit)"
plugindir="$(pkg-config --variable=plugindir nbdkit)"
dpkg-deb -c "$deb" | awk '{ print $NF }' | sed 's|^\./|/|' > "$work/contents"
for f in "$filterdir/nbdkit-cryptinline-filter.so" "$plugindir/nbdkit-zbd-plugin.so" \
         /usr/bin/nbdzone /usr/share/man/man1/nbdkit-cryptinline-filter.1.gz \
         /usr/share/man/man1/nbdkit-zbd-plugin.1.gz /usr/share/man/man1/nbdzone.1.gz \
         /lib/systemd/system/nbdkit-zoned.service /lib/systemd/system/nbdkit-zoned.socket \
         /etc/default/nbdkit-zoned /usr/share/doc/nbdkit-zoned/copyright \
         /usr/share/doc/nbdkit-zoned/zoned-nbd-profile.md.gz \
         /usr/share/doc/nbdkit-zoned/examples/encrypted-key.conf \
         /usr/share/doc/nbdkit-zoned/examples/tls.conf \
         /usr/share/doc/nbdkit-zoned/examples/shelf.conf; do
    grep -qxF "$f" "$work/contents" || fail "the package does not hold $f"
done
grep -E '\.la$|\.a$' "$work/contents" && fail "libtool archives or static libraries in the package"
dpkg-deb -f "$deb" Depends | grep -qE '(^|, )nbdkit(,|$| )' || fail "the package does not depend on nbdkit"
ok "the package holds the modules in nbdkit's directories, nbdzone, 3 manual pages, the zoned NBD profile, the units and the configuration"

# ---- Installed
dpkg -i "$deb" > "$work/install.log" 2>&1 || { cat "$work/install.log"; fail "dpkg -i"; }
installed=1
[ "$(dpkg-query -W -f '${Version}' "$pkg")" = "$version" ] || fail "installed version"
[ -e /etc/systemd/system/sockets.target.wants/nbdkit-zoned.socket ] &&
    fail "installing the package enabled the socket (it needs a key and a drive first)"
out="$(systemd-analyze verify /lib/systemd/system/nbdkit-zoned.socket \
          /lib/systemd/system/nbdkit-zoned.service 2>&1)" ||
    { echo "$out"; fail "systemd-analyze verify of the installed units"; }
[ -z "$out" ] || { echo "$out"; fail "systemd-analyze verify of the installed units has findings"; }
ok "installed $version, nothing enabled, the installed units verify clean (manual pages included)"

# The smoke test uses the installed files only: the system nbdkit finds
# the filter and plugin by name, nbdzone is /usr/bin's, and PATH holds
# nothing of the build.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
img="$work/zoned.img"
key="$work/drive.key"
sock="$work/nbd.sock"
uri="nbd+unix:///?socket=$sock"
(umask 077; head -c 64 /dev/urandom > "$key")
nbdkit --foreground -U "$sock" --filter=cryptinline zbd emulate="$img" \
       size=256M zone-size=16M conventional-zones=1 crypt-key-file="$key" \
       > "$work/server.log" 2>&1 &
server=$!
for ((i = 0; i < 100; i++)); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { cat "$work/server.log"; fail "the installed filter and plugin do not start"; }

# 1 MiB of a known pattern into the conventional zone and the first
# sequential zone (at its write pointer, 16 MiB), read back by nbdcopy.
for i in $(seq 1 256); do printf 'zoned-%010d-' "$i"; head -c 4079 /dev/zero | tr '\0' 'x'; done > "$work/pattern"
head -c 1048576 "$work/pattern" > "$work/data"
[ "$(stat -c %s "$work/data")" = 1048576 ] || fail "could not make the pattern"
nbdsh -u "$uri" -c "
data = open('$work/data', 'rb').read()
for off in (0, 16 << 20):
    h.pwrite(data, off)
h.flush()
" || { cat "$work/server.log"; fail "write through the installed modules"; }
nbdcopy "$uri" "$work/disk" || fail "nbdcopy could not read the disk back"
for off in 0 16; do
    dd if="$work/disk" of="$work/back" bs=1M skip=$off count=1 status=none
    cmp "$work/data" "$work/back" || fail "nbdcopy read back other data at $off MiB"
done
rm -f "$work/disk"
ok "the system nbdkit serves the installed filter and plugin by name: written, read back by nbdcopy"

report="$(/usr/bin/nbdzone report "$uri")" || fail "/usr/bin/nbdzone report"
echo "$report" | head -n 3
[ "$(wc -l <<<"$report")" = 16 ] || fail "nbdzone report: expected 16 zones"
grep -q 'start: 0x000008000, len 0x008000, cap 0x008000, wptr 0x000800 .*zcond: 2(oi)' <<<"$report" ||
    fail "nbdzone report: zone 1's write pointer is not 1 MiB in"
ok "/usr/bin/nbdzone report shows the zones and the write pointer"

kill "$server"; wait "$server" || :; server=
grep -q 'zoned-0000000001-' "$img" && fail "plaintext in the image"
ok "the image holds no plaintext"

# ---- Purged: nothing of the package is left
dpkg --purge "$pkg" > "$work/purge.log" 2>&1 || { cat "$work/purge.log"; fail "dpkg --purge"; }
installed=
dpkg-query -W -f '${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed &&
    fail "still installed after dpkg --purge"
while read -r f; do
    [ -f "$f" ] && fail "$f is left after dpkg --purge"
done < "$work/contents"
ok "dpkg --purge removed every file"

echo "check-package: $passed passed, 0 failed"
