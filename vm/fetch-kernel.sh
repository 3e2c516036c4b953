#!/bin/bash -
# Fetch one of Debian's kernel image packages and unpack it (never
# install it) under CACHE/kernel-SERIES, for the test VM.
#
#   fetch-kernel.sh CACHE stable|backports
#
# stable:    the kernel linux-image-amd64 depends on in the machine's
#            configured archive (Debian 12: 6.1).
# backports: the same from the release's -backports suite (Debian 12:
#            6.12, with zone write plugging and zoned ublk).  That suite
#            is reached through a private apt configuration kept in
#            CACHE/apt, built from the archive address the machine's own
#            sources use for its release; the machine's apt sources are
#            never changed.
#
# The unpacked tree is reused while its package name and version stay
# the same; an archive update brings a new kernel.  When the archive
# cannot be asked (offline), a kernel already cached is used.
set -euo pipefail

cache="${1:?usage: fetch-kernel.sh CACHE stable|backports}"
series="${2:?usage: fetch-kernel.sh CACHE stable|backports}"
kdir="$cache/kernel-$series"
mkdir -p "$cache"

apt_opts=()
case "$series" in
    stable) ;;
    backports)
        # Only the private configuration: its own sources, lists and
        # package cache, so nothing of the machine's apt state changes.
        codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
        uri=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null |
              awk -v r="$codename" '$2 == r { print $1; exit }')
        if [ -z "$codename" ] || [ -z "$uri" ]; then
            if [ -f "$kdir/stamp" ]; then
                echo "fetch-kernel: no archive address for ${codename:-this release}; using the cached $(cat "$kdir/stamp")" >&2
                exit 0
            fi
            echo "fetch-kernel: cannot tell the Debian archive's address from apt's sources (release '${codename}')" >&2
            exit 1
        fi
        aptdir="$cache/apt"
        mkdir -p "$aptdir/lists/partial" "$aptdir/archives/partial"
        echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $codename-backports main" \
            > "$aptdir/sources.list"
        : > "$aptdir/status"
        apt_opts=(-o "Dir::Etc::SourceList=$aptdir/sources.list"
                  -o Dir::Etc::SourceParts=/dev/null
                  -o "Dir::State::Lists=$aptdir/lists"
                  -o "Dir::State::Status=$aptdir/status"
                  -o "Dir::Cache=$aptdir"
                  -o "Dir::Cache::Archives=$aptdir/archives"
                  -o APT::Sandbox::User=root)
        apt-get -q "${apt_opts[@]}" update >/dev/null 2>"$aptdir/update.err" ||
            echo "fetch-kernel: apt-get update of $codename-backports failed: $(tail -n 1 "$aptdir/update.err")" >&2
        ;;
    *) echo "fetch-kernel: unknown kernel series '$series' (stable or backports)" >&2; exit 1 ;;
esac

pkg=$(apt-cache "${apt_opts[@]}" depends linux-image-amd64 2>/dev/null |
      awk '/Depends: linux-image-[0-9][^ ]*-amd64$/ { print $2; exit }') || :
if [ -z "$pkg" ]; then
    if [ -f "$kdir/stamp" ]; then
        echo "fetch-kernel: apt has no $series kernel now; using the cached $(cat "$kdir/stamp")" >&2
        exit 0
    fi
    echo "fetch-kernel: linux-image-amd64 names no kernel package in the $series archive (apt-get update?)" >&2
    exit 1
fi
version=$(apt-cache "${apt_opts[@]}" show "$pkg" | awk '/^Version:/ { print $2; exit }')
want="$pkg $version"

if [ -f "$kdir/stamp" ] && [ "$(cat "$kdir/stamp")" = "$want" ]; then
    exit 0
fi

echo "fetch-kernel: fetching $want"
tmp="$cache/kernel-$series.tmp"
rm -rf "$tmp"
mkdir -p "$tmp/deb"
# apt-get download runs as the invoking user; as root it would drop to
# _apt, which cannot write into a build tree, so keep it as root.
( cd "$tmp/deb" &&
  apt-get -q "${apt_opts[@]}" -o APT::Sandbox::User=root download "$pkg=$version" )
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
