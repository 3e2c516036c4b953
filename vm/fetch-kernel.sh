#!/bin/bash -
# Fetch Debian's current 6.1 kernel image package and unpack it (never
# install it) under CACHE/kernel, for the test VM.
#
#   fetch-kernel.sh CACHE
#
# The package is the one linux-image-amd64 depends on in the configured
# archive.  The unpacked tree is reused while its package name and
# version stay the same; an archive update brings a new kernel.  When
# the archive cannot be asked (offline), a kernel already cached is used.
set -euo pipefail

cache="${1:?usage: fetch-kernel.sh CACHE}"
kdir="$cache/kernel"
mkdir -p "$cache"

pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
      awk '/Depends: linux-image-6\.1\.[0-9]+-[0-9]+-amd64$/ { print $2; exit }') || :
if [ -z "$pkg" ]; then
    if [ -f "$kdir/stamp" ]; then
        echo "fetch-kernel: apt-cache has no 6.1 kernel; using the cached $(cat "$kdir/stamp")" >&2
        exit 0
    fi
    echo "fetch-kernel: apt-cache depends linux-image-amd64 names no linux-image-6.1.*-amd64 (run apt-get update?)" >&2
    exit 1
fi
version=$(apt-cache show "$pkg" | awk '/^Version:/ { print $2; exit }')
want="$pkg $version"

if [ -f "$kdir/stamp" ] && [ "$(cat "$kdir/stamp")" = "$want" ]; then
    exit 0
fi

echo "fetch-kernel: fetching $want"
tmp="$cache/kernel.tmp"
rm -rf "$tmp"
mkdir -p "$tmp/deb"
# apt-get download runs as the invoking user; as root it would drop to
# _apt, which cannot write into a build tree, so keep it as root.
( cd "$tmp/deb" && apt-get -q -o APT::Sandbox::User=root download "$pkg=$version" )
dpkg-deb -x "$tmp"/deb/*.deb "$tmp/root"

release=$(ls "$tmp/root/lib/modules")
[ -f "$tmp/root/boot/vmlinuz-$release" ] || {
    echo "fetch-kernel: $pkg has no boot/vmlinuz-$release" >&2; exit 1; }
# The package ships no modules.dep (depmod runs at install time).
depmod -b "$tmp/root" "$release"

mkdir -p "$tmp/out"
mv "$tmp/root/boot/vmlinuz-$release" "$tmp/out/vmlinuz"
mv "$tmp/root/lib/modules/$release" "$tmp/out/modules"
echo "$release" > "$tmp/out/release"
echo "$want" > "$tmp/out/stamp"
rm -rf "$kdir"
mv "$tmp/out" "$kdir"
rm -rf "$tmp"
echo "fetch-kernel: kernel $release ready"
