#!/bin/bash -
# Fetch one of Debian's kernel image packages and unpack it (never
# install it) under CACHE/kernel-SERIES, for the test VM.
#
#   fetch-kernel.sh CACHE stable|backports|newest
#
# stable:    the kernel linux-image-amd64 depends on in the machine's
#            configured archive (Debian 12: 6.1).
# backports: the same from the release's -backports suite (Debian 12:
#            6.12, with zone write plugging and zoned ublk).
# newest:    the same from the next release's -backports suite (from
#            Debian 12: trixie-backports, Linux 7.x, the newest kernel
#            Debian users run).
# The backports suites are reached through a private apt configuration
# kept in CACHE/apt-SERIES, built from the archive address the machine's
# own sources use for its release; the machine's apt sources are never
# changed.
#
# Debian 13's 7.x kernels split the image: linux-image-REL is a small
# package depending on linux-binary-REL (vmlinuz), linux-modules-REL
# (the modules) and linux-base-REL (config, modules.order,
# modules.builtin).  Those are fetched and unpacked together.
#
# The unpacked tree is reused while its package name and version stay
# the same; an archive update brings a new kernel.  When the archive
# cannot be asked (offline), a kernel already cached is used.
set -euo pipefail

cache="${1:?usage: fetch-kernel.sh CACHE stable|backports|newest}"
series="${2:?usage: fetch-kernel.sh CACHE stable|backports|newest}"
kdir="$cache/kernel-$series"
mkdir -p "$cache"

apt_opts=()
case "$series" in
    stable) ;;
    backports|newest)
        # Only the private configuration: its own sources, lists and
        # package cache, so nothing of the machine's apt state changes.
        codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
        uri=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null |
              awk -v r="$codename" '$2 == r { print $1; exit }')
        suite=$codename
        if [ "$series" = newest ]; then
            # The release after this one (its archive key ships in this
            # release's debian-archive-keyring).
            case "$codename" in
                bookworm) suite=trixie ;;
                trixie) suite=forky ;;
                *) echo "fetch-kernel: no next release known after '$codename'" >&2; exit 1 ;;
            esac
        fi
        if [ -z "$codename" ] || [ -z "$uri" ]; then
            if [ -f "$kdir/stamp" ]; then
                echo "fetch-kernel: no archive address for ${codename:-this release}; using the cached $(cat "$kdir/stamp")" >&2
                exit 0
            fi
            echo "fetch-kernel: cannot tell the Debian archive's address from apt's sources (release '${codename}')" >&2
            exit 1
        fi
        aptdir="$cache/apt"
        [ "$series" = backports ] || aptdir="$cache/apt-$series"
        mkdir -p "$aptdir/lists/partial" "$aptdir/archives/partial"
        echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $suite-backports main" \
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
            echo "fetch-kernel: apt-get update of $suite-backports failed: $(tail -n 1 "$aptdir/update.err")" >&2
        ;;
    *) echo "fetch-kernel: unknown kernel series '$series' (stable, backports or newest)" >&2; exit 1 ;;
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
# The image package and, for split kernels, its linux-binary-,
# linux-modules- and linux-base- parts of the same version.
abi=${pkg#linux-image-}
parts=$(apt-cache "${apt_opts[@]}" depends "$pkg" 2>/dev/null |
        awk -v abi="$abi" '$1 ~ /Depends:$/ && ($2 == "linux-binary-" abi ||
                   $2 == "linux-modules-" abi || $2 == "linux-base-" abi) { print $2 }' |
        sort -u)
# apt-get download runs as the invoking user; as root it would drop to
# _apt, which cannot write into a build tree, so keep it as root.
( cd "$tmp/deb" &&
  apt-get -q "${apt_opts[@]}" -o APT::Sandbox::User=root download \
      "$pkg=$version" $(for p in $parts; do echo "$p=$version"; done) )
for deb in "$tmp"/deb/*.deb; do dpkg-deb -x "$deb" "$tmp/root"; done

# Merged-/usr packages put everything under usr/lib/modules/RELEASE
# (vmlinuz included); older ones use lib/modules and boot/.
moddir=$tmp/root/lib/modules
[ -d "$moddir" ] || moddir=$tmp/root/usr/lib/modules
release=$(ls "$moddir")
vmlinuz=$tmp/root/boot/vmlinuz-$release
[ -f "$vmlinuz" ] || vmlinuz=$moddir/$release/vmlinuz
[ -f "$vmlinuz" ] || {
    echo "fetch-kernel: $pkg ($parts) has no vmlinuz for $release" >&2; exit 1; }
[ -f "$moddir/$release/modules.builtin" ] || {
    echo "fetch-kernel: $pkg ($parts) has no modules.builtin for $release" >&2; exit 1; }
# The package ships no modules.dep (depmod runs at install time).
depmod -b "$moddir/../.." "$release"

mkdir -p "$tmp/out"
mv "$vmlinuz" "$tmp/out/vmlinuz"
mv "$moddir/$release" "$tmp/out/modules"
echo "$release" > "$tmp/out/release"
echo "$want" > "$tmp/out/stamp"
rm -rf "$kdir"
mv "$tmp/out" "$kdir"
rm -rf "$tmp"
echo "fetch-kernel: kernel $release ready"
